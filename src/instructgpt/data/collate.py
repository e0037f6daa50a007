"""Turn rendered examples into model inputs: padded (``collate``) or packed into one row (``pack``)."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from instructgpt.data.render import Example


def collate(examples: Sequence[Example], pad_id: int, padding_side: str = "right") -> dict[str, torch.Tensor]:
    """Pad ``examples`` to the longest one; pads get attention 0 and loss mask False.

    Worked example (run as a test):

    >>> from instructgpt.data.render import Example
    >>> batch = collate([Example([5, 6, 7, 8], [False, False, True, True]),
    ...                  Example([5, 9], [False, True])], pad_id=0)
    >>> batch["input_ids"]
    tensor([[5, 6, 7, 8],
            [5, 9, 0, 0]])
    >>> batch["attention_mask"]
    tensor([[1, 1, 1, 1],
            [1, 1, 0, 0]])
    >>> batch["loss_mask"]
    tensor([[False, False,  True,  True],
            [False,  True, False, False]])
    >>> collate([Example([5, 9], [False, True]), Example([5, 6, 7], [False, True, True])],
    ...         pad_id=0, padding_side="left")["input_ids"]
    tensor([[0, 5, 9],
            [5, 6, 7]])
    """
    if padding_side not in ("left", "right"):
        raise ValueError(f"padding_side must be 'left' or 'right', got {padding_side!r}")
    width = max(len(e) for e in examples)
    input_ids = torch.full((len(examples), width), pad_id, dtype=torch.long)  # [B, T]
    attention_mask = torch.zeros((len(examples), width), dtype=torch.long)  # [B, T]
    loss_mask = torch.zeros((len(examples), width), dtype=torch.bool)  # [B, T]
    for row, example in enumerate(examples):
        n = len(example)
        cols = slice(width - n, width) if padding_side == "left" else slice(0, n)
        input_ids[row, cols] = torch.tensor(example.input_ids)
        attention_mask[row, cols] = 1
        loss_mask[row, cols] = torch.tensor(example.loss_mask)
    return {"input_ids": input_ids, "attention_mask": attention_mask, "loss_mask": loss_mask}


def pack(examples: Sequence[Example], row_tokens: int = 0, pad_id: int = 0) -> dict[str, torch.Tensor]:
    """Pack ``examples`` into rows with restarting positions: (almost) no padding.

    Hugging Face models read a row whose ``position_ids`` restart at 0 (and no attention mask)
    as several independent sequences and mask attention between them. The first token of each
    example is never a target, so no token is trained to follow another example. The examples
    are spread evenly over ``ceil(total / row_tokens)`` rows (0: one row), longest first into
    the emptiest row; shorter rows are padded at the end with a segment of their own
    (positions restart there too), never attended to by real tokens.
    Attention costs grow with the row length, so moderate rows are faster than one long row.

    >>> from instructgpt.data.render import Example
    >>> batch = pack([Example([5, 6, 7], [False, True, True]), Example([5, 9], [False, True])])
    >>> batch["input_ids"]
    tensor([[5, 6, 7, 5, 9]])
    >>> batch["position_ids"]
    tensor([[0, 1, 2, 0, 1]])
    >>> batch["loss_mask"]
    tensor([[False,  True,  True, False,  True]])
    >>> two_rows = pack([Example([5, 6, 7], [False, True, True]), Example([5, 9], [False, True]),
    ...                  Example([5, 8], [False, True])], row_tokens=5)
    >>> two_rows["input_ids"]
    tensor([[5, 6, 7, 0],
            [5, 9, 5, 8]])
    >>> two_rows["position_ids"]
    tensor([[0, 1, 2, 0],
            [0, 1, 0, 1]])
    """
    rows = _balanced_rows(examples, row_tokens or sum(len(e) for e in examples))
    width = max(sum(len(e) for e in row) for row in rows)
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)  # [R, L]
    position_ids = torch.zeros((len(rows), width), dtype=torch.long)  # [R, L]
    loss_mask = torch.zeros((len(rows), width), dtype=torch.bool)  # [R, L]
    for r, row in enumerate(rows):
        ids = [t for e in row for t in e.input_ids]
        input_ids[r, : len(ids)] = torch.tensor(ids)
        loss_mask[r, : len(ids)] = torch.tensor([m for e in row for m in e.loss_mask])
        positions = [p for e in row for p in range(len(e))] + list(range(width - len(ids)))
        position_ids[r] = torch.tensor(positions)
    return {"input_ids": input_ids, "position_ids": position_ids, "loss_mask": loss_mask}


def _balanced_rows(examples: Sequence[Example], capacity: int) -> list[list[Example]]:
    """As few rows as ``capacity`` allows, filled evenly: longest first, into the emptiest row.

    Even rows keep the padding at the row ends small. A row may exceed ``capacity`` by less
    than one example when the lengths do not divide evenly.
    """
    total = sum(len(e) for e in examples)
    rows: list[list[Example]] = [[] for _ in range(max(1, -(-total // capacity)))]
    fill = [0] * len(rows)
    for example in sorted(examples, key=len, reverse=True):
        r = fill.index(min(fill))
        rows[r].append(example)
        fill[r] += len(example)
    return [row for row in rows if row]
