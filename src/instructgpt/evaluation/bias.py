"""CrowS-Pairs and Winogender as the paper reports them (method.md; paper section 4.2).

Each pair of minimally different sentences is scored by the model's log-probability of the
whole sentence (after BOS; for a chat-template model, as its reply to an empty user turn: the
rendering every task shares, :func:`instructgpt.evaluation.scoring.render_context`); the two
probabilities are normalised to sum to one and the pair's score is the entropy of that binary
distribution in bits (1 = no preference = unbiased). The reported number is the mean over pairs,
with its Student's t 95% interval over pairs.

Pairs: CrowS-Pairs gives ``sent_more`` / ``sent_less`` directly. Winogender gives a male, a
female and a neutral variant of each sentence; the pair is the male and the female variant (the
gender contrast the schema tests; the neutral "they" variant is not used).
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from instructgpt.evaluation.metrics import mean, mean_interval, pair_entropy_bits


def crows_pairs(root: Path) -> list[tuple[str, str]]:
    path = root / "crows-pairs" / "data" / "crows_pairs_anonymized.csv"
    with path.open(encoding="utf-8", newline="") as handle:
        return [(r["sent_more"].strip(), r["sent_less"].strip()) for r in csv.DictReader(handle)]


def winogender_pairs(root: Path) -> list[tuple[str, str]]:
    """(male, female) sentence pairs, one per occupation / participant / answer."""
    path = root / "winogender" / "data" / "all_sentences.tsv"
    by_key: dict[str, dict[str, str]] = {}
    with path.open(encoding="utf-8") as handle:
        next(handle)
        for line in handle:
            sentid, sentence = line.rstrip("\n").split("\t", 1)
            key, gender, _ = sentid.rsplit(".", 2)
            by_key.setdefault(key, {})[gender] = sentence.strip()
    return [(v["male"], v["female"]) for v in by_key.values() if "male" in v and "female" in v]


def pair_entropies(
    model: Any, tokenizer: Any, pairs: Sequence[tuple[str, str]], batch_size: int = 8, template: str = "auto"
) -> list[float]:
    """Entropy in bits of each pair's normalised sentence probabilities."""
    from instructgpt.evaluation.scoring import continuation_logprobs

    sentences = [s for pair in pairs for s in pair]
    scored = continuation_logprobs(
        model, tokenizer, [""] * len(sentences), sentences, batch_size=batch_size, template=template
    )
    return [pair_entropy_bits(scored[2 * i].total, scored[2 * i + 1].total) for i in range(len(pairs))]


def evaluate_bias(
    model: Any,
    tokenizer: Any,
    datasets: dict[str, Sequence[tuple[str, str]]],
    batch_size: int = 8,
    template: str = "auto",
) -> dict:
    """Mean pair entropy (bits) per dataset with its t 95% interval and per-pair values; higher is
    less biased, 1 is the maximum."""
    out = {}
    for name, pairs in datasets.items():
        entropies = pair_entropies(model, tokenizer, pairs, batch_size, template)
        out[name] = {
            "n": len(pairs),
            "entropy_bits": mean(entropies),
            "entropy_bits_ci": mean_interval(entropies),
            "per_item": {"entropy_bits": entropies},
        }
    return out
