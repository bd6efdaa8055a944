"""Monitoring the deployed model on the real data, end to end (a check run by hand; numbers printed).

In a scratch folder: ingest → catalog → prepare (the shipped reviews, course protocol), the TF-IDF
baseline as champion and a word-only TF-IDF as challenger, both packaged, a deployment record as the
deploy stage writes it, then

1. `monitor baseline`: the natural-mix training rows scored by the deployed champion (its package);
2. `monitor check --input`: a same-distribution batch (the natural-mix test rows) and a shifted batch
   (a product incident: negative reviews of two categories flood in) -> violations, by feature;
3. `reviewpipe serve` with data capture, the two variants at 0.8 / 0.2, the test reviews sent one per
   request with X-Amzn-SageMaker-Inference-Id = review id; then the shifted batch through a second
   server -> `monitor check --capture` on each: data checks per variant, model quality against the
   ratings in the lake, and the A/B comparison.

    .venv/bin/python bench/monitor_real.py [--workdir /tmp/monitor-real] [--champion PACKAGE]

--champion: a package `dvc repro package` built on the shipped data (models/package/model.tar.gz of
a course-protocol run: BERT, AutoGluon or the ensemble) is the champion instead, and the TF-IDF
baseline the challenger. Its split is the one prepare makes here (same data, same seed), so the
monitor never scores rows the champion trained on as "production".
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import yaml
from omegaconf import OmegaConf

REPO = Path(__file__).resolve().parents[1]
RAW = REPO / "data" / "raw" / "womens_clothing_ecommerce_reviews.csv.gz"


def same_package(a: Path, b: Path) -> bool:
    """Equal content, hashed in chunks (packages run to hundreds of MB: never both in memory)."""
    from reviewpipe.serving.package import file_sha256

    return file_sha256(a) == file_sha256(b)


def params_file(work: Path, raw: Path = RAW) -> Path:
    from reviewpipe.config import load_params, to_dict

    params = to_dict(load_params(REPO / "params.yaml"))
    overrides = {
        "data": {"raw_uri": str(raw)},
        "monitor": {"quality": {"window": "1h"}},
        "serve": {
            "port": 0,
            "capture": {
                "enabled": True,
                "destination": str(work / "capture" / "same"),
                "flush_interval_s": 1,
            },
        },
    }
    path = work / "params.yaml"
    path.write_text(yaml.safe_dump(OmegaConf.to_container(OmegaConf.merge(params, overrides))))
    return path


def build(work: Path, params_path: Path, champion: Path | None = None) -> None:
    from reviewpipe.config import load_params
    from reviewpipe.deploy import VariantConfig, variant_records
    from reviewpipe.models.baseline import save_model, train_baseline
    from reviewpipe.models.splits import read_split
    from reviewpipe.schema import BaselineParams
    from reviewpipe.serving.package import build_package
    from reviewpipe.stages import baseline, catalog, ingest, prepare

    params = load_params(params_path)
    for stage in (ingest, catalog, prepare, baseline):
        stage.main(params)
    if champion is None:
        word_only = BaselineParams.from_params(load_params(params_path, ["baseline.char.enabled=false"]))
        save_model(
            train_baseline(read_split("data/prepared", "train"), word_only), "models/challenger/model.joblib"
        )
        build_package(
            "models/baseline/model.joblib",
            "models/package/model.tar.gz",
            model_name="baseline",
            model_version="baseline-v1",
        )
        challenger = "models/challenger/model.joblib"
    else:
        Path("models/package").mkdir(parents=True, exist_ok=True)
        shutil.copyfile(champion, "models/package/model.tar.gz")
        challenger = "models/baseline/model.joblib"
    build_package(
        challenger, "models/package/challenger.tar.gz", model_name="challenger", model_version="challenger-v1"
    )
    variants = [
        VariantConfig("champion", "models/package/model.tar.gz", 0.8),
        VariantConfig("challenger", "models/package/challenger.tar.gz", 0.2),
    ]
    Path("models/deploy").mkdir(parents=True, exist_ok=True)
    state = {
        "target": "local",
        "endpoint_name": "reviewpipe-sentiment",
        "variants": variant_records(variants),
    }
    Path("models/deploy/deployment.json").write_text(json.dumps(state, indent=2))


def shifted_batch(unbalanced: pd.DataFrame) -> pd.DataFrame:
    """A product incident: negative reviews of Dresses and Blouses flood in beside ordinary traffic."""
    held_out = unbalanced[unbalanced["split_type"] != "train"]
    incident = held_out[
        (held_out["rating_sentiment"] == -1) & held_out["product_category"].isin(["Dresses", "Blouses"])
    ]
    ordinary = held_out[held_out["split_type"] == "test"].sample(len(incident), random_state=1)
    return pd.concat([incident, ordinary]).drop_duplicates("review_id").reset_index(drop=True)


def check(params_path: Path, *args: str) -> dict:
    from reviewpipe.cli import main

    run = args[args.index("--run") + 1]
    code = main(["monitor", "check", "--params", str(params_path), "--no-fail", *args])
    assert code == 0
    document = json.loads(Path(f"monitoring/{run}/constraint_violations.json").read_text())
    return document


def summary(document: dict) -> dict:
    by_variant: dict[str, list[str]] = {}
    for v in document["violations"]:
        by_variant.setdefault(str(v["variant"]), []).append(f"{v['feature_name']}:{v['metric']}")
    return {
        "checks": len(document["checks"]),
        "violations": len(document["violations"]),
        "by_variant": by_variant,
        "model_quality_violations": len(document["model_quality_violations"]),
    }


def serve_and_send(params_path: Path, destination: Path, reviews: pd.DataFrame) -> float:
    """Start `reviewpipe serve` with capture to `destination`, send every review as its own request
    (inference id = review id), stop it (SIGTERM flushes the capture); returns requests/s."""
    config = yaml.safe_load(params_path.read_text())
    config["serve"]["capture"]["destination"] = str(destination)
    destination.parent.mkdir(parents=True, exist_ok=True)
    run_params = destination.parent / f"{destination.name}.params.yaml"
    run_params.write_text(yaml.safe_dump(config))
    reviewpipe = str(Path(sys.executable).parent / "reviewpipe")
    server = subprocess.Popen(
        [
            reviewpipe,
            "serve",
            "--variant",
            "champion=models/package/model.tar.gz:0.8",
            "--variant",
            "challenger=models/package/challenger.tar.gz:0.2",
            "--params",
            str(run_params),
            "--log-level",
            "WARNING",
            "--trust",  # packages built here, not registered
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        url = server.stdout.readline().split("listening on ", 1)[1].split()[0]
        host, port = url.removeprefix("http://").split(":")
        for _ in range(600):
            conn = http.client.HTTPConnection(host, int(port), timeout=10)
            try:
                conn.request("GET", "/ping")
                if conn.getresponse().status == 200:
                    break
            except OSError:
                pass
            finally:
                conn.close()
            time.sleep(0.5)
        started = time.perf_counter()
        conn = http.client.HTTPConnection(host, int(port), timeout=30)
        for row in reviews.itertuples():
            conn.request(
                "POST",
                "/invocations",
                body=json.dumps({"inputs": row.review_body}),
                headers={
                    "Content-Type": "application/json",
                    "X-Amzn-SageMaker-Inference-Id": str(row.review_id),
                },
            )
            response = conn.getresponse()
            response.read()
            assert response.status == 200, response.status
        conn.close()
        rate = len(reviews) / (time.perf_counter() - started)
    finally:
        server.terminate()
        server.wait(timeout=120)
    return rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", help="scratch folder (default: a new temporary one)")
    parser.add_argument(
        "--raw",
        type=Path,
        default=RAW,
        help="raw reviews CSV (default: the shipped data; a small one: a smoke run)",
    )
    parser.add_argument(
        "--champion",
        type=Path,
        help="a package built on the shipped data (course protocol) to serve as champion; "
        "the TF-IDF baseline is then the challenger",
    )
    args = parser.parse_args()
    # paths given are relative to the caller: resolve them before moving into the scratch folder
    raw, champion = args.raw.resolve(), args.champion.resolve() if args.champion else None
    work = Path(args.workdir or tempfile.mkdtemp(prefix="monitor-real-")).resolve()
    work.mkdir(parents=True, exist_ok=True)
    os.chdir(work)
    shutil.copytree(REPO / "conf", work / "conf", dirs_exist_ok=True)
    params_path = params_file(work, raw)
    started = time.perf_counter()
    if not Path("models/deploy/deployment.json").exists():  # a rerun in the same folder reuses the build
        build(work, params_path, champion)
    elif champion and not same_package(champion, Path("models/package/model.tar.gz")):
        sys.exit(f"{work} was built with another champion package; use a new --workdir")
    from reviewpipe.cli import main as cli

    assert cli(["monitor", "baseline", "--params", str(params_path)]) == 0
    baseline = json.loads(Path("monitoring/baseline/statistics.json").read_text())
    quality = json.loads(Path("monitoring/baseline/model_quality.json").read_text())
    unbalanced = pd.read_parquet("data/prepared/unbalanced.parquet")
    test = unbalanced[unbalanced["split_type"] == "test"].reset_index(drop=True)
    test.to_parquet("same.parquet", index=False)
    shifted = shifted_batch(unbalanced)
    shifted.to_parquet("shifted.parquet", index=False)

    results = {
        "baseline": {
            "rows": baseline["dataset"]["item_count"],
            "source": baseline["dataset"]["source"],
            "model": baseline["model"],
            "validation_natural_quality": {k: quality[k] for k in ("n", "accuracy", "macro_f1")},
        },
        "same_distribution_batch": {
            "rows": len(test),
            **summary(check(params_path, "--input", "same.parquet", "--run", "same")),
        },
        "shifted_batch": {
            "rows": len(shifted),
            "negative_share": round(float((shifted["rating_sentiment"] == -1).mean()), 3),
            **summary(check(params_path, "--input", "shifted.parquet", "--run", "shifted")),
        },
    }
    for name, frame in (("same", test), ("shift", shifted)):
        rate = serve_and_send(params_path, work / "capture" / name, frame)
        document = check(params_path, "--capture", str(work / "capture" / name), "--run", f"capture_{name}")
        report = json.loads(Path(f"monitoring/capture_{name}/model_quality.json").read_text())
        results[f"capture_{name}"] = {
            "requests": len(frame),
            "requests_per_s_sequential": round(rate, 1),
            **summary(document),
            "ground_truth": report["ground_truth"],
            "variants": {
                v: {k: body["overall"][k] for k in ("n", "accuracy", "macro_f1")}
                for v, body in report["variants"].items()
            },
            "ab": report["ab"],
        }
    results["seconds"] = round(time.perf_counter() - started, 1)
    print(json.dumps(results, indent=2))
    Path("monitor_real.json").write_text(json.dumps(results, indent=2))
    print(f"results: {work / 'monitor_real.json'}; reports under {work / 'monitoring'}")


if __name__ == "__main__":
    main()
