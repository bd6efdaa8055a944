"""`reviewpipe stage monitor_baseline` (what dvc.yaml runs) builds the Model Monitor baseline."""

from __future__ import annotations

import json
from contextlib import chdir
from pathlib import Path

from reviewpipe.cli import main
from tests.conftest import REPO_ROOT


def test_monitor_baseline_stage_writes_statistics_and_constraints(prepared_splits: Path) -> None:
    with chdir(prepared_splits):
        code = main(
            [
                "stage",
                "monitor_baseline",
                "--params",
                str(REPO_ROOT / "params.yaml"),
                "-S",
                "monitor.model.kind=none",
                "-S",
                "monitor.out_dir=monitoring",
            ]
        )
    assert code == 0
    out = prepared_splits / "monitoring" / "baseline"
    stats = json.loads((out / "statistics.json").read_text())
    assert stats["dataset"]["item_count"] == 300  # every row of the prepared train split
    assert stats["dataset"]["source"] == "data/prepared/train.parquet"
    names = {c["name"] for c in json.loads((out / "constraints.json").read_text())["features"]}
    assert {"review_length", "word_count", "product_category"} <= names
