"""Stage `automl`: AutoGluon's search over gradient-boosted trees and a linear model.

Writes the predictor directory (`automl.model_dir`), the candidates view
(`{report_dir}/leaderboard.csv`, `leaderboard.png`) and validation metrics (`automl.metrics_path`).
"""

from __future__ import annotations

import os
import shutil
import time

from omegaconf import DictConfig

from reviewpipe import SENTIMENTS, storage
from reviewpipe.config import section, to_dict
from reviewpipe.errors import ReviewpipeError
from reviewpipe.models.automl import (
    choose_best,
    keep_best_only,
    leaderboard,
    leaderboard_plot,
    per_model_time_limit,
    train_automl,
)
from reviewpipe.models.splits import prepared_dir, read_class_weights, read_split
from reviewpipe.storage import StorageOptions


def main(params: DictConfig) -> None:
    cfg = to_dict(section(params, "automl"))
    options = StorageOptions.from_params(params.get("storage"))
    data_dir = prepared_dir(params)
    train = read_split(data_dir, "train", options, required=("review_body", "product_category", "sentiment"))
    validation = read_split(
        data_dir, "validation", options, required=("review_body", "product_category", "sentiment")
    )

    weighting = cfg["class_weight"]
    if weighting not in ("prepared", None):
        raise ReviewpipeError(f"automl.class_weight must be `prepared` or null, got {weighting!r}.")
    class_weights = None
    if weighting == "prepared":  # prepare's weights by label id -> by sentiment (AutoGluon's label)
        class_weights = {SENTIMENTS[i]: w for i, w in read_class_weights(data_dir, options).items()}

    model_dir, report_dir = cfg["model_dir"], cfg["report_dir"]
    shutil.rmtree(model_dir, ignore_errors=True)  # AutoGluon refuses to overwrite a previous run
    started = time.perf_counter()
    predictor = train_automl(train, validation, cfg, model_dir, class_weights)
    seconds = time.perf_counter() - started

    board = leaderboard(predictor)
    os.makedirs(report_dir, exist_ok=True)
    # The committed candidates view keeps scores, not timings (fit/predict seconds depend on the machine).
    board.drop(columns=[c for c in board.columns if "time" in c]).to_csv(
        os.path.join(report_dir, "leaderboard.csv"), index=False
    )
    with open(os.path.join(report_dir, "leaderboard.png"), "wb") as f:
        f.write(leaderboard_plot(board, cfg["eval_metric"]))
    best = choose_best(predictor, board)
    if cfg["keep_best_only"]:
        keep_best_only(predictor)

    metrics = {
        "best_model": best,
        "validation": {cfg["eval_metric"]: float(board.loc[board["model"] == best, "score_val"].iloc[0])},
        "candidates": int(len(board)),
        "train_rows": int(len(train)),
        "seed": int(cfg["seed"]),
        # The budget, not the clock: what bounded the search (wall-clock seconds stay out of metrics).
        "budget": {
            "time_limit_s": float(cfg["time_limit"]),
            "per_model_time_limit_s": per_model_time_limit(cfg["time_limit"], cfg["model_types"]),
            "model_types": list(cfg["model_types"]),
            "presets": cfg["presets"],
        },
    }
    storage.write_json(cfg["metrics_path"], metrics)
    print(
        f"automl: {len(board)} candidates in {seconds:.0f}s (budget {cfg['time_limit']:.0f}s); best {best} "
        f"validation {metrics['validation']} -> {model_dir}"
    )
