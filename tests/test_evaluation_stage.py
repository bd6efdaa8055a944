"""Stage evaluate: the comparison table, fairness and post-training bias files, and plots DVC can render."""

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
from sklearn.metrics import accuracy_score, f1_score

from reviewpipe.errors import ReviewpipeError
from reviewpipe.models.baseline import save_model, train_baseline
from reviewpipe.models.predictors import load_predictor
from tests.conftest import REPO_ROOT, make_prepared_frame

CFG = {
    "word": {"ngram_range": [1, 2], "min_df": 1},
    "char": {"ngram_range": [2, 4], "min_df": 1},
    "classifier": {"C": 1.0},
}


def _params(models: list[str]) -> dict:
    bias = yaml.safe_load((REPO_ROOT / "conf" / "bias" / "default.yaml").read_text())
    evaluate = yaml.safe_load((REPO_ROOT / "conf" / "evaluate" / "default.yaml").read_text())
    evaluate.update(
        models=models,
        model_paths={
            "baseline": "models/baseline/model.joblib",
            "automl": "models/automl",
            "bert": "models/bert",
        },
    )
    evaluate["fairness"]["min_group_rows"] = 5
    return {"prepare": {"out_dir": "data/prepared", "protocol": "course"}, "bias": bias, "evaluate": evaluate}


def test_evaluate_writes_comparison_fairness_bias_and_dvc_plots(
    prepared_splits: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from reviewpipe.stages.evaluate import main

    monkeypatch.chdir(prepared_splits)
    save_model(
        train_baseline(make_prepared_frame(300, seed=5, signal=0.2), CFG), "models/baseline/model.joblib"
    )
    main(OmegaConf.create(_params(["baseline"])))  # automl and bert absent by config

    test = pd.read_parquet("data/prepared/test.parquet")
    predicted = (
        load_predictor("baseline", "models/baseline/model.joblib")
        .predict_proba(test["review_body"].tolist())
        .argmax(axis=1)
    )
    table = json.loads(Path("reports/evaluate/metrics.json").read_text())
    assert (
        table["protocol"] == "course" and table["test_rows"] == 90 and list(table["models"]) == ["baseline"]
    )
    row = table["models"]["baseline"]
    assert row["accuracy"] == pytest.approx(accuracy_score(test["label_id"], predicted))
    assert row["macro_f1"] == pytest.approx(f1_score(test["label_id"], predicted, average="macro"))
    assert row["per_class"]["neutral"]["support"] == 30

    fairness = json.loads(Path("reports/evaluate/fairness.json").read_text())
    report = fairness["models"]["baseline"]
    assert set(report) >= {"product_category", "age_band", "largest_gap"}
    categories = report["product_category"]
    assert sum(g["rows"] for g in categories["groups"].values()) == 90
    accuracies = [g["accuracy"] for g in categories["groups"].values() if g["rows"] >= 5]
    assert categories["gaps"]["accuracy"] == pytest.approx(max(accuracies) - min(accuracies))
    assert report["largest_gap"]["value"] == max(
        report[f]["largest_gap"]["value"] for f in ("product_category", "age_band")
    )

    analysis = json.loads(Path("reports/bias/post_training/baseline/analysis.json").read_text())
    facets = analysis["post_training_bias_metrics"]["facets"]
    assert set(facets) == {"product_category", "age_band", "division_name"}
    assert {m["name"] for m in facets["product_category"][0]["metrics"]} >= {"DPPL", "DI", "AD", "TE"}

    predictions = pd.read_parquet("reports/evaluate/predictions.parquet")
    assert (predictions["baseline_predicted"].to_numpy() == np.array([-1, 0, 1])[predicted]).all()
    assert pd.read_csv("reports/evaluate/comparison.csv")["model"].tolist() == ["baseline"]

    # The plots as dvc.yaml declares them: `dvc plots show` renders a confusion matrix and 3 ROC curves.
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
    live = "reports/evaluate/live/plots/sklearn"
    confusion = rendered["data"][f"{live}/confusion_matrix/baseline.json"][0]["content"]
    assert len(confusion["data"]["values"]) == 90 and confusion["spec"]["encoding"]["x"]["field"] == "actual"
    for name in ("negative", "neutral", "positive"):
        roc = rendered["data"][f"{live}/roc/baseline_{name}.json"][0]["content"]
        assert roc["encoding"]["x"]["field"] == "fpr" and roc["encoding"]["y"]["field"] == "tpr"


def test_a_listed_model_that_is_missing_says_how_to_train_it(
    prepared_splits: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from reviewpipe.stages.evaluate import main

    monkeypatch.chdir(prepared_splits)
    with pytest.raises(ReviewpipeError, match=r"dvc repro bert.*drop 'bert' from evaluate.models"):
        main(OmegaConf.create(_params(["bert"])))
    with pytest.raises(ReviewpipeError, match="without a path"):
        main(OmegaConf.create({**_params(["tfidf"])}))
