"""Leave-one-model-type-out (and leave-one-family-out) splits of the paper's samples (issue 22).

The offline judges and toxicity scorer train on the paper's own samples (with their stored
GPT-judge labels / Perspective scores) beside their usual data. Their agreement with the paper's
judges is then measured held out *by model*: each model type's samples are scored by a judge
trained without any sample of that model type (:data:`BY_MODEL`), or, stricter, without any sample
of its family, every size at once (:data:`BY_FAMILY`: all ``ppo-ptx-*`` held out together, the
judge trained on ``gpt-*``, ``sft-*`` and ``ppo-noptx-*``), since sizes of one family write alike.
A training row whose text equals a held-out row's (the same question and answer, the same
sample) is dropped too, whichever model wrote it, so no held-out text is ever trained on.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence

import numpy as np

BY_MODEL = "model_type"
BY_FAMILY = "family"
SPLITS = (BY_MODEL, BY_FAMILY)


def family(model_type: str) -> str:
    """``ppo-ptx-175b`` -> ``ppo-ptx``: the model type without its size."""
    return model_type.rsplit("-", 1)[0] if "-" in model_type else model_type


def group_of(model_type: str, by: str) -> str:
    if by not in SPLITS:
        raise ValueError(f"unknown split {by!r}; known: {', '.join(SPLITS)}")
    return model_type if by == BY_MODEL else family(model_type)


def leave_one_out(
    model_types: Sequence[str], texts: Sequence[object], by: str = BY_MODEL
) -> Iterator[tuple[str, list[int], list[int]]]:
    """``(group, train, test)`` index lists, one per group (model type or family): ``test`` is every
    row of the group, ``train`` every other row whose text (``texts[i]``, any hashable) is not also
    a test row's."""
    groups = [group_of(m, by) for m in model_types]
    for group in sorted(set(groups)):
        test = [i for i, g in enumerate(groups) if g == group]
        held = {texts[i] for i in test}
        train = [i for i, g in enumerate(groups) if g != group and texts[i] not in held]
        yield group, train, test


def cross_predict(
    model_types: Sequence[str],
    texts: Sequence[object],
    fit_predict: Callable[[list[int], list[int]], np.ndarray | Sequence[float]],
    by: str = BY_MODEL,
    jobs: int = 1,
) -> np.ndarray:
    """[n] held-out predictions: for each group, ``fit_predict(train, test)`` (index lists of
    :func:`leave_one_out`) returns the predictions of the ``test`` rows by a model fitted on
    ``train`` (and on whatever other data it uses, minus the test rows' texts). ``jobs`` > 1 runs
    the groups' fits in that many processes (joblib): the same predictions, bit for bit, provided
    each fit is deterministic whatever the process (the judges' fits run on one BLAS / OpenMP
    thread in every process: :func:`one_thread`)."""
    splits = list(leave_one_out(model_types, texts, by))
    if jobs > 1 and len(splits) > 1:
        from joblib import Parallel, delayed

        run = Parallel(n_jobs=min(jobs, len(splits)))
        predicted = run(delayed(fit_predict)(train, test) for _, train, test in splits)
    else:
        predicted = [fit_predict(train, test) for _, train, test in splits]
    out = np.full(len(model_types), np.nan)
    for (_, _, test), values in zip(splits, predicted):
        out[test] = np.asarray(values, dtype=float)
    return out


def build_jobs() -> int:
    """Processes for the held-out fits when a judge or scorer is built: the CPUs this process may
    use (each fit runs on one thread: :func:`one_thread`)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def one_thread():
    """A context in which BLAS and OpenMP (scikit-learn's loss and solver loops) run on one thread.
    Every fit of the judges and the scorer runs in it, so a fit gives the same coefficients bit for
    bit whether it runs in this process or in a joblib worker, on 2 cores or 64 (lbfgs's sums, and
    so a few judgments near 0.5, depend on the thread count otherwise)."""
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=1)


def by_split(keys: Sequence[object], predict: Callable[[str], np.ndarray]) -> dict[str, dict]:
    """``{split: {key: held-out prediction}}`` for every split of :data:`SPLITS`; ``predict(split)``
    returns the [n] held-out predictions of the rows ``keys`` name (e.g. :func:`cross_predict`'s)."""
    return {by: dict(zip(keys, np.asarray(predict(by), dtype=float).tolist())) for by in SPLITS}
