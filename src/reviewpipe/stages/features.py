"""Stage `features`: tokenise the prepared splits into the offline feature group, report token lengths."""

from __future__ import annotations

import pandas as pd
from omegaconf import DictConfig

from reviewpipe import storage
from reviewpipe.config import section
from reviewpipe.features.store import FeatureGroup
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
    event_time = pd.Timestamp(cfg.event_time) if cfg.get("event_time") else pd.Timestamp.now(tz="UTC")
    event_time = event_time.tz_localize("UTC") if event_time.tzinfo is None else event_time.tz_convert("UTC")
    rows = review_features(prepared, tokens, event_time.floor("us"))

    group = FeatureGroup(cfg.group_name, cfg.store_uri, options=options)
    if cfg.get("recreate", True):
        group.delete()
    group.create(REVIEW_FEATURES, cfg.get("description", ""))
    part = group.ingest(rows)

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


def read_prepared(prepared_dir: str, options: StorageOptions | None = None) -> pd.DataFrame:
    """train, validation and test parquet of stage prepare, concatenated."""
    frames = []
    for name in SPLITS:
        uri = storage.join(prepared_dir, f"{name}.parquet")
        storage.require_exists(uri, f"prepared split {name!r}", "Run `dvc repro prepare` first.", options)
        fs, path = storage.get_fs(uri, options)
        with fs.open(path, "rb") as f:
            frames.append(pd.read_parquet(f))
    return pd.concat(frames, ignore_index=True)
