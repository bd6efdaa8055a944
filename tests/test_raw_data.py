"""The shipped dataset is the one its README describes: same bytes, same rows."""

from __future__ import annotations

import gzip
import hashlib
import re
from pathlib import Path

import pandas as pd

README = Path(__file__).resolve().parents[1] / "data" / "raw" / "README.md"


def _stated_hashes() -> list[str]:
    return re.findall(r"`([0-9a-f]{64})`", README.read_text())


def test_shipped_file_matches_its_readme(real_raw: Path) -> None:
    gz_hash, csv_hash = _stated_hashes()
    assert hashlib.sha256(real_raw.read_bytes()).hexdigest() == gz_hash
    with gzip.open(real_raw, "rb") as f:
        assert hashlib.sha256(f.read()).hexdigest() == csv_hash


def test_shipped_file_rows_and_ratings(real_raw: Path) -> None:
    raw = pd.read_csv(real_raw, index_col=0)
    assert len(raw) == 23_486
    assert raw["Rating"].value_counts().sort_index().tolist() == [842, 1_565, 2_871, 5_077, 13_131]
