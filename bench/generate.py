"""Benchmark: sampling throughput of our rollout backend against transformers ``generate``,
and against the physical bound of this machine.

    python bench/generate.py                       # gemma-3-270m, batches 16 and 64, 48 new tokens
    python bench/generate.py --quick               # a tiny random model: a smoke run
    python bench/generate.py --help

Same work on each side: the same model, precision (bf16 weights where the CPU runs bf16
natively, else fp32: ``--precision auto``), the same left-padded prompts (Alpaca instructions,
identical token ids), ``--new-tokens`` sampled tokens per row at temperature 1 with no top-k /
top-p. EOS does not stop either side (ours: an EOS id no token has; transformers:
``min_new_tokens`` = ``max_new_tokens``), so both produce exactly ``B x new_tokens`` tokens.

- ``ours``: :class:`instructgpt.rollout.generation.HFBackend`, which also records each sampled
  token's log-probability and the policy's entropy (what PPO needs).
- ``transformers``: ``model.generate(do_sample=True, top_k=0, top_p=1.0,
  return_dict_in_generate=True, output_scores=True)``, as TRL's PPO trainer calls it (it keeps
  every step's ``[B, V]`` scores to take log-probabilities afterwards).
- ``bound``: the decode steps' matmul FLOPs (the trunk's linear layers, attention over the
  cache, the vocabulary projection; 2 per multiply-add) at this machine's measured matmul rate in
  the same precision (:func:`bench.common.matmul_peak`), times the steps. The prompt pass is not
  counted, so the bound is optimistic (fraction_of_bound understates how close a side is).
- ``memory bound``: the bytes a decode step must read (every linear weight, the unembedding, the
  key/value cache at the mean context) at this machine's read bandwidth measured in the same run
  (:func:`bench.common.read_bandwidth`). At batch 64 on a 2-core CPU a step streams about 0.5 GB
  of bf16 weights, so this, not the FLOP bound, is often the larger; ``fraction_of_roofline`` is
  the step time against the larger of the two.

Each side runs in its own subprocess (its own peak RSS); runs alternate ours / transformers,
``--repeats`` times; one warm-up generation precedes each timed one (transformers: 2 tokens; ours: the
timed generation itself with another seed, so that with ``--decode compiled`` the decode step is
compiled for the timed shapes there, once per process, reported as ``warmup_s``), and the timed
generation is the steady state PPO and evaluation see. Reported:
tokens/s, ms per decode step (wall / new tokens, prompt pass included), fraction of the bound,
peak RSS; medians over repeats, and the ratios.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (
    cli_or_worker,
    format_table,
    jsonable,
    machine,
    matmul_peak,
    median,
    peak_rss_mib,
    ratio,
    read_bandwidth,
    resolved_precision,
    run_and_write,
    run_worker,
)  # noqa: E402


@dataclass
class Args:
    model: str = "gemma-3-270m"
    """Model for both sides (the loader's names: embedded default, folder, .gguf), or
    ``gemma-3-270m-random``: Gemma 3 270M's shapes with random weights and a byte-level tokenizer
    (same FLOPs, no weights needed; what scripts/gpu_check.sh runs on a machine without them)."""
    device: str = "auto"
    """auto (cuda where available, else cpu), cpu or cuda: where both sides run."""
    batch_sizes: tuple[int, ...] = (16, 64)
    """Rows sampled together."""
    new_tokens: int = 48
    """Tokens sampled per row."""
    precision: str = "auto"
    """auto (bf16 where native, else fp32), bf16 or fp32: the dtype of the model's weights on both sides."""
    decode: str = "auto"
    """Our backend's decode loop: auto (fused where it applies), fused, compiled, static or eager (HFBackend's
    setting)."""
    repeats: int = 2
    """Timed generations per side and batch size (alternating sides)."""
    max_prompt_tokens: int = 48
    """Prompts longer than this (rendered) are skipped."""
    quick: bool = False
    """A tiny random model, 8 tokens: a smoke run."""
    timeout_s: float = 900
    """Per worker."""
    work_dir: Path | None = None
    """Keep worker specs, logs and results here (default: a temporary folder)."""
    out: Path = Path("bench/results/generate.json")
    """The JSON report."""


def main(args: Args) -> None:
    run_and_write(args, "bench-generate-", run_benchmark)


def run_benchmark(args: Args, work: Path) -> dict[str, Any]:
    import torch

    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    precision = resolved_precision(args.precision)
    peak = matmul_peak("bfloat16" if precision == "bf16" else "float32", device=device)
    bandwidth = read_bandwidth(device=device)
    model = "tiny" if args.quick else args.model
    new_tokens = 8 if args.quick else args.new_tokens
    rows = []
    for batch in args.batch_sizes:
        spec = {
            "model": model,
            "batch": batch,
            "new_tokens": new_tokens,
            "precision": precision,
            "max_prompt_tokens": args.max_prompt_tokens,
            "decode": args.decode,
            "device": device,
        }
        runs: dict[str, list[dict]] = {"ours": [], "transformers": []}
        for repeat in range(args.repeats):
            for side in ("ours", "transformers") if repeat % 2 == 0 else ("transformers", "ours"):
                result = run_worker(
                    Path(__file__), {**spec, "side": side}, work, f"{side}-b{batch}-r{repeat}", args.timeout_s
                )
                print(f"  batch {batch} {side} repeat {repeat}: {_line(result)}", flush=True)
                runs[side].append(result)
        rows.append(_row(batch, new_tokens, runs, peak["flops_per_s"], bandwidth["bytes_per_s"]))
    memory = "peak_gpu_mib" if device == "cuda" else "peak_rss_mib"
    headers = [
        "batch",
        "side",
        "tokens/s",
        "ms/step",
        "bound ms/step",
        "fraction of bound",
        "memory bound ms/step",
        "fraction of roofline",
        memory.replace("_", " "),
        "speedup",
    ]
    table = [
        [
            r["batch"],
            side,
            r[side]["tokens_per_s"],
            r[side]["ms_per_step"],
            r["bound_ms_per_step"],
            r[side]["fraction_of_bound"],
            r["memory_bound_ms_per_step"],
            r[side]["fraction_of_roofline"],
            r[side][memory],
            r["speedup_vs_transformers"] if side == "ours" else None,
        ]
        for r in rows
        for side in ("ours", "transformers")
    ]
    print(
        f"\n{device}, {precision}, matmul peak {peak['flops_per_s'] / 1e12:.3f} TFLOP/s, "
        f"read bandwidth {bandwidth['bytes_per_s'] / 1e9:.1f} GB/s\n" + format_table(headers, table)
    )
    last = rows[-1]
    return {
        "summary": {
            "device": device,
            "precision": precision,
            "batch": last["batch"],
            "speedup_vs_transformers": last["speedup_vs_transformers"],
            "fraction_of_bound": last["ours"]["fraction_of_bound"],
            "fraction_of_roofline": last["ours"]["fraction_of_roofline"],
        },
        "args": jsonable(args),
        "machine": {**machine(), "cpu_flags": cpu_flags()},
        "matmul_peak": peak,
        "read_bandwidth": bandwidth,
        "rows": rows,
    }


def _row(
    batch: int, new_tokens: int, runs: dict[str, list[dict]], peak_flops: float, bytes_per_s: float
) -> dict[str, Any]:
    flops = median([r.get("flops_per_step") for r in runs["ours"] + runs["transformers"]])
    traffic = median([r.get("bytes_per_step") for r in runs["ours"] + runs["transformers"]])
    bound_ms = None if flops is None else 1000 * flops / peak_flops
    memory_ms = None if traffic is None else 1000 * traffic / bytes_per_s
    roofline_ms = None if bound_ms is None or memory_ms is None else max(bound_ms, memory_ms)
    row: dict[str, Any] = {
        "batch": batch,
        "new_tokens": new_tokens,
        "flops_per_decode_step": flops,
        "bound_ms_per_step": bound_ms,
        "bytes_per_decode_step": traffic,
        "memory_bound_ms_per_step": memory_ms,
        "runs": runs,
    }
    for side, results in runs.items():
        seconds = median([r.get("seconds") for r in results])
        ms = None if seconds is None else 1000 * seconds / new_tokens
        row[side] = {
            "seconds": seconds,
            "tokens_per_s": ratio(batch * new_tokens, seconds),
            "ms_per_step": ms,
            "fraction_of_bound": ratio(bound_ms, ms),
            "fraction_of_roofline": ratio(roofline_ms, ms),
            "peak_rss_mib": median([r.get("peak_rss_mib") for r in results]),
            "peak_gpu_mib": median([r.get("peak_gpu_mib") for r in results]),
        }
    row["speedup_vs_transformers"] = ratio(row["transformers"]["seconds"], row["ours"]["seconds"])
    return row


def _line(result: dict) -> str:
    if "error" in result:
        return f"ERROR {result['error'][:300]}"
    warmup = f", warm-up (compile) {result['warmup_s']:.1f} s" if "warmup_s" in result else ""
    return f"{result['seconds']:.2f} s, peak {result['peak_rss_mib']:.0f} MiB{warmup}"


def cpu_flags() -> list[str]:
    """The matmul-relevant CPU flags (AMX, AVX512-BF16, AVX512F, AVX2)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return []
    flags = set(next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), []))
    return sorted(flags & {"amx_bf16", "amx_tile", "avx512_bf16", "avx512f", "avx2"})


# ---- workers -------------------------------------------------------------------------------


def _setup(spec: dict[str, Any]):
    import torch

    from instructgpt.models.loader import ensure_pad_token, load_model
    from instructgpt.models.tiny import random_gemma_270m, tiny_model, tiny_tokenizer

    torch.manual_seed(0)
    if spec["model"] in ("tiny", "gemma-3-270m-random"):
        tokenizer = tiny_tokenizer()
        model = tiny_model(tokenizer) if spec["model"] == "tiny" else random_gemma_270m(tokenizer)
    else:
        model, tokenizer = load_model(spec["model"])
    ensure_pad_token(tokenizer, model)
    if spec["precision"] == "bf16":
        model = model.to(torch.bfloat16)
    model.to(spec.get("device", "cpu")).eval()
    prompts = _prompts(tokenizer, spec["batch"], spec["max_prompt_tokens"])
    return model, tokenizer, prompts


def _prompts(tokenizer: Any, count: int, max_tokens: int) -> list[list[int]]:
    from instructgpt.data.render import render_prompt

    texts = _alpaca_instructions(count * 4)
    ids = [render_prompt(tokenizer, t, "raw", "\n\n") for t in texts]
    ids = [i for i in ids if len(i) <= max_tokens]
    return [ids[i % len(ids)] for i in range(count)]


def _alpaca_instructions(count: int) -> list[str]:
    """Alpaca instructions without an input field (bundled shared/data/alpaca), else numbered stand-ins."""
    import json

    path = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "alpaca" / "alpaca_5000.json"
    records = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else []
    texts = [r["instruction"] for r in records if r.get("instruction") and not r.get("input")][:count]
    return texts or [f"Write a short note about topic number {i}." for i in range(count)]


def decode_step_flops(model: Any, batch: int, context: int) -> float:
    """Matmul FLOPs of one decode step: every linear layer of the trunk, attention over ``context``
    cached positions, and the vocabulary projection, for ``batch`` rows."""
    import torch

    config = getattr(model.config, "text_config", model.config)
    linear = sum(
        m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear)
    )  # lm_head included (tied or not)
    heads, head_dim = (
        config.num_attention_heads,
        getattr(config, "head_dim", config.hidden_size // config.num_attention_heads),
    )
    attention = 2 * heads * head_dim * context * config.num_hidden_layers  # q.k and p.v
    return 2.0 * batch * (linear + attention)


def decode_step_bytes(model: Any, batch: int, context: int) -> float:
    """Bytes one decode step must read: every linear weight (the unembedding included, once) in its
    dtype, and the key/value cache of ``context`` positions for ``batch`` rows in the weights' dtype."""
    import torch

    config = getattr(model.config, "text_config", model.config)
    weights = {id(m.weight): m.weight for m in model.modules() if isinstance(m, torch.nn.Linear)}
    weight_bytes = sum(w.numel() * w.element_size() for w in weights.values())
    head_dim = getattr(config, "head_dim", config.hidden_size // config.num_attention_heads)
    element = next(model.parameters()).element_size()
    cache = 2 * batch * context * config.num_key_value_heads * head_dim * config.num_hidden_layers * element
    return float(weight_bytes + cache)


def run_ours(spec: dict[str, Any]) -> dict[str, Any]:
    import torch

    from instructgpt.rollout.generation import HFBackend, SamplingSettings

    model, tokenizer, prompts = _setup(spec)
    backend = HFBackend(
        model,
        SamplingSettings(max_new_tokens=spec["new_tokens"]),
        eos_id=-1,
        pad_id=tokenizer.pad_token_id,
        batch_size=spec["batch"],
        decode=spec.get("decode", "auto"),
    )
    device = next(model.parameters()).device
    started = time.perf_counter()
    # warm-up at the timed shapes (same prompts, same length): the compiled decode step is built for this cache
    # length and batch here, not in the timed run (a 2-token warm-up rounds to a shorter cache and recompiles there)
    backend.generate(prompts, torch.Generator(device=device).manual_seed(1))
    warmup = time.perf_counter() - started
    _synchronize(device)
    started = time.perf_counter()
    out = backend.generate(prompts, torch.Generator(device=device).manual_seed(0))
    _synchronize(device)
    seconds = time.perf_counter() - started
    assert int(out.response_mask.sum()) == spec["batch"] * spec["new_tokens"]
    return {**_result(model, spec, prompts, seconds), "warmup_s": warmup}


def run_transformers(spec: dict[str, Any]) -> dict[str, Any]:
    import torch

    from instructgpt.data.collate import collate
    from instructgpt.data.render import Example

    model, tokenizer, prompts = _setup(spec)
    device = next(model.parameters()).device
    batch = {
        k: v.to(device)
        for k, v in collate(
            [Example(p, [False] * len(p)) for p in prompts], tokenizer.pad_token_id, padding_side="left"
        ).items()
    }

    def sample(tokens: int):
        return model.generate(
            input_ids=batch["input_ids"],
            attention_mask=batch["attention_mask"],
            max_new_tokens=tokens,
            min_new_tokens=tokens,
            do_sample=True,
            temperature=1.0,
            top_k=0,
            top_p=1.0,
            pad_token_id=tokenizer.pad_token_id,
            return_dict_in_generate=True,
            output_scores=True,
        )

    with torch.no_grad():
        sample(2)  # warm-up
        torch.manual_seed(0)
        _synchronize(device)
        started = time.perf_counter()
        out = sample(spec["new_tokens"])
        _synchronize(device)
        seconds = time.perf_counter() - started
    assert out.sequences.shape[1] - batch["input_ids"].shape[1] == spec["new_tokens"]
    return _result(model, spec, prompts, seconds)


def _result(model: Any, spec: dict[str, Any], prompts: list[list[int]], seconds: float) -> dict[str, Any]:
    context = max(len(p) for p in prompts) + spec["new_tokens"] // 2  # mean cache length over the decode steps
    import torch

    gpu = torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else None
    return {
        "seconds": seconds,
        "peak_rss_mib": peak_rss_mib(),
        "peak_gpu_mib": gpu,
        "flops_per_step": decode_step_flops(model, spec["batch"], context),
        "bytes_per_step": decode_step_bytes(model, spec["batch"], context),
    }


def _synchronize(device: Any) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


if __name__ == "__main__":
    cli_or_worker(Args, main, run_ours, run_transformers)
