"""AutoGluon AutoML: gradient-boosted candidates really train on text n-grams; the stage writes its views."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from omegaconf import OmegaConf

from reviewpipe.errors import ReviewpipeError
from reviewpipe.models.automl import WEIGHT, model_hyperparameters, predict_proba, to_features, training_frame
from reviewpipe.models.predictors import load_predictor

CFG = {
    "time_limit": 60,
    "seed": 3,
    "presets": "medium_quality",
    "eval_metric": "accuracy",
    "model_types": ["GBM", "CAT", "XGB"],
    "ngram": {"ngram_range": [1, 1], "min_df": 2, "max_features": 500},
    "class_weight": "prepared",
    "keep_best_only": True,
    "num_cpus": 1,
    "verbosity": 0,
    "model_dir": "models/automl",
    "report_dir": "reports/automl",
    "metrics_path": "metrics/automl.json",
}


def test_model_types_are_checked_and_seeded_under_each_librarys_name() -> None:
    assert model_hyperparameters(["LR", "GBM", "CAT", "XGB"], seed=7) == {
        "LR": {"ag_args": {"priority": 4}, "random_state": 7},
        "GBM": {"ag_args": {"priority": 3}, "seed": 7},
        "CAT": {"ag_args": {"priority": 2}, "random_seed": 7},
        "XGB": {"ag_args": {"priority": 1}, "seed": 7},
    }
    with pytest.raises(ReviewpipeError, match="subset of"):
        model_hyperparameters(["GBM", "AG_TEXT_NN"], seed=0)
    with pytest.raises(ReviewpipeError, match="non-empty"):
        model_hyperparameters([], seed=0)


def test_features_keep_text_as_object_and_category_as_category() -> None:
    frame = to_features(["a b c", None], ["Dresses", "Pants"])
    assert frame["review_body"].dtype == object and frame["review_body"].tolist() == ["a b c", ""]
    assert isinstance(frame["product_category"].dtype, pd.CategoricalDtype)
    assert frame["product_category"].tolist() == ["Dresses", "Pants"]
    assert to_features(["x"], None)["product_category"].isna().all()  # serving sends no category


def test_class_weights_become_a_sample_weight_column() -> None:
    split = pd.DataFrame(
        {"review_body": ["a b c"] * 3, "product_category": ["Pants"] * 3, "sentiment": [-1, 0, 1]}
    )
    assert WEIGHT not in training_frame(split)
    assert training_frame(split, {-1: 2.0, 0: 1.5, 1: 0.5})[WEIGHT].tolist() == [2.0, 1.5, 0.5]


def test_stage_rejects_an_unknown_weighting(prepared_splits: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from reviewpipe.stages.automl import main

    monkeypatch.chdir(prepared_splits)
    with pytest.raises(ReviewpipeError, match="class_weight must be"):
        main(
            OmegaConf.create(
                {"prepare": {"out_dir": "data/prepared"}, "automl": {**CFG, "class_weight": "balanced"}}
            )
        )


def test_stage_trains_gbm_candidates_and_predicts_valid_classes(
    prepared_splits: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from reviewpipe.stages.automl import main

    monkeypatch.chdir(prepared_splits)
    main(OmegaConf.create({"prepare": {"out_dir": "data/prepared"}, "automl": CFG}))
    # A plain progress line as each model starts and ends (the stage is minutes of silence otherwise).
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("automl: ")]
    assert lines[0].startswith("automl: fitting LightGBM") and "of the time limit left" in lines[0]
    assert any(
        line.startswith("automl: model 1/4 (25%), fitted LightGBM, validation score") for line in lines
    )

    board = pd.read_csv("reports/automl/leaderboard.csv")
    families = {m.split("_")[0] for m in board["model"]}
    assert {"LightGBM", "CatBoost", "XGBoost"} <= families, board["model"].tolist()
    assert Path("reports/automl/leaderboard.png").read_bytes()[:4] == b"\x89PNG"
    metrics = json.loads(Path("metrics/automl.json").read_text())
    assert metrics["candidates"] == len(board) and metrics["best_model"] in set(board["model"])
    # the budget and the seed are recorded; no wall-clock figure is (metrics or committed leaderboard)
    assert metrics["seed"] == 3 and metrics["budget"]["time_limit_s"] == 60
    assert metrics["budget"]["per_model_time_limit_s"] == pytest.approx(0.9 * 60 / 3)
    assert not any("time" in c for c in board.columns)
    assert not any("second" in k or "time" in k for k in metrics if k != "budget")

    test = pd.read_parquet("data/prepared/test.parquet")
    predictor = load_predictor("automl", "models/automl")
    proba = predictor.predict_proba(test["review_body"].tolist(), test["product_category"].tolist())
    assert proba.shape == (len(test), 3)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-5)
    accuracy = (proba.argmax(axis=1) == test["label_id"].to_numpy()).mean()
    assert accuracy > 0.7, accuracy  # the n-gram features carry the sentiment words
    # Without categories (the serving path) predictions still come back for every row.
    assert predict_proba(predictor.predictor, ["superb love", "awful cheap"]).shape == (2, 3)


@pytest.mark.slow
def test_same_seed_same_models(prepared_splits: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Seeded AutoGluon: two runs with one seed give the same leaderboard and probabilities."""
    from reviewpipe.stages.automl import main

    monkeypatch.chdir(prepared_splits)
    test = pd.read_parquet("data/prepared/test.parquet")
    runs = []
    for _ in range(2):
        main(
            OmegaConf.create(
                {"prepare": {"out_dir": "data/prepared"}, "automl": {**CFG, "keep_best_only": False}}
            )
        )
        board = pd.read_csv("reports/automl/leaderboard.csv")
        proba = load_predictor("automl", "models/automl").predict_proba(
            test["review_body"].tolist(), test["product_category"].tolist()
        )
        runs.append((board, proba, Path("metrics/automl.json").read_text()))
    pd.testing.assert_frame_equal(runs[0][0], runs[1][0])
    np.testing.assert_array_equal(runs[0][1], runs[1][1])
    assert runs[0][2] == runs[1][2]  # metrics/automl.json byte for byte: nothing from the clock
