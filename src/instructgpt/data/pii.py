"""Finding personally identifiable information (PII) in prompt text, to drop or redact it.

The paper filters PII from the training split (section 3.2) without saying how. This module
is a rule-based detector, one regular expression per kind plus a validity check where the
kind has one, so that every decision can be read and tested:

- ``email``: ``local@domain.tld`` (a dot-separated domain with a 2+ letter top level).
- ``phone``: international ``+CC ...`` numbers with 8-15 digits, and North American
  ``(555) 123-4567`` / ``555-123-4567`` / ``555.123.4567`` forms. Bare digit runs are not
  phones (they are too often counts, ids or years); digit groups shaped like dates
  (``2024-01-15``) or versions never match because a phone needs its separator pattern.
- ``card``: 13-19 digits, optionally grouped by spaces or dashes, that pass the Luhn check.
- ``gov_id``: US social security numbers ``123-45-6789`` (area not 000, 666 or 9xx; group
  and serial not all zeros) and UK national insurance numbers ``AB 12 34 56 C``.
- ``ip``: IPv4 addresses with every octet in 0..255 (not a version string like ``1.2.3``
  nor ``1.2.3.4.5``) and full or ``::``-compressed IPv6 addresses.
- ``street_address``: a house number, one to four capitalised words and a street suffix
  (``221B Baker Street``, ``1600 Pennsylvania Ave``).
- ``credential_url``: URLs with ``user:password@`` or a query parameter named like a secret
  (``token``, ``key``, ``api_key``, ``access_token``, ``password``, ``secret``, ``sig``,
  ``auth``...). Ordinary URLs are not PII.

``find_pii`` returns the matches; ``redact`` replaces each with ``[KIND]``. The detector
favours precision on the hard negatives a prompt set is full of (versions, dates, prices,
quantities, card-like numbers that fail Luhn, plain URLs); its precision and recall are
measured on the labelled strings in ``tests/data/pii/labelled.jsonl`` (see
``docs/prompt-pipeline.md``). It is English- and US/UK-centric: names, postal codes and
other countries' ids are not detected.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

PII_KINDS: tuple[str, ...] = (
    "email",
    "phone",
    "card",
    "gov_id",
    "ip",
    "street_address",
    "credential_url",
)
"""Every kind of PII the detector finds."""

_SEARCH_ORDER = ("credential_url", "email", "card", "gov_id", "phone", "ip", "street_address")
"""Kinds in the order they claim text: a credential URL is not also an e-mail address, a
Luhn-valid card number is not also a phone number."""


@dataclass(frozen=True)
class PiiMatch:
    """One piece of PII in a text."""

    kind: str
    """One of ``PII_KINDS``."""
    start: int
    """Offset of the first character."""
    end: int
    """Offset just past the last character."""


_SECRET_PARAMS = (
    r"(?:access_?token|refresh_?token|id_?token|token|api_?key|apikey|key|secret|client_secret|"
    r"password|passwd|pwd|sig|signature|auth|session|sessionid|sid|x-amz-signature|x-amz-credential)"
)

_PATTERNS: dict[str, re.Pattern[str]] = {
    "credential_url": re.compile(
        r"\b(?:https?|ftp|wss?|postgres(?:ql)?|mysql|mongodb(?:\+srv)?|redis|amqp)://"
        r"(?:[^\s/@:]+:[^\s/@]+@[^\s]+"  # user:password@host
        rf"|[^\s?#]+\?(?:[^\s#]*[&;])?{_SECRET_PARAMS}=[^\s&#]+[^\s]*)",  # ?token=...
        re.IGNORECASE,
    ),
    "email": re.compile(
        r"(?<![\w.+-])[A-Za-z0-9][A-Za-z0-9._%+-]{0,63}@(?:[A-Za-z0-9-]+\.)+[A-Za-z]{2,24}\b"
        r"(?!:\S)"  # git@github.com:user/repo.git is an SSH remote, not an address
    ),
    "card": re.compile(r"(?<![\d-])(?:\d[ -]?){12,18}\d(?![\d-])"),
    "gov_id": re.compile(
        r"(?<![\d-])(?!000|666|9\d\d)\d{3}-(?!00)\d{2}-(?!0000)\d{4}(?![\d-])"
        r"|\b(?![DFIQUV])[A-Z](?![DFIOQUV])[A-Z] ?\d{2} ?\d{2} ?\d{2} ?[A-D]\b"
    ),
    "phone": re.compile(
        r"(?<![\w+])\+\d{1,3}[ .-]?(?:\(\d{1,4}\)[ .-]?)?\d{1,4}(?:[ .-]?\d{2,4}){1,4}(?![\w-])"
        r"|(?<![\w(-])(?:\(\d{3}\) ?|\d{3}[-.])\d{3}[-.]\d{4}(?![\w-])"
    ),
    "ip": re.compile(
        r"(?<![\w.])(?:(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)"
        r"(?![\w]|\.\d)"
        r"|(?<![\w:])(?:[0-9A-Fa-f]{1,4}:){7}[0-9A-Fa-f]{1,4}(?![\w:])"
        r"|(?<![\w:])(?:[0-9A-Fa-f]{1,4}:){1,6}:(?:[0-9A-Fa-f]{1,4}(?::[0-9A-Fa-f]{1,4}){0,5})?(?![\w:])"
        r"|(?<![\w:])::[0-9A-Fa-f]{1,4}(?::[0-9A-Fa-f]{1,4}){0,6}(?![\w:])"
    ),
    "street_address": re.compile(
        r"\b\d{1,6}[A-Za-z]?(?: [A-Z][a-z]+| [NSEW]\.?){1,4} "
        r"(?:Street|St|Avenue|Ave|Road|Rd|Boulevard|Blvd|Lane|Ln|Drive|Dr|Court|Ct|Place|Pl|"
        r"Terrace|Way|Parkway|Pkwy|Highway|Hwy|Square|Sq|Crescent|Close|Circle|Cir)\b\.?"
    ),
}


def luhn_valid(digits: str) -> bool:
    """True when the digit string passes the Luhn checksum (payment card numbers do)."""
    total = 0
    for i, char in enumerate(reversed(digits)):
        d = ord(char) - 48
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def _valid(kind: str, text: str) -> bool:
    if kind == "card":
        digits = re.sub(r"[ -]", "", text)
        return 13 <= len(digits) <= 19 and len(set(digits)) > 1 and luhn_valid(digits)
    if kind == "phone":
        return 7 <= sum(c.isdigit() for c in text) <= 15
    if kind == "ip":
        return text not in _NOT_IDENTIFYING_IPS and not text.startswith(("127.", "255.255."))
    return True


# Addresses that name no machine: unspecified, loopback, broadcast.
_NOT_IDENTIFYING_IPS = frozenset({"0.0.0.0", "::1", "::", "255.255.255.255"})


# A cheap first look: text with no digit, "@", "::" or "://" has no PII of any kind.
_MAYBE = re.compile(r"\d|@|::|://")


def find_pii(text: str) -> list[PiiMatch]:
    """Every PII match in ``text``, sorted by position, without overlaps (the kind searched
    first in ``_SEARCH_ORDER`` wins an overlap)."""
    if not _MAYBE.search(text):
        return []
    taken: list[tuple[int, int]] = []
    found: list[PiiMatch] = []
    for kind in _SEARCH_ORDER:
        for m in _PATTERNS[kind].finditer(text):
            start, end = m.span()
            if any(start < e and s < end for s, e in taken) or not _valid(kind, m.group()):
                continue
            taken.append((start, end))
            found.append(PiiMatch(kind, start, end))
    return sorted(found, key=lambda p: p.start)


def redact(text: str, matches: list[PiiMatch]) -> str:
    """``text`` with each match replaced by ``[KIND]`` (e.g. ``[EMAIL]``); ``matches`` as
    returned by ``find_pii`` (sorted, not overlapping)."""
    pieces, last = [], 0
    for m in matches:
        pieces += [text[last : m.start], f"[{m.kind.upper()}]"]
        last = m.end
    pieces.append(text[last:])
    return "".join(pieces)
