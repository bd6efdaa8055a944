"""Group fairness with fairlearn's MetricFrame: metrics per group, and the largest between-group gap.

Per sensitive feature (e.g. product_category, age_band): accuracy, macro-F1 and the selection
rate of each class (share of the group predicted as that class). A gap is the largest minus the
smallest value across groups (fairlearn's `difference(method="between_groups")`), over groups with
at least `min_group_rows` rows: smaller groups are reported but not gated on, since a handful of
reviews makes any rate swing.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from functools import partial
from typing import Any

import numpy as np
import pandas as pd
from fairlearn.metrics import MetricFrame, selection_rate
from numpy.typing import ArrayLike
from sklearn.metrics import accuracy_score, f1_score

from reviewpipe import SENTIMENTS
from reviewpipe.errors import ReviewpipeError
from reviewpipe.evaluation.metrics import CLASS_IDS, CLASS_NAMES

MISSING_GROUP = "(missing)"


def fairness_metrics() -> dict[str, Callable[..., float]]:
    """The per-group metrics: name -> f(y_true, y_pred) over class ids."""
    metrics: dict[str, Callable[..., float]] = {
        "accuracy": accuracy_score,
        "macro_f1": partial(f1_score, labels=CLASS_IDS, average="macro", zero_division=0),
    }
    for i, s in enumerate(SENTIMENTS):
        metrics[f"selection_rate_{CLASS_NAMES[s]}"] = partial(selection_rate, pos_label=i)
    return metrics


def group_report(
    truth: ArrayLike, predicted: ArrayLike, groups: ArrayLike | pd.Series, min_group_rows: int = 1
) -> dict[str, Any]:
    """One sensitive feature: metrics by group, gaps per metric, and the largest gap.

    `truth`/`predicted` are class ids; `groups` the group of each row (missing -> "(missing)").
    """
    y, yhat = np.asarray(truth, dtype=int), np.asarray(predicted, dtype=int)
    group = pd.Series(groups).astype("object").where(pd.Series(groups).notna(), MISSING_GROUP).astype(str)
    if not (len(y) == len(yhat) == len(group)):
        raise ReviewpipeError(
            f"truth, predictions and groups differ in length: {len(y)}, {len(yhat)}, {len(group)}."
        )
    frame = MetricFrame(
        metrics=fairness_metrics(), y_true=y, y_pred=yhat, sensitive_features=group.to_numpy()
    )
    by_group = frame.by_group
    rows = group.value_counts()
    gated = sorted(g for g in by_group.index if rows[g] >= min_group_rows)
    report: dict[str, Any] = {
        "groups": {
            str(g): {"rows": int(rows[g]), **{m: float(v) for m, v in by_group.loc[g].items()}}
            for g in by_group.index
        },
        "overall": {m: float(v) for m, v in frame.overall.items()},
        "groups_below_min_rows": sorted(str(g) for g in by_group.index if rows[g] < min_group_rows),
    }
    if len(gated) < 2:
        report["gaps"], report["largest_gap"] = {}, None
        return report
    gated_rows = group.isin(gated).to_numpy()
    gated_frame = MetricFrame(
        metrics=fairness_metrics(),
        y_true=y[gated_rows],
        y_pred=yhat[gated_rows],
        sensitive_features=group.to_numpy()[gated_rows],
    )
    gaps = {m: float(v) for m, v in gated_frame.difference(method="between_groups").items()}
    worst = max(gaps, key=lambda m: gaps[m])
    low, high = gated_frame.by_group[worst].idxmin(), gated_frame.by_group[worst].idxmax()
    report["gaps"] = gaps
    report["largest_gap"] = {
        "metric": worst,
        "value": gaps[worst],
        "lowest_group": str(low),
        "highest_group": str(high),
    }
    return report


def fairness_report(
    frame: pd.DataFrame,
    truth_column: str,
    predicted_column: str,
    features: Sequence[str],
    min_group_rows: int = 1,
) -> dict[str, Any]:
    """All sensitive features for one model, plus the largest gap across them."""
    missing = [c for c in (truth_column, predicted_column, *features) if c not in frame.columns]
    if missing:
        raise ReviewpipeError(
            f"fairness needs columns {missing}, absent from the test split; "
            "fix evaluate.fairness.features or rerun `reviewpipe stage prepare`."
        )
    report: dict[str, Any] = {
        f: group_report(frame[truth_column], frame[predicted_column], frame[f], min_group_rows)
        for f in features
    }
    candidates = [(f, r["largest_gap"]) for f, r in report.items() if r["largest_gap"] is not None]
    report["largest_gap"] = None
    if candidates:
        feature, gap = max(candidates, key=lambda item: item[1]["value"])
        report["largest_gap"] = {"feature": feature, **gap}
    return report


def largest_gaps(reports: Mapping[str, Mapping[str, Any]]) -> dict[str, float | None]:
    """{model: largest gap value} for a summary line."""
    return {m: (r["largest_gap"] or {}).get("value") for m, r in reports.items()}
