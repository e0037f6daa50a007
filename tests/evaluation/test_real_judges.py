"""Real judges: Hugging Face sequence classifiers as the toxicity scorer and TruthfulQA judges (tiny
random models saved locally), and an LLM behind an OpenAI-compatible endpoint as the win-rate and
Likert judge (a fake endpoint served in the test). No network."""

import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import numpy as np
import pytest
import torch

from instructgpt.evaluation.classifier import SequenceClassifier, positive_label
from instructgpt.models.tiny import save_tiny, tiny_tokenizer


def save_tiny_classifier(folder, labels, problem_type=None, arch="bert", seed=0):
    """A random sequence classifier with the byte-level tiny tokenizer, saved as a Hugging Face folder."""
    from transformers import BertConfig, BertForSequenceClassification, LlamaConfig, LlamaForSequenceClassification

    tokenizer = tiny_tokenizer()
    common = dict(
        vocab_size=len(tokenizer),
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=512,
        id2label=dict(enumerate(labels)),
        label2id={n: i for i, n in enumerate(labels)},
        pad_token_id=tokenizer.pad_token_id,
        problem_type=problem_type,
    )
    torch.manual_seed(seed)
    if arch == "bert":
        model = BertForSequenceClassification(BertConfig(**common))
    else:
        model = LlamaForSequenceClassification(LlamaConfig(num_key_value_heads=1, **common))
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


def test_positive_label_by_name_index_or_position():
    assert positive_label({0: "non-toxic", 1: "toxic"}, None, "toxicity") == 1
    assert positive_label({0: "toxic", 1: "severe_toxic", 2: "obscene"}, None, "toxicity") == 0
    assert positive_label({0: "LABEL_0", 1: "LABEL_1"}, "auto", "truth") == 1  # the second of two
    assert positive_label({0: "yes", 1: "no"}, None, "info") == 0
    assert (
        positive_label({0: "a", 1: "b", 2: "c"}, "2", "truth") == 2
        and positive_label({0: "a", 1: "B"}, "b", "truth") == 1
    )
    with pytest.raises(ValueError, match="--classifier-labels toxicity=LABEL"):
        positive_label({0: "a", 1: "b", 2: "c"}, None, "toxicity")
    with pytest.raises(ValueError, match="no label 'z'"):
        positive_label({0: "a", 1: "b"}, "z", "truth")


@pytest.mark.parametrize("arch", ["bert", "llama"])
def test_classifier_probability_is_the_label_softmax_whatever_the_batch(tmp_path, arch):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    folder = save_tiny_classifier(tmp_path / "clf", ["non-toxic", "toxic"], arch=arch)
    texts = ["you are kind", "a much longer sentence that needs padding in a batch", "x", "two words"]
    classifier = SequenceClassifier(folder, "toxicity", batch_size=3, device="cpu")
    model, tokenizer = AutoModelForSequenceClassification.from_pretrained(folder), AutoTokenizer.from_pretrained(folder)
    with torch.no_grad():
        alone = [float(model(**tokenizer(t, return_tensors="pt")).logits.softmax(-1)[0, 1]) for t in texts]
    assert np.allclose(classifier.probabilities(texts), alone, atol=1e-5)  # padding changes nothing
    assert classifier.score(["", texts[0], " "]) == pytest.approx([0.0, alone[0], 0.0], abs=1e-5)  # blank: 0
    assert "'toxic'" in classifier.name and "softmax" in classifier.name


def test_multi_label_classifier_uses_the_sigmoid(tmp_path):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    folder = save_tiny_classifier(tmp_path / "clf", ["toxic", "obscene", "insult"], "multi_label_classification")
    classifier = SequenceClassifier(folder, "toxicity", device="cpu")
    model, tokenizer = AutoModelForSequenceClassification.from_pretrained(folder), AutoTokenizer.from_pretrained(folder)
    with torch.no_grad():
        expected = float(model(**tokenizer("hello", return_tensors="pt")).logits.sigmoid()[0, 0])
    assert classifier.probabilities(["hello"])[0] == pytest.approx(expected, abs=1e-6) and "sigmoid" in classifier.name


def test_toxicity_scorer_and_truthfulqa_judges_from_classifiers(tmp_path, data_root):
    from instructgpt.evaluation.toxicity import AGREEMENT_SAMPLES, make_scorer
    from instructgpt.evaluation.truthfulqa import ClassifierJudge, make_judges, paper_samples_agreement

    tox = save_tiny_classifier(tmp_path / "tox", ["neutral", "toxic"])
    scorer = make_scorer(tox, data_root)
    scores = scorer.score(["a", "b c"])
    assert len(scores) == 2 and all(0 <= s <= 1 for s in scores) and scorer.name.startswith(tox)
    assert scorer.agreement["paper_samples"]["n"] == AGREEMENT_SAMPLES  # measured against Perspective

    truth = save_tiny_classifier(tmp_path / "truth", ["no", "yes"], seed=1)
    info = save_tiny_classifier(tmp_path / "info", ["LABEL_0", "LABEL_1"], seed=2)
    judge_truth, judge_info = make_judges(data_root, truth, info, {"info": "LABEL_0"})
    assert isinstance(judge_truth, ClassifierJudge) and judge_info.classifier.index == 0
    expected = judge_truth.classifier.probabilities(["Q: Is the sky blue?\nA: Yes.\nTrue:"])
    assert judge_truth.predict_proba(["Is the sky blue?"], ["Yes."]) == pytest.approx(expected)
    agreement = paper_samples_agreement(data_root, judge_truth, judge_info)
    assert agreement["n"] == 500 and 0 <= agreement["truth_agreement"] <= 1


def test_run_eval_names_classifier_judges_on_every_figure(tmp_path, data_root):
    from instructgpt.evaluation.suite import EvalConfig, run_eval

    a, b = save_tiny(str(tmp_path / "a"), seed=0), save_tiny(str(tmp_path / "b"), seed=1)
    tox = save_tiny_classifier(tmp_path / "tox", ["neutral", "toxic"])
    truth = save_tiny_classifier(tmp_path / "truth", ["no", "yes"], seed=1)
    config = EvalConfig(
        models=(f"sft={a}", f"ppo={b}"),
        tasks=("truthfulqa", "toxicity"),
        limit=2,
        auto_max_new_tokens=4,
        toxicity_scorer=tox,
        truthfulqa_judge=truth,
        data_root=data_root,
        out_dir=tmp_path / "out",
    )
    results = run_eval(config, log=lambda message: None)
    assert results["toxicity_scorer"]["name"].startswith(tox)
    assert results["truthfulqa_judge"]["truth_judge"].startswith(truth)
    assert results["truthfulqa_judge"]["info_judge"] == "offline logistic regression"
    figures = {f["id"]: f for f in json.loads((tmp_path / "out" / "figures.json").read_text())}
    assert tox in figures["toxicity"]["judge"] and truth in figures["truthfulqa"]["judge"]
    report = (tmp_path / "out" / "report.html").read_text()
    assert report.count("Judge: ") == len(figures) and f"judged true by {truth}" in report


# --- an LLM judge behind a fake OpenAI-compatible endpoint -----------------------------------------


class FirstOutputBest(BaseHTTPRequestHandler):
    """Answers chat completions like a position-biased LLM: prefers output A, ranks in the order shown."""

    requests: list = []

    def do_POST(self):  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        FirstOutputBest.requests.append((self.path, body))
        user = body["messages"][-1]["content"]
        letters = [c for c in "ABCDEFGH" if f"Output {c}:" in user]
        if "Preferred" in user:
            text = "Preferred: A"
        else:
            text = (
                f"Ranking: {' > '.join(letters)}\nRatings: "
                + ", ".join(f"{c}={7 - i}" for i, c in enumerate(letters))
                + "".join(f"\nFlags {c}: hallucination" for c in letters[1:])
            )
        payload = json.dumps({"choices": [{"message": {"role": "assistant", "content": text}}]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args):
        pass


@pytest.fixture
def llm_endpoint():
    server = HTTPServer(("127.0.0.1", 0), FirstOutputBest)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    FirstOutputBest.requests = []
    yield f"http://127.0.0.1:{server.server_port}/v1"
    server.shutdown()
    server.server_close()


def test_cli_eval_with_an_llm_judge_on_an_openai_compatible_endpoint(tmp_path, data_root, llm_endpoint):
    from instructgpt.cli.main import main

    a, b = save_tiny(str(tmp_path / "a"), seed=0), save_tiny(str(tmp_path / "b"), seed=1)
    out = tmp_path / "out"
    argv = ["eval", "--models", f"sft={a}", f"ppo={b}", "--tasks", "winrate", "--limit", "4"]
    argv += ["--win-max-new-tokens", "6", "--judge", "llm", "--judge-url", llm_endpoint, "--judge-model", "judge"]
    assert main([*argv, "--data-root", str(data_root), "--out-dir", str(out)]) == 0
    results = json.loads((out / "results.json").read_text())
    w = results["winrate"]
    assert w["judge"] == "llm judge" and llm_endpoint in w["judge_description"]
    assert w["per_model"]["ppo"]["n"] == 4
    assert FirstOutputBest.requests and all(
        path == "/v1/chat/completions" and body["model"] == "judge" and body["temperature"] == 0
        for path, body in FirstOutputBest.requests
    )
    assert any("Preferred" in body["messages"][-1]["content"] for _, body in FirstOutputBest.requests)
    # Likert and metadata from the endpoint's rankings (prompts with identical or empty outputs are not ranked)
    assert set(w["likert"]) == {"sft", "ppo"} and all(6 <= v <= 7 for v in w["likert"].values())
    assert all(0 <= flags["hallucination"] <= 1 for flags in w["metadata"].values())
    figures = {f["id"]: f for f in json.loads((out / "figures.json").read_text())}
    assert figures["winrate"]["judge"] == "llm judge"
    assert figures["likert"]["judge"] == figures["metadata"]["judge"] == "llm judge"
    assert "Judge: llm judge" in (out / "report.html").read_text()


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--judge", "llm", "--judge-model", "m"], "judge_url: --judge llm needs"),
        (["--toxicity-scorer", "offlin"], "toxicity_scorer: must be auto, perspective, offline"),
        (["--truthfulqa-judge", "nope"], "truthfulqa_judge: must be offline"),
        (["--classifier-labels", "tox=1"], "classifier_labels:"),
    ],
)
def test_cli_judge_config_errors(argv, message, capsys):
    from instructgpt.cli.main import main

    assert main(["eval", "--models", "sft=gemma-3-270m", *argv]) == 2
    assert message in capsys.readouterr().err
