"""Benchmark: ``instructgpt data prepare`` on synthetic prompt sets, and the simulated panel's speed.

    python bench/prepare.py                       # 100k and 1M prompts, then the panel (a few minutes)
    python bench/prepare.py --sizes 100000        # a short run
    python bench/prepare.py --help

The synthetic prompts look like a prompt pool: instructions of 8-60 random words from a
2,000-word vocabulary, 15% near-duplicates (another prompt's first 120 characters with a new
ending), about 40 prompts per user
plus 20 heavy users who write 2% of the prompts (above the 200-prompt cap at 1M), 0.5% with an
e-mail address or a phone number, 1% over 1,024 bytes (these, and only these, are tokenized),
sources, types and categories in the paper's Table 1 shares. Each size is written once to a
temporary JSONL file, then ``prepare`` runs on it in its own subprocess (``common.run_worker``)
``--repeats`` times, so that the peak RSS is the run's own. Reported: wall time (median),
prompts per second, peak RSS, and the ratio of the largest size's time to the smallest's
against the ratio of sizes (near-linear means the O(n log n) sort is not what dominates).
CPU seconds (``time.process_time`` of the worker) are reported beside wall time: on a
machine shared with other jobs they are the better guide to the unloaded wall time.

The panel part times ``Panel.rank`` of ``--panel-prompts`` prompts x 5 responses by a
simulated panel with the real sentence-embedding model (all-MiniLM-L6-v2), model load
excluded, first call (no cached embeddings).
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import format_table, machine, median, peak_rss_mib, run_worker, write_json  # noqa: E402

CATEGORIES = [
    ("generation", 45.6),
    ("open QA", 12.4),
    ("brainstorming", 11.2),
    ("chat", 8.4),
    ("rewrite", 6.6),
    ("summarization", 4.2),
    ("classification", 3.5),
    ("other", 3.5),
    ("closed QA", 2.6),
    ("extract", 1.9),
]


def make_prompts(path: Path, n: int, seed: int) -> None:
    rng = random.Random(seed)
    vocabulary = [
        "".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(2, 9))) for _ in range(2000)
    ]
    starts = ["Write", "Explain", "List", "Summarize", "Describe", "Translate", "Classify", "Brainstorm"]
    names, weights = zip(*CATEGORIES)
    users = max(1, n // 40)
    recent: list[str] = []
    with path.open("w", encoding="utf-8") as f:
        for i in range(n):
            if recent and rng.random() < 0.15:
                text = rng.choice(recent)[:120] + " " + " ".join(rng.choices(vocabulary, k=rng.randint(1, 8)))
            else:
                length = rng.randint(8, 60) if rng.random() > 0.01 else rng.randint(250, 400)
                text = rng.choice(starts) + " " + " ".join(rng.choices(vocabulary, k=length)) + "."
                recent.append(text)
                if len(recent) > 1000:
                    recent.pop(rng.randrange(len(recent)))
            if rng.random() < 0.005:
                text += rng.choice([f" Mail me at user{i}@example.com.", f" Call me on (555) 201-{i % 10000:04d}."])
            # most users write a few dozen prompts; 20 heavy users write 2% of all, above the cap
            user = f"heavy-{rng.randrange(20)}" if rng.random() < 0.02 else rng.randrange(users)
            source = "labeler" if rng.random() < 0.3 else "api"
            record = {
                "id": f"p{i}",
                "text": text,
                "user_id": f"user-{user}",
                "source": source,
                "category": rng.choices(names, weights)[0],
            }
            if source == "labeler":
                record["type"] = rng.choice(["plain", "few-shot", "user-based"])
            f.write(json.dumps(record) + "\n")


def worker(spec_path: str, result_path: str) -> None:
    spec = json.loads(Path(spec_path).read_text())
    from instructgpt.data.prepare import PrepareConfig, prepare, token_counter

    config = PrepareConfig(inputs=(Path(spec["input"]),), out_dir=Path(spec["out_dir"]), tokenizer=spec["tokenizer"])
    count_tokens = token_counter(config.tokenizer)  # loading the tokenizer is not timed
    started, cpu_started = time.perf_counter(), time.process_time()
    report = prepare(config, count_tokens)
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu_started
    Path(result_path).write_text(
        json.dumps(
            {
                "seconds": seconds,
                "cpu_s": cpu,
                "peak_rss_mib": peak_rss_mib(),
                "dropped": report["dropped"],
                "read": report["stages"]["read"]["prompts"],
                "datasets": report["datasets"],
            }
        )
    )


def bench_panel(prompts: int) -> dict:
    from instructgpt.labelers.embedding import MiniLMEmbedder
    from instructgpt.labelers.panel import Panel
    from instructgpt.labelers.simulated import QualityScorer

    rng = random.Random(0)
    topics = ["volcanoes", "coffee", "chess", "the moon", "bees", "jazz", "glaciers", "tea", "owls", "bread"]
    items = []
    for i in range(prompts):
        topic = rng.choice(topics)
        responses = [
            f"Answer {i}.{k}: {topic} " + " ".join(rng.choice(topics) for _ in range(rng.randint(5, 40))) + "."
            for k in range(5)
        ]
        items.append((f"Describe {topic} in {rng.randint(2, 5)} sentences. ({i})", responses))
    embedder = MiniLMEmbedder()
    embedder.embed(["warm up"])  # load the model outside the timing
    panel = Panel.simulated(8, 4, scorer=QualityScorer(embedder))
    started, cpu_started = time.perf_counter(), time.process_time()
    records = panel.rank(items, overlap=0.1)
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu_started
    import torch

    return {
        "prompts": prompts,
        "responses": 5 * prompts,
        "records": len(records),
        "seconds": seconds,
        "cpu_s": cpu,
        "responses_per_s": 5 * prompts / seconds,
        "torch_threads": torch.get_num_threads(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--tokenizer", default="gemma-3-270m", help="'bytes' for no model")
    parser.add_argument("--panel-prompts", type=int, default=60, help="0 to skip the panel")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "prepare.json")
    parser.add_argument("--worker", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(*args.worker)
    rows, runs = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        for size in args.sizes:
            data = Path(tmp) / f"prompts-{size}.jsonl"
            started = time.perf_counter()
            make_prompts(data, size, seed=0)
            print(
                f"{size:,} prompts generated in {time.perf_counter() - started:.0f} s "
                f"({data.stat().st_size / 2**20:.0f} MiB)",
                file=sys.stderr,
            )
            results = [
                run_worker(
                    Path(__file__),
                    {"input": str(data), "out_dir": f"{tmp}/out-{size}", "tokenizer": args.tokenizer},
                    Path(tmp) / "work",
                    f"{size}-{r}",
                    1800,
                )
                for r in range(args.repeats)
            ]
            errors = [r["error"] for r in results if "error" in r]
            if errors:
                raise SystemExit(errors[0])
            seconds = median([r["seconds"] for r in results])
            runs[size] = {"runs": results, "median_s": seconds, "input_mib": data.stat().st_size / 2**20}
            rows.append(
                [
                    f"{size:,}",
                    seconds,
                    median([r["cpu_s"] for r in results]),
                    size / seconds,
                    median([r["peak_rss_mib"] for r in results]),
                    results[0]["dropped"]["duplicates"],
                    results[0]["dropped"]["over_user_cap"],
                    results[0]["dropped"]["over_token_limit"],
                    results[0]["dropped"]["pii"],
                ]
            )
    print(
        format_table(
            ["prompts", "median s", "CPU s", "prompts/s", "peak RSS MiB", "duplicates", "over cap", "too long", "PII"],
            rows,
        )
    )
    sizes = sorted(runs)
    scaling = None
    if len(sizes) > 1:
        scaling = runs[sizes[-1]]["median_s"] / runs[sizes[0]]["median_s"]
        print(f"time ratio {sizes[-1]:,} / {sizes[0]:,} prompts: {scaling:.2f} (size ratio {sizes[-1] / sizes[0]:.0f})")
    panel = bench_panel(args.panel_prompts) if args.panel_prompts else None
    if panel:
        print(
            f"simulated panel (MiniLM relevance): {panel['responses']} responses ranked in {panel['seconds']:.1f} s "
            f"(CPU {panel['cpu_s']:.1f} s; {panel['responses_per_s']:.0f} responses/s, {panel['torch_threads']} "
            "torch threads)"
        )
    write_json(
        args.out,
        {
            "machine": machine(),
            "tokenizer": args.tokenizer,
            "prepare": runs,
            "time_ratio_largest_smallest": scaling,
            "panel": panel,
        },
    )
    print(f"results: {args.out}")


if __name__ == "__main__":
    main()
