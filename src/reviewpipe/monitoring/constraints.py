"""Constraints in the spirit of Model Monitor's constraints.json, and their evaluation on a batch.

`suggest_constraints` turns baseline statistics + the `monitor` thresholds into constraints.json:
completeness per source column, the allowed categories, the allowed share of empty texts and of
unseen categories, and the drift thresholds. `evaluate` checks a batch's monitor frame against
them and returns every check with its value and threshold; the violated ones are what
constraint_violations.json lists. Pure: dicts and frames in, dataclasses out.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import pandas as pd

from reviewpipe import SENTIMENTS
from reviewpipe.monitoring import drift
from reviewpipe.monitoring.statistics import (
    DEFAULT_COLUMNS,
    PREDICTED_LABEL,
    REVIEW_LENGTH,
    WORD_COUNT,
    MonitorColumns,
    completeness,
    feature,
    quantile_sketch,
)

CONSTRAINTS_VERSION = 0.0


@dataclass(frozen=True)
class Thresholds:
    """The `monitor.constraints` and `monitor.drift` params. A drift threshold of None disables it."""

    completeness_tolerance: float = 0.0
    max_empty_text_ratio: float = 0.0
    max_unseen_category_ratio: float = 0.0
    numeric_features: tuple[str, ...] = (REVIEW_LENGTH, WORD_COUNT)
    categorical_features: tuple[str, ...] = ("product_category", PREDICTED_LABEL)
    psi_threshold: float | None = 0.2
    ks_threshold: float | None = 0.1
    chi2_p_value_threshold: float | None = 0.001
    comparison_method: str = "robust"  # robust | simple (KS: also require statistical significance)
    robust_confidence: float = 0.99

    @classmethod
    def from_params(cls, section: Any) -> Thresholds:
        quality, drifts = section.constraints, section.drift
        return cls(
            completeness_tolerance=float(quality.completeness_tolerance),
            max_empty_text_ratio=float(quality.max_empty_text_ratio),
            max_unseen_category_ratio=float(quality.max_unseen_category_ratio),
            numeric_features=tuple(drifts.numeric_features),
            categorical_features=tuple(drifts.categorical_features),
            psi_threshold=drifts.psi_threshold,
            ks_threshold=drifts.ks_threshold,
            chi2_p_value_threshold=drifts.chi2_p_value_threshold,
            comparison_method=str(drifts.comparison_method),
            robust_confidence=float(drifts.robust_confidence),
        )


def suggest_constraints(
    baseline: dict, thresholds: Thresholds, columns: MonitorColumns = DEFAULT_COLUMNS
) -> dict:
    """constraints.json from baseline statistics (Model Monitor's suggest_baseline, locally)."""
    features = []
    for stats in baseline["features"]:
        name = stats["name"]
        entry: dict[str, Any] = {"name": name, "inferred_type": stats["inferred_type"]}
        if name in (columns.review_id, columns.text, columns.category):
            observed = completeness(stats)
            entry["completeness"] = (
                None if observed is None else max(0.0, observed - thresholds.completeness_tolerance)
            )
        if name == columns.text:
            entry["string_constraints"] = {"max_empty_ratio": thresholds.max_empty_text_ratio}
        elif name == columns.category:
            buckets = stats["string_statistics"]["distribution"]["categorical"]["buckets"]
            entry["string_constraints"] = {
                "domains": [b["value"] for b in buckets],
                "max_unseen_ratio": thresholds.max_unseen_category_ratio,
            }
        elif name == PREDICTED_LABEL:
            entry["string_constraints"] = {"domains": [str(s) for s in SENTIMENTS]}
        elif "numerical_statistics" in stats:
            entry["num_constraints"] = {"is_non_negative": True}
        features.append(entry)
    return {
        "version": CONSTRAINTS_VERSION,
        "features": features,
        "monitoring_config": {
            "evaluate_constraints": "Enabled",
            "distribution_constraints": {
                "perform_comparison": "Enabled",
                "numeric": {
                    "features": list(thresholds.numeric_features),
                    "psi_threshold": thresholds.psi_threshold,
                    "ks_threshold": thresholds.ks_threshold,
                    "comparison_method": thresholds.comparison_method,
                    "robust_confidence": thresholds.robust_confidence,
                },
                "categorical": {
                    "features": list(thresholds.categorical_features),
                    "psi_threshold": thresholds.psi_threshold,
                    "chi2_p_value_threshold": thresholds.chi2_p_value_threshold,
                },
            },
        },
    }


@dataclass
class Check:
    """One constraint evaluated on a batch. Violated when `value` is above (`greater_than`) or
    below (`less_than`) `threshold`."""

    feature_name: str
    constraint_check_type: str
    metric: str
    value: float | None
    threshold: float | None
    comparison: str
    description: str
    violated: bool = field(init=False)

    def __post_init__(self) -> None:
        if self.value is not None and not math.isfinite(self.value):
            self.value = None
        if self.value is None or self.threshold is None:
            self.violated = False
        elif self.comparison == "greater_than":
            self.violated = self.value > self.threshold
        else:
            self.violated = self.value < self.threshold

    def as_violation(self) -> dict:
        """The record constraint_violations.json lists (Model Monitor's fields + value/threshold)."""
        return asdict(self)


def _missing_column(name: str) -> Check:
    return Check(
        name,
        "missing_column_check",
        "present",
        0.0,
        1.0,
        "less_than",
        f"column `{name}` is in the baseline but not in the batch",
    )


def _quality_checks(constraint: dict, monitored: pd.DataFrame, columns: MonitorColumns) -> list[Check]:
    name = constraint["name"]
    values = monitored[name]
    n = len(values)
    checks = []
    if constraint.get("completeness") is not None and n:
        observed = float(values.notna().mean())
        checks.append(
            Check(
                name,
                "completeness_check",
                "completeness",
                observed,
                constraint["completeness"],
                "less_than",
                f"{int(values.isna().sum())} of {n} values missing "
                f"(completeness {observed:.4f}, baseline constraint {constraint['completeness']:.4f})",
            )
        )
    string_constraints = constraint.get("string_constraints", {})
    present = values.dropna().astype(str)
    if name == columns.text and n:
        empty = int((present.str.strip() == "").sum())
        checks.append(
            Check(
                name,
                "empty_text_check",
                "empty_ratio",
                empty / n,
                string_constraints.get("max_empty_ratio"),
                "greater_than",
                f"{empty} of {n} texts are empty or blank",
            )
        )
    if name == columns.category and n:
        domain = set(string_constraints.get("domains", []))
        unseen = present[~present.isin(domain)]
        examples = ", ".join(sorted(unseen.unique())[:5])
        checks.append(
            Check(
                name,
                "categorical_values_check",
                "unseen_ratio",
                len(unseen) / n,
                string_constraints.get("max_unseen_ratio"),
                "greater_than",
                f"{len(unseen)} of {n} values not seen in the baseline"
                + (f" ({examples})" if examples else ""),
            )
        )
    return checks


def _drift_checks(comparison: drift.Comparison, thresholds: dict) -> list[Check]:
    m = comparison.metrics
    name = comparison.feature
    checks = [
        Check(
            name,
            "baseline_drift_check",
            "psi",
            m["psi"],
            thresholds.get("psi_threshold"),
            "greater_than",
            "population stability index against the baseline buckets",
        )
    ]
    if comparison.kind == "numeric":
        threshold = thresholds.get("ks_threshold")
        note = ""
        if threshold is not None and thresholds.get("comparison_method", "robust") == "robust":
            # Model Monitor's "Robust" comparison: a distance counts only when it is also beyond the
            # KS critical value at the configured confidence, so small batches do not cry wolf.
            critical = drift.ks_critical_value(
                sum(comparison.batch_counts),
                sum(comparison.baseline_counts),
                thresholds.get("robust_confidence", 0.99),
            )
            if critical > threshold:
                threshold, note = critical, f"; threshold raised to the {critical:.3g} critical value"
        checks.append(
            Check(
                name,
                "baseline_drift_check",
                "ks",
                m["ks"],
                threshold,
                "greater_than",
                f"Kolmogorov-Smirnov distance to the baseline (p-value {m['ks_p_value']:.3g}{note})",
            )
        )
    else:
        checks.append(
            Check(
                name,
                "baseline_drift_check",
                "chi2_p_value",
                m["chi2_p_value"],
                thresholds.get("chi2_p_value_threshold"),
                "less_than",
                f"chi-square homogeneity test (chi2 {m['chi2']:.3g}, dof {int(m['chi2_dof'])})",
            )
        )
    return checks


def evaluate(
    baseline: dict,
    constraints: dict,
    monitored: pd.DataFrame,
    columns: MonitorColumns = DEFAULT_COLUMNS,
    *,
    sketch_size: int = 1001,
    skip: Mapping[str, str] | None = None,
) -> tuple[list[Check], list[drift.Comparison]]:
    """Every check of `constraints` on a batch's monitor frame, and the drift comparisons.
    Features in `skip` ({feature: why}) are not checked at all: a source that cannot carry them
    (captured requests hold no product category) is not a missing column."""
    skip = skip or {}
    checks: list[Check] = []
    for constraint in constraints["features"]:
        if constraint["name"] in skip:
            continue
        if constraint["name"] not in monitored.columns:
            checks.append(_missing_column(constraint["name"]))
        else:
            checks.extend(_quality_checks(constraint, monitored, columns))

    comparisons: list[drift.Comparison] = []
    config = constraints["monitoring_config"]["distribution_constraints"]
    if config.get("perform_comparison") != "Enabled":
        return checks, comparisons
    for kind in ("numeric", "categorical"):
        for name in config[kind]["features"]:
            stats = feature(baseline, name)
            if stats is None or name not in monitored.columns or name in skip:
                continue  # not in the baseline (e.g. no model) or reported as a missing column
            values = monitored[name]
            if kind == "numeric":
                if "distribution" not in stats["numerical_statistics"]:
                    continue  # the baseline had no values
                present = values.dropna().to_numpy(dtype=float)
                comparison = drift.compare_numeric(
                    name,
                    stats["numerical_statistics"],
                    present,
                    batch_sketch=quantile_sketch(present, sketch_size),
                )
            else:
                comparison = drift.compare_categorical(
                    name, stats["string_statistics"], values.dropna().to_numpy()
                )
            if sum(comparison.batch_counts) == 0:
                continue  # nothing to compare: completeness already reports it
            comparisons.append(comparison)
            checks.extend(_drift_checks(comparison, config[kind]))
    return checks, comparisons


def violations_document(checks: list[Check], skipped: Mapping[str, str] | None = None) -> dict:
    """constraint_violations.json: Model Monitor's `violations` list, plus every check for context
    and the features left unchecked (with why)."""
    return {
        "violations": [c.as_violation() for c in checks if c.violated],
        "checks": [c.as_violation() for c in checks],
        "not_checked": [{"feature_name": k, "reason": v} for k, v in (skipped or {}).items()],
    }
