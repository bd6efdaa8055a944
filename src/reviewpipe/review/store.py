"""Human labels, durably and once: one JSON Lines file per annotator in `labels_dir`, records
{review_id, label, annotator, labeled_at}. The prepare stage merges these into the prepared data
(the latest label per review wins over the rating-derived one on train and validation rows), so
this format is a contract.

Several annotators may label at once, from several `reviewpipe review` processes. Every change goes
through one cross-process lock (a file lock in `state_dir`), under which:
- `LabelStore.append` re-reads who labelled what and refuses a review that is already labelled, so
  no review is ever labelled twice, whichever process asks;
- `Claims` records which annotator is looking at which review (a lease that expires), so two
  annotators are never shown the same review in the first place.
Each label is appended, flushed and fsync'ed before `append` returns. A torn last line (a crash
mid-write) is closed with a newline before the next label is appended, so it never swallows it.
`state_dir` is kept apart from `labels_dir`: the lock and the leases are not pipeline inputs.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

from reviewpipe import SENTIMENTS, storage
from reviewpipe.errors import ReviewpipeError
from reviewpipe.review.labels import read_labels

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
LOCK_FILE = "labels.lock"
CLAIMS_FILE = "claims.json"
LOCK_TIMEOUT_S = 30.0


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def timestamp(moment: dt.datetime) -> str:
    """ISO 8601 UTC with milliseconds (orders labels made within one second)."""
    return moment.isoformat(timespec="milliseconds")


def annotator_file_name(annotator: str) -> str:
    """`Ana María` -> `Ana_Mar_a.jsonl`: a safe file name per annotator."""
    cleaned = _UNSAFE.sub("_", annotator.strip()).strip("._")
    if not cleaned:
        raise ReviewpipeError(f"annotator name {annotator!r} is empty; pass --annotator YOUR_NAME")
    return f"{cleaned}.jsonl"


class AlreadyLabelled(ReviewpipeError):
    """The review already has a label (from this or another annotator)."""


class ClaimedByOther(ReviewpipeError):
    """Another annotator holds an unexpired claim on the review."""

    def __init__(self, review_id: Any, annotator: str) -> None:
        super().__init__(f"review {review_id!r} is being labelled by {annotator}")
        self.annotator = annotator


def _local_dir(uri: str | Path, setting: str) -> Path:
    if storage.is_remote(str(uri)):
        raise ReviewpipeError(
            f"{setting} must be a local folder (labels are fsync'ed under a file lock), got {uri}"
        )
    return Path(str(uri).removeprefix("file://"))


class ReviewLock:
    """The cross-process lock every label and claim goes through (a file lock in `state_dir`)."""

    def __init__(self, state_dir: str | Path, timeout_s: float = LOCK_TIMEOUT_S) -> None:
        self.state_dir = _local_dir(state_dir, "review.state_dir")
        self._file_lock = FileLock(str(self.state_dir / LOCK_FILE), timeout=timeout_s)
        self._thread_lock = threading.RLock()

    @contextmanager
    def held(self) -> Iterator[None]:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        with self._thread_lock:
            try:
                with self._file_lock:
                    yield
            except Timeout as exc:
                raise ReviewpipeError(
                    f"another review process has held {self._file_lock.lock_file} for over "
                    f"{self._file_lock.timeout:.0f} s; if none is running, delete that file"
                ) from exc


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class LabelStore:
    """Appends one annotator's labels to `labels_dir/<annotator>.jsonl`, once per review across
    every annotator and process (the check and the append happen under `lock`)."""

    def __init__(self, labels_dir: str | Path, annotator: str, lock: ReviewLock) -> None:
        self.labels_dir = _local_dir(labels_dir, "review.labels_dir")
        self.annotator = annotator.strip()
        self.path = self.labels_dir / annotator_file_name(annotator)
        self.lock = lock

    def labelled_ids(self) -> set[str]:
        """review_ids labelled by anyone (as strings, how prepare matches them)."""
        return {str(r["review_id"]) for r in read_labels(self.labels_dir)}

    def append(self, review_id: Any, label: int) -> dict[str, Any]:
        """Write one label durably and return the record; AlreadyLabelled if anyone labelled it."""
        if label not in SENTIMENTS or isinstance(label, bool):
            raise ValueError(f"label must be one of {SENTIMENTS}, got {label!r}")
        with self.lock.held():
            if str(review_id) in self.labelled_ids():
                raise AlreadyLabelled(f"review {review_id!r} is already labelled")
            return self._append_locked(review_id, label)

    def _append_locked(self, review_id: Any, label: int) -> dict[str, Any]:
        record = {
            "review_id": review_id,
            "label": int(label),
            "annotator": self.annotator,
            "labeled_at": timestamp(utc_now()),
        }
        line = json.dumps(record, ensure_ascii=False) + "\n"
        created = not self.path.exists()
        self.labels_dir.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a+b") as f:
            f.seek(0, os.SEEK_END)
            if f.tell() > 0:
                f.seek(-1, os.SEEK_END)
                if f.read(1) != b"\n":  # a torn last line: close it so it cannot swallow this label
                    line = "\n" + line
            f.write(line.encode("utf-8"))
            f.flush()
            os.fsync(f.fileno())
        if created:  # the new file's directory entry must be durable too
            _fsync_dir(self.labels_dir)
        return record


class Claims:
    """Leases on reviews: {review_id: {annotator, expires_at}} in `state_dir/claims.json`, changed
    only under the lock. A claim expires after `ttl_s`, so a closed browser tab frees its review."""

    def __init__(self, lock: ReviewLock, ttl_s: float) -> None:
        if ttl_s <= 0:
            raise ReviewpipeError(f"review.claim_ttl_s must be > 0, got {ttl_s}")
        self.lock = lock
        self.ttl = dt.timedelta(seconds=ttl_s)
        self.path = lock.state_dir / CLAIMS_FILE

    def read(self, now: dt.datetime) -> dict[str, dict[str, str]]:
        """Unexpired claims (call under the lock)."""
        try:
            claims = json.loads(self.path.read_text(encoding="utf-8"))
        except (FileNotFoundError, json.JSONDecodeError):
            return {}
        return {
            key: claim
            for key, claim in claims.items()
            if isinstance(claim, dict) and dt.datetime.fromisoformat(claim["expires_at"]) > now
        }

    def write(self, claims: dict[str, dict[str, str]]) -> None:
        """Replace the claims file atomically (call under the lock)."""
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(claims, sort_keys=True), encoding="utf-8")
        os.replace(tmp, self.path)

    def claim(self, claims: dict[str, dict[str, str]], key: str, annotator: str, now: dt.datetime) -> None:
        claims[key] = {"annotator": annotator, "expires_at": timestamp(now + self.ttl)}

    @staticmethod
    def holder(claims: dict[str, dict[str, str]], key: str) -> str | None:
        claim = claims.get(key)
        return None if claim is None else claim["annotator"]

    @staticmethod
    def release(claims: dict[str, dict[str, str]], keys: Iterable[str]) -> None:
        for key in keys:
            claims.pop(key, None)
