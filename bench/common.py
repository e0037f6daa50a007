"""Small helpers shared by the benchmarks: worker subprocesses, medians, peak FLOP/s, tables, JSON.

A benchmark runs each measured side in its own subprocess (:func:`run_worker`), so that each
side's peak memory (:func:`peak_rss_mib`, the process's RSS high-water mark) is its own and no
side inherits the other's caches, threads or allocator state. The parent only prepares data,
measures the machine's matmul peak (:func:`matmul_peak`) and aggregates.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any


def median(values: Sequence[float | None]) -> float | None:
    """Median of the values that are not None (None when there are none)."""
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    """``numerator / denominator``, or None when either is missing or the denominator is 0."""
    if numerator is None or not denominator:
        return None
    return numerator / denominator


def peak_rss_mib() -> float:
    """This process's resident-set high-water mark, in MiB (ru_maxrss: KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10


def compute_device() -> str:
    """'cuda' where a CUDA GPU is visible (our trainers and TRL's train there), else 'cpu'."""
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def peak_gpu_mib() -> float | None:
    """This process's peak CUDA memory allocated by PyTorch, in MiB; None without CUDA."""
    import torch

    return torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else None


def current_rss_mib() -> float:
    """This process's resident set now, in MiB."""
    import psutil

    return psutil.Process().memory_info().rss / 2**20


def timed(work: Any, repeats: int, warmup: int, sync: Any) -> list[float]:
    """Seconds of each of ``repeats`` calls of ``work`` after ``warmup`` untimed ones, each followed by ``sync``."""
    for _ in range(warmup):
        work()
    sync()
    seconds = []
    for _ in range(repeats):
        started = time.perf_counter()
        work()
        sync()
        seconds.append(time.perf_counter() - started)
    return seconds


def matmul_peak(
    dtype_name: str = "bfloat16", size: int = 4096, repeats: int = 5, warmup: int = 2, device: str = "cpu"
) -> dict[str, Any]:
    """Achieved FLOP/s of one ``size x size`` matmul in ``dtype_name`` on ``device`` (median of ``repeats``).

    Uses torch's default thread count, as the benchmarked trainers do; this is the practical
    peak that model FLOP utilisation is measured against. On CUDA the product is 8192 wide (a
    4096 product does not fill an H100/H200) and each timing is synchronised.
    """
    import torch

    dtype = getattr(torch, dtype_name)
    size = max(size, 8192) if device.startswith("cuda") else size
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    generator = torch.Generator().manual_seed(0)
    a = torch.randn(size, size, generator=generator).to(device=device, dtype=dtype)
    b = torch.randn(size, size, generator=generator).to(device=device, dtype=dtype)
    seconds = timed(lambda: a @ b, repeats, warmup, sync)
    best = median(seconds)
    return {
        "dtype": dtype_name,
        "device": device,
        "size": size,
        "threads": torch.get_num_threads(),
        "seconds": seconds,
        "flops_per_s": 2 * size**3 / best,
    }


def read_bandwidth(megabytes: int = 512, repeats: int = 5, device: str = "cpu") -> dict[str, Any]:
    """Achieved bytes/s of reading a ``megabytes`` bf16 tensor once (a sum; median of ``repeats``): the rate
    at which a decode step can stream weights it cannot keep in cache."""
    import torch

    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    data = torch.ones(megabytes * 2**19, dtype=torch.bfloat16, device=device)
    seconds = timed(data.sum, repeats, 1, sync)
    return {
        "megabytes": megabytes,
        "device": device,
        "seconds": seconds,
        "bytes_per_s": data.numel() * 2 / median(seconds),
    }


def model_dims(model: Any) -> dict[str, int]:
    """Parameter counts for the FLOP model: total, embedding (tied output counted once), non-embedding."""
    embedding = model.get_input_embeddings().weight
    output = model.get_output_embeddings().weight
    total = sum(p.numel() for p in model.parameters())  # parameters() yields a tied weight once
    embedding_params = embedding.numel() + (0 if output is embedding else output.numel())
    return {
        "params": total,
        "embedding_params": embedding_params,
        "non_embedding_params": total - embedding_params,
        "hidden": embedding.shape[1],
        "vocab": output.shape[0],
    }


def machine() -> dict[str, Any]:
    """What the numbers were measured on."""
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "logical_cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "platform": platform.platform(),
        "load_average_1_5_15min": os.getloadavg(),
    }


def run_worker(script: Path, spec: dict[str, Any], work_dir: Path, name: str, timeout_s: float) -> dict[str, Any]:
    """Run ``python script --worker SPEC RESULT`` in a fresh process; return RESULT's JSON.

    The worker writes its result as JSON. A crash, a timeout or a missing result comes back as
    ``{"error": ..., "log": path}`` (with the tail of the worker's output), never as an exception.
    """
    work_dir.mkdir(parents=True, exist_ok=True)
    spec_path, result_path, log_path = (work_dir / f"{name}.{kind}" for kind in ("spec.json", "result.json", "log"))
    spec_path.write_text(json.dumps(spec, indent=2), encoding="utf-8")
    result_path.unlink(missing_ok=True)
    command = [sys.executable, str(script), "--worker", str(spec_path), str(result_path)]
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "HF_DATASETS_DISABLE_PROGRESS_BARS": "1",
    }
    started = time.perf_counter()
    with log_path.open("w", encoding="utf-8") as log:
        try:
            code = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, env=env, timeout=timeout_s).returncode
        except subprocess.TimeoutExpired:
            code = None
    wall = time.perf_counter() - started
    if code == 0 and result_path.is_file():
        return {**json.loads(result_path.read_text(encoding="utf-8")), "wall_s": wall}
    reason = f"timed out after {timeout_s:.0f} s" if code is None else f"exit code {code}"
    return {"error": f"{reason}: {_tail(log_path)}", "log": str(log_path), "wall_s": wall}


def format_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A plain-text table: numbers right-aligned, everything else left-aligned."""
    cells = [[_cell(v) for v in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(headers)]
    numeric = [all(isinstance(row[i], (int, float)) or row[i] is None for row in rows) for i in range(len(headers))]

    def line(values: Sequence[str]) -> str:
        return "  ".join(v.rjust(w) if num else v.ljust(w) for v, w, num in zip(values, widths, numeric)).rstrip()

    return "\n".join([line(headers), line(["-" * w for w in widths]), *(line(r) for r in cells)])


def write_json(path: Path, data: Any) -> None:
    """Write ``data`` as indented JSON, atomically (a crash never leaves half a file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=path.parent, suffix=".tmp", delete=False, encoding="utf-8") as handle:
        json.dump(data, handle, indent=2)
        handle.write("\n")
    os.replace(handle.name, path)


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.3g}" if abs(value) < 10 else f"{value:,.0f}"
    return str(value)


def _tail(path: Path, lines: int = 15) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace").strip().splitlines()
    except OSError:
        return "(no output)"
    return "\n".join(text[-lines:]) or "(no output)"


def run_and_write(args: Any, prefix: str, run_benchmark: Any) -> None:
    """``run_benchmark(args, work)`` in ``args.work_dir`` (or a temporary folder removed after),
    then write its report to ``args.out``."""
    import shutil

    work = Path(args.work_dir or tempfile.mkdtemp(prefix=prefix))
    work.mkdir(parents=True, exist_ok=True)
    try:
        report = run_benchmark(args, work)
    finally:
        if args.work_dir is None:
            shutil.rmtree(work, ignore_errors=True)
    write_json(args.out, report)
    print(f"\nwrote {args.out}")


def jsonable(args: Any) -> dict[str, Any]:
    """A dataclass of benchmark arguments as JSON-ready values (Paths as strings)."""
    import dataclasses

    return {k: str(v) if isinstance(v, Path) else v for k, v in dataclasses.asdict(args).items()}


def cli_or_worker(args_cls: type, main: Any, run_ours: Any, run_trl: Any) -> None:
    """``script --worker SPEC RESULT`` runs one side (see :func:`run_worker`); otherwise parse
    ``args_cls`` from the command line and call ``main``."""
    if len(sys.argv) == 4 and sys.argv[1] == "--worker":
        spec = json.loads(Path(sys.argv[2]).read_text(encoding="utf-8"))
        write_json(Path(sys.argv[3]), (run_ours if spec["side"] == "ours" else run_trl)(spec))
    else:
        import tyro

        main(tyro.cli(args_cls))


def resolved_precision(precision: str) -> str:
    """'bf16' or 'fp32': ``auto`` as our trainers resolve it on this machine's device."""
    import torch

    from instructgpt.training.lm import resolve_precision

    if precision not in ("auto", "bf16", "fp32"):
        raise SystemExit(f"--precision {precision}: must be auto, bf16 or fp32")
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return "bf16" if resolve_precision(precision, device) is not None else "fp32"
