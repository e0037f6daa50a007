"""People's labels through the labeling app (``labelers="app"``).

A stage that needs labels publishes its tasks to a project in the app's database
(``label_database_url``, the one ``instructgpt label serve`` runs on), as the ``instructgpt
label`` commands do: the prompts as items, the samples as their outputs, the configured
labelers as members. It then reads the project's state, prints the progress (prompts labelled
/ needed, each labeler's finished / assigned) and returns the exported records once no
assignment of its prompts is pending. Until then it polls for ``label_wait_minutes`` and then
raises ``AwaitingLabels`` (the command exits 3); publishing again is a no-op, so a re-run
picks up where the labels stand.

Used by SFT (a demonstration project), the rankings of every round (ranking projects) and the
evaluation (``AppJudge``: a comparison project of every model's pairs against the SFT baseline,
and a ranking project of every model's outputs to each prompt for the Likert ratings and the
Table 3 metadata).
A prompt every labeler skipped, or whose outputs the app refused (near-duplicates leaving fewer
than 2), is left out of the stage's labels: counted as needed, never as labelled.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel

from instructgpt.config import ConfigError
from instructgpt.data.jsonl import read_records
from instructgpt.data.schemas import Prompt, Ranking
from instructgpt.pipeline.config import PipelineConfig

INSTRUCTIONS = {
    "demonstration": "Write the response you would want a helpful, truthful and harmless assistant to give.",
    "ranking": "Rank the outputs from best to worst: helpful, truthful and harmless (harmlessness first when they "
    "conflict). Put outputs you cannot tell apart in one column.",
    "comparison": "Which output is better? Truthfulness and harmlessness first, then helpfulness (the paper's "
    "guidance for evaluations). Choose 'about the same' when you cannot tell.",
}

SIMULATED_VALIDATION = (
    "the simulated panel's, not people's: the RM's validation accuracy is measured per labeler group, on training "
    "labelers and on held-out labelers who wrote none of its training labels, and one set of app accounts "
    "(label_labelers) has no held-out group; it would also double the people's ranking work every round. These "
    "accuracies say how well the RM agrees with the simulated panel, not with the people who labelled"
)
"""Where the RM validation rankings come from with ``labelers="app"``, and why (printed and saved in panel.json)."""

LABEL_FIELDS = {"simulated": (), "app": ("labelers", "label_project")}
"""The fields a labelled stage's fingerprint adds (none with the simulated panel: its runs keep their fingerprints)."""


class AwaitingLabels(Exception):
    """Labels a stage needs are not all in yet; the message says how many and where."""


@dataclass(frozen=True)
class Progress:
    """One look at a project's labels for a stage's prompts."""

    labelled: int
    """Prompts with at least one submission."""
    needed: int
    """Prompts published."""
    open_items: int
    """Prompts still waiting for a labeler: unassigned (no members yet) or with a pending assignment."""
    per_labeler: dict[str, tuple[int, int]]
    """Username -> (finished or skipped, assigned)."""

    def line(self, project: str) -> str:
        people = ", ".join(f"{who} {done}/{total}" for who, (done, total) in sorted(self.per_labeler.items()))
        return f"{project!r}: {self.labelled} of {self.needed} prompts labelled" + (
            f"; {people}" if people else "; no labelers assigned yet"
        )


def collect(
    config: PipelineConfig,
    kind: str,
    name: str,
    prompts: Sequence[Prompt],
    outputs: Mapping[str, Sequence[str]] | None = None,
    log: Callable[[str], None] = print,
) -> list[BaseModel]:
    """Publish ``prompts`` (with ``outputs`` by prompt id, for rankings and comparisons) to the
    project ``"<label_project> <name>"`` and return the records people made for them
    (Demonstration, Ranking or Comparison, in submission order), waiting as configured; raises
    AwaitingLabels when they are not all in."""
    publish(config, kind, name, prompts, outputs or {})
    ids = {p.id for p in prompts}
    deadline = time.monotonic() + 60 * config.label_wait_minutes
    while True:
        progress, records = look(config, name, ids, log)
        if progress.open_items == 0:
            return records
        if time.monotonic() >= deadline:
            raise AwaitingLabels(
                f"{progress.labelled} of {progress.needed} prompts labelled in project "
                f"{config.label_project + ' ' + name!r} ({progress.open_items} still open) of "
                f"{config.label_database_url}; re-run to continue"
            )
        time.sleep(min(config.label_poll_seconds, max(0.0, deadline - time.monotonic())))


@contextmanager
def _database(config: PipelineConfig) -> Iterator:
    """A session factory over the app's database, migrated as ``instructgpt label serve`` leaves it."""
    from sqlalchemy.exc import SQLAlchemyError

    from instructgpt.labeling import db

    try:
        engine = db.make_engine(config.label_database_url, pool_size=2)
        db.migrate(engine)
    except SQLAlchemyError as err:
        raise ConfigError(f"label_database_url: cannot open {config.label_database_url!r}: {err}") from None
    try:
        yield db.session_factory(engine)
    finally:
        engine.dispose()


def look(
    config: PipelineConfig, name: str, prompt_ids: set[str], log: Callable[[str], None] = print
) -> tuple[Progress, list[BaseModel]]:
    """The progress of the project's items with these prompt ids (printed) and the records people made for them."""
    from instructgpt.labeling import store
    from instructgpt.labeling.export import export_records

    project = f"{config.label_project} {name}"
    with _database(config) as sessions, sessions() as session:
        project_id = store.find_project(session, project).id
        progress = _progress(session, project_id, prompt_ids)
        records = [r for r in export_records(session, project_id) if getattr(r, "prompt_id", None) in prompt_ids]
    log(f"    labels {progress.line(project)}")
    return progress, records


def rankings(config: PipelineConfig, prompts_file: Path, samples_file: Path, name: str) -> list[BaseModel]:
    """People's rankings of a samples file's rows (``prompt_id``, ``responses``) through ``collect``;
    the prompt records come from ``prompts_file`` (the prepared prompts the samples were drawn from)."""
    rows = [json.loads(line) for line in samples_file.read_text(encoding="utf-8").splitlines() if line.strip()]
    by_id = {prompt.id: prompt for prompt in read_records(prompts_file, "prompts")}
    return collect(
        config,
        "ranking",
        name,
        [by_id[row["prompt_id"]] for row in rows],
        {row["prompt_id"]: row["responses"] for row in rows},
    )


def publish(
    config: PipelineConfig, kind: str, name: str, prompts: Sequence[Prompt], outputs: Mapping[str, Sequence[str]]
) -> None:
    """Add what is missing of the project ``"<label_project> <name>"``: the project itself, the
    prompts, their outputs and the members (members added in the admin pages stay). Idempotent."""
    from sqlalchemy import select

    from instructgpt.labeling import store
    from instructgpt.labeling.models import User

    project = f"{config.label_project} {name}"
    with _database(config) as sessions, sessions.begin() as session:
        try:
            found = store.find_project(session, project)
        except store.StoreError:
            found = store.create_project(session, project, kind, INSTRUCTIONS[kind], config.label_overlap)
        if found.kind != kind:
            raise ConfigError(f"label_project: project {project!r} exists with kind {found.kind}, not {kind}")
        store.import_prompts(session, found.id, list(prompts))
        records = [
            store.OutputRecord(prompt_id=prompt_id, response=text, model=None)
            for prompt_id, texts in outputs.items()
            for text in texts
        ]
        if records:
            store.place_outputs(session, found.id, records)  # near-duplicates and re-runs are left out
        users = dict(
            session.execute(select(User.username, User.id).where(User.username.in_(config.label_labelers))).all()
        )
        unknown = sorted(set(config.label_labelers) - set(users))
        if unknown:
            raise ConfigError(
                f"label_labelers: no account {', '.join(map(repr, unknown))} in {config.label_database_url} "
                "(instructgpt label create-user --role labeler, or an invite)"
            )
        store.set_members(session, found.id, sorted(set(store.member_ids(session, found.id)) | set(users.values())))


def _progress(session, project_id: int, prompt_ids: set[str]) -> Progress:
    from sqlalchemy import func, select

    from instructgpt.labeling.models import Assignment, Item, Output, Project, User

    kind = session.get(Project, project_id).kind
    items = dict(session.execute(select(Item.id, Item.prompt_id).where(Item.project_id == project_id)).all())
    ours = {item for item, prompt_id in items.items() if prompt_id in prompt_ids}
    outputs = Counter(
        dict(
            session.execute(
                select(Output.item_id, func.count()).where(Output.item_id.in_(ours)).group_by(Output.item_id)
            ).all()
        )
    )
    ready = {item for item in ours if kind == "demonstration" or outputs[item] >= 2}
    statuses: dict[int, Counter] = {item: Counter() for item in ready}
    per_labeler: dict[str, list[int]] = {}
    for item, username, status in session.execute(
        select(Assignment.item_id, User.username, Assignment.status)
        .join(User, Assignment.user_id == User.id)
        .where(Assignment.item_id.in_(ready))
    ):
        statuses[item][status] += 1
        counts = per_labeler.setdefault(username, [0, 0])
        counts[0] += status != "pending"
        counts[1] += 1
    return Progress(
        labelled=sum(1 for c in statuses.values() if c["done"]),
        needed=len(ours),
        open_items=sum(1 for c in statuses.values() if c["pending"] or not c),
        per_labeler={who: (done, total) for who, (done, total) in per_labeler.items()},
    )


class AppJudge:
    """The evaluation's judge with ``labelers="app"``: people's blind choices between two outputs
    in a comparison project of the app (the evaluation randomises the order, the app hides model
    names). ``compare`` publishes its pairs (item id: a hash of the prompt and the unordered
    pair) and answers from the labels in: the majority of the labelers who judged a pair; a pair
    not judged yet is a tie and counted in ``open``, for ``eval_stage`` to wait and judge again.
    An empty output loses to a non-empty one (the app cannot show it); outputs equal up to case
    and spacing, which the app does not put on one board, tie.

    ``rate_outputs`` asks people for the Likert ratings and Table 3 metadata as the paper's
    labelers gave them: every model's output to a prompt on one ranking board (the project
    ``<project minus 'comparisons'> ratings``, ratings asked), in the evaluation's shuffled order.
    An output gets the median rating of the labelers who rated it and the flags most of them
    ticked; outputs equal up to case and spacing share one place on the board and its rating. An
    output not rated yet (counted in ``open``), an empty one and one past the board's 9 get none
    (left out of the means); a prompt with fewer than 2 distinct outputs has no board."""

    name = "people"

    def __init__(self, config: PipelineConfig, project: str):
        self.config, self.project = config, project
        self.ratings_project = project.removesuffix("comparisons").strip() + " ratings"
        self.description = f"people in the labeling app (project {config.label_project + ' ' + project!r})"
        self.prompts: list[Prompt] = []
        self.outputs: dict[str, list[str]] = {}
        self.rating_prompts: list[Prompt] = []
        self.rating_outputs: dict[str, list[str]] = {}
        self.open = 0

    def compare(self, prompts: Sequence, responses_a: Sequence[str], responses_b: Sequence[str]) -> list[str]:
        from instructgpt.evaluation.judges import _in_order, _text

        ids = []
        for prompt, a, b in zip(prompts, responses_a, responses_b):
            text = _text(prompt)
            ids.append(_item_id(text, [a, b]))
            if a.strip() and b.strip() and ids[-1] not in self.outputs:
                self.prompts.append(Prompt(id=ids[-1], text=text, user_id="evaluation", source="api"))
                self.outputs[ids[-1]] = [a, b]
        publish(self.config, "comparison", self.project, self.prompts, self.outputs)
        progress, records = look(self.config, self.project, set(ids))
        self.open += progress.open_items
        votes: dict[str, list] = {}
        for record in records:
            votes.setdefault(getattr(record, "prompt_id", ""), []).append(record)
        choices = []
        for key, a, b in zip(ids, responses_a, responses_b):
            if not (a.strip() and b.strip()):
                choices.append("tie" if not (a.strip() or b.strip()) else "a" if a.strip() else "b")
                continue
            said = [_in_order(r, a) for r in votes.get(key, [])]  # none yet: a tie, counted in open
            ahead = said.count("a") - said.count("b")
            choices.append("a" if ahead > 0 else "b" if ahead < 0 else "tie")
        return choices

    def rate_outputs(self, prompts: Sequence, shown: Sequence[Sequence[str]]) -> list[list]:
        """Per prompt, a Rating of each output in ``shown`` (the order the evaluation drew)."""
        from instructgpt.evaluation.judges import _text
        from instructgpt.labeling.store import near_duplicate_key

        ids = []
        for prompt, outputs in zip(prompts, shown):
            text = _text(prompt)
            ids.append(_item_id(text, outputs))
            board = list({near_duplicate_key(t): t for t in outputs if t.strip()}.values())  # one of each
            if len(board) >= 2 and ids[-1] not in self.rating_outputs:
                self.rating_prompts.append(Prompt(id=ids[-1], text=text, user_id="evaluation", source="api"))
                self.rating_outputs[ids[-1]] = board
        publish(self.config, "ranking", self.ratings_project, self.rating_prompts, self.rating_outputs)
        progress, records = look(self.config, self.ratings_project, set(ids))
        self.open += progress.open_items
        said: dict[tuple[str, str], list[tuple[int, dict]]] = {}  # (item, text key) -> each labeler's rating
        for record in records:
            if not isinstance(record, Ranking) or record.likert is None or record.prompt_id is None:
                continue
            for j, text in enumerate(record.responses):
                flags = record.metadata[j] if record.metadata is not None else {}
                said.setdefault((record.prompt_id, near_duplicate_key(text)), []).append((record.likert[j], flags))
        rated = []
        for key, outputs in zip(ids, shown):
            rated.append([combine_ratings(said.get((key, near_duplicate_key(t)), [])) for t in outputs])
        return rated


def _item_id(prompt: str, outputs: Sequence[str]) -> str:
    """The app's item id of a prompt shown with these outputs, in any order."""
    return hashlib.sha256(json.dumps([prompt, *sorted(outputs)]).encode()).hexdigest()[:16]


def combine_ratings(ratings: Sequence[tuple[int, Mapping[str, bool]]]):
    """One output's Rating from its labelers' (likert, flags): the median rating (the lower of the
    two middle ones) and each flag that more than half of those who answered it ticked."""
    from statistics import median_low

    from instructgpt.evaluation.judges import Rating

    if not ratings:
        return Rating()
    answers: dict[str, list[bool]] = {}
    for _, flags in ratings:
        for flag, value in flags.items():
            answers.setdefault(flag, []).append(value)
    return Rating(
        median_low([likert for likert, _ in ratings]),
        {flag: 2 * sum(values) > len(values) for flag, values in answers.items()},
    )


def evaluate_with_people(config: PipelineConfig, evaluation, project: str) -> None:
    """``run_eval`` judged by people (``AppJudge``): a first pass publishes every model's pairs and
    rating boards; if some are not labelled yet, wait for them (``collect``: or AwaitingLabels) and
    judge again."""
    from instructgpt.evaluation.suite import run_eval

    judge = AppJudge(config, project)
    run_eval(evaluation, judge=judge)
    if not judge.open:
        return
    collect(config, "comparison", project, judge.prompts, judge.outputs)
    if judge.rating_prompts:
        collect(config, "ranking", judge.ratings_project, judge.rating_prompts, judge.rating_outputs)
    again = AppJudge(config, project)
    run_eval(evaluation, judge=again)
    if again.open:  # the second pass drew other outputs than the first
        raise AwaitingLabels(f"the evaluation published {again.open} new items to {again.description}; re-run")
