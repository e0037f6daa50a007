"""Benchmark: our PPO trainer against TRL's PPO trainer: seconds per iteration, episodes/s, peak memory.

    bench/ppo_peer_env.sh               # once: .venv-trl-ppo with trl==1.12.0 (trl.experimental.ppo)
    python bench/ppo.py                 # gemma-3-270m
    python bench/ppo.py --quick         # a tiny random model: a smoke run of a minute or two
    python bench/ppo.py --help

TRL removed its PPO trainer after 1.12.0 (it ships there as ``trl.experimental.ppo``), so TRL
runs in its own virtualenv (``--trl-python``, default ``.venv-trl-ppo/bin/python``) with the
same torch 2.13.0 and transformers 5.x; each run is a subprocess of its own, so each side's
peak memory (RSS high-water mark, model load included) is its own.

Same work on both sides: the same policy (the SFT stand-in), the same reward model (a seeded
scalar head on the policy's trunk; TRL gets it as a ``...ForSequenceClassification`` folder
with the identical weights) which also initialises the value model, the same prompts (Alpaca
instructions whose rendered length is at most ``--max-prompt-tokens``, identical token ids),
the same batch (``--batch-size`` episodes per iteration, one optimizer step per iteration,
micro-batches of ``--micro-batch-size``), one PPO epoch, sampling at temperature 1 up to
``--response-length`` tokens stopping at EOS, the same kl_coef, clip ranges and learning rates
(TRL has one optimizer for policy + value: it gets the policy lr), the same hardware and thread
count. Plain PPO (ptx_coef 0): TRL has no pretraining mix.

What differs is each trainer's design: ours (``ours``, the default ``precision``) holds the
policy and value model in bf16 and steps fp32 master copies (so lr-sized updates are kept),
samples with the bf16 policy and takes the old log-probabilities from the sampling pass, runs
the reference and reward model in bf16, projects only response positions onto the vocabulary
in chunks with a fused backward, sends the embedding's sparse gradient straight into the
masters, and keeps the policy's EMA (decay 0.992); ``ours-bf16`` is pure bf16 training
(``master_weights="bf16"``, no masters), run when TRL's ``bf16-weights`` variant is. TRL keeps
the full-vocabulary logits of every generated token and of every training position, in fp32
unless its models are loaded in bf16 (``--trl-variants``: ``fp32`` as TRL comes;
``bf16-weights``: all four models in bf16, pure bf16 training).

Pure bf16 training rounds most updates away: at lr 5e-6, an Adam step (about lr per weight) is
below half the bf16 spacing of any weight larger than about 1e-3 in magnitude. Each run
therefore reports ``weights_changed``: the fraction of a fixed sample of the policy's weights
(up to 4096 per tensor) that differ after training from before it. Ratios are given for the
like-for-like pairs (ours / trl-fp32: both keep every update; ours-bf16 / trl-bf16-weights:
both pure bf16) and against TRL's fastest variant.

Measured: per iteration, wall time (ours: the trainer's ``time/iteration_s``; TRL: between
consecutive ``on_step_end`` callbacks, the first from ``on_train_begin``); the first
``--warmup`` iterations are excluded; episodes/s = batch / median iteration time; mean response
length is reported because sampled lengths differ between runs. Runs alternate (ABBA) between
ours and each TRL variant, ``--repeats`` times; the report gives medians and ratios.
Checkpoint writes are excluded on both sides (ours: patched out in the worker; TRL: save_strategy="no").
"""

from __future__ import annotations

import dataclasses
import json
import os
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from common import (
    format_table,
    machine,
    matmul_peak,
    median,
    model_dims,
    peak_rss_mib,
    ratio,
    resolved_precision,
    run_and_write,
)

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Args:
    """Our PPO trainer against TRL's PPO trainer: seconds per iteration, episodes/s, peak memory."""

    model: str = "gemma-3-270m"
    """Policy (and reward-model trunk): 'gemma-3-270m' (embedded), a local Hugging Face folder or a .gguf file."""
    batch_size: int = 8
    """Episodes per iteration, both sides (one optimizer step each)."""
    micro_batch_size: int = 4
    """Episodes per training forward pass (TRL: per_device_train_batch_size)."""
    response_length: int = 32
    """Most new tokens per response."""
    max_prompt_tokens: int = 48
    """Prompts whose rendered length exceeds this are skipped."""
    iterations: int = 3
    """PPO iterations per run, warm-up included."""
    warmup: int = 1
    """Iterations at the start of each run that are not measured."""
    repeats: int = 2
    """Measured runs per side (alternating)."""
    trl_variants: tuple[str, ...] = ("fp32", "bf16-weights")
    """TRL settings to run: fp32 (as TRL comes), bf16-weights (all models loaded in bf16)."""
    threads: int = 0
    """torch threads in each worker; 0: torch's default."""
    trl_python: Path = ROOT / ".venv-trl-ppo" / "bin" / "python"
    """Python of the TRL 1.12.0 environment (bench/ppo_peer_env.sh builds it)."""
    quick: bool = False
    """Smoke run: a tiny random model."""
    out: Path = Path(__file__).resolve().parent / "results" / "ppo.json"
    """JSON report."""
    work_dir: Path | None = None
    """Keep data, worker logs and run folders here (default: a temporary folder, removed at the end)."""
    timeout: int = 1800
    """Seconds before a worker subprocess is killed."""
    seed: int = 0
    """Seed of the prompt subset, the reward head and both trainers."""
    peer_allocator: str = "system"
    """TRL's memory allocator: 'system' (glibc's defaults, as TRL comes) or 'tuned' (the large-tensor
    settings our package applies on import, instructgpt.runtime, given to TRL's process as environment
    variables), to separate what the allocator buys from what the trainer's design does."""

    def validate(self) -> None:
        if not 0 <= self.warmup < self.iterations:
            raise SystemExit("--warmup must be below --iterations")
        if self.batch_size % self.micro_batch_size:
            raise SystemExit("--batch-size must be a multiple of --micro-batch-size")
        if self.peer_allocator not in ("system", "tuned"):
            raise SystemExit("--peer-allocator must be 'system' or 'tuned'")
        unknown = sorted(set(self.trl_variants) - set(TRL_VARIANTS))
        if unknown:
            raise SystemExit(f"unknown --trl-variants {unknown}; known: {sorted(TRL_VARIANTS)}")


TRL_VARIANTS = {"fp32": "float32", "bf16-weights": "bfloat16"}
"""TRL variant name -> dtype its four models are loaded in."""

PHASES = ("generate", "score", "update")
"""Our trainer's time/<phase>_s metrics: sampling, the reference/reward/value forwards, the PPO update."""

KL_COEF, CLIP, VALUE_CLIP, LR, VALUE_LR = 0.02, 0.2, 0.2, 5e-6, 9e-6


def main(args: Args) -> None:
    args.validate()
    run_and_write(args, "bench-ppo-", run_benchmark)


def run_benchmark(args: Args, work: Path) -> dict[str, Any]:
    host = machine()
    if not Path(args.trl_python).is_file():
        raise SystemExit(f"{args.trl_python} not found: run bench/ppo_peer_env.sh first")
    data = prepare(args, work)
    ours_precision = resolved_precision("auto")
    peaks = {dtype: matmul_peak(dtype) for dtype in {"float32", "bfloat16" if ours_precision == "bf16" else "float32"}}
    print(", ".join(f"{d} matmul peak {p['flops_per_s'] / 1e9:.1f} GFLOP/s" for d, p in peaks.items()), flush=True)
    common = {
        **data,
        "batch_size": args.batch_size,
        "micro_batch_size": args.micro_batch_size,
        "response_length": args.response_length,
        "iterations": args.iterations,
        "threads": args.threads,
        "seed": args.seed,
        "max_prompt_tokens": args.max_prompt_tokens,
    }
    sides = (
        ["ours"]
        + (["ours-bf16"] if "bf16-weights" in args.trl_variants else [])
        + [f"trl-{v}" for v in args.trl_variants]
    )
    runs: dict[str, list[dict]] = {s: [] for s in sides}
    for repeat in range(args.repeats):
        order = sides if repeat % 2 == 0 else list(reversed(sides))
        for side in order:
            spec = {
                **common,
                "side": side,
                "dtype": TRL_VARIANTS.get(side.removeprefix("trl-"), "float32"),
                "run_dir": str(work / f"{side}-{repeat}"),
                "master_weights": "bf16" if side == "ours-bf16" else "fp32",
                "peer_allocator": args.peer_allocator,
            }
            python = sys.executable if side.startswith("ours") else str(args.trl_python)
            result = run_worker(python, spec, work, f"{side}-{repeat}", args.timeout)
            result["iteration_s_measured"] = result.get("iteration_s", [])[args.warmup :]
            result["phases_measured"] = {phase: result.get(f"{phase}_s", [])[args.warmup :] for phase in PHASES}
            runs[side].append(result)
            print(f"{side} run {repeat}: {_summary(result, args.batch_size)}", flush=True)
    summary = {side: _aggregate(rs, args.batch_size) for side, rs in runs.items()}
    fallback_length = summary["ours"]["response_length"] or args.response_length
    for side in sides:
        dtype = "float32" if side == "trl-fp32" or ours_precision == "fp32" else "bfloat16"
        summary[side].update(_mfu(data, summary[side], args.batch_size, fallback_length, peaks[dtype]))
    best_trl = min(
        (s for s in sides if s.startswith("trl-") and summary[s]["iteration_s"]),
        key=lambda s: summary[s]["iteration_s"],
        default=None,
    )
    rows = [
        [
            s,
            summary[s]["iteration_s"],
            summary[s]["episodes_per_s"],
            summary[s]["peak_rss_mib"],
            summary[s]["response_length"],
            summary[s]["weights_changed"],
            summary[s]["mfu"],
        ]
        for s in sides
    ]
    pairs = [("ours", "trl-fp32"), ("ours-bf16", "trl-bf16-weights")] + ([("ours", best_trl)] if best_trl else [])
    comparisons = {}
    for a, b in pairs:
        if a in summary and b in summary and f"{a} / {b}" not in comparisons:
            o, t = summary[a], summary[b]
            comparisons[f"{a} / {b}"] = {
                "iteration_s": ratio(o["iteration_s"], t["iteration_s"]),
                "episodes_per_s": ratio(o["episodes_per_s"], t["episodes_per_s"]),
                "peak_rss": ratio(o["peak_rss_mib"], t["peak_rss_mib"]),
            }
            rows.append(
                [
                    f"{a} / {b}",
                    *comparisons[f"{a} / {b}"].values(),
                    None,
                    None,
                    ratio(summary[a]["mfu"], summary[b]["mfu"]),
                ]
            )
    print()
    print(
        format_table(
            ["side", "s/iteration", "episodes/s", "peak RSS MiB", "response len", "weights changed", "MFU"], rows
        )
    )
    print(f"\nours, median seconds per phase: {summary['ours']['phase_s']}\nFLOPs: {FLOP_COUNTING}")
    fp32 = comparisons.get("ours / trl-fp32", {})
    return {
        "benchmark": "ppo",
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in dataclasses.asdict(args).items()},
        "machine": host,
        "model": data["policy"],
        "summary": {
            "precision": ours_precision,
            "ours_mfu": summary["ours"]["mfu"],
            "speedup_vs_trl_fp32": fp32.get("episodes_per_s"),
            "memory_ratio_vs_trl_fp32": fp32.get("peak_rss"),
        },
        "sides": summary,
        "matmul_peaks": peaks,
        "model_dims": data["dims"],
        "mean_prompt_tokens": data["mean_prompt_tokens"],
        "flop_counting": FLOP_COUNTING,
        "best_trl": best_trl,
        "comparisons": comparisons,
        "ratios_vs_best_trl": None
        if not best_trl
        else {
            "episodes_per_s": ratio(summary["ours"]["episodes_per_s"], summary[best_trl]["episodes_per_s"]),
            "peak_rss": ratio(summary["ours"]["peak_rss_mib"], summary[best_trl]["peak_rss_mib"]),
        },
        "runs": runs,
    }


def prepare(args: Args, work: Path) -> dict[str, Any]:
    """Write the policy folder, the RM in both formats, and the prompt set (ours: JSONL; TRL: token ids)."""
    import random

    import torch
    from transformers import AutoConfig, AutoModelForSequenceClassification

    sys.path.insert(0, str(ROOT / "src"))
    from instructgpt.data.render import render_prompt
    from instructgpt.models.loader import load_model, resolve_model
    from instructgpt.models.reward import RewardModel

    if args.quick:
        from instructgpt.models.tiny import save_tiny

        policy = save_tiny(str(work / "tiny-policy"), seed=args.seed)
    else:
        policy = resolve_model(args.model)
    lm, tokenizer = load_model(policy)
    dims = model_dims(lm)
    rm = RewardModel.from_causal_lm(lm, seed=args.seed)
    rm.save_pretrained(work / "rm", tokenizer=tokenizer, parent=policy)
    config = AutoConfig.from_pretrained(policy, num_labels=1)
    classifier = AutoModelForSequenceClassification.from_config(config)
    missing, unexpected = classifier.model.load_state_dict(rm.trunk.state_dict(), strict=False)
    if missing or unexpected:
        raise SystemExit(f"reward model conversion failed: missing {missing}, unexpected {unexpected}")
    with torch.no_grad():
        classifier.score.weight.copy_(rm.head.weight)
    classifier.save_pretrained(work / "rm-trl")
    tokenizer.save_pretrained(work / "rm-trl")
    del lm, rm, classifier

    records = json.loads((find_data_root() / "alpaca" / "alpaca_5000.json").read_text(encoding="utf-8"))
    texts = [r["instruction"] for r in records if not r["input"]]
    random.Random(args.seed).shuffle(texts)
    prompts, ids = [], []
    for text in texts:
        rendered = render_prompt(tokenizer, text, "raw")
        if len(rendered) <= args.max_prompt_tokens:
            prompts.append(text)
            ids.append(rendered)
        if len(prompts) == args.batch_size * args.iterations:
            break
    with (work / "prompts.jsonl").open("w", encoding="utf-8") as handle:
        for i, text in enumerate(prompts):
            handle.write(json.dumps({"id": f"p{i}", "text": text, "user_id": "bench", "source": "api"}) + "\n")
    (work / "prompt_ids.json").write_text(json.dumps(ids))
    return {
        "dims": dims,
        "mean_prompt_tokens": sum(map(len, ids)) / len(ids),
        "policy": str(policy),
        "rm": str(work / "rm"),
        "rm_trl": str(work / "rm-trl"),
        "prompts": str(work / "prompts.jsonl"),
        "prompt_ids": str(work / "prompt_ids.json"),
    }


def find_data_root() -> Path:
    sys.path.insert(0, str(ROOT / "src"))
    from instructgpt.data.importers import find_data_root as find

    return find()


# ---------------------------------------------------------------- workers (subprocesses)


def run_ours(spec: dict[str, Any]) -> dict[str, Any]:
    sys.path.insert(0, str(ROOT / "src"))
    import torch

    if spec["threads"]:
        torch.set_num_threads(spec["threads"])
    from instructgpt.training import ppo_io
    from instructgpt.training.metrics import read_metrics
    from instructgpt.training.ppo import PPOConfig, train_ppo

    ppo_io.save_checkpoint = lambda *a, **k: None  # checkpoint writes are not part of the measurement
    ppo_io.save_final = lambda *a, **k: None
    batch = spec["batch_size"]
    config = PPOConfig(
        policy=spec["policy"],
        reward_model=spec["rm"],
        prompts=(Path(spec["prompts"]),),
        out_dir=Path(spec["run_dir"]),
        episodes=batch * spec["iterations"] * 100,
        max_iterations=spec["iterations"],
        batch_size=batch,
        minibatch_size=batch,
        micro_batch_size=spec["micro_batch_size"],
        forward_batch_size=spec["micro_batch_size"],
        generation_batch_size=batch,
        max_new_tokens=spec["response_length"],
        max_prompt_tokens=spec["max_prompt_tokens"],
        ptx_coef=0.0,
        kl_coef=KL_COEF,
        clip=CLIP,
        value_clip=VALUE_CLIP,
        lr=LR,
        value_lr=VALUE_LR,
        backend="hf",
        template="raw",
        progress=False,
        seed=spec["seed"],
        master_weights=spec.get("master_weights", "fp32"),
    )
    models = ppo_io.load_models(config, torch.device("cpu"))
    before = weight_sample(models.policy)
    started = time.perf_counter()
    train_ppo(config, models)
    wall = time.perf_counter() - started
    metrics = read_metrics(Path(spec["run_dir"]))
    return {
        "iteration_s": [m["time/iteration_s"] for m in metrics],
        "generate_s": [m["time/generate_s"] for m in metrics],
        "score_s": [m["time/score_s"] for m in metrics],
        "update_s": [m["time/update_s"] for m in metrics],
        "response_length": [m["rollout/response_length"] for m in metrics],
        "score": [m["objective/score"] for m in metrics],
        "train_wall_s": wall,
        "peak_rss_mib": peak_rss_mib(),
        "weights_changed": changed_fraction(before, models.policy),
    }


def weight_sample(model: Any, per_param: int = 4096) -> dict[str, Any]:
    """A fixed strided sample (up to ``per_param`` values) of every policy parameter, copied."""
    out = {}
    for name, param in model.named_parameters():
        flat = param.detach().reshape(-1)
        out[name] = flat[:: max(1, flat.numel() // per_param)][:per_param].float().clone()
    return out


def changed_fraction(before: dict[str, Any], model: Any) -> float:
    """Fraction of the sampled policy weights that training changed: pure bf16 rounds most lr-sized updates away."""
    after = weight_sample(model)
    changed = sum(int((after[n] != b).sum()) for n, b in before.items() if n in after)
    return changed / max(1, sum(b.numel() for n, b in before.items() if n in after))


def run_trl(spec: dict[str, Any]) -> dict[str, Any]:
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer, TrainerCallback
    from trl.experimental.ppo import PPOConfig, PPOTrainer

    if spec["threads"]:
        torch.set_num_threads(spec["threads"])
    dtype = getattr(torch, spec["dtype"])
    tokenizer = AutoTokenizer.from_pretrained(spec["policy"], padding_side="left")
    policy = AutoModelForCausalLM.from_pretrained(spec["policy"], dtype=dtype)
    ref_policy = AutoModelForCausalLM.from_pretrained(spec["policy"], dtype=dtype)
    value_model = AutoModelForSequenceClassification.from_pretrained(spec["rm_trl"], num_labels=1, dtype=dtype)
    reward_model = AutoModelForSequenceClassification.from_pretrained(spec["rm_trl"], num_labels=1, dtype=dtype)
    ids = json.loads(Path(spec["prompt_ids"]).read_text())
    dataset = Dataset.from_dict({"input_ids": ids})
    batch, micro = spec["batch_size"], spec["micro_batch_size"]
    args = PPOConfig(
        output_dir=spec["run_dir"],
        per_device_train_batch_size=micro,
        gradient_accumulation_steps=batch // micro,
        num_mini_batches=1,
        num_ppo_epochs=1,
        total_episodes=batch * spec["iterations"],
        response_length=spec["response_length"],
        local_rollout_forward_batch_size=micro,
        stop_token="eos",
        temperature=1.0,
        kl_coef=KL_COEF,
        cliprange=CLIP,
        cliprange_value=VALUE_CLIP,
        learning_rate=LR,
        lr_scheduler_type="constant",
        save_strategy="no",
        report_to=[],
        logging_steps=1,
        num_sample_generations=0,
        seed=spec["seed"],
        use_cpu=True,
        bf16=False,
        disable_tqdm=True,
        missing_eos_penalty=None,
    )
    times: list[float] = []
    lengths: list[float] = []
    scores: list[float] = []

    class Clock(TrainerCallback):
        def on_train_begin(self, *a, **k):
            self.last = time.perf_counter()

        def on_step_end(self, *a, **k):
            now = time.perf_counter()
            times.append(now - self.last)
            self.last = now

        def on_log(self, args, state, control, logs=None, **k):
            if logs and "objective/scores" in logs:
                scores.append(logs["objective/scores"])

    trainer = PPOTrainer(
        args=args,
        processing_class=tokenizer,
        model=policy,
        ref_model=ref_policy,
        reward_model=reward_model,
        train_dataset=dataset,
        value_model=value_model,
        callbacks=[Clock()],
    )
    before = weight_sample(policy)
    started = time.perf_counter()
    trainer.train()
    wall = time.perf_counter() - started
    return {
        "iteration_s": times,
        "response_length": lengths,
        "score": scores,
        "train_wall_s": wall,
        "peak_rss_mib": peak_rss_mib(),
        "weights_changed": changed_fraction(before, policy),
    }


def run_worker(python: str, spec: dict[str, Any], work_dir: Path, name: str, timeout_s: float) -> dict[str, Any]:
    """``python bench/ppo.py --worker SPEC RESULT`` in a fresh process (common.run_worker with a chosen interpreter)."""
    spec_path, result_path, log_path = (work_dir / f"{name}.{kind}" for kind in ("spec.json", "result.json", "log"))
    spec_path.write_text(json.dumps(spec, indent=2), encoding="utf-8")
    result_path.unlink(missing_ok=True)
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "TRL_EXPERIMENTAL_SILENCE": "1",
        "HF_DATASETS_DISABLE_PROGRESS_BARS": "1",
        **(_tuned_allocator() if spec["side"].startswith("trl-") and spec.get("peer_allocator") == "tuned" else {}),
    }
    started = time.perf_counter()
    with log_path.open("w", encoding="utf-8") as log:
        try:
            code = subprocess.run(
                [python, __file__, "--worker", str(spec_path), str(result_path)],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                timeout=timeout_s,
            ).returncode
        except subprocess.TimeoutExpired:
            code = None
    wall = time.perf_counter() - started
    if code == 0 and result_path.is_file():
        return {**json.loads(result_path.read_text(encoding="utf-8")), "wall_s": wall}
    tail = "\n".join(log_path.read_text(errors="replace").splitlines()[-15:])
    return {
        "error": f"{'timed out' if code is None else f'exit code {code}'}: {tail}",
        "log": str(log_path),
        "wall_s": wall,
    }


def _tuned_allocator() -> dict[str, str]:
    sys.path.insert(0, str(ROOT / "src"))
    from instructgpt.runtime import ENVIRONMENTS, requested_mode

    return ENVIRONMENTS[requested_mode()]  # the mode our side runs in ($INSTRUCTGPT_MALLOC)


def _aggregate(results: list[dict], batch: int) -> dict[str, Any]:
    measured = [t for r in results for t in r.get("iteration_s_measured", [])]
    lengths = [x for r in results for x in r.get("response_length", [])]
    per_run = [statistics.median(r["iteration_s_measured"]) for r in results if r.get("iteration_s_measured")]
    iteration_s = median(per_run)
    return {
        "iteration_s": iteration_s,
        "episodes_per_s": None if not iteration_s else batch / iteration_s,
        "peak_rss_mib": median([r.get("peak_rss_mib") for r in results]),
        "response_length": statistics.mean(lengths) if lengths else None,
        "weights_changed": median([r.get("weights_changed") for r in results]),
        "measured_iterations": len(measured),
        "phase_s": {
            phase: median([t for r in results for t in r.get("phases_measured", {}).get(phase, [])]) for phase in PHASES
        },
        "errors": [r["error"] for r in results if "error" in r],
    }


FLOP_COUNTING = (
    "The FLOPs an iteration needs, the same formula for every side (attention scores excluded; N = non-embedding "
    "parameters, HV = hidden x vocabulary, B episodes, P mean prompt and R mean response tokens, T = P + R): sampling "
    "B(2NT + 2HV R); reference forward B(2NT + 2HV R) (log-probabilities of the response tokens only); reward and "
    "old-value forwards 2 x B 2NT; policy forward + backward 6B(NT + HV R); value forward + backward 6B NT "
    "(the old log-probabilities come from sampling: a side that recomputes them does more work than counted). "
    "TRL does not report response lengths: its R is ours. MFU = those FLOPs / the median iteration time / the "
    "matmul peak measured in this run in the side's precision (bf16 for ours where native, fp32 for trl-fp32)."
)


def iteration_flops(dims: dict[str, int], batch: int, prompt: float, response: float) -> float:
    """FLOPs one PPO iteration needs (see :data:`FLOP_COUNTING`)."""
    trunk, head, total = dims["non_embedding_params"], dims["hidden"] * dims["vocab"], prompt + response
    sampling = reference = 2 * trunk * total + 2 * head * response
    reward = old_values = 2 * trunk * total
    policy_train = 6 * (trunk * total + head * response)
    value_train = 6 * trunk * total
    return batch * (sampling + reference + reward + old_values + policy_train + value_train)


def _mfu(
    data: dict[str, Any], side: dict[str, Any], batch: int, fallback_length: float, peak: dict[str, Any]
) -> dict[str, Any]:
    length = side["response_length"] or fallback_length
    flops = iteration_flops(data["dims"], batch, data["mean_prompt_tokens"], length)
    seconds = side["iteration_s"]
    return {
        "flops_per_iteration": flops,
        "mfu": None if not seconds else flops / seconds / peak["flops_per_s"],
        "mfu_peak_dtype": peak["dtype"],
    }


def _summary(result: dict, batch: int) -> str:
    if "error" in result:
        return f"FAILED {result['error'][-400:]}"
    times = result["iteration_s_measured"]
    iterations = [f"{t:.2f}" for t in result["iteration_s"]]
    return (
        f"iterations {iterations} s, measured median {median(times):.2f} s, peak RSS {result['peak_rss_mib']:.0f} MiB"
    )


def worker(spec_path: Path, result_path: Path) -> None:
    spec = json.loads(spec_path.read_text(encoding="utf-8"))
    result = run_ours(spec) if spec["side"].startswith("ours") else run_trl(spec)
    result_path.write_text(json.dumps(result), encoding="utf-8")


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--worker":
        worker(Path(sys.argv[2]), Path(sys.argv[3]))
    else:
        import tyro

        main(tyro.cli(Args))
