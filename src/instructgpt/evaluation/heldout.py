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
) -> np.ndarray:
    """[n] held-out predictions: for each group, ``fit_predict(train, test)`` (index lists of
    :func:`leave_one_out`) returns the predictions of the ``test`` rows by a model fitted on
    ``train`` (and on whatever other data it uses, minus the test rows' texts)."""
    out = np.full(len(model_types), np.nan)
    for _, train, test in leave_one_out(model_types, texts, by):
        out[test] = np.asarray(fit_predict(train, test), dtype=float)
    return out


def by_split(keys: Sequence[object], predict: Callable[[str], np.ndarray]) -> dict[str, dict]:
    """``{split: {key: held-out prediction}}`` for every split of :data:`SPLITS`; ``predict(split)``
    returns the [n] held-out predictions of the rows ``keys`` name (e.g. :func:`cross_predict`'s)."""
    return {by: dict(zip(keys, np.asarray(predict(by), dtype=float).tolist())) for by in SPLITS}
