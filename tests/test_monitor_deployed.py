"""Monitoring the model that is deployed, end to end with real parts: two scikit-learn packages built
by the package code, a deployment record as the deploy stage writes it, a real lake + DuckDB catalog
for ratings, human labels from the label store, and captured traffic in SageMaker's format produced
by the packages' own code/inference.py.

- `monitor baseline` scores prepare's natural-mix training rows with the deployed champion (through its
  package), measures it on natural-mix validation rows, and refuses a package rebuilt since deployment;
- `monitor check --capture` checks each variant's served traffic, joins ground truth (human labels
  first, then ratings) and reports model quality per variant and day, and the A/B comparison;
- `review enqueue --capture` queues what the endpoint answered with low confidence."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import joblib
import numpy as np
import pandas as pd
import pytest
import yaml
from omegaconf import OmegaConf
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline

from reviewpipe.cli import main
from reviewpipe.config import load_params, to_dict
from reviewpipe.deploy import VariantConfig, variant_records
from reviewpipe.review.queue import read_queue
from reviewpipe.review.store import LabelStore, ReviewLock
from reviewpipe.serving import inference, package
from tests.conftest import REPO_ROOT
from tests.test_monitor import synthetic_reviews

NATURAL_MIX = (0.11, 0.12, 0.77)


def train(frame: pd.DataFrame, noise: float, seed: int) -> object:
    labels = frame["sentiment"].to_numpy().copy()
    flip = np.random.default_rng(seed).random(len(labels)) < noise
    labels[flip] = np.random.default_rng(seed + 1).choice([-1, 0, 1], flip.sum())
    return make_pipeline(TfidfVectorizer(), LogisticRegression(max_iter=500)).fit(
        frame["review_body"], labels
    )


def respond(model: object, texts: list[str]) -> str:
    """What the endpoint answers: the package's own input_fn / predict_fn / output_fn."""
    data = inference.input_fn(json.dumps({"inputs": texts}), "application/json")
    return inference.output_fn(inference.predict_fn(data, model), "application/json").decode()


def capture_line(body: str, response: str, key: str, when: dt.datetime) -> str:
    return json.dumps(
        {
            "captureData": {
                "endpointInput": {
                    "observedContentType": "application/json",
                    "mode": "INPUT",
                    "data": body,
                    "encoding": "JSON",
                },
                "endpointOutput": {
                    "observedContentType": "application/json",
                    "mode": "OUTPUT",
                    "data": response,
                    "encoding": "JSON",
                },
            },
            "eventMetadata": {"eventId": f"ev-{key}", "inferenceId": key, "inferenceTime": when.isoformat()},
            "eventVersion": "0",
        }
    )


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("shop")
    reviews = synthetic_reviews(4000, seed=3, sentiment_weights=NATURAL_MIX)
    reviews["review_id"] = np.arange(1000, 1000 + len(reviews))
    reviews["split_type"] = np.where(
        reviews.index < 3000, "train", np.where(reviews.index < 3500, "validation", "test")
    )
    (root / "data/prepared").mkdir(parents=True)
    reviews.to_parquet(root / "data/prepared/unbalanced.parquet", index=False)

    train_rows = reviews[reviews["split_type"] == "train"]
    models = {"champion": train(train_rows, noise=0.0, seed=0), "challenger": train(train_rows[:150], 0.6, 1)}
    packages = {}
    for name, model in models.items():
        joblib.dump(model, root / f"{name}.joblib")
        packages[name] = root / "models/package" / f"{name}.tar.gz"
        package.build_package(
            root / f"{name}.joblib", packages[name], model_name=name, model_version=f"{name}-v1"
        )
    variants = [
        VariantConfig("champion", str(packages["champion"]), 0.8),
        VariantConfig("challenger", str(packages["challenger"]), 0.2),
    ]
    state = {"target": "local", "endpoint_name": "shop", "variants": variant_records(variants)}
    (root / "models/deploy").mkdir(parents=True)
    (root / "models/deploy/deployment.json").write_text(json.dumps(state))

    params = to_dict(load_params(REPO_ROOT / "params.yaml"))
    overrides = {
        "monitor": {
            "out_dir": str(root / "monitoring"),
            "baseline_uri": str(root / "data/prepared/unbalanced.parquet"),
        },
        "deploy": {"state_path": str(root / "models/deploy/deployment.json")},
        "review": {
            "labels_dir": str(root / "labels"),
            "state_dir": str(root / "state"),
            "queue_dir": str(root / "queue"),
        },
        "catalog": {"database": str(root / "catalog.duckdb")},
        "serve": {"backend": "torch", "quantize": "none"},
    }
    params_path = root / "params.yaml"
    params_path.write_text(yaml.safe_dump(to_dict(OmegaConf.merge(params, overrides))))
    return {"root": root, "reviews": reviews, "models": models, "packages": packages, "params": params_path}


def predicted_counts(stats: dict) -> dict[str, int]:
    """The predicted_label distribution of a statistics.json."""
    feature = next(f for f in stats["features"] if f["name"] == "predicted_label")
    return {
        b["value"]: b["count"] for b in feature["string_statistics"]["distribution"]["categorical"]["buckets"]
    }


def run(shop: dict, *args: str) -> int:
    return main([args[0], *args[1:], "--params", str(shop["params"])])


def baseline_with(shop: dict, *overrides: str) -> int:
    """`monitor baseline` with -S overrides."""
    return run(shop, "monitor", "baseline", *[part for o in overrides for part in ("-S", o)])


def test_baseline_scores_the_natural_mix_with_the_deployed_champion(shop: dict) -> None:
    assert run(shop, "monitor", "baseline") == 0
    out = shop["root"] / "monitoring/baseline"
    stats = json.loads((out / "statistics.json").read_text())
    train_rows = shop["reviews"][shop["reviews"]["split_type"] == "train"]
    assert stats["dataset"]["item_count"] == len(train_rows) == 3000  # the training split only, all its rows
    assert stats["dataset"]["source"].endswith("unbalanced.parquet (split_type=train)")
    model = stats["model"]
    assert (model["source"], model["variant"], model["served_model_version"]) == (
        "deployed",
        "champion",
        "champion-v1",
    )
    assert model["sha256"] == package.file_sha256(shop["packages"]["champion"]) and model["registry"] is None
    predicted = predicted_counts(stats)
    direct = pd.Series(shop["models"]["champion"].predict(train_rows["review_body"])).value_counts()
    assert predicted == {str(k): int(v) for k, v in direct.items()}
    assert predicted["1"] / 3000 > 0.6  # the natural mix, not a balanced one

    quality = json.loads((out / "model_quality.json").read_text())
    validation = shop["reviews"][shop["reviews"]["split_type"] == "validation"]
    accuracy = (
        shop["models"]["champion"].predict(validation["review_body"]) == validation["sentiment"]
    ).mean()
    assert quality["n"] == 500 and quality["accuracy"]["value"] == pytest.approx(accuracy, abs=1e-6)
    assert quality["dataset"]["source"].endswith("(split_type=validation)")

    assert (
        baseline_with(shop, "monitor.model.variant=challenger", f"monitor.out_dir={shop['root'] / 'm2'}") == 0
    )
    other = json.loads((shop["root"] / "m2/baseline/statistics.json").read_text())["model"]
    assert other["variant"] == "challenger" and other["served_model_version"] == "challenger-v1"


def test_a_package_rebuilt_after_deployment_is_refused(
    shop: dict, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    rebuilt = tmp_path / "champion.tar.gz"
    package.build_package(
        shop["root"] / "champion.joblib", rebuilt, model_name="champion", model_version="champion-v2"
    )
    state = json.loads((shop["root"] / "models/deploy/deployment.json").read_text())
    state["variants"][0]["package"] = str(rebuilt)  # the record still holds v1's sha256
    (tmp_path / "deployment.json").write_text(json.dumps(state))
    code = baseline_with(
        shop, f"deploy.state_path={tmp_path / 'deployment.json'}", f"monitor.out_dir={tmp_path}"
    )
    assert code == 2
    assert "is not the package that is deployed" in capsys.readouterr().err


def test_the_baseline_monitors_the_labels_the_package_serves(shop: dict, tmp_path: Path) -> None:
    """A calibrated package answers its decision rule's label, which need not be the top probability:
    the baseline's predicted_label is what the endpoint answers."""
    calibrated = tmp_path / "calibrated.tar.gz"
    calibration = {
        "temperature": 1.0,
        "log_prior_shift": [0.0, 0.0, 0.0],
        "decision_weights": [1.0, 1000.0, 1.0],
        "fitted_on": "validation_natural",
    }
    package.build_package(
        shop["root"] / "champion.joblib",
        calibrated,
        model_name="champion",
        model_version="champion-cal",
        calibration=calibration,
        registry={"uri": "models/registry", "version": 7, "status": "Approved"},
    )
    state = {
        "target": "local",
        "endpoint_name": "shop",
        "variants": variant_records([VariantConfig("champion", str(calibrated), 1.0)]),
    }
    (tmp_path / "deployment.json").write_text(json.dumps(state))
    assert (
        baseline_with(
            shop, f"deploy.state_path={tmp_path / 'deployment.json'}", f"monitor.out_dir={tmp_path / 'm'}"
        )
        == 0
    )
    stats = json.loads((tmp_path / "m/baseline/statistics.json").read_text())
    monitored = predicted_counts(stats)
    model = inference.model_fn(
        str(package.unpack_package(calibrated, tmp_path / "u", max_unpacked_bytes=1 << 30))
    )
    texts = shop["reviews"].loc[shop["reviews"]["split_type"] == "train", "review_body"].tolist()
    answered = inference.predict_fn({"texts": texts}, model)["predictions"]
    served = pd.Series([str(a["label"]) for a in answered]).value_counts().to_dict()
    top = (
        pd.Series([max(a["probabilities"], key=a["probabilities"].get) for a in answered])
        .value_counts()
        .to_dict()
    )
    assert monitored == served and served != top  # the decision rule moved some answers to neutral
    assert stats["model"]["registry"] == {"uri": "models/registry", "version": 7, "status": "Approved"}


def write_traffic(shop: dict) -> dict[str, dict[str, int]]:
    """Two days of traffic through both packages: day 1 like training; day 2 longer, more negative
    reviews whose ratings no longer follow the words (concept drift). Returns ground truth per key."""
    loaded = {
        name: inference.model_fn(
            str(package.unpack_package(path, shop["root"] / "unpacked" / name, max_unpacked_bytes=1 << 30))
        )
        for name, path in shop["packages"].items()
    }
    day1 = shop["reviews"][shop["reviews"]["split_type"] == "test"].reset_index(drop=True)
    day2 = synthetic_reviews(500, seed=9, mean_words=45, sentiment_weights=(6, 1, 1))
    day2["review_id"] = np.arange(9000, 9500)
    rng = np.random.default_rng(5)
    day2["sentiment"] = rng.choice([-1, 0, 1], len(day2))  # the words no longer tell the rating
    truth: dict[str, dict[str, int]] = {"day1": {}, "day2": {}}
    for day, frame, start in (
        ("day1", day1, dt.datetime(2026, 11, 1, tzinfo=dt.UTC)),
        ("day2", day2, dt.datetime(2026, 11, 2, tzinfo=dt.UTC)),
    ):
        for i, row in frame.iterrows():
            variant = "champion" if rng.random() < 0.6 else "challenger"
            when = start + dt.timedelta(seconds=60 * int(i))
            key = str(row["review_id"])
            line = capture_line(
                json.dumps({"inputs": row["review_body"]}),
                respond(loaded[variant], [row["review_body"]]),
                key,
                when,
            )
            folder = shop["root"] / "capture/shop" / variant / when.strftime("%Y/%m/%d/%H")
            folder.mkdir(parents=True, exist_ok=True)
            with open(folder / "capture.jsonl", "a") as f:
                f.write(line + "\n")
            truth[day][key] = int(row["sentiment"])
    return truth


def test_check_capture_reports_data_and_model_quality_per_variant(
    shop: dict, capsys: pytest.CaptureFixture
) -> None:
    from reviewpipe.data import catalog, lake

    if not (shop["root"] / "monitoring/baseline/model_quality.json").exists():
        assert run(shop, "monitor", "baseline") == 0
    truth = write_traffic(shop)
    # Ground truth: people labelled 100 day-1 reviews (one on purpose against its rating); the ratings
    # of every day-2 review have arrived in the lake.
    store = LabelStore(shop["root"] / "labels", "ana", ReviewLock(shop["root"] / "state"))
    human = dict(list(truth["day1"].items())[:100])
    first = next(iter(human))
    human[first] = (human[first] + 2) % 3 - 1
    for key, label in human.items():
        store.append(int(key), label)
    ratings = pd.DataFrame(
        {"review_id": [int(k) for k in truth["day2"]], "sentiment": list(truth["day2"].values())}
    )
    ratings = ratings.assign(
        review_body="x", product_category="Dresses", ingested_at=pd.Timestamp("2026-11-03")
    )
    ratings = pd.concat(
        [ratings, ratings.head(1).assign(review_id=int(first), sentiment=7)]
    )  # a rating a human overrides
    lake.publish_table(str(shop["root"] / "lake"), "reviews", ratings, partition_by="product_category")
    lake.publish_table(
        str(shop["root"] / "lake"),
        "rejects",
        pd.DataFrame(
            {
                "review_body": pd.Series(dtype="string"),
                "reject_reason": pd.Series(dtype="string"),
                "source_row": pd.Series(dtype="int64"),
            }
        ),
    )
    catalog.build_catalog(str(shop["root"] / "lake"), str(shop["root"] / "catalog.duckdb"))

    code = run(shop, "monitor", "check", "--capture", str(shop["root"] / "capture"), "--run", "traffic")
    out = capsys.readouterr().out
    assert code == 1
    run_dir = shop["root"] / "monitoring/traffic"
    report = json.loads((run_dir / "model_quality.json").read_text())
    assert report["ground_truth"]["by_source"] == {"human": 100, "ratings": 500}
    assert report["ground_truth"]["joined_predictions"] == 600
    assert report["capture"]["predictions"] == 1000 and report["capture"]["rejected"] == {}
    champion = report["variants"]["champion"]
    assert [w["start"][:10] for w in champion["windows"]] == ["2026-11-01", "2026-11-02"]
    day1 = champion["windows"][0]
    assert day1["accuracy"]["value"] > 0.8 and not any(c["violated"] for c in day1["checks"])
    assert any(c["violated"] for c in champion["windows"][1]["checks"])  # the ratings drifted away
    assert {v["window"][:10] for v in report["violations"] if v["variant"] == "champion"} == {"2026-11-02"}
    ab = report["ab"]
    assert ab["reference"] == "champion" and set(ab["comparisons"]) == {"challenger"}
    assert ab["comparisons"]["challenger"]["accuracy_difference"]["value"] < 0
    assert "A/B challenger vs champion" in out and "model quality:" in out

    document = json.loads((run_dir / "constraint_violations.json").read_text())
    checked = {(c["variant"], c["feature_name"]) for c in document["checks"]}
    assert ("champion", "predicted_label") in checked and ("challenger", "predicted_label") not in checked
    assert not any(name == "product_category" for _, name in checked)  # not in captured requests
    challenger_doc = json.loads((run_dir / "variants/challenger/constraint_violations.json").read_text())
    skipped = {s["feature_name"]: s["reason"] for s in challenger_doc["not_checked"]}
    assert (
        "challenger-v1" in skipped["predicted_label"]
        and skipped["product_category"] == "not in the captured requests"
    )
    drifted = {(v["variant"], v["feature_name"]) for v in document["violations"]}
    assert ("champion", "word_count") in drifted  # day 2's longer reviews
    page = (run_dir / "report.html").read_text()
    assert "Model quality" in page and "A/B" in page and "Variant challenger" in page

    # The low-confidence answers go to the review queue as served, keyed by inferenceId.
    assert run(shop, "review", "enqueue", "--capture", str(shop["root"] / "capture")) == 0
    queued = read_queue(str(shop["root"] / "queue"))
    assert queued and all(r["confidence"] < 0.9 for r in queued)
    assert {r["review_id"] for r in queued} <= set(truth["day1"]) | set(truth["day2"])
    assert not {r["review_id"] for r in queued} & {str(k) for k in human}  # labelled already
    assert [r["confidence"] for r in queued] == sorted(r["confidence"] for r in queued)
