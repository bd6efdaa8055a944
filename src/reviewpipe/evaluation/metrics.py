"""Classification metrics on an evaluation set, and their DVCLive record (metrics, confusion matrix, ROC).

Everything takes observed class ids (0/1/2) and predicted probabilities (n, 3) in class-id order
(`reviewpipe.SENTIMENTS`), the shape every predictor returns.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import ArrayLike
from sklearn.metrics import (
    accuracy_score,
    confusion_matrix,
    f1_score,
    precision_recall_fscore_support,
    roc_auc_score,
)

from reviewpipe import SENTIMENTS
from reviewpipe.errors import ReviewpipeError

CLASS_NAMES: dict[int, str] = {-1: "negative", 0: "neutral", 1: "positive"}
CLASS_IDS: list[int] = list(range(len(SENTIMENTS)))


def check_probabilities(truth: ArrayLike, proba: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(truth, dtype=int)
    p = np.asarray(proba, dtype=np.float64)
    if p.ndim != 2 or p.shape != (len(y), len(SENTIMENTS)):
        raise ReviewpipeError(
            f"expected probabilities of shape ({len(y)}, {len(SENTIMENTS)}), got {p.shape}."
        )
    if len(y) == 0:
        raise ReviewpipeError("no rows to evaluate; the test split is empty.")
    return y, p


def classification_metrics(truth: ArrayLike, proba: ArrayLike) -> dict[str, Any]:
    """accuracy, macro-F1, one-vs-rest ROC AUC (macro), per-class precision/recall/F1/support,
    and the confusion matrix (rows observed, columns predicted, class order -1, 0, 1)."""
    y, p = check_probabilities(truth, proba)
    predicted = p.argmax(axis=1)
    precision, recall, f1, support = precision_recall_fscore_support(
        y, predicted, labels=CLASS_IDS, zero_division=0
    )
    per_class = {
        CLASS_NAMES[s]: {
            "precision": float(precision[i]),
            "recall": float(recall[i]),
            "f1": float(f1[i]),
            "support": int(support[i]),
        }
        for i, s in enumerate(SENTIMENTS)
    }
    present = [i for i in CLASS_IDS if 0 < (y == i).sum() < len(y)]  # AUC needs both outcomes
    auc = {CLASS_NAMES[SENTIMENTS[i]]: float(roc_auc_score(y == i, p[:, i])) for i in present}
    return {
        "accuracy": float(accuracy_score(y, predicted)),
        "macro_f1": float(f1_score(y, predicted, labels=CLASS_IDS, average="macro", zero_division=0)),
        "roc_auc_ovr_macro": float(np.mean(list(auc.values()))) if auc else None,
        "roc_auc_ovr": auc,
        "per_class": per_class,
        "confusion_matrix": confusion_matrix(y, predicted, labels=CLASS_IDS).tolist(),
        "rows": int(len(y)),
    }


def log_to_live(
    live: Any,
    model: str,
    truth: ArrayLike,
    proba: ArrayLike,
    metrics: dict[str, Any] | None = None,
    split: str = "test",
) -> dict[str, Any]:
    """Record one model's metrics and plots on one evaluation set (`split`) in a `dvclive.Live`.

    Metrics: `{model}/{split}/accuracy`, `{model}/{split}/macro_f1`,
    `{model}/{split}/{class}/{precision,recall,f1}`.
    Plots: `plots/sklearn/confusion_matrix/{model}_{split}.json` (labels -1/0/1) and
    `plots/sklearn/roc/{model}_{split}_{class}.json` (one-vs-rest, one per class).
    """
    y, p = check_probabilities(truth, proba)
    metrics = metrics or classification_metrics(y, p)
    prefix = f"{model}/{split}"
    live.log_metric(f"{prefix}/accuracy", metrics["accuracy"], plot=False)
    live.log_metric(f"{prefix}/macro_f1", metrics["macro_f1"], plot=False)
    if metrics.get("roc_auc_ovr_macro") is not None:
        live.log_metric(f"{prefix}/roc_auc_ovr_macro", metrics["roc_auc_ovr_macro"], plot=False)
    for name, values in metrics["per_class"].items():
        for key in ("precision", "recall", "f1"):
            live.log_metric(f"{prefix}/{name}/{key}", values[key], plot=False)
    sentiments = np.asarray(SENTIMENTS)
    live.log_sklearn_plot(
        "confusion_matrix",
        sentiments[y],
        sentiments[p.argmax(axis=1)],
        name=f"confusion_matrix/{model}_{split}",
        title=f"{model}: confusion matrix ({split})",
        x_label="observed sentiment",
        y_label="predicted sentiment",
    )
    for i, s in enumerate(SENTIMENTS):
        if 0 < (y == i).sum() < len(y):
            live.log_sklearn_plot(
                "roc",
                (y == i).astype(int),
                p[:, i],
                name=f"roc/{model}_{split}_{CLASS_NAMES[s]}",
                title=f"{model}: ROC, {CLASS_NAMES[s]} vs rest ({split})",
            )
    return metrics


def _accuracy_and_macro_f1(
    truth: np.ndarray, predicted: np.ndarray, axis: int = -1
) -> tuple[np.ndarray, np.ndarray]:
    """Vectorised over resamples (scipy's bootstrap passes arrays of shape (..., n))."""
    accuracy = (truth == predicted).mean(axis=axis)
    f1 = []
    for c in CLASS_IDS:
        tp = ((truth == c) & (predicted == c)).sum(axis=axis)
        denom = (predicted == c).sum(axis=axis) + (truth == c).sum(axis=axis)
        f1.append(np.divide(2 * tp, denom, out=np.zeros(np.shape(tp), dtype=float), where=denom > 0))
    return accuracy, np.mean(f1, axis=0)


def bootstrap_intervals(
    truth: ArrayLike,
    predicted: ArrayLike,
    *,
    n_resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> dict[str, dict[str, float]]:
    """Seeded bootstrap intervals (BCa, rows resampled with replacement) for accuracy and macro-F1
    of predicted class ids: {"accuracy": {"value", "low", "high"}, "macro_f1": {...}}."""
    from scipy.stats import bootstrap

    y, p = np.asarray(truth, dtype=int), np.asarray(predicted, dtype=int)
    if len(y) != len(p) or len(y) == 0:
        raise ReviewpipeError(
            f"bootstrap needs equal, non-empty truth and predictions; got {len(y)} and {len(p)}."
        )
    values = _accuracy_and_macro_f1(y, p)
    result = bootstrap(
        (y, p),
        lambda a, b, axis=-1: np.stack(_accuracy_and_macro_f1(a, b, axis)),
        paired=True,
        vectorized=True,
        n_resamples=n_resamples,
        confidence_level=confidence,
        method="BCa",
        rng=np.random.default_rng(seed),
    )
    low, high = np.atleast_1d(result.confidence_interval.low), np.atleast_1d(result.confidence_interval.high)
    return {
        name: {"value": float(values[i]), "low": float(low[i]), "high": float(high[i])}
        for i, name in enumerate(("accuracy", "macro_f1"))
    }
