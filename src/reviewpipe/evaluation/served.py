"""What production sees, as report sections over `Scores`: natural-mix evaluation sets, the
stacked ensemble from its already-scored members, error bars, and calibration.

- Natural-mix sets: the split is assigned before balancing, so prepare's unbalanced.parquet holds
  every validation and test row at the real class mix (~10 / 12 / 77 %) under either protocol.
- The ensemble is scored from its members' probabilities (no second pass of BERT); on the rows its
  stacker was fitted on (natural-mix validation) it answers out-of-fold.
- `calibration_section`: per model, temperature + prior correction + macro-F1 decision rule fitted
  on one set (natural validation), ECE and review-threshold shares before/after on another (natural
  test), and the served decisions' metrics with bootstrap intervals.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from reviewpipe.errors import ReviewpipeError
from reviewpipe.evaluation.calibration import (
    calibration_report,
    class_prior,
    effective_prior,
    reliability_table,
)
from reviewpipe.evaluation.metrics import bootstrap_intervals
from reviewpipe.evaluation.scoring import EvaluationSet, Scores

MIXES = ("balanced", "natural")


def natural_rows(unbalanced: pd.DataFrame, split: str) -> pd.DataFrame:
    """The rows of `split` before balancing (prepare's unbalanced.parquet): the real class mix."""
    rows = unbalanced[unbalanced["split_type"] == split].reset_index(drop=True)
    if rows.empty:
        raise ReviewpipeError(f"prepare's unbalanced rows hold no {split!r} rows; rerun `dvc repro prepare`.")
    return rows


ROW_KEY = ["split_type", "review_id"]  # a prepared row's identity


def union_set(sets: list[EvaluationSet]) -> EvaluationSet:
    """Every distinct prepared row of the sets, once: the natural-mix validation and test rows
    contain the balanced ones, and under the natural protocol they are the same rows, so each model
    scores each review once."""
    frame = pd.concat([s.frame for s in sets], ignore_index=True).drop_duplicates(ROW_KEY)
    return EvaluationSet("all", frame.reset_index(drop=True), "report")


def split_scores(scored: Scores, sets: list[EvaluationSet]) -> Scores:
    """Scores over the union (`union_set`) cut back into the configured sets, in configured order."""
    union = scored.sets["all"].frame
    position = pd.Series(np.arange(len(union)), index=pd.MultiIndex.from_frame(union[ROW_KEY]))
    out = Scores(sets={s.name: s for s in sets})
    for model, by_set in scored.proba.items():
        out.proba[model] = {
            s.name: by_set["all"][position.loc[pd.MultiIndex.from_frame(s.frame[ROW_KEY])].to_numpy()]
            for s in sets
        }
    return out


def add_ensemble(scores: Scores, name: str, predictor: Any) -> None:
    """scores.proba[name] from the members' probabilities: out-of-fold on the rows the stacker was
    fitted on, the final stacker elsewhere (`EnsemblePredictor.proba_for`)."""
    missing = [m for m in predictor.members if m not in scores.proba]
    if missing:
        raise ReviewpipeError(
            f"the ensemble stacks {list(predictor.members)}; add {missing} to evaluate.models."
        )
    scores.proba[name] = {
        set_name: predictor.proba_for(
            s.frame["review_id"], {m: scores.proba[m][set_name] for m in predictor.members}
        )
        for set_name, s in scores.sets.items()
    }


def interval_table(scores: Scores, resamples: int, confidence: float, seed: int) -> dict[str, dict[str, Any]]:
    """intervals[model][set] = seeded bootstrap intervals of accuracy and macro-F1 (argmax decisions)."""
    return {
        model: {
            name: bootstrap_intervals(
                s.truth,
                scores.predicted_ids(model, name),
                n_resamples=resamples,
                confidence=confidence,
                seed=seed,
            )
            for name, s in scores.sets.items()
        }
        for model in scores.models
    }


def training_prior(train: pd.DataFrame, class_weights: Mapping[int, float]) -> np.ndarray:
    """The prior the candidates learned: the train split's class counts x the loss weights (uniform
    under both protocols: balanced rows, or natural rows weighted n / (3 n_c))."""
    counts = np.bincount(train["label_id"].to_numpy(dtype=int), minlength=3)[:3]
    return effective_prior(counts, [class_weights[i] for i in range(3)])


def production_prior(unbalanced: pd.DataFrame) -> np.ndarray:
    """The class mix of the natural-mix training rows: what production traffic looks like."""
    return class_prior(unbalanced.loc[unbalanced["split_type"] == "train", "label_id"])


def calibration_section(
    scores: Scores,
    cfg: Mapping[str, Any],
    *,
    train_prior: np.ndarray,
    production: np.ndarray,
    bootstrap: Mapping[str, Any],
) -> tuple[dict[str, Any], dict]:
    """(report[model], reliability[(model, variant)] rows) for every model: see the module docstring."""
    fit_on, report_on = str(cfg["fit_on"]), str(cfg["report_on"])
    for name in (fit_on, report_on):
        if name not in scores.sets:
            raise ReviewpipeError(
                f"evaluate.calibration names set {name!r}; evaluate.sets has {list(scores.sets)}."
            )
    fit_set, report_set = scores.sets[fit_on], scores.sets[report_on]
    intervals = {
        "n_resamples": int(bootstrap["resamples"]),
        "confidence": float(bootstrap["confidence"]),
        "seed": int(bootstrap["seed"]),
    }
    report: dict[str, Any] = {}
    reliability: dict[tuple[str, str], list[dict[str, float]]] = {}
    for model in scores.models:
        _, r = calibration_report(
            fit_set.truth,
            scores.proba[model][fit_on],
            report_set.truth,
            scores.proba[model][report_on],
            train_prior=train_prior,
            production_prior=production,
            threshold=float(cfg["review_threshold"]),
            bins=int(cfg["bins"]),
            folds=int(cfg["folds"]),
            seed=int(cfg["seed"]),
        )
        decisions = r.pop("decisions")
        calibrated = r.pop("calibrated_test_proba")
        r["served"] = {
            f"{report_on}_argmax": bootstrap_intervals(
                report_set.truth, scores.predicted_ids(model, report_on), **intervals
            ),
            f"{report_on}_calibrated": bootstrap_intervals(
                report_set.truth, decisions["test_calibrated"], **intervals
            ),
            f"{report_on}_rule": bootstrap_intervals(report_set.truth, decisions["test_rule"], **intervals),
            f"{fit_on}_rule_cross_fitted": bootstrap_intervals(
                fit_set.truth, decisions["validation_rule_cross_fitted"], **intervals
            ),
        }
        report[model] = r
        reliability[(model, report_on)] = reliability_table(
            report_set.truth, scores.proba[model][report_on], int(cfg["bins"])
        )
        reliability[(model, f"{report_on}_calibrated")] = reliability_table(
            report_set.truth, calibrated, int(cfg["bins"])
        )
    return report, reliability
