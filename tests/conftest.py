"""Shared fixtures: tiny models, a small demonstrations file, offline mode."""

import json
import os
import random
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never reach the network
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(autouse=True, scope="session")
def _quiet_transformers():
    from transformers.utils import logging

    logging.disable_progress_bar()
    logging.set_verbosity_error()


@pytest.fixture
def one_thread():
    """Tiny models run fastest on one thread (and the CPU is shared); modules opt in with
    ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def tokenizer():
    from instructgpt.models.tiny import tiny_tokenizer

    return tiny_tokenizer()


@pytest.fixture
def demos_file(tmp_path) -> Path:
    """64 demonstrations of a learnable task: repeat a word three times."""
    rng = random.Random(0)
    words = "alpha beta gamma delta epsilon zeta eta theta".split()
    path = tmp_path / "demos.jsonl"
    with path.open("w") as handle:
        for _ in range(64):
            word = rng.choice(words)
            record = {
                "prompt": f"Repeat the word {word} three times.",
                "response": f"{word} {word} {word}",
                "labeler_id": "l1",
            }
            handle.write(json.dumps(record) + "\n")
    return path
