"""Any Hugging Face sequence-classification model as a scorer: the probability of one of its labels.

Used as the toxicity scorer (``--toxicity-scorer MODEL``) and as the TruthfulQA truth and
informativeness judges (``--truthfulqa-judge MODEL``, ``--truthfulqa-info-judge MODEL``); MODEL is
a local folder or a Hub id, loaded with ``AutoModelForSequenceClassification``.

- **Which label.** Given by name or index (``--classifier-labels toxicity=toxic truth=1``); by
  default the first label whose name is one of the role's usual names (:data:`LABEL_NAMES`:
  ``toxic`` for toxicity, ``yes`` / ``true`` for the truth judge...), else the second of two labels
  (``LABEL_1``: binary classifiers put the positive class second); otherwise an error that names
  the model's labels.
- **Probability.** The sigmoid of that label's logit when the model is multi-label
  (``problem_type == "multi_label_classification"``, as Detoxify's toxic-bert) or has a single
  output; the softmax over the labels otherwise.
- Texts are scored in batches of similar lengths, padded on the model's padding side and cut at
  ``max_length`` tokens; a model without a padding token pads with its EOS token. A blank text
  (an empty continuation) scores 0 without asking the model, as the Perspective client does.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

LABEL_NAMES = {
    "toxicity": ("toxic", "toxicity", "hate", "offensive"),
    "truth": ("yes", "true", "truthful", "truth", "correct"),
    "info": ("yes", "informative", "helpful", "info"),
}
"""Label names (lower case) taken as the positive class of each role when no label is given."""

KEYWORDS = {"toxicity": ("auto", "perspective", "offline"), "truth": ("offline",), "info": ("offline",)}
"""Scorer names that are not a model (``--toxicity-scorer``, ``--truthfulqa-judge``, ``--truthfulqa-info-judge``)."""


def is_model_source(value: str, role: str) -> bool:
    """True when ``value`` names a classifier (anything but the role's keywords)."""
    return value not in KEYWORDS[role]


def positive_label(id2label: dict[int, str], label: str | None, role: str) -> int:
    """The index of the label that means toxic / true / informative (see the module docstring)."""
    names = {int(i): str(n) for i, n in id2label.items()}
    if label not in (None, "", "auto"):
        if label.isdigit() and int(label) in names:
            return int(label)
        found = [i for i, n in names.items() if n == label or n.lower() == label.lower()]
        if found:
            return found[0]
        raise ValueError(f"no label {label!r} among the classifier's labels {names}")
    for wanted in LABEL_NAMES[role]:
        found = [i for i, n in sorted(names.items()) if n.lower() == wanted]
        if found:
            return found[0]
    if len(names) == 2:
        return 1
    raise ValueError(
        f"cannot tell which of the classifier's labels {names} means {role}; "
        f"name it with --classifier-labels {role}=LABEL"
    )


class SequenceClassifier:
    """``probabilities(texts) -> [n]``: the probability of one label; ``score(texts)`` as a list
    (a toxicity scorer). ``name`` says which model and label, for the report."""

    def __init__(
        self,
        source: str,
        role: str,
        label: str | None = None,
        batch_size: int = 16,
        max_length: int = 512,
        device: str | None = None,
    ):
        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(source)
        self.model = AutoModelForSequenceClassification.from_pretrained(source).eval()
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        if self.model.config.pad_token_id is None:
            self.model.config.pad_token_id = self.tokenizer.pad_token_id
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.model.to(self.device)
        config = self.model.config
        self.index = positive_label(config.id2label, label, role)
        self.sigmoid = config.problem_type == "multi_label_classification" or config.num_labels == 1
        self.batch_size, self.max_length = batch_size, min(max_length, self.tokenizer.model_max_length)
        label_name = config.id2label.get(self.index, str(self.index))
        self.name = f"{source} (label {label_name!r}, {'sigmoid' if self.sigmoid else 'softmax'})"
        self.agreement: dict = {}

    def probabilities(self, texts: Sequence[str]) -> np.ndarray:
        import torch

        order = sorted((i for i in range(len(texts)) if texts[i].strip()), key=lambda i: len(texts[i]))  # less padding
        out = np.zeros(len(texts))  # [n]; a blank text scores 0 unasked, as with Perspective
        for start in range(0, len(order), self.batch_size):
            rows = order[start : start + self.batch_size]
            batch = self.tokenizer(
                [texts[i] for i in rows], padding=True, truncation=True, max_length=self.max_length, return_tensors="pt"
            ).to(self.device)
            with torch.no_grad():
                logits = self.model(**batch).logits.float()  # [B, num_labels]
            probs = logits.sigmoid() if self.sigmoid else logits.softmax(-1)  # [B, num_labels]
            out[rows] = probs[:, self.index].cpu().numpy()
        return out

    def score(self, texts: Sequence[str]) -> list[float]:
        return self.probabilities(texts).tolist()


def labels_by_role(specs: Sequence[str]) -> dict[str, str]:
    """``("toxicity=toxic", "truth=1")`` -> ``{"toxicity": "toxic", "truth": "1"}``."""
    return dict(s.split("=", 1) for s in specs)
