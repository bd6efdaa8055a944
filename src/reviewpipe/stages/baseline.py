"""Stage `baseline`: TF-IDF word + char n-grams and logistic regression on the prepared train split.

Writes the fitted pipeline (`baseline.model_path`, one joblib file) and validation metrics
(`baseline.metrics_path`).
"""

from __future__ import annotations

import time

from omegaconf import DictConfig

from reviewpipe import storage
from reviewpipe.errors import ReviewpipeError
from reviewpipe.models.baseline import save_model, score, train_baseline
from reviewpipe.models.splits import prepared_dir, read_class_weights, read_split
from reviewpipe.schema import BaselineParams
from reviewpipe.storage import StorageOptions

CLASS_WEIGHT_CHOICES = ("prepared", "balanced", None)


def resolve_class_weight(
    choice: str | None, data_dir: str, options: StorageOptions | None = None
) -> dict[int, float] | str | None:
    """`prepared` -> prepare's class_weights.json as {label_id: weight}; `balanced`/None as is."""
    if choice not in CLASS_WEIGHT_CHOICES:
        raise ReviewpipeError(
            f"baseline.classifier.class_weight must be one of {list(CLASS_WEIGHT_CHOICES)}, got {choice!r}."
        )
    return read_class_weights(data_dir, options) if choice == "prepared" else choice


def main(params: DictConfig) -> None:
    cfg = BaselineParams.from_params(params)
    options = StorageOptions.from_params(params.get("storage"))
    data_dir = prepared_dir(params)
    train = read_split(data_dir, "train", options)
    validation = read_split(data_dir, "validation", options)
    class_weight = resolve_class_weight(cfg.classifier.class_weight, data_dir, options)

    started = time.perf_counter()
    model = train_baseline(train, cfg, class_weight)
    seconds = time.perf_counter() - started
    save_model(model, cfg.model_path)

    # Training time is printed, not recorded: outputs derive from data and params, never the clock.
    metrics = {
        "validation": score(model, validation, cfg.text_column),
        "train": score(model, train, cfg.text_column),
        "features": int(sum(len(v.vocabulary_) for _, v in model.named_steps["features"].transformer_list)),
    }
    storage.write_json(cfg.metrics_path, metrics)
    v = metrics["validation"]
    print(
        f"baseline: {len(train)} training rows, {metrics['features']} n-gram features, {seconds:.1f}s; "
        f"validation accuracy {v['accuracy']:.4f}, macro-F1 {v['macro_f1']:.4f} -> {cfg.model_path}"
    )
