"""Stage commands: each parses its typed config (YAML + flags), runs, and reports errors plainly."""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from instructgpt.config import ConfigError, parse


def _run(action: Callable[[], object]) -> int:
    """Run ``action``; known user errors become one line on stderr and a non-zero exit."""
    from instructgpt.data.jsonl import DataError
    from instructgpt.models.loader import ModelLoadError

    try:
        action()
    except ConfigError as err:
        print(f"error: config: {err}", file=sys.stderr)
        return 2
    except DataError as err:
        print(f"error: data:\n{err}", file=sys.stderr)
        return 1
    except (ModelLoadError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


def _quiet() -> None:
    from transformers.utils import logging

    logging.disable_progress_bar()
    logging.set_verbosity_error()


def _command(cls: type, argv: list[str], name: str, action: Callable[[object], object]) -> int:
    """Parse ``cls`` from YAML + flags, then run ``action(config)`` with plain error reports."""
    try:
        config = parse(cls, argv, prog=f"instructgpt {name}", description=cls.__doc__)
    except ConfigError as err:
        print(f"error: config: {err}", file=sys.stderr)
        return 2
    _quiet()
    return _run(lambda: action(config))


def sft(argv: list[str]) -> int:
    from instructgpt.training.sft import SFTConfig, train_sft

    return _command(SFTConfig, argv, "sft", lambda c: print(f"final model: {train_sft(c)}"))


@dataclass
class GenerateConfig:
    """Sample responses from a model for prompts given on the command line or in a file."""

    model: str = "gemma-3-270m"
    """Model: 'gemma-3-270m', a local Hugging Face folder (e.g. runs/sft/final), a .gguf file, or a Hub id."""
    prompt: tuple[str, ...] = ()
    """Prompt texts."""
    prompts_file: Path | None = None
    """JSONL file of prompts (a 'text' or 'prompt' field per line)."""
    max_new_tokens: int = 128
    """Longest response, in tokens."""
    temperature: float = 0.0
    """Sampling temperature; 0 is greedy."""
    template: str = "auto"
    """Prompt rendering: raw, chat or auto (chat if the tokenizer has a template)."""
    seed: int = 0
    """Sampling seed."""

    def validate(self) -> None:
        if not self.prompt and self.prompts_file is None:
            raise ConfigError("prompt: give --prompt TEXT or --prompts-file FILE")
        if self.max_new_tokens < 1:
            raise ConfigError("max_new_tokens: must be at least 1")


def generate(argv: list[str]) -> int:
    return _command(GenerateConfig, argv, "generate", _generate)


def _generate(config: GenerateConfig) -> None:
    import json

    from instructgpt.models.generate import generate as sample
    from instructgpt.models.loader import load_model

    prompts = list(config.prompt)
    if config.prompts_file is not None:
        for line in Path(config.prompts_file).read_text(encoding="utf-8").splitlines():
            if line.strip():
                record = json.loads(line)
                prompts.append(record.get("text") or record["prompt"])
    model, tokenizer = load_model(config.model)
    outputs = sample(
        model, tokenizer, prompts, config.max_new_tokens, config.temperature, config.template, seed=config.seed
    )
    for prompt, output in zip(prompts, outputs):
        print(json.dumps({"prompt": prompt, "response": output}, ensure_ascii=False))


def quickstart(argv: list[str]) -> int:
    from instructgpt.quickstart import QuickstartConfig, run_quickstart

    return _command(QuickstartConfig, argv, "quickstart", run_quickstart)


@dataclass
class VocabularyConfig:
    """Trim a model's vocabulary to the tokens of some text (src/instructgpt/models/vocabulary.py); prints the folder
    of the trimmed model, built once and cached: pass it as --model to any command."""

    model: str = "gemma-3-270m"
    """Model: 'gemma-3-270m', a local Hugging Face folder, a .gguf file (a BPE tokenizer with a tokenizer.json)."""
    data: tuple[Path, ...] = ()
    """Files, or folders searched for JSON, JSON-lines and text files (gzipped or not), whose text must tokenize as
    before (checked); default: the bundled data root, as the pipeline's --trim-vocabulary uses."""


def vocabulary(argv: list[str]) -> int:
    return _command(VocabularyConfig, argv, "vocabulary", _vocabulary)


def _vocabulary(config: VocabularyConfig) -> None:
    import json

    from instructgpt.data.importers import find_data_root
    from instructgpt.models.vocabulary import TRIM_JSON, trimmed_model

    folder = trimmed_model(config.model, list(config.data) or find_data_root())
    record = json.loads((folder / TRIM_JSON).read_text(encoding="utf-8"))
    kept, texts = len(record["kept_ids"]), record["corpus_texts"]
    print(f"{folder}\n{kept:,} tokens kept; {texts:,} corpus texts tokenize as before")
