"""Stage ingest: raw batches -> lake tables `reviews` (Hive-partitioned, versioned) and `rejects`,
plus metrics/ingest.json. Fails unless rows_in == rows_clean + rows_rejected.

The stage rebuilds the lake from what params declare, so the lake is a function of them: first
`data.raw_uri` (rows ingested at `data.ingested_at`), then each of `data.batches` in order, each
appended on top of the ones before (idempotent; changed rows become new versions). To add a batch
under DVC, list it in `data.batches` and `dvc repro`; `reviewpipe ingest --append URI` appends to a
lake in place (one outside DVC, e.g. on S3).
"""

from __future__ import annotations

import os
from typing import Any

from omegaconf import DictConfig

from reviewpipe.config import section
from reviewpipe.data import lake
from reviewpipe.data.append import AllRejectedError, AppendSettings, Batch, ingest_batches
from reviewpipe.errors import ReviewpipeError
from reviewpipe.storage import StorageOptions, write_json

METRICS = "metrics/ingest.json"
# What dvc.yaml tracks as this stage's output. When lake.uri points elsewhere (s3://, another disk),
# this folder holds a pointer with the published manifests instead, so DVC still sees every change.
TRACKED_LAKE = "data/lake"


def declared_batches(data: Any) -> list[Batch]:
    """data.raw_uri at data.ingested_at, then data.batches ({uri, ingested_at}) in order."""
    batches = [Batch.of(data.raw_uri, data.ingested_at, "data.ingested_at")]
    for i, entry in enumerate(data.batches):
        where = f"data.batches[{i}]"
        if "uri" not in entry or "ingested_at" not in entry:
            raise ReviewpipeError(f"{where} needs `uri` and `ingested_at`, got {dict(entry)}")
        batches.append(Batch.of(entry["uri"], entry["ingested_at"], f"{where}.ingested_at"))
    return batches


def main(params: DictConfig) -> None:
    data = section(params, "data")
    lake_cfg = section(params, "lake")
    options = StorageOptions.from_params(params.get("storage"))
    settings = AppendSettings.from_params(data, lake_cfg)
    try:
        metrics = ingest_batches(
            declared_batches(data), lake_cfg.uri, settings, rebuild=True, options=options
        )
    except AllRejectedError as exc:
        write_json(METRICS, exc.metrics)
        raise
    if os.path.normpath(lake_cfg.uri) != os.path.normpath(TRACKED_LAKE):
        manifests = {
            t: lake.read_manifest(lake.table_uri(lake_cfg.uri, t), options) for t in ("reviews", "rejects")
        }
        write_json(os.path.join(TRACKED_LAKE, "_pointer.json"), {"uri": lake_cfg.uri, "tables": manifests})
    write_json(METRICS, metrics)
    counts = metrics["lake"]
    print(
        f"ingest: {len(metrics['batches'])} batch(es): {metrics['rows_in']} rows in, {metrics['rows_clean']} clean, "
        f"{metrics['rows_rejected']} rejected -> {lake_cfg.uri}: {counts['review_ids']} reviews "
        f"({counts['review_rows']} rows with versions), {counts['reject_rows']} rejects"
    )
