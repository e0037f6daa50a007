"""The learning-rate schedule and the deterministic batch plan."""

import pytest

from instructgpt.training.batching import BatchPlan, shard_and_split
from instructgpt.training.schedule import cosine_lr


def test_cosine_starts_at_peak_ends_at_ten_percent_without_warmup():
    lrs = [cosine_lr(s, 100, 2.0) for s in range(100)]
    assert lrs[0] == 2.0  # no warmup
    assert lrs[-1] == pytest.approx(0.2)  # decays to 10%
    assert all(a >= b for a, b in zip(lrs, lrs[1:]))
    assert lrs[50] == pytest.approx(0.2 + 1.8 * 0.5 * (1 + __import__("math").cos(__import__("math").pi * 50 / 99)))


def test_cosine_with_warmup_rises_first():
    assert [cosine_lr(s, 20, 1.0, warmup_steps=4) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]


def test_plan_is_deterministic_and_each_epoch_visits_distinct_examples():
    plan = BatchPlan(num_examples=10, batch_size=3, epochs=2, seed=7)
    assert plan.steps_per_epoch == 3 and plan.total_steps == 6
    epoch0 = [i for s in range(3) for i in plan.batch(s)]
    assert len(set(epoch0)) == 9  # one example dropped (incomplete last batch)
    assert [plan.batch(s) for s in range(6)] == [BatchPlan(10, 3, 2, 7).batch(s) for s in range(6)]
    assert epoch0 != [i for s in range(3, 6) for i in plan.batch(s)]  # reshuffled each epoch


def test_plan_rejects_batch_larger_than_data():
    with pytest.raises(ValueError, match="larger than the training set"):
        BatchPlan(num_examples=2, batch_size=4, epochs=1, seed=0)


def test_shards_partition_the_batch_and_sort_by_length():
    indices, lengths = [4, 1, 7, 2, 0, 5], [5, 1, 9, 3, 8, 2, 7, 6]
    shards = [shard_and_split(indices, lengths, r, 2, 2) for r in range(2)]
    flat = sorted(i for shard in shards for micro in shard for i in micro)
    assert flat == sorted(indices)
    assert all(len(shard) == 2 for shard in shards)
    for shard in shards:
        sizes = [lengths[i] for micro in shard for i in micro]
        assert sizes == sorted(sizes)
    with pytest.raises(ValueError):
        shard_and_split([1, 2, 3], lengths, 0, 2, 2)


def test_token_budget_puts_long_sequences_in_small_micro_batches():
    lengths = [10, 10, 10, 10, 100, 100]
    groups = shard_and_split(list(range(6)), lengths, 0, 1, micro_batch_size=8, micro_batch_tokens=200)
    assert groups == [[0, 1, 2, 3], [4, 5]]
    assert all(len(g) * max(lengths[i] for i in g) <= 200 for g in groups)
    single = shard_and_split([4], lengths, 0, 1, micro_batch_size=8, micro_batch_tokens=50)
    assert single == [[4]]  # a sequence longer than the budget still gets its own micro-batch


def test_packed_budget_counts_real_tokens():
    lengths = [10, 10, 10, 10, 100, 100]
    groups = shard_and_split(list(range(6)), lengths, 0, 1, micro_batch_size=8, micro_batch_tokens=140, packed=True)
    assert groups == [[0, 1, 2, 3, 4], [5]]
