"""Atomic files and the cache of computed values (instructgpt.files)."""

from __future__ import annotations

import os
import pickle

import pytest

from instructgpt.files import atomic_file, digest, file_identity, load_or_compute, umask


def test_atomic_file_keeps_old_content_on_error(tmp_path):
    path = tmp_path / "data.bin"
    path.write_bytes(b"old")
    with pytest.raises(RuntimeError), atomic_file(path) as handle:
        handle.write(b"new, half written")
        raise RuntimeError("crash")
    assert path.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data.bin"]  # no temporary file left


def test_atomic_file_writes_with_the_umask_mode(tmp_path):
    path = tmp_path / "sub" / "data.bin"
    with atomic_file(path) as handle:
        handle.write(b"new")
    assert path.read_bytes() == b"new"
    assert os.stat(path).st_mode & 0o777 == 0o666 & ~umask()


def test_load_or_compute_computes_once_and_again_for_a_corrupt_entry(tmp_path):
    path, calls = tmp_path / "value.pkl", []

    def compute():
        calls.append(1)
        return {"v": len(calls)}

    def load(p):
        return pickle.loads(p.read_bytes())

    assert load_or_compute(path, compute, load, pickle.dump) == {"v": 1}
    assert load_or_compute(path, compute, load, pickle.dump) == {"v": 1}
    assert len(calls) == 1
    path.write_bytes(b"not a pickle")
    assert load_or_compute(path, compute, load, pickle.dump) == {"v": 2}
    assert load(path) == {"v": 2}


def test_file_identity_follows_content_and_location(tmp_path):
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "weights").write_bytes(b"1234")
    before = file_identity(folder)
    assert before[0] == str(folder.resolve()) and before[1][:2] == ["weights", 4]
    (folder / "weights").write_bytes(b"123456")
    assert digest(file_identity(folder)) != digest(before)
    moved = tmp_path / "elsewhere" / "model"
    moved.parent.mkdir()
    folder.rename(moved)
    assert file_identity(moved, resolve=False)[0] == "model"
    assert file_identity("google/gemma-3-270m") == ["google/gemma-3-270m"]
