"""SFT, RM and PPO-ptx for a few steps each on one device: step times, tokens/s, MFU, peak memory.

    python bench/gpu_stages.py                          # on a CUDA machine (scripts/gpu_check.sh runs it)
    python bench/gpu_stages.py --quick                  # a tiny random model, any device: a smoke run
    python bench/gpu_stages.py --help

Made for the GPU check: a GPU machine here has no network and the embedded model's GGUF cannot
travel with the working tree, so the model has Gemma 3 270M's shapes (262,144-word vocabulary,
18 layers: the embedded model's FLOPs and memory) with random weights and the byte-level
tokenizer (``instructgpt.models.tiny``). Each stage runs our trainer's Python API in the
precision ``auto`` resolves on the device (bf16 weights with fp32 masters where bf16 is native):

- ``sft``: Alpaca demonstrations (``--sft-batch`` per step, packed rows);
- ``rm``: rankings of K = 4 Alpaca-derived responses per prompt (the item's own output, its first
  half, another item's output, the instruction echoed; ranked in that order), ``--rm-batch``
  prompts per step;
- ``ppo-ptx``: ``--ppo-batch`` episodes of up to ``--ppo-tokens`` tokens an iteration against the
  saved reward model (which also initialises the value model), one minibatch step per
  ``--ppo-minibatch`` episodes, with the pretraining term (``--ptx-per-episode`` sequences of
  ``--ptx-seq-len`` tokens from the bundled pretraining documents per episode, gamma 0.278).

Data come from the data root (``$INSTRUCTGPT_DATA`` or a ``shared/data`` above the working folder).
Reported per stage: the median step (iteration) time over the steps after the first (which pays
for warm-up), tokens/s, MFU against the bf16 (or fp32) matmul peak measured at the start of the same
run, the peak device memory (CUDA: ``torch.cuda.max_memory_allocated``; CPU: the RSS high-water
mark), and the PPO phases (generate / score / update). FLOPs per token: ``6 (N + H V)`` for SFT's
response-and-prompt tokens (the vocabulary projection on every token: an upper count of ours,
which projects response rows only), ``6 N`` for the RM, :func:`bench.ppo.iteration_flops` plus
the pretraining term's ``6 (N + H V)`` per pretraining token for PPO-ptx.
"""

from __future__ import annotations

import json
import random
import statistics
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "src"))

from bench.common import (  # noqa: E402
    compute_device,
    format_table,
    jsonable,
    machine,
    matmul_peak,
    model_dims,
    peak_gpu_mib,
    peak_rss_mib,
    write_json,
)


@dataclass(frozen=True)
class Args:
    sft_steps: int = 6
    """SFT optimizer steps (the first is warm-up)."""
    sft_batch: int = 32
    """Demonstrations per SFT step."""
    rm_steps: int = 5
    """RM optimizer steps (the first is warm-up)."""
    rm_batch: int = 32
    """Ranked prompts (K = 4 responses each) per RM step."""
    ppo_iterations: int = 3
    """PPO-ptx iterations (the first is warm-up)."""
    ppo_batch: int = 64
    """Episodes per PPO iteration."""
    ppo_minibatch: int = 16
    """Episodes per PPO optimizer step."""
    ppo_tokens: int = 64
    """Most new tokens per episode (EOS can end one earlier)."""
    ptx_per_episode: float = 0.5
    """Pretraining sequences per episode in PPO-ptx's term."""
    ptx_seq_len: int = 128
    """Tokens per pretraining sequence."""
    max_len: int = 512
    """Longest prompt / response (tokens) kept from the data."""
    stages: tuple[str, ...] = ("sft", "rm", "ppo-ptx")
    """Stages to run, in order."""
    quick: bool = False
    """Smoke run: a tiny random model and a few small steps."""
    seed: int = 0
    """Seed of the data subsets and of the trainers."""
    out: Path = ROOT / "bench" / "results" / "gpu-stages.json"
    """JSON report."""


QUICK = dict(
    sft_steps=2,
    sft_batch=8,
    rm_steps=2,
    rm_batch=8,
    ppo_iterations=2,
    ppo_batch=8,
    ppo_minibatch=4,
    ppo_tokens=8,
    max_len=96,
)
"""--quick: smaller sizes throughout."""


def main(args: Args) -> None:
    import dataclasses

    if args.quick:
        args = dataclasses.replace(args, **QUICK)
    device = compute_device()
    precision = _precision(device)
    peak = matmul_peak("bfloat16" if precision != "fp32" else "float32", 1024 if args.quick else 4096, 5, device=device)
    print(f"{device}: {precision}; matmul peak {peak['flops_per_s'] / 1e12:.2f} TFLOP/s", flush=True)
    with tempfile.TemporaryDirectory(prefix="gpu-stages-") as tmp:
        work = Path(tmp)
        policy, dims = _save_policy(work / "policy", args)
        data = {**_write_data(work, args), "dims": dims}
        results = {}
        errors = {}
        for stage in args.stages:
            started = time.perf_counter()
            try:
                results[stage] = RUNNERS[stage](policy, data, work, args)
            except Exception as error:  # noqa: BLE001 - a stage that fails is reported; the others still run
                traceback.print_exc()
                errors[stage] = f"{type(error).__name__}: {error}"
                continue
            results[stage]["wall_s"] = time.perf_counter() - started
            results[stage]["mfu"] = results[stage]["flops_per_s"] / peak["flops_per_s"]
            print(f"{stage}: {json.dumps(_brief(results[stage]))}", flush=True)
    report = {
        "summary": {
            s: {k: results[s][k] for k in ("step_s", "tokens_per_s", "mfu", "peak_memory_mib")} for s in results
        },
        "device": device,
        "precision": precision,
        "peak": peak,
        "machine": machine(),
        "model": "gemma-3-270m-random" if not args.quick else "tiny",
        "dims": data["dims"],
        "args": jsonable(args),
        "stages": results,
        "errors": errors,
    }
    rows = [
        [s, f"{r['step_s']:.3f}", f"{r['tokens_per_s']:.0f}", f"{100 * r['mfu']:.1f}%", f"{r['peak_memory_mib']:.0f}"]
        for s, r in results.items()
    ]
    print(format_table(["stage", "step s (median)", "tokens/s", "MFU", "peak MiB"], rows))
    write_json(args.out, report)
    print(f"wrote {args.out}")
    if errors:
        raise SystemExit(f"stages failed: {errors}")


def _precision(device: str) -> str:
    import torch

    from instructgpt.training.lm import resolve_precision

    return "bf16-weights" if resolve_precision("auto", torch.device(device)) is not None else "fp32"


def _save_policy(folder: Path, args: Args) -> tuple[str, dict[str, int]]:
    """The random policy folder, and its dimensions for the FLOP counts."""
    import torch

    from instructgpt.models.tiny import random_gemma_270m, tiny_model, tiny_tokenizer

    tokenizer = tiny_tokenizer()
    model = tiny_model(tokenizer, seed=args.seed) if args.quick else random_gemma_270m(tokenizer, seed=args.seed)
    model.to(torch.bfloat16).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder), model_dims(model)


def _write_data(work: Path, args: Args) -> dict[str, Any]:
    """Demonstrations, rankings and prompts from Alpaca (lengths in characters = byte tokens)."""
    from instructgpt.data.importers import find_data_root, instruction_prompt

    root = find_data_root()
    records = json.loads((root / "alpaca" / "alpaca_5000.json").read_text(encoding="utf-8"))
    rng = random.Random(args.seed)
    items = [
        (instruction_prompt(r["instruction"], r["input"]), r["output"])
        for r in records
        if len(r["output"]) > 16 and len(instruction_prompt(r["instruction"], r["input"])) < args.max_len
    ]
    rng.shuffle(items)
    items = [(p, o[: args.max_len]) for p, o in items]
    demos = _jsonl(work / "demos.jsonl", [{"prompt": p, "response": o, "labeler_id": "bench"} for p, o in items])
    rankings = []
    for i, (prompt, output) in enumerate(items[: args.rm_batch * args.rm_steps]):
        other = items[(i + 1) % len(items)][1]
        responses = [output, output[: len(output) // 2], other, prompt]
        order = rng.sample(range(4), 4)
        rankings.append(
            {
                "prompt": prompt,
                "responses": [responses[j] for j in order],
                "ranks": order,
                "labeler_id": f"l{i % 4}",
                "prompt_id": f"p{i}",
            }
        )
    prompts = [
        {"id": f"q{i}", "text": p[:128], "user_id": f"u{i % 8}", "source": "api"} for i, (p, _) in enumerate(items)
    ]
    return {
        "demos": demos,
        "rankings": _jsonl(work / "rankings.jsonl", rankings),
        "prompts": _jsonl(work / "prompts.jsonl", prompts[: args.ppo_batch * args.ppo_iterations]),
        "pretrain": root / "pretrain" / "derived" / "ptx_documents.jsonl.gz",
    }


def _jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def run_sft(policy: str, data: dict, work: Path, args: Args) -> dict[str, Any]:
    from instructgpt.training import sft

    config = sft.SFTConfig(
        model=policy,
        data=(data["demos"],),
        out_dir=work / "sft",
        val_fraction=0.0,
        epochs=100,
        batch_size=args.sft_batch,
        micro_batch_size=args.sft_batch,
        micro_batch_tokens=8192,
        max_prompt_tokens=args.max_len,
        max_response_tokens=args.max_len,
        residual_dropout=0.0,
        save_every=0,
        max_steps=args.sft_steps,
        seed=args.seed,
        progress=False,
    )
    sft._save = lambda *_, **__: None  # the checkpoint write is not training
    _reset_memory()
    sft.train_sft(config)
    steps = _records(config.out_dir, "sft/tokens")
    return _per_token(steps, "sft/tokens", 6 * (data["dims"]["non_embedding_params"] + _head(data)))


def run_rm(policy: str, data: dict, work: Path, args: Args) -> dict[str, Any]:
    from instructgpt.training.rm import RMConfig, train_rm

    config = RMConfig(
        model=policy,
        data=(data["rankings"],),
        out_dir=work / "rm",
        val_fraction=0.0,
        batch_size=args.rm_batch,
        micro_batch_prompts=args.rm_batch,
        micro_batch_tokens=16384,
        max_prompt_tokens=args.max_len,
        max_response_tokens=args.max_len,
        normalize=False,
        max_steps=args.rm_steps,
        seed=args.seed,
        progress=False,
    )
    _reset_memory()
    final = train_rm(config)
    data["rm"] = str(final)
    steps = _records(config.out_dir, "rm/tokens_per_s")
    for step in steps:
        step["tokens"] = step["rm/tokens_per_s"] * step["time/step_s"]
    return _per_token(steps, "tokens", 6 * data["dims"]["non_embedding_params"])


def run_ppo_ptx(policy: str, data: dict, work: Path, args: Args) -> dict[str, Any]:
    from bench.ppo import iteration_flops
    from instructgpt.training.ppo import PPOConfig, train_ppo

    if "rm" not in data:
        raise RuntimeError("ppo-ptx needs the rm stage first (--stages ... rm ppo-ptx)")
    config = PPOConfig(
        policy=policy,
        reward_model=data["rm"],
        prompts=(data["prompts"],),
        out_dir=work / "ppo",
        episodes=args.ppo_batch * args.ppo_iterations,
        batch_size=args.ppo_batch,
        minibatch_size=args.ppo_minibatch,
        micro_batch_size=args.ppo_minibatch,
        forward_batch_size=args.ppo_batch,
        generation_batch_size=args.ppo_batch,
        max_new_tokens=args.ppo_tokens,
        max_prompt_tokens=128,
        ptx_coef=0.278,
        ptx_per_episode=args.ptx_per_episode,
        ptx_seq_len=args.ptx_seq_len,
        ptx_data=data["pretrain"],
        ptx_corpus_tokens=200_000,
        backend="hf",
        template="raw",
        seed=args.seed,
        progress=False,
    )
    _reset_memory()
    train_ppo(config)
    steps = _records(config.out_dir, "time/iteration_s")
    prompt = statistics.mean(min(len(json.loads(line)["text"]) + 1, 128) for line in data["prompts"].open())
    ptx_tokens = args.ppo_batch * args.ptx_per_episode * args.ptx_seq_len
    ptx_flops = 6 * (data["dims"]["non_embedding_params"] + _head(data)) * ptx_tokens
    for step in steps:
        response = step["rollout/response_length"]
        step["flops"] = iteration_flops(data["dims"], args.ppo_batch, prompt, response) + ptx_flops
        step["tokens"] = args.ppo_batch * (prompt + response) + ptx_tokens
        step["time/step_s"] = step["time/iteration_s"]
    result = _per_token(steps, "tokens", None)
    result["phases_s"] = {
        p: _median_after_first([s[f"time/{p}_s"] for s in steps]) for p in ("generate", "score", "update")
    }
    result["response_length"] = [s["rollout/response_length"] for s in steps]
    return result


RUNNERS = {"sft": run_sft, "rm": run_rm, "ppo-ptx": run_ppo_ptx}


def _head(data: dict) -> int:
    return data["dims"]["hidden"] * data["dims"]["vocab"]


def _records(run: Path, key: str) -> list[dict]:
    from instructgpt.training.metrics import read_metrics

    return [r for r in read_metrics(run) if key in r]


def _per_token(steps: list[dict], tokens_key: str, flops_per_token: float | None) -> dict[str, Any]:
    """Median over the steps after the first: step time, tokens/s, FLOP/s; the device's peak memory."""
    measured = steps[1:] or steps
    seconds = sum(s["time/step_s"] for s in measured)
    tokens = sum(s[tokens_key] for s in measured)
    flops = sum(s["flops"] if flops_per_token is None else flops_per_token * s[tokens_key] for s in measured)
    return {
        "steps": len(steps),
        "step_s": _median_after_first([s["time/step_s"] for s in steps]),
        "step_s_all": [s["time/step_s"] for s in steps],
        "tokens_per_s": tokens / seconds,
        "flops_per_s": flops / seconds,
        "peak_memory_mib": _peak_memory_mib(),
    }


def _median_after_first(values: list[float]) -> float:
    return statistics.median(values[1:] or values)


def _reset_memory() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def _peak_memory_mib() -> float:
    gpu = peak_gpu_mib()
    return peak_rss_mib() if gpu is None else gpu


def _brief(result: dict) -> dict:
    keys = ("step_s", "tokens_per_s", "mfu", "peak_memory_mib", "wall_s", "phases_s")
    return {k: result[k] for k in keys if k in result}


if __name__ == "__main__":
    import tyro

    main(tyro.cli(Args))
