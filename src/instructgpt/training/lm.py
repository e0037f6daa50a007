"""The causal LM with its training loss as one module, so DDP sees a single forward.

``CausalLMLoss(model)(input_ids, attention_mask, loss_mask, token_weight)`` runs the decoder
trunk (under bf16 autocast when asked), keeps the final hidden states of the positions whose
*next* token is a target (``loss_mask[:, 1:]``), and applies the chunked fused
cross-entropy of :mod:`instructgpt.losses.lm`: full-vocabulary logits are never built for the
batch, and prompt and padding positions never reach the vocabulary projection at all.
"""

from __future__ import annotations

import warnings
from typing import Any

import torch

from instructgpt.losses.lm import fused_linear_cross_entropy
from instructgpt.models.dropout import add_residual_dropout
from instructgpt.rollout.forward import causal_lm
from instructgpt.rollout.forward import trunk as decoder_trunk


def resolve_precision(precision: str, device: torch.device) -> torch.dtype | None:
    """``bf16`` -> torch.bfloat16, ``fp32`` -> None (no autocast), ``auto`` -> bf16 where native.

    bf16 autocast keeps fp32 master weights and fp32 softmax/loss, so it is safe for training;
    ``auto`` uses it on GPUs that support bf16 and on CPUs with native bf16 (AVX512-BF16/AMX),
    where it is fast. Elsewhere bf16 is emulated and slower (measured on a 2-core AVX2-only AMD
    EPYC: 0.8 against 93 GFLOP/s for fp32 on 1024^3 products), so ``auto`` stays in fp32 and an
    explicit ``bf16`` warns (:func:`warn_if_emulated`).
    """
    if precision == "fp32":
        return None
    if precision == "bf16":
        warn_if_emulated(precision, device)
        return torch.bfloat16
    return torch.bfloat16 if bf16_native(device) else None


def bf16_native(device: torch.device) -> bool:
    """Whether ``device`` runs bf16 matrix products natively (a bf16 GPU; a CPU with AVX512-BF16 or AMX)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return device.type == "cpu" and torch.ops.mkldnn._is_mkldnn_bf16_supported()


def warn_if_emulated(precision: str, device: torch.device) -> None:
    """Warn when a bf16 scheme (``bf16``, ``bf16-weights``) was asked for where bf16 is emulated."""
    if precision.startswith("bf16") and not bf16_native(device):
        warnings.warn(
            f"precision={precision!r} on {device.type}, which has no native bf16 (no AVX512-BF16/AMX on this CPU): "
            "its bf16 matrix products are emulated, about 100x slower than fp32; use precision 'auto' or 'fp32'",
            RuntimeWarning,
            stacklevel=3,
        )


class CausalLMLoss(torch.nn.Module):
    """A Hugging Face causal LM plus the response-token cross-entropy, in one forward."""

    def __init__(
        self,
        model: Any,
        residual_dropout: float = 0.0,
        chunk_size: int = 1024,
        autocast: torch.dtype | None = None,
        sparse_embedding_grad: bool = False,
    ):
        super().__init__()
        self.model = model
        self.chunk_size = chunk_size
        self.autocast = autocast
        self.softcap = getattr(model.config, "final_logit_softcapping", None)
        self._hooks = add_residual_dropout(model, residual_dropout)
        if sparse_embedding_grad:
            sparse_tied_embedding(model)

    def forward(
        self, input_ids, loss_mask, attention_mask=None, position_ids=None, token_weight: float = 1.0
    ) -> torch.Tensor:
        """``token_weight * sum`` of the target tokens' negative log-likelihoods (a scalar).

        Padded batches pass ``attention_mask``; packed rows (:func:`instructgpt.data.collate.pack`)
        pass restarting ``position_ids`` and no mask instead.
        """
        device_type = input_ids.device.type
        with torch.autocast(device_type, dtype=self.autocast or torch.float32, enabled=self.autocast is not None):
            trunk = decoder_trunk(self.model)(  # (through a peft model's adapters with LoRA)
                input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, use_cache=False
            )
            hidden = trunk.last_hidden_state  # [B, T, H]
        select = loss_mask[:, 1:]  # [B, T-1]: position t predicts token t+1
        scored = hidden[:, :-1][select]  # [N, H]
        targets = input_ids[:, 1:][select]  # [N]
        weights = torch.full_like(targets, token_weight, dtype=torch.float32)  # [N]
        unembedding = causal_lm(self.model).get_output_embeddings().weight  # [V, H]
        return fused_linear_cross_entropy(
            scored, unembedding, targets, weights, self.chunk_size, self.autocast, self.softcap
        )


def sparse_tied_embedding(model: Any) -> None:
    """Let the input embedding send a sparse gradient when it shares its weight with the head.

    The head's gradient is dense ([V, H]) anyway; with a dense lookup gradient too, backward
    zero-fills a second [V, H] buffer (670 MB in fp32 for a 262k vocabulary) and adds the two.
    Sparse, the few looked-up rows are added into the head's gradient in place. Only for a model
    DDP does not wrap (:func:`instructgpt.training.launch.is_data_parallel`): DDP treats a sparse
    embedding's parameter as sparse-gradient throughout.
    """
    embedding = model.get_input_embeddings()
    head = model.get_output_embeddings()
    if isinstance(embedding, torch.nn.Embedding) and head is not None and embedding.weight is head.weight:
        embedding.sparse = True
