"""`reviewpipe stage monitor_baseline` (what dvc.yaml runs) builds the Model Monitor baseline from
prepare's natural-mix rows of the training split."""

from __future__ import annotations

import json
from contextlib import chdir
from pathlib import Path

import pandas as pd

from reviewpipe.cli import main
from tests.conftest import REPO_ROOT


def test_monitor_baseline_stage_profiles_the_natural_mix_training_rows(prepared_splits: Path) -> None:
    prepared = prepared_splits / "data" / "prepared"
    splits = [pd.read_parquet(prepared / f"{name}.parquet") for name in ("train", "validation", "test")]
    pd.concat(splits, ignore_index=True).to_parquet(prepared / "unbalanced.parquet", index=False)
    with chdir(prepared_splits):
        code = main(
            [
                "stage",
                "monitor_baseline",
                "--params",
                str(REPO_ROOT / "params.yaml"),
                "-S",
                "monitor.model.source=none",
                "-S",
                "monitor.out_dir=monitoring",
            ]
        )
    assert code == 0
    out = prepared_splits / "monitoring" / "baseline"
    stats = json.loads((out / "statistics.json").read_text())
    assert stats["dataset"]["item_count"] == 300  # the train rows of unbalanced.parquet, no other split
    assert stats["dataset"]["source"] == "data/prepared/unbalanced.parquet (split_type=train)"
    names = {c["name"] for c in json.loads((out / "constraints.json").read_text())["features"]}
    assert {"review_length", "word_count", "product_category"} <= names
