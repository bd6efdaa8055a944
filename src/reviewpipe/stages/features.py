"""Stage `features`: tokenise the prepared splits into the offline feature group, report token lengths."""

from __future__ import annotations

from typing import Any

import pandas as pd
from omegaconf import DictConfig

from reviewpipe import storage
from reviewpipe.config import section
from reviewpipe.features.store import FeatureGroup, utc_timestamp
from reviewpipe.features.tokenize import (
    REVIEW_FEATURES,
    length_statistics,
    load_tokenizer,
    review_features,
    tokenize,
)
from reviewpipe.prep.split import SPLITS
from reviewpipe.storage import StorageOptions

# Athena-style check that the group holds what prepare wrote (the view is named after the group).
COUNT_SQL = 'SELECT split_type, sentiment, COUNT(*) AS n FROM "{group}" GROUP BY 1, 2 ORDER BY 1, 2'


def main(params: DictConfig) -> None:
    cfg = section(params, "features")
    options = StorageOptions.from_params(params.get("storage"))
    prepared_dir = section(params, "prepare").get("out_dir", "data/prepared")
    prepared = read_prepared(prepared_dir, options)

    tokenizer = load_tokenizer(cfg.checkpoint)
    tokens = tokenize(
        prepared["review_body"].tolist(), tokenizer, int(cfg.max_seq_length), int(cfg.get("batch_size", 1000))
    )
    event_time = record_time(cfg.event_time, section(params, "data"))
    rows = review_features(prepared, tokens, event_time)

    group = FeatureGroup(cfg.group_name, cfg.store_uri, options=options)
    if cfg.get("recreate", True):
        group.delete()
    # Written "as of" the event time: the same data and params give byte-identical files.
    group.create(REVIEW_FEATURES, cfg.get("description", ""), creation_time=event_time)
    part = group.ingest(rows, write_time=event_time)

    counts = group.query(COUNT_SQL.format(group=group.name))
    metrics = {
        "checkpoint": cfg.checkpoint,
        "max_seq_length": int(cfg.max_seq_length),
        "feature_group": group.uri,
        "rows": int(len(rows)),
        "token_length": length_statistics(tokens.lengths, int(cfg.max_seq_length)),
        "rows_per_split_sentiment": {
            s: {
                str(k): int(v)
                for k, v in counts[counts["split_type"] == s].set_index("sentiment")["n"].items()
            }
            for s in SPLITS
        },
    }
    storage.write_json(cfg.get("metrics", "metrics/features.json"), metrics)
    t = metrics["token_length"]
    print(f"features: {len(rows)} records into {part}")
    print(
        f"features: token lengths p50 {t.get('p50')}, p95 {t.get('p95')}, p99 {t.get('p99')}, "
        f"max {t.get('max')}; {t.get('share_truncated', 0):.2%} truncated at {cfg.max_seq_length}"
    )


def record_time(event_time: Any, data: Any) -> pd.Timestamp:
    """The records' event time: features.event_time when set, else when the newest raw batch entered
    the lake (data.ingested_at / data.batches: the data's own time, not the clock)."""
    if event_time is not None:
        return utc_timestamp(event_time).floor("us")
    declared = [data.ingested_at, *(batch["ingested_at"] for batch in data.batches)]
    return max(utc_timestamp(t) for t in declared).floor("us")


def read_prepared(prepared_dir: str, options: StorageOptions | None = None) -> pd.DataFrame:
    """train, validation and test parquet of stage prepare, concatenated."""
    frames = []
    for name in SPLITS:
        uri = storage.join(prepared_dir, f"{name}.parquet")
        frames.append(storage.read_parquet(uri, options, hint="Run `dvc repro prepare` first."))
    return pd.concat(frames, ignore_index=True)
