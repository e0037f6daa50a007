"""End to end in headless Chromium (Debian's, driven by Playwright): the served app
(``instructgpt label serve`` in a subprocess), a labeler logs in, ranks by drag and drop and
by keyboard, rates, submits (once by a double click), and the admin's export validates."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from label_helpers import PASSWORD, open_db, prompts, setup_project
from sqlalchemy import func, select

from instructgpt.cli.data import main as data_main
from instructgpt.labeling.models import Submission

playwright = pytest.importorskip("playwright.sync_api")


def chromium() -> str | None:
    """Debian's chromium: the binary itself (``/usr/bin/chromium`` is a wrapper script)."""
    for candidate in (os.environ.get("INSTRUCTGPT_CHROMIUM"), "/usr/lib/chromium/chromium", shutil.which("chromium")):
        if candidate and Path(candidate).exists():
            real = Path(candidate).resolve().parent.parent / "lib" / "chromium" / "chromium"
            return str(real) if candidate == "/usr/bin/chromium" and real.exists() else candidate
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def served(tmp_path):
    """A served app over a SQLite file holding one ranking project of 2 prompts x 3 outputs."""
    url = f"sqlite:///{tmp_path / 'labeling.db'}"
    engine, sessions = open_db(url)
    ids = setup_project(sessions, n=2, k=3, labelers=("ann",))
    port = free_port()
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(Path(__file__).parents[2] / "src"), os.environ.get("PYTHONPATH", "")]),
    }
    server = subprocess.Popen(
        [sys.executable, "-m", "instructgpt.cli.main", "label", "serve", "--database-url", url, "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    for _ in range(300):
        try:
            urllib.request.urlopen(base + "/healthz", timeout=1)
            break
        except OSError:
            if server.poll() is not None:
                pytest.fail(server.stdout.read().decode())
            time.sleep(0.1)
    yield base, ids, sessions
    server.terminate()
    server.wait(10)
    engine.dispose()


def test_rank_rate_submit_and_export_in_chromium(served, tmp_path):
    executable = chromium()
    if executable is None:
        pytest.skip("no chromium: run scripts/services.sh")
    base, ids, sessions = served
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=executable, headless=True, args=["--no-sandbox"])
        page = browser.new_page(accept_downloads=True, viewport={"width": 1280, "height": 720})
        page.goto(base + "/login")
        page.fill("#username", "ann")
        page.fill("#password", PASSWORD)
        page.click("#login")
        assert page.inner_text("td.progress") == "0 / 2"
        page.click("text=Start")
        assert page.inner_text("#progress") == "0 / 2" and "Rank by helpfulness." in page.inner_text("#instructions")

        # Drag A to "Rank 1 (best)" and B to "Rank 2"; C joins B by keyboard: a tie.
        page.drag_and_drop("#card-A", "#column-1 .cards")
        page.drag_and_drop("#card-B", "#column-2 .cards")
        page.focus("#card-C")
        page.keyboard.press("2")
        assert page.locator("#column-1 .card").count() == 1 and page.locator("#column-2 .card").count() == 2
        assert page.input_value("select[name=rank_2]") == "2"
        for letter, rating in zip("ABC", (7, 4, 4)):
            page.check(f"#likert-{letter} input[value='{rating}']")
        page.check("#flags-B input[value=hallucination]")
        page.fill("#notes", "B and C are equally vague.")
        page.locator("#submit").scroll_into_view_if_needed()  # progress and instructions stay in view
        for element in ("#progress", "#instructions"):
            box = page.locator(element).bounding_box()
            assert 0 <= box["y"] < page.viewport_size["height"]
        page.click("#submit")
        page.wait_for_url("**/tasks/*")
        assert page.inner_text("#progress") == "1 / 2"

        # The second task by keyboard alone (arrow keys and the rank menus); a double click submits once.
        page.focus("#card-A")
        page.keyboard.press("ArrowRight")
        page.keyboard.press("ArrowRight")
        page.select_option("select[name=rank_1]", "1")
        page.select_option("select[name=rank_2]", "3")
        assert page.locator("#column-2 #card-A").count() == 1
        for letter in "ABC":
            page.check(f"#likert-{letter} input[value='5']")
        page.dblclick("#submit")
        page.wait_for_url(base + "/")
        assert page.inner_text("td.progress") == "2 / 2"
        with sessions() as session:
            assert session.scalar(select(func.count()).select_from(Submission)) == 2

        page.click("text=Log out")
        page.fill("#username", "admin")
        page.fill("#password", PASSWORD)
        page.click("#login")
        page.goto(f"{base}/admin/projects/{ids['project']}")
        with page.expect_download() as download:
            page.click("#export")
        path = tmp_path / "rankings.jsonl"
        download.value.save_as(path)
        browser.close()
    assert data_main(["validate", "--kind", "rankings", str(path)]) == 0
    first, second = [json.loads(line) for line in path.read_text().splitlines()]
    assert first["ranks"] == [0, 1, 1] and first["likert"] == [7, 4, 4] and first["labeler_id"] == "ann"
    assert first["metadata"][1]["hallucination"] and first["notes"] == "B and C are equally vague."
    assert second["ranks"] == [1, 0, 2]


def test_a_board_of_9_outputs_fits_a_1280_pixel_window(served):
    from instructgpt.labeling import store

    executable = chromium()
    if executable is None:
        pytest.skip("no chromium: run scripts/services.sh")
    base, ids, sessions = served
    with sessions.begin() as session:
        wide = store.create_project(session, "nine", "ranking").id
        store.import_prompts(session, wide, prompts(1, prefix="w"))
        texts = [f"Output {j}: " + "a fairly long answer with many words in it " * 5 for j in range(9)]
        store.attach_outputs(session, wide, [store.OutputRecord(prompt_id="w0", response=t) for t in texts])
        store.set_members(session, wide, [ids["ann"]])
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=executable, headless=True, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1280, "height": 720})
        page.goto(base + "/login")
        page.fill("#username", "ann")
        page.fill("#password", PASSWORD)
        page.click("#login")
        page.goto(f"{base}/projects/{wide}/next")
        assert page.inner_text("#column-9 h4") == "Rank 9 (worst)"
        assert page.evaluate("document.documentElement.scrollWidth") <= 1280  # no sideways scrolling
        for column in range(10):
            box = page.locator(f"#column-{column}").bounding_box()
            assert box["x"] >= 0 and box["x"] + box["width"] <= 1280, (column, box)
        page.drag_and_drop("#card-I", "#column-9 .cards")  # the last column still takes a card
        assert page.input_value("select[name=rank_8]") == "9"
        browser.close()
