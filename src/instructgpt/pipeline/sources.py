"""The pipeline's raw material, from the bundled permissively licensed datasets.

The paper's prompts come from API users and labelers, its demonstrations and rankings from
labelers. The offline stand-ins (all Apache-2.0 or MIT, see shared/data/README.md):

- **demonstrations**: OpenAssistant best-ranked replies (one per prompter turn) and the
  self-instruct seed tasks, written by people;
- **prompts with a demonstration**: the prompts of those demonstrations (source ``labeler``,
  type ``plain``), so the SFT prompt set is user-split like the others;
- **prompts without labels** (source ``api``): OpenAssistant's prompt-lottery and tree-root
  prompts, and the first human turn of Anthropic hh-rlhf dialogues (red-team style);
- **human rankings**: OpenAssistant's K-wise rankings (K = 2..9);
- **held-out test prompts**: self-instruct's 252 user-oriented instructions, which their authors
  ask not to train on, for the win-rate evaluation.

User ids: OpenAssistant trees do not name their authors, so each tree is one "user" (all turns
of a conversation stay in one split); self-instruct seeds get one user per 10 tasks, and the
lottery and hh-rlhf prompts one user per 5 prompts (the paper caps users at 200 prompts; these
groupings only decide the splits). Every choice is in this module, nowhere else.
"""

from __future__ import annotations

import gzip
import hashlib
import json
from pathlib import Path

from instructgpt.data.importers import (
    DEFAULT_PATHS,
    find_data_root,
    import_oasst,
    import_rankings_oasst,
    import_self_instruct,
    instruction_prompt,
)
from instructgpt.data.schemas import Demonstration, Prompt, Ranking, prompt_text

LOTTERY = "oasst/model_eval_manual_data/prompt_lottery_en_250_text.jsonl"
ROOTS = "oasst/model_eval_manual_data/en_100_text.jsonl"
HH_RLHF = "hh-rlhf/harmless-base/test.jsonl.gz"
TEST_PROMPTS = "self-instruct/human_eval/user_oriented_instructions.jsonl"


def demonstrations(root: Path | None = None) -> list[Demonstration]:
    """Human demonstrations with prompt ids: OpenAssistant best replies + self-instruct seeds."""
    root = root or find_data_root()
    return import_oasst(root / DEFAULT_PATHS["oasst"]) + import_self_instruct(root / DEFAULT_PATHS["self-instruct"])


def demonstration_prompts(demos: list[Demonstration]) -> list[Prompt]:
    """One labeler-written prompt record per demonstration, sharing its ``prompt_id``."""
    records = []
    for demo in demos:
        user = _demo_user(demo)
        records.append(
            Prompt(id=demo.prompt_id, text=prompt_text(demo.prompt), user_id=user, source="labeler", type="plain")
        )
    return records


def unlabelled_prompts(root: Path | None = None, hh_limit: int = 600) -> list[Prompt]:
    """API-style prompts: OpenAssistant lottery and tree roots, hh-rlhf first human turns."""
    root = root or find_data_root()
    texts = [("oasst-lottery", t) for t in _json_lines(root / LOTTERY)]
    texts += [("oasst-root", t) for t in _json_lines(root / ROOTS)]
    texts += [("hh-rlhf", t) for t in _hh_first_turns(root / HH_RLHF)[:hh_limit]]
    records = []
    for i, (source, text) in enumerate(texts):
        if text.strip():
            key = hashlib.sha1(f"{source}:{text}".encode()).hexdigest()[:12]
            records.append(
                Prompt(id=f"{source}-{key}", text=text.strip(), user_id=f"{source}-user-{i // 5}", source="api")
            )
    return records


def human_rankings(root: Path | None = None) -> list[Ranking]:
    """OpenAssistant's K-wise human rankings (labeler id ``oasst``)."""
    root = root or find_data_root()
    return import_rankings_oasst(root / DEFAULT_PATHS["oasst-rankings"])


def test_prompts(root: Path | None = None, max_chars: int = 400) -> list[Prompt]:
    """Self-instruct's user-oriented evaluation instructions (never trained on), short ones."""
    root = root or find_data_root()
    records = []
    for line in (root / TEST_PROMPTS).read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        item = json.loads(line)
        text = instruction_prompt(item["instruction"], item["instances"][0]["input"])
        if len(text) <= max_chars:
            records.append(
                Prompt(id=f"user-oriented-{item['id']}", text=text, user_id="self-instruct-eval", source="api")
            )
    return records


def _demo_user(demo: Demonstration) -> str:
    if demo.source == "oasst" and not isinstance(demo.prompt, str):
        return f"oasst-tree-{_hash(demo.prompt[0].content)}"  # one conversation tree, one user
    if demo.source == "self-instruct":
        number = int("".join(c for c in demo.prompt_id or "" if c.isdigit()) or 0)
        return f"self-instruct-user-{number // 10}"
    return f"{demo.source}-user-{_hash(prompt_text(demo.prompt))[:2]}"


def _hash(text: str) -> str:
    return hashlib.sha1(text.encode()).hexdigest()[:12]


def _json_lines(path: Path) -> list[str]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _hh_first_turns(path: Path) -> list[str]:
    turns = []
    with gzip.open(path, "rt", encoding="utf-8") as handle:
        for line in handle:
            chosen = json.loads(line)["chosen"]
            first = chosen.split("\n\nHuman: ", 1)[-1].split("\n\nAssistant:", 1)[0]
            turns.append(first.strip())
    return list(dict.fromkeys(turns))  # drop exact repeats, keep order
