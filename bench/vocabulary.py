"""Benchmark: the base model against the same model with its vocabulary trimmed to the bundled data.

    python bench/vocabulary.py            # Gemma 3 270M, about 15 minutes on 2 CPU cores
    python bench/vocabulary.py --quick    # the workloads on a tiny random model (a smoke run)

``instructgpt.models.vocabulary`` keeps the tokens the bundled data uses (66,250 of Gemma 3's
262,144) and the data tokenizes exactly as before; the model's next-token distribution becomes the
original one conditioned on the kept tokens. This measures what that buys and what it costs, in one
run, each workload in its own process, the two models alternating (ABBA) over ``--repeats``:

- SFT: our trainer (``bench/sft.py``'s worker: tokens/s of the measured optimizer steps);
- generation: our rollout backend (``bench/generate.py``'s worker: batch ``--batch``, ``--new-tokens``);
- PPO: our trainer (``bench/ppo.py``'s worker: seconds per iteration after the warm-up, and its phases);
- the cost: the probability mass the base model puts outside the kept tokens, at every position of
  ``--mass-texts`` held-out Alpaca demonstrations (mean and 99th percentile).

Prints a table with the trimmed model's speed-up per workload and writes the figures as JSON
(``--out``, default ``bench/results/vocabulary.json``).
"""

from __future__ import annotations

import json
import random
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import generate as generate_bench
import ppo as ppo_bench
import sft as sft_bench

from common import format_table, jsonable, machine, matmul_peak, median, ratio, resolved_precision, run_worker

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Args:
    """The base model against its trimmed vocabulary: SFT, generation and PPO speed, and the mass dropped."""

    model: str = "gemma-3-270m"
    """The base model: 'gemma-3-270m' (embedded), a local Hugging Face folder or a .gguf file."""
    repeats: int = 2
    """Runs per model and workload, alternating."""
    batch: int = 64
    """Generation: prompts sampled together."""
    new_tokens: int = 48
    """Generation: tokens per response."""
    sft_steps: int = 3
    """SFT: optimizer steps per run, the first not measured."""
    ppo_iterations: int = 3
    """PPO: iterations per run, the first not measured."""
    mass_texts: int = 32
    """Held-out Alpaca demonstrations on which the dropped probability mass is measured."""
    workloads: tuple[str, ...] = ("sft", "generate", "ppo")
    """Which speed workloads to run."""
    quick: bool = False
    """Smoke run: a tiny random model with a trimmed copy, small sizes."""
    out: Path = Path(__file__).resolve().parent / "results" / "vocabulary.json"
    """JSON report."""
    timeout: int = 1800
    """Seconds before a worker is killed."""


def main(args: Args) -> None:
    work = Path(tempfile.mkdtemp(prefix="bench-vocabulary-"))
    models = dict(zip(("full", "trimmed"), _models(args, work)))
    peak = matmul_peak("bfloat16" if resolved_precision("auto") == "bf16" else "float32")
    print(f"matmul peak {peak['flops_per_s'] / 1e12:.3f} TFLOP/s; models: {models}", flush=True)
    kept = json.loads((Path(models["trimmed"]) / "vocabulary.json").read_text(encoding="utf-8"))["kept_ids"]
    report: dict[str, Any] = {
        "args": jsonable(args),
        "machine": {**machine(), "cpu_flags": generate_bench.cpu_flags()},
        "matmul_peak": peak,
        "vocabulary": {"kept": len(kept)},
        "mass_outside": _mass_outside(models["full"], kept, args),
        "workloads": {},
    }
    print(f"kept {len(kept)} tokens; mass outside: {report['mass_outside']}", flush=True)
    for name in args.workloads:
        runs: dict[str, list[dict]] = {"full": [], "trimmed": []}
        for repeat in range(args.repeats):
            for side in ("full", "trimmed") if repeat % 2 == 0 else ("trimmed", "full"):
                result = WORKLOADS[name](args, models[side], work / f"{name}-{side}-{repeat}", peak)
                runs[side].append(result)
                print(f"{name} {side} repeat {repeat}: {result.get('seconds', result.get('error'))}", flush=True)
        seconds = {side: median([r.get("seconds") for r in rs]) for side, rs in runs.items()}
        report["workloads"][name] = {
            "seconds": seconds,
            "speedup": ratio(seconds["full"], seconds["trimmed"]),
            "runs": runs,
        }
    rows = [[n, w["seconds"]["full"], w["seconds"]["trimmed"], w["speedup"]] for n, w in report["workloads"].items()]
    print("\n" + format_table(["workload", "full s", "trimmed s", "speed-up"], rows))
    report["summary"] = {"kept": len(kept), **{f"{n}_speedup": w["speedup"] for n, w in report["workloads"].items()}}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {args.out}")


def _models(args: Args, work: Path) -> tuple[str, str]:
    """The base model's folder and its trimmed copy's."""
    from instructgpt.data.importers import find_data_root
    from instructgpt.models.loader import resolve_model
    from instructgpt.models.vocabulary import trim_model

    if not args.quick:
        from instructgpt.models.vocabulary import trimmed_model

        return resolve_model(args.model), str(trimmed_model(args.model, find_data_root()))
    from instructgpt.models.tiny import tiny_bpe_tokenizer, tiny_model

    texts = [r["instruction"] + "\n\n" + r["output"] for r in _alpaca()[:2000]]
    tokenizer = tiny_bpe_tokenizer(texts, vocab_size=2000)  # trimmed to the first 100 texts below
    tiny = work / "tiny"
    tiny_model(tokenizer).save_pretrained(tiny)
    tokenizer.save_pretrained(tiny)
    return str(tiny), str(trim_model(tiny, work / "tiny-trimmed", texts[:100], "quick"))


def _alpaca() -> list[dict]:
    from instructgpt.data.importers import find_data_root

    return json.loads((find_data_root() / "alpaca" / "alpaca_5000.json").read_text(encoding="utf-8"))


def _mass_outside(model: str, kept: list[int], args: Args) -> dict[str, Any]:
    import torch

    from instructgpt.models.loader import load_model
    from instructgpt.models.vocabulary import mass_outside

    lm, tokenizer = load_model(model)
    records = random.Random(1).sample(_alpaca(), args.mass_texts)
    masses = []
    for r in records:
        ids = tokenizer(r["instruction"] + "\n\n" + r["output"], return_tensors="pt").input_ids[:, :512]
        masses.append(mass_outside(lm, ids, kept).flatten())
    mass = torch.cat(masses)
    return {
        "texts": len(records),
        "positions": mass.numel(),
        "mean": float(mass.mean()),
        "p99": float(mass.quantile(0.99)),
    }


def _sft(args: Args, model: str, work: Path, peak: dict) -> dict[str, Any]:
    sft_args = sft_bench.Args(model=model, steps=args.sft_steps, examples=64, quick=False)
    work.mkdir(parents=True)
    data = sft_bench.prepare_data(model, sft_args, work)
    base = {"model": model, "args": jsonable(sft_args), "data": data, "work": str(work)}
    result = run_worker(
        sft_bench.SCRIPT, {**base, "side": "ours", "name": "ours", "steps": sft_args.steps}, work, "sft", args.timeout
    )
    if "error" in result:
        return result
    summary = sft_bench.summarize_run(result, sft_args.warmup, peak)
    return {**summary, "seconds": summary["step_s"]}


def _generate(args: Args, model: str, work: Path, peak: dict) -> dict[str, Any]:
    spec = {
        "model": model,
        "batch": 8 if args.quick else args.batch,
        "new_tokens": 8 if args.quick else args.new_tokens,
        "precision": resolved_precision("auto"),
        "max_prompt_tokens": 64,
        "decode": "auto",
        "device": "cpu",
        "side": "ours",
    }
    return run_worker(Path(generate_bench.__file__), spec, work, "generate", args.timeout)


def _ppo(args: Args, model: str, work: Path, peak: dict) -> dict[str, Any]:
    ppo_args = ppo_bench.Args(
        model=model, iterations=args.ppo_iterations, batch_size=16, micro_batch_size=8, response_length=48
    )
    work.mkdir(parents=True, exist_ok=True)
    data = ppo_bench.prepare(ppo_args, work)
    spec = {
        **data,
        "batch_size": ppo_args.batch_size,
        "micro_batch_size": ppo_args.micro_batch_size,
        "response_length": ppo_args.response_length,
        "iterations": ppo_args.iterations,
        "threads": 0,
        "seed": 0,
        "max_prompt_tokens": ppo_args.max_prompt_tokens,
        "side": "ours",
        "dtype": "float32",
        "run_dir": str(work / "run"),
        "master_weights": "fp32",
        "peer_allocator": "system",
    }
    result = run_worker(Path(ppo_bench.__file__), spec, work, "ppo", args.timeout)
    measured = result.get("iteration_s", [])[ppo_args.warmup :]
    return {**result, "seconds": median(measured) if measured else None}


WORKLOADS = {"sft": _sft, "generate": _generate, "ppo": _ppo}


if __name__ == "__main__":
    import tyro

    main(tyro.cli(Args))
