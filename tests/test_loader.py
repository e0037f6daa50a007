"""The model loader: local folders, Hub ids offline, GGUF (the embedded model), pad tokens."""

import json

import pytest

from instructgpt.models.loader import (
    ModelLoadError,
    cache_dir,
    ensure_pad_token,
    load_model,
    load_tokenizer,
    resolve_model,
)
from instructgpt.models.tiny import save_tiny, tiny_tokenizer


def test_local_folder_loads_model_and_tokenizer(tmp_path):
    folder = save_tiny(str(tmp_path / "tiny"))
    model, tokenizer = load_model(folder)
    assert model.config.model_type == "gemma3_text"
    assert tokenizer.pad_token_id is not None and model.config.pad_token_id == tokenizer.pad_token_id


def test_hub_id_offline_gives_a_clear_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelLoadError, match="Pass a local folder instead"):
        load_model("no-such-org/no-such-model-xyz")


def test_missing_paths_and_non_model_folders_are_named(tmp_path):
    with pytest.raises(ModelLoadError, match="GGUF file not found"):
        resolve_model(tmp_path / "missing.gguf")
    with pytest.raises(ModelLoadError, match="no config.json"):
        resolve_model(tmp_path)
    with pytest.raises(ModelLoadError, match="not found"):
        resolve_model("./does/not/exist")


def test_load_tokenizer_accepts_what_load_model_accepts(tmp_path):
    folder = save_tiny(str(tmp_path / "tiny"))
    assert load_tokenizer(folder).vocab_size == load_model(folder)[1].vocab_size
    with pytest.raises(ModelLoadError, match="GGUF file not found"):  # resolved like a model name, not sent to the Hub
        load_tokenizer(tmp_path / "missing.gguf")


def test_missing_pad_token_becomes_eos():
    tokenizer = tiny_tokenizer()
    tokenizer.pad_token = None
    assert tokenizer.pad_token_id is None
    ensure_pad_token(tokenizer)
    assert tokenizer.pad_token_id == tokenizer.eos_token_id


def test_cache_dir_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("INSTRUCTGPT_CACHE", str(tmp_path / "c"))
    assert cache_dir() == tmp_path / "c"


@pytest.mark.slow
def test_embedded_model_is_dequantised_once_and_cached_as_safetensors():
    """The real embedded base model (first run converts the GGUF, ~1 minute; later runs reuse it)."""
    folder = resolve_model("gemma-3-270m")
    assert (folder_path := __import__("pathlib").Path(folder)).parent.parent == cache_dir()
    assert list(folder_path.glob("*.safetensors"))
    assert "quantization_config" not in json.loads((folder_path / "config.json").read_text())
    assert resolve_model("gemma-3-270m") == folder  # second call: the cache, no conversion
    model, tokenizer = load_model("gemma-3-270m")
    assert model.config.vocab_size == 262144 and tokenizer.chat_template is None  # a base model
    ids = tokenizer("The capital of France is", return_tensors="pt")
    out = model.generate(**ids, max_new_tokens=3, do_sample=False)
    assert "Paris" in tokenizer.decode(out[0]) or out.shape[1] == ids["input_ids"].shape[1] + 3


KERNELS_PROBE = """
import json, os, sys
import instructgpt
from instructgpt.models.loader import load_model
from instructgpt.models.tiny import save_tiny
model, _ = load_model(save_tiny(sys.argv[1]))
model.train()  # transformers kernelizes again here when hub kernels are on
print(json.dumps({"env": os.environ.get("USE_HUB_KERNELS"), "use_kernels": getattr(model, "use_kernels", False)}))
"""


def test_hub_kernels_stay_off_unless_asked_for(tmp_path):
    """transformers 5.x fetches Hub kernels on load and train() (on CUDA: a download at run time, an error offline)."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "USE_HUB_KERNELS"}
    run = subprocess.run(
        [sys.executable, "-c", KERNELS_PROBE, str(tmp_path / "m")], env=env, capture_output=True, text=True, check=True
    )
    assert json.loads(run.stdout.strip().splitlines()[-1]) == {"env": "NO", "use_kernels": False}
    asked = subprocess.run(
        [sys.executable, "-c", "import os, instructgpt; print(os.environ['USE_HUB_KERNELS'])"],
        env={**env, "USE_HUB_KERNELS": "YES"},
        capture_output=True,
        text=True,
        check=True,
    )
    assert asked.stdout.strip() == "YES"  # a user's own setting is kept
