"""The fairness gate's measurements on constructed data: group-vs-rest error-rate gaps with bootstrap
intervals, and the gate's verdict (reviewpipe.registry.fairness_check)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from reviewpipe.bias.posttraining import difference_in_positive_proportions_predicted
from reviewpipe.bias.pretraining import difference_in_positive_proportions
from reviewpipe.errors import ReviewpipeError
from reviewpipe.evaluation.gaps import GAP_KINDS, difference_interval, group_gaps
from reviewpipe.registry.gate import exceeds, fairness_check

SETTINGS = {"min_support": 30, "resamples": 1000, "confidence": 0.95, "seed": 7}


def skewed_groups(seed: int = 0) -> tuple[np.ndarray, pd.DataFrame]:
    """Three categories with very different base rates (class ids 0/1/2), 900 rows."""
    rng = np.random.default_rng(seed)
    sizes = {"Dresses": 400, "Jackets": 300, "Swim": 200}
    priors = {"Dresses": [0.1, 0.1, 0.8], "Jackets": [0.6, 0.3, 0.1], "Swim": [0.3, 0.4, 0.3]}
    truth, category = [], []
    for name, n in sizes.items():
        truth.append(rng.choice(3, size=n, p=priors[name]))
        category += [name] * n
    ages = rng.choice(["18-24", "25-34", "35-44"], size=900)
    return np.concatenate(truth), pd.DataFrame({"product_category": category, "age_band": ages})


def test_a_perfect_classifier_on_groups_with_different_base_rates_passes() -> None:
    truth, groups = skewed_groups()
    gaps, excluded = group_gaps(truth, truth, groups, GAP_KINDS, **SETTINGS)
    assert gaps and all(g.gap == g.low == g.high == 0.0 for g in gaps)
    # what the old gate measured: per-category selection rates differ by base rate alone
    positive_share = pd.Series(truth == 2).groupby(groups["product_category"]).mean()
    assert positive_share.max() - positive_share.min() > 0.4
    check = fairness_check(gaps, excluded, max_gap=0.05, confidence=0.95)
    assert check.passed and "no fairness gap exceeds" in check.detail


def test_a_classifier_that_fails_one_large_group_fails() -> None:
    truth, groups = skewed_groups()
    rng = np.random.default_rng(3)
    predicted = truth.copy()
    jackets = (groups["product_category"] == "Jackets").to_numpy()
    wrong = jackets & (rng.random(len(truth)) < 0.5)  # half of the Jackets reviews misread
    predicted[wrong] = (truth[wrong] + 1) % 3
    gaps, excluded = group_gaps(truth, predicted, groups, GAP_KINDS, **SETTINGS)
    check = fairness_check(gaps, excluded, max_gap=0.10, confidence=0.95)
    assert not check.passed
    accuracy = next(g for g in gaps if g.group == "Jackets" and g.measure == "accuracy")
    assert accuracy.gap == pytest.approx(1.0 - predicted[jackets].__eq__(truth[jackets]).mean())
    assert accuracy.low > 0.10 and accuracy.low <= accuracy.gap <= accuracy.high
    assert (accuracy.group_rows, accuracy.rest_rows) == (300, 600)
    flagged = {(g.feature, g.group) for g in gaps if exceeds(g, 0.10)}
    assert ("product_category", "Jackets") in flagged
    assert not any(feature == "age_band" for feature, _ in flagged)  # errors are spread evenly over ages
    assert "Jackets" in check.detail and "exceed register.fairness.max_gap 0.1" in check.detail


def test_small_groups_are_listed_and_excluded() -> None:
    truth, groups = skewed_groups()
    groups.loc[:9, "age_band"] = "80+"  # 10 rows
    gaps, excluded = group_gaps(truth, truth, groups, ["accuracy", "recall"], **SETTINGS)
    assert ("age_band", "80+", "accuracy", 10) in {
        (e.feature, e.group, e.measure, e.group_rows) for e in excluded
    }
    assert not any(g.group == "80+" for g in gaps)
    # recall needs min_support rows of the class in the group: Dresses has ~40 negatives, >= 30
    recall_groups = {(g.group, g.measure) for g in gaps if g.feature == "product_category"}
    assert ("Dresses", "recall_positive") in recall_groups


def test_dppl_vs_dpl_is_clarifys_dppl_minus_dpl() -> None:
    truth, groups = skewed_groups()
    rng = np.random.default_rng(5)
    predicted = np.where(rng.random(len(truth)) < 0.3, 2, truth)  # over-predicts positive
    gaps, _ = group_gaps(truth, predicted, groups[["product_category"]], ["dppl_vs_dpl"], **SETTINGS)
    for gap in gaps:
        cls = {"negative": 0, "neutral": 1, "positive": 2}[gap.measure.removeprefix("dppl_vs_dpl_")]
        facet = (groups["product_category"] == gap.group).to_numpy()
        dppl = difference_in_positive_proportions_predicted(predicted == cls, facet)
        dpl = difference_in_positive_proportions(truth == cls, facet)
        assert gap.gap == pytest.approx(dppl - dpl)


def test_intervals_are_seeded_and_cover_the_difference() -> None:
    rng = np.random.default_rng(0)
    rest, group = (rng.random(500) < 0.8).astype(float), (rng.random(120) < 0.6).astype(float)
    first = difference_interval(rest, group, 1000, 0.95, seed=11)
    assert first == difference_interval(rest, group, 1000, 0.95, seed=11)
    gap, low, high = first
    assert gap == pytest.approx(rest.mean() - group.mean()) and low < gap < high
    se = np.sqrt(rest.var() / 500 + group.var() / 120)  # the normal-approximation width, roughly
    assert high - low == pytest.approx(2 * 1.96 * se, rel=0.2)


def test_unknown_gap_kind_names_the_setting() -> None:
    truth, groups = skewed_groups()
    with pytest.raises(ReviewpipeError, match="register.fairness.gaps has unknown kinds"):
        group_gaps(truth, truth, groups, ["selection_rate"], **SETTINGS)
