"""The human-label format and its readers: one JSON Lines file per annotator in a labels folder,
records {review_id, label, annotator, labeled_at}. review/store.py writes it; prepare (training
labels) and the model-quality monitor (ground truth) read it through here, so this is the contract.
"""

from __future__ import annotations

import json
import posixpath
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from reviewpipe import SENTIMENTS, storage


def parse_label_lines(text: str) -> list[dict[str, Any]]:
    """JSON Lines → records; a line that is not a JSON object (a torn line) becomes an empty record,
    so readers can count it instead of losing it silently."""
    records: list[dict[str, Any]] = []
    for line in text.splitlines():
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            record = None
        records.append(record if isinstance(record, dict) else {})
    return records


def read_label_records(labels_dir: str | Path, options: storage.StorageOptions | None = None) -> list[dict]:
    """Every line of `labels_dir/*.jsonl` (any annotator, local or remote), in file then line order;
    unreadable lines as empty records. A missing folder holds no labels."""
    fs, path = storage.get_fs(str(labels_dir), options)
    if not fs.exists(path):
        return []
    records: list[dict[str, Any]] = []
    for file in sorted(fs.glob(posixpath.join(path, "*.jsonl"))):
        with fs.open(file, "r", encoding="utf-8") as f:
            records.extend(parse_label_lines(f.read()))
    return records


def read_labels(labels_dir: str | Path) -> list[dict[str, Any]]:
    """Every readable label record in `labels_dir/*.jsonl` (torn lines skipped)."""
    return [r for r in read_label_records(labels_dir) if "review_id" in r]


def latest_human_labels(records: Sequence[Mapping[str, Any]]) -> tuple[pd.DataFrame, int]:
    """(labels, invalid): the latest valid label per review_id by labeled_at (a later record wins a
    tie), as a frame review_key (str), label; `invalid` counts records without a usable review_id,
    label in {-1, 0, 1} or labeled_at."""
    rows, invalid = [], 0
    for order, record in enumerate(records):
        label = pd.to_numeric(pd.Series([record.get("label")]), errors="coerce").iloc[0]
        when = pd.to_datetime(record.get("labeled_at"), utc=True, errors="coerce")
        if record.get("review_id") is None or pd.isna(label) or label not in SENTIMENTS or pd.isna(when):
            invalid += 1
            continue
        rows.append(
            {"review_key": str(record["review_id"]), "label": int(label), "labeled_at": when, "order": order}
        )
    if not rows:
        return pd.DataFrame(
            {"review_key": pd.Series(dtype="string"), "label": pd.Series(dtype="int64")}
        ), invalid
    labels = pd.DataFrame(rows).sort_values(["labeled_at", "order"], kind="stable")
    latest = labels.drop_duplicates("review_key", keep="last")
    return latest[["review_key", "label"]].reset_index(drop=True), invalid


def read_human_labels(
    labels_dir: str, options: storage.StorageOptions | None = None
) -> tuple[pd.DataFrame, int]:
    """Latest human label per review from `labels_dir/*.jsonl` (records {review_id, label,
    annotator, labeled_at}); a missing directory means no labels. Returns (labels, invalid)."""
    return latest_human_labels(read_label_records(labels_dir, options))
