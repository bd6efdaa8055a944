"""AutoML (SageMaker Autopilot, locally): AutoGluon's TabularPredictor on review text + category.

The review text becomes AutoGluon's bag-of-n-grams and text statistics features (no neural text
models, nothing downloaded); gradient-boosted trees (LightGBM, CatBoost, XGBoost) compete on them,
and a weighted ensemble may combine them. The leaderboard is the "candidates" view.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from reviewpipe import SENTIMENTS
from reviewpipe.errors import ReviewpipeError

LABEL = "sentiment"
TEXT = "review_body"
CATEGORY = "product_category"
FEATURES: tuple[str, ...] = (TEXT, CATEGORY)
WEIGHT = "class_weight"  # sample-weight column (training only) when classes are weighted
# AutoGluon's names for the model families a user may list in automl.model_types.
KNOWN_MODEL_TYPES: tuple[str, ...] = ("GBM", "CAT", "XGB", "LR", "RF", "XT", "KNN", "NN_TORCH", "FASTAI")


def to_features(texts: Sequence[str], categories: Sequence[str] | None = None) -> pd.DataFrame:
    """The frame AutoGluon sees: text as object strings (so it is detected as text), category as category."""
    frame = pd.DataFrame({TEXT: pd.Series(list(texts), dtype="object").fillna("").astype(str).astype(object)})
    values = [None] * len(frame) if categories is None else list(categories)
    frame[CATEGORY] = pd.Series(values, dtype="object").astype("category")
    return frame


def training_frame(split: pd.DataFrame, class_weights: Mapping[int, float] | None = None) -> pd.DataFrame:
    """Features + label from a prepared split; with `class_weights` ({sentiment: w}) a weight column."""
    missing = [c for c in (*FEATURES, LABEL) if c not in split.columns]
    if missing:
        raise ReviewpipeError(
            f"the prepared split lacks columns {missing}; rerun `reviewpipe stage prepare`."
        )
    frame = to_features(split[TEXT].tolist(), split[CATEGORY].astype(str).tolist())
    frame[LABEL] = split[LABEL].astype(int).to_numpy()
    if class_weights is not None:
        frame[WEIGHT] = frame[LABEL].map(class_weights).astype(float).to_numpy()
    return frame


def feature_generator(cfg: Mapping[str, Any]) -> Any:
    """AutoGluon's default pipeline with our n-gram vectorizer; raw-text (neural) features stay off."""
    from autogluon.features.generators import AutoMLPipelineFeatureGenerator
    from sklearn.feature_extraction.text import CountVectorizer

    ngram = cfg["ngram"]
    vectorizer = CountVectorizer(
        min_df=int(ngram["min_df"]),
        ngram_range=tuple(ngram["ngram_range"]),
        max_features=None if ngram["max_features"] is None else int(ngram["max_features"]),
        dtype=np.uint8,
    )
    return AutoMLPipelineFeatureGenerator(
        enable_text_ngram_features=True,
        enable_text_special_features=True,
        enable_raw_text_features=False,
        enable_vision_features=False,
        vectorizer=vectorizer,
        verbosity=0,
    )


def model_hyperparameters(model_types: Sequence[str], seed: int) -> dict[str, Any]:
    """AutoGluon's default settings of each requested family, trained in the order listed
    (so a cheap model listed first is never skipped when the time limit runs out), each seeded
    with `seed` under its own library's name for it (LightGBM `seed`, CatBoost `random_seed`, ...)."""
    from autogluon.tabular.registry import ag_model_registry

    unknown = [t for t in model_types if t not in KNOWN_MODEL_TYPES]
    if unknown or not model_types:
        raise ReviewpipeError(
            f"automl.model_types {list(model_types)} must be a non-empty subset of {list(KNOWN_MODEL_TYPES)}."
        )
    out = {}
    for i, t in enumerate(model_types):
        seed_name = ag_model_registry.key_to_cls(t).seed_name
        out[t] = {"ag_args": {"priority": len(model_types) - i}, **({seed_name: seed} if seed_name else {})}
    return out


def per_model_time_limit(time_limit: float, model_types: Sequence[str]) -> float:
    """Each family's share of the budget, so one slow booster cannot starve the others."""
    return 0.9 * float(time_limit) / len(model_types)


def train_automl(
    train: pd.DataFrame,
    validation: pd.DataFrame | None,
    cfg: Mapping[str, Any],
    path: str,
    class_weights: Mapping[int, float] | None = None,
) -> Any:
    """Fit a TabularPredictor at `path` (a fresh directory) on prepared splits; returns it.

    `class_weights` ({sentiment: weight}) weight the training rows (validation scores stay unweighted)."""
    from autogluon.tabular import TabularPredictor

    from reviewpipe.models.automl_progress import AutoMLProgress

    predictor = TabularPredictor(
        label=LABEL,
        problem_type="multiclass",
        eval_metric=cfg["eval_metric"],
        path=path,
        verbosity=int(cfg["verbosity"]),
        sample_weight=None if class_weights is None else WEIGHT,
    )
    num_cpus = cfg["num_cpus"]
    model_types = list(cfg["model_types"])
    time_limit = float(cfg["time_limit"])
    ag_args_fit = {"max_time_limit": per_model_time_limit(time_limit, model_types)}
    predictor.fit(
        training_frame(train, class_weights),
        tuning_data=None if validation is None else training_frame(validation, class_weights),
        time_limit=time_limit,
        presets=cfg["presets"],
        hyperparameters=model_hyperparameters(model_types, int(cfg["seed"])),
        ag_args_fit=ag_args_fit,
        feature_generator=feature_generator(cfg),
        num_cpus=num_cpus,
        num_gpus=0,
        callbacks=[AutoMLProgress(len(model_types) + 1)],  # + the weighted ensemble
    )
    return predictor


def leaderboard(predictor: Any) -> pd.DataFrame:
    """Every trained candidate, best validation score first; ties by model name. (AutoGluon breaks ties
    by prediction time, which varies from run to run.)"""
    board = predictor.leaderboard(silent=True)
    return board.sort_values(["score_val", "model"], ascending=[False, True], kind="stable").reset_index(
        drop=True
    )


def choose_best(predictor: Any, board: pd.DataFrame) -> str:
    """Make the leaderboard's first model the predictor's best: AutoGluon's own choice among models with
    equal validation scores depends on their timings, so two seeded runs could serve different models."""
    best = str(board["model"].iloc[0])  # `board`: leaderboard(predictor), already sorted
    predictor.set_model_best(best, save_trainer=True)
    return best


def keep_best_only(predictor: Any) -> None:
    """Drop every model the best one does not need (the leaderboard CSV keeps their record)."""
    predictor.delete_models(models_to_keep="best", dry_run=False)
    predictor.save_space()


def leaderboard_plot(board: pd.DataFrame, metric: str = "accuracy") -> bytes:
    """PNG: one bar per candidate, its validation score."""
    import matplotlib.pyplot as plt

    from reviewpipe.figures import figure_png

    ordered = board.sort_values("score_val", kind="stable")
    fig, ax = plt.subplots(figsize=(7, 0.4 * len(ordered) + 1.2))
    ax.barh(ordered["model"], ordered["score_val"], color="#4C72B0")
    for y, value in enumerate(ordered["score_val"]):
        ax.text(value, y, f" {value:.3f}", va="center", fontsize=8)
    low = float(ordered["score_val"].min())
    ax.set_xlim(max(0.0, low - 0.1), min(1.0, float(ordered["score_val"].max()) + 0.08))
    ax.set_xlabel(f"validation {metric}")
    ax.set_title("AutoML candidates (AutoGluon leaderboard)")
    return figure_png(fig, dpi=110)


def load_automl(path: str) -> Any:
    from autogluon.tabular import TabularPredictor

    logging.getLogger("autogluon").setLevel(logging.WARNING)
    return TabularPredictor.load(
        path, verbosity=0, require_py_version_match=False, require_version_match=False
    )


def predict_proba(
    predictor: Any, texts: Sequence[str], categories: Sequence[str] | None = None
) -> np.ndarray:
    """(n, 3) probabilities in SENTIMENTS order (zero for a class AutoGluon never saw)."""
    if len(texts) == 0:
        return np.zeros((0, len(SENTIMENTS)))
    raw = predictor.predict_proba(to_features(texts, categories), as_pandas=True)
    columns = {int(c): c for c in raw.columns}
    return np.column_stack(
        [
            raw[columns[s]].to_numpy(dtype=np.float64) if s in columns else np.zeros(len(raw))
            for s in SENTIMENTS
        ]
    )
