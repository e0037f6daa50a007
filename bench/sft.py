"""Benchmark: our SFT trainer against TRL's ``SFTTrainer``: tokens/s, peak memory and MFU.

    python bench/sft.py                 # the real model, about 10 minutes on 2 CPU cores
    python bench/sft.py --quick         # a tiny random model, about a minute (a smoke run)
    python bench/sft.py --help

Both sides train the same model on the same Alpaca demonstrations (a seeded subset whose
rendered length is at most ``--max-len`` tokens, so neither side truncates), with the same
optimizer steps (``--batch-size`` demonstrations, ``--micro-batch-size`` per forward), AdamW,
clipping at 1.0 and the same precision (``--precision``: bf16 where the hardware runs it natively,
fp32 elsewhere). Ours gets the JSONL demonstrations; TRL gets the identical
texts as a prompt-completion dataset (prompt = our rendered prompt text, i.e. the prompt and
the blank-line separator; completion = the response).

What is measured, per run, each run in its own subprocess (so each side's peak memory is its own):

- tokens/s: non-padding tokens (prompt + response) of the measured optimizer steps divided by
  their wall time; model load, data preparation and the first ``--warmup`` steps are excluded.
  Ours: the trainer's own ``time/step_s``. TRL: a callback's ``on_step_begin`` to ``on_step_end``.
- peak memory: the subprocess's RSS high-water mark (``ru_maxrss``), load included. Our
  trainer's checkpoint write at ``max_steps`` is skipped (TRL runs with ``save_strategy="no"``):
  it is no part of training and its serialisation buffers would inflate the peak.
- MFU against the matmul peak in the run's precision (bf16 or fp32), measured at the start of
  the same run (``--peak-size``).

TRL's best configuration on this machine is found first by short runs of each of
``--trl-configs``; the fastest is then run ``--repeats`` times, alternating with ours (in
ABBA order, so a drift in machine load hits both sides alike). The report gives medians.

FLOP counting (attention-score FLOPs excluded on both sides; N = non-embedding parameters,
H = hidden size, V = vocabulary):

- useful: ``(6 N + 6 H V)`` per non-padding token, the same for both sides (the standard
  "every token through the trunk and the vocabulary projection" model FLOPs);
- actual: each side's real work: ``2 N x passes`` per trunk position, padding included
  (3 passes, 4 with gradient checkpointing), plus ``2 H V x passes`` per row that goes through
  the vocabulary projection. Ours projects only response-token rows, in 3 passes (logits, the
  hidden and the unembedding gradients, all computed in the forward). TRL's fused LM head
  projects every position on CPU (it compacts to the labelled rows only where Triton runs) and
  recomputes the logits in backward: 4 passes.
"""

from __future__ import annotations

import dataclasses
import json
import os
import random
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from common import (
    cli_or_worker,
    compute_device,
    current_rss_mib,
    format_table,
    jsonable,
    machine,
    matmul_peak,
    median,
    model_dims,
    peak_gpu_mib,
    peak_rss_mib,
    ratio,
    resolved_precision,
    run_and_write,
    run_worker,
)


@dataclass(frozen=True)
class Args:
    """Our SFT trainer against TRL's SFTTrainer: tokens/s, peak memory and MFU."""

    model: str = "gemma-3-270m"
    """Model both sides train: 'gemma-3-270m' (embedded), a local Hugging Face folder or a .gguf file."""
    examples: int = 128
    """Demonstrations in the benchmark set (a seeded Alpaca subset, each at most --max-len tokens)."""
    steps: int = 2
    """Optimizer steps per measured run, warm-up included."""
    warmup: int = 1
    """Steps at the start of each run that are not measured."""
    repeats: int = 3
    """Measured runs per side (ours and TRL best alternate)."""
    batch_size: int = 16
    """Demonstrations per optimizer step."""
    micro_batch_size: int = 8
    """Demonstrations per forward pass (TRL with packing: as many packed rows as hold about as many tokens)."""
    max_len: int = 512
    """Longest sequence in tokens: demonstrations are picked to fit; TRL max_length (the packed row length)."""
    explore_steps: int = 2
    """Optimizer steps per exploration run of each TRL configuration, warm-up included."""
    explore_batch_size: int | None = None
    """Demonstrations per optimizer step in the exploration (default: --micro-batch-size, one forward per step)."""
    trl_configs: tuple[str, ...] = (
        "trl-defaults",
        "no-checkpointing",
        "padding-free",
        "packing",
        "packing-full-loss",
        "packing-bf16-weights",
    )
    """TRL configurations to try (see TRL_VARIANTS); the fastest is 'TRL best'. One name skips the exploration."""
    precision: str = "auto"
    """Both sides: 'bf16' (ours: ``--ours-precision``; TRL: its bf16 configurations), 'fp32' (fp32 weights, no
    autocast; TRL configurations that differ only in bf16 settings collapse into one), or 'auto': bf16 where the
    hardware runs it natively, fp32 elsewhere (emulated bf16 products are ~100x slower on an AVX2-only CPU), as our
    trainers decide. The report's args hold the resolved value."""
    ours_precision: str = "bf16-weights"
    """Our bf16 scheme (when the precision is bf16): bf16-weights (bf16 model, fp32 master weights in the optimizer) or
    bf16 (autocast over fp32 weights)."""
    peak_size: int = 4096
    """Side of the square matmul (in the run's precision) timed for the machine's peak FLOP/s."""
    peak_repeats: int = 5
    """Timed repeats of the peak matmul (median)."""
    lr: float = 1e-5
    """Learning rate of both sides (speed does not depend on it)."""
    seed: int = 0
    """Seed of the demonstration subset and of both trainers."""
    quick: bool = False
    """Smoke run: a tiny random model, and smaller sizes wherever the command line keeps the default."""
    out: Path = Path(__file__).resolve().parent / "results" / "sft.json"
    """JSON report."""
    work_dir: Path | None = None
    """Keep data, worker logs and run folders here (default: a temporary folder, removed at the end)."""
    timeout: int = 1200
    """Seconds before a worker subprocess is killed (its configuration is recorded as failed)."""

    def validate(self) -> None:
        if not 0 <= self.warmup < min(self.steps, self.explore_steps):
            raise SystemExit("--warmup must be below --steps and --explore-steps (at least one measured step)")
        if self.batch_size % self.micro_batch_size or (self.explore_batch_size or 0) % self.micro_batch_size:
            raise SystemExit("--batch-size and --explore-batch-size must be multiples of --micro-batch-size")
        if self.examples < self.batch_size:
            raise SystemExit("--examples must be at least --batch-size")
        unknown = sorted(set(self.trl_configs) - set(TRL_VARIANTS))
        if unknown or not self.trl_configs:
            raise SystemExit(f"unknown --trl-configs {unknown}; known: {sorted(TRL_VARIANTS)}")


QUICK = dict(examples=32, steps=3, repeats=2, batch_size=8, micro_batch_size=4, peak_size=1024)
"""--quick: sizes used wherever the command line keeps the default."""


@dataclass(frozen=True)
class TRLVariant:
    """One TRL SFTConfig setting tried; the defaults are TRL's, except gradient checkpointing."""

    packing: bool = False
    """Best-fit-decreasing packing into rows of max_length tokens (implies padding-free)."""
    padding_free: bool = False
    """Flatten each micro-batch into one row, no padding."""
    completion_only_loss: bool | None = None
    """None: TRL's default, loss on the completion only for prompt-completion data (as ours)."""
    gradient_checkpointing: bool = False
    """Recompute activations in backward (TRL's SFTConfig default is True)."""
    bf16: bool = True
    """bf16 autocast (TRL's default)."""
    model_dtype: str = "float32"
    """Weights as loaded: float32 (fp32 master weights, as ours) or bfloat16 (pure bf16 training)."""


TRL_VARIANTS: dict[str, TRLVariant] = {
    "trl-defaults": TRLVariant(gradient_checkpointing=True),
    "no-checkpointing": TRLVariant(),
    "padding-free": TRLVariant(padding_free=True),
    "packing": TRLVariant(packing=True),
    "packing-full-loss": TRLVariant(packing=True, completion_only_loss=False),
    "packing-bf16-weights": TRLVariant(packing=True, model_dtype="bfloat16"),
    "packing-fp32": TRLVariant(packing=True, bf16=False),
}
"""TRL configurations the exploration can try, by name."""

PEAK_DTYPE = {"bf16": "bfloat16", "fp32": "float32"}
"""The matmul peak's dtype for each resolved precision."""


def trl_variant(name: str, precision: str) -> TRLVariant:
    """Configuration ``name`` in the run's precision: in fp32, no autocast and fp32 weights."""
    variant = TRL_VARIANTS[name]
    return variant if precision == "bf16" else dataclasses.replace(variant, bf16=False, model_dtype="float32")


def trl_configs(names: tuple[str, ...], precision: str) -> list[str]:
    """``names`` without those whose configuration in ``precision`` repeats an earlier one's (order kept)."""
    kept: list[str] = []
    for name in names:
        if all(trl_variant(name, precision) != trl_variant(other, precision) for other in kept):
            kept.append(name)
    return kept


def main(args: Args) -> None:
    args = _resolve_quick(args)
    args.validate()
    run_and_write(args, "bench-sft-", run_benchmark)


def run_benchmark(args: Args, work: Path) -> dict[str, Any]:
    """Prepare the data, measure the peak, explore TRL, run both sides alternately; the report."""
    host = machine()  # before we load the machine ourselves: its load average is other people's work
    model = str(_tiny_model(work)) if args.quick else args.model
    args = dataclasses.replace(args, precision=resolved_precision(args.precision))
    data = prepare_data(model, args, work)
    print(
        f"data: {data['examples']} demonstrations, {data['tokens']} tokens "
        f"(mean {data['mean_len']:.0f}, max {data['max_len']})"
    )
    peak = matmul_peak(PEAK_DTYPE[args.precision], args.peak_size, args.peak_repeats, device=compute_device())
    print(
        f"{args.precision} matmul peak ({args.peak_size}^3, {peak['threads']} threads): "
        f"{peak['flops_per_s'] / 1e9:.1f} GFLOP/s"
    )
    configs = trl_configs(args.trl_configs, args.precision)
    if configs != list(args.trl_configs):
        print(f"TRL configurations in {args.precision}: {', '.join(configs)} (the others differ only in bf16 settings)")
    args = dataclasses.replace(args, trl_configs=tuple(configs))
    base = {"model": model, "args": jsonable(args), "data": data, "work": str(work)}

    exploration = explore_trl(args, base, peak) if len(args.trl_configs) > 1 else []
    best = _fastest(exploration) if exploration else args.trl_configs[0]
    if best is None:
        raise SystemExit("every TRL configuration failed; see the errors above")
    print(f"TRL best: {best}")
    runs = run_alternating(args, base, best, peak)
    summary = {side: _aggregate(side_runs) for side, side_runs in runs.items()}
    summary["trl"]["config"] = best
    summary["ours_over_trl"] = {
        key: ratio(summary["ours"][key], summary["trl"][key])
        for key in ("tokens_per_s", "peak_rss_mib", "actual_mfu", "useful_mfu")
    }
    report = {
        "benchmark": "sft",
        "machine": {**host, "load_average_at_end": os.getloadavg()},  # our own runs included
        **{k: base[k] for k in ("model", "args", "data")},
        "peak": {args.precision: peak},
        "flop_counting": FLOP_COUNTING,
        "tokens_per_s_definition": TOKENS_DEFINITION,
        "trl_exploration": exploration,
        "trl_best": best,
        "summary": summary,
        "runs": runs,
    }
    print_report(report, args)
    return report


def explore_trl(args: Args, base: dict[str, Any], peak: dict[str, Any]) -> list[dict[str, Any]]:
    """One short run of each of ``args.trl_configs``; their tokens/s (or error), in order."""
    batch_size = args.explore_batch_size or args.micro_batch_size
    exploration = []
    for name in args.trl_configs:
        variant = dataclasses.asdict(trl_variant(name, args.precision))
        spec = {
            **base,
            "side": "trl",
            "name": name,
            "variant": variant,
            "steps": args.explore_steps,
            "args": {**base["args"], "batch_size": batch_size},
        }
        run = run_worker(SCRIPT, spec, Path(base["work"]) / "logs", f"explore-{name}", args.timeout)
        exploration.append(
            {
                "name": name,
                "settings": run.get("settings", variant),
                **_summarize_or_error(run, args.warmup, peak),
                "steps": run.get("steps"),
            }
        )
        print(f"explore TRL {name}: {_short(exploration[-1])}")
    return exploration


def run_alternating(args: Args, base: dict[str, Any], best: str, peak: dict[str, Any]) -> dict[str, list[dict]]:
    """``args.repeats`` runs of ours and of TRL ``best``, in ABBA order; each run's steps and summary."""
    runs: dict[str, list[dict]] = {"ours": [], "trl": []}
    for repeat in range(args.repeats):
        for side in ("ours", "trl") if repeat % 2 == 0 else ("trl", "ours"):
            spec = {**base, "side": side, "name": "ours" if side == "ours" else best, "steps": args.steps}
            if side == "trl":
                spec["variant"] = dataclasses.asdict(trl_variant(best, args.precision))
            run = run_worker(SCRIPT, spec, Path(base["work"]) / "logs", f"{side}-{repeat}", args.timeout)
            runs[side].append({**run, **_summarize_or_error(run, args.warmup, peak)})
            print(f"repeat {repeat} {side}: {_short(runs[side][-1])}")
    return runs


SCRIPT = Path(__file__).resolve()
"""This file: the workers run it with --worker."""

FLOP_COUNTING = (
    "Attention-score FLOPs excluded. N = non-embedding parameters, H = hidden, V = vocabulary. "
    "useful = (6N + 6HV) per non-padding token, the same for both sides. "
    "actual = 2N x trunk passes (3; 4 with gradient checkpointing) per trunk position including padding "
    "+ 2HV x head passes per row through the vocabulary projection: ours projects response-token rows only, "
    "3 passes (logits and both gradients in one chunked pass); TRL on CPU projects every position, 4 passes "
    "(its fused head recomputes the logits in backward). MFU = FLOP/s over the matmul peak measured in the run's "
    "precision (bf16 or fp32)."
)
TOKENS_DEFINITION = (
    "non-padding tokens (prompt + response) of the measured optimizer steps / their wall time; "
    "model load, data preparation and warm-up steps excluded"
)


# --- data ---------------------------------------------------------------------------------


def prepare_data(model: str, args: Args, work: Path) -> dict[str, Any]:
    """Write the same demonstrations as our JSONL and as TRL prompt-completion JSONL."""
    from instructgpt.data.importers import DEFAULT_PATHS, find_data_root, import_alpaca
    from instructgpt.data.jsonl import write_jsonl_atomic
    from instructgpt.data.render import render_example, resolve_template
    from instructgpt.models.loader import ensure_pad_token, load_tokenizer, resolve_model

    tokenizer = load_tokenizer(resolve_model(model))
    ensure_pad_token(tokenizer)
    if resolve_template(tokenizer, "auto") != "raw":
        raise SystemExit("this benchmark builds raw-text prompts for TRL; the model's tokenizer has a chat template")
    records = import_alpaca(find_data_root() / DEFAULT_PATHS["alpaca"])
    chosen, lengths = [], []
    for i in random.Random(args.seed).sample(range(len(records)), len(records)):
        record = records[i]
        example = render_example(
            tokenizer, record.prompt, record.response, "raw", SEPARATOR, args.max_len, args.max_len
        )
        if example is not None and len(example) <= args.max_len:
            chosen.append(record)
            lengths.append(len(example))
        if len(chosen) == args.examples:
            break
    demos, completions = work / "demos.jsonl", work / "trl.jsonl"
    write_jsonl_atomic(
        demos, [{"prompt": r.prompt, "response": r.response, "labeler_id": r.labeler_id} for r in chosen]
    )
    write_jsonl_atomic(completions, [{"prompt": r.prompt + SEPARATOR, "completion": r.response} for r in chosen])
    return {
        "source": f"alpaca ({DEFAULT_PATHS['alpaca']}), seeded subset",
        "examples": len(chosen),
        "tokens": sum(lengths),
        "mean_len": sum(lengths) / len(lengths),
        "max_len": max(lengths),
        "demos": str(demos),
        "trl_dataset": str(completions),
    }


SEPARATOR = "\n\n"
"""Our raw rendering's prompt/response separator (SFTConfig.separator's default)."""


def _tiny_model(work: Path) -> Path:
    from instructgpt.models.tiny import save_tiny

    return Path(save_tiny(str(work / "tiny-model")))


# --- workers (one subprocess per run) -------------------------------------------------------


def run_ours(spec: dict[str, Any]) -> dict[str, Any]:
    """Train with our ``train_sft``; per-step tokens and times from its metrics.jsonl."""
    import torch

    from instructgpt.models.loader import load_model
    from instructgpt.training import sft
    from instructgpt.training.batching import BatchPlan, shard_and_split
    from instructgpt.training.metrics import read_metrics

    args, steps = spec["args"], spec["steps"]
    model, tokenizer = load_model(spec["model"])
    after_load = current_rss_mib()
    epochs = steps * args["batch_size"] // spec["data"]["examples"] + 2  # stop at max_steps, before the final save
    config = sft.SFTConfig(
        model=spec["model"],
        data=(Path(spec["data"]["demos"]),),
        out_dir=Path(tempfile.mkdtemp(prefix="ours-", dir=spec["work"])),
        val_fraction=0.0,
        epochs=epochs,
        lr=args["lr"],
        batch_size=args["batch_size"],
        micro_batch_size=args["batch_size"],  # our best: one packed forward while the tokens fit micro_batch_tokens
        residual_dropout=0.0,  # TRL trains without dropout
        max_prompt_tokens=args["max_len"],
        max_response_tokens=args["max_len"],
        precision=args["ours_precision"] if args["precision"] == "bf16" else "fp32",
        seed=args["seed"],
        save_every=0,
        max_steps=steps,
        progress=False,
    )
    sft._save = lambda *_, **__: None  # see the module docstring: the checkpoint write is not training
    cpu_seconds = _count_cpu_time(sft, "sft_step")
    sft.train_sft(config, model, tokenizer)
    peak = peak_rss_mib()

    train, _ = sft.build_examples(config, tokenizer, verbose=False)
    lengths = [len(e) for e in train]
    plan = BatchPlan(len(train), config.batch_size, config.epochs, config.seed)
    records = [r for r in read_metrics(config.out_dir) if "sft/tokens" in r]
    step_list = []
    for step, record in enumerate(records):
        indices = plan.batch(step)
        micro = shard_and_split(
            indices, lengths, 0, 1, config.micro_batch_size, config.micro_batch_tokens, config.packing
        )
        targets = sum(sum(train[i].loss_mask[1:]) for i in indices)
        step_list.append(
            {
                "tokens": record["sft/tokens"],
                "positions": sum(_positions(config, [train[i] for i in m]) for m in micro),  # incl. padding
                "targets": targets,
                "projected": targets,  # only the rows that predict a response token reach the vocabulary projection
                "step_s": record["time/step_s"],
                "cpu_s": cpu_seconds[step],
            }
        )
    return {
        "side": "ours",
        "name": "ours",
        "settings": {
            "precision": OURS_PRECISION[config.precision],
            "optimizer": "torch.optim.AdamW (fused)",
            "batching": f"sorted by length within the step; packing={config.packing} "
            f"(rows of {config.pack_row_tokens} tokens), at most {config.micro_batch_tokens} tokens per forward",
            "loss_chunk_size": config.loss_chunk_size,
        },
        "steps": step_list,
        "batch": {
            "per_forward": f"up to {config.micro_batch_size} demonstrations / {config.micro_batch_tokens} tokens",
            "accumulation": "as many forwards as the token budget needs",
            "unit": "demonstrations",
        },
        "dataset": {"sequences": len(train), "tokens": sum(lengths)},
        "model_dims": model_dims(model),
        "passes": {"trunk": 3, "head": 3},
        "rss_after_load_mib": after_load,
        "peak_rss_mib": peak,
        "peak_gpu_mib": peak_gpu_mib(),
        "threads": torch.get_num_threads(),
    }


OURS_PRECISION = {
    "bf16": "bf16 autocast over fp32 weights",
    "bf16-weights": "bf16 weights and activations, fp32 master weights in the optimizer",
    "fp32": "fp32 weights and activations",
}
"""How each of our precision settings trains, for the report."""


def _positions(config: Any, examples: list) -> int:
    """Trunk positions one of our forwards computes, padding included."""
    from instructgpt.data.collate import pack

    if config.packing:
        return pack(examples, config.pack_row_tokens)["input_ids"].numel()
    return len(examples) * max(len(e) for e in examples)


def run_trl(spec: dict[str, Any]) -> dict[str, Any]:
    """Train with TRL's SFTTrainer in configuration ``spec['variant']``; time each step by callback."""
    import datasets
    import torch
    from transformers import AutoModelForCausalLM
    from trl import SFTTrainer
    from trl.kernels.chunked_logprob import _use_triton

    from instructgpt.models.loader import ensure_pad_token, load_tokenizer, resolve_model

    variant = TRLVariant(**spec["variant"])
    source = resolve_model(spec["model"])
    model = AutoModelForCausalLM.from_pretrained(source, dtype=getattr(torch, variant.model_dtype))
    tokenizer = load_tokenizer(source)
    ensure_pad_token(tokenizer, model)
    after_load = current_rss_mib()
    rows = [json.loads(line) for line in Path(spec["data"]["trl_dataset"]).read_text(encoding="utf-8").splitlines()]
    dataset = datasets.Dataset.from_list(rows)

    config = _trl_config(spec, variant)
    clock = _step_clock()
    compact = _use_triton(torch.device("cuda" if torch.cuda.is_available() else "cpu"))

    class CountingTrainer(SFTTrainer):
        """Records, per forward, what it ran: positions, real tokens, labelled and projected rows."""

        def training_step(self, model, inputs, num_items_in_batch=None):
            clock.forwards.append({"step": self.state.global_step, **_trl_batch_work(inputs, compact)})
            return super().training_step(model, inputs, num_items_in_batch)

    trainer = CountingTrainer(
        model=model, args=config, train_dataset=dataset, processing_class=tokenizer, callbacks=[clock]
    )
    prepared = trainer.train_dataset
    trainer.train()
    peak = peak_rss_mib()

    step_list = []
    for step, (begin, end) in enumerate(zip(clock.begin, clock.end)):
        forwards = [f for f in clock.forwards if f["step"] == step]
        step_list.append(
            {key: sum(f[key] for f in forwards) for key in ("tokens", "positions", "targets", "projected")}
        )
        step_list[-1].update(
            step_s=end - begin,
            cpu_s=clock.cpu_end[step] - clock.cpu_begin[step],
            interval_s=end - clock.end[step - 1] if step else None,
        )
    return {
        "side": "trl",
        "name": spec["name"],
        "settings": {
            **dataclasses.asdict(variant),
            "optimizer": config.optim,
            "max_length": config.max_length,
            "activation_checkpointing_effective": config.activation_checkpointing,
            "padding_free_effective": trainer.padding_free,
            "completion_only_loss_effective": trainer.completion_only_loss,
        },
        "steps": step_list,
        "batch": {
            "per_forward": config.per_device_train_batch_size,
            "accumulation": config.gradient_accumulation_steps,
            "unit": "packed rows" if variant.packing else "demonstrations",
        },
        "dataset": {"sequences": len(prepared), "tokens": sum(len(ids) for ids in prepared["input_ids"])},
        "model_dims": model_dims(model),
        "passes": {"trunk": 4 if variant.gradient_checkpointing else 3, "head": 4},
        "rss_after_load_mib": after_load,
        "peak_rss_mib": peak,
        "peak_gpu_mib": peak_gpu_mib(),
        "threads": torch.get_num_threads(),
    }


def _trl_config(spec: dict[str, Any], variant: TRLVariant) -> Any:
    """TRL's SFTConfig for ``variant``, with our optimizer, schedule and step size."""
    import torch
    from trl import SFTConfig

    args = spec["args"]
    # Packed rows hold max_len tokens; take as many per forward as hold about a micro-batch's tokens.
    per_forward = args["micro_batch_size"]
    if variant.packing:
        per_forward = max(1, round(args["micro_batch_size"] * spec["data"]["mean_len"] / args["max_len"]))
    return SFTConfig(
        output_dir=tempfile.mkdtemp(prefix="trl-", dir=spec["work"]),
        max_steps=spec["steps"],
        per_device_train_batch_size=per_forward,
        gradient_accumulation_steps=args["batch_size"] // args["micro_batch_size"],
        learning_rate=args["lr"],
        lr_scheduler_type="cosine",
        warmup_steps=0,
        adam_beta1=0.9,
        adam_beta2=0.95,
        weight_decay=0.0,
        max_grad_norm=1.0,
        bf16=variant.bf16,
        packing=variant.packing,
        padding_free=variant.padding_free,
        completion_only_loss=variant.completion_only_loss,
        activation_checkpointing=variant.gradient_checkpointing,  # the new name of gradient_checkpointing
        max_length=None if variant.padding_free and not variant.packing else args["max_len"],  # data already fits
        logging_steps=10**6,
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
        use_cpu=not torch.cuda.is_available(),
        seed=args["seed"],
    )


def _trl_batch_work(inputs: dict[str, Any], compact: bool) -> dict[str, int]:
    """What one TRL forward runs: trunk positions, non-padding tokens, labelled rows, projected rows."""
    positions = inputs["input_ids"].numel()
    labelled = int((inputs["labels"][:, 1:] != -100).sum())
    return {
        "positions": positions,
        # Padding-free rows carry no attention mask and no padding (pad_to_multiple_of is off on CPU).
        "tokens": int(inputs["attention_mask"].sum()) if "attention_mask" in inputs else positions,
        "targets": labelled,
        "projected": labelled if compact else inputs["labels"][:, 1:].numel(),
    }


def _step_clock() -> Any:
    """A TrainerCallback noting perf_counter() at the begin and end of every optimizer step."""
    from transformers import TrainerCallback

    class StepClock(TrainerCallback):
        def __init__(self) -> None:
            self.begin: list[float] = []
            self.end: list[float] = []
            self.cpu_begin: list[float] = []
            self.cpu_end: list[float] = []
            self.forwards: list[dict] = []  # filled by the trainer, one entry per forward

        def on_step_begin(self, args, state, control, **kwargs):
            self.begin.append(time.perf_counter())
            self.cpu_begin.append(time.process_time())

        def on_step_end(self, args, state, control, **kwargs):
            self.end.append(time.perf_counter())
            self.cpu_end.append(time.process_time())

    return StepClock()


def _count_cpu_time(module: Any, name: str) -> list[float]:
    """Wrap ``module.name`` so that each call appends the process CPU seconds it took to the returned list."""
    original, seconds = getattr(module, name), []

    def timed(*args, **kwargs):
        started = time.process_time()
        try:
            return original(*args, **kwargs)
        finally:
            seconds.append(time.process_time() - started)

    setattr(module, name, timed)
    return seconds


# --- aggregation and report -----------------------------------------------------------------


def summarize_run(run: dict[str, Any], warmup: int, peak: dict[str, Any]) -> dict[str, Any]:
    """A run's tokens/s, FLOP/s and MFU over its measured steps (ratio of sums, not a mean of rates)."""
    measured = run["steps"][warmup:]
    if not measured:
        return {"error": "no measured steps"}
    dims, passes = run["model_dims"], run["passes"]
    trunk, head = dims["non_embedding_params"], dims["hidden"] * dims["vocab"]
    seconds = sum(s["step_s"] for s in measured)
    tokens = sum(s["tokens"] for s in measured)
    actual = sum(
        2 * passes["trunk"] * trunk * s["positions"] + 2 * passes["head"] * head * s["projected"] for s in measured
    )
    useful = (6 * trunk + 6 * head) * tokens
    return {
        "tokens_per_s": tokens / seconds,
        "step_s": median([s["step_s"] for s in measured]),
        "tokens_per_step": tokens / len(measured),
        "padding_fraction": 1 - tokens / sum(s["positions"] for s in measured),
        "projected_per_token": sum(s["projected"] for s in measured) / tokens,
        "actual_flops_per_s": actual / seconds,
        "useful_flops_per_s": useful / seconds,
        "actual_mfu": actual / seconds / peak["flops_per_s"],
        "useful_mfu": useful / seconds / peak["flops_per_s"],
        "peak_rss_mib": run["peak_rss_mib"],
        "peak_gpu_mib": run.get("peak_gpu_mib"),
        "rss_after_load_mib": run["rss_after_load_mib"],
        "cpu_utilisation": sum(s["cpu_s"] for s in measured) / seconds / run["threads"],
        "measured_steps": len(measured),
    }


def _summarize_or_error(run: dict[str, Any], warmup: int, peak: dict[str, Any]) -> dict[str, Any]:
    return {"error": run["error"]} if "error" in run else summarize_run(run, warmup, peak)


SUMMARY_KEYS = (
    "tokens_per_s",
    "step_s",
    "tokens_per_step",
    "padding_fraction",
    "projected_per_token",
    "actual_mfu",
    "useful_mfu",
    "peak_rss_mib",
    "peak_gpu_mib",
    "rss_after_load_mib",
    "cpu_utilisation",
)


def _aggregate(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians over the repeats that succeeded, with the errors of those that did not."""
    ok = [r for r in runs if "error" not in r]
    summary: dict[str, Any] = {key: median([r[key] for r in ok]) for key in SUMMARY_KEYS}
    summary["tokens_per_s_each"] = [r["tokens_per_s"] for r in ok]
    summary["repeats_ok"] = len(ok)
    summary["errors"] = [r["error"] for r in runs if "error" in r]
    return summary


def _fastest(exploration: list[dict[str, Any]]) -> str | None:
    ok = [e for e in exploration if "error" not in e]
    return max(ok, key=lambda e: e["tokens_per_s"])["name"] if ok else None


def print_report(report: dict[str, Any], args: Args) -> None:
    precision = report["args"].get("precision", "bf16")  # reports from before --precision ran bf16
    data, summary, peak = report["data"], report["summary"], report["peak"][precision]
    print(f"\nSFT benchmark: {report['model']} on {report['machine']['cpu']} ({peak['threads']} threads)")
    print(
        f"{data['examples']} Alpaca demonstrations ({data['tokens']} tokens, mean {data['mean_len']:.0f}, <= "
        f"{args.max_len}); "
        f"{args.batch_size} per optimizer step, {args.micro_batch_size} per forward; "
        f"{args.steps} steps per run ({args.warmup} warm-up); {args.repeats} repeats per side"
    )
    print(f"{precision} matmul peak ({peak['size']}^3): {peak['flops_per_s'] / 1e9:.1f} GFLOP/s")
    if report["trl_exploration"]:
        print(
            f"\nTRL configurations tried (one run each: {args.explore_steps} steps of "
            f"{args.explore_batch_size or args.micro_batch_size} demonstrations, {args.warmup} warm-up):"
        )
        rows = [
            [
                e["name"],
                _settings(e["settings"]),
                _num(e.get("tokens_per_s")),
                _mib(e.get("peak_rss_mib")),
                _pct(e.get("cpu_utilisation")),
                e["error"].splitlines()[-1][:60] if "error" in e else "",
            ]
            for e in report["trl_exploration"]
        ]
        print(format_table(["config", "settings", "tokens/s", "peak RSS", "CPU use", "error"], rows))
    ours, trl, over = summary["ours"], summary["trl"], summary["ours_over_trl"]
    print(f"\nResult (median of {args.repeats} repeats; tokens/s = {TOKENS_DEFINITION}):")
    rows = [
        _result_row("ours", ours),
        _result_row(f"TRL best ({trl['config']})", trl),
        [
            "ours / TRL",
            _ratio(over["tokens_per_s"]),
            "",
            "",
            "",
            _ratio(over["peak_rss_mib"]),
            _ratio(over["actual_mfu"]),
            _ratio(over["useful_mfu"]),
            "",
        ],
    ]
    headers = [
        "side",
        "tokens/s",
        "step s",
        "tokens/step",
        "padding",
        "peak RSS",
        "MFU actual",
        "MFU useful",
        "CPU use",
    ]
    print(format_table(headers, rows))
    if trl_variant(trl["config"], precision).model_dtype != "float32":
        fp32 = _fastest([e for e in report["trl_exploration"] if e["settings"]["model_dtype"] == "float32"])
        print(
            f"note: TRL best trains in pure {TRL_VARIANTS[trl['config']].model_dtype} (weights and Adam state, no fp32 "
            f"master copy); ours keeps fp32 master weights. The fastest TRL run with fp32 master weights was "
            f"{fp32 or '-'} (exploration table)."
        )
    for side in ("ours", "trl"):
        if summary[side]["errors"]:
            print(
                f"{side}: {len(summary[side]['errors'])} failed run(s): {summary[side]['errors'][0].splitlines()[-1]}"
            )
    print(f"\nFLOPs: {FLOP_COUNTING}")


def _result_row(label: str, side: dict[str, Any]) -> list[str]:
    return [
        label,
        _num(side["tokens_per_s"]),
        _num(side["step_s"], 2),
        _num(side["tokens_per_step"]),
        _pct(side["padding_fraction"]),
        _mib(side["peak_rss_mib"]),
        _pct(side["actual_mfu"]),
        _pct(side["useful_mfu"]),
        _pct(side["cpu_utilisation"]),
    ]


def _settings(settings: dict[str, Any]) -> str:
    defaults = dataclasses.asdict(TRLVariant())
    changed = [f"{k}={v}" for k, v in settings.items() if k in defaults and v != defaults[k]]
    return ", ".join(changed) or "(bench defaults)"


def _num(value: float | None, digits: int = 0) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def _mib(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f} MiB"


def _ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def _short(entry: dict[str, Any]) -> str:
    if "error" in entry:
        return "FAILED " + entry["error"].splitlines()[-1][:200]
    return (
        f"{entry['tokens_per_s']:.0f} tokens/s, step {entry['step_s']:.2f} s, peak {entry['peak_rss_mib']:.0f} MiB, "
        f"CPU use {100 * entry['cpu_utilisation']:.0f}%"
    )


def _resolve_quick(args: Args) -> Args:
    if not args.quick:
        return args
    defaults = Args()
    return dataclasses.replace(args, **{k: v for k, v in QUICK.items() if getattr(args, k) == getattr(defaults, k)})


if __name__ == "__main__":
    cli_or_worker(Args, main, run_ours, run_trl)
