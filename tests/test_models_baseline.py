"""TF-IDF baseline: learns sentiment vocabulary, saves one loadable file, the stage writes its outputs."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import accuracy_score

from reviewpipe.errors import ReviewpipeError
from reviewpipe.models.baseline import build_pipeline, load_model, predict_proba, save_model, train_baseline
from reviewpipe.models.predictors import load_predictor, predict_labels
from tests.conftest import make_prepared_frame
from tests.helpers.params import TINY_BASELINE, baseline_settings, real_params

CFG = baseline_settings(*TINY_BASELINE, "classifier.max_iter=500")


def test_build_pipeline_follows_config() -> None:
    pipe = build_pipeline(
        baseline_settings("char.enabled=false", "classifier.C=0.25"), {0: 1.0, 1: 2.0, 2: 1.0}
    )
    union = pipe.named_steps["features"]
    assert [name for name, _ in union.transformer_list] == ["word"]
    assert union.transformer_list[0][1].ngram_range == (1, 2)
    assert pipe.named_steps["classifier"].C == 0.25
    assert pipe.named_steps["classifier"].class_weight == {0: 1.0, 1: 2.0, 2: 1.0}


def test_baseline_beats_majority_class_and_round_trips(tmp_path: Path) -> None:
    train, test = make_prepared_frame(300, seed=1), make_prepared_frame(120, seed=2)
    model = train_baseline(train, CFG)
    proba = predict_proba(model, test["review_body"])
    assert proba.shape == (120, 3)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-6)
    accuracy = accuracy_score(test["label_id"], proba.argmax(axis=1))
    majority = test["label_id"].value_counts(normalize=True).max()
    assert accuracy > majority + 0.3, (accuracy, majority)

    path = tmp_path / "models" / "baseline" / "model.joblib"
    save_model(model, str(path))
    assert sorted(os.listdir(path.parent)) == ["model.joblib"]  # one file, no temporary left behind
    np.testing.assert_allclose(predict_proba(load_model(str(path)), test["review_body"]), proba)
    predictor = load_predictor("baseline", path)
    np.testing.assert_allclose(predictor.predict_proba(test["review_body"].tolist()), proba)
    assert set(predict_labels(predictor, ["superb love gorgeous", "awful cheap returned"])) == {1, -1}


def test_classes_missing_from_training_get_zero_probability() -> None:
    train = make_prepared_frame(60, seed=3)
    train = train[train["sentiment"] != 0]
    proba = predict_proba(train_baseline(train, CFG), ["okay fine", None])
    assert proba.shape == (2, 3)
    assert (proba[:, 1] == 0).all()


def test_single_class_training_data_is_a_user_error() -> None:
    train = make_prepared_frame(30, seed=4)
    with pytest.raises(ReviewpipeError, match="fewer than two classes"):
        train_baseline(train[train["sentiment"] == 1], CFG)


def test_stage_writes_model_and_validation_metrics(
    prepared_splits: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from reviewpipe.stages.baseline import main

    monkeypatch.chdir(prepared_splits)
    main(real_params(*(f"baseline.{o}" for o in TINY_BASELINE), "baseline.classifier.class_weight=prepared"))
    metrics = json.loads(Path("metrics/baseline.json").read_text())
    assert metrics["validation"]["rows"] == 60
    assert metrics["validation"]["accuracy"] > 0.8
    assert load_model("models/baseline/model.joblib").named_steps["classifier"].class_weight == {
        0: 1.0,
        1: 1.0,
        2: 1.0,
    }


def test_stage_rejects_unknown_class_weight(prepared_splits: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from reviewpipe.stages.baseline import main

    monkeypatch.chdir(prepared_splits)
    with pytest.raises(
        ReviewpipeError, match=r"baseline.classifier.class_weight: Input should be 'prepared'"
    ):
        main(real_params("baseline.classifier.class_weight=heavy"))


def test_missing_split_says_run_prepare(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from reviewpipe.stages.baseline import main

    monkeypatch.chdir(tmp_path)
    with pytest.raises(ReviewpipeError, match="stage prepare"):
        main(real_params())


def test_stage_outputs_are_byte_identical_across_processes(prepared_splits: Path) -> None:
    """Two runs (two processes: memory addresses differ) write the same model and metrics bytes,
    so `dvc repro -f` leaves dvc.lock as it was."""
    import subprocess
    import sys

    from tests.conftest import REPO_ROOT

    outputs = []
    for _ in range(2):
        subprocess.run(
            [
                sys.executable,
                "-m",
                "reviewpipe.cli",
                "stage",
                "baseline",
                "--params",
                str(REPO_ROOT / "params.yaml"),
            ],
            cwd=prepared_splits,
            check=True,
            capture_output=True,
            env={**os.environ, "PYTHONPATH": str(REPO_ROOT / "src")},
        )
        outputs.append(
            [
                (prepared_splits / p).read_bytes()
                for p in ("models/baseline/model.joblib", "metrics/baseline.json")
            ]
        )
    assert outputs[0] == outputs[1]
    assert "train_seconds" not in json.loads(outputs[0][1])  # the clock stays out of outputs
