"""SageMaker Clarify pre-training bias metrics, one small pure function each.

Definitions follow Clarify's documentation and its open-source implementation `smclarify` 0.5
(`smclarify.bias.metrics.pretraining` / `common`); the tests use smclarify as an oracle.

Vocabulary, as in Clarify:
- `label`: boolean mask, True where the observed label is positive (the label already binarised
  with `label_values`, see `positive_label_mask`).
- `facet`: boolean mask, True for facet *d* (the facet value under study, Clarify's
  "sensitive" facet); facet *a* is everything else (one value against the rest).
- `group`: the group variable for conditional demographic disparity (default: the age band).

Where smclarify silently truncates a label distribution (it keeps only label values present in
*both* facets, which can make KL negative), these functions raise `BiasMetricError` instead; the
report turns that into an `"error"` field on the metric.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike, NDArray

from reviewpipe.bias.clarify_report import bias_metrics_section, build_analysis, require_columns


class BiasMetricError(ValueError):
    """A metric cannot be computed on this data (empty facet, degenerate labels, ...)."""


# ---------------------------------------------------------------- inputs


def as_mask(values: ArrayLike, name: str) -> NDArray[np.bool_]:
    """A boolean numpy mask from a bool Series/array; anything else is a programming error."""
    series = pd.Series(values) if not isinstance(values, pd.Series) else values
    if series.dtype == "boolean":
        if series.isna().any():
            raise BiasMetricError(f"{name} has missing values; a mask must be True/False on every row")
        series = series.astype(bool)
    if series.dtype != bool:
        raise TypeError(f"{name} must be a boolean mask, got dtype {series.dtype}")
    return series.to_numpy(dtype=bool)


def positive_label_mask(labels: pd.Series, label_values: Sequence[Any]) -> pd.Series:
    """Binarise a categorical label as Clarify does: True where the label is one of `label_values`.

    Like smclarify, when no row matches it retries after converting `label_values` to the type
    of the labels (so `["1"]` matches integer labels and `[1]` matches string labels)."""
    if not label_values:
        raise BiasMetricError("label_values is empty: give the label value(s) that count as positive")
    mask = labels.isin(list(label_values))
    if not mask.any():
        mask = labels.astype(str).isin([str(v) for v in label_values])
    return mask.fillna(False).astype(bool)


def same_length(**masks: NDArray[Any]) -> None:
    lengths = {name: len(m) for name, m in masks.items()}
    if len(set(lengths.values())) > 1:
        raise ValueError(f"inputs differ in length: {lengths}")


def facet_sizes(facet: NDArray[np.bool_]) -> tuple[int, int]:
    """(n_a, n_d); raises when either side is empty (no comparison possible)."""
    n_d = int(facet.sum())
    n_a = int(len(facet) - n_d)
    if n_d == 0:
        raise BiasMetricError("facet d is empty: no row has this facet value")
    if n_a == 0:
        raise BiasMetricError("facet a (the rest) is empty: every row has this facet value")
    return n_a, n_d


def divide(numerator: float, denominator: float) -> float:
    """smclarify's division: 0/0 = 0, x/0 = +-inf."""
    if denominator == 0:
        if numerator == 0:
            return 0.0
        return float("inf") if numerator > 0 else float("-inf")
    return numerator / denominator


# ---------------------------------------------------------------- metrics


def class_imbalance(facet: ArrayLike) -> float:
    """CI = (n_a - n_d) / (n_a + n_d), in [-1, 1]; positive when facet d is under-represented."""
    n_a, n_d = facet_sizes(as_mask(facet, "facet"))
    return (n_a - n_d) / (n_a + n_d)


def difference_in_positive_proportions(label: ArrayLike, facet: ArrayLike) -> float:
    """DPL = q_a - q_d with q = n^(1) / n, the share of positive labels in each facet."""
    y, d = as_mask(label, "label"), as_mask(facet, "facet")
    same_length(label=y, facet=d)
    n_a, n_d = facet_sizes(d)
    return float((y & ~d).sum() / n_a - (y & d).sum() / n_d)


def label_distributions(
    label: ArrayLike, facet: ArrayLike
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """(P_a, P_d): the distribution of the binarised label over [False, True] in facet a and d.

    Both must give every label value a non-zero probability: smclarify would otherwise drop the
    missing value from both and compare what is left, which is not a distance between the two
    distributions (KL can come out negative); we refuse instead and say why."""
    y, d = as_mask(label, "label"), as_mask(facet, "facet")
    same_length(label=y, facet=d)
    n_a, n_d = facet_sizes(d)
    pos_a, pos_d = int((y & ~d).sum()), int((y & d).sum())
    if n_d == 1:
        raise BiasMetricError("facet d has a single row: its label distribution is one point mass")
    problems = []
    for side, pos, n in (("d", pos_d, n_d), ("a (the rest)", pos_a, n_a)):
        if pos == 0:
            problems.append(f"facet {side} has no rows with a positive label")
        elif pos == n:
            problems.append(f"facet {side} has no rows with a negative label")
    if problems:
        raise BiasMetricError(
            "; ".join(problems) + ": a label value with zero probability makes this distance "
            "undefined (Clarify's smclarify would silently drop that label value)"
        )
    p_a = np.array([(n_a - pos_a) / n_a, pos_a / n_a])
    p_d = np.array([(n_d - pos_d) / n_d, pos_d / n_d])
    return p_a, p_d


def kl_divergence(label: ArrayLike, facet: ArrayLike) -> float:
    """KL(P_a || P_d) = sum_y P_a(y) log(P_a(y) / P_d(y)), natural log, >= 0."""
    p_a, p_d = label_distributions(label, facet)
    return float(np.sum(p_a * np.log(p_a / p_d)))


def js_divergence(label: ArrayLike, facet: ArrayLike) -> float:
    """JS = 1/2 [KL(P_a || P) + KL(P_d || P)] with P = (P_a + P_d) / 2."""
    p_a, p_d = label_distributions(label, facet)
    p = 0.5 * (p_a + p_d)
    return float(0.5 * (np.sum(p_a * np.log(p_a / p)) + np.sum(p_d * np.log(p_d / p))))


def lp_norm(label: ArrayLike, facet: ArrayLike, p: float = 2) -> float:
    """LP = (sum_y |P_a(y) - P_d(y)|^p)^(1/p); Clarify's default p = 2."""
    p_a, p_d = label_distributions(label, facet)
    return float(np.linalg.norm(p_a - p_d, p))


def total_variation_distance(label: ArrayLike, facet: ArrayLike) -> float:
    """TVD = 1/2 L1(P_a, P_d)."""
    p_a, p_d = label_distributions(label, facet)
    return float(0.5 * np.linalg.norm(p_a - p_d, 1))


def ks_distance(label: ArrayLike, facet: ArrayLike) -> float:
    """KS = max_y |P_a(y) - P_d(y)| (smclarify: the L-infinity norm of the difference)."""
    p_a, p_d = label_distributions(label, facet)
    return float(np.linalg.norm(p_a - p_d, np.inf))


def conditional_demographic_disparity(label: ArrayLike, facet: ArrayLike, group: ArrayLike) -> float:
    """CDD = (1/n) sum_i n_i DD_i over the groups i of `group`, where
    DD_i = (share of facet d among the negative labels of group i)
         - (share of facet d among the positive labels of group i);
    a share whose group has no such labels counts as 0 (as smclarify does).
    Used for CDDL (observed labels) and CDDPL (predicted labels)."""
    y, d = as_mask(label, "label"), as_mask(facet, "facet")
    groups = pd.Series(group).reset_index(drop=True)
    same_length(label=y, facet=d, group=groups.to_numpy())
    if len(groups) == 0:
        raise BiasMetricError("group variable is empty")
    if groups.isna().any():
        raise BiasMetricError(
            f"group variable has {int(groups.isna().sum())} missing values; "
            "give every row a group (or choose another group variable)"
        )
    if not y.any():
        raise BiasMetricError("no positive labels in the data: demographic disparity is undefined")
    if y.all():
        raise BiasMetricError("no negative labels in the data: demographic disparity is undefined")
    codes, _ = pd.factorize(groups, sort=True)
    n_groups = int(codes.max()) + 1
    count = np.bincount(codes, minlength=n_groups)
    pos = np.bincount(codes, weights=y, minlength=n_groups)
    pos_d = np.bincount(codes, weights=y & d, minlength=n_groups)
    neg = np.bincount(codes, weights=~y, minlength=n_groups)
    neg_d = np.bincount(codes, weights=~y & d, minlength=n_groups)
    accepted = np.divide(pos_d, pos, out=np.zeros(n_groups), where=pos > 0)
    rejected = np.divide(neg_d, neg, out=np.zeros(n_groups), where=neg > 0)
    return float(np.sum(count * (rejected - accepted)) / np.sum(count))


# ---------------------------------------------------------------- registry

# Clarify name -> (Clarify's description, function of (label, facet, group, lp_p)).
MetricFn = Callable[[NDArray[np.bool_], NDArray[np.bool_], pd.Series | None, float], float]

PRE_TRAINING_METRICS: dict[str, tuple[str, MetricFn]] = {
    "CDDL": (
        "Conditional Demographic Disparity in Labels (CDDL)",
        lambda y, d, g, p: conditional_demographic_disparity(y, d, _need_group(g)),
    ),
    "CI": ("Class Imbalance (CI)", lambda y, d, g, p: class_imbalance(d)),
    "DPL": (
        "Difference in Positive Proportions in Labels (DPL)",
        lambda y, d, g, p: difference_in_positive_proportions(y, d),
    ),
    "JS": ("Jensen-Shannon Divergence (JS)", lambda y, d, g, p: js_divergence(y, d)),
    "KL": ("Kullback-Liebler Divergence (KL)", lambda y, d, g, p: kl_divergence(y, d)),  # sic, as Clarify
    "KS": ("Kolmogorov-Smirnov Distance (KS)", lambda y, d, g, p: ks_distance(y, d)),
    "LP": ("L-p Norm (LP)", lambda y, d, g, p: lp_norm(y, d, p)),
    "TVD": ("Total Variation Distance (TVD)", lambda y, d, g, p: total_variation_distance(y, d)),
}


def _need_group(group: pd.Series | None) -> pd.Series:
    if group is None:
        raise BiasMetricError("group variable is empty or not provided")
    return group


def compute_metrics(
    registry: dict[str, tuple[str, Callable[..., float]]], names: Sequence[str], *args: Any
) -> list[dict[str, Any]]:
    """Clarify metric entries, sorted by name as Clarify sorts them; a metric that fails gets
    `"value": None` and an `"error"` (Clarify's MetricError), never an exception."""
    unknown = sorted(set(names) - set(registry))
    if unknown:
        raise ValueError(f"unknown metric(s) {unknown}; known: {sorted(registry)}")
    entries = []
    for name in sorted(names):
        description, fn = registry[name]
        try:
            entries.append({"name": name, "description": description, "value": fn(*args)})
        except BiasMetricError as exc:
            entries.append({"name": name, "description": description, "value": None, "error": str(exc)})
    return entries


MISSING_FACET_VALUE = "(missing)"


def facet_column(column: pd.Series) -> pd.Series:
    """Facet values as strings (Clarify reports `value_or_threshold` as text); a missing value
    becomes its own facet value, `(missing)`, so those rows are reported, not hidden in "the rest"."""
    return column.astype("string").fillna(MISSING_FACET_VALUE).reset_index(drop=True)


def facet_values(column: pd.Series) -> list[str]:
    """The values to compare one against the rest, sorted for stable reports."""
    return sorted(facet_column(column).unique().tolist())


def pre_training_facet_report(
    frame: pd.DataFrame,
    facet: str,
    label: str,
    label_values: Sequence[Any],
    group_variable: str | None = None,
    metrics: Sequence[str] = tuple(PRE_TRAINING_METRICS),
    lp_p: float = 2,
) -> list[dict[str, Any]]:
    """Clarify's per-facet list: one entry per facet value (that value against the rest)."""
    y = as_mask(positive_label_mask(frame[label], label_values), "label")
    group = frame[group_variable].reset_index(drop=True) if group_variable else None
    column = facet_column(frame[facet])
    report = []
    for value in facet_values(column):
        d = (column == value).to_numpy(dtype=bool)
        report.append(
            {
                "value_or_threshold": value,
                "metrics": compute_metrics(PRE_TRAINING_METRICS, metrics, y, d, group, lp_p),
            }
        )
    return report


def pre_training_report(frame: pd.DataFrame, params: Mapping[str, Any]) -> dict[str, Any]:
    """Clarify's analysis.json (`pre_training_bias_metrics`) for a labelled dataset.

    `params` is the `bias` params section: label, label_values, facets, group_variable,
    pre_training_metrics (default: all), lp_p (default 2)."""
    label = params["label"]
    group = params.get("group_variable") or None
    facets = list(params["facets"])
    require_columns(frame, [label, *facets, *([group] if group else [])], "pre-training bias")
    label_values = list(params["label_values"])
    metrics = list(params.get("pre_training_metrics") or PRE_TRAINING_METRICS)
    lp_p = float(params.get("lp_p", 2))
    section = bias_metrics_section(
        label,
        label_values,
        {
            facet: pre_training_facet_report(frame, facet, label, label_values, group, metrics, lp_p)
            for facet in facets
        },
    )
    return build_analysis(pre_training=section)
