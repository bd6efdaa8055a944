"""Stage `bert`: fine-tune a Hugging Face encoder on the feature store with Lightning.

Reads the review feature group, trains (resuming from `ckpt_dir/last.ckpt` after an interruption),
logs to DVCLive (`live_dir`), and writes `out_dir`: a save_pretrained directory with the tokenizer,
the label map and test_metrics.json.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import pandas as pd
from omegaconf import DictConfig

from reviewpipe.config import section, to_dict
from reviewpipe.errors import ReviewpipeError
from reviewpipe.models.splits import class_weights_at
from reviewpipe.storage import StorageOptions

# OpenMP threads that spin while waiting make torch 5-15x slower when other processes share the
# cores (measured on the 2-core dev machine under load); sleeping costs little when it is idle.
# Only effective before torch is first imported, which this module does not do at import time.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def main(params: DictConfig) -> None:
    if section(params, "bert").launcher == "sagemaker":  # the same code as a SageMaker training job
        from reviewpipe.aws.training import train_on_sagemaker

        train_on_sagemaker(params)
        return
    cfg = to_dict(section(params, "bert"))
    features = to_dict(section(params, "features"))
    options = StorageOptions.from_params(params.get("storage"))
    from reviewpipe.models.bert.train import fit_bert, settings

    frame = read_features(features, options)
    cfg = {
        **cfg,
        "reuse_input_ids": bool(cfg.get("reuse_input_ids", True))
        and tokens_reusable(features, settings(cfg)),
    }
    weights = read_class_weights(cfg["class_weights_uri"], options) if cfg.get("class_weights") else None
    metrics = fit_bert(
        cfg,
        frame,
        out_dir=cfg["out_dir"],
        ckpt_dir=cfg["ckpt_dir"],
        live_dir=cfg["live_dir"],
        class_weights=weights,
    )
    print(
        f"bert: test accuracy {metrics.get('accuracy', float('nan')):.4f}, macro-F1 "
        f"{metrics.get('macro_f1', float('nan')):.4f} on {metrics['test_rows']} rows "
        f"({metrics['best_checkpoint']}, {metrics['wall_seconds']:.0f} s; step {metrics['global_step']} of "
        f"{metrics['planned_steps']} planned, stopped by {metrics['stopped_by']}"
        f"{'' if metrics['complete'] else ', INCOMPLETE'}) -> {cfg['out_dir']}"
    )


def read_features(features: Mapping[str, Any], options: StorageOptions | None = None) -> pd.DataFrame:
    """The latest version of every record in the review feature group."""
    from reviewpipe.features.store import FeatureGroup

    group = FeatureGroup(features["group_name"], features.get("store_uri", "data/features"), options=options)
    frame = group.to_df()
    if frame.empty:
        raise ReviewpipeError(
            f"feature group {group.name!r} at {group.uri} is empty; run `dvc repro features`."
        )
    # to_df returns every version (write order); train on each record's latest.
    return frame.drop_duplicates(group.record_identifier, keep="last").reset_index(drop=True)


def tokens_reusable(features: Mapping[str, Any], bert: Mapping[str, Any]) -> bool:
    """Stored input_ids fit this model only when the same tokenizer made them, at least as long."""
    return str(features.get("checkpoint")) == str(bert["checkpoint"]) and int(
        features.get("max_seq_length", 0)
    ) >= int(bert["max_seq_length"])


def read_class_weights(uri: str, options: StorageOptions | None = None) -> list[float]:
    """prepare's class weights in class-id order (the loss's `weight`)."""
    return list(
        class_weights_at(uri, options, "Run `dvc repro prepare`, or set bert.class_weights=false.").values()
    )
