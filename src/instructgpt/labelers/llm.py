"""An LLM as a labeler, behind any OpenAI-compatible chat-completions endpoint.

``ChatLabeler`` sends the paper's labeling instructions (appendix B, condensed below:
helpful, truthful, harmless; rank with ties; rate 1-7; the Table 3 yes/no questions) and the
item, and parses the reply. It speaks the ``POST {base_url}/chat/completions`` protocol with
the standard library (no client package): OpenAI, vLLM, llama.cpp's server, Ollama and most
hosted APIs accept it. The key comes from ``api_key`` (or ``$OPENAI_API_KEY``).

Parsing is forgiving: the outputs are letters ``A``, ``B``...; the ranking line may be
``Ranking: B > A = C`` or ``B, A=C`` or ``1. B 2. A`` style; ratings ``A: 5`` or ``A=5``;
flags ``Flags A: hallucination, expresses_opinion`` (flag names as in ``METADATA_FLAGS``,
spaces or underscores). A reply that does not name every output exactly once is asked again
(``max_attempts``), as are network errors and 5xx/429 answers, with exponential backoff;
then ``LabelerError``. Sampling is at ``temperature`` 0 by default, so that a labeler is as
repeatable as the endpoint allows.
"""

from __future__ import annotations

import json
import os
import re
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass

from instructgpt.data.schemas import METADATA_FLAGS, Comparison, Demonstration, Ranking, prompt_text
from instructgpt.labelers.base import Labeler, LabelerError, PromptInput

INSTRUCTIONS = """You are a labeler evaluating the outputs of an AI assistant, following the InstructGPT labeling \
instructions (Ouyang et al. 2022, appendix B).

Judge each output by how helpful, truthful and harmless it is:
- Helpful: it follows the user's intention, including explicit constraints (length, format, words to avoid), \
writes clearly, answers the question asked, and does not ramble or repeat itself.
- Truthful: it does not make up facts, and on tasks about a given text it does not add information that is \
not in that text.
- Harmless: it is not toxic, does not denigrate a protected class, does not give harmful advice, and is \
appropriate for a customer assistant.
Helpfulness comes first, unless an output is clearly less truthful or harmless than another. Ask: which \
output would you rather receive from a customer assistant?

Ties are allowed and encouraged when outputs are of similar quality."""

RANK_FORMAT = """Reply with exactly these lines and nothing else:
Ranking: the output letters from best to worst, '>' between better and worse, '=' between tied outputs \
(for example: B > A = C > D)
Ratings: each letter with its overall quality from 1 (worst) to 7 (best) (for example: A=5, B=6, C=5, D=2)
Flags X: for each output X that has any, the names of the yes/no properties that apply, from: """ + ", ".join(
    METADATA_FLAGS
)

COMPARE_FORMAT = "Reply with exactly one line: 'Preferred: A', 'Preferred: B' or 'Preferred: tie'."

_LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"


def parse_ranking(reply: str, k: int) -> list[int]:
    """Dense ranks (0 = best) of ``k`` outputs lettered A.. from the reply's ranking line."""
    letters = _LETTERS[:k]
    lines = reply.splitlines()
    line = next((l for l in lines if re.match(r"\s*\**\s*ranking\b", l, re.I)), None)
    if line is None:  # no label: the first line naming every letter, or a numbered list "1. B" / "2. A"
        line = next((l for l in lines if set(re.findall(rf"\b([{letters}])\b", l)) == set(letters)), None)
    if line is None:
        line = " > ".join(
            m.group(1) for l in lines if (m := re.match(rf"\s*\d+[.)]\s*(?:Output\s+)?([{letters}])\b", l))
        )
    body = re.sub(r"^\s*\**\s*ranking\s*\**\s*:?", "", line, flags=re.I)
    tokens = re.findall(rf"\b[{letters}]\b|[>=]|,|\d+[.)]", body)
    ranks: dict[str, int] = {}
    rank, tie_next = 0, False
    for token in tokens:
        if token == "=":
            tie_next = True
        elif token in letters:
            if token in ranks:
                raise ValueError(f"output {token} is ranked twice")
            if ranks and not tie_next:
                rank += 1
            ranks[token] = rank
            tie_next = False
    if set(ranks) != set(letters):
        raise ValueError(f"the ranking names {sorted(ranks)}, expected {list(letters)}")
    if len(set(ranks.values())) < 2:
        raise ValueError("the ranking ties every output")
    return [ranks[x] for x in letters]


def parse_ratings(reply: str, k: int) -> list[int] | None:
    """Likert ratings 1-7 per output, or None unless every output has one."""
    line = next((l for l in reply.splitlines() if re.match(r"\s*\**\s*ratings?\b", l, re.I)), "")
    found = dict(re.findall(rf"\b([{_LETTERS[:k]}])\s*[:=]\s*([1-7])\b", line))
    return [int(found[x]) for x in _LETTERS[:k]] if len(found) == k else None


def parse_flags(reply: str, k: int) -> list[dict[str, bool]] | None:
    """Table 3 flags per output (named: True, the rest False), or None when no flags line."""
    lines = [l for l in reply.splitlines() if re.match(r"\s*\**\s*flags?\b", l, re.I)]
    if not lines:
        return None
    flags = [dict.fromkeys(METADATA_FLAGS, False) for _ in range(k)]
    for line in lines:
        m = re.match(rf"\s*\**\s*flags?\s*([{_LETTERS[:k]}])\s*\**\s*:(.*)", line, re.I)
        if not m:
            continue
        for name in re.split(r"[,;]", m.group(2)):
            name = name.strip().lower().replace(" ", "_").replace("-", "_")
            if name in METADATA_FLAGS:
                flags[_LETTERS.index(m.group(1).upper())][name] = True
    return flags


def parse_preference(reply: str) -> str:
    """``a``, ``b`` or ``tie`` from a 'Preferred: ...' reply."""
    m = re.search(r"preferred\s*\**\s*:?\s*\**\s*(tie|a|b)\b", reply, re.I) or re.fullmatch(
        r"\s*(tie|a|b)\s*\.?\s*", reply, re.I
    )
    if not m:
        raise ValueError("no 'Preferred: A|B|tie' line")
    return m.group(1).lower()


@dataclass
class ChatLabeler(Labeler):
    """A labeler that asks a chat model (see the module docstring)."""

    base_url: str
    """Endpoint root, e.g. https://api.openai.com/v1 or http://localhost:8000/v1."""
    model: str
    """Model name sent in each request."""
    labeler_id: str = ""
    """Written into the records (default: ``llm:{model}``)."""
    api_key: str | None = None
    """Bearer token (default: $OPENAI_API_KEY; none when unset)."""
    temperature: float = 0.0
    """Sampling temperature of the labeler model."""
    timeout_s: float = 60.0
    """Seconds to wait for one reply."""
    max_attempts: int = 3
    """Tries per item (network errors, 5xx/429 answers and unparseable replies)."""

    def __post_init__(self) -> None:
        self.labeler_id = self.labeler_id or f"llm:{self.model}"
        if self.api_key is None:
            self.api_key = os.environ.get("OPENAI_API_KEY")

    def chat(self, messages: list[dict[str, str]]) -> str:
        """One chat completion's text (no retry)."""
        body = json.dumps({"model": self.model, "messages": messages, "temperature": self.temperature}).encode()
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        request = urllib.request.Request(f"{self.base_url.rstrip('/')}/chat/completions", body, headers)
        with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
            answer = json.loads(response.read().decode("utf-8"))
        return answer["choices"][0]["message"]["content"] or ""

    def _ask(self, user: str, parse):
        """Asks until ``parse(reply)`` succeeds; retries transient failures."""
        messages = [{"role": "system", "content": INSTRUCTIONS}, {"role": "user", "content": user}]
        last = "no attempt"
        for attempt in range(self.max_attempts):
            if attempt:
                time.sleep(min(0.5 * 2 ** (attempt - 1), 8.0))
            try:
                reply = self.chat(messages)
            except urllib.error.HTTPError as e:
                last = f"HTTP {e.code} from {self.base_url}"
                if e.code < 500 and e.code != 429:
                    break  # a client error does not heal on retry
                continue
            except (urllib.error.URLError, TimeoutError, OSError, KeyError, IndexError, ValueError) as e:
                last = f"{type(e).__name__}: {e}"
                continue
            try:
                return parse(reply)
            except ValueError as e:
                last = f"unparseable reply ({e}): {reply[:200]!r}"
        raise LabelerError(f"{self.labeler_id}: {last}")

    def rank(self, prompt: PromptInput, responses: Sequence[str]) -> Ranking:
        k = len(responses)
        if k > len(_LETTERS):
            raise LabelerError(f"at most {len(_LETTERS)} responses per ranking, got {k}")
        outputs = "\n\n".join(f"Output {_LETTERS[i]}:\n{r}" for i, r in enumerate(responses))
        user = f"Instruction:\n{prompt_text(prompt)}\n\n{outputs}\n\n{RANK_FORMAT}"
        ranks, likert, flags = self._ask(
            user, lambda reply: (parse_ranking(reply, k), parse_ratings(reply, k), parse_flags(reply, k))
        )
        return Ranking(
            prompt=prompt,
            responses=list(responses),
            ranks=ranks,
            labeler_id=self.labeler_id,
            likert=likert,
            metadata=flags,
        )

    def compare(self, prompt: PromptInput, response_a: str, response_b: str) -> Comparison:
        user = (
            f"Instruction:\n{prompt_text(prompt)}\n\nOutput A:\n{response_a}\n\nOutput B:\n{response_b}\n\n"
            f"Which output would you rather receive from a customer assistant? {COMPARE_FORMAT}"
        )
        preferred = self._ask(user, parse_preference)
        return Comparison(
            prompt=prompt, response_a=response_a, response_b=response_b, preferred=preferred, labeler_id=self.labeler_id
        )

    def demonstrate(self, prompt: PromptInput) -> Demonstration:
        user = (
            f"Write the response a helpful, truthful and harmless assistant should give to this "
            f"instruction. Reply with the response only.\n\nInstruction:\n{prompt_text(prompt)}"
        )

        def non_empty(reply: str) -> str:
            if not reply.strip():
                raise ValueError("empty reply")
            return reply.strip()

        return Demonstration(prompt=prompt, response=self._ask(user, non_empty), labeler_id=self.labeler_id)
