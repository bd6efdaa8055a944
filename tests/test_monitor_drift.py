"""Drift metrics against hand computations and scipy."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from reviewpipe.monitoring import drift
from reviewpipe.monitoring.statistics import (
    bucket_counts,
    bucket_edges,
    numeric_statistics,
    predicted_labels,
    quantile_sketch,
    text_lengths,
)


def test_psi_matches_hand_computation() -> None:
    expected = np.array([50, 30, 20])  # shares 0.5 0.3 0.2
    actual = np.array([30, 30, 40])  # shares 0.3 0.3 0.4
    by_hand = (0.3 - 0.5) * math.log(0.3 / 0.5) + 0.0 + (0.4 - 0.2) * math.log(0.4 / 0.2)
    assert drift.population_stability_index(expected, actual) == pytest.approx(by_hand, rel=1e-12)
    assert by_hand == pytest.approx(0.2408, abs=1e-4)
    assert drift.population_stability_index(expected, expected * 3) == pytest.approx(0.0, abs=1e-15)


def test_psi_floors_empty_buckets() -> None:
    # A bucket the baseline never saw: its share is floored at epsilon instead of dividing by zero.
    value = drift.population_stability_index(np.array([10, 10, 0]), np.array([5, 5, 10]), epsilon=1e-4)
    by_hand = 2 * (0.25 - 0.5) * math.log(0.25 / 0.5) + (0.5 - 1e-4) * math.log(0.5 / 1e-4)
    assert value == pytest.approx(by_hand, rel=1e-12)


def test_ks_statistic_equals_scipy() -> None:
    rng = np.random.default_rng(1)
    a = rng.normal(0, 1, 700)
    b = rng.normal(0.3, 1.2, 1300)
    assert drift.ks_statistic(a, b) == pytest.approx(stats.ks_2samp(a, b).statistic, abs=1e-12)
    ints_a, ints_b = rng.poisson(20, 500), rng.poisson(22, 800)  # ties, like word counts
    assert drift.ks_statistic(ints_a, ints_b) == pytest.approx(
        stats.ks_2samp(ints_a, ints_b).statistic, abs=1e-12
    )


def test_ks_against_the_quantile_sketch_approximates_the_full_sample() -> None:
    rng = np.random.default_rng(2)
    baseline = rng.poisson(60, 20_000).astype(float)
    batch = rng.poisson(63, 900).astype(float)
    exact = stats.ks_2samp(batch, baseline).statistic
    sketch = quantile_sketch(baseline, 1001)
    assert len(sketch) == 1001 and sketch[0] == baseline.min() and sketch[-1] == baseline.max()
    assert drift.ks_statistic(batch, np.array(sketch)) == pytest.approx(exact, abs=2e-3)


def test_ks_p_value_matches_scipy_asymptotic() -> None:
    rng = np.random.default_rng(3)
    a, b = rng.normal(0, 1, 400), rng.normal(0.2, 1, 600)
    reference = stats.ks_2samp(a, b, method="asymp")
    ours = drift.ks_p_value(drift.ks_statistic(a, b), len(a), len(b))
    assert ours == pytest.approx(reference.pvalue, rel=1e-9)
    # The critical value is where the p-value crosses 1 - confidence.
    critical = drift.ks_critical_value(400, 600, 0.99)
    assert drift.ks_p_value(critical, 400, 600) == pytest.approx(0.01, rel=1e-3)


def test_chi_square_homogeneity_equals_scipy_and_hand() -> None:
    baseline, batch = np.array([40, 35, 25, 0]), np.array([10, 20, 30, 0])
    ours = drift.chi_square_homogeneity(baseline, batch)
    statistic, p_value, dof, _ = stats.chi2_contingency(
        np.vstack([baseline[:3], batch[:3]]), correction=False
    )
    assert (ours.statistic, ours.dof) == (pytest.approx(statistic), dof)
    assert ours.p_value == pytest.approx(p_value)
    # By hand for a 2x2 table: N (ad - bc)^2 / (row and column totals).
    two = drift.chi_square_homogeneity(np.array([30, 10]), np.array([20, 20]))
    assert two.statistic == pytest.approx(80 * (30 * 20 - 10 * 20) ** 2 / (40 * 40 * 50 * 30))
    assert two.dof == 1


def test_chi_square_single_category_is_no_evidence() -> None:
    result = drift.chi_square_homogeneity(np.array([10]), np.array([4]))
    assert (result.statistic, result.p_value) == (0.0, 1.0)


def test_buckets_split_at_deciles_and_count_open_ends() -> None:
    values = np.arange(100, dtype=float)  # 0..99
    edges = bucket_edges(values, 10)
    assert edges == [9.0, 19.0, 29.0, 39.0, 49.0, 59.0, 69.0, 79.0, 89.0]
    assert bucket_counts(values, edges) == [9, 10, 10, 10, 10, 10, 10, 10, 10, 11]
    assert bucket_counts(np.array([-5.0, 500.0]), edges) == [1, 0, 0, 0, 0, 0, 0, 0, 0, 1]
    assert bucket_edges(np.full(50, 3.0), 10) == [3.0]  # ties merge


def test_compare_numeric_uses_baseline_buckets() -> None:
    rng = np.random.default_rng(4)
    baseline = rng.poisson(40, 5000).astype(float)
    stats_ = numeric_statistics("word_count", pd.Series(baseline))["numerical_statistics"]
    batch = rng.poisson(40, 1000).astype(float)
    comparison = drift.compare_numeric("word_count", stats_, batch)
    edges = [b["lower_bound"] for b in stats_["distribution"]["kll"]["buckets"][1:]]
    assert comparison.batch_counts == bucket_counts(batch, edges)
    assert comparison.metrics["psi"] == pytest.approx(
        drift.population_stability_index(
            np.array(comparison.baseline_counts), np.array(comparison.batch_counts)
        )
    )
    assert comparison.metrics["ks"] == pytest.approx(stats.ks_2samp(batch, baseline).statistic, abs=2e-3)


def test_text_lengths_and_predicted_labels() -> None:
    lengths = text_lengths(pd.Series(["Love it", "  too   small ", None]))
    assert lengths["review_length"].tolist()[:2] == [7, 14]
    assert lengths["word_count"].tolist()[:2] == [2, 2]
    assert lengths.iloc[2].isna().all()
    labels, confidence = predicted_labels(np.array([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8], [np.nan] * 3]))
    assert labels.tolist()[:2] == ["-1", "1"] and labels.isna().tolist() == [False, False, True]
    assert confidence.tolist()[:2] == [0.7, 0.8]
