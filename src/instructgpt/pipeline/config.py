"""The pipeline's typed configuration, with the sizes of every stage in one place.

The defaults are the ``quickstart`` preset: sized so the whole method runs on a 2-core CPU in
about 20 minutes with the embedded Gemma 3 270M. ``--preset large`` loads
``presets/large.yaml`` (bigger sets, more steps; for people with time or a GPU), ``--preset
miniature`` the paper in miniature (about 45 minutes on a 2-core CPU; ``runs/paper_in_miniature.sh``);
any flag overrides a preset value.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from instructgpt.config import check
from instructgpt.models.loader import DEFAULT_MODEL
from instructgpt.runtime import MODES

PRESETS = ("quickstart", "miniature", "large")


EVAL_PROMPT_SETS = ("held-out-users", "self-instruct")
"""The win rates' test sets (PipelineConfig.eval_prompt_sets; pipeline.run.test_prompts reads each)."""


@dataclass
class PipelineConfig:
    """The whole method end to end: prompts -> SFT -> samples -> rankings -> RM -> PPO(-ptx) -> evaluation -> report."""

    out_dir: Path = Path("runs/pipeline")
    """Run folder; one sub-folder per stage. A re-run skips finished stages and resumes the others."""
    model: str = DEFAULT_MODEL
    """Pretrained base model: 'gemma-3-270m' (embedded), a local Hugging Face folder, a .gguf file, or a Hub id."""
    trim_vocabulary: bool = False
    """Trim the base model's vocabulary to the tokens of the bundled data before any stage (``models/vocabulary.py``;
    built once and cached): Gemma 3 keeps 66,250 of its 262,144 tokens, the data tokenizes exactly as before, and the
    model's next-token distribution becomes the base model's conditioned on the kept tokens (0.3% of the probability
    mass dropped on a demonstration). Every stage, the pretrained and prompted baselines included, uses the trimmed
    model. A departure from the paper, for speed: the vocabulary projection is the largest product of SFT's loss,
    PPO's log-probabilities and every sampled token (README, "A trimmed vocabulary")."""
    seed: int = 0
    """Seed of every sampling, split and data order in the run."""
    keep_checkpoints: bool = False
    """Keep each finished stage's resume checkpoints (<stage>/checkpoints; GBs each); by default they are deleted once
    the stage is done."""
    stage_processes: bool = True
    """Run each stage in a fresh Python process (``pipeline/process.py``), so that every stage starts with clean
    memory and allocator state; False runs every stage in this process (tests that patch stage functions,
    debugging). Measured on a 2-core AMX Xeon (2026-12-06): the quickstart's eval stage took 612 s after the
    training stages in one process against 204 s on its own."""
    stage_allocators: tuple[str, ...] = ()
    """``STAGE=MODE`` pairs (e.g. ``ppo=heap``): the memory allocator mode (``instructgpt.runtime``: thp, heap,
    system) the named stage's process runs in, with stage_processes (``round-r/`` stages by their base name);
    other stages, and every stage while $INSTRUCTGPT_MALLOC or $INSTRUCTGPT_SYSTEM_MALLOC is set, run in the
    process default (thp). Measured (2-core AMX Xeon, 2026-12-06): the quickstart's plain PPO stage alone took
    88-90 s in heap against 103-105 s in thp (the same scores; peak RSS 13.0-13.1 against 12.1-12.2 GB), but the
    miniature's PPO stages in heap gained nothing measurable (iterations 84-140 s, as in thp on earlier days) and
    reached 18.1-18.6 GB resident on a 23 GB machine: hence opt-in."""
    # --- data
    hh_prompts: int = 600
    """hh-rlhf first human turns added to the unlabelled prompt pool."""
    api_split_fractions: tuple[float, float, float] = (0.7, 0.2, 0.1)
    """User split (train, valid, test) of the unlabelled API-style prompts: RM training and PPO prompts come from train,
    the RM validation prompts (held-out labelers' rankings) from valid; test gives the win rates' held-out-users test
    set (eval_prompt_sets)."""
    max_prompt_tokens: int = 256
    """Prompts longer than this are dropped in preparation (paper: 1k; shorter keeps a CPU run fast)."""
    # --- step 1: SFT
    sft_demonstrations: int = 160
    """Most demonstrations SFT trains on (a seeded subset of the SFT training split)."""
    sft_demo_max_tokens: int | None = None
    """Demonstrations whose response is longer than this many tokens are left out of SFT (before the
    sft_demonstrations subset is drawn) rather than cut at max_response_tokens: a cut demonstration loses its EOS
    and teaches answers that run past the response budget. The paper caps responses at 1k tokens and samples,
    ranks and evaluates up to that length; a CPU run generating 64-token responses wants demonstrations that fit
    them. None (the default) keeps every demonstration. With ``labelers="app"`` the demonstrations people write are
    all kept (their labeling instructions should state the length instead)."""
    sft_epochs: int = 1
    """SFT epochs (paper: 16)."""
    sft_lr: float = 5e-5
    """SFT peak learning rate (paper, 1.3B: 9.65e-6; a short run of a small model wants more)."""
    sft_batch_size: int = 16
    """Demonstrations per SFT optimizer step (paper: 32)."""
    sft_pretrain_mix: float = 0.0
    """Fraction of pretraining sequences mixed into the SFT baseline (paper: 0; the PPO-init model's mix is
    ppo_init_pretrain_mix)."""
    sft_residual_dropout: float = 0.0
    """Residual dropout in SFT (paper: 0.2). 0 in every preset, as before this field existed: Gemma 3 was pretrained
    without dropout, and 0.2 raises its first-batch loss from 2.1 to 7.6 (0.1: 4.5), which a short run cannot
    recover; 0.2 is there for long runs and models pretrained with dropout."""
    sft_select_by_rm: bool = True
    """The paper's rule for the final SFT checkpoint (method.md step 1: SFT overfits validation loss after 1 epoch, yet
    later epochs score higher): of the per-epoch SFT weights (sft/epochs/epoch-N, the last is sft/final), the one
    whose greedy responses to RM validation prompts get the highest mean reward-model score becomes the SFT baseline
    of the evaluation and the PPO init (select_sft/selection.json). Selection needs an RM, so the samples and the RM
    come from the final SFT model (the paper does not give this order). With one epoch there is nothing to choose and
    nothing is scored."""
    sft_select_prompts: int = 100
    """RM validation prompts answered by each SFT checkpoint in the selection. Until 2026-12-06 16 (with 32 tokens):
    the miniature's epochs then differed in mean score by 0.05-0.11 against a paired standard error of 0.16-0.25
    (seed 0 of the 12-iteration run chose epoch 1 on a difference of 0.07 +- 0.25), a choice by noise; 100 prompts
    halve the error for about a minute of decoding at eval_batch_size."""
    sft_select_tokens: int = 64
    """New tokens per greedy response in the SFT checkpoint selection (the evaluation's length in the miniature: the
    RM scores the answers the judges will read, not their first half)."""
    ppo_init_from_pretrain_mix: bool = False
    """Initialise PPO (policy and frozen KL reference) from a separate SFT run from the base model with pretraining data
    mixed in, as the paper does ('an SFT run of 2 epochs with 10% pretraining data mixed in'); the SFT baseline,
    samples, RM and value model are unchanged. On in the miniature and large presets; off in the quickstart (one more
    SFT run would break its 20 minutes), where PPO starts from the SFT baseline."""
    ptx_init_from_pretrain_mix: bool | None = None
    """PPO-ptx's own init (policy and KL reference): the pretraining-mix SFT run (True) or the SFT baseline (False);
    None follows ``ppo_init_from_pretrain_mix``, so both start alike, as in the paper. The miniature preset sets True
    with plain PPO from the SFT baseline: from the SFT baseline, whose pretraining NLL SFT raised by 0.6 nats, the
    pretraining term spends PPO-ptx's steps undoing SFT (docs/results-history.md, "PPO-ptx's start"), and each init is
    the better one measured on validation prompts for its stage. The two policies then differ in init as well as in
    gamma."""

    def mix_init(self, ptx: bool) -> bool:
        """Whether PPO (``ptx`` False) or PPO-ptx (``ptx`` True) starts from the pretraining-mix SFT run."""
        if ptx and self.ptx_init_from_pretrain_mix is not None:
            return self.ptx_init_from_pretrain_mix
        return self.ppo_init_from_pretrain_mix

    ppo_init_epochs: int = 2
    """Epochs of the PPO-init SFT run (paper: 2)."""
    ppo_init_pretrain_mix: float = 0.1
    """Fraction of the PPO-init SFT run's training sequences drawn from pretraining text (paper: 0.1)."""
    max_response_tokens: int = 128
    """Longest demonstration / sampled response, in tokens (paper: 1k)."""
    # --- step 2: comparisons and the reward model
    rm_prompts: int = 160
    """RM training prompts whose SFT samples the simulated training labelers rank. At 32 (+ 24 human rankings, 3 steps)
    the quickstart's RM was at chance on 322 held-out comparisons (docs/results-history.md); the miniature's 320 (+ 48)
    reach 65-67%."""
    rm_eval_prompts: int = 60
    """RM validation prompts whose SFT samples the held-out labelers rank (generalisation check); 60 give about 300
    comparisons per labeler group at K = 4, enough for an interval of about +-5 points (issue 18)."""
    samples_per_prompt: int = 4
    """K, the outputs sampled per RM prompt (paper: 4..9)."""
    sample_tokens: int = 48
    """New tokens per sampled output."""
    human_rankings: int = 24
    """Bundled OpenAssistant human rankings added to the RM training set (0: simulated only)."""
    rm_lr: float = 1e-4
    """Reward-model peak learning rate (paper: 9e-6). 1e-4 since 2026-12-07, chosen on the miniature's RM-validation
    rankings (2e-5 before: bench/results/sweeps/rm-lr-validation-amx.json) and, with 2 epochs, on the quickstart's
    (bench/results/sweeps/rm-epochs-validation-epyc.json; see ``rm_epochs``)."""
    rm_batch_size: int = 8
    """Prompts per RM optimizer step (paper: 64; the quickstart's 184 rankings give 23 steps at 8, the miniature and
    large presets use 16 and 32)."""
    rm_epochs: int = 2
    """Passes over the RM training rankings (paper: 1, as more overfit at its scale). 2 since 2026-12-07: at this
    scale (a few hundred rankings, not 33k) one pass underfits. On RM-validation rankings judged by the held-out /
    training simulated labelers (bench/results/sweeps/rm-epochs-validation-epyc.json): quickstart 56.8% / 55.3% at
    lr 2e-5 x 1, 57.7% / 56.8% at 1e-4 x 1, 65.3% / 65.9% at 1e-4 x 2 (331 comparisons each); miniature at 1e-4,
    1 -> 2 epochs: seed 0 70.9% -> 69.2% / 68.9% -> 69.3% (522 / 537), seed 1 62.6% -> 70.8% / 62.0% -> 66.5%
    (561 / 571). Costs the RM stage's time twice over (EPYC: quickstart 562 against 300 s, miniature 769 against 414).
    The large preset inherits it (not measured there)."""
    # --- step 3: PPO
    ppo_iterations: int = 3
    """PPO iterations (each: a batch of episodes, one inner epoch)."""
    ppo_batch_size: int = 16
    """Episodes per PPO iteration (paper: 512)."""
    ppo_minibatch_size: int = 8
    """Episodes per PPO minibatch (paper: 64)."""
    ppo_lr: float = 1e-5
    """Policy learning rate."""
    ppo_response_tokens: int = 48
    """New tokens per PPO episode."""
    ppo_missing_eos_penalty: float = 0.0
    """Subtracted from the RM score of a PPO episode that hits ``ppo_response_tokens`` without EOS ("the missing-EOS
    handling", which method.md leaves open). 0 keeps a cut-off response's score: the RM then favours longer
    responses, and at a short cap they end cut off mid-sentence (docs/results-history.md, "The sweeps on validation
    prompts")."""
    ppo_score_unfinished: str = "end-marker"
    """How the RM reads a PPO episode cut off without EOS: 'end-marker' (EOS appended, as every ranked sample was
    rendered in the RM's training, cut-off ones included) or 'as-is' (at its last sampled token, as before
    2026-12-05; ``PPOConfig.score_unfinished``)."""
    ppo_gae_lambda: float = 0.95
    """GAE lambda of PPO (not given by the paper; 0.95 is common). With gamma = 1 the RM score reaches the token t
    steps before a response's end weighted lambda^t (0.95^40 = 0.13), the rest of that token's advantage being the
    value model's own differences; 1 gives every token the episode's return minus its value."""
    ppo_value_lr: float = 9e-6
    """Learning rate of the value model (paper: 9e-6)."""
    ppo_kl_coef: float = 0.02
    """beta of the per-token KL penalty to the reference (paper: 0.02, fixed); the start value when adaptive."""
    ppo_kl_target: float | None = None
    """Adaptive beta (Ziegler et al. 2019): the KL per episode, in nats, to steer toward; None keeps beta fixed.
    A choice the paper leaves open; what bounds the KL in a short run (docs/results-history.md, "The sweeps on
    validation prompts")."""
    ppo_kl_horizon: int = 10_000
    """Adaptive beta's horizon, in episodes (Ziegler et al.: 10,000; a run of a few hundred episodes needs far
    fewer for beta to move)."""
    ptx_coef: float = 0.278
    """PPO-ptx pretraining coefficient gamma; the plain PPO run uses 0. The paper's 27.8 (the large preset's, and
    ``instructgpt ppo``'s default) weighs its own normalisation of the two terms, which it does not give; here both
    are per-token means, and with the bundled pretraining corpus (not the base model's pretraining distribution)
    27.8 pulls the policy far from SFT: on 64 PPO-validation prompts of the miniature run, win rate against SFT
    0.16 at 27.8, 0.20 at 2.78 and 0.39 at 0.278 (runs/sweep_ppo_kl.py, docs/results-history.md)."""
    ptx_per_episode: float = 1.0
    """PPO-ptx pretraining sequences per episode (paper: 8, as in the miniature and large presets; the quickstart uses 1
    to stay within its 20 minutes)."""
    ppo_validation_prompts: int = 128
    """Prompts of the PPO validation split (at most; all of a smaller split) on which each PPO run's RM score and KL
    are measured at iteration 0 and along the run, the same prompts and uniforms each time
    (PPOConfig.validation_prompts; the ``validation/...`` curve with the score's gain over iteration 0 and its
    interval); 0: no curve. PPO and PPO-ptx from the same init share iteration 0's answers (the run's ``cache/``). 128
    since 2026-12-07 night (64 before): the quickstart's split has 113, whose gain interval is about +-0.36 against
    +-0.5 on 64 (bench/results/sweeps/quickstart-ppo-minibatch-validation-epyc.json)."""
    ppo_validation_every: int | None = None
    """Iterations between points of that curve; None: the run's length (points at iteration 0 and the end). Each point
    costs about 37 s on a 2-core EPYC (the quickstart's 113 prompts of 48 tokens: a generation, a reference and a
    reward forward; 21 s for 64); a midpoint in the quickstart's 6 iterations read +0.02 [-0.46, +0.50] for PPO
    (64 prompts), whose end read +0.77 [+0.30, +1.23] (2026-12-07)."""
    ppo_ema_decay: float | None = None
    """Decay of the policy EMA that becomes the final PPO model (paper: 0.992 over ~4000 policy steps); None: scaled so
    the EMA spans the same fraction of this run (about 3% of its steps; 0, the last weights, for runs under 32
    steps)."""
    run_plain_ppo: bool = True
    """Also train plain PPO (gamma = 0) to measure PPO-ptx's alignment tax against it."""
    # --- iterated rounds of steps 2 and 3 (method.md: "steps 2 and 3 can be iterated")
    rounds: int = 1
    """Rounds of steps 2 and 3. Round 1 is the pipeline above (its stage folders at the top of out_dir); round r >= 2
    (folder round-r/) samples new comparisons from round r-1's policy, trains a reward model on every round's
    comparisons so far, continues PPO(-ptx) from round r-1's policies, and its policies are judged against the same SFT
    baseline on the same test prompts; eval/ evaluates the last round's policies in full, and eval/results.json lists
    every round's win rates and RM accuracies under "rounds". A round's PPO KL reference is the policy it starts
    from (PPO takes one model for both; the paper keeps the SFT model)."""
    round_policy: Literal["ppo_ptx", "ppo"] = "ppo_ptx"
    """The "current best policy" of a round, whose samples the next round's labelers rank: PPO-ptx (the paper's
    InstructGPT) or plain PPO (needs run_plain_ppo)."""
    round_earlier_models: Literal["none", "sft", "all"] = "all"
    """Earlier models mixed into a round's samples, as the paper's comparisons come from several models (it gives no
    mix): none; the SFT baseline; or all (the SFT baseline and the policies of every round before the last). Each
    prompt's earlier samples come from one of them, in turn."""
    round_earlier_share: float = 0.25
    """Share of each prompt's K samples drawn from the earlier models (rounded; the latest policy keeps at least
    one)."""
    round_rm_init: Literal["sft", "previous"] = "sft"
    """Where a round's reward model starts: a new RM from the SFT model (as round 1's), trained on every round's
    comparisons so far; or round r-1's RM, trained on the same data (the paper does not say)."""
    round_eval_tasks: tuple[str, ...] = ("winrate",)
    """Evaluations of the rounds before the last (round-r/eval/); the last round gets eval_tasks in eval/."""
    round_human_rankings: tuple[Path, ...] = ()
    """Rankings people made in the labeling application (instructgpt label export) of rounds 2..N's training samples.
    When given, a round's training comparisons are theirs instead of the simulated training labelers'; a round whose
    samples are not all ranked yet writes them to round-r/rankings/to_label/ (prompts.jsonl and outputs.jsonl, the
    application's import formats) and stops; re-run with the export added and it resumes in that round."""
    # --- people's labels (the labeling app)
    labelers: Literal["simulated", "app"] = "simulated"
    """Who writes the SFT demonstrations, ranks the RM training samples (of every round) and judges the win rates:
    the bundled demonstrations and the simulated panel (offline), or people in the labeling app (instructgpt label
    serve) on label_database_url. Each such stage publishes its prompts (and samples, or pairs) to a project of the
    app, prints the progress (prompts labelled / needed, each labeler's done / assigned) and continues when no
    assignment is pending; else the run stops (exit 3) and a re-run picks up where the labels stand. The RM
    validation rankings stay the simulated panel's (docs/labeling.md)."""
    label_database_url: str = "sqlite:///labeling.db"
    """The labeling app's database (the --database-url of instructgpt label serve)."""
    label_project: str = "pipeline"
    """Prefix of the app's projects the run publishes to: '<prefix> demonstrations', '<prefix> rankings',
    '<prefix> round-r rankings'; give each run its own."""
    label_labelers: tuple[str, ...] = ()
    """App accounts made members of those projects (members added in the admin pages count too)."""
    label_overlap: int = 1
    """Labelers per item (2 or more measures their agreement)."""
    label_wait_minutes: float = 0.0
    """How long a stage waits for its labels, reading the database every label_poll_seconds, before the run stops
    with "N of M prompts labelled; re-run to continue" (0: report and stop at once)."""
    label_poll_seconds: float = 30.0
    """Seconds between two looks at the labels while waiting."""
    # --- evaluation
    eval_prompts: int = 64
    """Held-out test prompts for the win rates, at most this many from each of eval_prompt_sets (seeded; 64: a 95%
    interval of about +-0.12 around 0.5)."""
    eval_prompt_sets: tuple[str, ...] = ("held-out-users", "self-instruct")
    """Test sets of the win rates, each reported apart (and pooled): held-out-users, the API pool's test split (the
    prompts of users in neither the training nor the validation split: the paper's test set, from the distribution
    the RM and PPO train on), and self-instruct, its 252 user-oriented instructions (another distribution, never
    trained on; those over 400 characters dropped)."""
    eval_items: int = 12
    """Items per automatic benchmark (TruthfulQA, RealToxicityPrompts, CrowS-Pairs, ...)."""
    eval_task_items: tuple[str, ...] = ()
    """Per-benchmark overrides of eval_items as TASK=N (truthfulqa, toxicity, bias, nlp), e.g. truthfulqa=24: the
    alignment tax's NLP items can get more items than the benchmarks no bar rests on."""
    eval_tokens: int = 48
    """New tokens per evaluation sample."""
    eval_batch_size: int = 64
    """Prompts decoded (and sequences scored) together in the evaluation. Not a method choice: on a CPU a decode
    step costs about the same for 8 rows as for 64 (2-core Intel AMX, Gemma 3 270M, bf16: 79 ms at 16 rows, 139 ms
    at 64), so larger batches finish the evaluation's generations several times sooner. Greedy answers may differ in
    the last bit with the batch's padding, sampled ones with the batch (the random stream is per batch)."""
    eval_tasks: tuple[str, ...] = ("winrate", "truthfulqa", "toxicity", "bias", "nlp")
    """Evaluations to run (see instructgpt eval --help)."""
    # --- the simulated labeler panel
    training_labelers: int = 6
    """Simulated training labelers (their rankings train the RM)."""
    held_out_labelers: int = 4
    """Simulated held-out labelers (no training data; they judge the final comparisons)."""
    labeler_taste_share: float = 0.5
    """Share of the labelers' disagreement that comes from different tastes (weights) rather than noise; each group is
    calibrated on the samples it ranks to the paper's agreement (training 72.6%, held-out 77.3%). The paper reports
    only the total."""

    def validate(self) -> None:
        check(self.samples_per_prompt >= 2, "samples_per_prompt", "K must be at least 2")
        check(self.ppo_batch_size % self.ppo_minibatch_size == 0, "ppo_minibatch_size", "must divide ppo_batch_size")
        check(self.ppo_kl_coef >= 0, "ppo_kl_coef", "must be >= 0")
        check(0 <= self.ppo_gae_lambda <= 1, "ppo_gae_lambda", "must be in [0, 1]")
        check(self.ppo_value_lr > 0, "ppo_value_lr", "must be positive")
        check(self.ppo_missing_eos_penalty >= 0, "ppo_missing_eos_penalty", "must be >= 0")
        unfinished = ("end-marker", "as-is")
        check(self.ppo_score_unfinished in unfinished, "ppo_score_unfinished", f"must be one of {unfinished}")
        check(self.ppo_kl_target is None or self.ppo_kl_target > 0, "ppo_kl_target", "must be positive (or unset)")
        check(self.ppo_kl_horizon >= 1, "ppo_kl_horizon", "must be at least 1")
        check(self.ppo_validation_prompts >= 0, "ppo_validation_prompts", "must be >= 0 (0: no validation curve)")
        check(
            self.ppo_validation_every is None or self.ppo_validation_every >= 1, "ppo_validation_every", "must be >= 1"
        )
        check(self.eval_batch_size >= 1, "eval_batch_size", "must be at least 1")
        for pair in self.eval_task_items:
            task, _, n = pair.partition("=")
            check(
                task in ("truthfulqa", "toxicity", "bias", "nlp") and n.isdigit() and int(n) >= 1,
                "eval_task_items",
                f"{pair!r}: expected TASK=N, TASK one of truthfulqa, toxicity, bias, nlp and N at least 1",
            )
        check(
            bool(self.eval_prompt_sets) and set(self.eval_prompt_sets) <= set(EVAL_PROMPT_SETS),
            "eval_prompt_sets",
            f"one or more of {EVAL_PROMPT_SETS}",
        )
        for pair in self.stage_allocators:
            stage, _, mode = pair.partition("=")
            check(
                bool(stage) and mode in MODES, "stage_allocators", f"{pair!r}: expected STAGE=MODE, MODE one of {MODES}"
            )
        check(self.sft_demonstrations >= self.sft_batch_size, "sft_demonstrations", "must be at least sft_batch_size")
        check(0 <= self.sft_residual_dropout < 1, "sft_residual_dropout", "must be in [0, 1)")
        check(self.sft_demo_max_tokens is None or self.sft_demo_max_tokens >= 1, "sft_demo_max_tokens", "must be >= 1")
        check(
            self.sft_select_prompts >= 1 and self.sft_select_tokens >= 1,
            "sft_select_prompts",
            "sft_select_prompts and sft_select_tokens must be at least 1",
        )
        check(self.ppo_init_epochs >= 1, "ppo_init_epochs", "must be at least 1")
        check(0 <= self.ppo_init_pretrain_mix < 1, "ppo_init_pretrain_mix", "must be in [0, 1)")
        check(0 <= self.labeler_taste_share <= 1, "labeler_taste_share", "must be in [0, 1]")
        check(self.rounds >= 1, "rounds", "must be at least 1")
        check(0 <= self.round_earlier_share < 1, "round_earlier_share", "must be in [0, 1)")
        check(
            self.rounds == 1 or self.round_policy == "ppo_ptx" or self.run_plain_ppo,
            "round_policy",
            "ppo needs run_plain_ppo",
        )
        check(self.rounds == 1 or "winrate" in self.eval_tasks, "eval_tasks", "rounds > 1 need winrate")
        check(self.rounds == 1 or "winrate" in self.round_eval_tasks, "round_eval_tasks", "must include winrate")
        check(1 <= self.label_overlap <= 100, "label_overlap", "1 to 100 labelers per item")
        check(self.label_wait_minutes >= 0, "label_wait_minutes", "must be >= 0")
        check(self.label_poll_seconds > 0, "label_poll_seconds", "must be positive")
        check(
            self.labelers == "simulated" or 1 <= len(self.label_project.strip()) <= 100,
            "label_project",
            "1 to 100 characters",
        )
        check(
            self.labelers == "simulated" or not self.round_human_rankings,
            "round_human_rankings",
            "give exports or labelers=app, not both",
        )
        check(
            self.training_labelers >= 1 and self.held_out_labelers >= 1,
            "held_out_labelers",
            "need at least one of each",
        )


def preset_path(name: str) -> Path:
    """The YAML file of a named preset."""
    check(name in PRESETS, "preset", f"unknown preset {name!r}; presets: {', '.join(PRESETS)}")
    return Path(__file__).parent / "presets" / f"{name}.yaml"
