"""Fixtures of the evaluation tests: the bundled data and the offline scorers (trained once, cached)."""

from pathlib import Path

import pytest

DATA = Path(__file__).resolve().parents[3] / "shared" / "data"


@pytest.fixture(scope="session")
def data_root() -> Path:
    from instructgpt.data.importers import find_data_root

    try:
        return find_data_root(Path(__file__).parent)
    except FileNotFoundError:
        pytest.skip("bundled data (shared/data) not found")


@pytest.fixture(scope="session")
def truth_judges(data_root):
    from instructgpt.evaluation.truthfulqa import load_judges

    return load_judges(data_root)


@pytest.fixture(scope="session")
def toxicity_scorer(data_root):
    from instructgpt.evaluation.toxicity import load_offline_scorer

    return load_offline_scorer(data_root)
