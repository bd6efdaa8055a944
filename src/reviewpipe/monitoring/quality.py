"""Model quality monitoring (SageMaker's Model Quality Monitor, locally) and the A/B comparison.

Ground truth (human labels, SageMaker ground-truth records, or the ratings once reviews arrive in
the lake) is joined to captured predictions by key (the inferenceId, see monitoring/capture.py).
For each variant, overall and per time window: accuracy with a Wilson interval and macro-F1 with a
bootstrap interval. A window violates when its metric is below the baseline's (the champion on
natural-mix validation rows) minus `max_drop`: with `comparison_method: robust`, only when the
whole interval is below, so a small window does not cry wolf. The same join compares variants (the
evidence for `reviewpipe deploy shift`): differences in accuracy and macro-F1 against the
reference variant with bootstrap intervals, and Fisher's exact test on correct/incorrect counts.

Statistics come from scipy (binomtest, bootstrap, fisher_exact); the vectorised macro-F1 used
inside the bootstrap is checked against scikit-learn's f1_score in the tests.
"""

from __future__ import annotations

import json
import posixpath
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from reviewpipe import SENTIMENTS, storage
from reviewpipe.errors import ReviewpipeError

K = len(SENTIMENTS)
_CORRECT_CODES = np.array([i * K + i for i in range(K)])
METRICS = ("accuracy", "macro_f1")


@dataclass(frozen=True)
class QualitySettings:
    """The `monitor.quality` params."""

    window: str
    max_drop: float
    min_rows: int
    comparison_method: str
    confidence: float
    bootstrap_resamples: int
    seed: int

    @classmethod
    def from_params(cls, section: Any) -> QualitySettings:
        q = section.quality
        settings = cls(
            window=str(q.window),
            max_drop=float(q.max_drop),
            min_rows=int(q.min_rows),
            comparison_method=str(q.comparison_method),
            confidence=float(q.confidence),
            bootstrap_resamples=int(q.bootstrap_resamples),
            seed=int(section.seed),
        )
        try:
            pd.tseries.frequencies.to_offset(settings.window)
        except ValueError as exc:
            raise ReviewpipeError(
                f"monitor.quality.window={settings.window!r} is not a pandas offset (e.g. 1h, 1D, 7D)"
            ) from exc
        return settings


# ---------------------------------------------------------------- metrics on label codes


def codes(y_true: Sequence[int], y_pred: Sequence[int]) -> np.ndarray:
    """(true, predicted) pairs as one integer each, true * 3 + predicted over class ids 0..2: the
    bootstrap resamples pairs as single values."""
    index = {s: i for i, s in enumerate(SENTIMENTS)}
    t = np.asarray([index[int(v)] for v in y_true], dtype=np.int64)
    p = np.asarray([index[int(v)] for v in y_pred], dtype=np.int64)
    return t * K + p


def accuracy_of(c: np.ndarray, axis: int = -1) -> np.ndarray:
    return np.isin(c, _CORRECT_CODES).mean(axis=axis)


def macro_f1_of(c: np.ndarray, axis: int = -1) -> np.ndarray:
    """Macro-F1 over the classes present among true or predicted labels (scikit-learn's default
    labels), vectorised over the other axes for the bootstrap."""
    c = np.moveaxis(np.asarray(c), axis, -1)
    t, p = c // K, c % K
    scores, present = [], []
    for k in range(K):
        tp = ((t == k) & (p == k)).sum(axis=-1)
        denominator = 2 * tp + ((t != k) & (p == k)).sum(axis=-1) + ((t == k) & (p != k)).sum(axis=-1)
        present.append(denominator > 0)
        scores.append(np.where(denominator > 0, 2 * tp / np.maximum(denominator, 1), 0.0))
    return np.sum(scores, axis=0) / np.maximum(np.sum(present, axis=0), 1)


def _interval(low: float, high: float) -> list[float]:
    return [round(float(low), 6), round(float(high), 6)]


def quality_metrics(c: np.ndarray, settings: QualitySettings) -> dict[str, Any]:
    """n, accuracy (Wilson interval), macro-F1 (bootstrap percentile interval), confusion matrix."""
    n = len(c)
    out: dict[str, Any] = {"n": n}
    if n == 0:
        return {**out, "accuracy": None, "macro_f1": None}
    correct = int(np.isin(c, _CORRECT_CODES).sum())
    wilson = stats.binomtest(correct, n).proportion_ci(settings.confidence, method="wilson")
    out["accuracy"] = {"value": round(correct / n, 6), "interval": _interval(wilson.low, wilson.high)}
    f1 = float(macro_f1_of(c))
    if n > 1 and len(np.unique(c)) > 1:
        boot = stats.bootstrap(
            (c,),
            macro_f1_of,
            confidence_level=settings.confidence,
            n_resamples=settings.bootstrap_resamples,
            method="percentile",
            vectorized=True,
            random_state=settings.seed,
        )
        interval = _interval(boot.confidence_interval.low, boot.confidence_interval.high)
    else:
        interval = [round(f1, 6), round(f1, 6)]
    out["macro_f1"] = {"value": round(f1, 6), "interval": interval}
    matrix = np.bincount(c, minlength=K * K).reshape(K, K)
    out["confusion_matrix"] = {
        str(t): {str(p): int(matrix[i, j]) for j, p in enumerate(SENTIMENTS)}
        for i, t in enumerate(SENTIMENTS)
    }
    return out


# ---------------------------------------------------------------- thresholds and checks


def thresholds(baseline: dict[str, Any] | None, settings: QualitySettings) -> dict[str, float] | None:
    """The floor per metric: the baseline's value minus max_drop (None without a baseline)."""
    if not baseline:
        return None
    return {m: round(baseline[m]["value"] - settings.max_drop, 6) for m in METRICS}


def judge(metrics: dict[str, Any], floors: dict[str, float] | None, settings: QualitySettings) -> list[dict]:
    """One check per metric: value, interval, threshold, and whether it is a violation."""
    checks = []
    for name in METRICS:
        figure = metrics[name]
        if figure is None or floors is None:
            continue
        judged = metrics["n"] >= settings.min_rows
        bound = figure["interval"][1] if settings.comparison_method == "robust" else figure["value"]
        checks.append(
            {
                "metric": name,
                "value": figure["value"],
                "interval": figure["interval"],
                "threshold": floors[name],
                "judged": judged,
                "violated": bool(judged and bound < floors[name]),
            }
        )
    return checks


# ---------------------------------------------------------------- ground truth


def ground_truth_records(uri: str, options: storage.StorageOptions | None = None) -> pd.DataFrame:
    """SageMaker ground-truth JSON Lines under `uri` (a file or a folder): {"groundTruthData":
    {"data": "1", "encoding": "CSV" | "JSON"}, "eventMetadata": {"eventId": ...}, "eventVersion"}.
    Returns key, label. A record that does not parse is a user error naming the file and line."""
    fs, root = storage.get_fs(uri, options)
    if not fs.exists(root):
        raise ReviewpipeError(f"no ground truth at {uri}")
    files = [root] if fs.isfile(root) else sorted(f for f in fs.find(root) if f.endswith(".jsonl"))
    rows = []
    for file in files:
        with fs.open(file, "r", encoding="utf-8") as f:
            for number, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                    data = record["groundTruthData"]["data"]
                    label = int(json.loads(data) if isinstance(data, str) else data)
                    key = str(record["eventMetadata"]["eventId"])
                except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
                    raise ReviewpipeError(
                        f"{posixpath.basename(file)}:{number}: not a ground-truth record "
                        '({"groundTruthData": {"data": "-1|0|1", ...}, "eventMetadata": {"eventId": ...}})'
                    ) from exc
                if label not in SENTIMENTS:
                    raise ReviewpipeError(f"{file}:{number}: label {label} is not one of {list(SENTIMENTS)}")
                rows.append({"key": key, "label": label})
    return pd.DataFrame(rows, columns=["key", "label"]).drop_duplicates("key", keep="last")


def combine_ground_truth(sources: Sequence[tuple[str, pd.DataFrame]]) -> pd.DataFrame:
    """key, label, source: for each key the label of the first source (in order) that has one."""
    frames = [df.assign(source=name)[["key", "label", "source"]] for name, df in sources if len(df)]
    if not frames:
        return pd.DataFrame({"key": pd.Series(dtype=str), "label": pd.Series(dtype="int64"), "source": []})
    combined = pd.concat(frames, ignore_index=True)
    combined["key"] = combined["key"].astype(str)
    return combined.drop_duplicates("key", keep="first").reset_index(drop=True)


# ---------------------------------------------------------------- the report


def _windows(joined: pd.DataFrame, settings: QualitySettings, floors: dict[str, float] | None) -> list[dict]:
    out = []
    grouper = pd.Grouper(key="inference_time", freq=settings.window, label="left", closed="left")
    for start, part in joined.groupby(grouper):
        if part.empty:
            continue
        metrics = quality_metrics(part["code"].to_numpy(), settings)
        out.append(
            {
                "start": start.isoformat(),
                "end": (start + pd.tseries.frequencies.to_offset(settings.window)).isoformat(),
                **metrics,
                "checks": judge(metrics, floors, settings),
            }
        )
    return out


def compare_variants(a: np.ndarray, b: np.ndarray, settings: QualitySettings) -> dict[str, Any]:
    """Variant b minus reference a: accuracy and macro-F1 differences with bootstrap intervals,
    Fisher's exact test on correct/incorrect counts, and the verdict the intervals support."""
    out: dict[str, Any] = {"n": len(b), "reference_n": len(a)}
    if len(a) < 2 or len(b) < 2:
        return {**out, "verdict": "not enough labelled predictions to compare"}
    for name, metric in (("accuracy", accuracy_of), ("macro_f1", macro_f1_of)):
        boot = stats.bootstrap(
            (b, a),
            lambda x, y, axis=-1, metric=metric: metric(x, axis) - metric(y, axis),
            confidence_level=settings.confidence,
            n_resamples=settings.bootstrap_resamples,
            method="percentile",
            vectorized=True,
            paired=False,
            random_state=settings.seed,
        )
        out[f"{name}_difference"] = {
            "value": round(float(metric(b) - metric(a)), 6),
            "interval": _interval(boot.confidence_interval.low, boot.confidence_interval.high),
        }
    correct_a, correct_b = int(np.isin(a, _CORRECT_CODES).sum()), int(np.isin(b, _CORRECT_CODES).sum())
    table = [[correct_b, len(b) - correct_b], [correct_a, len(a) - correct_a]]
    out["accuracy_fisher_p_value"] = round(float(stats.fisher_exact(table).pvalue), 6)
    low, high = out["accuracy_difference"]["interval"]
    level = f"{settings.confidence:.0%}"
    if low > 0:
        out["verdict"] = f"better than the reference (accuracy interval above 0 at {level})"
    elif high < 0:
        out["verdict"] = f"worse than the reference (accuracy interval below 0 at {level})"
    else:
        out["verdict"] = f"no significant accuracy difference at {level}"
    return out


def model_quality(
    captured: pd.DataFrame,
    truth: pd.DataFrame,
    baseline: dict[str, Any] | None,
    settings: QualitySettings,
    reference: str | None,
) -> dict[str, Any]:
    """Model-quality report of captured predictions joined with ground truth (see module doc).
    `reference` is the variant the A/B comparison is against (the monitored champion)."""
    joined = captured.merge(truth, on="key", how="inner")
    joined["code"] = codes(joined["label"], joined["predicted_label"]) if len(joined) else []
    floors = thresholds(baseline, settings)
    report: dict[str, Any] = {
        "ground_truth": {
            "labels": len(truth),
            "by_source": {str(k): int(v) for k, v in truth["source"].value_counts().sort_index().items()},
            "joined_predictions": len(joined),
            "unlabelled_predictions": int(len(captured) - len(joined)),
        },
        "baseline": baseline,
        "thresholds": floors,
        "settings": {
            "window": settings.window,
            "max_drop": settings.max_drop,
            "min_rows": settings.min_rows,
            "comparison_method": settings.comparison_method,
            "confidence": settings.confidence,
        },
        "variants": {},
    }
    for variant, part in joined.groupby("variant", sort=True):
        overall = quality_metrics(part["code"].to_numpy(), settings)
        report["variants"][str(variant)] = {
            "overall": {**overall, "checks": judge(overall, floors, settings)},
            "windows": _windows(part, settings, floors),
        }
    report["violations"] = [
        {"variant": v, "window": w["start"], **c}
        for v, body in report["variants"].items()
        for w in body["windows"]
        for c in w["checks"]
        if c["violated"]
    ]
    variants = sorted(report["variants"])
    if reference not in variants and variants:
        reference = max(variants, key=lambda v: report["variants"][v]["overall"]["n"])
    report["ab"] = {
        "reference": reference,
        "comparisons": {
            v: compare_variants(
                joined.loc[joined["variant"] == reference, "code"].to_numpy(),
                joined.loc[joined["variant"] == v, "code"].to_numpy(),
                settings,
            )
            for v in variants
            if v != reference
        },
    }
    return report
