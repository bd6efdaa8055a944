"""Test-set metrics equal scikit-learn's on known predictions; DVCLive gets the metrics and plot data."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from dvclive import Live
from sklearn.metrics import roc_auc_score

from reviewpipe.errors import ReviewpipeError
from reviewpipe.evaluation.metrics import classification_metrics, log_to_live

# 8 rows, class ids 0/1/2 (-1/0/1). Predicted (argmax): 0 0 1 2 | 1 1 | 2 0
TRUTH = np.array([0, 0, 0, 0, 1, 1, 2, 2])
PROBA = np.array(
    [
        [0.8, 0.1, 0.1],
        [0.6, 0.3, 0.1],
        [0.3, 0.5, 0.2],
        [0.2, 0.2, 0.6],
        [0.1, 0.7, 0.2],
        [0.2, 0.5, 0.3],
        [0.1, 0.2, 0.7],
        [0.5, 0.1, 0.4],
    ]
)


def test_metrics_match_hand_counts() -> None:
    m = classification_metrics(TRUTH, PROBA)
    assert m["accuracy"] == pytest.approx(5 / 8)
    assert m["confusion_matrix"] == [[2, 1, 1], [0, 2, 0], [1, 0, 1]]
    # negative: TP 2, FP 1, FN 2; neutral: TP 2, FP 1, FN 0; positive: TP 1, FP 1, FN 1
    assert m["per_class"]["negative"] == pytest.approx(
        {"precision": 2 / 3, "recall": 0.5, "f1": 4 / 7, "support": 4}
    )
    assert m["per_class"]["neutral"] == pytest.approx(
        {"precision": 2 / 3, "recall": 1.0, "f1": 0.8, "support": 2}
    )
    assert m["per_class"]["positive"] == pytest.approx(
        {"precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 2}
    )
    assert m["macro_f1"] == pytest.approx((4 / 7 + 0.8 + 0.5) / 3)
    aucs = [roc_auc_score(np.equal(TRUTH, i), PROBA[:, i]) for i in range(3)]
    assert m["roc_auc_ovr"]["positive"] == pytest.approx(aucs[2])
    assert m["roc_auc_ovr_macro"] == pytest.approx(np.mean(aucs))


def test_a_class_absent_from_the_test_set_has_no_auc_but_zero_support() -> None:
    m = classification_metrics(TRUTH[:6], PROBA[:6])
    assert set(m["roc_auc_ovr"]) == {"negative", "neutral"}
    assert m["per_class"]["positive"]["support"] == 0


def test_wrong_probability_shape_is_a_user_error() -> None:
    with pytest.raises(ReviewpipeError, match=r"shape \(8, 3\)"):
        classification_metrics(TRUTH, PROBA[:, :2])


def test_live_records_metrics_confusion_and_one_roc_per_class(tmp_path: Path) -> None:
    with Live(dir=str(tmp_path / "live"), save_dvc_exp=False, dvcyaml=False, report=None) as live:
        log_to_live(live, "baseline", TRUTH, PROBA, split="validation")
    metrics = json.loads((tmp_path / "live" / "metrics.json").read_text())
    assert metrics["baseline"]["validation"]["accuracy"] == pytest.approx(5 / 8)
    assert metrics["baseline"]["validation"]["neutral"]["recall"] == pytest.approx(1.0)
    sklearn_dir = tmp_path / "live" / "plots" / "sklearn"
    cells = json.loads((sklearn_dir / "confusion_matrix" / "baseline_validation.json").read_text())
    assert len(cells) == 8 and cells[7] == {"actual": "1", "predicted": "-1"}
    assert sorted(p.name for p in (sklearn_dir / "roc").iterdir()) == [
        "baseline_validation_negative.json",
        "baseline_validation_neutral.json",
        "baseline_validation_positive.json",
    ]
    roc = json.loads((sklearn_dir / "roc" / "baseline_validation_positive.json").read_text())["roc"]
    assert roc[0]["fpr"] == 0 and roc[-1]["tpr"] == 1
