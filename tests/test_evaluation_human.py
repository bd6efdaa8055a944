"""Evaluate reports on the human-labelled test rows apart: the headline test figures keep the
ratings' labels, the `test_human` set scores the same models against what people said."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from omegaconf import OmegaConf

from reviewpipe.models.baseline import save_model, train_baseline
from reviewpipe.models.predictors import load_predictor
from tests.helpers.params import WORD_ONLY_BASELINE, baseline_settings
from tests.test_evaluation_served import natural_mix, params

CFG = baseline_settings(*WORD_ONLY_BASELINE)


def prepare_like(prepared: Path, human: dict[int, int]) -> pd.DataFrame:
    """unbalanced.parquet with prepare's label columns: the rating's label and the human one."""
    unbalanced = natural_mix(prepared).assign(rating_sentiment=lambda d: d["sentiment"])
    unbalanced["human_label"] = unbalanced["review_id"].map(human).astype("Int64")
    unbalanced.to_parquet(prepared / "unbalanced.parquet", index=False)
    return unbalanced


def test_human_labelled_test_rows_are_reported_apart(
    prepared_splits: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    from reviewpipe.stages import evaluate

    monkeypatch.chdir(prepared_splits)
    prepared = Path("data/prepared")
    test_ids = pd.read_parquet(prepared / "test.parquet")["review_id"] + 20_000  # natural_mix renumbers
    ratings = pd.read_parquet(prepared / "test.parquet").set_index(test_ids)["sentiment"]
    human = {int(r): int(ratings[r]) for r in test_ids[:24]}
    human |= {int(r): (int(ratings[r]) + 2) % 3 - 1 for r in test_ids[24:30]}  # 6 where people disagree
    unbalanced = prepare_like(prepared, human)
    save_model(
        train_baseline(pd.read_parquet(prepared / "train.parquet"), CFG), "models/baseline/model.joblib"
    )
    evaluate.main(OmegaConf.create(params(["baseline"])))

    table = json.loads(Path("reports/evaluate/metrics.json").read_text())
    spec = table["sets"]["test_human"]
    assert (spec["rows"], spec["mix"], spec["role"]) == (30, "human", "report")
    assert spec["rating_agreement"] == {"rows": 30, "agree": 24, "share": 0.8}
    rows = unbalanced[unbalanced["human_label"].notna()]
    predicted = load_predictor("baseline", "models/baseline/model.joblib").predict_proba(
        rows["review_body"].tolist()
    )
    truth = rows["human_label"].astype(int) + 1
    assert table["models"]["baseline"]["test_human"]["accuracy"] == pytest.approx(
        (predicted.argmax(1) == truth.to_numpy()).mean()
    )
    test = pd.read_parquet(prepared / "test.parquet")  # the headline set: the ratings' labels, all rows
    assert table["sets"]["test"]["rows"] == len(test)
    headline = load_predictor("baseline", "models/baseline/model.joblib").predict_proba(
        test["review_body"].tolist()
    )
    assert table["models"]["baseline"]["test"]["accuracy"] == pytest.approx(
        (headline.argmax(1) == test["label_id"]).mean()
    )

    prepare_like(prepared, {})  # nobody labelled a test row: the set is left out, and said so
    evaluate.main(OmegaConf.create(params(["baseline"])))
    assert "test_human" not in json.loads(Path("reports/evaluate/metrics.json").read_text())["sets"]
    assert "test_human: no human-labelled test rows yet" in capsys.readouterr().out
