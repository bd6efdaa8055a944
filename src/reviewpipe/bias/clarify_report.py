"""SageMaker Clarify's analysis.json layout: build it, validate it, flatten it to a table.

    {"version": "1.0",
     "pre_training_bias_metrics": {
        "label": "sentiment", "label_value_or_threshold": "1",
        "facets": {"product_category": [
            {"value_or_threshold": "Blouses",
             "metrics": [{"name": "CI", "description": "Class Imbalance (CI)", "value": 0.73}, ...]}]}},
     "post_training_bias_metrics": {... same shape ...}}

A metric that could not be computed has `"value": null` and an `"error"`; infinite values are
written as the strings "Infinity" / "-Infinity", as Clarify does (JSON has no infinity).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

import pandas as pd

from reviewpipe.errors import ReviewpipeError

ANALYSIS_VERSION = "1.0"
SECTIONS = {"pre_training": "pre_training_bias_metrics", "post_training": "post_training_bias_metrics"}


def label_value_or_threshold(label_values: Sequence[Any]) -> str:
    """Clarify's text for the positive label values: comma-joined."""
    return ",".join(str(v) for v in label_values)


def json_value(value: Any) -> Any:
    """A metric value as Clarify writes it: float, or "Infinity"/"-Infinity"."""
    if value is None:
        return None
    value = float(value)
    if math.isinf(value):
        return "Infinity" if value > 0 else "-Infinity"
    return value


def _metric_entry(metric: dict[str, Any]) -> dict[str, Any]:
    entry = {
        "name": metric["name"],
        "description": metric["description"],
        "value": json_value(metric["value"]),
    }
    if isinstance(entry["value"], float) and math.isnan(entry["value"]):
        entry["value"] = None
        entry["error"] = metric.get("error") or "the metric evaluated to NaN"
    elif "error" in metric:
        entry["error"] = metric["error"]
    return entry


def bias_metrics_section(
    label: str, label_values: Sequence[Any], facets: dict[str, list[dict[str, Any]]]
) -> dict[str, Any]:
    """One `*_bias_metrics` section from per-facet lists of {"value_or_threshold", "metrics"}."""
    return {
        "label": label,
        "label_value_or_threshold": label_value_or_threshold(label_values),
        "facets": {
            facet: [
                {
                    "value_or_threshold": str(item["value_or_threshold"]),
                    "metrics": [_metric_entry(m) for m in item["metrics"]],
                }
                for item in items
            ]
            for facet, items in facets.items()
        },
    }


def build_analysis(
    pre_training: dict[str, Any] | None = None, post_training: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The analysis.json document with whichever sections are given."""
    analysis: dict[str, Any] = {"version": ANALYSIS_VERSION}
    if pre_training is not None:
        analysis[SECTIONS["pre_training"]] = pre_training
    if post_training is not None:
        analysis[SECTIONS["post_training"]] = post_training
    return analysis


def validate_analysis(analysis: Any) -> None:
    """Raise ReviewpipeError unless `analysis` has Clarify's layout."""

    def fail(why: str) -> None:
        raise ReviewpipeError(f"not a Clarify analysis.json: {why}")

    if not isinstance(analysis, dict) or "version" not in analysis:
        fail("expected an object with a `version`")
    sections = [s for s in SECTIONS.values() if s in analysis]
    if not sections:
        fail(f"expected one of {sorted(SECTIONS.values())}")
    for name in sections:
        section = analysis[name]
        for key in ("label", "label_value_or_threshold", "facets"):
            if key not in section:
                fail(f"{name} lacks `{key}`")
        for facet, items in section["facets"].items():
            for item in items:
                if "value_or_threshold" not in item or "metrics" not in item:
                    fail(f"{name}.facets.{facet} entries need `value_or_threshold` and `metrics`")
                for metric in item["metrics"]:
                    if not {"name", "description", "value"} <= set(metric):
                        fail(f"metric in {name}.facets.{facet} lacks name/description/value")


def metrics_table(analysis: dict[str, Any], stage: str = "pre_training") -> pd.DataFrame:
    """Flatten one section to rows (facet, value_or_threshold, metric, description, value, error);
    "Infinity" strings become floats again."""
    validate_analysis(analysis)
    section = analysis.get(SECTIONS[stage])
    rows = []
    for facet, items in (section or {}).get("facets", {}).items():
        for item in items:
            for metric in item["metrics"]:
                value = metric["value"]
                rows.append(
                    {
                        "facet": facet,
                        "value_or_threshold": item["value_or_threshold"],
                        "metric": metric["name"],
                        "description": metric["description"],
                        "value": float(value) if value is not None else math.nan,
                        "error": metric.get("error"),
                    }
                )
    return pd.DataFrame(
        rows, columns=["facet", "value_or_threshold", "metric", "description", "value", "error"]
    )


def require_columns(frame: pd.DataFrame, columns: Iterable[str], what: str) -> None:
    """A clear error naming the missing columns (a config or data mistake the user can fix)."""
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ReviewpipeError(
            f"{what}: column(s) {missing} not in the data (has {sorted(frame.columns)}); "
            "check bias.label, bias.facets, bias.group_variable and bias.predicted_label in params.yaml"
        )
