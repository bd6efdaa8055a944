"""Stage ingest: raw CSV (data.raw_uri) -> lake tables `reviews` (Hive-partitioned) and `rejects`,
plus metrics/ingest.json. Fails unless rows_in == rows_clean + rows_rejected."""

from __future__ import annotations

import os
from datetime import UTC, datetime

from omegaconf import DictConfig

from reviewpipe.config import section
from reviewpipe.data import lake
from reviewpipe.data.ingest import ingest_params
from reviewpipe.errors import ReviewpipeError
from reviewpipe.storage import StorageOptions, write_json

METRICS = "metrics/ingest.json"
# What dvc.yaml tracks as this stage's output. When lake.uri points elsewhere (s3://, another disk),
# this folder holds a pointer with the published manifests instead, so DVC still sees every change.
TRACKED_LAKE = "data/lake"


def main(params: DictConfig) -> None:
    data = section(params, "data")
    lake_cfg = section(params, "lake")
    options = StorageOptions.from_params(params.get("storage"))
    now = datetime.now(UTC)

    result = ingest_params(data, options, ingested_at=now)
    run_id = lake.new_run_id(now)
    rejects_manifest = lake.publish_table(lake_cfg.uri, "rejects", result.rejects, None, run_id, options)
    if result.metrics["rows_clean"] == 0:
        write_json(METRICS, result.metrics)
        raise ReviewpipeError(
            f"all {result.metrics['rows_in']} rows of {data.raw_uri} were rejected "
            f"({ {k: v for k, v in result.metrics['rejected_by_reason'].items() if v} }); "
            f"see the rejects table under {lake.table_uri(lake_cfg.uri, 'rejects')}"
        )
    manifests = {
        "rejects": rejects_manifest,
        "reviews": lake.publish_table(
            lake_cfg.uri, "reviews", result.clean, lake_cfg.get("partition_by"), run_id, options
        ),
    }
    if os.path.normpath(lake_cfg.uri) != os.path.normpath(TRACKED_LAKE):
        write_json(os.path.join(TRACKED_LAKE, "_pointer.json"), {"uri": lake_cfg.uri, "tables": manifests})
    write_json(METRICS, result.metrics)

    m = result.metrics
    reasons = ", ".join(f"{k}={v}" for k, v in m["rejected_by_reason"].items() if v) or "none"
    print(
        f"ingest: {m['rows_in']} rows in, {m['rows_clean']} clean, {m['rows_rejected']} rejected "
        f"({reasons}) -> {lake_cfg.uri}"
    )
