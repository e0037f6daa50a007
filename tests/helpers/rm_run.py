"""A separable synthetic rankings set, and a tiny RM run from the command line (torchrun test).

usage: python -m tests.helpers.rm_run RANKINGS OUT_DIR [key=value ...]
"""

import json
import random
import sys
from pathlib import Path

QUALITY = ["excellent", "good", "fine", "poor", "awful"]
"""Better words first: a response's rank is the rank of its word (equal words tie)."""

TINY_DEFAULTS = dict(
    epochs=1,
    lr=3e-3,
    batch_size=8,
    micro_batch_prompts=4,
    val_fraction=0.0,
    progress=False,
    precision="fp32",
    normalize=False,
)


def write_rankings(path: Path, count: int, seed: int = 0, ties: bool = True) -> Path:
    """``count`` rankings of K = 2..5 responses "<word> <noun>", ranked by the word's quality."""
    rng = random.Random(seed)
    nouns = "cat dog tree house river cloud stone bird".split()
    with Path(path).open("w") as handle:
        for i in range(count):
            k = rng.randint(2, 5)
            levels = sorted(rng.sample(range(len(QUALITY)), k))
            if ties and k > 2 and rng.random() < 0.3:
                levels[-1] = levels[-2]  # two responses of the same quality: a tie
            noun = rng.choice(nouns)
            responses = [f"{QUALITY[q]} {noun}" + "!" * j for j, q in enumerate(levels)]
            dense = {q: r for r, q in enumerate(sorted(set(levels)))}
            order = rng.sample(range(k), k)
            record = {
                "prompt": f"Describe the {noun}.",
                "responses": [responses[j] for j in order],
                "ranks": [dense[levels[j]] for j in order],
                "labeler_id": f"labeler-{i % 6}",
                "prompt_id": f"p{i}",
            }
            handle.write(json.dumps(record) + "\n")
    return Path(path)


def main(argv):
    from instructgpt.models.reward import RewardModel
    from instructgpt.models.tiny import tiny_model, tiny_tokenizer
    from instructgpt.training.rm import RMConfig, train_rm

    rankings, out_dir, *pairs = argv
    overrides = dict(TINY_DEFAULTS)
    for pair in pairs:
        key, value = pair.split("=", 1)
        kind = type(overrides.get(key, getattr(RMConfig, key)))
        overrides[key] = value in ("1", "true", "True") if kind is bool else kind(value)
    tokenizer = tiny_tokenizer()
    config = RMConfig(model="tiny-random", data=(Path(rankings),), out_dir=Path(out_dir), **overrides)
    train_rm(config, RewardModel.from_causal_lm(tiny_model(tokenizer)), tokenizer)


if __name__ == "__main__":
    main(sys.argv[1:])
