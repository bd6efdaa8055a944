"""The human review queue (Augmented AI's activation condition, locally): predictions whose top
class probability is below the confidence threshold wait in `{queue_dir}/*.jsonl` for a person.

Record: {review_id, text, predicted_label (-1/0/1), probabilities {"-1", "0", "1"}, confidence,
created_at}. Selection is pure; the writer publishes one new file atomically per batch.

Annotators' time is the scarce resource, so the queue is read in order of the expected value of a
label: the chance that the model's answer is wrong, 1 - its (calibrated) top probability. The least
confident predictions come first, whichever batch queued them.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import posixpath
import uuid
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from reviewpipe import SENTIMENTS, storage
from reviewpipe.review.store import timestamp, utc_now

RECORD_KEYS = frozenset({"review_id", "text", "predicted_label", "probabilities", "confidence", "created_at"})
# What an annotator sees of a record when labelling blind (the model's guess would anchor them).
BLIND_KEYS = ("review_id", "text")


def select_for_review(
    review_ids: Sequence[Any],
    texts: Sequence[str],
    probabilities: np.ndarray,
    threshold: float,
    created_at: str | None = None,
    labels: Sequence[Any] | None = None,
) -> list[dict[str, Any]]:
    """Queue records for the predictions whose top probability is below `threshold` (strictly).
    Rows of NaN (not predicted) are not queued: there is no prediction to confirm. `labels`: what
    the model answered (a calibrated package's decision rule), else the top probability's class."""
    probabilities = np.asarray(probabilities, dtype=float)
    if probabilities.shape != (len(texts), len(SENTIMENTS)) or len(review_ids) != len(texts):
        raise ValueError(
            f"expected {len(texts)} ids, texts and probability rows of {len(SENTIMENTS)}; "
            f"got {len(review_ids)} ids and probabilities of shape {probabilities.shape}"
        )
    if not 0.0 < threshold <= 1.0:
        raise ValueError(f"confidence threshold must be in (0, 1], got {threshold}")
    created_at = created_at or timestamp(utc_now())
    records = []
    answered = [None] * len(texts) if labels is None else list(labels)
    for review_id, text, row, label in zip(review_ids, texts, probabilities, answered, strict=True):
        if np.isnan(row).any() or row.max() >= threshold:
            continue
        records.append(
            {
                "review_id": _plain(review_id),
                "text": str(text),
                "predicted_label": SENTIMENTS[int(row.argmax())] if label is None else int(label),
                "probabilities": {str(s): float(p) for s, p in zip(SENTIMENTS, row, strict=True)},
                "confidence": float(row.max()),
                "created_at": created_at,
            }
        )
    return records


def _plain(value: Any) -> Any:
    """numpy scalars -> Python (JSON); ids keep their type so labels match the data's ids."""
    return value.item() if isinstance(value, np.generic) else value


def write_queue(
    records: Iterable[dict[str, Any]],
    queue_dir: str,
    name: str | None = None,
    options: storage.StorageOptions | None = None,
) -> str | None:
    """Publish `records` as one new JSON Lines file in `queue_dir` (temporary file, then rename
    locally; a single PUT remotely). Returns its URI, or None when there is nothing to queue."""
    lines = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
    if not lines:
        return None
    name = name or f"queue-{dt.datetime.now(dt.UTC):%Y%m%dT%H%M%S%fZ}.jsonl"
    uri = storage.join(queue_dir, name)
    fs, path = storage.get_fs(uri, options)
    if storage.is_remote(uri):
        with fs.open(path, "w", encoding="utf-8") as f:
            f.write(lines)
        return uri
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.tmp-{uuid.uuid4().hex[:8]}"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(lines)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return uri


def label_value(record: dict[str, Any]) -> float:
    """Expected value of a person's label for a queued prediction: the probability that the model's
    answer is wrong, 1 - its top class probability (calibrated probabilities make this honest)."""
    return 1.0 - float(record["confidence"])


def read_queue(queue_dir: str, options: storage.StorageOptions | None = None) -> list[dict[str, Any]]:
    """Every queued review once per review_id (the first queueing wins), the most valuable label
    first (`label_value`; ties: queued earlier, then file and line order). A missing folder is an
    empty queue; lines that are not a queue record (a torn write) are skipped."""
    fs, path = storage.get_fs(queue_dir, options)
    if not fs.exists(path):
        return []
    seen: set[str] = set()
    records = []
    for file in sorted(fs.glob(posixpath.join(path, "*.jsonl"))):
        with fs.open(file, "r", encoding="utf-8") as f:
            for line in f:
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    continue
                if not isinstance(record, dict) or not set(record) >= RECORD_KEYS:
                    continue
                key = str(record["review_id"])
                if key not in seen:
                    seen.add(key)
                    records.append(record)
    return sorted(records, key=lambda r: (-label_value(r), str(r["created_at"])))  # stable: file order
