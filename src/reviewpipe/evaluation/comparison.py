"""Report sections over `Scores` (every model on every evaluation set): the comparison table, the
predictions frame, group fairness and Clarify's post-training analysis. Pure functions; the
`evaluate` stage writes what they return.

Layouts (model first, then set, so a new set or a new per-set section adds keys, not shapes):
  table[model][set]    = {accuracy, macro_f1, roc_auc_ovr_macro, per_class}
  fairness[model][set] = fairness_report(...) (per feature, and the largest gap)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from reviewpipe import SENTIMENTS
from reviewpipe.evaluation.fairness import fairness_report
from reviewpipe.evaluation.metrics import CLASS_NAMES, classification_metrics, log_to_live
from reviewpipe.evaluation.scoring import PREDICTED, PREDICTED_ID, Scores

HEADLINE = ("accuracy", "macro_f1", "roc_auc_ovr_macro", "per_class")


def comparison_row(metrics: Mapping[str, Any]) -> dict[str, Any]:
    """What metrics.json keeps per model and set: headline numbers and per-class precision/recall/F1."""
    return {k: metrics[k] for k in HEADLINE}


def metrics_table(scores: Scores, live: Any | None = None) -> dict[str, dict[str, dict[str, Any]]]:
    """table[model][set] (see the module docstring); with a `dvclive.Live`, also its metrics and plots."""
    table: dict[str, dict[str, dict[str, Any]]] = {}
    for model in scores.models:
        table[model] = {}
        for name, evaluation_set in scores.sets.items():
            proba = scores.proba[model][name]
            metrics = classification_metrics(evaluation_set.truth, proba)
            if live is not None:
                log_to_live(live, model, evaluation_set.truth, proba, metrics, split=name)
            table[model][name] = comparison_row(metrics)
    return table


def comparison_frame(table: Mapping[str, Mapping[str, Mapping[str, Any]]]) -> pd.DataFrame:
    """One row per (model, set): headline numbers and each class's F1 (comparison.csv)."""
    return pd.DataFrame(
        [
            {
                "model": model,
                "set": name,
                **{k: v for k, v in row.items() if k != "per_class"},
                **{f"{c}_f1": row["per_class"][c]["f1"] for c in row["per_class"]},
            }
            for model, by_set in table.items()
            for name, row in by_set.items()
        ]
    )


def predictions_frame(scores: Scores, keys: Sequence[str] = ("review_id", "sentiment")) -> pd.DataFrame:
    """Every set's rows (`set`, `review_id`, `sentiment`) with each model's prediction and probabilities."""
    parts = []
    for name, evaluation_set in scores.sets.items():
        frame = evaluation_set.frame
        part = frame[[c for c in keys if c in frame.columns]].copy()
        part.insert(0, "set", name)
        for model in scores.models:
            proba = scores.proba[model][name]
            part[f"{model}_predicted"] = np.asarray(SENTIMENTS)[proba.argmax(axis=1)]
            for i, s in enumerate(SENTIMENTS):
                part[f"{model}_p_{CLASS_NAMES[s]}"] = proba[:, i]
        parts.append(part)
    return pd.concat(parts, ignore_index=True)


def fairness_table(
    scores: Scores, features: Sequence[str], min_group_rows: int
) -> dict[str, dict[str, dict[str, Any]]]:
    """fairness[model][set]: fairlearn metrics per group of each feature, and the largest gaps."""
    return {
        model: {
            name: fairness_report(
                scores.scored(model, name), "label_id", PREDICTED_ID, list(features), min_group_rows
            )
            for name in scores.sets
        }
        for model in scores.models
    }


def post_training_analyses(
    scores: Scores, bias_params: Mapping[str, Any]
) -> dict[tuple[str, str], dict[str, Any]]:
    """Clarify's post-training analysis.json for each (set, model), from the `bias` params section."""
    from reviewpipe.bias.posttraining import post_training_report

    params = {**bias_params, "predicted_label": PREDICTED}
    return {
        (name, model): post_training_report(scores.scored(model, name), params)
        for name in scores.sets
        for model in scores.models
    }
