"""``instructgpt label``: the human data collection application.

    instructgpt label serve [--database-url URL] [--host H] [--port P]   run the web app
    instructgpt label migrate [--database-url URL]                        create / upgrade the schema
    instructgpt label create-user --username U [--role admin]   password from $INSTRUCTGPT_LABEL_PASSWORD or stdin
    instructgpt label deactivate --username U      log U out everywhere and refuse their logins
    instructgpt label reactivate --username U
    instructgpt label invite [--role labeler] [--project NAME] [--base-url URL]   print a one-time sign-up link
    instructgpt label project --name N --kind ranking [--overlap 3]        create a project
    instructgpt label import-prompts --project N --file prompts.jsonl
    instructgpt label attach-outputs --project N --file outputs.jsonl     prompt_id, response, model per line
    instructgpt label generate --project N --model M [--k 4]               sample K outputs per prompt
    instructgpt label members --project N --usernames A B ...
    instructgpt label export --project N --out records.jsonl              SFT / RM / win-rate records
    instructgpt label screen --rankings R.jsonl --reference GOLD.jsonl [--demonstrations SCORED.jsonl]
                                       screen labelers: ranking and flagging agreement, demonstration score

The database is SQLite by default (``sqlite:///labeling.db``); give ``--database-url
postgresql://user@host/db`` for PostgreSQL. Every command migrates the schema first.
"""

from __future__ import annotations

import getpass
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from instructgpt.config import ConfigError, check, parse

PASSWORD_ENV = "INSTRUCTGPT_LABEL_PASSWORD"
LABEL_EXTRA = "pip install 'instructgpt[label]' (or: bash scripts/setup.sh label)"


@dataclass
class DatabaseConfig:
    """Where the labeling data lives."""

    database_url: str = "sqlite:///labeling.db"
    """SQLAlchemy URL: sqlite:///FILE (default) or postgresql://USER[:PASSWORD]@HOST[:PORT]/DB."""


@dataclass
class ServeConfig(DatabaseConfig):
    """Run the labeling web application (migrates the database first)."""

    host: str = "127.0.0.1"
    """Address to listen on; 0.0.0.0 for every interface (put HTTPS in front of it)."""
    port: int = 8000
    """Port to listen on."""
    session_hours: float = 12.0
    """A login lasts at most this long."""
    idle_minutes: float = 120.0
    """A session ends after this long without a request."""
    secure_cookies: bool = False
    """Send the session cookie over HTTPS only (set it when served behind HTTPS)."""
    max_upload_mb: int = 64
    """Largest prompts / outputs file an admin may upload."""

    def validate(self) -> None:
        check(1 <= self.port <= 65535, "port", "1 to 65535")
        check(self.session_hours > 0 and self.idle_minutes > 0, "session_hours", "sessions must last > 0")
        check(self.max_upload_mb >= 1, "max_upload_mb", "at least 1")


@dataclass
class UserConfig(DatabaseConfig):
    """Create a user; the password is read from $INSTRUCTGPT_LABEL_PASSWORD, else asked for."""

    username: str = ""
    """Login name (letters, digits, . _ - @)."""
    role: Literal["admin", "labeler"] = "admin"
    """admin: manages projects and people; labeler: does tasks."""


@dataclass
class AccountConfig(DatabaseConfig):
    """Deactivate (logged out of every browser at once, logins refused) or reactivate a user."""

    username: str = ""
    """The user's login name."""


@dataclass
class InviteConfig(DatabaseConfig):
    """Print a one-time sign-up link (valid 7 days)."""

    role: Literal["admin", "labeler"] = "labeler"
    """Role of the new account."""
    project: str = ""
    """Project the new labeler joins (optional)."""
    base_url: str = "http://127.0.0.1:8000"
    """Where the app is served, as labelers reach it."""


@dataclass
class ProjectConfig(DatabaseConfig):
    """Create a project."""

    name: str = ""
    """Project name (unique)."""
    kind: Literal["demonstration", "ranking", "comparison"] = "ranking"
    """The task: write demonstrations, rank K outputs, or compare two outputs blind."""
    overlap: int = 1
    """How many labelers see each item (more than 1 measures agreement)."""
    instructions_file: Path | None = None
    """Text file of instructions shown beside every task."""
    ask_ratings: bool = True
    """Ranking: also ask the 1-7 rating and the Table 3 yes/no questions per output."""


@dataclass
class FileConfig(DatabaseConfig):
    """Import prompts or attach outputs from a JSONL file."""

    project: str = ""
    """Project name."""
    file: Path = Path("records.jsonl")
    """The JSONL file (prompts: the prompts format; outputs: prompt_id, response, model)."""


@dataclass
class GenerateConfig(DatabaseConfig):
    """Sample K outputs per prompt of a project with a model and attach them."""

    project: str = ""
    """Project name."""
    model: str = "gemma-3-270m"
    """Model: 'gemma-3-270m', a local Hugging Face folder, a .gguf file."""
    model_name: str = ""
    """Name recorded with each output (default: --model)."""
    k: int = 4
    """Samples per prompt."""
    temperature: float = 1.0
    """Sampling temperature (> 0, so that samples differ)."""
    max_new_tokens: int = 128
    """Longest output, in tokens."""
    seed: int = 0
    """Sample j uses seed + j."""


@dataclass
class MembersConfig(DatabaseConfig):
    """Set the labelers of a project (assigns its items to them)."""

    project: str = ""
    """Project name."""
    usernames: tuple[str, ...] = ()
    """The labelers, by username."""


@dataclass
class ExportConfig(DatabaseConfig):
    """Export a project's submissions as training records (JSONL, written atomically)."""

    project: str = ""
    """Project name."""
    out: Path = Path("records.jsonl")
    """File to write: demonstrations (SFT), rankings (RM) or comparisons (win rates)."""


@dataclass
class ScreenConfig:
    """Screen labelers against the researchers' labels (paper appendix B.1): agreement on
    rankings and on flagging sensitive speech (soft cutoff 75%), and the mean score of their
    demonstrations (soft cutoff 6/7). The cutoffs are advice."""

    rankings: tuple[Path, ...] = ()
    """The labelers' screening rankings (the app's export, with the per-output questions)."""
    reference: tuple[Path, ...] = ()
    """The researchers' rankings and flags of the same outputs."""
    demonstrations: tuple[Path, ...] = ()
    """The labelers' screening demonstrations, each line with the researchers' "score" (1-7)."""
    cutoff: float = 0.75
    """Ranking and flagging agreement needed to pass."""
    demonstration_cutoff: float = 6.0
    """Mean demonstration score needed to pass."""
    bootstrap: int = 1000
    """Bootstrap resamples of prompts for the 95% intervals (0: none)."""

    def validate(self) -> None:
        check(bool(self.rankings) == bool(self.reference), "reference", "give --rankings and --reference together")
        check(bool(self.rankings or self.demonstrations), "rankings", "give --rankings or --demonstrations")
        check(0 < self.cutoff <= 1, "cutoff", "in (0, 1]")
        check(1 <= self.demonstration_cutoff <= 7, "demonstration_cutoff", "1 to 7")


def _screen(config: ScreenConfig) -> None:
    from instructgpt.data.jsonl import read_models
    from instructgpt.data.schemas import Demonstration
    from instructgpt.labelers.agreement import ScoredDemonstration, screen, screen_demonstrations, screen_flags
    from instructgpt.labelers.human import read_exports

    def percent(rate) -> str:
        return "-" if rate.rate is None else f"{100 * rate.rate:.1f}% of {rate.judgments:,}"

    def verdict(passed: bool) -> str:
        return "pass" if passed else "below cutoff"

    if config.rankings:
        judged = [r for r in read_exports(config.rankings) if not isinstance(r, Demonstration)]
        reference = [r for r in read_exports(config.reference) if not isinstance(r, Demonstration)]
        for title, screened in (
            ("ranking agreement", screen(judged, reference, config.cutoff, config.bootstrap)),
            ("sensitive-speech flagging agreement", screen_flags(judged, reference, config.cutoff, config.bootstrap)),
        ):
            print(f"{title} with the reference (cutoff {100 * config.cutoff:.0f}%):")
            for who, result in screened.items():
                print(f"  {who:<24} {percent(result.agreement):<24} {verdict(result.passed)}")
    if config.demonstrations:
        scored = [r for path in config.demonstrations for r in read_models(path, ScoredDemonstration)]
        print(f"demonstration score (cutoff {config.demonstration_cutoff:g}/7):")
        for who, result in screen_demonstrations(scored, config.demonstration_cutoff).items():
            print(f"  {who:<24} {result.mean:.2f} of {result.demonstrations:<16,} {verdict(result.passed)}")


def _sessions(config: DatabaseConfig):
    from instructgpt.labeling import db

    engine = db.make_engine(config.database_url, pool_size=2)
    db.migrate(engine)
    return db.session_factory(engine)


def _serve(config: ServeConfig) -> None:
    import uvicorn

    from instructgpt.labeling.app import create_app

    app = create_app(
        config.database_url, config.session_hours, config.idle_minutes, config.secure_cookies, config.max_upload_mb
    )
    uvicorn.run(app, host=config.host, port=config.port, log_level="warning", timeout_graceful_shutdown=10)


def _migrate(config: DatabaseConfig) -> None:
    from instructgpt.labeling import db

    engine = db.make_engine(config.database_url, pool_size=1)
    db.migrate(engine)
    print(f"schema at revision {db.current_revision(engine)}")


def _password() -> str:
    if PASSWORD_ENV in os.environ:
        return os.environ[PASSWORD_ENV]
    if sys.stdin.isatty():
        first, second = getpass.getpass("Password: "), getpass.getpass("Again: ")
        if first != second:
            raise ConfigError("password: the two entries differ")
        return first
    return sys.stdin.readline().rstrip("\n")


def _create_user(config: UserConfig) -> None:
    from instructgpt.labeling import store

    check(bool(config.username), "username", "required")
    with _sessions(config).begin() as session:
        store.create_user(session, config.username, _password(), config.role)
    print(f"created {config.role} {config.username}")


def _set_active(active: bool) -> Callable[[AccountConfig], None]:
    def action(config: AccountConfig) -> None:
        from instructgpt.labeling import store

        check(bool(config.username), "username", "required")
        with _sessions(config).begin() as session:
            store.set_active(session, config.username, active)
        print(f"{'reactivated' if active else 'deactivated'} {config.username}")

    return action


def _invite(config: InviteConfig) -> None:
    from sqlalchemy import select

    from instructgpt.labeling import store
    from instructgpt.labeling.models import User

    with _sessions(config).begin() as session:
        admin = session.scalar(select(User.id).where(User.role == "admin").order_by(User.id))
        if admin is None:
            raise store.StoreError("create an admin first: instructgpt label create-user --username NAME")
        project_id = store.find_project(session, config.project).id if config.project else None
        token = store.create_invite(session, admin, config.role, project_id)
    print(f"{config.base_url.rstrip('/')}/invite/{token}")


def _project(config: ProjectConfig) -> None:
    from instructgpt.labeling import store

    check(bool(config.name), "name", "required")
    instructions = config.instructions_file.read_text(encoding="utf-8") if config.instructions_file else ""
    with _sessions(config).begin() as session:
        project = store.create_project(
            session, config.name, config.kind, instructions, config.overlap, config.ask_ratings
        )
    print(f"created {config.kind} project {project.name!r}")


def _import_prompts(config: FileConfig) -> None:
    from instructgpt.labeling import store
    from instructgpt.labeling.imports import import_prompt_file

    with _sessions(config).begin() as session:
        added, known = import_prompt_file(session, store.find_project(session, config.project).id, config.file)
    print(f"imported {added} prompts ({known} already there)")


def _attach_outputs(config: FileConfig) -> None:
    from instructgpt.labeling import store
    from instructgpt.labeling.imports import attach_output_file

    with _sessions(config).begin() as session:
        counts = attach_output_file(session, store.find_project(session, config.project).id, config.file)
    print(f"outputs: {counts['added']} added, {counts['duplicate']} already there")


def _generate(config: GenerateConfig) -> None:
    from instructgpt.labeling import store

    with _sessions(config).begin() as session:
        counts = store.generate_outputs(
            session,
            store.find_project(session, config.project).id,
            config.model,
            config.k,
            config.temperature,
            config.max_new_tokens,
            config.seed,
            config.model_name or None,
        )
    print("generated: " + ", ".join(f"{n} {what}" for what, n in counts.items()))


def _members(config: MembersConfig) -> None:
    from sqlalchemy import select

    from instructgpt.labeling import store
    from instructgpt.labeling.models import User

    with _sessions(config).begin() as session:
        ids = dict(session.execute(select(User.username, User.id).where(User.username.in_(config.usernames))).all())
        unknown = sorted(set(config.usernames) - set(ids))
        if unknown:
            raise store.StoreError(f"unknown users: {', '.join(unknown)}")
        made = store.set_members(session, store.find_project(session, config.project).id, list(ids.values()))
    print(f"{len(ids)} labelers; {made} new assignments")


def _export(config: ExportConfig) -> None:
    from instructgpt.labeling import store
    from instructgpt.labeling.export import export_file

    with _sessions(config)() as session:
        count = export_file(session, store.find_project(session, config.project).id, config.out)
    print(f"exported {count} records to {config.out}")


SUBCOMMANDS: dict[str, tuple[type, Callable]] = {
    "serve": (ServeConfig, _serve),
    "migrate": (DatabaseConfig, _migrate),
    "create-user": (UserConfig, _create_user),
    "deactivate": (AccountConfig, _set_active(False)),
    "reactivate": (AccountConfig, _set_active(True)),
    "invite": (InviteConfig, _invite),
    "project": (ProjectConfig, _project),
    "import-prompts": (FileConfig, _import_prompts),
    "attach-outputs": (FileConfig, _attach_outputs),
    "generate": (GenerateConfig, _generate),
    "members": (MembersConfig, _members),
    "export": (ExportConfig, _export),
    "screen": (ScreenConfig, _screen),
}


def main(argv: list[str]) -> int:
    """Runs ``instructgpt label SUBCOMMAND [flags]``; 0 success, 1 failed, 2 bad usage."""
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in SUBCOMMANDS:
        print(__doc__.strip(), file=sys.stderr if argv and argv[0] not in ("-h", "--help") else sys.stdout)
        return 0 if not argv or argv[0] in ("-h", "--help") else 2
    cls, action = SUBCOMMANDS[argv[0]]
    from instructgpt.data.jsonl import DataError
    from instructgpt.models.loader import ModelLoadError

    try:
        config = parse(cls, argv[1:], prog=f"instructgpt label {argv[0]}", description=cls.__doc__)
    except ConfigError as err:
        print(f"error: config: {err}", file=sys.stderr)
        return 2
    try:
        from instructgpt.labeling.store import StoreError
    except ModuleNotFoundError as err:
        print(
            f"error: the labeling app needs the 'label' extra ({err.name} is missing): {LABEL_EXTRA}", file=sys.stderr
        )
        return 2
    try:
        action(config)
    except ConfigError as err:
        print(f"error: config: {err}", file=sys.stderr)
        return 2
    except DataError as err:
        print(f"error: data:\n{err}", file=sys.stderr)
        return 1
    except (StoreError, ModelLoadError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0
