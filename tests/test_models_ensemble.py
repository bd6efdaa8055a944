"""The stacked ensemble: it learns whom to trust, is cross-fitted honestly, and the stage writes a
stacker that the `ensemble` predictor applies to its members."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from omegaconf import OmegaConf

from reviewpipe.errors import ReviewpipeError
from reviewpipe.models.baseline import save_model, train_baseline
from reviewpipe.models.ensemble import (
    Stacker,
    cross_fit,
    fit_stacker,
    softmax,
    stack_features,
    stratified_folds,
)
from reviewpipe.models.predictors import load_predictor
from tests.conftest import make_prepared_frame
from tests.helpers.params import WORD_ONLY_BASELINE, baseline_settings


def members_on(truth: np.ndarray, seed: int = 0) -> dict[str, np.ndarray]:
    """`good` knows the class (noisy logits), `noise` knows nothing."""
    rng = np.random.default_rng(seed)
    good = softmax(3.0 * np.eye(3)[truth] + rng.normal(0, 1.5, (len(truth), 3)))
    noise = softmax(rng.normal(0, 1.5, (len(truth), 3)))
    return {"good": good, "noise": noise}


def test_the_stacker_trusts_the_informative_member() -> None:
    truth = np.random.default_rng(1).choice(3, size=1500, p=[0.1, 0.12, 0.78])
    proba = members_on(truth)
    stacker = fit_stacker(proba, truth, ["good", "noise"], C=1.0)
    weight = np.abs(stacker.coef)
    assert weight[:, :3].sum() > 5 * weight[:, 3:].sum()
    oof = cross_fit(proba, truth, ["good", "noise"], folds=5, seed=0)
    # class-weighted: recall of the rare classes as good as the good member's own
    for c in (0, 1):
        rows = truth == c
        assert (oof[rows].argmax(1) == c).mean() >= (proba["good"][rows].argmax(1) == c).mean() - 0.05
    again = Stacker.from_json(json.loads(json.dumps(stacker.to_json())))
    np.testing.assert_allclose(again.predict_proba(proba), stacker.predict_proba(proba), atol=1e-6)


def test_out_of_fold_rows_are_scored_by_stackers_that_never_saw_their_labels() -> None:
    truth = np.random.default_rng(2).integers(0, 3, 600)
    proba = members_on(truth, seed=3)
    fold = stratified_folds(truth, 4, 0)
    oof = cross_fit(proba, truth, ["good", "noise"], fold=fold)
    relabelled = truth.copy()
    relabelled[fold == 2] = (truth[fold == 2] + 1) % 3
    again = cross_fit(proba, relabelled, ["good", "noise"], fold=fold)
    np.testing.assert_allclose(again[fold == 2], oof[fold == 2])
    assert not np.allclose(again[fold != 2], oof[fold != 2])


def test_members_must_all_be_there_with_three_classes() -> None:
    with pytest.raises(ReviewpipeError, match=r"\['bert'\]"):
        stack_features({"baseline": np.full((2, 3), 1 / 3)}, ["baseline", "bert"])
    with pytest.raises(ReviewpipeError, match="every class"):
        fit_stacker({"a": np.full((4, 3), 1 / 3)}, np.array([0, 1, 0, 1]), ["a"])


def test_stage_fits_on_natural_validation_rows_and_the_predictor_applies_the_stacker(
    prepared_splits: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from reviewpipe.stages.ensemble import main

    monkeypatch.chdir(prepared_splits)
    cfg = baseline_settings(*WORD_ONLY_BASELINE)
    save_model(
        train_baseline(make_prepared_frame(300, seed=5, signal=0.3), cfg), "models/baseline/model.joblib"
    )
    # Natural-mix validation rows: the balanced validation split plus 120 more positives.
    validation = pd.read_parquet("data/prepared/validation.parquet")
    extra = make_prepared_frame(360, seed=9).query("sentiment == 1").assign(split_type="validation")
    extra["review_id"] = extra["review_id"] + 10_000
    natural = pd.concat([validation, extra], ignore_index=True)
    pd.concat([natural, pd.read_parquet("data/prepared/test.parquet")]).to_parquet(
        "data/prepared/unbalanced.parquet", index=False
    )
    params = {
        "prepare": {"out_dir": "data/prepared"},
        "ensemble": {
            "members": ["baseline"],
            "model_paths": {"baseline": "models/baseline/model.joblib"},
            "C": 1.0,
            "folds": 3,
            "seed": 1,
            "batch_size": 64,
            "out_dir": "models/ensemble",
            "metrics_path": "metrics/ensemble.json",
        },
    }
    main(OmegaConf.create(params))

    spec = json.loads(Path("models/ensemble/stacker.json").read_text())
    assert spec["member_paths"] == {"baseline": "models/baseline/model.joblib"}
    assert spec["fitted_on"]["rows"] == len(natural) == 180
    metrics = json.loads(Path("metrics/ensemble.json").read_text())
    assert metrics["rows"] == {"natural": 180, "balanced": 60}
    oof = pd.read_parquet("models/ensemble/validation_oof.parquet")
    assert sorted(oof["review_id"]) == sorted(natural["review_id"])
    rows = natural.set_index("review_id").loc[oof["review_id"]]
    baseline = load_predictor("baseline", "models/baseline/model.joblib").predict_proba(
        rows["review_body"].tolist()
    )
    np.testing.assert_allclose(
        oof[["baseline_p_negative", "baseline_p_neutral", "baseline_p_positive"]], baseline
    )
    oof_acc = (
        oof[["ensemble_p_negative", "ensemble_p_neutral", "ensemble_p_positive"]].to_numpy().argmax(1)
        == oof["label_id"]
    ).mean()
    assert metrics["models"]["ensemble"]["natural"]["accuracy"] == pytest.approx(oof_acc)

    ensemble = load_predictor("ensemble", "models/ensemble")
    test = pd.read_parquet("data/prepared/test.parquet")
    texts = test["review_body"].tolist()
    member = load_predictor("baseline", "models/baseline/model.joblib").predict_proba(texts)
    expected = Stacker.from_json(spec["stacker"]).predict_proba({"baseline": member})
    np.testing.assert_allclose(ensemble.predict_proba(texts), expected, atol=1e-12)
    np.testing.assert_allclose(ensemble.combine({"baseline": member}), expected, atol=1e-12)
