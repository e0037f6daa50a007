"""The reward model: a causal LM trunk whose unembedding is replaced by a scalar head.

method.md, step 2: "the SFT model with the unembedding removed and a projection to one scalar,
read at the last token of prompt + response". The same class serves as PPO's value model,
which the paper initialises from the reward model: :meth:`RewardModel.values` gives the head's
output at every position instead of only the last.

Choices the paper leaves open:

- the head is a bias-free ``Linear(hidden, 1)`` drawn from a normal distribution with std
  ``head_init_std``: by default the trunk config's ``initializer_range`` (0.02 for Gemma), as
  Hugging Face initialises classification heads, so that the untrained model scores every
  response near 0 and the first steps are not spent undoing a random preference (OpenAI's
  lm-human-preferences used ``1/sqrt(hidden + 1)``, 0.04 for Gemma 3 270M, which is the
  fallback when the config has no ``initializer_range``); the Eq. 1 loss is shift-invariant, so
  a trained bias would receive no gradient;
- the score is read at the last *real* token (found from the attention mask, so left and right
  padding give the same score) and position ids are rebuilt from the mask, so a left-padded
  sequence sees the same positions as an unpadded one;
- ``normalization_bias`` (method.md: "add a bias such that the labelers' demonstrations score
  mean 0 before RL") is a buffer added to every score; it is saved with the model;
- the head always runs in fp32, outside any autocast: under bf16 autocast the trunk computes
  in bf16, but a bf16 score (8 bits of mantissa) would round the small score differences the
  ranking loss is made of;
- packed rows (several sequences in one row, positions restarting at 0, no attention mask;
  :func:`instructgpt.data.collate.pack`) are scored by :meth:`RewardModel.score_packed`, which
  reads each sequence at its own last token.

Saved layout (a folder): the trunk as a Hugging Face base model (``config.json`` +
``model.safetensors``, loadable with ``AutoModel``), the tokenizer, ``reward_head.safetensors``
and ``reward.json`` (``{"normalization_bias": ..., "parent": ...}``).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

REWARD_JSON = "reward.json"
HEAD_FILE = "reward_head.safetensors"


class RewardModel(nn.Module):
    """``score(x, y) = head(trunk(x + y)[last real token]) + normalization_bias``."""

    def __init__(
        self, trunk: nn.Module, normalization_bias: float = 0.0, seed: int = 0, head_init_std: float | None = None
    ) -> None:
        super().__init__()
        self.trunk = trunk
        self.config = trunk.config
        hidden = trunk.config.hidden_size
        self.head = nn.Linear(hidden, 1, bias=False)
        init_head_(self.head.weight, trunk.config, seed, head_init_std)
        self.register_buffer("normalization_bias", torch.tensor(float(normalization_bias)))
        self.parent: str | None = None  # the model this one started from, written to reward.json

    @classmethod
    def from_causal_lm(cls, lm: nn.Module, seed: int = 0, head_init_std: float | None = None) -> RewardModel:
        """Drop the unembedding of a causal LM and put a fresh scalar head on its trunk."""
        return cls(lm.base_model, seed=seed, head_init_std=head_init_std)

    def get_input_embeddings(self) -> nn.Module:
        """The trunk's token embedding (as on a Hugging Face model)."""
        return self.trunk.get_input_embeddings()

    def hidden_states(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Last-layer hidden states ``[B, T, H]``, positions counted over real tokens only."""
        position_ids = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
        out = self.trunk(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, use_cache=False)
        return out.last_hidden_state

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Scores ``[B]`` (fp32, normalisation bias included) of ``input_ids [B, T]``."""
        hidden = self.hidden_states(input_ids, attention_mask)  # [B, T, H]
        last = last_token_index(attention_mask)  # [B]
        picked = hidden[torch.arange(hidden.shape[0], device=hidden.device), last]  # [B, H]
        return self.score_hidden(picked)

    def score_packed(
        self, input_ids: torch.Tensor, position_ids: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor
    ) -> torch.Tensor:
        """Scores ``[S]`` of packed sequences; sequence s ends at ``input_ids[rows[s], cols[s]]``.

        ``input_ids, position_ids [R, L]`` as :func:`instructgpt.data.collate.pack` builds them
        (positions restart at 0 for each sequence; attention stays within a sequence).
        """
        out = self.trunk(input_ids=input_ids, position_ids=position_ids, use_cache=False)
        return self.score_hidden(out.last_hidden_state[rows, cols])  # [S, H] -> [S]

    def score_hidden(self, hidden: torch.Tensor) -> torch.Tensor:
        """The head in fp32 (outside autocast) plus the normalisation bias: ``[..., H] -> [...]``."""
        with torch.autocast(hidden.device.type, enabled=False):
            return self.head(hidden.to(self.head.weight.dtype)).squeeze(-1).float() + self.normalization_bias

    def values(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """The head at every position ``[B, T]`` (fp32): PPO's value model reads these."""
        return self.score_hidden(self.hidden_states(input_ids, attention_mask))

    def save_pretrained(
        self, folder: str | os.PathLike, tokenizer: Any = None, parent: str | None = None, **_: Any
    ) -> Path:
        """Write the trunk, tokenizer, head and ``reward.json`` to ``folder``.

        Extra keyword arguments (``safe_serialization``, as :mod:`instructgpt.training.checkpoint`
        passes) are accepted and ignored: the weights are always safetensors.
        """
        from safetensors.torch import save_file

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self.trunk.save_pretrained(folder)
        if tokenizer is not None:
            tokenizer.save_pretrained(folder)
        save_file({"weight": self.head.weight.detach().contiguous().cpu()}, str(folder / HEAD_FILE))
        meta = {"normalization_bias": float(self.normalization_bias), "parent": parent or self.parent}
        (folder / REWARD_JSON).write_text(json.dumps(meta, indent=2) + "\n")
        return folder


def load_reward_weights(model: RewardModel, folder: str | os.PathLike) -> None:
    """Load a saved reward model's trunk, head and bias into ``model`` (same architecture), in place."""
    from safetensors.torch import load_file

    folder = Path(folder)
    state = {}
    for file in sorted(folder.glob("*.safetensors")):  # the trunk may be sharded
        if file.name != HEAD_FILE:
            state.update(load_file(str(file)))
    model.trunk.load_state_dict(state)
    model.head.load_state_dict(load_file(str(folder / HEAD_FILE)))
    meta = json.loads((folder / REWARD_JSON).read_text())
    model.normalization_bias.fill_(float(meta["normalization_bias"]))


def last_token_index(attention_mask: torch.Tensor) -> torch.Tensor:
    """Index of the last real token of each row ``[B]``, for left or right padding.

    >>> last_token_index(torch.tensor([[1, 1, 0], [0, 1, 1], [1, 1, 1]])).tolist()
    [1, 2, 2]
    """
    length = attention_mask.shape[-1]
    return length - 1 - attention_mask.long().flip(-1).argmax(-1)


def default_head_std(config: Any) -> float:
    """The head's default init std: ``config.initializer_range``, else ``1/sqrt(hidden + 1)``."""
    std = getattr(config, "initializer_range", None)
    return float(std) if std else 1.0 / math.sqrt(config.hidden_size + 1)


@torch.no_grad()
def init_head_(weight: torch.Tensor, config: Any, seed: int = 0, std: float | None = None) -> torch.Tensor:
    """Fill a ``[1, hidden]`` head weight in place: normal, std ``std`` or :func:`default_head_std`, seeded."""
    generator = torch.Generator().manual_seed(seed)
    return weight.normal_(0.0, default_head_std(config) if std is None else std, generator=generator)


def is_reward_model(folder: str | os.PathLike) -> bool:
    """True when ``folder`` holds a saved reward model."""
    return (Path(folder) / REWARD_JSON).is_file()


def load_reward_model(
    name: str | os.PathLike, dtype: torch.dtype | None = None, seed: int = 0, head_init_std: float | None = None
) -> tuple[RewardModel, Any]:
    """Load ``(reward_model, tokenizer)``.

    A folder saved by :meth:`RewardModel.save_pretrained` comes back with its head and bias;
    anything else the model loader accepts (an SFT checkpoint, ``gemma-3-270m``, a GGUF file)
    gives its trunk with a fresh head (seeded), ready to train.
    """
    from safetensors.torch import load_file
    from transformers import AutoModel

    from instructgpt.models.loader import ensure_pad_token, load_model, load_tokenizer

    if not is_reward_model(name):
        lm, tokenizer = load_model(name, dtype=dtype)
        return RewardModel.from_causal_lm(lm, seed=seed, head_init_std=head_init_std), tokenizer
    folder = Path(name)
    meta = json.loads((folder / REWARD_JSON).read_text())
    trunk = AutoModel.from_pretrained(folder, dtype=dtype or torch.float32)
    model = RewardModel(trunk, normalization_bias=meta["normalization_bias"])
    model.parent = meta.get("parent")
    model.head.load_state_dict(load_file(str(folder / HEAD_FILE)))
    model.head.to(dtype or torch.float32)
    tokenizer = load_tokenizer(str(folder))
    ensure_pad_token(tokenizer, trunk)
    return model, tokenizer


@torch.no_grad()
def score_texts(
    model: RewardModel,
    tokenizer: Any,
    prompts: Sequence[Any],
    responses: Sequence[str],
    template: str = "auto",
    batch_size: int = 16,
    max_tokens: int = 2048,
    autocast: torch.dtype | None = None,
) -> list[float]:
    """Scores of (prompt, response) pairs, rendered exactly as in SFT (response + EOS).

    Sequences are sorted by length into batches (less padding) and truncated on the left to
    ``max_tokens``; the result is in input order.
    """
    from instructgpt.data.collate import collate
    from instructgpt.data.render import Example, render_prompt, response_ids

    model.eval()
    device = next(model.parameters()).device
    ids = [
        render_prompt(tokenizer, p, template) + response_ids(tokenizer, p, r, template)
        for p, r in zip(prompts, responses)
    ]
    ids = [seq[-max_tokens:] for seq in ids]
    order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
    scores = [0.0] * len(ids)
    for start in range(0, len(order), batch_size):
        chunk = order[start : start + batch_size]
        batch = collate([Example(ids[i], [True] * len(ids[i])) for i in chunk], tokenizer.pad_token_id)
        with torch.autocast(device.type, dtype=autocast or torch.float32, enabled=autocast is not None):
            values = model(batch["input_ids"].to(device), batch["attention_mask"].to(device))
        for i, value in zip(chunk, values.tolist()):
            scores[i] = value
    return scores
