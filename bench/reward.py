"""Benchmark: our K-wise reward-model trainer against TRL's ``RewardTrainer`` on the pairwise expansion.

    python bench/reward.py              # gemma-3-270m cut to 2 layers, K = 4 and K = 9, 8 seeds (~1 h on 2 cores)
    python bench/reward.py --quick      # a tiny random model, a few minutes (a smoke run)
    python bench/reward.py --help

Data (the same prompts at K = 4 and K = 9): the 252 user-oriented instructions of
self-instruct's human evaluation come with 9 responses each: the expert-written target and
the predictions of 8 GPT-3 models. Prompts whose 9 responses are non-empty and all different
(101 whose prompt is under 96 tokens) are ranked by the source's quality order, from the self-instruct paper's human
evaluation: target, text-davinci-003, -002, -001, davinci + self-instruct + SuperNI,
davinci + self-instruct, davinci + SuperNI, davinci + T0, davinci (no ties). K = 9 keeps all;
K = 4 keeps the target, text-davinci-003, text-davinci-001 and davinci. (``--prompt-pool benchmarked``
requires distinct responses only at the benchmarked Ks: 196 prompts at K = 4 alone, for a larger
training set.) Each seed's split gives
``--train-prompts`` and ``--val-prompts``. (The self-instruct authors ask that these
instructions not be used for training models: the benchmark's reward models are measured
and thrown away.)

Both sides train the same model (``--model``, cut to its first ``--layers`` decoder layers
when the full model is too slow for a CPU benchmark) for one epoch, on identical token
sequences (ours renders them; TRL receives the same ids as ``chosen_ids``/``rejected_ids``),
with AdamW (0.9, 0.95, eps 1e-8), clipping 1.0, lr ``--lr`` with our cosine decay to 10% (the
same multiplier at every step: TRL gets our optimizer and ``LambdaLR`` schedule), bf16 autocast
with fp32 master weights where bf16 is native, else fp32 (``--precision``), the same scalar
head to start from (``init_head_``: normal with the config's initializer_range, seeded; TRL's
``score`` layer is overwritten with it), and the same number of optimizer steps:

- ours: ``--batch-size`` prompts per step, each response scored once, Eq. 1 over all pairs;
- TRL: the usual pairwise expansion, every comparison an independent, shuffled example
  (chosen and rejected in one padded forward); ``--batch-size`` x C(K,2) pairs per step,
  at most ``--trl-micro-batch`` pairs per forward (the largest divisor of the step's pairs),
  so both sides make the same number of updates;
  gradient checkpointing off (TRL's default is on; ours never recomputes activations).
  ``--trl-order grouped`` instead hands TRL the pairs in the order of our steps (step i = all
  pairs of the prompts in our step i): the same loss at every step, a check that the two sides
  compute the same objective and that any accuracy gap comes from the batching.

Learning rates: ``--lr`` is ours and, by default, TRL's too (the same rate at every step);
``--trl-lr`` gives TRL its own. Each side's rate is tuned on its own on the tuning seeds 100,
101 and 102 (never among the reported seeds): per side and K, the rate of {1e-4, 4e-4, 8e-4}
with the highest mean validation accuracy over those seeds at ``--batch-size`` prompts per
step, e.g. ``--sides trl --seeds 100 101 102 --lr 4e-4``. Picked (docs/reward-model.md): at 4
prompts per step 8e-4 both (K = 4), 4e-4 both (K = 9); at 2 prompts per step, K = 9, ours 4e-4
and TRL 1e-4 (``--batch-size 2 --lr 4e-4 --trl-lr 1e-4``, the headline comparison); K = 4, ours
8e-4 and TRL 4e-4; K = 4 on the full model (``--layers 0``, seeds 100-101), 2e-4 both.

Each of ``--seeds`` gives its own split, head and data order (the same on both sides); accuracy is
compared per seed, as paired differences (mean, 95% t-interval, how many seeds ours is at least
as good), because one short run's accuracy moves by points with the split.

Measured per run (each run in its own subprocess, sides alternating, ours first):
sequences through the trunk (forward passes of one sequence), tokens, wall time of the
optimizer steps (ours: the trainer's ``time/step_s``; TRL: a callback from step begin to step
end), the whole ``train()`` call, peak RSS (``ru_maxrss``, load included), and the validation
accuracy and log loss before and after training, computed the same way for both (fp32, every
comparison of every validation prompt at that K; "before" is the same on both sides, a check
that they start from the same model).
"""

from __future__ import annotations

import dataclasses
import json
import math
import random
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from common import (
    cli_or_worker,
    current_rss_mib,
    format_table,
    jsonable,
    machine,
    median,
    peak_gpu_mib,
    peak_rss_mib,
    ratio,
    resolved_precision,
    run_and_write,
    run_worker,
    write_json,
)

SOURCES = (
    "target",
    "text-davinci-003",
    "text-davinci-002",
    "text-davinci-001",
    "davinci-self-instruct-and-superni-ft",
    "davinci-self-instruct",
    "davinci-superni-ft",
    "davinci-t0-ft",
    "davinci",
)
"""The 9 responses of each prompt, best first (self-instruct paper, human evaluation)."""

K4 = ("target", "text-davinci-003", "text-davinci-001", "davinci")
"""The K = 4 subset, best first."""


@dataclass(frozen=True)
class Args:
    """Our K-wise RM trainer against TRL's RewardTrainer on pairs: sequences, wall time, memory, accuracy."""

    model: str = "gemma-3-270m"
    """Model both sides train: 'gemma-3-270m' (embedded), a local Hugging Face folder or a .gguf file."""
    layers: int = 2
    """Keep the first N decoder layers of the model (0: all). The full 18-layer model is too slow on a 2-core CPU."""
    ks: tuple[int, ...] = (4, 9)
    """Responses per prompt to benchmark (4 and/or 9)."""
    train_prompts: int = 64
    """Training prompts (one epoch)."""
    val_prompts: int = 37
    """Validation prompts (accuracy over all their comparisons). 64 + 37 = the 101 usable prompts."""
    prompt_pool: str = "k9"
    """Which prompts are usable: 'k9', those whose 9 responses are all non-empty and distinct (101: the same
    prompts at every K, the benchmark's comparison); 'benchmarked', those whose responses are non-empty and
    distinct at each K in ``--ks`` (196 with ``--ks 4``: a larger K = 4 training set, a check of how the
    comparison moves with the number of prompts)."""
    batch_size: int = 4
    """Prompts per optimizer step (TRL: batch_size x C(K,2) pairs per step: the same number of steps)."""
    ours_batch_size: int | None = None
    """Ours: prompts per step, when it should differ from ``--batch-size`` (which then sets TRL's pairs per step only).
    """
    trl_micro_batch: int = 8
    """TRL: at most this many pairs per forward (2 x as many sequences); the largest divisor of the
    step's pairs that is no larger is used, so that every step holds exactly batch_size x C(K,2) pairs."""
    ours_epochs: int = 1
    """Ours: epochs (1 is the comparison the benchmark is for; K-1 gives ours as many response passes as
    TRL's one epoch; the paper warns that more than one overfits)."""
    trl_order: str = "shuffled"
    """TRL's pair order: 'shuffled' (the usual pairwise expansion: every comparison an independent example in a
    random order) or 'grouped' (each step takes all pairs of the prompts our side's step takes, sequentially: the
    loss of every step is then the same as ours, so both sides should end with the same model up to rounding)."""
    precision: str = "auto"
    """Both sides: 'bf16' (autocast, fp32 master weights), 'fp32', or 'auto': bf16 where the hardware runs it
    natively (AMX / AVX512-BF16 CPUs, bf16 GPUs), fp32 elsewhere (emulated bf16 products are ~100x slower on an
    AVX2-only CPU), as our trainers decide. The report's args hold the resolved value."""
    micro_batch_tokens: int = 8192
    """Ours: most tokens per forward."""
    packing: bool = True
    """Ours: pack each forward's sequences into rows (restarting positions); otherwise pad."""
    pack_row_tokens: int = 256
    """Ours: tokens per packed row (attention cost grows with it)."""
    lr: float = 1e-4
    """Peak learning rate of our side, and of TRL's unless ``--trl-lr`` is given (cosine decay to 10%)."""
    trl_lr: float | None = None
    """Peak learning rate of TRL's side (None: ``--lr``). Each side's rate can be tuned on its own (see the
    module docstring: ``--seeds 100 101 102`` are the tuning seeds, never reported)."""
    max_prompt_tokens: int = 96
    """Prompts longer than this are dropped (before the split)."""
    max_response_tokens: int = 48
    """Responses are truncated to this many tokens (both sides get the same ids)."""
    repeats: int = 1
    """Runs per side, K and seed (alternating ours / TRL). Accuracy is deterministic per seed; repeats only add timings.
    """
    seeds: tuple[int, ...] = (0, 1, 2, 3, 4, 5, 6, 7)
    """Seeds; each gives its own train/validation split, head and shuffle order, the same on both sides.
    Accuracy is compared per seed (paired): mean difference, its 95% t-interval, and how often ours >= TRL."""
    sides: tuple[str, ...] = ("ours", "trl")
    """Sides to run ('ours', 'trl'); one side alone is for tuning the settings, with no comparison."""
    quick: bool = False
    """Smoke run: a tiny random model and small sizes wherever the command line keeps the default."""
    out: Path = Path(__file__).resolve().parent / "results" / "reward.json"
    """JSON report."""
    work_dir: Path | None = None
    """Keep data, worker logs and run folders here (default: a temporary folder, removed at the end)."""
    timeout: int = 3600
    """Seconds before a worker subprocess is killed."""
    compare_with: Path | None = None
    """With ``--sides ours``: take the TRL runs (same seeds and K) from this earlier report, to compare a variant of
    ours (``--ours-epochs``) without re-running TRL. Data and TRL settings must match; the seeds must be there."""
    from_partial: Path | None = None
    """Do not run: build the report from a partial JSON an interrupted run left (OUT.partial.json)."""
    merge: tuple[Path, ...] = ()
    """Do not run: build one report from several reports (or partials) of the same settings on different seeds,
    e.g. a run stopped after some seeds and a second run of the remaining ones. Settings must match; a seed may
    appear in one file only."""


QUICK = dict(
    train_prompts=16, val_prompts=8, batch_size=4, trl_micro_batch=8, max_prompt_tokens=96, max_response_tokens=24
)


def main(args: Args) -> None:
    if args.quick:
        defaults = Args()
        args = dataclasses.replace(args, **{k: v for k, v in QUICK.items() if getattr(args, k) == getattr(defaults, k)})
    if args.from_partial is not None or args.merge:
        report = merged_report(list(args.merge) or [args.from_partial])
        print_report(report)
        write_json(args.out, report)
        return
    run_and_write(args, "bench-reward-", run_benchmark)


def run_benchmark(args: Args, work: Path) -> dict[str, Any]:
    args = dataclasses.replace(args, precision=resolved_precision(args.precision))
    earlier = _earlier_report(args)
    host = machine()
    model = str(_tiny_model(work)) if args.quick else str(truncated_model(args.model, args.layers, work))
    runs: dict[str, dict[str, list]] = {str(k): {side: [] for side in args.sides} for k in args.ks}
    data_summary = {}
    for seed in args.seeds:
        data = prepare_data(model, args, work / f"seed-{seed}", seed)
        data_summary[str(seed)] = _data_summary(data)
        print(
            f"seed {seed}: {data['train_prompts']} training and {data['val_prompts']} validation prompts; model {model}"
        )
        for k in args.ks:
            for repeat in range(args.repeats):
                for side in args.sides:
                    spec = {
                        "side": side,
                        "k": k,
                        "seed": seed,
                        "model": model,
                        "data": data[str(k)],
                        "args": jsonable(args),
                        "work": str(work),
                    }
                    result = run_worker(
                        Path(__file__), spec, work / "logs", f"{side}-k{k}-s{seed}-{repeat}", args.timeout
                    )
                    runs[str(k)][side].append({"seed": seed, "repeat": repeat, **result})
                    print(f"K={k} seed {seed} {side} #{repeat}: {_short(result)}", flush=True)
                    write_json(
                        args.out.with_suffix(".partial.json"),
                        {"model": model, "args": jsonable(args), "machine": host, "data": data_summary, "runs": runs},
                    )
    data = data_summary
    if earlier is not None:
        for k, sides in runs.items():
            sides.setdefault("trl", [r for r in earlier["runs"][k]["trl"] if r.get("seed") in args.seeds])
    summary = {k: summarize(sides) for k, sides in runs.items()}
    host["load_average_at_end"] = machine()["load_average_1_5_15min"]
    report = {
        "benchmark": "reward",
        "machine": host,
        "model": model,
        "args": jsonable(args),
        "data": data,
        "summary": summary,
        "runs": runs,
    }
    print_report(report)
    return report


def _earlier_report(args: Args) -> dict[str, Any] | None:
    """The ``--compare-with`` report, checked to share our data settings (before anything runs)."""
    if args.compare_with is None:
        return None
    earlier = _read_report(args.compare_with)
    same = (
        "model",
        "layers",
        "precision",
        "prompt_pool",
        "train_prompts",
        "val_prompts",
        "batch_size",
        "max_prompt_tokens",
        "max_response_tokens",
    )
    differ = [key for key in same if earlier["args"].get(key) != jsonable(args).get(key)]
    differ += ["trl_lr"] if trl_lr(earlier["args"]) != trl_lr(jsonable(args)) else []
    missing = [
        (k, seed)
        for k in args.ks
        for seed in args.seeds
        if not any(r.get("seed") == seed for r in earlier["runs"].get(str(k), {}).get("trl", []))
    ]
    if differ or missing:
        raise SystemExit(
            f"--compare-with {args.compare_with}: settings differ in {differ}; no TRL run for (K, seed) {missing}"
        )
    return earlier


OLDER_REPORT_ARGS = {"precision": "bf16", "prompt_pool": "k9"}
"""What reports from before ``--precision`` and ``--prompt-pool`` ran with."""


def _read_report(path: Path) -> dict[str, Any]:
    """A JSON report, its args completed with :data:`OLDER_REPORT_ARGS` where it predates them."""
    report = json.loads(path.read_text())
    report["args"] = {**OLDER_REPORT_ARGS, **report["args"]}
    return report


MERGE_MAY_DIFFER = ("seeds", "out", "work_dir", "timeout", "from_partial", "merge")


def merged_report(paths: list[Path]) -> dict[str, Any]:
    """One report from finished or partial reports of the same settings, each seed from exactly one file."""
    parts = [_read_report(path) for path in paths]
    first = parts[0]
    for path, part in zip(paths, parts):
        differ = [
            key
            for key in set(first["args"]) | set(part["args"])
            if key not in MERGE_MAY_DIFFER and first["args"].get(key) != part["args"].get(key)
        ]
        if differ or part["model"] != first["model"]:
            raise SystemExit(f"--merge {path}: settings differ from {paths[0]} in {sorted(differ) or ['model']}")
    runs: dict[str, dict[str, list]] = {}
    for path, part in zip(paths, parts):
        for k, sides in part["runs"].items():
            for side, side_runs in sides.items():
                merged = runs.setdefault(k, {}).setdefault(side, [])
                taken = {run["seed"] for run in merged}
                if any(run["seed"] in taken for run in side_runs):
                    raise SystemExit(f"--merge {path}: K={k} {side} repeats a seed of an earlier file")
                merged.extend(side_runs)
    seeds = sorted({run["seed"] for sides in runs.values() for side_runs in sides.values() for run in side_runs})
    return {
        "benchmark": "reward",
        "machine": first.get("machine") or machine(),
        "model": first["model"],
        "args": {**first["args"], "seeds": seeds},
        "merged_from": [str(path) for path in paths],
        "machines": [part.get("machine") for part in parts],
        "data": {seed: summary for part in parts for seed, summary in (part.get("data") or {}).items()},
        "interrupted": any("summary" not in part or part.get("interrupted") for part in parts),
        "summary": {k: summarize(sides) for k, sides in runs.items()},
        "runs": runs,
    }


def trl_lr(args: dict[str, Any]) -> float:
    """TRL's peak learning rate in a (JSON) args dict: ``trl_lr``, else the shared ``lr``."""
    return args.get("trl_lr") or args["lr"]


def ours_batch_size(args: dict[str, Any]) -> int:
    """Our prompts per step in a (JSON) args dict: ``ours_batch_size``, else the shared ``batch_size``."""
    return args.get("ours_batch_size") or args["batch_size"]


def truncated_model(name: str, layers: int, work: Path) -> Path:
    """The model cut to its first ``layers`` decoder layers, saved as a Hugging Face folder."""
    from transformers import AutoModelForCausalLM

    from instructgpt.models.loader import load_tokenizer, resolve_model

    source = resolve_model(name)
    if not layers:
        return Path(source)
    model = AutoModelForCausalLM.from_pretrained(source)
    config = model.config
    if layers < config.num_hidden_layers:
        model.model.layers = model.model.layers[:layers]
        config.num_hidden_layers = layers
        if getattr(config, "layer_types", None):
            config.layer_types = config.layer_types[:layers]
    folder = work / f"model-{layers}-layers"
    model.save_pretrained(folder)
    load_tokenizer(source).save_pretrained(folder)
    return folder


def _tiny_model(work: Path) -> Path:
    from instructgpt.models.tiny import save_tiny

    return Path(save_tiny(str(work / "tiny-model")))


def k_sources(k: int) -> tuple[str, ...]:
    """The ranked sources at ``k``, best first: all 9, the K = 4 subset, or the best ``k``."""
    return SOURCES if k == 9 else K4 if k == 4 else SOURCES[:k]


def prompt_sources(args: Args) -> tuple[str, ...]:
    """The sources whose responses must be non-empty and distinct for a prompt to be usable (``--prompt-pool``)."""
    if args.prompt_pool == "k9":
        return SOURCES
    if args.prompt_pool == "benchmarked":
        return tuple(s for s in SOURCES if any(s in k_sources(k) for k in args.ks))
    raise SystemExit(f"--prompt-pool {args.prompt_pool}: must be k9 or benchmarked")


def prepare_data(model: str, args: Args, work: Path, seed: int) -> dict[str, Any]:
    """Rankings files at each K (ours) and the same groups' token ids (TRL's pairs, and validation), split by
    ``seed``."""
    from instructgpt.data.importers import find_data_root
    from instructgpt.data.jsonl import write_jsonl_atomic
    from instructgpt.data.schemas import Ranking
    from instructgpt.models.loader import ensure_pad_token, load_tokenizer
    from instructgpt.training.rm_data import render_groups

    tokenizer = load_tokenizer(model)
    ensure_pad_token(tokenizer)
    root = find_data_root() / "self-instruct" / "human_eval" / "predictions"
    predictions = {s: [json.loads(line) for line in (root / f"{s}_predictions.jsonl").open()] for s in SOURCES[1:]}
    needed = prompt_sources(args)
    usable = []
    for i, item in enumerate(predictions["davinci"]):
        prompt = item["instruction"].strip() + (f"\n\n{item['input'].strip()}" if item["input"].strip() else "")
        responses = {"target": item["target"], **{s: predictions[s][i]["response"] for s in SOURCES[1:]}}
        texts = [responses[s].strip() for s in needed]
        if (
            all(texts)
            and len(set(texts)) == len(texts)
            and len(tokenizer(prompt)["input_ids"]) < args.max_prompt_tokens
        ):
            usable.append((f"self-instruct-{i}", prompt, dict(zip(needed, texts))))
    if len(usable) < args.train_prompts + args.val_prompts:
        raise SystemExit(f"only {len(usable)} usable prompts for --train-prompts + --val-prompts")
    work.mkdir(parents=True, exist_ok=True)
    chosen = random.Random(seed).sample(usable, args.train_prompts + args.val_prompts)
    data: dict[str, Any] = {
        "usable_prompts": len(usable),
        "train_prompts": args.train_prompts,
        "val_prompts": args.val_prompts,
    }
    for k in args.ks:
        sources = k_sources(k)
        entry: dict[str, Any] = {"k": k, "sources": list(sources)}
        for split, items in (("train", chosen[: args.train_prompts]), ("val", chosen[args.train_prompts :])):
            order = random.Random(f"{seed}-{split}-{k}")
            records = []
            for prompt_id, prompt, responses in items:
                shown = order.sample(list(sources), len(sources))  # the order responses are listed in
                records.append(
                    Ranking(
                        prompt=prompt,
                        responses=[responses[s] for s in shown],
                        ranks=[sources.index(s) for s in shown],
                        labeler_id="self-instruct-order",
                        prompt_id=prompt_id,
                    )
                )
            path = work / f"k{k}-{split}.jsonl"
            write_jsonl_atomic(path, records)
            groups, _ = render_groups(
                tokenizer, records, "raw", "\n\n", args.max_prompt_tokens, args.max_response_tokens
            )
            ids = work / f"k{k}-{split}-ids.json"
            ids.write_text(json.dumps([{"sequences": g.sequences, "ranks": g.ranks} for g in groups]))
            entry[split] = str(path)
            entry[f"{split}_ids"] = str(ids)
            entry[f"{split}_tokens"] = sum(g.tokens for g in groups)
        data[str(k)] = entry
    return data


# --- workers (one subprocess per run) -------------------------------------------------------


def _groups(path: str) -> list:
    from instructgpt.training.rm_data import RankedGroup

    return [
        RankedGroup(tuple(tuple(s) for s in g["sequences"]), tuple(g["ranks"]))
        for g in json.loads(Path(path).read_text())
    ]


def validation_accuracy(score, groups: list) -> dict[str, float]:
    """Accuracy and log loss over every comparison of ``groups``; ``score(sequences) -> [N]`` scores."""
    import torch
    import torch.nn.functional as F

    from instructgpt.losses.ranking import comparison_mask, ranking_accuracy
    from instructgpt.training.rm_data import flatten

    correct = comparisons = log_loss = 0.0
    with torch.no_grad():
        for start in range(0, len(groups), 4):
            sequences, index, ranks = flatten(groups[start : start + 4])
            scores = torch.cat([score(sequences[i : i + 16]) for i in range(0, len(sequences), 16)]).float().cpu()
            right, total = ranking_accuracy(scores, index, ranks)
            beats = comparison_mask(index, ranks)
            log_loss += float(-F.logsigmoid(scores[:, None] - scores[None, :])[beats].sum())
            correct, comparisons = correct + float(right.sum()), comparisons + float(total.sum())
    return {"accuracy": correct / comparisons, "log_loss": log_loss / comparisons, "comparisons": int(comparisons)}


def run_ours(spec: dict[str, Any]) -> dict[str, Any]:
    """Train with our ``train_rm`` (one epoch); per-step work and times from its metrics."""
    import torch

    from instructgpt.models.reward import load_reward_model
    from instructgpt.training import rm
    from instructgpt.training.metrics import read_metrics
    from instructgpt.training.rm_data import score_sequences

    args, data, seed = spec["args"], spec["data"], spec["seed"]
    ours_batch = ours_batch_size(args)
    torch.manual_seed(seed)
    model, tokenizer = load_reward_model(spec["model"], seed=seed, new_head=True)
    after_load = current_rss_mib()
    val_groups = _groups(data["val_ids"])
    before = validation_accuracy(
        lambda seqs: score_sequences(model, seqs, tokenizer.pad_token_id, packing=False), val_groups
    )
    config = rm.RMConfig(
        model=spec["model"],
        data=(Path(data["train"]),),
        out_dir=Path(tempfile.mkdtemp(prefix="ours-", dir=spec["work"])),
        val_fraction=0.0,
        epochs=args.get("ours_epochs", 1),
        lr=args["lr"],
        batch_size=ours_batch,
        micro_batch_prompts=ours_batch,
        micro_batch_tokens=args["micro_batch_tokens"],
        packing=args.get("packing", True),
        pack_row_tokens=args.get("pack_row_tokens", 1024),
        template="raw",
        max_prompt_tokens=args["max_prompt_tokens"],
        max_response_tokens=args["max_response_tokens"],
        precision=args["precision"],
        normalize=False,
        progress=False,
        seed=seed,
    )
    rm._save = lambda *_, **__: None  # checkpoint writes are no part of training (TRL: save_strategy="no")
    rm._finish = lambda *_, **__: None
    started = time.perf_counter()
    rm.train_rm(config, model, tokenizer)
    train_s = time.perf_counter() - started
    peak = peak_rss_mib()
    steps = [r for r in read_metrics(config.out_dir) if "rm/responses" in r]
    model.float()
    scored = validation_accuracy(
        lambda seqs: score_sequences(model, seqs, tokenizer.pad_token_id, packing=False), val_groups
    )
    return {
        "side": "ours",
        "steps": [
            {
                "sequences": s["rm/responses"],
                "tokens": s["rm/tokens"],
                "pairs": s["rm/comparisons"],
                "step_s": s["time/step_s"],
            }
            for s in steps
        ],
        "train_s": train_s,
        "validation_before": before,
        "validation": scored,
        "rss_after_load_mib": after_load,
        "peak_rss_mib": peak,
        "peak_gpu_mib": peak_gpu_mib(),
        "threads": torch.get_num_threads(),
    }


def run_trl(spec: dict[str, Any]) -> dict[str, Any]:
    """Train TRL's RewardTrainer on the pairwise expansion of the same groups (identical token ids)."""
    import datasets
    import torch
    from transformers import AutoModelForSequenceClassification
    from trl import RewardConfig, RewardTrainer

    from instructgpt.models.loader import ensure_pad_token, load_tokenizer
    from instructgpt.models.reward import init_head_
    from instructgpt.training.schedule import cosine_lambda

    args, data, k, seed = spec["args"], spec["data"], spec["k"], spec["seed"]
    torch.manual_seed(seed)
    model = AutoModelForSequenceClassification.from_pretrained(spec["model"], num_labels=1, dtype=torch.float32)
    tokenizer = load_tokenizer(spec["model"])
    ensure_pad_token(tokenizer, model)
    model.config.pad_token_id = tokenizer.pad_token_id
    init_head_(model.score.weight, model.config, seed)  # the very head our side starts from
    after_load = current_rss_mib()
    val_groups = _groups(data["val_ids"])
    before = validation_accuracy(_trl_scorer(model, tokenizer), val_groups)  # equals ours: the same start
    pairs = _pairs(_groups(data["train_ids"]), args, seed)
    per_step = args["batch_size"] * math.comb(k, 2)
    micro = trl_micro_batch(per_step, args["trl_micro_batch"])
    config = RewardConfig(
        output_dir=tempfile.mkdtemp(prefix="trl-", dir=spec["work"]),
        num_train_epochs=1,
        per_device_train_batch_size=micro,
        gradient_accumulation_steps=per_step // micro,
        learning_rate=trl_lr(args),
        lr_scheduler_type="cosine_with_min_lr",
        lr_scheduler_kwargs={"min_lr_rate": 0.1},
        warmup_steps=0,
        adam_beta1=0.9,
        adam_beta2=0.95,
        weight_decay=0.0,
        max_grad_norm=1.0,
        bf16=args["precision"] == "bf16",
        max_length=None,
        logging_steps=10**6,
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
        seed=seed,
        use_cpu=not torch.cuda.is_available(),
        dataloader_drop_last=True,
        gradient_checkpointing=False,  # TRL's default is True; ours does not recompute activations
        train_sampling_strategy="sequential" if args.get("trl_order") == "grouped" else "random",
    )
    clock = _step_clock()

    class CountingTrainer(RewardTrainer):
        def training_step(self, model, inputs, num_items_in_batch=None):
            clock.forwards.append(
                {
                    "step": self.state.global_step,
                    "sequences": int(inputs["input_ids"].shape[0]),
                    "tokens": int(inputs["attention_mask"].sum()),
                    "positions": int(inputs["input_ids"].numel()),
                }
            )
            return super().training_step(model, inputs, num_items_in_batch)

    # Our optimizer and schedule, per step: HF's cosine_with_min_lr reaches the floor only after
    # the last step (4 steps: 1, 0.87, 0.55, 0.23 x lr), ours at it (1, 0.78, 0.33, 0.1 x lr).
    steps = len(pairs) // per_step
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=trl_lr(args), betas=(0.9, 0.95), eps=1e-8, weight_decay=0.0, fused=True
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, cosine_lambda(steps, 0.1))
    trainer = CountingTrainer(
        model=model,
        args=config,
        train_dataset=datasets.Dataset.from_list(pairs),
        processing_class=tokenizer,
        callbacks=[clock],
        optimizers=(optimizer, scheduler),
    )
    started = time.perf_counter()
    trainer.train()
    train_s = time.perf_counter() - started
    peak = peak_rss_mib()
    steps = []
    for step, (begin, end) in enumerate(zip(clock.begin, clock.end)):
        forwards = [f for f in clock.forwards if f["step"] == step]
        steps.append(
            {
                "sequences": sum(f["sequences"] for f in forwards),
                "tokens": sum(f["tokens"] for f in forwards),
                "pairs": sum(f["sequences"] for f in forwards) // 2,
                "step_s": end - begin,
            }
        )
    if any(s["pairs"] != per_step for s in steps):
        raise RuntimeError(f"TRL steps hold {sorted({s['pairs'] for s in steps})} pairs, not {per_step}")
    model.float()
    return {
        "side": "trl",
        "steps": steps,
        "train_s": train_s,
        "validation_before": before,
        "validation": validation_accuracy(_trl_scorer(model, tokenizer), val_groups),
        "rss_after_load_mib": after_load,
        "peak_rss_mib": peak,
        "peak_gpu_mib": peak_gpu_mib(),
        "threads": torch.get_num_threads(),
        "pairs": len(pairs),
    }


def trl_micro_batch(per_step: int, most: int) -> int:
    """The largest divisor of ``per_step`` (pairs per optimizer step) that is at most ``most``."""
    return max(d for d in range(1, min(per_step, most) + 1) if per_step % d == 0)


def _pairs(groups: list, args: dict[str, Any], seed: int) -> list[dict[str, list[int]]]:
    """Every (chosen, rejected) pair of every group; with ``trl_order='grouped'``, in the order of
    our trainer's steps (its :class:`BatchPlan` over the same groups), so that TRL's step ``i``
    holds exactly the pairs of the prompts in our step ``i``."""
    from instructgpt.training.batching import BatchPlan

    order = range(len(groups))
    if args.get("trl_order") == "grouped":
        plan = BatchPlan(len(groups), args["batch_size"], 1, seed)
        order = [i for step in range(plan.total_steps) for i in plan.batch(step)]
    return [
        {"chosen_ids": list(groups[i].sequences[w]), "rejected_ids": list(groups[i].sequences[l])}
        for i in order
        for w in range(groups[i].k)
        for l in range(groups[i].k)
        if groups[i].ranks[w] < groups[i].ranks[l]
    ]


def _trl_scorer(model: Any, tokenizer: Any) -> Any:
    """Scores of TRL's sequence-classification model for right-padded token ids (eval mode)."""
    from instructgpt.training.rm_data import pad_sequences

    def score(sequences):
        batch = pad_sequences(sequences, tokenizer.pad_token_id)
        return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, 0]

    model.eval()
    return score


def _step_clock() -> Any:
    from transformers import TrainerCallback

    class StepClock(TrainerCallback):
        def __init__(self) -> None:
            self.begin: list[float] = []
            self.end: list[float] = []
            self.forwards: list[dict] = []

        def on_step_begin(self, args, state, control, **kwargs):
            self.begin.append(time.perf_counter())

        def on_step_end(self, args, state, control, **kwargs):
            self.end.append(time.perf_counter())

    return StepClock()


# --- aggregation and report -----------------------------------------------------------------


def _run_summary(run: dict[str, Any]) -> dict[str, Any]:
    if "error" in run:
        return {"error": run["error"]}
    steps = run["steps"]
    return {
        "steps": len(steps),
        "sequences": sum(s["sequences"] for s in steps),
        "tokens": sum(s["tokens"] for s in steps),
        "pairs": sum(s["pairs"] for s in steps),
        "step_wall_s": sum(s["step_s"] for s in steps),
        "train_wall_s": run["train_s"],
        "peak_rss_mib": run["peak_rss_mib"],
        "peak_gpu_mib": run.get("peak_gpu_mib"),
        "val_accuracy_before": run.get("validation_before", {}).get("accuracy"),
        "val_accuracy": run["validation"]["accuracy"],
        "val_log_loss": run["validation"]["log_loss"],
    }


KEYS = (
    "steps",
    "sequences",
    "tokens",
    "pairs",
    "step_wall_s",
    "train_wall_s",
    "peak_rss_mib",
    "peak_gpu_mib",
    "val_accuracy_before",
    "val_accuracy",
    "val_log_loss",
)


def summarize(sides: dict[str, list]) -> dict[str, Any]:
    """Per side: medians over the runs that succeeded (all seeds and repeats). With both sides:
    TRL / ours ratios of the medians, the step-time ratio of each (seed, repeat), and the
    paired accuracy comparison per seed (:func:`paired`)."""
    out: dict[str, Any] = {}
    for side, runs in sides.items():
        ok = [_run_summary(r) for r in runs if "error" not in r]
        out[side] = {key: median([r[key] for r in ok]) for key in KEYS}
        out[side]["runs_ok"] = len(ok)
        out[side]["errors"] = [r["error"] for r in runs if "error" in r]
    if not {"ours", "trl"} <= sides.keys():
        return out
    pairs = [
        (_run_summary(o), _run_summary(t))
        for o, t in zip(sides["ours"], sides["trl"])
        if "error" not in o and "error" not in t
    ]
    out["step_wall_ratio_each_run"] = [t["step_wall_s"] / o["step_wall_s"] for o, t in pairs]
    out["trl_over_ours"] = {
        key: ratio(out["trl"][key], out["ours"][key])
        for key in ("sequences", "tokens", "step_wall_s", "train_wall_s", "peak_rss_mib", "peak_gpu_mib")
    }
    out["accuracy"] = paired(
        {r["seed"]: r["validation"]["accuracy"] for r in sides["ours"] if "error" not in r},
        {r["seed"]: r["validation"]["accuracy"] for r in sides["trl"] if "error" not in r},
    )
    out["log_loss"] = paired(
        {r["seed"]: r["validation"]["log_loss"] for r in sides["ours"] if "error" not in r},
        {r["seed"]: r["validation"]["log_loss"] for r in sides["trl"] if "error" not in r},
        higher_is_better=False,
    )
    return out


def paired(ours: dict[int, float], trl: dict[int, float], higher_is_better: bool = True) -> dict[str, Any]:
    """Ours minus TRL over the seeds both sides finished: each difference, their mean, the 95%
    t-interval of the mean (Student's t with n-1 degrees of freedom; None below 2 seeds), and
    the number of seeds where ours is at least as good as TRL."""
    import statistics

    from scipy import stats

    seeds = sorted(ours.keys() & trl.keys())
    diffs = [ours[s] - trl[s] for s in seeds]
    out: dict[str, Any] = {
        "seeds": seeds,
        "ours": [ours[s] for s in seeds],
        "trl": [trl[s] for s in seeds],
        "ours_minus_trl": diffs,
        "mean": statistics.fmean(diffs) if diffs else None,
        "ci95": None,
        "ours_as_good_or_better": sum((d >= 0) == higher_is_better or d == 0 for d in diffs),
    }
    if len(diffs) >= 2:
        half = stats.t.ppf(0.975, len(diffs) - 1) * statistics.stdev(diffs) / len(diffs) ** 0.5
        out["ci95"] = [out["mean"] - half, out["mean"] + half]
    return out


def print_report(report: dict[str, Any]) -> None:
    args = report["args"]
    print(
        f"\nReward-model benchmark: {report['model']} on {report['machine']['cpu']}; {args['train_prompts']} "
        "training prompts, "
        f"{args['val_prompts']} validation; prompts per step ours {ours_batch_size(args)}, TRL {args['batch_size']} "
        "(as pairs); "
        f"epochs ours {args.get('ours_epochs', 1)}, TRL 1; lr ours {args['lr']:g}, TRL {trl_lr(args):g}; seeds "
        f"{args['seeds']}, "
        f"{args['repeats']} run(s) each; medians over all runs"
    )
    rows = []
    for k, s in report["summary"].items():
        for side in ("ours", "trl"):
            if side not in s:
                continue
            r = s[side]
            rows.append(
                [
                    f"K={k}",
                    side,
                    r["steps"],
                    r["sequences"],
                    r["tokens"],
                    r["step_wall_s"],
                    r["train_wall_s"],
                    r["peak_rss_mib"],
                    r["val_accuracy_before"],
                    r["val_accuracy"],
                    r["val_log_loss"],
                ]
            )
        if "trl_over_ours" in s:
            x = s["trl_over_ours"]
            rows.append(
                [
                    f"K={k}",
                    "TRL / ours",
                    None,
                    x["sequences"],
                    x["tokens"],
                    x["step_wall_s"],
                    x["train_wall_s"],
                    x["peak_rss_mib"],
                    None,
                    s["accuracy"]["mean"],
                    s["log_loss"]["mean"],
                ]
            )
    print(
        format_table(
            [
                "K",
                "side",
                "steps",
                "sequences",
                "tokens",
                "steps wall s",
                "train() s",
                "peak RSS MiB",
                "val acc before",
                "val acc",
                "val log loss",
            ],
            rows,
        )
    )
    print("Accuracy columns in the ratio row: mean over seeds of ours minus TRL.")
    for k, s in report["summary"].items():
        if "accuracy" not in s:
            continue
        each = ", ".join(f"{x:.2f}x" for x in s["step_wall_ratio_each_run"])
        print(f"K={k}: TRL / ours optimizer-step wall time, each run (ours ran just before TRL): {each or '-'}")
        for name, scale in (("accuracy", 100), ("log_loss", 1)):
            a = s[name]
            per_seed = ", ".join(
                f"{seed}: {o * scale:.2f} vs {t * scale:.2f}" for seed, o, t in zip(a["seeds"], a["ours"], a["trl"])
            )
            interval = "-" if a["ci95"] is None else f"[{a['ci95'][0] * scale:+.2f}, {a['ci95'][1] * scale:+.2f}]"
            mean = "-" if a["mean"] is None else f"{a['mean'] * scale:+.2f}"
            print(
                f"K={k} {name}{' (points)' if scale == 100 else ''}, ours vs TRL per seed: {per_seed}; ours - TRL "
                f"mean {mean}, "
                f"95% CI {interval}; ours as good or better in {a['ours_as_good_or_better']} of {len(a['seeds'])}"
            )


def _data_summary(data: dict[str, Any]) -> dict[str, Any]:
    return {
        key: ({k: v for k, v in value.items() if not k.endswith("_ids")} if isinstance(value, dict) else value)
        for key, value in data.items()
    }


def _short(result: dict[str, Any]) -> str:
    if "error" in result:
        return "FAILED " + result["error"].splitlines()[-1][:200]
    s = _run_summary(result)
    return (
        f"{s['steps']} steps, {s['sequences']} sequences, steps {s['step_wall_s']:.1f} s, train() "
        f"{s['train_wall_s']:.1f} s, "
        f"peak {s['peak_rss_mib']:.0f} MiB, val acc {s['val_accuracy']:.3f}"
    )


if __name__ == "__main__":
    cli_or_worker(Args, main, run_ours, run_trl)
