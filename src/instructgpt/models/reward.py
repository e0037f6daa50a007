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
  mean 0 before RL") is a buffer saved with the model and added to the scores only when
  ``normalize`` is set: PPO loads its reward and value models so (``load_reward_model(...,
  normalized=True)``), the reward RL sees; everywhere else a score is the head's output alone,
  which is what Hugging Face computes from the saved folder (see below). Comparisons, accuracies
  and best-of-n choices do not depend on the constant;
- the head always runs in fp32, outside any autocast: under bf16 autocast the trunk computes
  in bf16, but a bf16 score (8 bits of mantissa) would round the small score differences the
  ranking loss is made of;
- packed rows (several sequences in one row, positions restarting at 0, no attention mask;
  :func:`instructgpt.data.collate.pack`) are scored by :meth:`RewardModel.score_packed`, which
  reads each sequence at its own last token (callers drop trailing ``skip_token_id`` tokens:
  :func:`instructgpt.training.rm_data.score_sequences`).

Saved layout (a folder), the one TRL's ``RewardTrainer`` and OpenRLHF write: a Hugging Face
sequence classifier with one label (``config.json`` + ``model.safetensors``, the trunk under
``model.``, the head as ``score.weight``), the tokenizer, and ``reward.json``
(``{"normalization_bias": ..., "parent": ...}``). ``AutoModelForSequenceClassification``
loads it with our head; choices:

- the normalisation bias cannot go into the weights: Gemma's and Llama's ``score`` is a
  bias-free ``Linear`` (transformers' ``GenericForSequenceClassification``; no config flag adds a
  bias, a saved ``score.bias`` is dropped as unexpected), and it reads the output of an RMSNorm,
  so no head weight or extra hidden feature gives a constant either. So a score is, by
  construction, the head's output alone, as ``AutoModelForSequenceClassification`` computes it,
  and the bias is applied the way OpenRLHF applies it, by a switch on the loaded model
  (``normalize``; OpenRLHF's ``--normalize_reward``). It is kept in ``reward.json`` and in
  ``config.json`` as OpenRLHF keeps it (``normalize_reward``, ``mean = -bias``, ``std = 1``);
- Hugging Face reads the rightmost token that is not ``config.pad_token_id``. When the pad token
  is EOS, a response ending in EOS would be read one token early, so the reward model's tokenizer
  gets a pad token distinct from every EOS id (:func:`pad_apart_from_eos`: the tokenizer's unk
  token, else BOS) and ``pad_token_id`` names it. A trained reward model saved with pad = EOS
  (common in TRL scripts: ``tokenizer.pad_token = tokenizer.eos_token``) was trained and is scored
  by Hugging Face at the token before a final EOS: it loads with ``skip_token_id`` = that id, so
  that we read the same token, and saves again as it came;
- loading accepts that layout from any source (TRL, OpenRLHF's ``score`` or older
  ``value_head`` name; OpenRLHF's ``(score - mean) / std`` and a head bias, neither of which
  transformers applies, are applied under ``normalize`` only); a model with no head is an error
  unless the caller asks for a new one (``new_head=True``, to train it);
- folders of the older layout (trunk as a base model + ``reward_head.safetensors``) still load,
  with a warning; ``load_reward_model(old)`` then ``save_pretrained(new, tokenizer)`` converts.
"""

from __future__ import annotations

import copy
import json
import math
import os
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from torch import nn

REWARD_JSON = "reward.json"
HEAD_FILE = "reward_head.safetensors"  # the older layout's head (trunk saved as a base model beside it)
HEAD_NAMES = ("score", "value_head")  # a scalar head's name: Hugging Face / TRL / OpenRLHF, older OpenRLHF


class RewardModel(nn.Module):
    """``score(x, y) = head(trunk(x + y)[last real token])``, plus ``normalization_bias`` when ``normalize``."""

    trunk: Any  # a Hugging Face base model (or one wrapped by peft)
    head: nn.Linear
    config: Any  # the trunk's Hugging Face config
    normalization_bias: torch.Tensor  # a buffer, [] (fp32)

    def __init__(
        self,
        trunk: nn.Module,
        normalization_bias: float = 0.0,
        seed: int = 0,
        head_init_std: float | None = None,
        normalize: bool = False,
    ) -> None:
        super().__init__()
        self.trunk = trunk
        self.config = trunk.config
        hidden = trunk.config.hidden_size
        self.head = nn.Linear(hidden, 1, bias=False)
        init_head_(self.head.weight, trunk.config, seed, head_init_std)
        self.register_buffer("normalization_bias", torch.tensor(float(normalization_bias)))
        # add the bias to every score (RL's reward); off: Hugging Face's score of the saved folder
        self.normalize = normalize
        # a token never read as the last one (Hugging Face's rule for a folder saved with pad = EOS: the
        # rightmost token that is not its pad id); None: the last real token
        self.skip_token_id: int | None = None
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
        """Scores ``[B]`` (fp32; the normalisation bias added when ``normalize``) of ``input_ids [B, T]``."""
        hidden = self.hidden_states(input_ids, attention_mask)  # [B, T, H]
        readable = attention_mask if self.skip_token_id is None else attention_mask * (input_ids != self.skip_token_id)
        last = last_token_index(readable)  # [B]
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
        """The head in fp32 (outside autocast), plus the bias when ``normalize``: ``[..., H] -> [...]``."""
        with torch.autocast(hidden.device.type, enabled=False):
            scores = self.head(hidden.to(self.head.weight.dtype)).squeeze(-1).float()
        # a new tensor, not a view of the head's output: FSDP2 warns where a sharded module returns a view
        return scores + self.normalization_bias if self.normalize else scores.clone()

    def values(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """The head at every position ``[B, T]`` (fp32; plus the bias when ``normalize``): PPO's values."""
        return self.score_hidden(self.hidden_states(input_ids, attention_mask))

    def as_sequence_classifier(self, pad_token_id: int | None) -> Any:
        """This model as Hugging Face's ``AutoModelForSequenceClassification`` (one label), sharing
        the trunk and head (no copy; a trunk with LoRA adapters is merged into a copy first); its
        config carries ``pad_token_id`` and the normalisation bias as OpenRLHF stores it
        (``normalize_reward``, ``mean``, ``std``)."""
        from transformers import AutoModelForSequenceClassification

        trunk = self.trunk
        if hasattr(trunk, "merge_and_unload"):  # a reward-model folder always holds full, merged weights
            trunk = copy.deepcopy(trunk).merge_and_unload()
        config = copy.deepcopy(trunk.config)
        config.num_labels = 1
        config.pad_token_id = pad_token_id
        config.normalize_reward, config.mean, config.std = True, -float(self.normalization_bias), 1.0
        with torch.device("meta"):  # no memory, no init: both modules are replaced by ours
            classifier = AutoModelForSequenceClassification.from_config(config)
        setattr(classifier, classifier.base_model_prefix, trunk)
        classifier.score = self.head
        return classifier

    def save_pretrained(
        self,
        folder: str | os.PathLike,
        tokenizer: Any = None,
        parent: str | None = None,
        state_dict: dict[str, torch.Tensor] | None = None,
        **_: Any,
    ) -> Path:
        """Write the model as a Hugging Face sequence classifier, the tokenizer and ``reward.json``.

        The tokenizer is saved with a pad token distinct from EOS (:func:`pad_apart_from_eos`, on
        a copy) and ``config.pad_token_id`` names it; without a tokenizer the trunk's
        ``pad_token_id`` is written. ``state_dict``: this model's weights to write instead of its own
        parameters (keyed as ``self.state_dict()``: an FSDP-sharded model's gathered weights, rank 0's);
        the normalisation bias is still this model's. Extra keyword arguments (``safe_serialization``, as
        :mod:`instructgpt.training.checkpoint` passes) are ignored: the weights are always safetensors.
        """
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        pad_token_id = self.config.pad_token_id
        if tokenizer is not None:
            tokenizer = copy.deepcopy(tokenizer)
            if self.skip_token_id is None:
                pad_apart_from_eos(tokenizer)
            tokenizer.save_pretrained(folder)
            pad_token_id = tokenizer.pad_token_id
        if self.skip_token_id is not None:  # saved as it came: Hugging Face reads the token we read
            pad_token_id = self.skip_token_id
        elif pad_token_id in eos_ids(self.config, tokenizer):
            warnings.warn(
                f"pad_token_id {pad_token_id} is an EOS id: AutoModelForSequenceClassification will read "
                "the token before a final EOS; save with the tokenizer, or give it a pad token apart from EOS "
                "(pad_apart_from_eos) before training",
                stacklevel=2,
            )
        classifier = self.as_sequence_classifier(pad_token_id)
        if state_dict is not None:  # trunk.* -> model.*, head.* -> score.*, as the classifier names them
            names = {"trunk.": f"{classifier.base_model_prefix}.", "head.": "score."}
            state_dict = {
                names[prefix] + name.removeprefix(prefix): tensor
                for name, tensor in state_dict.items()
                for prefix in names
                if name.startswith(prefix)
            }
        classifier.save_pretrained(folder, state_dict=state_dict)
        meta = {"normalization_bias": float(self.normalization_bias), "parent": parent or self.parent}
        (folder / REWARD_JSON).write_text(json.dumps(meta, indent=2) + "\n")
        return folder


def load_reward_weights(model: RewardModel, folder: str | os.PathLike) -> None:
    """Load a reward model saved by :meth:`RewardModel.save_pretrained` (either layout) into
    ``model`` (same architecture), in place: trunk, head and normalisation bias."""
    from safetensors.torch import load_file

    folder = Path(folder)
    state = {}
    for file in sorted(folder.glob("*.safetensors")):  # the trunk may be sharded
        if file.name != HEAD_FILE:
            state.update(load_file(str(file)))
    if (folder / HEAD_FILE).is_file():  # older layout: the trunk's keys carry no prefix
        model.trunk.load_state_dict(state)
        model.head.load_state_dict(load_file(str(folder / HEAD_FILE)))
    else:
        prefix = f"{model.trunk.base_model_prefix}."
        model.head.weight.data.copy_(state.pop("score.weight"))
        model.trunk.load_state_dict({k.removeprefix(prefix): v for k, v in state.items()})
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
    """True when ``folder`` holds a reward model saved by :meth:`RewardModel.save_pretrained`."""
    return (Path(folder) / REWARD_JSON).is_file()


def eos_ids(config: Any, tokenizer: Any = None) -> set[int]:
    """Every EOS id of a model config (an int or a list) and of its tokenizer."""
    ids = config.eos_token_id if isinstance(config.eos_token_id, list) else [config.eos_token_id]
    if tokenizer is not None:
        ids = [*ids, tokenizer.eos_token_id]
    return {i for i in ids if i is not None}


def pad_apart_from_eos(tokenizer: Any) -> None:
    """Give ``tokenizer`` a pad token that is not EOS, in place, when it has one to spare.

    Hugging Face's sequence classifiers read the rightmost token that is not the pad id, so a
    pad = EOS tokenizer makes them read the token before a response's final EOS. The tokenizer's
    own pad token is kept when it is not EOS; else its unk token, else BOS (neither ends a
    rendered sequence); with none of them, the pad stays as it is.
    """
    eos = tokenizer.eos_token_id
    for token in (tokenizer.pad_token, tokenizer.unk_token, tokenizer.bos_token):
        if token is not None and tokenizer.convert_tokens_to_ids(token) != eos:
            tokenizer.pad_token = token
            return


def load_reward_model(
    name: str | os.PathLike,
    dtype: torch.dtype | None = None,
    seed: int = 0,
    head_init_std: float | None = None,
    new_head: bool = False,
    normalized: bool = False,
) -> tuple[RewardModel, Any]:
    """Load ``(reward_model, tokenizer)`` from anything the model loader accepts.

    A reward model comes back with its trained head: a folder saved by
    :meth:`RewardModel.save_pretrained` (either layout, with its normalisation bias), or any
    Hugging Face sequence classifier with one label (TRL's ``RewardTrainer``, OpenRLHF). A model
    with no head (an SFT checkpoint, ``gemma-3-270m``) raises :class:`ModelLoadError` unless
    ``new_head``: then it gets a fresh head (seeded, ``head_init_std``), ready to train. The
    tokenizer's pad token is set apart from EOS (:func:`pad_apart_from_eos`).

    Its scores are those ``AutoModelForSequenceClassification`` gives for the folder; with
    ``normalized`` (PPO's reward and value models) the saved normalisation is applied too: our
    ``normalization_bias``, or OpenRLHF's ``(score - mean) / std`` (the ``1 / std`` folded into the head).
    """
    from instructgpt.models.loader import ensure_pad_token, load_tokenizer, resolve_model

    source = resolve_model(name)
    tokenizer = load_tokenizer(source)  # first: its errors say what to pass instead
    older = (Path(source) / HEAD_FILE).is_file()
    if older:
        model = _load_older_layout(Path(source), dtype)
    else:
        model = _load_sequence_classifier(source, dtype, seed, head_init_std, new_head, normalized)
    model.normalize = normalized
    saved_pad = model.config.pad_token_id  # the folder's config.json
    ensure_pad_token(tokenizer)
    if not (older or new_head) and saved_pad is not None and saved_pad in eos_ids(model.config, tokenizer):
        model.skip_token_id = saved_pad  # trained reading the token before a final EOS: read that one too
    else:
        pad_apart_from_eos(tokenizer)
        model.config.pad_token_id = tokenizer.pad_token_id
    return model, tokenizer


def _load_sequence_classifier(
    source: str, dtype: torch.dtype | None, seed: int, head_init_std: float | None, new_head: bool, normalized: bool
) -> RewardModel:
    """A reward model from a Hugging Face folder or id: the trunk, and the head when there is one.

    A foreign head's bias (which transformers drops) joins ``normalization_bias``; OpenRLHF's ``std``
    is folded into the head only when ``normalized``, so that otherwise the head is the saved one."""
    from transformers import AutoModelForSequenceClassification

    from instructgpt.models.loader import ModelLoadError

    with _transformers_quiet():  # its report would call a head we load next (or replace) "MISSING"
        classifier, info = AutoModelForSequenceClassification.from_pretrained(
            source, num_labels=1, dtype=dtype or torch.float32, output_loading_info=True
        )
    head = saved_head(source)
    if not head and "score.weight" not in info["missing_keys"]:
        head = {"weight": classifier.score.weight.detach()}  # a Hub id: no local files to read
    if not head and not new_head:
        raise ModelLoadError(
            f"{source} has no reward head (no {' or '.join(n + '.weight' for n in HEAD_NAMES)}, no {HEAD_FILE}): "
            "it is not a reward model. Pass a reward model folder (instructgpt rm train's final/, TRL's "
            f"RewardTrainer or OpenRLHF output), or train one from this model: instructgpt rm train --model {source}"
        )
    scale, shift = _saved_normalization(source, classifier.config)
    if not normalized:  # the saved head as it is; the shift kept in its units (std applies under normalize only)
        scale, shift = 1.0, shift / scale
    model = RewardModel(classifier.base_model, normalization_bias=shift, seed=seed, head_init_std=head_init_std)
    if head:
        model.head.weight.data.copy_(head["weight"].reshape(1, -1) * scale)
        model.normalization_bias += float(head.get("bias", torch.zeros(1))) * scale
        model.head.to(dtype or torch.float32)
    meta = _reward_json(source)
    model.parent = meta.get("parent") if meta else None
    return model


def saved_head(folder: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The scalar head's ``{"weight": [1, H], "bias"?: [1]}`` in a folder's safetensors files, under
    any name of :data:`HEAD_NAMES` (empty when there is none, or ``folder`` is not a folder)."""
    from safetensors import safe_open

    for file in sorted(Path(folder).glob("*.safetensors")):
        with safe_open(str(file), framework="pt") as handle:
            for name in HEAD_NAMES:
                if f"{name}.weight" in handle.keys():
                    return {
                        part: handle.get_tensor(f"{name}.{part}")
                        for part in ("weight", "bias")
                        if f"{name}.{part}" in handle.keys()
                    }
    return {}


def _saved_normalization(source: str, config: Any) -> tuple[float, float]:
    """``(scale, shift)`` applied to the head's output: ours from ``reward.json``, else OpenRLHF's
    ``(score - mean) / std`` when its config says ``normalize_reward``, else none."""
    meta = _reward_json(source)
    if meta is not None:
        return 1.0, float(meta["normalization_bias"])
    if getattr(config, "normalize_reward", False) and getattr(config, "mean", None) is not None:
        std = float(getattr(config, "std", 1.0))
        return 1.0 / std, -float(config.mean) / std
    return 1.0, 0.0


def _reward_json(source: str) -> dict[str, Any] | None:
    path = Path(source) / REWARD_JSON
    return json.loads(path.read_text()) if path.is_file() else None


def _load_older_layout(folder: Path, dtype: torch.dtype | None) -> RewardModel:
    """A folder saved before the sequence-classifier layout: trunk as a base model + ``reward_head.safetensors``."""
    from safetensors.torch import load_file
    from transformers import AutoModel

    warnings.warn(
        f"{folder} has the older reward model layout ({HEAD_FILE}), which AutoModelForSequenceClassification "
        "loads with a random head; convert it: model, tokenizer = load_reward_model(old); "
        "model.save_pretrained(new, tokenizer)",
        stacklevel=3,
    )
    meta = json.loads((folder / REWARD_JSON).read_text())
    trunk = AutoModel.from_pretrained(folder, dtype=dtype or torch.float32)
    model = RewardModel(trunk, normalization_bias=meta["normalization_bias"])
    model.parent = meta.get("parent")
    model.head.load_state_dict(load_file(str(folder / HEAD_FILE)))
    model.head.to(dtype or torch.float32)
    return model


@contextmanager
def _transformers_quiet() -> Iterator[None]:
    from transformers.utils import logging

    level = logging.get_verbosity()
    logging.set_verbosity_error()
    try:
        yield
    finally:
        logging.set_verbosity(level)


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
