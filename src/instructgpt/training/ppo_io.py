"""PPO's models, pretraining stream, checkpoints and final outputs (kept out of the training loop).

Models: the policy is the SFT model (trained; loaded in fp32, then with ``precision``
bf16-weights held in bf16 beside fp32 masters); the reference is a second, frozen bf16 copy, or
with LoRA the policy itself with its adapter disabled; the value model is the reward model
(trained, like the policy); the reward model is a frozen bf16 copy. Checkpoints always hold the
fp32 masters.

Checkpoint layout (``out_dir/checkpoints/step-NNNNNN``): the policy as saved by
``save_pretrained`` (a Hugging Face folder, or a peft adapter folder with LoRA), ``meta.json``,
and ``trainer_state.pt`` holding the value model's trainable weights, both optimizers, the EMA,
the KL controller, the torch RNG state and the iteration.

Data-parallel runs (:mod:`.ppo_parallel`): rank 0 alone writes checkpoints and the final
outputs (every rank holds the same weights and optimizer states; rank 0 alone the EMA), the
others wait for it; every rank resumes from the same checkpoint.

Final outputs (``out_dir/final``): the policy with the EMA weights (LoRA merged in), a
loadable Hugging Face folder (:func:`instructgpt.models.loader.load_model` reads it); its
``value/`` subfolder holds the value model (:meth:`RewardModel.save_pretrained`); ``last/``
holds the policy's last (non-averaged) weights.
"""

from __future__ import annotations

import copy
import random
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import torch

from instructgpt.config import check
from instructgpt.data.render import Example
from instructgpt.models.lora import for_saving, load_trainable_state, trainable_state
from instructgpt.training import checkpoint as ckpt
from instructgpt.training.ppo_config import Models, config_meta, training_precision
from instructgpt.training.ppo_parallel import SINGLE, DataParallel


class PretrainWindows:
    """Random windows of a tokenized pretraining corpus: PPO-ptx's pretraining examples.

    The corpus is shuffled (seeded) and tokenized once, up to ``max_tokens`` tokens, documents
    joined with EOS; :meth:`sample` draws ``count`` windows of ``seq_len`` tokens (BOS first,
    every other token a target) from a generator seeded by the caller.
    """

    def __init__(self, tokenizer: Any, texts: list[str], seq_len: int, max_tokens: int, seed: int) -> None:
        rng = random.Random(seed)
        self.bos = [] if tokenizer.bos_token_id is None else [tokenizer.bos_token_id]
        self.width = seq_len - len(self.bos)
        stream: list[int] = []
        for text in rng.sample(texts, len(texts)):
            stream += tokenizer(text, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
            if len(stream) >= max_tokens:
                break
        if len(stream) < self.width:
            raise ValueError(f"pretraining corpus has {len(stream)} tokens, fewer than one sequence of {seq_len}")
        self.stream = stream

    def sample(self, count: int, seed: int) -> list[Example]:
        rng = random.Random(seed)
        starts = [rng.randrange(0, len(self.stream) - self.width + 1) for _ in range(count)]
        head = [False] * len(self.bos)
        return [Example(self.bos + self.stream[s : s + self.width], head + [True] * self.width) for s in starts]


def load_ptx_stream(config, tokenizer: Any) -> PretrainWindows:
    from instructgpt.data.pretrain import read_documents
    from instructgpt.training.sft import _default_pretrain_path

    path = config.ptx_data or _default_pretrain_path()
    return PretrainWindows(tokenizer, read_documents(path), config.ptx_seq_len, config.ptx_corpus_tokens, config.seed)


def load_models(config, device: torch.device, scheme: str | None = None):
    """Policy, reference, value model and reward model as the config asks (see the module docstring).

    ``scheme``: the precision scheme already resolved by :func:`training_precision` (else resolved here)."""
    from instructgpt.models.loader import load_model
    from instructgpt.models.lora import add_lora, load_quantized_lm
    from instructgpt.models.reward import load_reward_model

    check(
        bool(config.reward_model),
        "reward_model",
        "give the trained reward model's folder (--reward-model runs/rm/final)",
    )

    # bf16 copies only where the scheme is bf16: "auto" on emulated-bf16 hardware is fp32 throughout
    frozen_dtype = torch.float32 if (scheme or training_precision(config, device)) == "fp32" else torch.bfloat16
    trained_dtype = torch.bfloat16 if config.master_weights == "bf16" else torch.float32
    if config.qlora:  # the policy's frozen base in 4 bits; the value model keeps LoRA over its full weights
        policy, tokenizer = load_quantized_lm(config.policy, device)
    else:
        policy, tokenizer = load_model(config.policy, dtype=trained_dtype)
    # normalized: the saved bias joins the scores, so demonstrations score mean 0 before RL (method.md)
    value_model, _ = load_reward_model(config.reward_model, dtype=trained_dtype, normalized=True)
    reward_model, _ = load_reward_model(config.reward_model, dtype=frozen_dtype, normalized=True)
    if config.lora_rank > 0:
        lora = (config.lora_rank, config.lora_alpha, config.lora_target_modules, config.seed)
        policy, value_model = add_lora(policy, *lora), add_lora(value_model, *lora)  # the value head: trained whole
        sft_policy = policy
    else:
        sft_policy, _ = load_model(config.policy, dtype=frozen_dtype)
    return prepare_models(Models(policy, sft_policy, value_model, reward_model, tokenizer), device)


def prepare_models(models, device: torch.device):
    """Move to ``device``; no dropout anywhere; freeze the reference and the reward model."""
    for model in (models.policy, models.sft_policy, models.value_model, models.reward_model):
        model.to(device).eval()
    for frozen in (models.sft_policy, models.reward_model):
        if frozen is not models.policy:
            frozen.requires_grad_(False)
    return models


def save_checkpoint(config, models, state, group: DataParallel = SINGLE) -> Path:
    """Write a resumable checkpoint (with bf16-weights: the fp32 masters, not their bf16 copies); rank 0 writes,
    every rank returns once it is written."""
    folder = config.out_dir / "checkpoints" / f"step-{state.iteration:06d}"
    if group.main:
        with _masters_in_place(state):
            _save_checkpoint(config, models, state, folder, group.world)
        ckpt.prune_checkpoints(config.out_dir, config.save_total_limit)  # a limit of 0 keeps every checkpoint
    group.barrier()
    return folder


def _save_checkpoint(config, models, state, folder: Path, processes: int) -> Path:

    trainer_state = {
        "iteration": state.iteration,
        "value_model": trainable_state(models.value_model),
        "policy_optimizer": state.policy_optimizer.state_dict(),
        "value_optimizer": state.value_optimizer.state_dict(),
        "ema": state.ema.state_dict() if state.ema is not None else None,
        "kl_controller": state.kl_controller.state_dict(),
        "torch_rng": torch.get_rng_state(),
    }
    if config.lora_rank > 0:
        trainer_state["policy"] = trainable_state(models.policy)
    policy = for_saving(models.policy, config.save)  # with LoRA: merged, or the adapter folder
    meta = config_meta(config, state.iteration, processes)
    return ckpt.save_checkpoint(folder, policy, models.tokenizer, meta, trainer_state)


def maybe_resume(config, models, state, verbose: bool = True) -> None:
    last = ckpt.latest_checkpoint(config.out_dir) if config.resume else None
    if last is None:
        return
    saved = torch.load(last / ckpt.TRAINER_STATE, weights_only=False)
    with _masters_in_place(state):  # bf16-weights: load into the fp32 masters, then round them into the models
        if config.lora_rank > 0:
            load_trainable_state(models.policy, saved["policy"])
        else:
            ckpt.load_weights(models.policy, last)
        load_trainable_state(models.value_model, saved["value_model"])
    for masters in (state.policy_masters, state.value_masters):
        if masters is not None:
            masters.copy_to_model()
    state.policy_optimizer.load_state_dict(saved["policy_optimizer"])
    state.value_optimizer.load_state_dict(saved["value_optimizer"])
    if state.ema is not None:
        state.ema.load_state_dict(saved["ema"])
    state.kl_controller.load_state_dict(saved["kl_controller"])
    torch.set_rng_state(saved["torch_rng"])
    state.iteration = saved["iteration"]
    if verbose:
        print(f"resuming from {last} (iteration {state.iteration})")


@contextmanager
def _masters_in_place(state) -> Iterator[None]:
    """With bf16-weights, the fp32 masters stand in the models' parameters for the duration."""
    with ExitStack() as stack:
        for masters in (state.policy_masters, state.value_masters):
            if masters is not None:
                stack.enter_context(masters.fp32_model())
        yield


def save_final(config, models, state, group: DataParallel = SINGLE) -> Path:
    """The EMA policy in ``final/``, the value model in ``value/``, the last policy in ``last/``: loadable
    Hugging Face folders (a reward-model folder for the value model, merged with LoRA), or with LoRA and
    ``save='adapter'`` the policy's adapters (:mod:`instructgpt.models.lora`). Rank 0 writes; every rank
    returns once it is written."""
    final = config.out_dir / "final"
    if group.main:
        _save_final(config, models, state, final, group.world)
    group.barrier()
    return final


def _save_final(config, models, state, final: Path, processes: int) -> None:
    meta = config_meta(config, state.iteration, processes)
    averaged = copy.deepcopy(models.policy)
    if state.ema is not None:
        state.ema.copy_to(averaged)
    ckpt.save_checkpoint(
        final, for_saving(averaged, config.save), models.tokenizer, {**meta, "weights": "ema" if state.ema else "last"}
    )
    del averaged
    policy = for_saving(models.policy, config.save)
    ckpt.save_checkpoint(final / "last", policy, models.tokenizer, {**meta, "weights": "last"})
    value = for_saving(models.value_model, "merged")  # a reward-model folder (the layout is the RM's own)
    value.save_pretrained(final / "value", tokenizer=models.tokenizer, parent=config.reward_model)
