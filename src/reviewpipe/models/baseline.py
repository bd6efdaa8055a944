"""TF-IDF baseline: word and character n-grams feeding a multinomial logistic regression.

One scikit-learn Pipeline (features -> classifier) trained on label ids 0/1/2, saved as a
single joblib file that `reviewpipe.models.predictors.load_predictor("baseline", path)` loads.
"""

from __future__ import annotations

import os
import uuid

import joblib
import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, f1_score
from sklearn.pipeline import FeatureUnion, Pipeline

from reviewpipe import SENTIMENTS
from reviewpipe.errors import ReviewpipeError
from reviewpipe.schema import BaselineParams, NgramParams

CLASS_IDS: list[int] = list(range(len(SENTIMENTS)))


def _vectorizer(cfg: NgramParams, analyzer: str) -> TfidfVectorizer:
    return TfidfVectorizer(
        analyzer=analyzer,
        ngram_range=tuple(cfg.ngram_range),
        min_df=cfg.min_df,
        max_features=cfg.max_features,
        sublinear_tf=cfg.sublinear_tf,
        lowercase=True,
        dtype=np.float32,
    )


def build_pipeline(cfg: BaselineParams, class_weight: dict[int, float] | str | None = None) -> Pipeline:
    """An untrained pipeline from the `baseline` params section (word/char/classifier blocks).

    `class_weight` ({label_id: weight}, "balanced" or None) is the resolved
    `baseline.classifier.class_weight` (the stage turns `prepared` into prepare's weights)."""
    parts: list[tuple[str, TfidfVectorizer]] = [("word", _vectorizer(cfg.word, "word"))]
    if cfg.char.enabled:
        parts.append(("char", _vectorizer(cfg.char, "char_wb")))
    classifier = LogisticRegression(
        C=cfg.classifier.C, class_weight=class_weight, max_iter=cfg.classifier.max_iter
    )
    return Pipeline([("features", FeatureUnion(parts)), ("classifier", classifier)])


def texts_of(frame: pd.DataFrame, text_column: str = "review_body") -> pd.Series:
    """The text column as strings (missing text -> empty string, which the vectorizers accept)."""
    if text_column not in frame.columns:
        raise ReviewpipeError(
            f"column {text_column!r} missing from the training data (columns: {list(frame.columns)}); "
            "check baseline.text_column or rerun `reviewpipe stage prepare`."
        )
    return frame[text_column].fillna("").astype(str)


def train_baseline(
    train: pd.DataFrame, cfg: BaselineParams, class_weight: dict[int, float] | str | None = None
) -> Pipeline:
    """Fit the pipeline on `train` (`baseline.text_column` + `label_id` 0/1/2)."""
    labels = train["label_id"].astype(int)
    if labels.nunique() < 2:
        raise ReviewpipeError("the training split holds fewer than two classes; cannot train the baseline.")
    return build_pipeline(cfg, class_weight).fit(texts_of(train, cfg.text_column), labels)


def predict_proba(model: Pipeline, texts: list[str] | pd.Series) -> np.ndarray:
    """(n, 3) probabilities in class-id order, with zero columns for classes unseen in training."""
    raw = model.predict_proba(pd.Series(list(texts), dtype="object").fillna("").astype(str))
    proba = np.zeros((raw.shape[0], len(CLASS_IDS)), dtype=np.float64)
    for column, class_id in enumerate(model.classes_):
        proba[:, int(class_id)] = raw[:, column]
    return proba


def score(model: Pipeline, frame: pd.DataFrame, text_column: str = "review_body") -> dict[str, float]:
    """Accuracy and macro-F1 of `model` on a labelled frame."""
    predicted = predict_proba(model, texts_of(frame, text_column)).argmax(axis=1)
    truth = frame["label_id"].astype(int).to_numpy()
    return {
        "accuracy": float(accuracy_score(truth, predicted)),
        "macro_f1": float(f1_score(truth, predicted, average="macro", labels=CLASS_IDS, zero_division=0)),
        "rows": int(len(frame)),
    }


def save_model(model: Pipeline, path: str) -> None:
    """One joblib file, written to a temporary sibling and renamed (never half-written)."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.tmp-{uuid.uuid4().hex[:8]}"
    # scikit-learn's vectorizers cache id(stop_words), a memory address, in `_stop_words_id`: dropped so
    # the same fit pickles to the same bytes (a rerun leaves dvc.lock as it was); recomputed on use.
    for estimator in [model, *model.get_params(deep=True).values()]:
        if isinstance(estimator, BaseEstimator):
            vars(estimator).pop("_stop_words_id", None)
    joblib.dump(model, tmp, compress=3)
    os.replace(tmp, path)


def load_model(path: str) -> Pipeline:
    if not os.path.exists(path):
        raise ReviewpipeError(
            f"baseline model not found at {path}; train it with `reviewpipe stage baseline`."
        )
    return joblib.load(path)
