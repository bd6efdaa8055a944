"""Calibration: prior correction is Bayes' rule, temperature scaling recovers a known temperature,
ECE and reliability bins add up, and rules chosen on rows never score those rows."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import f1_score

from reviewpipe.errors import ReviewpipeError
from reviewpipe.evaluation.calibration import (
    Calibration,
    cross_fitted_decisions,
    effective_prior,
    expected_calibration_error,
    fit_calibration,
    fit_decision_weights,
    fit_temperature,
    macro_f1_of,
    prior_shift,
    reliability_table,
    share_confident,
    softmax,
    stratified_folds,
)

PRODUCTION = np.array([0.10, 0.12, 0.78])


def gaussian_world(n: int, prior: np.ndarray, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Labels drawn from `prior`, x ~ N(mean_y, 1); returns labels, the exact posterior under a
    uniform prior (what a balanced-trained model learns) and the exact posterior under `prior`."""
    rng = np.random.default_rng(seed)
    y = rng.choice(3, size=n, p=prior)
    means = np.array([-1.5, 0.0, 1.5])
    x = rng.normal(means[y], 1.0)
    log_lik = -0.5 * (x[:, None] - means[None, :]) ** 2
    return y, softmax(log_lik), softmax(log_lik + np.log(prior))


def test_effective_prior_of_balanced_and_class_weighted_training_is_uniform() -> None:
    np.testing.assert_allclose(effective_prior([2133, 2133, 2133]), [1 / 3] * 3)
    counts = np.array([1896, 2258, 13948])  # natural train split, weighted n / (3 n_c)
    np.testing.assert_allclose(effective_prior(counts, counts.sum() / (3 * counts)), [1 / 3] * 3)
    np.testing.assert_allclose(effective_prior(counts), counts / counts.sum())
    with pytest.raises(ReviewpipeError, match="positive"):
        effective_prior([1, 0, 2])


def test_prior_correction_is_bayes_rule_for_a_change_of_priors() -> None:
    _, balanced, production = gaussian_world(500, PRODUCTION)
    corrected = Calibration(1.0, prior_shift([1 / 3] * 3, PRODUCTION)).probabilities(balanced)
    np.testing.assert_allclose(corrected, production, atol=1e-9)


def test_temperature_scaling_recovers_an_overconfident_models_temperature() -> None:
    rng = np.random.default_rng(1)
    logits = rng.normal(0, 1.5, size=(20_000, 3))
    y = np.array([rng.choice(3, p=p) for p in softmax(logits)])
    overconfident = softmax(2.0 * logits)
    assert fit_temperature(y, overconfident) == pytest.approx(2.0, rel=0.05)
    assert fit_temperature(y, softmax(logits)) == pytest.approx(1.0, rel=0.05)


def test_ece_and_reliability_bins_by_hand() -> None:
    truth = np.array([0, 0, 1, 2])
    proba = np.array([[0.95, 0.05, 0.0], [0.55, 0.45, 0.0], [0.6, 0.4, 0.0], [0.0, 0.15, 0.85]])
    table = reliability_table(truth, proba, bins=10)
    assert [(r["bin_low"], r["rows"]) for r in table] == [(0.5, 2), (0.8, 1), (0.9, 1)]
    assert table[0]["confidence"] == pytest.approx(0.575) and table[0]["accuracy"] == 0.5
    # (2/4)|0.5 - 0.575| + (1/4)|1 - 0.85| + (1/4)|1 - 0.95|
    assert expected_calibration_error(truth, proba, bins=10) == pytest.approx(0.0375 + 0.0375 + 0.0125)
    assert share_confident(proba, 0.90) == 0.25


def test_calibration_on_natural_rows_lowers_ece_of_a_balanced_overconfident_model() -> None:
    y, balanced, _ = gaussian_world(6000, PRODUCTION, seed=2)
    served = softmax(2.5 * np.log(balanced))  # balanced priors and overconfident, as a fine-tuned model
    fit_rows, test_rows = slice(0, 3000), slice(3000, None)
    cal = fit_calibration(y[fit_rows], served[fit_rows], train_prior=[1 / 3] * 3, production_prior=PRODUCTION)
    before = expected_calibration_error(y[test_rows], served[test_rows])
    after = expected_calibration_error(y[test_rows], cal.probabilities(served[test_rows]))
    assert cal.temperature == pytest.approx(2.5, rel=0.15)
    assert after < 0.03 < before
    assert cal.fitted_on["rows"] == 3000 and cal.fitted_on["production_prior"] == pytest.approx(
        PRODUCTION.tolist()
    )
    assert Calibration.from_json(cal.to_json()) == cal


def test_macro_f1_matches_sklearn_and_decision_weights_maximise_it_on_their_rows() -> None:
    rng = np.random.default_rng(3)
    y = rng.integers(0, 3, 400)
    pred = np.where(rng.random(400) < 0.6, y, rng.integers(0, 3, 400))
    assert macro_f1_of(y, pred) == pytest.approx(f1_score(y, pred, average="macro"))
    assert macro_f1_of(np.array([0, 0]), np.array([0, 0])) == pytest.approx(
        f1_score([0, 0], [0, 0], labels=[0, 1, 2], average="macro", zero_division=0)
    )

    truth, _, production = gaussian_world(3000, PRODUCTION, seed=4)
    weights = fit_decision_weights(truth, production)
    chosen = macro_f1_of(truth, (production * np.asarray(weights)).argmax(axis=1))
    assert chosen > macro_f1_of(truth, production.argmax(axis=1))  # minority classes get a boost
    assert weights[2] == 1.0 and weights[0] > 1.0 and weights[1] > 1.0
    for b0, b1 in [(0.0, 0.0), (0.5, 0.5), (1.0, 1.5), (2.0, 2.0)]:  # nothing on the grid does better
        assert macro_f1_of(truth, (np.log(production) + [b0, b1, 0.0]).argmax(axis=1)) <= chosen + 1e-12


def test_cross_fitted_decisions_never_use_the_labels_of_the_rows_they_decide() -> None:
    truth, balanced, _ = gaussian_world(900, PRODUCTION, seed=5)
    fold = stratified_folds(truth, 3, 7)
    kwargs = {"train_prior": [1 / 3] * 3, "production_prior": PRODUCTION, "fold": fold}
    decided = cross_fitted_decisions(truth, balanced, **kwargs)
    seeded = {"train_prior": [1 / 3] * 3, "production_prior": PRODUCTION, "folds": 3, "seed": 7}
    np.testing.assert_array_equal(decided, cross_fitted_decisions(truth, balanced, **seeded))  # same folds
    fold0 = fold == 0
    relabelled = truth.copy()
    relabelled[fold0] = (truth[fold0] + 1) % 3  # other labels on fold 0 only
    again = cross_fitted_decisions(relabelled, balanced, **kwargs)
    # Fold 0 is decided by a rule fitted on folds 1-2 only, whose labels did not change.
    np.testing.assert_array_equal(again[fold0], decided[fold0])
    assert (again[~fold0] != decided[~fold0]).any()  # other folds trained on the changed rows
