"""Each metric on hand-made cases with known answers."""

import math

import numpy as np
import pytest

from instructgpt.evaluation import metrics


def test_binary_entropy_of_known_distributions():
    assert metrics.binary_entropy_bits(0.5) == pytest.approx(1.0)
    assert metrics.binary_entropy_bits(0.0) == 0.0 and metrics.binary_entropy_bits(1.0) == 0.0
    # p = 1/4: -(1/4 log2 1/4 + 3/4 log2 3/4) = 0.5 + 0.75 * 0.4150375 = 0.8112781
    assert metrics.binary_entropy_bits(0.25) == pytest.approx(0.8112781, abs=1e-7)


def test_pair_entropy_normalises_the_two_probabilities():
    assert metrics.pair_entropy_bits(-12.0, -12.0) == pytest.approx(1.0)  # equal probabilities: unbiased
    # p(a) = 3 * p(b) -> normalised (3/4, 1/4), whatever the absolute scale
    assert metrics.pair_entropy_bits(math.log(3e-9), math.log(1e-9)) == pytest.approx(0.8112781, abs=1e-6)
    assert metrics.pair_entropy_bits(-1.0, -2000.0) == pytest.approx(0.0, abs=1e-12)
    assert metrics.pair_entropy_bits(-2000.0, -1.0) == pytest.approx(0.0, abs=1e-12)


def test_token_f1_on_fixed_strings():
    # "the cat sat" -> [cat, sat]; "a cat sat down" -> [cat, sat, down]: P = 1, R = 2/3, F1 = 0.8
    assert metrics.token_f1("the cat sat", "a cat sat down") == pytest.approx(0.8)
    assert metrics.token_f1("Paris.", "paris") == 1.0
    assert metrics.token_f1("London", "Paris") == 0.0
    assert metrics.token_f1("", "") == 1.0  # SQuADv2 "no answer" matched
    assert metrics.token_f1("something", "") == 0.0
    assert metrics.max_f1("North Sea", ["the Baltic", "North Sea"]) == 1.0


def test_drop_numbers_are_canonicalised():
    assert metrics.token_f1("7,761", "7761", metrics.normalize_drop) == 1.0
    assert metrics.token_f1("7761.0 dollars", "7761", metrics.normalize_drop) == pytest.approx(2 / 3)
    assert metrics.token_f1("7761.0", "7761") == 0.0  # SQuAD normalisation alone: "77610" vs "7761"


def test_bleu_on_fixed_strings():
    assert metrics.corpus_bleu(["the cat sat on the mat"], ["the cat sat on the mat"]) == pytest.approx(100.0)
    # n-gram precisions 5/6, 4/5, 3/4, 2/3, equal lengths (no brevity penalty):
    # BLEU = (5/6 * 4/5 * 3/4 * 2/3) ** (1/4) = (1/3) ** 0.25
    assert metrics.corpus_bleu(["a b c d e f"], ["a b c d e g"]) == pytest.approx(100 * (1 / 3) ** 0.25, abs=1e-3)
    assert metrics.corpus_bleu(["x y z w"], ["a b c d"]) == pytest.approx(0.0)


def test_wilson_interval_known_value():
    low, high = metrics.wilson_interval(0.8, 10)
    assert (round(low, 3), round(high, 3)) == (0.490, 0.943)


def test_win_rate_counts_ties_half():
    result = metrics.win_rate(["win"] * 6 + ["tie"] * 4)
    assert result.rate == pytest.approx(0.8) and result.n == 10
    assert (round(result.low, 3), round(result.high, 3)) == (0.490, 0.943)
    assert metrics.win_rate(["win", "loss"]).rate == 0.5
    with pytest.raises(ValueError):
        metrics.win_rate(["draw"])


def test_bootstrap_interval_brackets_the_rate():
    outcomes = ["win"] * 60 + ["tie"] * 20 + ["loss"] * 20
    low, high = metrics.bootstrap_interval(outcomes, np.random.default_rng(0))
    wilson = metrics.win_rate(outcomes)
    assert low < 0.7 < high
    assert abs(low - wilson.low) < 0.03 and abs(high - wilson.high) < 0.03


def test_mc1_and_mc2():
    assert metrics.mc1([-1.0, -0.5, -3.0], true_index=1) == 1.0
    assert metrics.mc1([-1.0, -0.5, -3.0], true_index=0) == 0.0
    # probabilities proportional to 1, 1, 2 with the first two true: 2 / 4
    assert metrics.mc2([0.0, 0.0, math.log(2.0)], [True, True, False]) == pytest.approx(0.5)


def test_first_line_and_subsample():
    assert metrics.first_line("\n  Paris, France.\nQ: next") == "Paris, France."
    items = list(range(100))
    a = metrics.subsample(items, 10, np.random.default_rng(3))
    assert a == metrics.subsample(items, 10, np.random.default_rng(3)) and a == sorted(a) and len(set(a)) == 10
    assert metrics.subsample(items, 500, np.random.default_rng(3)) == items


def test_finite_replaces_nan():
    assert metrics.finite({"a": [float("nan"), 1.0], "b": float("inf")}) == {"a": [None, 1.0], "b": None}


# ---------------------------------------------------------------- intervals


def test_mean_interval_known_value_contains_the_mean_and_shrinks_with_n():
    low, high = metrics.mean_interval([1.0, 2.0, 3.0])  # mean 2, sd 1, t_2 = 4.3027
    assert low == pytest.approx(2 - 4.302653 / math.sqrt(3), abs=1e-5) and high == pytest.approx(
        2 + 4.302653 / math.sqrt(3), abs=1e-5
    )
    rng = np.random.default_rng(0)
    widths = []
    for n in (20, 200, 2000):
        values = rng.normal(0.3, 0.1, size=n)
        low, high = metrics.mean_interval(values)
        assert low < values.mean() < high
        widths.append(high - low)
    assert widths[0] > widths[1] > widths[2]
    assert all(math.isnan(v) for v in metrics.mean_interval([0.5]))  # one value: no interval


def test_proportion_interval_is_wilson_on_the_mean():
    assert metrics.proportion_interval([1.0] * 8 + [0.0] * 2) == metrics.wilson_interval(0.8, 10)
    small, large = metrics.proportion_interval([1.0, 0.0] * 5), metrics.proportion_interval([1.0, 0.0] * 500)
    assert small[0] < large[0] < 0.5 < large[1] < small[1]


def test_bootstrap_ci_contains_the_statistic_shrinks_with_n_and_is_seeded():
    rng = np.random.default_rng(1)
    widths = []
    for n in (25, 400):
        values = rng.uniform(0, 100, size=n)
        low, high = metrics.bootstrap_ci(metrics.batch_mean, [values], np.random.default_rng(7))
        assert low < values.mean() < high
        assert (low, high) == metrics.bootstrap_ci(metrics.batch_mean, [values], np.random.default_rng(7))
        widths.append(high - low)
    assert widths[1] < widths[0] / 2  # ~ 1 / sqrt(n): 16x the items, about a quarter of the width
    assert all(math.isnan(v) for v in metrics.bootstrap_ci(metrics.batch_mean, [np.zeros(0)], rng))
    assert all(
        math.isnan(v) for v in metrics.bootstrap_ci(metrics.batch_mean, [np.arange(9.0)], rng)
    )  # too few items: no interval
    assert all(math.isfinite(v) for v in metrics.bootstrap_ci(metrics.batch_mean, [np.arange(10.0)], rng))


def test_bootstrap_ci_in_blocks_matches_the_loop_it_replaces():
    values = np.random.default_rng(2).uniform(size=50)
    rng = np.random.default_rng(3)
    naive = [values[rng.integers(0, 50, size=50)].mean() for _ in range(300)]
    expected = (np.quantile(naive, 0.025), np.quantile(naive, 0.975))
    assert metrics.bootstrap_ci(metrics.batch_mean, [values], np.random.default_rng(3), draws=300) == pytest.approx(
        expected
    )


def test_paired_difference_of_identical_models_is_zero_centred():
    scores = np.random.default_rng(4).uniform(0, 100, size=60)
    assert metrics.paired_difference(metrics.batch_mean, scores, scores, np.random.default_rng(0)) == (0.0, (0.0, 0.0))
    # two models with the same per-item difficulty and independent noise: 0 inside a narrow interval
    rng = np.random.default_rng(5)
    difficulty = rng.uniform(0, 100, size=200)
    a, b = difficulty + rng.normal(0, 5, size=200), difficulty + rng.normal(0, 5, size=200)
    diff, (low, high) = metrics.paired_difference(metrics.batch_mean, a, b, np.random.default_rng(0))
    assert low < 0.0 < high and low < diff < high
    unpaired = metrics.bootstrap_ci(metrics.batch_mean, [a], np.random.default_rng(0))
    assert high - low < (unpaired[1] - unpaired[0]) / 3  # pairing removes the shared item difficulty
    shifted = metrics.paired_difference(metrics.batch_mean, a + 3.0, b, np.random.default_rng(0))
    assert shifted[1][0] > 0.0  # a real +3 difference is outside 0
    with pytest.raises(ValueError):
        metrics.paired_difference(metrics.batch_mean, a, b[:10], np.random.default_rng(0))


def test_bleu_from_sentence_statistics_is_corpus_bleu():
    hypotheses = ["the cat sat on the mat", "a dog ran", "", "le chat est sur le tapis ."]
    references = ["the cat sat on a mat", "the dog ran away", "nothing here", "the cat is on the mat ."]
    stats = metrics.bleu_stats(hypotheses, references)  # [4, 10]
    assert stats.shape == (4, metrics.BLEU_STATS)
    assert metrics.bleu_from_stats(stats[None])[0] == pytest.approx(metrics.corpus_bleu(hypotheses, references))
    assert metrics.bleu_from_stats(stats[None, :2])[0] == pytest.approx(
        metrics.corpus_bleu(hypotheses[:2], references[:2])
    )
    assert (
        metrics.statistic_of("nlp/fr_en/bleu_stats") is metrics.bleu_from_stats
        and metrics.statistic_of("f1") is metrics.batch_mean
    )


def test_named_rng_depends_on_seed_and_name_only():
    assert metrics.named_rng(0, "drop").integers(1 << 30) == metrics.named_rng(0, "drop").integers(1 << 30)
    assert metrics.named_rng(0, "drop").integers(1 << 30) != metrics.named_rng(0, "squadv2").integers(1 << 30)


# ---------------------------------------------------------------- the official DROP F1, the harness's MC1


def test_drop_official_normalisation():
    assert metrics.drop_normalize("The 7,761-yard run!") == "7761.0 yard run"  # split on hyphens, numbers as floats
    assert metrics.drop_normalize("an 83.50") == "83.5" and metrics.drop_normalize("-") == ""


@pytest.mark.parametrize(
    "predicted, gold, official, squad_style",
    [
        (["7,761"], ["7761"], 1.0, 1.0),
        # the gold span has a number the prediction lacks: 0 (the SQuAD-style F1 matches 2 of 3 tokens)
        (["33-yard field goal"], ["24-yard field goal"], 0.0, 2 / 3),
        # token *sets*: repeats do not count (SQuAD-style: precision 1/2)
        (["the cat cat"], ["cat"], 1.0, 2 / 3),
        # F1 = 2 (1 * 1/6) / (1 + 1/6) = 2/7, rounded to 2 decimals
        (["x"], ["x y z w v q"], 0.29, 2 / 7),
        ([""], [""], 1.0, 1.0),
        (["x"], [""], 0.0, 0.0),
    ],
)
def test_drop_official_f1_hand_computed(predicted, gold, official, squad_style):
    assert metrics.drop_f1(predicted, gold) == pytest.approx(official)
    assert metrics.token_f1(predicted[0], gold[0], metrics.normalize_drop) == pytest.approx(squad_style)


def test_drop_official_f1_aligns_bags_of_spans():
    # Hungarian pairing: (Mike Tolbert, Mike Tolbert) = 1, (Rivers, Philip Rivers) = 2/3; mean over 2 spans
    assert metrics.drop_f1(["Mike Tolbert", "Rivers"], ["Philip Rivers", "Mike Tolbert"]) == 0.83
    assert metrics.drop_f1(["Richard II"], ["Richard II", "Edward III"]) == 0.5  # a gold span left unmatched
    assert metrics.drop_f1(["Richard II", "Henry V"], ["Richard II"]) == 0.5  # an extra predicted span
    assert metrics.max_drop_f1("56 yard", ["24", "56-yard"]) == 1.0  # the best alternative reference


def test_nlp_summary_reports_both_drop_f1s(data_root):
    from instructgpt.evaluation.nlp import Item, summarise

    items = [Item("c", ["24-yard field goal"]), Item("c", ["the cat"]), Item("c", ["7761"])]
    out = summarise("drop", ["33-yard field goal", "cat cat", "7,761"], items, np.random.default_rng(0))
    assert out["per_item"]["f1_official"] == [0.0, 100.0, 100.0]
    assert out["per_item"]["f1"] == pytest.approx([200 / 3, 200 / 3, 100.0])
    assert out["f1_official"] == pytest.approx(200 / 3) and out["f1"] == pytest.approx(700 / 9)
    assert len(out["f1_official_ci"]) == 2 and "f1_official" not in summarise(
        "squadv2", ["x"], [Item("c", ["x"])], np.random.default_rng(0)
    )


def test_mc1_harness_picks_by_total_log_prob():
    from instructgpt.evaluation.scoring import Scored

    # the true answer: 1 token at -2.0; a false one: 4 tokens at -1.0 each (total -4.0)
    answers = [Scored(total=-2.0, tokens=1), Scored(total=-4.0, tokens=4)]
    assert metrics.mc1([s.average for s in answers], true_index=0) == 0.0  # ours: the mean prefers the long one
    assert metrics.mc1([s.total for s in answers], true_index=0) == 1.0  # lm-evaluation-harness: the sum
