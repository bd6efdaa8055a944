"""Dataset statistics in the spirit of SageMaker Model Monitor's statistics.json.

A batch (reviews + the model's class probabilities) becomes a *monitor frame* of the features we
watch: the text, its length in characters and words, the product category, the predicted class
and the prediction's confidence. `dataset_statistics` summarises that frame: completeness per
feature, numeric distributions (moments, quantile buckets, a quantile sketch for KS) and
categorical distributions. Pure: frames and arrays in, JSON-ready dicts out.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from reviewpipe import SENTIMENTS

STATISTICS_VERSION = 0.0

# Derived feature names (the columns a monitor frame adds to the source columns).
REVIEW_LENGTH = "review_length"
WORD_COUNT = "word_count"
PREDICTED_LABEL = "predicted_label"
PREDICTION_CONFIDENCE = "prediction_confidence"


@dataclass(frozen=True)
class MonitorColumns:
    """Which source columns hold the text, the category and the id (from the `monitor` params)."""

    text: str = "review_body"
    category: str = "product_category"
    review_id: str = "review_id"

    @classmethod
    def from_params(cls, section: Any) -> MonitorColumns:
        return cls(
            text=str(section.text_column),
            category=str(section.category_column),
            review_id=str(section.id_column),
        )


DEFAULT_COLUMNS = MonitorColumns()


def text_lengths(texts: pd.Series) -> pd.DataFrame:
    """Characters and whitespace-separated words per text; missing texts give missing lengths."""
    as_text = texts.astype("string")
    return pd.DataFrame(
        {
            REVIEW_LENGTH: as_text.str.len().astype("Float64"),
            WORD_COUNT: as_text.str.split().str.len().astype("Float64"),
        },
        index=texts.index,
    )


def predicted_labels(
    probabilities: np.ndarray, served: np.ndarray | None = None
) -> tuple[pd.Series, pd.Series]:
    """(label as "-1"/"0"/"1", top probability) per row; rows of NaN (not predicted) stay missing.
    `served`: the labels the model answered (a calibrated package's decision rule may differ from
    the top probability); None: the top probability's class."""
    probabilities = np.asarray(probabilities, dtype=float)
    if probabilities.ndim != 2 or probabilities.shape[1] != len(SENTIMENTS):
        raise ValueError(f"probabilities must have shape (n, {len(SENTIMENTS)}), got {probabilities.shape}")
    predicted = ~np.isnan(probabilities).any(axis=1)
    names = np.array([str(s) for s in SENTIMENTS], dtype=object)
    labels = np.full(len(probabilities), None, dtype=object)
    confidence = np.full(len(probabilities), np.nan)
    if predicted.any():
        rows = probabilities[predicted]
        if served is None:
            labels[predicted] = names[rows.argmax(axis=1)]
        else:
            labels[predicted] = [str(int(v)) for v in np.asarray(served, dtype=float)[predicted]]
        confidence[predicted] = rows.max(axis=1)
    return pd.Series(labels, dtype="string"), pd.Series(confidence, dtype="Float64")


def monitor_frame(
    frame: pd.DataFrame,
    probabilities: np.ndarray | None,
    columns: MonitorColumns = DEFAULT_COLUMNS,
    served: np.ndarray | None = None,
) -> pd.DataFrame:
    """The features we monitor, one row per review. Source columns absent from `frame` are left
    out (the missing-column check reports them); `probabilities` is aligned with `frame` (rows of
    NaN for reviews that were not predicted), or None when no model is monitored; `served` holds
    the labels the model answered, when they are not simply the top probability's."""
    out = pd.DataFrame(index=pd.RangeIndex(len(frame)))
    for name in (columns.review_id, columns.text, columns.category):
        if name in frame.columns:
            out[name] = frame[name].to_numpy()
    if columns.text in frame.columns:
        out = out.join(text_lengths(out[columns.text]))
    if probabilities is not None:
        if len(probabilities) != len(frame):
            raise ValueError(f"{len(probabilities)} probability rows for {len(frame)} reviews")
        labels, confidence = predicted_labels(probabilities, served)
        out[PREDICTED_LABEL] = labels.to_numpy()
        out[PREDICTION_CONFIDENCE] = confidence.to_numpy()
    return out


def _number(value: Any) -> float | None:
    """JSON-safe float: NaN/inf become null."""
    value = float(value)
    return value if math.isfinite(value) else None


def _common(values: pd.Series) -> dict[str, int]:
    missing = int(values.isna().sum())
    return {"num_present": len(values) - missing, "num_missing": missing}


def bucket_edges(values: np.ndarray, bins: int) -> list[float]:
    """Interior edges at the data's quantiles (deciles for bins=10), duplicates merged: the
    buckets PSI compares. Bucket i holds edges[i-1] <= x < edges[i]; the outer buckets are open."""
    if len(values) == 0:
        return []
    probs = np.arange(1, bins) / bins
    return [float(e) for e in np.unique(np.quantile(values, probs, method="inverted_cdf"))]


def bucket_counts(values: np.ndarray, edges: list[float]) -> list[int]:
    """Counts per bucket for the interior `edges` (len(edges) + 1 buckets)."""
    index = np.searchsorted(np.asarray(edges, dtype=float), values, side="right")
    return np.bincount(index, minlength=len(edges) + 1).astype(int).tolist()


def quantile_sketch(values: np.ndarray, size: int) -> list[float]:
    """`size` evenly spaced quantiles (0 to 1, values taken from the data): a fixed-size stand-in
    for the sample, like Model Monitor's KLL sketch. Its step CDF is within 1/(size-1) of the
    data's, so a KS distance against it is exact to that resolution."""
    if len(values) == 0:
        return []
    probs = np.linspace(0.0, 1.0, size)
    return [float(v) for v in np.quantile(values, probs, method="inverted_cdf")]


def numeric_statistics(name: str, values: pd.Series, *, bins: int = 10, sketch_size: int = 1001) -> dict:
    present = values.dropna().to_numpy(dtype=float)
    integral = bool(len(present)) and bool(np.all(np.mod(present, 1) == 0))
    stats: dict[str, Any] = {"common": _common(values)}
    if len(present):
        edges = bucket_edges(present, bins)
        bounds = [float(present.min()), *edges, float(present.max())]
        counts = bucket_counts(present, edges)
        quantiles = np.quantile(present, [0.05, 0.25, 0.5, 0.75, 0.95])
        stats.update(
            {
                "mean": _number(present.mean()),
                "sum": _number(present.sum()),
                "std_dev": _number(present.std(ddof=0)),
                "min": _number(present.min()),
                "max": _number(present.max()),
                "quantiles": {
                    f"p{round(q * 100)}": _number(v)
                    for q, v in zip((0.05, 0.25, 0.5, 0.75, 0.95), quantiles, strict=True)
                },
                "distribution": {
                    "kll": {
                        "buckets": [
                            {"lower_bound": lo, "upper_bound": hi, "count": c}
                            for lo, hi, c in zip(bounds[:-1], bounds[1:], counts, strict=True)
                        ]
                    },
                    "sketch": {"size": sketch_size, "quantiles": quantile_sketch(present, sketch_size)},
                },
            }
        )
    return {
        "name": name,
        "inferred_type": "Integral" if integral else "Fractional",
        "numerical_statistics": stats,
    }


def categorical_statistics(name: str, values: pd.Series) -> dict:
    present = values.dropna().astype(str)
    counts = present.value_counts().sort_index()
    return {
        "name": name,
        "inferred_type": "String",
        "string_statistics": {
            "common": _common(values),
            "distinct_count": int(len(counts)),
            "distribution": {
                "categorical": {"buckets": [{"value": str(v), "count": int(c)} for v, c in counts.items()]}
            },
        },
    }


def text_statistics(name: str, values: pd.Series) -> dict:
    """Free text: completeness and the number of empty (blank) texts, no value distribution."""
    present = values.dropna().astype(str)
    return {
        "name": name,
        "inferred_type": "String",
        "string_statistics": {
            "common": _common(values),
            "num_empty": int((present.str.strip() == "").sum()),
        },
    }


def dataset_statistics(
    monitored: pd.DataFrame,
    columns: MonitorColumns = DEFAULT_COLUMNS,
    *,
    bins: int = 10,
    sketch_size: int = 1001,
) -> dict:
    """statistics.json for a monitor frame (see `monitor_frame`)."""
    features: list[dict] = []
    for name in monitored.columns:
        values = monitored[name]
        if name == columns.text:
            features.append(text_statistics(name, values))
        elif name in (columns.category, PREDICTED_LABEL):
            features.append(categorical_statistics(name, values))
        elif name in (REVIEW_LENGTH, WORD_COUNT, PREDICTION_CONFIDENCE):
            features.append(numeric_statistics(name, values, bins=bins, sketch_size=sketch_size))
        else:  # identifiers: completeness only
            features.append(
                {"name": name, "inferred_type": "String", "string_statistics": {"common": _common(values)}}
            )
    return {"version": STATISTICS_VERSION, "dataset": {"item_count": len(monitored)}, "features": features}


def feature(statistics: dict, name: str) -> dict | None:
    """One feature's entry in a statistics.json dict, or None."""
    return next((f for f in statistics["features"] if f["name"] == name), None)


def completeness(feature_stats: dict) -> float | None:
    """Share of non-missing values (None for an empty dataset)."""
    body = feature_stats.get("numerical_statistics") or feature_stats.get("string_statistics") or {}
    common = body.get("common", {})
    total = common.get("num_present", 0) + common.get("num_missing", 0)
    return common.get("num_present", 0) / total if total else None
