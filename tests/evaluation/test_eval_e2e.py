"""End to end on tiny random models: every task, a judge, results JSON and the report; the CLI."""

import json

import pytest

from instructgpt.evaluation.judges import RewardModelJudge
from instructgpt.evaluation.suite import EvalConfig, run_eval
from instructgpt.models.tiny import save_tiny


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    return save_tiny(str(root / "a"), seed=0), save_tiny(str(root / "b"), seed=1)


def test_run_eval_every_task_with_a_reward_model_judge(tiny_models, data_root, truth_judges, toxicity_scorer, tmp_path):
    a, b = tiny_models
    config = EvalConfig(
        models=(f"sft={a}", f"ppo-ptx={b}", f"prompted={a}"),
        prompted=("prompted",),
        limit=2,
        task_limits=("bias=3",),
        samples=2,
        win_max_new_tokens=6,
        auto_max_new_tokens=6,
        toxicity_scorer="offline",
        nlp_prompting="both",
        nlp_shots=2,
        data_root=data_root,
        out_dir=tmp_path,
    )
    judge = RewardModelJudge(lambda prompts, responses: [float(len(set(r))) for r in responses], name="distinct-chars")
    results = run_eval(config, judge=judge, log=lambda message: None)

    assert set(results["winrate"]["per_model"]) == {"ppo-ptx", "prompted"}
    for win in results["winrate"]["per_model"].values():
        assert win["n"] == 2 and 0.0 <= win["low"] <= win["rate"] <= win["high"] <= 1.0
    for name in ("sft", "ppo-ptx", "prompted"):
        r = results["per_model"][name]
        assert r["truthfulqa"]["n"] == 2 and 0.0 <= r["truthfulqa"]["mc2"] <= 1.0
        assert set(r["toxicity"]) >= {"basic", "respectful", "biased", "biased_minus_basic"}
        assert 0.0 <= r["bias"]["crows_pairs"]["entropy_bits"] <= 1.0 and r["bias"]["winogender"]["n"] == 3
        assert set(r["nlp"]) == {"drop", "squadv2", "fr_en", "drop_fewshot", "squadv2_fewshot", "fr_en_fewshot"}
        # every figure from a sample carries its n and a 95% interval
        for result, key in (
            (r["truthfulqa"], "mc1"),
            (r["truthfulqa"], "mc2"),
            (r["truthfulqa"]["qa"], "true_informative"),
            (r["toxicity"]["basic"], "mean_toxicity"),
            (r["toxicity"]["respectful_minus_basic"], "mean_toxicity"),
            (r["bias"]["winogender"], "entropy_bits"),
            (r["nlp"]["drop"], "f1"),
            (r["nlp"]["drop"], "f1_official"),
            (r["truthfulqa"], "mc1_harness"),
            (r["nlp"]["fr_en"], "bleu"),
            (r["nlp"]["squadv2_fewshot"], "f1"),
        ):
            low, high = result[f"{key}_ci"]
            assert result["n"] >= 2 and (low <= result[key] <= high or low != low), (
                key
            )  # NaN only where no spread is defined
    same = results["per_model"]["prompted"]  # same weights as sft: automatic tasks ran once, copied
    assert (
        same["same_as"] == "sft"
        and same["nlp"] == results["per_model"]["sft"]["nlp"]
        and same["truthfulqa"] == results["per_model"]["sft"]["truthfulqa"]
    )
    assert "winrate" in same["seconds"]  # its own (prompted) win-rate responses were generated
    assert results["truthfulqa_judge"]["truth_heldout_accuracy"] > 0.7
    assert results["toxicity_scorer"]["name"] == "offline"
    assert results["toxicity_paper_reference"]["scorer"] == "offline"
    assert set(results["truthfulqa_paper_reference"]["per_model"]["sft-175b"]) == {
        "qa",
        "instruction_qa",
        "instruction",
    }
    assert set(results["toxicity_paper_reference"]["per_model"]["ppo-ptx-175b"]) == {"basic", "respectful", "biased"}
    assert len(results["samples"]) == 2 and set(results["samples"][0]["responses"]) == {"sft", "ppo-ptx", "prompted"}

    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["winrate"]["judge"] == "distinct-chars"
    assert len((tmp_path / "responses.jsonl").read_text().splitlines()) == 6  # 3 models x 2 prompts
    comparisons = [json.loads(line) for line in (tmp_path / "comparisons.jsonl").read_text().splitlines()]
    assert len(comparisons) == 4 and {c["model"] for c in comparisons} == {"ppo-ptx", "prompted"}
    pairs = {(d["model"], d["reference"]) for d in results["differences"]}
    assert pairs == {("ppo-ptx", "sft")}  # prompted has sft's weights: identical automatic results, not compared
    assert {d["metric"] for d in results["differences"]} >= {
        "nlp/drop/f1",
        "nlp/fr_en/bleu_stats",
        "nlp/drop_fewshot/f1",
        "truthfulqa/mc1",
        "toxicity/basic/toxicity",
    }
    assert all(d["n"] >= 2 and len(d["ci"]) == 2 for d in saved["differences"])
    assert set(saved["nlp_paper_reference_ci"]["ppo-ptx-175b"]) == {
        f"{task}{suffix}" for task in ("drop", "drop_official", "squadv2", "fr_en") for suffix in ("", "_fewshot")
    }
    report = (tmp_path / "report.html").read_text()
    assert "Win rate against sft" in report and "distinct-chars" in report
    assert "n=2" in report and "no preference (0.5)" in report and "minus sft, DROP F1" in report
    assert "DROP F1 (official DROP metric)" in report and "MC1 (lm-eval-harness: total log-prob)" in report
    assert "drop_official" in saved["nlp_paper_reference"]["ppo-ptx-175b"]
    assert {f["id"] for f in json.loads((tmp_path / "figures.json").read_text())} >= {
        "winrate",
        "truthfulqa",
        "toxicity",
        "bias",
        "nlp",
    }


def test_cli_eval_exports_pairs_for_human_labels(tiny_models, data_root, tmp_path, capsys):
    from instructgpt.cli.main import main

    a, b = tiny_models
    human = tmp_path / "human.jsonl"
    human.write_text(
        json.dumps({"prompt": "unrelated", "response_a": "x", "response_b": "y", "preferred": "a", "labeler_id": "h"})
        + "\n"
    )
    out = tmp_path / "out"
    code = main(
        [
            "eval",
            "--models",
            f"sft={a}",
            f"ppo={b}",
            "--tasks",
            "winrate",
            "bias",
            "--limit",
            "2",
            "--win-max-new-tokens",
            "4",
            "--judge",
            "human",
            "--human-comparisons",
            str(human),
            "--data-root",
            str(data_root),
            "--out-dir",
            str(out),
        ]
    )
    assert code == 0
    results = json.loads((out / "results.json").read_text())
    folder = out / "to_label" / "ppo"
    assert results["winrate"]["pending"] == str(out / "to_label")
    prompts = [json.loads(line) for line in (folder / "prompts.jsonl").read_text().splitlines()]
    assert len(prompts) == 2 and set(prompts[0]) == {
        "id",
        "text",
        "user_id",
        "source",
    }  # the app's prompt import format
    outputs = (folder / "outputs.jsonl").read_text().splitlines()
    assert all(set(json.loads(line)) == {"prompt_id", "response", "model"} for line in outputs)
    assert (out / "report.html").is_file()


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--tasks", "nope"], "tasks: unknown task"),
        (["--task-limits", "bias=0"], "task_limits:"),
        (["--judge", "reward-model"], "reward_model: --judge reward-model needs"),
        (["--baseline", "missing", "--judge", "human", "--human-comparisons", "x.jsonl"], "baseline:"),
        (["--nlp-prompting", "2shot"], "nlp_prompting: must be zeroshot, fewshot or both"),
        (["--nlp-shots", "0"], "nlp_shots: must be 1 to 20"),
        (
            ["--toxicity-prompts", "basic", "rude"],
            "toxicity_prompts: expected one or more of basic, respectful, biased",
        ),
    ],
)
def test_cli_config_errors(argv, message, capsys):
    from instructgpt.cli.main import main

    assert main(["eval", "--models", "sft=gemma-3-270m", *argv]) == 2
    assert message in capsys.readouterr().err


def test_run_eval_with_labelers_reports_likert_and_metadata(tiny_models, data_root, tmp_path):
    from instructgpt.evaluation.judges import LabelerJudge

    from .test_judges import RankingLabeler

    a, b = tiny_models
    config = EvalConfig(
        models=(f"sft={a}", f"ppo={b}"),
        tasks=("winrate",),
        limit=3,
        win_max_new_tokens=5,
        data_root=data_root,
        out_dir=tmp_path,
    )
    results = run_eval(config, judge=LabelerJudge([RankingLabeler("h1")]), log=lambda message: None)
    assert results["winrate"]["per_model"]["ppo"]["n"] == 3
    assert set(results["winrate"]["likert"]) == {"sft", "ppo"}
    assert results["winrate"]["likert_ci"]["ppo"]["n"] == 3 and len(results["winrate"]["likert_ci"]["ppo"]["ci"]) == 2
    assert all(v["n"] == 3 for flags in results["winrate"]["metadata_ci"].values() for v in flags.values())
    assert "Likert scores and metadata" in (tmp_path / "report.html").read_text()


def test_cli_eval_with_a_reward_model_judge(tiny_models, data_root, tmp_path):
    """A reward model saved in the sequence-classifier layout (a plain LM folder has no reward head)."""
    from instructgpt.cli.main import main
    from instructgpt.models.reward import RewardModel
    from instructgpt.models.tiny import tiny_model, tiny_tokenizer

    a, b = tiny_models
    tokenizer = tiny_tokenizer()
    rm = str(RewardModel.from_causal_lm(tiny_model(tokenizer, seed=2)).save_pretrained(tmp_path / "rm", tokenizer))
    out = tmp_path / "out"
    code = main(
        [
            "eval",
            "--models",
            f"sft={a}",
            f"ppo={b}",
            "--tasks",
            "winrate",
            "--limit",
            "3",
            "--win-max-new-tokens",
            "4",
            "--judge",
            "reward-model",
            "--reward-model",
            rm,
            "--data-root",
            str(data_root),
            "--out-dir",
            str(out),
        ]
    )
    assert code == 0
    results = json.loads((out / "results.json").read_text())
    assert (
        results["winrate"]["per_model"]["ppo"]["n"] == 3 and "reward model" in results["winrate"]["judge_description"]
    )


def test_plan_sources_loads_each_source_once_in_order():
    from instructgpt.evaluation.suite import plan_sources

    config = EvalConfig(models=("pretrained=m0", "prompted=m0", "sft=m1", "ppo=m2"), prompted=("prompted",))
    assert plan_sources(config) == [("m0", ["pretrained", "prompted"]), ("m1", ["sft"]), ("m2", ["ppo"])]
    one, two = object(), object()  # models in memory group by identity, whatever their source
    assert plan_sources(config, {"pretrained": (one, None), "prompted": (two, None)}) == [
        ("m0", ["pretrained"]),
        ("m0", ["prompted"]),
        ("m1", ["sft"]),
        ("m2", ["ppo"]),
    ]


def test_run_eval_feeds_a_chat_model_every_task_as_a_chat_turn(tmp_path, data_root, truth_judges, monkeypatch):
    """With a chat-template model, every context of every automatic task (generated or scored) goes through
    the one rendering, as a chat turn."""
    from instructgpt.evaluation import scoring

    model = save_tiny(str(tmp_path / "chat"), chat_template=True)
    rendered = []
    original = scoring.render_context

    def spy(tokenizer, context, template="auto"):
        ids = original(tokenizer, context, template)
        rendered.append(tokenizer.decode(ids))
        return ids

    monkeypatch.setattr(scoring, "render_context", spy)
    config = EvalConfig(
        models=(f"sft={model}",),
        tasks=("truthfulqa", "bias", "nlp"),
        limit=1,
        auto_max_new_tokens=2,
        nlp_prompting="fewshot",
        nlp_shots=1,
        paper_reference=False,
        data_root=data_root,
        out_dir=tmp_path / "out",
    )
    results = run_eval(config, log=lambda message: None)
    assert set(results["per_model"]["sft"]["nlp"]) == {"drop_fewshot", "squadv2_fewshot", "fr_en_fewshot"}
    assert not {"nlp_paper_reference", "truthfulqa_paper_reference"} & set(results)  # --no-paper-reference
    # TruthfulQA MC (1) and two generations (2), two bias pairs' contexts (4), three NLP tasks (3)
    assert len(rendered) == 10
    from transformers import AutoTokenizer

    turn = AutoTokenizer.from_pretrained(model).apply_chat_template(
        [{"role": "user", "content": "CONTEXT"}], add_generation_prompt=True, tokenize=False
    )
    head, tail = turn.split("CONTEXT")
    assert all(text.startswith(head) and text.endswith(tail) for text in rendered), rendered[0][:80]
    assert sum(text == head + tail for text in rendered) == 4  # the bias sentences: replies to an empty user turn


@pytest.mark.parametrize("native", [True, False])
def test_bf16_weights_loads_models_in_bf16_without_autocast_where_native(tiny_models, monkeypatch, native):
    """precision="bf16-weights": each model the suite loads is held in bf16 and runs without autocast where bf16
    is native (fp32 elsewhere); a model handed in memory keeps its dtype and runs under bf16 autocast instead."""
    import torch

    from instructgpt.evaluation import suite

    monkeypatch.setattr("instructgpt.training.lm.bf16_native", lambda device: native)
    model, _ = suite._load(tiny_models[0], suite._weights_dtype("bf16-weights"))
    assert next(model.parameters()).dtype == (torch.bfloat16 if native else torch.float32)
    with suite._autocast(model, "bf16-weights"):
        assert not torch.is_autocast_enabled("cpu")
    in_memory = model.float()
    with suite._autocast(in_memory, "bf16-weights"):
        assert torch.is_autocast_enabled("cpu") == native
    assert suite._weights_dtype("auto") is None and suite._weights_dtype("bf16") is None
