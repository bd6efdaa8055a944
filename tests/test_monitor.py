"""Model Monitor, locally: baseline statistics and constraints, checks of a batch, and
`reviewpipe monitor baseline|check` end to end (every input format, local and S3, exit codes,
lake rows selected by ingestion time). Synthetic reviews and a tiny TF-IDF model: a shifted batch
is flagged (data quality and drift), a same-distribution holdout is not."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline

from reviewpipe.cli import main
from reviewpipe.monitoring.cli import build_baseline, check_batch, read_since, read_table
from reviewpipe.monitoring.constraints import Thresholds, evaluate, suggest_constraints, violations_document
from reviewpipe.monitoring.report import data_section, render_page
from reviewpipe.monitoring.statistics import dataset_statistics, feature, monitor_frame

WORDS = {
    -1: ["awful", "cheap", "returned", "itchy", "disappointing", "tore", "wrong", "poor"],
    0: ["okay", "fine", "average", "decent", "expected", "alright", "plain", "standard"],
    1: ["love", "gorgeous", "perfect", "soft", "flattering", "beautiful", "great", "comfy"],
}
FILLER = ["the", "dress", "fabric", "size", "color", "fit", "and", "it", "was", "is", "very", "this"]
CATEGORIES = ["Dresses", "Tops", "Bottoms", "Intimate", "Jackets"]


def synthetic_reviews(
    n: int,
    seed: int,
    *,
    mean_words: float = 25,
    sentiment_weights=(1, 1, 1),
    categories: list[str] | None = None,
    category_weights=None,
) -> pd.DataFrame:
    """Reviews whose words reveal the sentiment; length, category and class mix are knobs."""
    rng = np.random.default_rng(seed)
    weights = np.asarray(sentiment_weights, dtype=float)
    sentiments = rng.choice([-1, 0, 1], size=n, p=weights / weights.sum())
    categories = categories or CATEGORIES
    cat_p = None if category_weights is None else np.asarray(category_weights) / np.sum(category_weights)
    texts = []
    for s in sentiments:
        k = max(3, int(rng.poisson(mean_words)))
        words = rng.choice(FILLER, size=k).tolist()
        for i in rng.choice(k, size=max(1, k // 5), replace=False):
            words[i] = rng.choice(WORDS[int(s)])
        texts.append(" ".join(words).capitalize() + ".")
    return pd.DataFrame(
        {
            "review_id": [f"r{seed}-{i}" for i in range(n)],
            "review_body": texts,
            "product_category": rng.choice(categories, size=n, p=cat_p),
            "sentiment": sentiments,
        }
    )


@pytest.fixture(scope="module")
def model():
    train = synthetic_reviews(600, seed=0)
    pipeline = make_pipeline(TfidfVectorizer(), LogisticRegression(max_iter=500))
    return pipeline.fit(train["review_body"], train["sentiment"])


def probabilities_for(model, frame: pd.DataFrame) -> np.ndarray:
    assert list(model.classes_) == [-1, 0, 1]
    return model.predict_proba(frame["review_body"].fillna(""))


@pytest.fixture(scope="module")
def baseline(model):
    train = synthetic_reviews(3000, seed=10)
    stats = dataset_statistics(monitor_frame(train, probabilities_for(model, train)))
    return stats, suggest_constraints(stats, Thresholds())


def check(model, baseline, batch: pd.DataFrame, probabilities: np.ndarray | None = None):
    stats, constraints = baseline
    probabilities = probabilities_for(model, batch) if probabilities is None else probabilities
    return evaluate(stats, constraints, monitor_frame(batch, probabilities))


def test_baseline_statistics_and_constraints(baseline) -> None:
    stats, constraints = baseline
    assert stats["dataset"]["item_count"] == 3000
    body = feature(stats, "review_body")["string_statistics"]
    assert body["common"] == {"num_present": 3000, "num_missing": 0} and body["num_empty"] == 0
    categories = feature(stats, "product_category")["string_statistics"]
    assert sorted(b["value"] for b in categories["distribution"]["categorical"]["buckets"]) == sorted(
        CATEGORIES
    )
    assert sum(b["count"] for b in categories["distribution"]["categorical"]["buckets"]) == 3000
    length = feature(stats, "review_length")["numerical_statistics"]
    assert sum(b["count"] for b in length["distribution"]["kll"]["buckets"]) == 3000
    assert len(length["distribution"]["sketch"]["quantiles"]) == 1001
    assert length["min"] <= length["quantiles"]["p50"] <= length["max"]
    predicted = feature(stats, "predicted_label")["string_statistics"]["distribution"]["categorical"][
        "buckets"
    ]
    assert [b["value"] for b in predicted] == ["-1", "0", "1"]
    by_name = {f["name"]: f for f in constraints["features"]}
    assert by_name["review_body"]["completeness"] == 1.0
    assert sorted(by_name["product_category"]["string_constraints"]["domains"]) == sorted(CATEGORIES)
    drift_config = constraints["monitoring_config"]["distribution_constraints"]
    assert drift_config["numeric"]["psi_threshold"] == 0.2
    json.dumps(stats), json.dumps(constraints)  # both are plain JSON


def test_same_distribution_holdout_raises_no_alarm(model, baseline) -> None:
    for seed in (21, 22, 23):
        checks, comparisons = check(model, baseline, synthetic_reviews(800, seed=seed))
        violated = [(c.feature_name, c.metric, c.value) for c in checks if c.violated]
        assert violated == [], f"seed {seed}"
        assert {c.feature for c in comparisons} == {
            "review_length",
            "word_count",
            "product_category",
            "predicted_label",
        }


def test_shifted_batch_is_flagged_for_quality_and_drift(model, baseline) -> None:
    batch = synthetic_reviews(
        800,
        seed=31,
        mean_words=45,
        sentiment_weights=(6, 1, 1),
        categories=[*CATEGORIES, "Swimwear"],
        category_weights=[1, 1, 1, 1, 1, 3],
    )
    batch.loc[:19, "review_body"] = None  # 20 missing texts
    batch.loc[20:29, "review_body"] = "   "  # 10 blank texts
    checks, _ = check(model, baseline, batch)
    violated = {(c.feature_name, c.metric) for c in checks if c.violated}
    assert {
        ("review_body", "completeness"),
        ("review_body", "empty_ratio"),
        ("product_category", "unseen_ratio"),
    } <= violated
    assert {
        ("review_length", "psi"),
        ("review_length", "ks"),
        ("word_count", "psi"),
        ("word_count", "ks"),
        ("product_category", "chi2_p_value"),
        ("product_category", "psi"),
        ("predicted_label", "chi2_p_value"),
        ("predicted_label", "psi"),
    } <= violated
    by_key = {(c.feature_name, c.metric): c for c in checks}
    assert by_key[("review_body", "completeness")].value == pytest.approx(780 / 800)
    assert by_key[("review_body", "empty_ratio")].value == pytest.approx(10 / 800)
    assert by_key[("product_category", "unseen_ratio")].value == pytest.approx(
        (batch["product_category"] == "Swimwear").mean()
    )
    assert "Swimwear" in by_key[("product_category", "unseen_ratio")].description
    assert not by_key[("review_id", "completeness")].violated
    document = violations_document(checks)
    assert len(document["violations"]) == len(violated) and len(document["checks"]) == len(checks)
    assert {"feature_name", "constraint_check_type", "description", "value", "threshold"} <= set(
        document["violations"][0]
    )


def test_only_the_shifted_aspect_is_flagged(model, baseline) -> None:
    # Only the class mix changes: lengths and categories stay quiet, the predicted class drifts.
    batch = synthetic_reviews(800, seed=41, sentiment_weights=(1, 0.1, 1))
    violated = {(c.feature_name, c.metric) for c in check(model, baseline, batch)[0] if c.violated}
    assert ("predicted_label", "chi2_p_value") in violated
    assert not any(name in ("review_length", "word_count", "product_category") for name, _ in violated)


def test_thresholds_are_configurable(model, baseline) -> None:
    stats, _ = baseline
    loose = suggest_constraints(
        stats,
        Thresholds(
            psi_threshold=None, ks_threshold=None, chi2_p_value_threshold=None, max_unseen_category_ratio=0.5
        ),
    )
    batch = synthetic_reviews(500, seed=51, mean_words=45, categories=[*CATEGORIES, "Swimwear"])
    checks, _ = evaluate(stats, loose, monitor_frame(batch, probabilities_for(model, batch)))
    assert [c for c in checks if c.violated] == []


def test_small_batches_need_significance_for_ks(model, baseline) -> None:
    stats, _ = baseline
    simple = suggest_constraints(stats, Thresholds(comparison_method="simple"))
    robust = suggest_constraints(stats, Thresholds())
    batch = synthetic_reviews(60, seed=61)
    frame = monitor_frame(batch, probabilities_for(model, batch))
    ks = {c.feature_name: c for c in evaluate(stats, robust, frame)[0] if c.metric == "ks"}
    assert ks["word_count"].threshold > 0.2  # critical value for 60 rows at 99% is about 0.21
    simple_ks = {c.feature_name: c for c in evaluate(stats, simple, frame)[0] if c.metric == "ks"}
    assert simple_ks["word_count"].threshold == 0.1


def test_missing_category_column_and_no_model(model, baseline) -> None:
    stats, constraints = baseline
    batch = synthetic_reviews(300, seed=71).drop(columns=["product_category"])
    checks, comparisons = evaluate(stats, constraints, monitor_frame(batch, None))
    missing = {c.feature_name for c in checks if c.constraint_check_type == "missing_column_check"}
    assert missing == {"product_category", "predicted_label", "prediction_confidence"}
    assert all(c.violated for c in checks if c.constraint_check_type == "missing_column_check")
    assert {c.feature for c in comparisons} == {"review_length", "word_count"}


def test_report_is_self_contained_html(model, baseline) -> None:
    stats, _ = baseline
    batch = synthetic_reviews(400, seed=81, mean_words=45)
    checks, comparisons = check(model, baseline, batch)
    batch_stats = dataset_statistics(monitor_frame(batch, probabilities_for(model, batch)))
    section = data_section(
        heading="h",
        source="batch.parquet",
        baseline=stats,
        batch=batch_stats,
        checks=checks,
        comparisons=comparisons,
    )
    page = render_page(title="t", generated_at="now", summary="", fragments=[section])
    assert page.count("data:image/png;base64,") == len(comparisons) == 4
    assert (
        "VIOLATION" in page and "review_length" in page and "http://" not in page and "https://" not in page
    )


NO_MODEL = {"source": "none", "variant": None, "kind": "package", "path": None, "batch_size": 256}
MONITOR = {
    "baseline_uri": "train.parquet",
    "baseline_split": None,
    "quality_split": None,
    "label_column": "sentiment",
    "out_dir": "monitoring",
    "max_baseline_rows": 2000,
    "seed": 1,
    "text_column": "review_body",
    "category_column": "product_category",
    "id_column": "review_id",
    "model": NO_MODEL,
    "buckets": 10,
    "sketch_size": 1001,
    "constraints": {
        "completeness_tolerance": 0.0,
        "max_empty_text_ratio": 0.0,
        "max_unseen_category_ratio": 0.0,
    },
    "drift": {
        "numeric_features": ["review_length", "word_count"],
        "categorical_features": ["product_category", "predicted_label"],
        "psi_threshold": 0.2,
        "ks_threshold": 0.1,
        "chi2_p_value_threshold": 0.001,
        "comparison_method": "robust",
        "robust_confidence": 0.99,
    },
    "quality": {
        "window": "1D",
        "max_drop": 0.05,
        "min_rows": 50,
        "comparison_method": "robust",
        "confidence": 0.95,
        "bootstrap_resamples": 500,
        "ground_truth": ["human"],
    },
    "fail_on_violation": True,
}


def write_params(folder: Path, **monitor_changes) -> Path:
    monitor = {**MONITOR, **monitor_changes}
    params = {
        "monitor": monitor,
        "storage": {"endpoint_url": None, "profile": None, "region": None},
        "catalog": {"database": str(folder / "catalog.duckdb")},
    }
    path = folder / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    return path


def shifted(n: int = 600, seed: int = 5) -> pd.DataFrame:
    batch = synthetic_reviews(
        n,
        seed=seed,
        mean_words=45,
        sentiment_weights=(6, 1, 1),
        categories=[*CATEGORIES, "Swimwear"],
        category_weights=[1, 1, 1, 1, 1, 3],
    )
    batch.loc[:9, "review_body"] = None
    return batch


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    synthetic_reviews(2500, seed=1).to_parquet(tmp_path / "train.parquet")
    return tmp_path


def test_baseline_then_check_in_each_format(workdir: Path, capsys: pytest.CaptureFixture) -> None:
    params = write_params(workdir)
    assert main(["monitor", "baseline", "--params", str(params)]) == 0
    baseline = json.loads((workdir / "monitoring/baseline/statistics.json").read_text())
    constraints = json.loads((workdir / "monitoring/baseline/constraints.json").read_text())
    assert baseline["dataset"] == {"item_count": 2000, "source": "train.parquet"}  # sampled to the cap
    assert "predicted_label" not in {f["name"] for f in baseline["features"]}  # model source none
    assert baseline["model"] is None and not (workdir / "monitoring/baseline/model_quality.json").exists()

    shifted().to_csv(workdir / "shifted.csv", index=False)
    code = main(["monitor", "check", "--params", str(params), "--input", "shifted.csv", "--run", "shift"])
    assert code == 1
    out = capsys.readouterr().out
    assert "VIOLATION review_body completeness_check" in out and "report: monitoring/shift/report.html" in out
    run = workdir / "monitoring/shift"
    violations = json.loads((run / "constraint_violations.json").read_text())
    flagged = {(v["feature_name"], v["metric"]) for v in violations["violations"]}
    assert {
        ("review_body", "completeness"),
        ("product_category", "unseen_ratio"),
        ("word_count", "psi"),
        ("word_count", "ks"),
        ("product_category", "chi2_p_value"),
    } <= flagged
    assert violations["source"] == "shifted.csv" and violations["thresholds"]["psi_threshold"] == 0.2
    assert json.loads((run / "statistics.json").read_text())["dataset"]["item_count"] == 600
    page = (run / "report.html").read_text()
    assert page.count("data:image/png;base64,") == 3 and "VIOLATION" in page  # lengths, words, category

    # The same batch as JSON Lines; configured not to fail, and with --no-fail.
    shifted().to_json(workdir / "shifted.jsonl", orient="records", lines=True)
    assert main(["monitor", "check", "--params", str(params), "--input", "shifted.jsonl", "--no-fail"]) == 0
    assert (
        main(
            [
                "monitor",
                "check",
                "--params",
                str(params),
                "--input",
                "shifted.jsonl",
                "-S",
                "monitor.fail_on_violation=false",
            ]
        )
        == 0
    )

    # A same-distribution holdout (parquet) passes.
    synthetic_reviews(700, seed=2).to_parquet(workdir / "holdout.parquet")
    assert (
        main(["monitor", "check", "--params", str(params), "--input", "holdout.parquet", "--run", "ok"]) == 0
    )
    ok = json.loads((workdir / "monitoring/ok/constraint_violations.json").read_text())
    assert ok["violations"] == [] and len(ok["checks"]) == len(constraints["features"]) - 2 + 3 * 2 + 2


def test_user_mistakes_are_reported(workdir: Path, capsys: pytest.CaptureFixture) -> None:
    params = write_params(workdir)
    assert main(["monitor", "check", "--params", str(params), "--input", "train.parquet"]) == 2
    assert "reviewpipe monitor baseline" in capsys.readouterr().err
    assert main(["monitor", "baseline", "--params", str(params)]) == 0
    assert main(["monitor", "check", "--params", str(params), "--input", "nope.parquet"]) == 2
    assert "input not found: nope.parquet" in capsys.readouterr().err
    (workdir / "batch.txt").write_text("x")
    assert main(["monitor", "check", "--params", str(params), "--input", "batch.txt"]) == 2
    assert "cannot tell the format" in capsys.readouterr().err
    pd.DataFrame({"text": ["a"]}).to_parquet(workdir / "wrong.parquet")
    assert main(["monitor", "check", "--params", str(params), "--input", "wrong.parquet"]) == 2
    assert "no `review_body` column" in capsys.readouterr().err
    assert main(["monitor", "check", "--params", str(params), "--since", "last tuesday"]) == 2
    assert "ISO 8601" in capsys.readouterr().err
    missing_model = write_params(
        workdir, model={**NO_MODEL, "source": "path", "kind": "baseline", "path": "models/none.joblib"}
    )
    assert main(["monitor", "baseline", "--params", str(missing_model)]) == 2
    assert "models/none.joblib" in capsys.readouterr().err
    not_deployed = write_params(workdir, model={**NO_MODEL, "source": "deployed"})
    with open(not_deployed, "a") as f:
        f.write("deploy: {state_path: models/deploy/deployment.json}\n")
    assert main(["monitor", "baseline", "--params", str(not_deployed)]) == 2
    assert "dvc repro deploy" in capsys.readouterr().err


class Champion:
    """The tiny model behind the project's predictor interface (predict_proba(texts) -> (n, 3))."""

    def __init__(self, pipeline) -> None:
        self.pipeline = pipeline
        self.calls = 0

    def predict_proba(self, texts: list[str]) -> np.ndarray:
        assert all(isinstance(t, str) and t.strip() for t in texts)  # blanks are never sent
        self.calls += 1
        return self.pipeline.predict_proba(texts)


def test_predicted_class_drift_with_a_champion(workdir: Path, model) -> None:
    from reviewpipe.config import load_params

    params = load_params(write_params(workdir, model={**NO_MODEL, "batch_size": 500}))
    champion = Champion(model)
    build_baseline(params, predictor=champion)
    assert champion.calls == 4  # 2000 rows in batches of 500
    negative = synthetic_reviews(600, seed=7, sentiment_weights=(8, 1, 1))
    negative.loc[:4, "review_body"] = "  "
    negative.to_parquet(workdir / "negative.parquet")
    result = check_batch(params, input_uri="negative.parquet", run_name="neg", predictor=champion)
    run_dir, checks = result.run_dir, result.checks[None]
    violated = {(c.feature_name, c.metric) for c in checks if c.violated}
    assert {
        ("predicted_label", "chi2_p_value"),
        ("predicted_label", "psi"),
        ("review_body", "empty_ratio"),
    } <= violated
    assert not any(name in ("review_length", "word_count") for name, _ in violated)
    stats = json.loads((Path(run_dir) / "statistics.json").read_text())
    predicted = next(f for f in stats["features"] if f["name"] == "predicted_label")["string_statistics"]
    assert predicted["common"] == {"num_present": 595, "num_missing": 5}  # blank texts are not predicted
    # Without a model, a baseline with predictions cannot be checked: a user error, not a silent gap.
    assert main(["monitor", "check", "--params", "params.yaml", "--input", "negative.parquet"]) == 2


def test_s3_input_and_output(
    moto_server: str, s3_bucket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import s3fs

    monkeypatch.chdir(tmp_path)
    fs = s3fs.S3FileSystem(client_kwargs={"endpoint_url": moto_server})
    with fs.open(f"{s3_bucket}/data/train.parquet", "wb") as f:
        synthetic_reviews(1500, seed=1).to_parquet(f)
    with fs.open(f"{s3_bucket}/batches/shifted.jsonl", "wb") as f:
        f.write(shifted(400).to_json(orient="records", lines=True).encode())
    params = write_params(
        tmp_path, baseline_uri=f"s3://{s3_bucket}/data/train.parquet", out_dir=f"s3://{s3_bucket}/monitoring"
    )
    assert main(["monitor", "baseline", "--params", str(params)]) == 0
    assert (
        main(
            [
                "monitor",
                "check",
                "--params",
                str(params),
                "--input",
                f"s3://{s3_bucket}/batches/shifted.jsonl",
                "--run",
                "r1",
            ]
        )
        == 1
    )
    assert fs.exists(f"{s3_bucket}/monitoring/baseline/constraints.json")
    with fs.open(f"{s3_bucket}/monitoring/r1/constraint_violations.json") as f:
        assert any(v["metric"] == "unseen_ratio" for v in json.load(f)["violations"])
    assert fs.exists(f"{s3_bucket}/monitoring/r1/report.html")
    assert len(read_table(f"s3://{s3_bucket}/batches/shifted.jsonl")) == 400


def test_read_since_selects_rows_ingested_after_a_date() -> None:
    import duckdb

    con = duckdb.connect()
    con.execute("CREATE TABLE reviews (review_id INTEGER, review_body VARCHAR, ingested_at TIMESTAMP)")
    con.execute(
        "INSERT INTO reviews VALUES (1, 'a', '2024-01-01 10:00'), (2, 'b', '2024-03-01 00:00'),"
        " (3, 'c', '2024-03-02 12:00')"
    )
    assert read_since(con, "2024-02-01")["review_id"].tolist() == [2, 3]
    assert read_since(con, "2024-03-01T00:00:00")["review_id"].tolist() == [3]
    assert read_since(con, "2024-03-02T13:00:00+02:00")["review_id"].tolist() == [3]  # 11:00 UTC


def test_check_since_reads_the_catalog(workdir: Path) -> None:
    lake = pytest.importorskip("reviewpipe.data.lake")
    catalog = pytest.importorskip("reviewpipe.data.catalog")
    old = synthetic_reviews(300, seed=3).assign(ingested_at=pd.Timestamp("2024-01-01"))
    new = shifted(300, seed=4).assign(ingested_at=pd.Timestamp("2024-06-01"))
    lake.publish_table(
        str(workdir / "lake"),
        "reviews",
        pd.concat([old, new], ignore_index=True),
        partition_by="product_category",
    )
    lake.publish_table(
        str(workdir / "lake"),
        "rejects",
        pd.DataFrame(
            {
                "review_body": pd.Series(dtype="string"),
                "reject_reason": pd.Series(dtype="string"),
                "source_row": pd.Series(dtype="int64"),
            }
        ),
    )
    catalog.build_catalog(str(workdir / "lake"), str(workdir / "catalog.duckdb"))
    params = write_params(workdir)
    assert main(["monitor", "baseline", "--params", str(params)]) == 0
    assert main(["monitor", "check", "--params", str(params), "--since", "2024-03-01", "--run", "since"]) == 1
    document = json.loads((workdir / "monitoring/since/constraint_violations.json").read_text())
    assert document["source"] == "lake rows ingested after 2024-03-01"
    stats = json.loads((workdir / "monitoring/since/statistics.json").read_text())
    assert stats["dataset"]["item_count"] == 300
