"""Load test of the labeling app: N simulated labelers submit rankings concurrently against
``instructgpt label serve`` (uvicorn, one process, in a subprocess), and nothing may be lost.

    python bench/label_load.py                      # 50 labelers for 60 s on SQLite
    python bench/label_load.py --duration 10        # a short run
    python bench/label_load.py --database-url postgresql://postgres@127.0.0.1:54329/postgres \\
        --out bench/results/label_load_postgres.json

Each labeler logs in once (before the clock starts), then loops as fast as it can, with no
think time: ``GET /projects/P/next`` (a redirect to its next task), ``GET /tasks/A`` (the
ranking page, K outputs), ``POST /tasks/A`` with a random ranking (ties included), a 1-7
rating and flags per output. Every ``--retry-every``-th submission is posted a second time
with the same idempotency key, as a double click or a client retry would.

**Crash**: ``--crash-at`` seconds into the load (default: half-way; 0 for none) the server is
killed with SIGKILL, mid-request, and started again on the same port and database. A client
whose request failed on the way (connection refused or cut) re-sends it, a submission with
the same idempotency key, until the server answers, as a browser's retry would.

A submission counts as acknowledged when the server answered it with its 303 redirect. After
the run the server is stopped and the database is read back: **lost** = acknowledged
submissions not stored (or stored for another assignment or labeler), **extra** = stored
submissions never acknowledged, **duplicated** = answers stored more than once for one
assignment or key. All must be 0; ``resent_after_crash`` counts the submissions re-sent after
the kill. The output says how durable the database was set to be: SQLite's journal mode and
``synchronous``, PostgreSQL's ``fsync`` and ``synchronous_commit`` (``scripts/services.sh``
starts its test server with ``fsync=off``: give a server with fsync on for figures that mean
anything about a crash of the machine; a crash of the app alone does not depend on it). One
with fsync on, on port 54339::

    eval "$(INSTRUCTGPT_PG_FSYNC=on INSTRUCTGPT_PGPORT=54339 INSTRUCTGPT_PGDATA=/tmp/instructgpt-pgdata-fsync \
        bash scripts/services.sh)"
    python bench/label_load.py --database-url "$INSTRUCTGPT_TEST_POSTGRES_URL" \
        --out bench/results/label_load_postgres.json

Reported: requests/s (every HTTP request of the timed phase, all kinds), submissions/s, and
latency percentiles per request kind, measured at the client. The clients (one asyncio
process) share the machine with the server, so these are the numbers of the whole loop on
this machine, not of the server alone.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from common import format_table, write_json  # noqa: E402

PASSWORD = "load-test-password"
KEY = re.compile(r'name="idempotency_key" value="([^"]+)"')
CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--labelers", type=int, default=50, help="simulated labelers (default: %(default)s)")
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of load (default: %(default)s)")
    parser.add_argument("--k", type=int, default=4, help="outputs per ranking (default: %(default)s)")
    parser.add_argument("--overlap", type=int, default=2, help="labelers per item (default: %(default)s)")
    parser.add_argument(
        "--items-per-labeler", type=int, default=300, help="work available to each labeler (default: %(default)s)"
    )
    parser.add_argument(
        "--retry-every", type=int, default=10, help="send every N-th submission twice (default: %(default)s)"
    )
    parser.add_argument(
        "--crash-at",
        type=float,
        default=None,
        help="kill -9 the server this many seconds into the load and restart it (default: half the duration; 0: none)",
    )
    parser.add_argument("--database-url", default=None, help="default: a new SQLite file in a temporary folder")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "label_load.json")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def seed_database(url: str, args: argparse.Namespace) -> tuple[int, list[str]]:
    """An admin, the labelers and one ranking project with enough work for the whole run."""
    from instructgpt.data.schemas import Prompt
    from instructgpt.labeling import db, store

    engine = db.make_engine(url, pool_size=2)
    db.migrate(engine)
    sessions = db.session_factory(engine)
    items = args.labelers * args.items_per_labeler // args.overlap
    names = [f"labeler{i:03d}" for i in range(args.labelers)]
    with sessions.begin() as session:
        store.create_user(session, "admin", PASSWORD, "admin")
        ids = [store.create_user(session, name, PASSWORD, "labeler").id for name in names]
        project = store.create_project(session, "load", "ranking", "Rank by helpfulness.", args.overlap)
        store.import_prompts(
            session,
            project.id,
            [
                Prompt(id=f"p{i}", text=f"Prompt number {i}: explain something.", user_id="bench", source="api")
                for i in range(items)
            ],
        )
        store.attach_outputs(
            session,
            project.id,
            [
                store.OutputRecord(prompt_id=f"p{i}", response=f"Output {j} of prompt {i}. " * 20, model=f"m{j}")
                for i in range(items)
                for j in range(args.k)
            ],
        )
        store.set_members(session, project.id, ids)
        project_id = project.id
    engine.dispose()
    return project_id, names


def start_server(url: str, port: int = 0) -> tuple[subprocess.Popen, str]:
    if not port:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")}
    server = subprocess.Popen(
        [sys.executable, "-m", "instructgpt.cli.main", "label", "serve", "--database-url", url, "--port", str(port)],
        env=env,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300  # a starting server on a crowded machine (nice 19) can take a minute
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(base + "/healthz", timeout=1)
            return server, base
        except OSError:
            if server.poll() is not None:
                raise SystemExit("the server did not start") from None
            time.sleep(0.1)
    raise SystemExit("the server did not answer within 300 s")


class Labeler:
    def __init__(self, name: str, base: str, rng: random.Random):
        import httpx

        self.name, self.rng = name, rng
        limits = httpx.Limits(max_connections=1)
        self.client = httpx.AsyncClient(base_url=base, follow_redirects=False, timeout=60, limits=limits)
        self.latency: dict[str, list[float]] = {"next": [], "page": [], "submit": [], "retry": []}
        self.acked: list[tuple[int, str]] = []
        self.unexpected: list[str] = []
        self.resent: dict[str, int] = {"next": 0, "page": 0, "submit": 0, "retry": 0}
        self.ran_out = False

    async def request(self, kind: str, method: str, url: str, **kwargs):
        """One request; while the server is down (killed), the same request again every 0.1 s."""
        import httpx

        started = time.perf_counter()
        for attempt in range(1200):
            try:
                response = await self.client.request(method, url, **kwargs)
                break
            except httpx.TransportError:
                self.resent[kind] += attempt == 0
                await asyncio.sleep(0.1)
        else:
            raise SystemExit("the server did not come back within 120 s")
        self.latency[kind].append(time.perf_counter() - started)
        return response

    async def login(self) -> None:
        page = await self.client.get("/login")
        response = await self.client.post(
            "/login", data={"csrf_token": CSRF.search(page.text).group(1), "username": self.name, "password": PASSWORD}
        )
        assert response.status_code == 303, response.text

    def answer(self, k: int) -> dict:
        columns = [self.rng.randint(1, k) for _ in range(k)]
        while len(set(columns)) < 2:
            columns = [self.rng.randint(1, k) for _ in range(k)]
        data = {f"rank_{i}": str(c) for i, c in enumerate(columns)}
        data.update({f"likert_{i}": str(self.rng.randint(1, 7)) for i in range(k)})
        data["flag_0"] = ["hallucination"] if self.rng.random() < 0.3 else []
        data["notes"] = "load test"
        return data

    async def run(self, project_id: int, k: int, deadline: float, retry_every: int) -> None:
        done = 0
        while time.perf_counter() < deadline:
            nxt = await self.request("next", "GET", f"/projects/{project_id}/next")
            location = nxt.headers.get("location", "")
            if not location.startswith("/tasks/"):
                self.ran_out = True
                return
            page = await self.request("page", "GET", location)
            if page.status_code != 200:
                self.unexpected.append(f"page {page.status_code}")
                continue
            data = {
                "csrf_token": CSRF.search(page.text).group(1),
                "idempotency_key": KEY.search(page.text).group(1),
                **self.answer(k),
            }
            response = await self.request("submit", "POST", location, data=data)
            if response.status_code != 303:
                self.unexpected.append(f"submit {response.status_code}")
                continue
            self.acked.append((int(location.rsplit("/", 1)[1]), data["idempotency_key"]))
            done += 1
            if retry_every and done % retry_every == 0:
                again = await self.request("retry", "POST", location, data=data)
                if again.status_code != 303:
                    self.unexpected.append(f"retry {again.status_code}")


class Server:
    """The served app in a subprocess, which ``crash`` kills with SIGKILL and starts again."""

    def __init__(self, url: str):
        self.url = url
        self.process, self.base = start_server(url)
        self.crash: dict = {}

    async def crash_after(self, seconds: float) -> None:
        await asyncio.sleep(seconds)
        self.process.kill()  # SIGKILL: no graceful shutdown, requests cut mid-way
        self.process.wait()
        killed = time.perf_counter()
        port = int(self.base.rsplit(":", 1)[1])
        self.process, _ = await asyncio.to_thread(start_server, self.url, port)
        self.crash = {"killed_at_s": seconds, "down_s": time.perf_counter() - killed, "signal": "SIGKILL"}
        print(f"server killed (SIGKILL) at {seconds:.1f} s; back after {self.crash['down_s']:.1f} s", flush=True)

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(30)


async def load(
    server: Server, project_id: int, names: list[str], args: argparse.Namespace
) -> tuple[list[Labeler], float]:
    labelers = [Labeler(name, server.base, random.Random(args.seed * 1000 + i)) for i, name in enumerate(names)]
    for start in range(0, len(labelers), 5):  # Argon2 checks are heavy: log in a few at a time
        await asyncio.gather(*(l.login() for l in labelers[start : start + 5]))
    print(f"{args.labelers} labelers logged in; submitting for {args.duration:.0f} s ...", flush=True)
    started = time.perf_counter()
    deadline = started + args.duration
    crash_at = args.duration / 2 if args.crash_at is None else args.crash_at
    work = [l.run(project_id, args.k, deadline, args.retry_every) for l in labelers]
    await asyncio.gather(*work, *([server.crash_after(crash_at)] if 0 < crash_at < args.duration else []))
    elapsed = time.perf_counter() - started
    await asyncio.gather(*(l.client.aclose() for l in labelers))
    return labelers, elapsed


def durability(url: str) -> dict:
    """How durable the database was set to be, read from the database itself."""
    from instructgpt.labeling import db

    engine = db.make_engine(url, pool_size=1)
    with engine.connect() as connection:
        if engine.dialect.name == "sqlite":
            settings = {
                "journal_mode": connection.exec_driver_sql("PRAGMA journal_mode").scalar(),
                "synchronous": {0: "OFF", 1: "NORMAL", 2: "FULL", 3: "EXTRA"}[
                    connection.exec_driver_sql("PRAGMA synchronous").scalar()
                ],
            }
        else:
            settings = {
                name: connection.exec_driver_sql(f"SHOW {name}").scalar() for name in ("fsync", "synchronous_commit")
            }
    engine.dispose()
    return {"database": engine.dialect.name, **settings}


def check_stored(url: str, labelers: list[Labeler]) -> dict:
    """Reads the database back after the server stopped: every acknowledged submission must be
    there, for its assignment and labeler, exactly once."""
    from collections import Counter

    from sqlalchemy import select

    from instructgpt.labeling import db
    from instructgpt.labeling.models import Submission, User

    engine = db.make_engine(url, pool_size=1)
    with db.session_factory(engine)() as session:
        rows = session.execute(
            select(Submission.idempotency_key, Submission.assignment_id, User.username).join(User)
        ).all()
    engine.dispose()
    stored = {key: (assignment, user) for key, assignment, user in rows}
    per_assignment = Counter(assignment for _, assignment, _ in rows)
    per_key = Counter(key for key, _, _ in rows)
    duplicated = sum(n - 1 for n in per_assignment.values()) + sum(n - 1 for n in per_key.values())
    acked = {key: (assignment, l.name) for l in labelers for assignment, key in l.acked}
    lost = sum(1 for key, where in acked.items() if stored.get(key) != where)
    return {
        "acknowledged": len(acked),
        "stored": len(rows),
        "lost": lost,
        "extra": len(set(stored) - set(acked)),
        "duplicated": duplicated,
        "resent_after_crash": sum(l.resent["submit"] + l.resent["retry"] for l in labelers),
        "retries_acknowledged": sum(len(l.latency["retry"]) for l in labelers)
        - sum(u.startswith("retry") for l in labelers for u in l.unexpected),
    }


def percentiles(seconds: list[float]) -> dict:
    if not seconds:
        return {"count": 0}
    ordered = sorted(seconds)
    pick = lambda q: ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000  # noqa: E731
    return {
        "count": len(ordered),
        "p50_ms": pick(0.50),
        "p95_ms": pick(0.95),
        "p99_ms": pick(0.99),
        "max_ms": ordered[-1] * 1000,
        "mean_ms": statistics.fmean(ordered) * 1000,
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    folder = tempfile.TemporaryDirectory(prefix="label-load-")
    url = args.database_url or f"sqlite:///{folder.name}/labeling.db"
    backend = url.split(":", 1)[0]
    if args.database_url and backend.startswith("postgres"):
        schema = f"load_{os.getpid()}"
        from sqlalchemy import create_engine

        from instructgpt.labeling.db import normalise_url

        with create_engine(normalise_url(url)).begin() as connection:
            connection.exec_driver_sql(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
            connection.exec_driver_sql(f"CREATE SCHEMA {schema}")
        url += ("&" if "?" in url else "?") + f"options=-csearch_path%3D{schema}"
    print(f"seeding {args.labelers} labelers x {args.items_per_labeler} items ({backend}) ...", flush=True)
    project_id, names = seed_database(url, args)
    settings = durability(url)
    print("durability: " + ", ".join(f"{k}={v}" for k, v in settings.items()), flush=True)
    server = Server(url)
    try:
        labelers, elapsed = asyncio.run(load(server, project_id, names, args))
    finally:
        server.stop()
    integrity = check_stored(url, labelers)
    latency = {
        kind: percentiles([s for l in labelers for s in l.latency[kind]])
        for kind in ("next", "page", "submit", "retry")
    }
    everything = percentiles([s for l in labelers for kind in l.latency for s in l.latency[kind]])
    requests = everything["count"]
    result = {
        "benchmark": "label_load",
        "config": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "backend": backend,
        "durability": settings,
        "crash": server.crash or None,
        "duration_s": elapsed,
        "requests": requests,
        "requests_per_s": requests / elapsed,
        "submissions_per_s": integrity["acknowledged"] / elapsed,
        "latency": {**latency, "all": everything},
        "integrity": integrity,
        "unexpected_responses": sorted({u for l in labelers for u in l.unexpected}),
        "unexpected_count": sum(len(l.unexpected) for l in labelers),
        "labelers_out_of_work": sum(l.ran_out for l in labelers),
        "machine": {
            "logical_cpus": os.cpu_count(),
            "load_average_1_5_15min": os.getloadavg(),
            "python": sys.version.split()[0],
        },
        "note": "clients and server share the machine (2 CPU cores shared with other work when measured)",
    }
    rows = [
        [kind, v["count"], v.get("p50_ms"), v.get("p95_ms"), v.get("p99_ms")]
        for kind, v in {**latency, "all": everything}.items()
    ]
    print(format_table(["request", "count", "p50 ms", "p95 ms", "p99 ms"], rows))
    print(
        f"\n{requests / elapsed:.1f} requests/s, {result['submissions_per_s']:.1f} submissions/s over {elapsed:.1f} s"
    )
    crash = server.crash
    if crash:
        print(f"crash: SIGKILL at {crash['killed_at_s']:.1f} s, down {crash['down_s']:.1f} s; ", end="")
    print("durability: " + ", ".join(f"{k}={v}" for k, v in settings.items()))
    print("integrity: " + ", ".join(f"{k} {v}" for k, v in integrity.items()))
    write_json(args.out, result)
    print(f"wrote {args.out}")
    ok = not (integrity["lost"] or integrity["extra"] or integrity["duplicated"] or result["unexpected_count"])
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
