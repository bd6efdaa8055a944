"""fairlearn group metrics: by-group values, gaps (largest minus smallest), small groups, register's reading."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from fairlearn.metrics import MetricFrame
from sklearn.metrics import accuracy_score

from reviewpipe.errors import ReviewpipeError
from reviewpipe.evaluation.fairness import fairness_report, group_report

# Group A: 4 rows, 3 right; group B: 4 rows, 1 right; group C: 1 row, right (a tiny group).
TRUTH = np.array([0, 1, 2, 2, 0, 1, 2, 2, 1])
PRED = np.array([0, 1, 2, 0, 1, 1, 0, 0, 1])
GROUP = np.array(["A"] * 4 + ["B"] * 4 + ["C"])


def test_gaps_are_largest_minus_smallest_over_large_enough_groups() -> None:
    r = group_report(TRUTH, PRED, GROUP, min_group_rows=2)
    assert r["groups"]["A"]["accuracy"] == pytest.approx(0.75)
    assert r["groups"]["B"]["accuracy"] == pytest.approx(0.25)
    assert r["groups"]["C"] == pytest.approx(
        {
            "rows": 1,
            "accuracy": 1.0,
            "macro_f1": 1.0 / 3,
            "selection_rate_negative": 0.0,
            "selection_rate_neutral": 1.0,
            "selection_rate_positive": 0.0,
        }
    )
    assert r["groups_below_min_rows"] == ["C"]
    # Selection rates: A predicts 0,1,2,0 -> negative 0.5; B predicts 1,1,0,0 -> negative 0.5, neutral 0.5.
    assert r["gaps"]["accuracy"] == pytest.approx(0.5)
    # macro-F1: A (2/3 + 1 + 2/3) / 3 = 7/9; B (0 + 2/3 + 0) / 3 = 2/9
    assert r["gaps"]["macro_f1"] == pytest.approx(5 / 9)
    assert r["gaps"]["selection_rate_negative"] == pytest.approx(0.0)
    assert r["gaps"]["selection_rate_neutral"] == pytest.approx(0.25)
    assert r["gaps"]["selection_rate_positive"] == pytest.approx(0.25)
    assert r["largest_gap"] == {
        "metric": "macro_f1",
        "value": pytest.approx(5 / 9),
        "lowest_group": "B",
        "highest_group": "A",
    }
    assert r["overall"]["accuracy"] == pytest.approx(accuracy_score(TRUTH, PRED))


def test_with_every_group_counted_the_gap_is_fairlearns_difference() -> None:
    r = group_report(TRUTH, PRED, GROUP, min_group_rows=1)
    expected = MetricFrame(metrics=accuracy_score, y_true=TRUTH, y_pred=PRED, sensitive_features=GROUP)
    assert r["gaps"]["accuracy"] == pytest.approx(expected.difference(method="between_groups"))
    assert r["gaps"]["accuracy"] == pytest.approx(0.75)  # C (1.0) against B (0.25)


def test_missing_group_values_form_their_own_group_and_one_group_has_no_gap() -> None:
    r = group_report([0, 1], [0, 1], pd.Series(["A", None]), min_group_rows=1)
    assert set(r["groups"]) == {"A", "(missing)"}
    assert group_report([0, 1], [0, 0], ["A", "A"])["largest_gap"] is None


def test_report_picks_the_largest_gap_across_features() -> None:
    frame = pd.DataFrame({"y": TRUTH, "p": PRED, "category": GROUP, "band": ["x", "y"] * 4 + ["x"]})
    report = fairness_report(frame, "y", "p", ["category", "band"], min_group_rows=2)
    assert report["largest_gap"]["feature"] == "category"
    assert report["largest_gap"]["value"] == pytest.approx(5 / 9)
    assert report["band"]["largest_gap"]["value"] < 5 / 9


def test_missing_feature_column_is_a_user_error() -> None:
    with pytest.raises(ReviewpipeError, match="age_band"):
        fairness_report(pd.DataFrame({"y": [0], "p": [0]}), "y", "p", ["age_band"])
