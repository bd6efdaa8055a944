"""`reviewpipe ingest --append URI`: append one raw batch to the lake in place, then refresh the catalog.

The batch's rows get `ingested_at` = now (or --ingested-at); rows the lake already holds add
nothing; changed rows become new versions. The lake the ingest stage tracks under DVC (data/lake) is
rebuilt by `dvc repro` from data.raw_uri + data.batches, so for it the command also prints the
data.batches entry that keeps the batch in the reproducible pipeline.
"""

from __future__ import annotations

import argparse
import os
from datetime import UTC, datetime

from reviewpipe import storage
from reviewpipe.config import load_params, section
from reviewpipe.data.append import AppendSettings, Batch, ingest_batches
from reviewpipe.stages.catalog import publish_catalog
from reviewpipe.stages.ingest import TRACKED_LAKE


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--append", required=True, metavar="URI", help="the raw batch (CSV, plain or .gz; any URI)"
    )
    parser.add_argument("--ingested-at", help="the batch's ingested_at (ISO 8601; default: now, UTC)")
    parser.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")
    parser.add_argument(
        "-S",
        "--set",
        dest="overrides",
        action="append",
        default=[],
        help="override a param, e.g. -S lake.uri=s3://bucket/lake",
    )
    parser.add_argument("--no-catalog", action="store_true", help="do not rebuild the catalog afterwards")


def run(args: argparse.Namespace) -> int:
    params = load_params(args.params, args.overrides)
    lake_cfg = section(params, "lake")
    options = storage.StorageOptions.from_params(params.get("storage"))
    settings = AppendSettings.from_params(section(params, "data"), lake_cfg)
    batch = Batch.of(args.append, args.ingested_at or datetime.now(UTC), "--ingested-at")
    metrics = ingest_batches([batch], lake_cfg.uri, settings, rebuild=False, options=options)
    counts = metrics["lake"]
    print(
        f"ingest: {lake_cfg.uri} now holds {counts['review_ids']} reviews ({counts['review_rows']} rows "
        f"with versions) and {counts['reject_rows']} rejects"
    )
    if not args.no_catalog:
        publish_catalog(params)
        print(f"ingest: catalog {section(params, 'catalog').database} refreshed")
    if not storage.is_remote(lake_cfg.uri) and os.path.normpath(lake_cfg.uri) == os.path.normpath(
        TRACKED_LAKE
    ):
        print(
            f"note: {TRACKED_LAKE} is the ingest stage's DVC output; `dvc repro` rebuilds it from data.raw_uri "
            "and data.batches. To keep this batch there, add to data.batches (conf/data/*.yaml, then "
            f'`make params`):\n  - {{uri: {batch.uri}, ingested_at: "{batch.ingested_at.isoformat()}"}}'
        )
    return 0
