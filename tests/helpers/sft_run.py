"""Run a tiny SFT from the command line (used by the multi-process test via torchrun).

usage: python -m tests.helpers.sft_run DEMOS OUT_DIR [key=value ...]
"""

import sys
from pathlib import Path

from instructgpt.models.tiny import tiny_model, tiny_tokenizer
from instructgpt.training.sft import SFTConfig, train_sft

TINY_DEFAULTS = dict(
    epochs=2,
    lr=3e-3,
    batch_size=8,
    micro_batch_size=2,
    residual_dropout=0.0,
    val_fraction=0.0,
    progress=False,
    precision="fp32",
)


def main(argv):
    demos, out_dir, *pairs = argv
    overrides = dict(TINY_DEFAULTS)
    for pair in pairs:
        key, value = pair.split("=", 1)
        overrides[key] = type(overrides.get(key, 0))(value) if key in overrides else int(value)
    tokenizer = tiny_tokenizer()
    config = SFTConfig(model="tiny-random", data=(Path(demos),), out_dir=Path(out_dir), **overrides)
    train_sft(config, tiny_model(tokenizer), tokenizer)


if __name__ == "__main__":
    main(sys.argv[1:])
