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
from tests.helpers.params import TINY_BASELINE, baseline_settings, conf_section

CFG = baseline_settings(*TINY_BASELINE)


def _params(models: list[str]) -> dict:
    bias = OmegaConf.to_container(conf_section("bias"))
    evaluate = OmegaConf.to_container(conf_section("evaluate"))
    evaluate.update(
        models=models,
        model_paths={
            "baseline": "models/baseline/model.joblib",
            "automl": "models/automl",
            "bert": "models/bert",
        },
    )
    evaluate["fairness"]["min_group_rows"] = 5
    # The balanced sets only (natural-mix sets and the ensemble: tests/test_evaluation_served.py).
    evaluate["sets"] = {name: evaluate["sets"][name] for name in ("validation", "test")}
    evaluate["calibration"].update(fit_on="validation", report_on="test", review_threshold=0.9)
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

    table = json.loads(Path("reports/evaluate/metrics.json").read_text())
    assert table["protocol"] == "course" and list(table["models"]) == ["baseline"]
    assert table["sets"] == {
        "validation": {"split": "validation", "mix": "balanced", "role": "select", "rows": 60},
        "test": {"split": "test", "mix": "balanced", "role": "report", "rows": 90},
    }
    predictor = load_predictor("baseline", "models/baseline/model.joblib")
    for name in ("validation", "test"):  # both sets through the same predictor, same numbers
        rows = pd.read_parquet(f"data/prepared/{name}.parquet")
        predicted = predictor.predict_proba(rows["review_body"].tolist()).argmax(axis=1)
        row = table["models"]["baseline"][name]
        assert row["accuracy"] == pytest.approx(accuracy_score(rows["label_id"], predicted))
        assert row["macro_f1"] == pytest.approx(f1_score(rows["label_id"], predicted, average="macro"))
        assert row["per_class"]["neutral"]["support"] == len(rows) // 3
    test = pd.read_parquet("data/prepared/test.parquet")
    predicted = predictor.predict_proba(test["review_body"].tolist()).argmax(axis=1)

    fairness = json.loads(Path("reports/evaluate/fairness.json").read_text())
    assert set(fairness["models"]["baseline"]) == {"validation", "test"}
    report = fairness["models"]["baseline"]["test"]
    assert set(report) >= {"product_category", "age_band", "largest_gap"}
    categories = report["product_category"]
    assert sum(g["rows"] for g in categories["groups"].values()) == 90
    accuracies = [g["accuracy"] for g in categories["groups"].values() if g["rows"] >= 5]
    assert categories["gaps"]["accuracy"] == pytest.approx(max(accuracies) - min(accuracies))
    assert report["largest_gap"]["value"] == max(
        report[f]["largest_gap"]["value"] for f in ("product_category", "age_band")
    )
    validation_categories = fairness["models"]["baseline"]["validation"]["product_category"]
    assert sum(g["rows"] for g in validation_categories["groups"].values()) == 60

    for name in ("validation", "test"):
        analysis = json.loads(Path(f"reports/bias/post_training/{name}/baseline/analysis.json").read_text())
        facets = analysis["post_training_bias_metrics"]["facets"]
        assert set(facets) == {"product_category", "age_band", "division_name"}
        assert {m["name"] for m in facets["product_category"][0]["metrics"]} >= {"DPPL", "DI", "AD", "TE"}

    predictions = pd.read_parquet("reports/evaluate/predictions.parquet")
    assert predictions["set"].value_counts().to_dict() == {"test": 90, "validation": 60}
    on_test = predictions[predictions["set"] == "test"]
    assert (on_test["review_id"].to_numpy() == test["review_id"].to_numpy()).all()
    assert (on_test["baseline_predicted"].to_numpy() == np.array([-1, 0, 1])[predicted]).all()
    comparison = pd.read_csv("reports/evaluate/comparison.csv")
    assert comparison[["model", "set"]].values.tolist() == [["baseline", "validation"], ["baseline", "test"]]

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
    confusion = rendered["data"][f"{live}/confusion_matrix/baseline_test.json"][0]["content"]
    assert len(confusion["data"]["values"]) == 90 and confusion["spec"]["encoding"]["x"]["field"] == "actual"
    for name in ("negative", "neutral", "positive"):
        roc = rendered["data"][f"{live}/roc/baseline_test_{name}.json"][0]["content"]
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


def test_evaluate_reads_and_writes_s3(
    prepared_splits: Path, monkeypatch: pytest.MonkeyPatch, s3_bucket: str, moto_server: str
) -> None:
    """Prepared splits on S3 and every report written to S3 through reviewpipe.storage."""
    from reviewpipe import storage
    from reviewpipe.stages.evaluate import main

    monkeypatch.chdir(prepared_splits)
    save_model(
        train_baseline(make_prepared_frame(300, seed=5, signal=0.2), CFG), "models/baseline/model.joblib"
    )
    fs, _ = storage.get_fs(f"s3://{s3_bucket}/prepared")
    fs.put("data/prepared", f"{s3_bucket}/prepared", recursive=True)
    params = _params(["baseline"])
    params["prepare"]["out_dir"] = f"s3://{s3_bucket}/prepared"
    params["evaluate"]["out_dir"] = f"s3://{s3_bucket}/reports/evaluate"
    params["bias"]["out_dir"] = f"s3://{s3_bucket}/reports/bias"
    main(OmegaConf.create(params))

    table = storage.read_json(f"s3://{s3_bucket}/reports/evaluate/metrics.json")
    assert table["sets"]["validation"]["rows"] == 60 and table["sets"]["test"]["rows"] == 90
    local = json.loads(Path("reports/evaluate/live/metrics.json").read_text())  # DVCLive stays local
    assert local["baseline"]["test"]["accuracy"] == pytest.approx(
        table["models"]["baseline"]["test"]["accuracy"]
    )
    with fs.open(f"{s3_bucket}/reports/evaluate/predictions.parquet", "rb") as f:
        assert len(pd.read_parquet(f)) == 150
    assert fs.exists(f"{s3_bucket}/reports/evaluate/comparison.csv")
    assert fs.exists(f"{s3_bucket}/reports/evaluate/fairness.json")
    assert fs.exists(f"{s3_bucket}/reports/bias/post_training/validation/baseline/analysis.json")
