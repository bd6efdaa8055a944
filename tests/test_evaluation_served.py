"""Evaluate on both distributions: natural-mix sets, the ensemble from its scored members
(out-of-fold where its stacker trained), bootstrap intervals, calibration and reliability plots."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from omegaconf import OmegaConf

from reviewpipe.evaluation.calibration import Calibration, expected_calibration_error
from reviewpipe.evaluation.metrics import bootstrap_intervals
from reviewpipe.models.baseline import save_model, train_baseline
from reviewpipe.models.predictors import load_predictor
from tests.conftest import REPO_ROOT, make_prepared_frame
from tests.helpers.params import WORD_ONLY_BASELINE, baseline_settings, conf_section

PROBA = ["baseline_p_negative", "baseline_p_neutral", "baseline_p_positive"]


def natural_mix(prepared: Path) -> pd.DataFrame:
    """unbalanced.parquet as prepare writes it: each split's balanced rows plus the positives that
    balancing removed (here 4x as many as the balanced positives). Review ids are made unique across
    splits, as prepare's are (the fixture numbers each split from 0)."""
    parts = []
    for i, name in enumerate(("train", "validation", "test")):
        balanced = pd.read_parquet(prepared / f"{name}.parquet")
        balanced["review_id"] = balanced["review_id"] + 10_000 * i
        balanced.to_parquet(prepared / f"{name}.parquet", index=False)
        extra = make_prepared_frame(12 * len(balanced), seed=20 + i, signal=0.2).query("sentiment == 1")
        extra = extra.head(4 * len(balanced) // 3).assign(split_type=name)
        extra["review_id"] = extra["review_id"] + 100_000 * (i + 1)
        parts += [balanced, extra]
    return pd.concat(parts, ignore_index=True)


def params(models: list[str]) -> dict:
    bias = OmegaConf.to_container(conf_section("bias"))
    evaluate = OmegaConf.to_container(conf_section("evaluate"))
    evaluate.update(
        models=models,
        model_paths={"baseline": "models/baseline/model.joblib", "ensemble": "models/ensemble"},
        post_training_bias=False,
    )
    evaluate["bootstrap"]["resamples"] = 200
    evaluate["calibration"]["review_threshold"] = 0.9
    evaluate["fairness"]["min_group_rows"] = 5
    ensemble = {
        "members": ["baseline"],
        "model_paths": {"baseline": "models/baseline/model.joblib"},
        "C": 1.0,
        "folds": 3,
        "seed": 1,
        "batch_size": 64,
        "out_dir": "models/ensemble",
        "metrics_path": "metrics/ensemble.json",
    }
    return {
        "prepare": {"out_dir": "data/prepared", "protocol": "course"},
        "bias": bias,
        "evaluate": evaluate,
        "ensemble": ensemble,
    }


def test_both_distributions_with_intervals_calibration_and_the_ensemble(
    prepared_splits: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from reviewpipe.stages import ensemble, evaluate

    monkeypatch.chdir(prepared_splits)
    natural_mix(Path("data/prepared")).to_parquet("data/prepared/unbalanced.parquet", index=False)
    cfg = baseline_settings(*WORD_ONLY_BASELINE)
    save_model(
        train_baseline(pd.read_parquet("data/prepared/train.parquet"), cfg), "models/baseline/model.joblib"
    )
    ensemble.main(OmegaConf.create(params(["baseline"])))
    evaluate.main(OmegaConf.create(params(["baseline", "ensemble"])))

    table = json.loads(Path("reports/evaluate/metrics.json").read_text())
    rows = {name: spec["rows"] for name, spec in table["sets"].items()}
    assert rows == {"validation": 60, "test": 90, "validation_natural": 140, "test_natural": 210}
    assert table["sets"]["test_natural"]["mix"] == "natural"
    unbalanced = pd.read_parquet("data/prepared/unbalanced.parquet")
    test_natural = unbalanced[unbalanced["split_type"] == "test"]
    baseline = load_predictor("baseline", "models/baseline/model.joblib")
    proba = baseline.predict_proba(test_natural["review_body"].tolist())
    row = table["models"]["baseline"]["test_natural"]
    assert row["accuracy"] == pytest.approx((proba.argmax(1) == test_natural["label_id"]).mean())
    expected = bootstrap_intervals(test_natural["label_id"], proba.argmax(1), n_resamples=200, seed=42)
    for metric in ("accuracy", "macro_f1"):
        assert row["intervals"][metric] == pytest.approx(expected[metric])
    assert row["intervals"]["accuracy"]["low"] < row["accuracy"] < row["intervals"]["accuracy"]["high"]

    # The ensemble: out-of-fold on the rows its stacker was fitted on (natural validation), which
    # include the balanced validation rows; the final stacker on test.
    predictions = pd.read_parquet("reports/evaluate/predictions.parquet")
    oof = pd.read_parquet("models/ensemble/validation_oof.parquet").set_index("review_id")
    on_validation = predictions[predictions["set"] == "validation_natural"].set_index("review_id")
    for c in ("negative", "neutral", "positive"):
        np.testing.assert_allclose(
            on_validation[f"ensemble_p_{c}"], oof.loc[on_validation.index, f"ensemble_p_{c}"]
        )
    on_test = predictions[predictions["set"] == "test"]
    expected_test = load_predictor("ensemble", "models/ensemble").predict_proba(
        on_test["review_id"]
        .map(pd.read_parquet("data/prepared/test.parquet").set_index("review_id")["review_body"])
        .tolist()
    )
    np.testing.assert_allclose(
        on_test[["ensemble_p_negative", "ensemble_p_neutral", "ensemble_p_positive"]],
        expected_test,
        atol=1e-9,
    )

    # Calibration fitted on natural validation, reported on natural test.
    report = json.loads(Path("reports/evaluate/calibration.json").read_text())["models"]["baseline"]
    cal = Calibration.from_json(report["calibration"])
    np.testing.assert_allclose(
        np.exp(cal.log_prior_shift) / np.exp(cal.log_prior_shift).sum(),
        [100 / 700, 100 / 700, 500 / 700],
        rtol=1e-6,
    )  # the natural train mix (100 / 100 / 100 + 400 positives) over the uniform training prior
    calibrated = cal.probabilities(proba)
    assert report["ece"]["test"]["before"] == pytest.approx(
        expected_calibration_error(test_natural["label_id"], proba)
    )
    assert report["ece"]["test"]["after"] == pytest.approx(
        expected_calibration_error(test_natural["label_id"], calibrated)
    )
    assert report["share_at_or_above_threshold"]["after"] == pytest.approx((calibrated.max(1) >= 0.9).mean())
    served = report["served"]
    assert set(served) == {
        "test_natural_argmax",
        "test_natural_calibrated",
        "test_natural_rule",
        "validation_natural_rule_cross_fitted",
    }
    assert served["test_natural_calibrated"]["accuracy"]["value"] == pytest.approx(
        (calibrated.argmax(1) == test_natural["label_id"]).mean()
    )

    # dvc plots: a reliability diagram per model and variant.
    for name in ("baseline_test_natural", "baseline_test_natural_calibrated", "ensemble_test_natural"):
        points = pd.read_csv(f"reports/evaluate/live/plots/reliability/{name}.csv")
        assert points["rows"].sum() == 210 and points["confidence"].between(0, 1).all()
    stage = yaml.safe_load((REPO_ROOT / "dvc.yaml").read_text())["stages"]["evaluate"]
    Path("dvc.yaml").write_text(
        yaml.safe_dump({"stages": {"evaluate": {"cmd": "true", "plots": stage["plots"]}}})
    )
    shutil.copy(REPO_ROOT / "params.yaml", "params.yaml")
    dvc = [sys.executable, "-m", "dvc"]
    subprocess.run([*dvc, "init", "--no-scm", "-q"], check=True)
    shown = subprocess.run([*dvc, "plots", "show", "--json"], check=True, capture_output=True, text=True)
    rendered = json.loads(shown.stdout)
    assert not rendered.get("errors")
    plot = rendered["data"]["reports/evaluate/live/plots/reliability/baseline_test_natural.csv"][0]["content"]
    assert plot["encoding"]["x"]["field"] == "confidence" and plot["encoding"]["y"]["field"] == "accuracy"


def test_each_review_is_scored_once(prepared_splits: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The natural-mix sets contain the balanced ones (here, as under the natural protocol, the
    very same rows): each review is scored once and every set gets its rows' probabilities."""
    from reviewpipe.stages import evaluate

    monkeypatch.chdir(prepared_splits)
    cfg = baseline_settings(*WORD_ONLY_BASELINE)
    save_model(
        train_baseline(pd.read_parquet("data/prepared/train.parquet"), cfg), "models/baseline/model.joblib"
    )
    from reviewpipe.models.predictors import BaselinePredictor

    calls: list[int] = []
    original = BaselinePredictor.predict_proba

    def counted(self: BaselinePredictor, texts: list[str], categories: list[str] | None = None) -> np.ndarray:
        calls.append(len(texts))
        return original(self, texts, categories)

    monkeypatch.setattr(BaselinePredictor, "predict_proba", counted)
    evaluate.main(OmegaConf.create(params(["baseline"])))
    assert sum(calls) == 60 + 90  # validation and test once each, not again as natural-mix sets
    table = json.loads(Path("reports/evaluate/metrics.json").read_text())["models"]["baseline"]
    assert table["test_natural"] == table["test"] and table["validation_natural"] == table["validation"]
