"""Confidence that means what it says: prior correction, temperature scaling, a macro-F1 decision
rule, and the measures that check them (expected calibration error, reliability diagrams).

Every candidate is trained on balanced classes (the course protocol balances; the natural protocol
weights classes n / (3 n_c), which is the same in expectation), so its probabilities describe a
world where each sentiment is a third of the reviews. Production traffic is ~10 / 12 / 77 %.
`Calibration` maps a model's probabilities to production ones:

    p_cal(y | x)  ∝  p(y | x) ** (1 / T)  ·  π_prod(y) / π_train(y)

the prior ratio is Bayes' rule for a shift in class priors (known from the data, not fitted); the
temperature T is the one free parameter, fitted on natural-mix validation rows by log-loss. The
served label may then apply per-class decision weights w (argmax of w · p_cal) chosen on validation
to maximise macro-F1; the served probabilities stay p_cal, so a 0.90 review threshold means 90 %.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from numpy.typing import ArrayLike
from scipy.optimize import minimize_scalar

from reviewpipe.errors import ReviewpipeError
from reviewpipe.models.ensemble import softmax, stratified_folds

EPS = 1e-12
N_CLASSES = 3


def normalise(weights: ArrayLike) -> np.ndarray:
    w = np.asarray(weights, dtype=np.float64)
    if w.shape != (N_CLASSES,) or (w <= 0).any():
        raise ReviewpipeError(f"class priors must be {N_CLASSES} positive numbers, got {w.tolist()}")
    return w / w.sum()


def effective_prior(
    class_counts: Sequence[float], class_weights: Sequence[float] | None = None
) -> np.ndarray:
    """The class prior a model trained on these counts with these loss weights has learned:
    counts x weights, normalised (balanced counts, or counts weighted n / (3 n_c): uniform)."""
    counts = np.asarray(class_counts, dtype=np.float64)
    weights = np.ones(N_CLASSES) if class_weights is None else np.asarray(class_weights, dtype=np.float64)
    return normalise(counts * weights)


def _log(proba: ArrayLike) -> np.ndarray:
    return np.log(np.clip(np.asarray(proba, dtype=np.float64), EPS, 1.0))


@dataclass(frozen=True)
class Calibration:
    """temperature and log prior shift (applied to log-probabilities), then decision weights.
    Plain numbers, so the package's inference.py applies it with numpy alone (calibration.json)."""

    temperature: float = 1.0
    log_prior_shift: tuple[float, float, float] = (0.0, 0.0, 0.0)
    decision_weights: tuple[float, float, float] = (1.0, 1.0, 1.0)
    fitted_on: dict[str, Any] = field(default_factory=dict)

    def probabilities(self, proba: ArrayLike) -> np.ndarray:
        return softmax(_log(proba) / self.temperature + np.asarray(self.log_prior_shift))

    def decide(self, calibrated: ArrayLike) -> np.ndarray:
        """Class ids: argmax of decision weights x calibrated probabilities."""
        return (np.asarray(calibrated) * np.asarray(self.decision_weights)).argmax(axis=1)

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["log_prior_shift"] = [float(v) for v in self.log_prior_shift]
        out["decision_weights"] = [float(v) for v in self.decision_weights]
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Calibration:
        return cls(
            temperature=float(data["temperature"]),
            log_prior_shift=tuple(float(v) for v in data["log_prior_shift"]),  # type: ignore[arg-type]
            decision_weights=tuple(float(v) for v in data["decision_weights"]),  # type: ignore[arg-type]
            fitted_on=dict(data.get("fitted_on") or {}),
        )


def prior_shift(train_prior: ArrayLike, production_prior: ArrayLike) -> tuple[float, float, float]:
    """log π_prod − log π_train per class: Bayes' correction for a change of class priors."""
    shift = np.log(normalise(production_prior)) - np.log(normalise(train_prior))
    return tuple(float(v) for v in shift)  # type: ignore[return-value]


def negative_log_likelihood(truth: ArrayLike, proba: ArrayLike) -> float:
    y = np.asarray(truth, dtype=int)
    return float(-_log(np.asarray(proba)[np.arange(len(y)), y]).mean())


def fit_temperature(truth: ArrayLike, proba: ArrayLike, shift: Sequence[float] = (0.0, 0.0, 0.0)) -> float:
    """T > 0 minimising the log-loss of softmax(log p / T + shift) on these rows (bounded 0.05-20)."""
    y, logp, b = np.asarray(truth, dtype=int), _log(proba), np.asarray(shift, dtype=np.float64)
    if len(y) == 0:
        raise ReviewpipeError("no rows to fit a temperature on; the calibration split is empty.")

    def loss(log_t: float) -> float:
        return negative_log_likelihood(y, softmax(logp / np.exp(log_t) + b))

    result = minimize_scalar(
        loss, bounds=(np.log(0.05), np.log(20.0)), method="bounded", options={"xatol": 1e-5}
    )
    return float(np.exp(result.x))


def macro_f1_of(truth: np.ndarray, predicted: np.ndarray) -> float:
    """Macro-F1 over the three classes (a class absent from truth and predictions scores 0, as sklearn)."""
    f1 = []
    for c in range(N_CLASSES):
        tp = np.sum((predicted == c) & (truth == c))
        denom = np.sum(predicted == c) + np.sum(truth == c)
        f1.append(2 * tp / denom if denom else 0.0)
    return float(np.mean(f1))


def fit_decision_weights(
    truth: ArrayLike,
    calibrated: ArrayLike,
    grid: Sequence[float] = tuple(np.round(np.arange(-3.0, 3.01, 0.1), 2)),
) -> tuple[float, float, float]:
    """Per-class weights w = exp(b) (positive class fixed at 1) maximising macro-F1 of argmax(w · p)
    on these rows, over a grid of log-weights; among equal scores the one closest to no adjustment."""
    y, logp, b = np.asarray(truth, dtype=int), _log(calibrated), np.asarray(grid, dtype=np.float64)
    f1 = np.zeros((len(b), len(b)))
    truth_counts = [(y == c).sum() for c in range(N_CLASSES)]
    for i, b0 in enumerate(b):  # every b1 at once: scores (G, n, 3) -> predictions (G, n)
        shifted = logp[None] + np.stack([np.full_like(b, b0), b, np.zeros_like(b)], axis=1)[:, None, :]
        predicted = shifted.argmax(axis=-1)
        for c in range(N_CLASSES):
            is_c = predicted == c
            tp, denom = (is_c & (y == c)).sum(axis=-1), is_c.sum(axis=-1) + truth_counts[c]
            f1[i] += np.divide(2 * tp, denom, out=np.zeros(tp.shape), where=denom > 0)
    f1 /= N_CLASSES
    size = np.abs(b)[:, None] + np.abs(b)[None, :]
    best = np.flatnonzero((f1 >= f1.max() - 1e-12).ravel())
    i, j = np.unravel_index(best[np.argmin(size.ravel()[best])], f1.shape)
    return (float(np.exp(b[i])), float(np.exp(b[j])), 1.0)


def fit_calibration(
    truth: ArrayLike,
    proba: ArrayLike,
    *,
    train_prior: ArrayLike,
    production_prior: ArrayLike,
    decision_rule: bool = True,
) -> Calibration:
    """Prior shift from the priors, temperature and (optionally) macro-F1 decision weights from
    these natural-mix rows."""
    shift = prior_shift(train_prior, production_prior)
    temperature = fit_temperature(truth, proba, shift)
    calibration = Calibration(temperature, shift)
    weights = (
        fit_decision_weights(truth, calibration.probabilities(proba)) if decision_rule else (1.0, 1.0, 1.0)
    )
    return Calibration(
        temperature,
        shift,
        weights,  # type: ignore[arg-type]
        fitted_on={
            "rows": int(len(np.asarray(truth))),
            "train_prior": normalise(train_prior).round(6).tolist(),
            "production_prior": normalise(production_prior).round(6).tolist(),
        },
    )


def cross_fitted_decisions(
    truth: ArrayLike,
    proba: ArrayLike,
    *,
    train_prior: ArrayLike,
    production_prior: ArrayLike,
    folds: int = 5,
    seed: int = 0,
    fold: np.ndarray | None = None,
) -> np.ndarray:
    """Class ids for every row from a calibration + decision rule fitted on the other folds: an
    honest validation score for a rule that was itself chosen on validation."""
    y, p = np.asarray(truth, dtype=int), np.asarray(proba, dtype=np.float64)
    fold = stratified_folds(y, folds, seed) if fold is None else np.asarray(fold)
    out = np.empty(len(y), dtype=int)
    for k in np.unique(fold):
        held = fold == k
        cal = fit_calibration(y[~held], p[~held], train_prior=train_prior, production_prior=production_prior)
        out[held] = cal.decide(cal.probabilities(p[held]))
    return out


def reliability_table(truth: ArrayLike, proba: ArrayLike, bins: int = 10) -> list[dict[str, float]]:
    """Top-label reliability: per equal-width confidence bin, the mean confidence, the accuracy and
    the number of rows (empty bins left out) — a reliability diagram's points."""
    y, p = np.asarray(truth, dtype=int), np.asarray(proba, dtype=np.float64)
    confidence, correct = p.max(axis=1), (p.argmax(axis=1) == y)
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, bins - 1)
    rows = []
    for b in range(bins):
        members = which == b
        if members.any():
            rows.append(
                {
                    "bin_low": float(edges[b]),
                    "bin_high": float(edges[b + 1]),
                    "confidence": float(confidence[members].mean()),
                    "accuracy": float(correct[members].mean()),
                    "rows": int(members.sum()),
                }
            )
    return rows


def expected_calibration_error(truth: ArrayLike, proba: ArrayLike, bins: int = 10) -> float:
    """Top-label ECE: Σ_bins (rows_b / n) · |accuracy_b − confidence_b| over equal-width bins."""
    table = reliability_table(truth, proba, bins)
    n = sum(r["rows"] for r in table)
    return float(sum(r["rows"] / n * abs(r["accuracy"] - r["confidence"]) for r in table))


def share_confident(proba: ArrayLike, threshold: float) -> float:
    """Share of rows whose top probability reaches `threshold` (the rest go to human review)."""
    return float((np.asarray(proba).max(axis=1) >= threshold).mean())


def class_prior(labels: ArrayLike) -> np.ndarray:
    """Class shares of label ids 0/1/2 (every class present)."""
    counts = np.bincount(np.asarray(labels, dtype=int), minlength=N_CLASSES)[:N_CLASSES]
    return normalise(counts.astype(np.float64))


def calibration_report(
    truth_fit: ArrayLike,
    proba_fit: ArrayLike,
    truth_report: ArrayLike,
    proba_report: ArrayLike,
    *,
    train_prior: ArrayLike,
    production_prior: ArrayLike,
    threshold: float,
    bins: int = 10,
    folds: int = 5,
    seed: int = 0,
) -> tuple[Calibration, dict[str, Any]]:
    """Fit one model's calibration and decision rule on natural-mix rows (`*_fit`, validation) and
    report on other natural-mix rows (`*_report`, test): ECE and the share of reviews at or above
    the review threshold, before and after; class ids of the calibrated argmax and of the decision
    rule on the report rows, and the rule's cross-fitted decisions on the fit rows (an honest
    validation score for choosing between candidates)."""
    y_fit, p_fit = np.asarray(truth_fit, dtype=int), np.asarray(proba_fit, dtype=np.float64)
    y_rep, p_rep = np.asarray(truth_report, dtype=int), np.asarray(proba_report, dtype=np.float64)
    cal = fit_calibration(y_fit, p_fit, train_prior=train_prior, production_prior=production_prior)
    calibrated = cal.probabilities(p_rep)
    report = {
        "calibration": cal.to_json(),
        "ece": {
            "validation": {
                "before": expected_calibration_error(y_fit, p_fit, bins),
                "after": expected_calibration_error(y_fit, cal.probabilities(p_fit), bins),
            },
            "test": {
                "before": expected_calibration_error(y_rep, p_rep, bins),
                "after": expected_calibration_error(y_rep, calibrated, bins),
            },
        },
        "review_threshold": threshold,
        "share_at_or_above_threshold": {
            "before": share_confident(p_rep, threshold),
            "after": share_confident(calibrated, threshold),
        },
        "decisions": {
            "test_calibrated": calibrated.argmax(axis=1),
            "test_rule": cal.decide(calibrated),
            "validation_rule_cross_fitted": cross_fitted_decisions(
                y_fit,
                p_fit,
                train_prior=train_prior,
                production_prior=production_prior,
                folds=folds,
                seed=seed,
            ),
        },
        "calibrated_test_proba": calibrated,
    }
    return cal, report
