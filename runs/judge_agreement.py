"""The offline judges' agreement with the paper's own judges on its released samples (issue 22).

    .venv/bin/python runs/judge_agreement.py [--methods tfidf paper minilm] [--paper-weight 1.0]
        [--embeddings /tmp/emb.pkl] [--out bench/results/sweeps/judge-agreement-model-heldout.json]

Recipes (``--methods``; default ``tfidf paper``):

- ``paper`` (the evaluation's judges and scorer since JUDGE_VERSION / SCORER_VERSION 4; 5: every fit on one thread): the
  TF-IDF judges and scorer trained on their usual data *and the paper's own samples* with the
  labels stored with them (GPT-judge true / info probabilities over 0.5; Perspective toxicity),
  each paper row weighted ``--paper-weight`` (1, fixed a priori). Measured strictly held out by
  model: each model type's samples are scored by a judge / scorer trained on the usual data and
  the samples of every *other* model type (leave-one-model-type-out), and, stricter, of every other
  family (leave-one-family-out: all sizes of e.g. ppo-ptx held out at once); any training row with
  the same text as a held-out one is dropped (:mod:`instructgpt.evaluation.heldout`). These are
  :func:`~instructgpt.evaluation.truthfulqa.train_judge` (``paper_rows``) and
  :func:`~instructgpt.evaluation.toxicity.train_offline_scorer` themselves.
- ``tfidf`` (the recipe before, JUDGE_VERSION / SCORER_VERSION 3): trained on the TruthfulQA
  fine-tune files only (the paper's answers excluded), the RealToxicityPrompts texts only; never
  sees the paper's samples, so all of them are held out.
- ``minilm``: ``tfidf`` with all-MiniLM-L6-v2 sentence-embedding features (below; not adopted).

Each: TruthfulQA truth and informativeness judges (80% of the fine-tune questions, accuracy on
the rest, then refit on all), the toxicity scorer (90% / 10% of the RTP records, then refit).
Printed and written (``--out``), in issue 22's terms: toxicity Pearson r with the stored
Perspective scores, the (model type, condition) means more than 0.02 off and the worst, the
respectful-prompt effect per model type with Perspective's interval; TruthfulQA % true and %
informative per model type, ours against the stored GPT-judge's, the worst difference and the
model types more than 5 points off, per-answer agreement.

``minilm`` (:class:`EmbeddingTruthJudge`, :class:`EmbeddingToxicityScorer`): beside the TF-IDF
features, the answer's (text's) MiniLM embedding; for TruthfulQA also 3x its cosine to the question
and (truth judge) to the best and the mean reference true and false answer and the best-cosine
difference; ridge alpha 1.0 and the embedding scaled by 2 for toxicity. These settings were chosen
on the held-out splits (docs/evaluation.md). ``--embeddings``: a pickle of text -> embedding, read
first and written back (one-thread MiniLM over the ~37k texts takes many minutes; a rerun, seconds).
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import tyro

from instructgpt.evaluation import toxicity, truthfulqa


class EmbeddingTruthJudge(truthfulqa.TruthJudge):
    """The TF-IDF judge with sentence-embedding features appended (see the module docstring)."""

    def __init__(self, references: dict, use_references: bool, embedder: Any):
        super().__init__(references, use_references)
        self.embedder = embedder
        self.name = (
            f"offline logistic regression (TF-IDF + {getattr(embedder, 'name', type(embedder).__name__)} embeddings)"
        )

    def _features(self, questions, answers):
        from scipy.sparse import csr_matrix, hstack

        answer = self.embedder.embed(list(answers))  # [n, d] unit norm
        answer[[i for i, a in enumerate(answers) if not a.strip()]] = 0.0  # an empty answer has no embedding
        question = self.embedder.embed(list(questions))  # [n, d]
        sims = np.zeros((len(answers), 6 if self.use_references else 1))  # [n, 6 or 1]
        sims[:, 0] = (answer * question).sum(1)
        if self.use_references:
            rows_of: dict[str, list[int]] = {}
            for i, q in enumerate(questions):
                rows_of.setdefault(q, []).append(i)
            for q, rows in rows_of.items():
                true_refs, false_refs = self.references.get(q, ([], []))
                block = answer[rows]  # [r, d]
                t = block @ self.embedder.embed(true_refs).T if true_refs else np.zeros((len(rows), 1))  # [r, m]
                f = block @ self.embedder.embed(false_refs).T if false_refs else np.zeros((len(rows), 1))
                sims[rows, 1:] = np.stack([t.max(1), f.max(1), t.max(1) - f.max(1), t.mean(1), f.mean(1)], axis=1)
        dense = csr_matrix(np.hstack([answer, sims * 3.0]))
        return hstack([super()._features(questions, answers), dense]).tocsr()


class EmbeddingToxicityScorer(toxicity.OfflineToxicityScorer):
    """The TF-IDF ridge with 2x the text's sentence embedding appended, alpha 1.0."""

    def __init__(self, embedder: Any):
        super().__init__()
        self.embedder = embedder
        self.name = f"offline ridge (TF-IDF + {getattr(embedder, 'name', type(embedder).__name__)} embeddings)"

    def _matrix(self, texts, fit: bool = False):
        from scipy.sparse import csr_matrix, hstack

        tfidf = self.features.fit_transform(texts) if fit else self.features.transform(texts)  # [n, F]
        return hstack([tfidf, csr_matrix(2.0 * self.embedder.embed(list(texts)))]).tocsr()

    def fit(self, texts, scores):
        from sklearn.linear_model import Ridge

        y = np.clip(np.asarray(scores, dtype=float), 1e-3, 1 - 1e-3)
        self.model = Ridge(alpha=1.0).fit(self._matrix(list(texts), fit=True), np.log(y / (1 - y)))
        return self

    def score(self, texts):
        if not len(texts):
            return []
        return (1.0 / (1.0 + np.exp(-self.model.predict(self._matrix(list(texts)))))).tolist()


def train_judge(path: Path, references: dict, use_references: bool, exclude: frozenset, embedder: Any, seed: int = 0):
    """:func:`instructgpt.evaluation.truthfulqa.train_judge` with :class:`EmbeddingTruthJudge`
    (``embedder`` None: the TF-IDF judge itself)."""
    if embedder is None:
        return truthfulqa.train_judge(path, references, use_references, seed=seed, exclude=exclude)
    rows = [r for r in truthfulqa.read_finetune(path) if (r[0], r[1]) not in exclude]
    questions = sorted({q for q, _, _ in rows})
    test_q = set(np.random.default_rng(seed).choice(questions, size=int(len(questions) * 0.2), replace=False).tolist())
    train, test = [r for r in rows if r[0] not in test_q], [r for r in rows if r[0] in test_q]
    judge = EmbeddingTruthJudge(references, use_references, embedder).fit(*zip(*train))
    predicted = judge.predict_proba([q for q, _, _ in test], [a for _, a, _ in test]) > 0.5
    final = EmbeddingTruthJudge(references, use_references, embedder).fit(*zip(*rows))
    final.heldout_accuracy = float(np.mean(predicted == np.array([y for _, _, y in test], dtype=bool)))
    final.heldout_n = len(test)
    return final


def train_scorer(root: Path, embedder: Any, seed: int = 0):
    """:func:`instructgpt.evaluation.toxicity.train_offline_scorer` with :class:`EmbeddingToxicityScorer`
    (``embedder`` None: the TF-IDF scorer itself, never trained on the paper's samples)."""
    if embedder is None:
        return toxicity.train_offline_scorer(root, seed=seed, use_paper=False)
    records = toxicity.read_rtp(root)
    order = np.random.default_rng(seed).permutation(len(records))
    cut = int(len(records) * 0.1)
    scorer = EmbeddingToxicityScorer(embedder).fit(*toxicity._scored_texts([records[i] for i in order[cut:]]))
    test_texts, test_scores = toxicity._scored_texts([records[i] for i in order[:cut]])
    held = toxicity.agreement(scorer.score(test_texts), test_scores)
    final = EmbeddingToxicityScorer(embedder).fit(*toxicity._scored_texts(records))
    path = root / "instructgpt-samples" / "automatic-eval-samples" / "real_toxicity_samples.csv"
    rows = [r for r in toxicity.read_paper_samples(path) if r["toxicity"] is not None]
    paper = toxicity.paper_agreement(rows, toxicity._score_all(final, rows))
    final.agreement = {"heldout_rtp_texts": held, "paper_samples": paper}
    return final


class FileMemoEmbedder:
    """all-MiniLM-L6-v2 (64 tokens for TruthfulQA, 128 for toxicity texts) with a text -> embedding
    memo read from and written to a pickle."""

    name = "MiniLM"

    def __init__(self, path: Path | None, max_tokens: int, key: str):
        from instructgpt.labelers.embedding import MiniLMEmbedder

        self.path, self.key = path, key
        self.embedder = MiniLMEmbedder(max_tokens=max_tokens)
        self.memo: dict[str, np.ndarray] = {}
        if path is not None and path.is_file():
            with path.open("rb") as handle:
                self.memo = pickle.load(handle).get(key, {})

    def embed(self, texts):
        missing = list(dict.fromkeys(t for t in texts if t not in self.memo))
        if missing:
            self.memo.update(zip(missing, self.embedder.embed(missing)))
        return np.stack([self.memo[t] for t in texts]) if len(texts) else np.zeros((0, 384), np.float32)

    def save(self) -> None:
        if self.path is None:
            return
        stored = {}
        if self.path.is_file():
            with self.path.open("rb") as handle:
                stored = pickle.load(handle)
        with self.path.open("wb") as handle:
            pickle.dump({**stored, self.key: self.memo}, handle)


def measure(root: Path, method: str, embeddings: Path | None, paper_weight: float = truthfulqa.PAPER_WEIGHT) -> dict:
    """Train one recipe's judges and scorer and measure them on the paper's samples."""
    references: dict = {}
    for version in ("v0", "v1", "current"):
        references.update(truthfulqa.reference_answers(root, version))
    samples = root / "instructgpt-samples" / "automatic-eval-samples" / "truthful_qa_samples.csv"
    if method == "paper":
        return measure_paper(root, references, truthfulqa.read_paper_samples(samples), paper_weight)
    paper = frozenset((r["question"], r["answer"]) for r in truthfulqa.read_paper_samples(samples))
    tqa = FileMemoEmbedder(embeddings, 64, "tqa") if method == "minilm" else None
    tox = FileMemoEmbedder(embeddings, 128, "tox") if method == "minilm" else None
    judges = [
        train_judge(root / "truthfulqa" / "data" / f"finetune_{kind}.jsonl.gz", references, refs, paper, tqa)
        for kind, refs in (("truth", True), ("info", False))
    ]
    agreement = truthfulqa.paper_samples_agreement(root, *judges)
    scorer = train_scorer(root, tox)
    for embedder in (tqa, tox):
        if embedder is not None:
            embedder.save()
    return {
        "truth_judge": judges[0].name,
        "info_judge": judges[1].name,
        "toxicity_scorer": scorer.name,
        "trained_on_paper_samples": False,
        "heldout_accuracy": {"truth": judges[0].heldout_accuracy, "info": judges[1].heldout_accuracy},
        "truthfulqa": agreement,
        "toxicity": scorer.agreement,
    }


def measure_paper(root: Path, references: dict, rows: list[dict], paper_weight: float) -> dict:
    """The ``paper`` recipe: the evaluation's own training functions with the paper's samples,
    measured held out by model type and by family (the judges' and scorer's ``paper_heldout``)."""
    path = root / "truthfulqa" / "data"
    judges = [
        truthfulqa.train_judge(
            path / f"finetune_{kind}.jsonl.gz",
            references,
            refs,
            paper_rows=rows,
            column=column,
            paper_weight=paper_weight,
        )
        for kind, refs, column in (("truth", True, "true"), ("info", False, "info"))
    ]
    scorer = toxicity.train_offline_scorer(root, paper_weight=paper_weight)
    return {
        "truth_judge": judges[0].name + " + the paper's answers",
        "info_judge": judges[1].name + " + the paper's answers",
        "toxicity_scorer": scorer.name + " + the paper's samples",
        "trained_on_paper_samples": True,
        "paper_weight": paper_weight,
        "heldout_accuracy": {"truth": judges[0].heldout_accuracy, "info": judges[1].heldout_accuracy},
        "truthfulqa": truthfulqa.paper_samples_agreement(root, *judges),
        "toxicity": scorer.agreement,
    }


def show(method: str, out: dict) -> None:
    held = out["toxicity"]["heldout_rtp_texts"]
    print(f"\n== {method}: {out['truth_judge']} / {out['toxicity_scorer']}")
    splits = [("", "paper_samples")] + (
        [(" (by family)", "paper_samples_by_family")] if "paper_samples_by_family" in out["toxicity"] else []
    )
    for label, key in splits:
        tox = out["toxicity"][key]
        print(
            f"toxicity{label}: Pearson {tox['pearson']:.3f} (held-out RTP {held['pearson']:.3f}), "
            f"{tox['groups_over_0.02']} of {len(tox['mean_differences'])} means over 0.02, "
            f"worst {tox['worst_mean_difference']:.3f}, respectful effect reproduced "
            f"{tox['respectful_reproduced']} of {tox['respectful_significant']}"
        )
        for model, e in tox["respectful_effect"].items():
            low, high = e["perspective_ci"]
            print(
                f"   {model:<16} respectful - basic: Perspective {e['perspective']:+.3f} [{low:+.3f}, {high:+.3f}]"
                f"  ours {e['ours']:+.3f}{'  (significant)' if e['significant'] else ''}"
            )
    for kind in ("truth", "info"):
        for label, key in (("", kind), (" (by family)", f"{kind}_by_family")):
            if key not in out["truthfulqa"]:
                continue
            a = out["truthfulqa"][key]
            print(
                f"truthfulqa {kind}{label}: held-out accuracy {out['heldout_accuracy'][kind]:.3f}, agreement "
                f"{a['agreement']:.3f}, worst model {a['worst_model_difference']:.3f}, "
                f"{a['models_over_5_points']} of {len(a['per_model'])} over 5 points"
            )
            for model, row in a["per_model"].items():
                ours, theirs = row["ours"], row["gpt_judge"]
                print(f"   {model:<16} ours {ours:.2f}  GPT-judge {theirs:.2f}  {ours - theirs:+.2f}")


OUT = Path(__file__).resolve().parents[1] / "bench" / "results" / "sweeps" / "judge-agreement-model-heldout.json"


def main(
    methods: tuple[str, ...] = ("tfidf", "paper"),
    embeddings: Path | None = None,
    data: Path | None = None,
    paper_weight: float = truthfulqa.PAPER_WEIGHT,
    out: Path | None = OUT,
    machine: str = "",
) -> None:
    """Measure ``methods``, print them, write the record to ``out`` (default :data:`OUT`); ``machine``: where."""
    import platform
    import time

    import torch

    from instructgpt.data.importers import find_data_root

    torch.set_num_threads(1)
    root = data or find_data_root(Path(__file__).parent)
    results: dict = {
        "what": "runs/judge_agreement.py: the offline TruthfulQA judges and toxicity scorer against the paper's own "
        "judges (stored GPT-judge labels, Perspective scores) on its released samples, in issue 22's terms; "
        "'paper' held out by model type (paper_samples / truth / info) and by family (*_by_family)",
        "machine": machine or f"{platform.machine()} {platform.processor()}".strip(),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "methods": {},
    }
    for method in methods:
        results["methods"][method] = measure(root, method, embeddings, paper_weight)
        show(method, results["methods"][method])
    if out is not None:
        out.write_text(json.dumps(results, indent=1, default=float) + "\n", encoding="utf-8")
        print(f"wrote {out}")


if __name__ == "__main__":
    tyro.cli(main)
