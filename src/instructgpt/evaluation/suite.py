"""``instructgpt eval``: every evaluation of the paper on any set of models, then the report.

Flow of :func:`run_eval`: for each distinct model source in turn (one in memory at a time) sample
responses to the held-out test prompts and run the automatic tasks; then judge every model's responses
against the baseline's and rate them (blind: :func:`instructgpt.evaluation.judges.blind_outcomes`,
:func:`~instructgpt.evaluation.judges.blind_ratings`); write
``results.json``, ``responses.jsonl`` (every model's win-rate responses), ``comparisons.jsonl``
(every judged pair, model names attached), ``report.html`` and ``figures.json`` into ``out_dir``.

Choices the paper leaves open, made here (all configurable):

- Held-out test prompts default to the 252 self-instruct user-oriented instructions (written
  not to be trained on); ``--prompts-file`` takes the pipeline's test split instead.
- Win-rate responses are greedy (``--win-temperature 0``) with at most 64 new tokens, rendered
  as in training; automatic tasks are greedy, cut at the first newline.
- The "prompted" baseline is the pretrained model with :data:`PROMPTED_PREFIX` (two instruction
  / response examples) before each win-rate prompt, its response cut at the next
  "Instruction:". Automatic tasks feed every model the same contexts, as the paper did.
- Names that share one source (``pretrained`` and ``prompted`` are the same weights) load it
  once and run the automatic tasks once: those tasks feed every model the same contexts, so the
  results are identical and are copied (marked ``same_as``); only the win-rate responses differ.
- Forward passes run under bf16 autocast where bf16 is native (``--precision auto``; weights
  and log-softmax stay fp32), as the trainers do; ``--precision fp32`` for exact fp32 numbers.
- Every task takes at most ``--limit`` items, drawn with a generator seeded by ``--seed`` and
  the task's name, so a task's subset does not depend on which other tasks run.
- Uncertainty: every figure measured on a sample carries its ``n`` and a 95% interval
  (``<metric>_ci``; see :mod:`instructgpt.evaluation.metrics`), and every task keeps its
  per-item scores (``per_item``). ``results["differences"]`` holds each model minus the baseline
  and PPO-ptx minus PPO on every per-item metric with a paired bootstrap interval
  (:mod:`instructgpt.evaluation.differences`), seeded by ``--seed``.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from instructgpt.config import check, to_dict
from instructgpt.evaluation.metrics import (
    finite,
    mean,
    mean_interval,
    named_rng,
    proportion_interval,
    subsample,
    win_rate,
)

TASKS = ("winrate", "truthfulqa", "toxicity", "bias", "nlp")
JUDGES = ("none", "reward-model", "labelers", "human", "llm")

PROMPTED_PREFIX = """Below are instructions, each followed by the response of a helpful, honest and harmless assistant.

Instruction: Give three tips for staying healthy.

Response: Eat a balanced diet with plenty of fruit and vegetables, exercise regularly, and get enough sleep.

Instruction: Translate "Where is the station?" into French.

Response: Où est la gare ?

Instruction: {prompt}

Response:"""
"""The few-shot prefix that puts a pretrained model in instruction-following mode ("prompted")."""


@dataclass
class EvalConfig:
    """Evaluate models: win rate against a baseline, TruthfulQA, RealToxicityPrompts, CrowS-Pairs / Winogender, NLP
    tasks; write a report."""

    models: tuple[str, ...] = ()
    """Models as NAME=MODEL (MODEL: 'gemma-3-270m', a Hugging Face folder, a .gguf file or a Hub id)."""
    baseline: str = "sft"
    """Name (from --models) of the model every other model is compared with."""
    prompted: tuple[str, ...] = ()
    """Names of models that get the few-shot instruction prefix on win-rate prompts (the 'prompted' baseline)."""
    tasks: tuple[str, ...] = TASKS
    """Which evaluations to run: winrate, truthfulqa, toxicity, bias, nlp."""
    judge: str = "none"
    """Win-rate and Likert judge: none, reward-model (--reward-model), labelers (--labelers), human
    (--human-comparisons) or llm (--judge-url, --judge-model)."""
    judge_url: str | None = None
    """OpenAI-compatible endpoint root of the llm judge, e.g. http://localhost:8000/v1 (key: $OPENAI_API_KEY)."""
    judge_model: str | None = None
    """Model name the llm judge sends to --judge-url."""
    reward_model: str | None = None
    """Reward model to judge with (a path given to --reward-model-loader)."""
    reward_model_loader: str = "instructgpt.evaluation.judges:reward_model_scorer"
    """module:callable that loads --reward-model and returns score(prompts, responses) -> list[float] (or an object with
    .score)."""
    labelers: str | None = None
    """module:callable returning the labelers to judge with: a list of labeler objects (an LLM labeler, held-out panel
    members) or a panel (its held-out members are used)."""
    human_comparisons: tuple[Path, ...] = ()
    """Comparison JSONL files exported by the labeling app (for --judge human)."""
    prompts_file: Path | None = None
    """Held-out test prompts (JSONL with a 'text' or 'prompt' field, and optionally 'set': the test set the prompt is
    from; two or more sets get their win rates reported apart too); default: self-instruct's 252 user-oriented
    instructions."""
    limit: int = 50
    """Items per task at most (prompts, questions, pairs), drawn with the seed."""
    task_limits: tuple[str, ...] = ()
    """Per-task overrides of --limit as TASK=N (e.g. truthfulqa=10: its questions cost the most)."""
    win_max_new_tokens: int = 64
    """Longest win-rate response, in tokens."""
    win_temperature: float = 0.0
    """Sampling temperature of win-rate responses (0 = greedy)."""
    nlp_prompting: str = "zeroshot"
    """Alignment-tax prompts: zeroshot (the bare context, as the paper's files hold it), fewshot (--nlp-shots
    demonstrations before it) or both (the paper reports both; few-shot results are keyed <task>_fewshot)."""
    nlp_shots: int = 3
    """Demonstrations per few-shot context, drawn (seeded) from the task's other bundled items; the paper does not say
    how many (GPT-3 used 16-64)."""
    auto_max_new_tokens: int = 32
    """Longest completion in the automatic tasks (cut at the first newline anyway)."""
    toxicity_prompts: tuple[str, ...] = ("basic", "respectful", "biased")
    """RealToxicityPrompts conditions: basic (the bare prompt), respectful and biased (the paper's instructions before
    it); each costs one generation per prompt."""
    toxicity_scorer: str = "auto"
    """auto (Perspective API when $PERSPECTIVE_API_KEY is set, else offline), perspective, offline, or a Hugging Face
    sequence-classification model (local folder or Hub id)."""
    truthfulqa_judge: str = "offline"
    """TruthfulQA truth judge: offline (logistic regression trained here) or a sequence-classification model."""
    truthfulqa_info_judge: str = "offline"
    """TruthfulQA informativeness judge: offline or a sequence-classification model."""
    classifier_labels: tuple[str, ...] = ()
    """The label that means yes for classifier scorers, as ROLE=LABEL (name or index; roles toxicity, truth, info);
    default: a label named toxic / yes / true / informative..., else the second of two."""
    truthfulqa_version: str = "v1"
    """TruthfulQA release: v1 (817 questions, Oct 2021, the paper's), v0 or current."""
    paper_reference: bool = True
    """Score the paper's bundled samples (GPT-3 / SFT / PPO / PPO-ptx at 1.3B, 6B, 175B) with the same code, judges
    and scorer, and show them beside ours; a classifier judge or scorer reads all 3,600 samples of each task (minutes on
    a CPU for a base-size model), the Perspective scorer none (their stored scores are used)."""
    ppo_metrics: tuple[str, ...] = ()
    """PPO metrics logs for the report's curves, as NAME=metrics.jsonl."""
    rm_metrics: tuple[str, ...] = ()
    """Reward-model results for the report, as NAME=file (.json summary or .jsonl metrics log)."""
    samples: int = 6
    """Prompts shown side by side in the report."""
    batch_size: int = 8
    """Sequences per forward pass."""
    precision: str = "auto"
    """Model forward passes: fp32, bf16 (autocast, fp32 weights), bf16-weights (each model loaded in bf16, no autocast,
    where bf16 is native; else fp32) or auto (bf16 where native: ~2.9x faster generation on a bf16 CPU). bf16-weights
    generates another 1.25-1.4x faster on a CPU (every element-wise op in one dtype; the matmuls see the same bf16
    weights), at the price of a bf16 residual stream; the log-softmax stays fp32 either way. Models handed in memory
    are not cast: they run under bf16 autocast instead."""
    template: str = "auto"
    """Prompt rendering of every task, generated or scored: raw, chat or auto (chat if the tokenizer has a template)."""
    seed: int = 0
    """Seed of the subsampling, the blind orders (pairs, ratings) and sampling."""
    data_root: Path | None = None
    """Bundled data folder (default: $INSTRUCTGPT_DATA or a shared/data folder above the working directory)."""
    out_dir: Path = Path("runs/eval")
    """Where results.json, comparisons.jsonl, report.html and figures.json go."""

    def validate(self) -> None:
        check(bool(self.models), "models", "give at least one --models NAME=MODEL")
        names = [m.partition("=")[0] for m in self.models]
        for spec in self.models:
            check("=" in spec and all(spec.partition("=")[::2]), "models", f"expected NAME=MODEL, got {spec!r}")
        check(len(set(names)) == len(names), "models", "model names must be unique")
        check(
            set(self.tasks) <= set(TASKS),
            "tasks",
            f"unknown task(s) {sorted(set(self.tasks) - set(TASKS))}; known: {', '.join(TASKS)}",
        )
        check(set(self.prompted) <= set(names), "prompted", f"names must be among --models ({', '.join(names)})")
        check(self.judge in JUDGES, "judge", f"must be one of {', '.join(JUDGES)}")
        check(self.limit >= 1, "limit", "must be at least 1")
        for spec in self.task_limits:
            task, _, n = spec.partition("=")
            check(
                task in TASKS and n.isdigit() and int(n) >= 1,
                "task_limits",
                f"expected TASK=N with a known task and N >= 1, got {spec!r}",
            )
        from instructgpt.evaluation.toxicity import CONDITIONS

        check(
            bool(self.toxicity_prompts) and set(self.toxicity_prompts) <= set(CONDITIONS),
            "toxicity_prompts",
            f"expected one or more of {', '.join(CONDITIONS)}, got {', '.join(self.toxicity_prompts) or 'none'}",
        )
        check(
            self.nlp_prompting in ("zeroshot", "fewshot", "both"),
            "nlp_prompting",
            f"must be zeroshot, fewshot or both, got {self.nlp_prompting!r}",
        )
        check(
            1 <= self.nlp_shots <= 20,
            "nlp_shots",
            f"must be 1 to 20 (demonstrations per context), got {self.nlp_shots}",
        )
        check(self.truthfulqa_version in ("v0", "v1", "current"), "truthfulqa_version", "must be v0, v1 or current")
        check(
            self.precision in ("auto", "bf16", "bf16-weights", "fp32"),
            "precision",
            "must be auto, bf16, bf16-weights or fp32",
        )
        for field_name, value in (
            ("toxicity_scorer", self.toxicity_scorer),
            ("truthfulqa_judge", self.truthfulqa_judge),
            ("truthfulqa_info_judge", self.truthfulqa_info_judge),
        ):
            keywords = "auto, perspective, offline" if field_name == "toxicity_scorer" else "offline"
            check(
                value in keywords.split(", ") or Path(value).is_dir() or "/" in value,
                field_name,
                f"must be {keywords}, a local model folder or a Hub id (owner/name), got {value!r}",
            )
        for spec in self.classifier_labels:
            role, _, label = spec.partition("=")
            check(
                role in ("toxicity", "truth", "info") and bool(label),
                "classifier_labels",
                f"expected ROLE=LABEL with ROLE toxicity, truth or info, got {spec!r}",
            )
        if "winrate" in self.tasks and self.judge != "none":
            check(self.baseline in names, "baseline", f"{self.baseline!r} is not among --models ({', '.join(names)})")
        check(
            self.judge != "reward-model" or self.reward_model is not None,
            "reward_model",
            "--judge reward-model needs --reward-model PATH",
        )
        check(
            self.judge != "labelers" or self.labelers is not None,
            "labelers",
            "--judge labelers needs --labelers module:callable",
        )
        check(
            self.judge != "human" or bool(self.human_comparisons),
            "human_comparisons",
            "--judge human needs --human-comparisons FILE",
        )
        check(
            self.judge != "llm" or (self.judge_url is not None and self.judge_model is not None),
            "judge_url",
            "--judge llm needs --judge-url URL and --judge-model NAME",
        )
        for spec in self.ppo_metrics + self.rm_metrics:
            check("=" in spec, "ppo_metrics/rm_metrics", f"expected NAME=PATH, got {spec!r}")

    def nlp_promptings(self) -> tuple[str, ...]:
        """The promptings --nlp-prompting selects: ("zeroshot",), ("fewshot",) or both."""
        return ("zeroshot", "fewshot") if self.nlp_prompting == "both" else (self.nlp_prompting,)

    def limit_of(self, task: str) -> int:
        """The item limit of ``task``: its --task-limits entry, else --limit."""
        overrides = {t: int(n) for t, _, n in (s.partition("=") for s in self.task_limits)}
        return overrides.get(task, self.limit)

    def model_specs(self) -> dict[str, str]:
        return dict(spec.split("=", 1) for spec in self.models)


def task_rng(seed: int, task: str) -> np.random.Generator:
    """A generator per (seed, task): a task's subset does not depend on the other tasks."""
    return named_rng(seed, task)


# ---------------------------------------------------------------- inputs


def load_win_prompts(config: EvalConfig, root: Path) -> tuple[list[str], list[str]]:
    """The held-out test prompts (at most ``limit``, seeded) and the test set each is from: a prompts file's
    'set' field ('' where it has none), 'self-instruct' for the default prompts."""
    if config.prompts_file is not None:
        pairs = _prompts_from_file(Path(config.prompts_file))
    else:
        from instructgpt.data.importers import instruction_prompt

        path = root / "self-instruct" / "human_eval" / "user_oriented_instructions.jsonl"
        pairs = []
        for line in path.read_text(encoding="utf-8").splitlines():
            record = json.loads(line)
            pairs.append((instruction_prompt(record["instruction"], record["instances"][0]["input"]), "self-instruct"))
    chosen = subsample(pairs, config.limit_of("winrate"), task_rng(config.seed, "winrate"))
    return [text for text, _ in chosen], [name for _, name in chosen]


def _prompts_from_file(path: Path) -> list[tuple[str, str]]:
    from instructgpt.data.jsonl import DataError, Problem, iter_objects
    from instructgpt.data.render import as_text

    prompts, problems = [], []
    for item in iter_objects(path):
        if isinstance(item, Problem):
            problems.append(item)
            continue
        line, record = item
        value = record.get("text", record.get("prompt"))
        if not value:
            problems.append(Problem(str(path), line, "text", "needs a non-empty 'text' or 'prompt' field"))
            continue
        if not isinstance(record.get("set", ""), str):
            problems.append(Problem(str(path), line, "set", "must be a string (the test set the prompt is from)"))
            continue
        prompts.append((as_text(value), record.get("set", "")))
    if problems:
        raise DataError(problems)
    return prompts


@dataclass
class Inputs:
    """Everything the automatic tasks need, loaded once for all models."""

    win_prompts: list[str] = field(default_factory=list)
    win_sets: list[str] = field(default_factory=list)
    """The test set each win-rate prompt is from (win rates are also reported per set when there are several)."""
    questions: list = field(default_factory=list)
    truth_judges: tuple | None = None
    rtp_prompts: list[str] = field(default_factory=list)
    toxicity_scorer: Any = None
    bias_pairs: dict = field(default_factory=dict)
    nlp_items: dict = field(default_factory=dict)


def load_inputs(config: EvalConfig, root: Path) -> Inputs:
    from instructgpt.evaluation import bias, nlp, toxicity, truthfulqa
    from instructgpt.evaluation.classifier import labels_by_role

    inputs = Inputs()
    if "winrate" in config.tasks:
        inputs.win_prompts, inputs.win_sets = load_win_prompts(config, root)
    if "truthfulqa" in config.tasks:
        inputs.questions = subsample(
            truthfulqa.load_questions(root, config.truthfulqa_version),
            config.limit_of("truthfulqa"),
            task_rng(config.seed, "truthfulqa"),
        )
        inputs.truth_judges = truthfulqa.make_judges(
            root, config.truthfulqa_judge, config.truthfulqa_info_judge, labels_by_role(config.classifier_labels)
        )
    if "toxicity" in config.tasks:
        records = toxicity.sample_prompts(
            toxicity.read_rtp(root), config.limit_of("toxicity"), task_rng(config.seed, "toxicity")
        )
        inputs.rtp_prompts = [r["prompt"]["text"].strip() for r in records]
        inputs.toxicity_scorer = toxicity.make_scorer(
            config.toxicity_scorer, root, labels_by_role(config.classifier_labels).get("toxicity")
        )
    if "bias" in config.tasks:
        inputs.bias_pairs = {
            "crows_pairs": subsample(
                bias.crows_pairs(root), config.limit_of("bias"), task_rng(config.seed, "crows_pairs")
            ),
            "winogender": subsample(
                bias.winogender_pairs(root), config.limit_of("bias"), task_rng(config.seed, "winogender")
            ),
        }
    if "nlp" in config.tasks:  # the same items zero-shot and few-shot; demonstrations from all of a task's items
        for task in nlp.TASKS:
            pool = nlp.load_items(root, task)
            items = subsample(pool, config.limit_of("nlp"), task_rng(config.seed, task))
            for prompting in config.nlp_promptings():
                inputs.nlp_items[nlp.task_key(task, prompting)] = (
                    items
                    if prompting == "zeroshot"
                    else nlp.fewshot_items(task, items, pool, config.nlp_shots, config.seed)
                )
    return inputs


# ---------------------------------------------------------------- per model


def win_responses(model: Any, tokenizer: Any, prompts: Sequence[str], prompted: bool, config: EvalConfig) -> list[str]:
    """Responses to the test prompts, rendered as in training (or after the few-shot prefix)."""
    from instructgpt.models.generate import generate
    from instructgpt.rollout.forward import active_autocast

    autocast = active_autocast(model)  # generate() opens its own autocast context: hand it the one in force
    if prompted:
        texts = [PROMPTED_PREFIX.format(prompt=p) for p in prompts]
        out = generate(
            model,
            tokenizer,
            texts,
            config.win_max_new_tokens,
            config.win_temperature,
            template="raw",
            separator="",
            batch_size=config.batch_size,
            seed=config.seed,
            autocast=autocast,
        )
        return [o.split("\nInstruction:", 1)[0].strip() for o in out]
    return generate(
        model,
        tokenizer,
        list(prompts),
        config.win_max_new_tokens,
        config.win_temperature,
        template=config.template,
        batch_size=config.batch_size,
        seed=config.seed,
        autocast=autocast,
    )


def evaluate_model(
    model: Any,
    tokenizer: Any,
    name: str,
    inputs: Inputs,
    config: EvalConfig,
    log: Callable[[str], None],
    tasks: Sequence[str] | None = None,
    progress: Any = None,
) -> dict:
    """The selected tasks (default: every task of the config) on one model; returns its results
    (and win-rate responses). ``progress`` (a tqdm bar) advances by one per task."""
    from instructgpt.evaluation.bias import evaluate_bias
    from instructgpt.evaluation.nlp import evaluate_nlp
    from instructgpt.evaluation.toxicity import evaluate_toxicity
    from instructgpt.evaluation.truthfulqa import evaluate_truthfulqa

    common = {"batch_size": config.batch_size}
    steps = {
        "winrate": lambda: win_responses(model, tokenizer, inputs.win_prompts, name in config.prompted, config),
        "truthfulqa": lambda: evaluate_truthfulqa(
            model,
            tokenizer,
            inputs.questions,
            inputs.truth_judges,
            max_new_tokens=config.auto_max_new_tokens,
            template=config.template,
            **common,
        ),
        "toxicity": lambda: evaluate_toxicity(
            model,
            tokenizer,
            inputs.rtp_prompts,
            inputs.toxicity_scorer,
            max_new_tokens=config.auto_max_new_tokens,
            template=config.template,
            conditions=config.toxicity_prompts,
            **common,
        ),
        "bias": lambda: evaluate_bias(model, tokenizer, inputs.bias_pairs, template=config.template, **common),
        "nlp": lambda: evaluate_nlp(
            model,
            tokenizer,
            inputs.nlp_items,
            max_new_tokens=config.auto_max_new_tokens,
            template=config.template,
            seed=config.seed,
            **common,
        ),
    }
    out: dict = {"seconds": {}, "cpu_seconds": {}}  # wall and CPU time (all threads) per task
    for task in config.tasks if tasks is None else tasks:
        if progress is not None:
            progress.set_postfix_str(f"{name}: {task}")
        start, cpu = time.perf_counter(), time.process_time()
        out[task] = steps[task]()
        out["seconds"][task] = round(time.perf_counter() - start, 2)
        out["cpu_seconds"][task] = round(time.process_time() - cpu, 2)
        log(f"eval: {name}: {task} done in {out['seconds'][task]:.1f} s ({out['cpu_seconds'][task]:.1f} s CPU)")
        if progress is not None:
            progress.update(1)
    return out


def plan_sources(config: EvalConfig, loaded: dict[str, tuple[Any, Any]] | None = None) -> list[tuple[str, list[str]]]:
    """Model names grouped by source, in --models order: ``[(source, [names])]``. Each source is
    loaded once; its first name runs the automatic tasks, every name gets win-rate responses.
    Models given in memory (``loaded``) group by object identity, not by source."""
    groups: dict[Any, tuple[str, list[str]]] = {}
    for name, source in config.model_specs().items():
        key = ("loaded", id(loaded[name][0])) if loaded and name in loaded else source
        groups.setdefault(key, (source, []))[1].append(name)
    return list(groups.values())


def evaluate_models(
    config: EvalConfig, inputs: Inputs, loaded: dict[str, tuple[Any, Any]] | None, log: Callable[[str], None]
) -> tuple[dict, dict[str, list[str]]]:
    """Every model's task results and win-rate responses, one source in memory at a time, with a
    progress bar over (model, task) steps."""
    from tqdm.auto import tqdm

    auto = [t for t in config.tasks if t != "winrate"]
    plan = plan_sources(config, loaded)
    total = sum(len(auto) + ("winrate" in config.tasks) * len(names) for _, names in plan)
    per_model: dict = {}
    responses: dict[str, list[str]] = {}
    with tqdm(total=total, desc="eval", unit="task", file=sys.stderr, dynamic_ncols=True) as progress:
        quiet = lambda message: progress.write(message, file=sys.stderr) if log is _stderr else log(message)  # noqa: E731
        for source, names in plan:
            held = next((loaded[n] for n in names if loaded and n in loaded), None)
            model, tokenizer = held or _load(source, _weights_dtype(config.precision))
            with _autocast(model, config.precision):
                _evaluate_source(model, tokenizer, names, inputs, config, auto, per_model, responses, progress, quiet)
            del model, tokenizer
    order = list(config.model_specs())
    return {n: per_model[n] for n in order}, {n: responses[n] for n in order if n in responses}


def _autocast(model: Any, precision: str):
    """bf16 autocast as ``precision`` says; none for a model already held in bf16 (``bf16-weights``)."""
    import torch

    from instructgpt.rollout.forward import autocast
    from instructgpt.training.lm import resolve_precision

    parameter = next(model.parameters())
    held_in_bf16 = precision == "bf16-weights" and parameter.dtype == torch.bfloat16
    return autocast(parameter.device, None if held_in_bf16 else resolve_precision(precision, parameter.device))


def _weights_dtype(precision: str):
    """The dtype to load a model in: bf16 for ``bf16-weights`` where bf16 is native, else None (fp32)."""
    import torch

    from instructgpt.training.lm import resolve_precision

    if precision != "bf16-weights":
        return None
    return resolve_precision(precision, torch.device("cuda" if torch.cuda.is_available() else "cpu"))


def _evaluate_source(model, tokenizer, names, inputs, config, auto, per_model, responses, progress, quiet) -> None:
    """The automatic tasks once (first name), win-rate responses per distinct prompting."""
    first = names[0]
    per_model[first] = evaluate_model(model, tokenizer, first, inputs, config, quiet, tasks=auto, progress=progress)
    for other in names[1:]:
        per_model[other] = {**per_model[first], "same_as": first}
    if "winrate" in config.tasks:
        by_prompted: dict[bool, list[str]] = {}  # two unprompted names of one source: same responses
        for name in names:
            prompted = name in config.prompted
            if prompted not in by_prompted:
                result = evaluate_model(
                    model, tokenizer, name, inputs, config, quiet, tasks=("winrate",), progress=progress
                )
                by_prompted[prompted] = result["winrate"]
                per_model[name]["seconds"] = {**per_model[name]["seconds"], "winrate": result["seconds"]["winrate"]}
                per_model[name]["cpu_seconds"] = {
                    **per_model[name]["cpu_seconds"],
                    "winrate": result["cpu_seconds"]["winrate"],
                }
            else:
                progress.update(1)
            responses[name] = by_prompted[prompted]


# ---------------------------------------------------------------- judging


def make_judge(config: EvalConfig):
    """The judge named by the config (None for ``--judge none``)."""
    from instructgpt.evaluation import judges

    if config.judge == "none":
        return None
    if config.judge == "human":
        return judges.HumanComparisonsJudge(config.human_comparisons)
    if config.judge == "llm":
        from instructgpt.labelers.llm import ChatLabeler

        labeler = ChatLabeler(base_url=config.judge_url, model=config.judge_model)
        return judges.LabelerJudge(
            [labeler],
            name=f"llm {config.judge_model}",
            description=f"the LLM {config.judge_model} at {config.judge_url} (OpenAI-compatible chat endpoint; the "
            "paper's labeling instructions; temperature 0)",
        )
    if config.judge == "labelers":
        labelers = judges.load_callable(config.labelers)()
        if callable(getattr(labelers, "members", None)):  # a panel: its held-out labelers judge
            labelers = labelers.members("held_out")
        return judges.LabelerJudge(labelers, name=config.labelers)
    loaded = judges.load_callable(config.reward_model_loader)(config.reward_model)
    score = getattr(loaded, "score", loaded)
    return judges.RewardModelJudge(score, name=f"reward model {config.reward_model}")


def judge_win_rates(
    judge: Any,
    prompts: Sequence[str],
    responses: dict[str, list[str]],
    baseline: str,
    rng: np.random.Generator,
    rating_rng: np.random.Generator | None = None,
    sets: Sequence[str] | None = None,
) -> tuple[dict, list[dict]]:
    """Win rate of each model against the baseline, Likert and metadata if the judge rates.

    Both are blind: pairs in a random order drawn from ``rng``, every model's outputs to a prompt
    in a random order drawn from ``rating_rng`` (default: ``rng``, after the pairs). With ``sets``
    (the test set of each prompt) naming two or more sets, ``by_set`` gives each set's win rates too:
    test sets from different distributions are reported apart, not only pooled."""
    from instructgpt.evaluation.judges import blind_outcomes, blind_ratings

    result: dict = {
        "judge": judge.name,
        "judge_description": judge.description,
        "baseline": baseline,
        "n_prompts": len(prompts),
        "per_model": {},
    }
    sets = list(sets) if sets is not None else [""] * len(prompts)
    names = list(dict.fromkeys(sets))
    if len(names) > 1:
        result["by_set"] = {s: {"n_prompts": sets.count(s), "per_model": {}} for s in names}
    records = []
    for name, texts in responses.items():
        if name == baseline:
            continue
        outcomes = blind_outcomes(judge, prompts, texts, responses[baseline], rng)
        result["per_model"][name] = win_rate(outcomes).to_dict()
        for s, part in result.get("by_set", {}).items():
            part["per_model"][name] = win_rate([o for o, t in zip(outcomes, sets) if t == s]).to_dict()
        records += [
            {
                "prompt": p,
                "set": t,
                "model": name,
                "baseline": baseline,
                "response": r,
                "baseline_response": b,
                "outcome": o,
                "judge": judge.name,
            }
            for p, t, r, b, o in zip(prompts, sets, texts, responses[baseline], outcomes)
        ]
    if getattr(judge, "can_rate", True) and (
        callable(getattr(judge, "rate_outputs", None)) or callable(getattr(judge, "rate", None))
    ):
        by_model = blind_ratings(judge, prompts, responses, rating_rng if rating_rng is not None else rng)
        result["likert"], result["metadata"], result["likert_ci"], result["metadata_ci"] = _ratings(by_model)
        result["rating_order"] = "random per prompt, model names hidden"
    return result, records


def _ratings(by_model: dict[str, list]) -> tuple[dict, dict, dict, dict]:
    """Likert means and metadata rates per model, and their ``{"n", "ci"}`` (t for the Likert
    mean, Wilson for a rate)."""
    from instructgpt.data.schemas import METADATA_FLAGS

    likert, metadata, likert_ci, metadata_ci = {}, {}, {}, {}
    for name, ratings in by_model.items():
        scores = [r.likert for r in ratings if r.likert is not None]
        likert[name], likert_ci[name] = mean(scores), {"n": len(scores), "ci": mean_interval(scores)}
        flags = {
            flag: [float(r.metadata[flag]) for r in ratings if flag in r.metadata]
            for flag in METADATA_FLAGS
            if any(flag in r.metadata for r in ratings)
        }
        metadata[name] = {flag: mean(values) for flag, values in flags.items()}
        metadata_ci[name] = {
            flag: {"n": len(values), "ci": proportion_interval(values)} for flag, values in flags.items()
        }
    return likert, metadata, likert_ci, metadata_ci


# ---------------------------------------------------------------- the run


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def run_eval(
    config: EvalConfig,
    judge: Any = None,
    loaded: dict[str, tuple[Any, Any]] | None = None,
    log: Callable[[str], None] = _stderr,
) -> dict:
    """Run the evaluations and write results and report; returns the results dict.

    ``judge`` overrides ``config.judge`` (e.g. a :class:`~instructgpt.evaluation.judges.RewardModelJudge`
    around a reward model already in memory); ``loaded`` maps model names to ``(model, tokenizer)``
    already in memory, in place of loading ``config.models``.
    """
    from instructgpt.data.importers import find_data_root
    from instructgpt.data.jsonl import write_jsonl_atomic
    from instructgpt.evaluation.differences import model_pairs, paired_differences
    from instructgpt.evaluation.report import rm_summary, write_report

    config.validate()
    root = Path(config.data_root) if config.data_root else find_data_root()
    out_dir = Path(config.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    log("eval: preparing data and offline scorers")
    inputs = load_inputs(config, root)
    results: dict = {"config": to_dict(config), "models": config.model_specs()}
    results["per_model"], responses = evaluate_models(config, inputs, loaded, log)
    results["differences"] = paired_differences(
        results["per_model"], model_pairs(results["per_model"], config.baseline), config.seed
    )
    results.update(_task_tables(results["per_model"], inputs, root, config))
    rm_paths = _named_paths(config.rm_metrics)
    if rm_paths:
        results["rm_accuracy"] = {name: rm_summary(path) for name, path in rm_paths.items()}
    if responses:
        write_jsonl_atomic(
            out_dir / "responses.jsonl",
            [
                {"prompt": p, "set": t, "model": n, "response": r[i]}
                for n, r in responses.items()
                for i, (p, t) in enumerate(zip(inputs.win_prompts, inputs.win_sets))
            ],
        )
        results["samples"] = [
            {"prompt": p, "responses": {n: r[i] for n, r in responses.items()}}
            for i, p in enumerate(inputs.win_prompts[: config.samples])
        ]
        judge = judge if judge is not None else make_judge(config)
        if judge is not None:
            results["winrate"] = _judge_or_export(
                judge, inputs.win_prompts, inputs.win_sets, responses, config, out_dir, write_jsonl_atomic, log
            )
    (out_dir / "results.json").write_text(
        json.dumps(finite(results), indent=1, ensure_ascii=False, default=str), encoding="utf-8"
    )
    report = write_report(results, out_dir, ppo_metrics=_named_paths(config.ppo_metrics), rm_metrics=rm_paths)
    log(f"eval: results {out_dir / 'results.json'}, report {report}")
    return results


def _judge_or_export(judge, prompts, sets, responses, config, out_dir, write_jsonl_atomic, log) -> dict:
    try:
        winrate, records = judge_win_rates(
            judge,
            prompts,
            responses,
            config.baseline,
            task_rng(config.seed, "blind-order"),
            task_rng(config.seed, "blind-rating-order"),
            sets,
        )
    except KeyError as err:  # human judge: pairs not labeled yet -> files for the labeling app
        folder = export_for_labeling(prompts, responses, config.baseline, out_dir / "to_label", write_jsonl_atomic)
        log(f"eval: {err.args[0]}; wrote prompts and outputs for the labeling app to {folder}")
        return {"judge": judge.name, "pending": str(folder)}
    write_jsonl_atomic(out_dir / "comparisons.jsonl", records)
    return winrate


def export_for_labeling(
    prompts: Sequence[str], responses: dict[str, list[str]], baseline: str, folder: Path, write_jsonl_atomic
) -> Path:
    """One comparison project per model, in the labeling app's import formats: ``<model>/prompts.jsonl``
    (prompt records) and ``<model>/outputs.jsonl`` (the model's and the baseline's output per prompt;
    the app shows them in random order without model names and exports Comparison records)."""
    ids = [f"eval-{i:04d}" for i in range(len(prompts))]
    for name, texts in responses.items():
        if name == baseline:
            continue
        write_jsonl_atomic(
            folder / name / "prompts.jsonl",
            [{"id": i, "text": p, "user_id": "eval", "source": "api"} for i, p in zip(ids, prompts)],
        )
        outputs = []
        for i, ours, base in zip(ids, texts, responses[baseline]):
            if ours.strip() and base.strip() and ours != base:  # identical or empty outputs: nothing to choose
                outputs += [
                    {"prompt_id": i, "response": ours, "model": name},
                    {"prompt_id": i, "response": base, "model": baseline},
                ]
        write_jsonl_atomic(folder / name / "outputs.jsonl", outputs)
    return folder


def _load(source: str, dtype: Any = None) -> tuple[Any, Any]:
    from instructgpt.models.loader import load_model

    return load_model(source, dtype=dtype)


def _named_paths(specs: Sequence[str]) -> dict[str, Path]:
    return {name: Path(path) for name, path in (s.split("=", 1) for s in specs)}


def _task_tables(per_model: dict, inputs: Inputs, root: Path, config: EvalConfig) -> dict:
    """Scorer provenance and reference numbers that do not depend on the models."""
    out: dict = {}
    if inputs.truth_judges is not None:
        from instructgpt.evaluation.truthfulqa import paper_reference as truthfulqa_reference
        from instructgpt.evaluation.truthfulqa import paper_samples_agreement

        truth, info = inputs.truth_judges
        out["truthfulqa_judge"] = {
            "truth_judge": truth.name,
            "info_judge": info.name,
            "truth_heldout_accuracy": truth.heldout_accuracy,
            "info_heldout_accuracy": info.heldout_accuracy,
            "heldout_answers": truth.heldout_n,
            "paper_samples": paper_samples_agreement(root, truth, info),
        }
        if config.paper_reference:
            out["truthfulqa_paper_reference"] = truthfulqa_reference(root, truth, info)
    if inputs.toxicity_scorer is not None:
        from instructgpt.evaluation.toxicity import paper_reference as toxicity_reference

        out["toxicity_scorer"] = {
            "name": inputs.toxicity_scorer.name,
            "agreement": getattr(inputs.toxicity_scorer, "agreement", {}),
        }
        if config.paper_reference:
            out["toxicity_paper_reference"] = toxicity_reference(root, inputs.toxicity_scorer)
    if inputs.nlp_items and config.paper_reference:
        from instructgpt.evaluation.nlp import paper_reference, paper_reference_intervals

        out["nlp_paper_reference"] = paper_reference(root)
        out["nlp_paper_reference_ci"] = paper_reference_intervals(root, config.seed)
    return out
