"""Human labels, durably: one JSON Lines file per annotator in `labels_dir`, records
{review_id, label, annotator, labeled_at}. The prepare stage merges these into the prepared data
(the latest label per review wins over the rating-derived one), so this format is a contract.

Each label is appended, flushed and fsync'ed before `append` returns, so a label the page has
moved past survives a crash or power loss.
"""

from __future__ import annotations

import json
import os
import re
import threading
from pathlib import Path
from typing import Any

from reviewpipe import SENTIMENTS, storage
from reviewpipe.errors import ReviewpipeError
from reviewpipe.review.queue import utc_now

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def annotator_file_name(annotator: str) -> str:
    """`Ana María` -> `Ana_Mar_a.jsonl`: a safe file name per annotator."""
    cleaned = _UNSAFE.sub("_", annotator.strip()).strip("._")
    if not cleaned:
        raise ReviewpipeError(f"annotator name {annotator!r} is empty; pass --annotator YOUR_NAME")
    return f"{cleaned}.jsonl"


def read_labels(labels_dir: str | Path) -> list[dict[str, Any]]:
    """Every label record in `labels_dir/*.jsonl` (any annotator), in file then line order.
    A torn last line (a crash mid-write) is skipped, not fatal."""
    folder = Path(labels_dir)
    records = []
    for file in sorted(folder.glob("*.jsonl")):
        for line in file.read_text(encoding="utf-8").splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(record, dict) and "review_id" in record:
                records.append(record)
    return records


class LabelStore:
    """Appends one annotator's labels to `labels_dir/<annotator>.jsonl` (local disk: fsync)."""

    def __init__(self, labels_dir: str | Path, annotator: str) -> None:
        if storage.is_remote(str(labels_dir)):
            raise ReviewpipeError(
                f"review.labels_dir must be a local folder (labels are fsync'ed), got {labels_dir}"
            )
        self.labels_dir = Path(str(labels_dir).removeprefix("file://"))
        self.annotator = annotator.strip()
        self.path = self.labels_dir / annotator_file_name(annotator)
        self._lock = threading.Lock()

    def labelled_ids(self) -> set[str]:
        """review_ids labelled by anyone (as strings, how prepare matches them)."""
        return {str(r["review_id"]) for r in read_labels(self.labels_dir)}

    def append(self, review_id: Any, label: int) -> dict[str, Any]:
        """Write one label durably and return the record."""
        if label not in SENTIMENTS or isinstance(label, bool):
            raise ValueError(f"label must be one of {SENTIMENTS}, got {label!r}")
        record = {
            "review_id": review_id,
            "label": int(label),
            "annotator": self.annotator,
            "labeled_at": utc_now(),
        }
        line = json.dumps(record, ensure_ascii=False) + "\n"
        with self._lock:
            created = not self.path.exists()
            self.labels_dir.mkdir(parents=True, exist_ok=True)
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(line)
                f.flush()
                os.fsync(f.fileno())
            if created:  # the new file's directory entry must be durable too
                fd = os.open(self.labels_dir, os.O_RDONLY)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
        return record
