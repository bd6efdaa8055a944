"""Drift metrics between a baseline and a batch: PSI, Kolmogorov-Smirnov and chi-square.

Numeric features compare the batch against the baseline's quantile buckets (PSI) and quantile
sketch (KS); categorical features compare value counts (chi-square test of homogeneity, PSI).
Each `compare_*` function returns a `Comparison`: the two distributions side by side (for the
report) and the metric values (for the constraints). Pure: arrays and dicts in, values out.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from scipy import stats as scipy_stats

from reviewpipe.monitoring.statistics import bucket_counts

# A bucket empty on one side would make PSI infinite; the usual remedy is a small floor.
PSI_EPSILON = 1e-4


def population_stability_index(
    expected: np.ndarray, actual: np.ndarray, epsilon: float = PSI_EPSILON
) -> float:
    """PSI = sum((a - e) * ln(a / e)) over buckets, with e and a the baseline and batch shares
    (counts are normalised here; shares below `epsilon` are raised to it)."""
    expected = np.asarray(expected, dtype=float)
    actual = np.asarray(actual, dtype=float)
    if expected.shape != actual.shape:
        raise ValueError(f"bucket counts differ in length: {expected.shape} vs {actual.shape}")
    if expected.sum() <= 0 or actual.sum() <= 0:
        return float("nan")
    e = np.maximum(expected / expected.sum(), epsilon)
    a = np.maximum(actual / actual.sum(), epsilon)
    return float(np.sum((a - e) * np.log(a / e)))


def ks_statistic(sample: np.ndarray, reference: np.ndarray) -> float:
    """Two-sample Kolmogorov-Smirnov distance: the largest gap between the two empirical CDFs
    (what scipy.stats.ks_2samp reports as `statistic`)."""
    a = np.sort(np.asarray(sample, dtype=float))
    b = np.sort(np.asarray(reference, dtype=float))
    if len(a) == 0 or len(b) == 0:
        return float("nan")
    points = np.concatenate([a, b])
    cdf_a = np.searchsorted(a, points, side="right") / len(a)
    cdf_b = np.searchsorted(b, points, side="right") / len(b)
    return float(np.max(np.abs(cdf_a - cdf_b)))


def ks_p_value(statistic: float, n_sample: int, n_reference: int) -> float:
    """Two-sided p-value for a two-sample KS distance, as scipy.stats.ks_2samp(method="asymp")
    computes it: the one-sample KS distribution at the effective size n*m/(n+m)."""
    if not math.isfinite(statistic) or n_sample == 0 or n_reference == 0:
        return float("nan")
    return float(np.clip(scipy_stats.kstwo.sf(statistic, _effective_size(n_sample, n_reference)), 0.0, 1.0))


def _effective_size(n_sample: int, n_reference: int) -> int:
    return max(1, round(n_sample * n_reference / (n_sample + n_reference)))


def ks_critical_value(n_sample: int, n_reference: int, confidence: float) -> float:
    """The KS distance beyond which two samples of these sizes differ at `confidence` (asymptotic)."""
    if n_sample == 0 or n_reference == 0:
        return float("inf")
    return float(scipy_stats.kstwo.isf(1.0 - confidence, _effective_size(n_sample, n_reference)))


@dataclass(frozen=True)
class ChiSquare:
    statistic: float
    dof: int
    p_value: float


def chi_square_homogeneity(baseline_counts: np.ndarray, batch_counts: np.ndarray) -> ChiSquare:
    """Chi-square test that two count vectors over the same categories come from one distribution
    (a 2 x k contingency table; categories empty on both sides are dropped; no continuity
    correction, like scipy.stats.chi2_contingency(correction=False))."""
    table = np.vstack([np.asarray(baseline_counts, dtype=float), np.asarray(batch_counts, dtype=float)])
    table = table[:, table.sum(axis=0) > 0]
    if table.shape[1] < 2 or (table.sum(axis=1) == 0).any():
        return ChiSquare(0.0, 0, 1.0)
    expected = table.sum(axis=1, keepdims=True) * table.sum(axis=0, keepdims=True) / table.sum()
    statistic = float(((table - expected) ** 2 / expected).sum())
    dof = table.shape[1] - 1
    return ChiSquare(statistic, dof, float(scipy_stats.chi2.sf(statistic, dof)))


@dataclass
class Comparison:
    """One feature's baseline-vs-batch distributions and drift metrics."""

    feature: str
    kind: str  # "numeric" | "categorical"
    labels: list[str]  # bucket or category labels
    baseline_counts: list[int]
    batch_counts: list[int]
    metrics: dict[str, float] = field(default_factory=dict)
    baseline_sketch: list[float] = field(default_factory=list)  # numeric only: quantiles for the CDF plot
    batch_sketch: list[float] = field(default_factory=list)

    def shares(self, counts: list[int]) -> list[float]:
        total = sum(counts)
        return [c / total if total else 0.0 for c in counts]


def _bucket_labels(edges: list[float]) -> list[str]:
    def fmt(x: float) -> str:
        return f"{x:g}"

    if not edges:
        return ["all"]
    return (
        [f"< {fmt(edges[0])}"]
        + [f"[{fmt(lo)}, {fmt(hi)})" for lo, hi in zip(edges[:-1], edges[1:], strict=True)]
        + [f">= {fmt(edges[-1])}"]
    )


def compare_numeric(
    name: str, baseline: dict, batch_values: np.ndarray, *, batch_sketch: list[float] | None = None
) -> Comparison:
    """PSI over the baseline's quantile buckets and KS against the baseline's quantile sketch.

    `baseline` is the feature's `numerical_statistics` from the baseline statistics.json."""
    values = np.asarray(batch_values, dtype=float)
    values = values[~np.isnan(values)]
    buckets = baseline["distribution"]["kll"]["buckets"]
    edges = [b["lower_bound"] for b in buckets[1:]]
    baseline_counts = [int(b["count"]) for b in buckets]
    counts = bucket_counts(values, edges)
    sketch = baseline["distribution"]["sketch"]["quantiles"]
    n_baseline = baseline["common"]["num_present"]
    ks = ks_statistic(values, np.asarray(sketch))
    return Comparison(
        feature=name,
        kind="numeric",
        labels=_bucket_labels(edges),
        baseline_counts=baseline_counts,
        batch_counts=counts,
        metrics={
            "psi": population_stability_index(np.array(baseline_counts), np.array(counts)),
            "ks": ks,
            "ks_p_value": ks_p_value(ks, len(values), n_baseline),
        },
        baseline_sketch=list(sketch),
        batch_sketch=list(batch_sketch or []),
    )


def compare_categorical(name: str, baseline: dict, batch_values: np.ndarray) -> Comparison:
    """Chi-square homogeneity and PSI over the union of baseline and batch categories.

    `baseline` is the feature's `string_statistics` from the baseline statistics.json."""
    baseline_counts = {
        b["value"]: int(b["count"]) for b in baseline["distribution"]["categorical"]["buckets"]
    }
    present = [str(v) for v in batch_values if v is not None and v == v]  # v == v drops NaN
    batch_counts: dict[str, int] = {}
    for v in present:
        batch_counts[v] = batch_counts.get(v, 0) + 1
    labels = list(baseline_counts) + sorted(set(batch_counts) - set(baseline_counts))
    base = np.array([baseline_counts.get(v, 0) for v in labels])
    new = np.array([batch_counts.get(v, 0) for v in labels])
    chi = chi_square_homogeneity(base, new)
    return Comparison(
        feature=name,
        kind="categorical",
        labels=labels,
        baseline_counts=base.tolist(),
        batch_counts=new.tolist(),
        metrics={
            "psi": population_stability_index(base, new),
            "chi2": chi.statistic,
            "chi2_dof": float(chi.dof),
            "chi2_p_value": chi.p_value,
        },
    )
