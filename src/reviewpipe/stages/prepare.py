"""Stage `prepare`: the lake (via the catalog, SQL) → hash-split, human-corrected, balanced parquet.

Writes `{out_dir}/{train,validation,test}.parquet` (balanced per protocol), `unbalanced.parquet`
(filtered, before balancing), `dropped.parquet` (review_id + drop_reason), `class_weights.json`,
`split_stats.csv`, and the metrics file.
"""

from __future__ import annotations

from omegaconf import DictConfig

from reviewpipe import storage
from reviewpipe.config import section, to_dict
from reviewpipe.data.catalog import connect
from reviewpipe.prep.prepare import (
    SOURCE_SQL,
    PrepareSettings,
    prepare_reviews,
    read_human_labels,
    split_statistics,
)
from reviewpipe.prep.split import SPLITS
from reviewpipe.storage import StorageOptions


def main(params: DictConfig) -> None:
    cfg = section(params, "prepare")
    options = StorageOptions.from_params(params.get("storage"))
    settings = PrepareSettings.from_params(to_dict(cfg))
    con = connect(params, read_only=True)
    try:
        source = con.execute(SOURCE_SQL).df()
        rejected = dict(
            con.execute("SELECT reject_reason, COUNT(*) FROM rejects GROUP BY 1 ORDER BY 1").fetchall()
        )
    finally:
        con.close()
    labels, invalid = read_human_labels(cfg.get("human_labels_dir") or "data/review_labels", options)
    prepared = prepare_reviews(source, settings, section(params, "data").age_bands, labels, invalid)
    prepared.metrics["rejected_at_ingest"] = {str(k): int(v) for k, v in rejected.items()}

    out_dir = cfg.get("out_dir", "data/prepared")
    for name in SPLITS:
        storage.write_parquet(prepared.split(name), storage.join(out_dir, f"{name}.parquet"), options)
    storage.write_parquet(prepared.unbalanced, storage.join(out_dir, "unbalanced.parquet"), options)
    storage.write_parquet(prepared.dropped, storage.join(out_dir, "dropped.parquet"), options)
    storage.write_csv(split_statistics(prepared), storage.join(out_dir, "split_stats.csv"), options)
    storage.write_json(storage.join(out_dir, "class_weights.json"), prepared.class_weights, options)
    storage.write_json(cfg.get("metrics", "metrics/prepare.json"), prepared.metrics)

    m = prepared.metrics
    print(
        f"prepare: {m['rows_in']} rows in, {m['rows_dropped']} dropped {m['dropped']}, "
        f"{m['human_labels_merged']} human labels merged into train/validation, "
        f"{m['human_labels_on_test']} on test rows kept apart (test keeps the ratings' labels)"
    )
    print(
        f"prepare: {settings.protocol} protocol, balance={settings.balance}: "
        f"{m['rows_prepared']} rows per sentiment {m['rows_per_sentiment']}; "
        + ", ".join(f"{s} {m['rows'][s]['total']}" for s in SPLITS)
    )
