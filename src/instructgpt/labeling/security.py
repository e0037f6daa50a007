"""Passwords, CSRF tokens, invite tokens and size limits.

- Passwords are hashed with Argon2id (argon2-cffi defaults: RFC 9106 low-memory profile).
- Sessions are Starlette's signed cookies (itsdangerous, HMAC-SHA1 keyed by the secret in the
  database) holding a login-session token whose hash is kept in the database: they expire
  after ``idle_minutes`` without a request and ``session_hours`` after login, whichever comes
  first, and logging out or deactivating the account deletes the server's row at once.
- Logins are throttled (``LoginThrottle``) per account and per client address.
- Every form carries the session's CSRF token; every POST checks it (constant-time compare).
- Every request body is capped (``BodyLimit``) and every field has a length limit (``LIMITS``).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from collections import deque
from urllib.parse import unquote_to_bytes

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

LIMITS = {
    "username": 64,
    "password": 1024,
    "project_name": 200,
    "instructions": 20_000,
    "prompt_id": 200,
    "prompt": 50_000,
    "output": 50_000,
    "model": 200,
    "response": 20_000,
    "notes": 5_000,
    "field": 100_000,
}
"""Longest accepted value of each input, in characters."""

MIN_PASSWORD = 8
MAX_BODY_BYTES = 1 << 20
"""Largest request body outside file uploads."""

_hasher = PasswordHasher()


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(password_hash: str, password: str) -> bool:
    try:
        return _hasher.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


_DUMMY_HASH = None


def burn_verify(password: str) -> None:
    """Spends the time of one verification, so that a wrong username takes as long as a wrong
    password."""
    global _DUMMY_HASH
    if _DUMMY_HASH is None:
        _DUMMY_HASH = _hasher.hash(secrets.token_hex(8))
    verify_password(_DUMMY_HASH, password)


def new_token() -> str:
    return secrets.token_urlsafe(24)


def token_hash(token: str) -> str:
    """Invite tokens are stored hashed: a database reader cannot sign up with them."""
    return hashlib.sha256(token.encode()).hexdigest()


def same_token(expected: str | None, given: str | None) -> bool:
    return bool(expected) and bool(given) and hmac.compare_digest(expected, given)


def to_lf(text: str) -> str:
    """CRLF and lone CR line breaks -> LF (browsers send a textarea's lines CRLF-separated)."""
    return text.replace("\r\n", "\n").replace("\r", "\n")


def invalid_utf8_field(body: bytes) -> str | None:
    """The name of the first field of a URL-encoded body whose name or value is not valid
    UTF-8 once percent-decoded, or None when all are."""
    for pair in body.split(b"&"):
        name, _, value = pair.partition(b"=")
        for part in (name, value):
            try:
                unquote_to_bytes(part.replace(b"+", b" ")).decode("utf-8")
            except UnicodeDecodeError:
                return unquote_to_bytes(name.replace(b"+", b" ")).decode("utf-8", "replace")
    return None


class LoginThrottle:
    """Refuses logins to an account after ``per_account`` failures within ``window_seconds``,
    and from an address after ``per_address`` failures (any accounts) in the same window.

    Each attempt counts as a failure from the moment it starts (so that concurrent guesses
    cannot slip through while the hash is being checked); a success forgets the account's
    failures and its own count against the address. Counts live in this process's memory: a
    restart resets them. Behind a reverse proxy every client has the proxy's address, so keep
    ``per_address`` generous there.
    """

    def __init__(self, per_account: int = 5, per_address: int = 20, window_seconds: float = 900.0):
        self.limits = {"account": per_account, "address": per_address}
        self.window = window_seconds
        self._failures: dict[tuple[str, str], deque[float]] = {}
        self._lock = threading.Lock()

    def attempt(self, username: str, address: str) -> float:
        """Seconds to wait before this login may be tried (0: go ahead, and it is counted)."""
        now = time.time()
        keys = [("account", username[:64]), ("address", address)]
        with self._lock:
            if len(self._failures) > 100_000:
                self._forget_old(now)
            wait = 0.0
            for key in keys:
                times = self._failures.get(key, deque())
                while times and times[0] <= now - self.window:
                    times.popleft()
                if len(times) >= self.limits[key[0]]:
                    wait = max(wait, times[0] + self.window - now)
            if wait:
                return wait
            for key in keys:
                self._failures.setdefault(key, deque()).append(now)
            return 0.0

    def succeeded(self, username: str, address: str) -> None:
        """Forgets the account's failures and this attempt of the address."""
        with self._lock:
            self._failures.pop(("account", username[:64]), None)
            times = self._failures.get(("address", address))
            if times:
                times.pop()

    def _forget_old(self, now: float) -> None:
        for key in [k for k, times in self._failures.items() if not times or times[-1] <= now - self.window]:
            del self._failures[key]


class BodyTooLarge(Exception):
    pass


class BodyLimit:
    """ASGI middleware: 413 for a request body over ``max_bytes`` (``upload_bytes`` on paths
    ending in ``/upload``), by Content-Length when sent and by counting otherwise."""

    def __init__(self, app, max_bytes: int = MAX_BODY_BYTES, upload_bytes: int = 64 << 20):
        self.app, self.max_bytes, self.upload_bytes = app, max_bytes, upload_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        limit = self.upload_bytes if scope["path"].endswith("/upload") else self.max_bytes
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > limit):
            return await _too_large(send)
        seen = 0

        async def counted():
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > limit:
                raise BodyTooLarge
            return message

        started = False

        async def watched(message):
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted, watched)
        except BodyTooLarge:
            if not started:
                await _too_large(send)


async def _too_large(send) -> None:
    body = b"Request body too large"
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [(b"content-type", b"text/plain"), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})
