"""A trimmed vocabulary: the corpus tokenizes as before, the model is the base model conditioned on the kept tokens."""

import json
from pathlib import Path

import pytest
import torch

from instructgpt.models.loader import load_model
from instructgpt.models.tiny import tiny_bpe_tokenizer, tiny_model
from instructgpt.models.vocabulary import (
    TRIM_JSON,
    VocabularyError,
    encode,
    kept_ids,
    merged_symbols,
    trim_model,
    trimmed_model,
)

CORPUS = [
    "The cat sat on the mat.",
    "A quick brown fox jumps over the lazy dog.",
    "The theory of everything, then the thesis.",
    "Dogs and cats: other animals sat there.",
] * 10
WIDER = CORPUS + ["Zebras graze quietly while xylophones play jazz music.", "Ökonomie, naïve café, 東京."] * 10


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """A tiny Gemma model with a BPE vocabulary trained on a wider text than the corpus it is trimmed to."""
    folder = tmp_path_factory.mktemp("base")
    tokenizer = tiny_bpe_tokenizer(WIDER, vocab_size=420)
    model = tiny_model(tokenizer, seed=3)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def trimmed(base, tmp_path_factory):
    return trim_model(base, tmp_path_factory.mktemp("t") / "trimmed", CORPUS, digest="test")


def _kept(folder):
    return json.loads((folder / TRIM_JSON).read_text())["kept_ids"]


def test_the_corpus_tokenizes_exactly_as_before_and_other_text_still_round_trips(base, trimmed):
    _, full = load_model(base)
    _, small = load_model(trimmed)
    kept = _kept(trimmed)
    assert len(small) == len(kept) < len(full)  # something was dropped
    for text in set(CORPUS):
        assert [kept[i] for i in small(text).input_ids] == full(text).input_ids
    for text in ["Zebras graze quietly", "naïve café, 東京 and ünïcödé never seen"]:
        ids = small(text).input_ids
        assert small.decode(ids) == text  # dropped pieces fall back to smaller ones, then to bytes
        assert max(ids) < len(kept)
    assert len(small("Zebras graze quietly").input_ids) > len(full("Zebras graze quietly").input_ids)


def test_the_trimmed_model_is_the_base_model_conditioned_on_the_kept_tokens(base, trimmed):
    full_model, full_tokenizer = load_model(base)
    small_model, small_tokenizer = load_model(trimmed)
    kept = torch.tensor(_kept(trimmed))
    text = "The cat sat on the lazy dog."
    with torch.no_grad():
        full = full_model(input_ids=full_tokenizer(text, return_tensors="pt").input_ids).logits.log_softmax(-1)
        small = small_model(input_ids=small_tokenizer(text, return_tensors="pt").input_ids).logits.log_softmax(-1)
    conditioned = full[..., kept].log_softmax(-1)  # log p(t) - log p(kept)
    torch.testing.assert_close(small, conditioned, atol=1e-5, rtol=1e-5)


def test_special_token_ids_agree_between_tokenizer_and_configs(trimmed):
    _, tokenizer = load_model(trimmed)
    config = json.loads((trimmed / "config.json").read_text())
    assert config["vocab_size"] == len(tokenizer)
    assert (config["eos_token_id"], config["bos_token_id"], config["pad_token_id"]) == (
        tokenizer.eos_token_id,
        tokenizer.bos_token_id,
        tokenizer.pad_token_id,
    )
    assert tokenizer.convert_ids_to_tokens(tokenizer.eos_token_id) == "<eos>"


def test_merged_symbols_end_in_the_token_bpe_builds():
    tokenizer = tiny_bpe_tokenizer(CORPUS, vocab_size=340)
    state = json.loads(tokenizer.backend_tokenizer.to_str())["model"]
    ranks = {tuple(m): r for r, m in enumerate(state["merges"])}
    for piece in tokenizer.convert_ids_to_tokens(tokenizer("the theory").input_ids):
        symbols = merged_symbols(piece, ranks)
        assert piece in symbols and set(piece) <= symbols  # from its characters to itself


def test_every_byte_token_and_special_token_is_kept(base):
    tokenizer_json = json.loads((base / "tokenizer.json").read_text())
    kept = set(kept_ids(tokenizer_json, encode(tokenizer_json, ["cat"])))
    vocab = tokenizer_json["model"]["vocab"]
    assert {vocab[f"<0x{n:02X}>"] for n in range(256)} <= kept
    assert {t["id"] for t in tokenizer_json["added_tokens"]} <= kept


def test_only_bpe_tokenizers_are_trimmed():
    with pytest.raises(VocabularyError, match="only BPE"):
        kept_ids({"model": {"type": "Unigram"}}, [[0]])


def test_trimmed_model_is_built_once_per_corpus_and_named_by_it(base, tmp_path, monkeypatch):
    monkeypatch.setenv("INSTRUCTGPT_CACHE", str(tmp_path / "cache"))
    data = tmp_path / "data"
    (data / "set").mkdir(parents=True)
    (data / "set" / "a.jsonl").write_text("\n".join(json.dumps({"text": t}) for t in CORPUS[:4]) + "\n")
    first = trimmed_model(str(base), data)
    assert trimmed_model(str(base), data) == first and trimmed_model(str(first), data) == first
    (data / "set" / "b.txt").write_text("Zebras graze quietly.")
    second = trimmed_model(str(base), data)
    assert second != first and len(_kept(second)) > len(_kept(first))


def test_the_pipeline_loads_the_trimmed_model_when_asked(base, tmp_path, monkeypatch):
    from instructgpt.pipeline.config import PipelineConfig
    from instructgpt.pipeline.plan import with_base_model

    monkeypatch.setenv("INSTRUCTGPT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("INSTRUCTGPT_DATA", str(tmp_path / "data"))
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "t.txt").write_text(" ".join(CORPUS))
    assert with_base_model(PipelineConfig(model=str(base))).model == str(base)
    trimmed = Path(with_base_model(PipelineConfig(model=str(base), trim_vocabulary=True)).model)  # in a child process
    assert trimmed.parent == tmp_path / "cache" / "models"
    here = with_base_model(PipelineConfig(model=str(base), trim_vocabulary=True, stage_processes=False))
    assert Path(here.model) == trimmed
    assert json.loads((trimmed / TRIM_JSON).read_text())["source"] == str(base)


def test_the_command_line_trims_to_given_files_and_names_a_missing_one(base, tmp_path, monkeypatch, capsys):
    from instructgpt.cli.main import main

    monkeypatch.setenv("INSTRUCTGPT_CACHE", str(tmp_path / "cache"))
    text = tmp_path / "mine.txt"
    text.write_text(" ".join(CORPUS))
    assert main(["vocabulary", "--model", str(base), "--data", str(text)]) == 0
    folder = Path(capsys.readouterr().out.splitlines()[0])
    assert len(_kept(folder)) < len(json.loads((base / "tokenizer.json").read_text())["model"]["vocab"])
    assert main(["vocabulary", "--model", str(base), "--data", str(tmp_path / "missing.txt")]) == 1
    assert "no such file or folder" in capsys.readouterr().err
