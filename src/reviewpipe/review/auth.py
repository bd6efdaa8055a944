"""Who is labelling: one secret token per annotator, sign-in sessions and their CSRF tokens.

Tokens are random (256 bits) and shown once, when issued (`reviewpipe review token --annotator
NAME`); only their sha256 is kept, in `{review.state_dir}/annotators.json` (mode 0600). The page
exchanges a token for a session cookie (HttpOnly, SameSite=Strict) and a CSRF token that every
label post must echo in the X-CSRF-Token header. Scripts may send `Authorization: Bearer TOKEN`
instead (no cookie, so no CSRF token needed). A label is always stored under the annotator the
token belongs to, never under a name the client sends.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
import threading
import time
from pathlib import Path

from reviewpipe.review.store import annotator_file_name

TOKENS_FILE = "annotators.json"


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


class AnnotatorTokens:
    """sha256(token) -> annotator name; the tokens themselves are never stored."""

    def __init__(self, hashes: dict[str, str] | None = None) -> None:
        self._by_hash = dict(hashes or {})

    @classmethod
    def load(cls, state_dir: str | Path) -> AnnotatorTokens:
        path = Path(state_dir) / TOKENS_FILE
        if not path.exists():
            return cls()
        data = json.loads(path.read_text(encoding="utf-8"))
        return cls({entry["sha256"]: name for name, entry in data["annotators"].items()})

    def save(self, state_dir: str | Path) -> Path:
        """Write atomically, readable by this user only."""
        path = Path(state_dir) / TOKENS_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        data = {"annotators": {name: {"sha256": digest} for digest, name in sorted(self._by_hash.items())}}
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(json.dumps(data, indent=2, sort_keys=True) + "\n")
        os.replace(tmp, path)
        return path

    def issue(self, annotator: str) -> str:
        """A new token for `annotator` (their previous one stops working); returns it."""
        annotator_file_name(annotator)  # a usable name, or a ReviewpipeError that says so
        name = annotator.strip()
        self._by_hash = {h: n for h, n in self._by_hash.items() if n != name}
        token = secrets.token_urlsafe(32)
        self._by_hash[hash_token(token)] = name
        return token

    def annotator(self, token: str) -> str | None:
        """Whose token this is, or None."""
        digest = hash_token(token)
        found = None
        for known, name in self._by_hash.items():  # compare every entry: no early exit to time
            if hmac.compare_digest(known, digest):
                found = name
        return found

    def names(self) -> list[str]:
        return sorted(set(self._by_hash.values()))


def issue_token(state_dir: str | Path, annotator: str) -> str:
    """`reviewpipe review token`: a new token for `annotator`, saved (hashed) in state_dir."""
    tokens = AnnotatorTokens.load(state_dir)
    token = tokens.issue(annotator)
    tokens.save(state_dir)
    return token


class SignIns:
    """Server-side sign-in sessions: session id -> (annotator, CSRF token, expiry)."""

    def __init__(self, ttl_s: float) -> None:
        self.ttl_s = ttl_s
        self._sessions: dict[str, tuple[str, str, float]] = {}
        self._lock = threading.Lock()

    def open(self, annotator: str) -> tuple[str, str]:
        """(session id, CSRF token) for a new sign-in."""
        sid, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
        now = time.monotonic()
        with self._lock:
            self._sessions = {k: v for k, v in self._sessions.items() if v[2] > now}  # forget expired ones
            self._sessions[sid] = (annotator, csrf, now + self.ttl_s)
        return sid, csrf

    def get(self, sid: str | None) -> tuple[str, str] | None:
        """(annotator, CSRF token) of a live session, else None."""
        if not sid:
            return None
        with self._lock:
            found = self._sessions.get(sid)
            if found is None or found[2] <= time.monotonic():
                self._sessions.pop(sid, None)
                return None
            return found[0], found[1]

    def close(self, sid: str | None) -> None:
        with self._lock:
            self._sessions.pop(sid or "", None)
