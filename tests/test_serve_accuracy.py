"""Serving backends against the fp32 model on the real test split, through the packaged artifact.

Runs only when the trained BERT (models/bert) and the prepared real splits exist (a benchmark run by
hand, not CI): packages the model as `dvc repro package` does (static int8 calibrated on validation
reviews), scores every backend with score_package, writes reports/serve/speed_options.json, and
fails if a batch-independent backend moves a review with its batch or costs over 2 points.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from reviewpipe.serving import onnx_build, package
from reviewpipe.serving.score import score_package
from tests.helpers.params import conf_section

ROOT = Path(__file__).resolve().parents[1]
MODEL = ROOT / "models" / "bert"
SPLITS = ROOT / "data" / "prepared"
BACKENDS = ["torch", "onnx", "onnx-int8", "torch-int8-dynamic", "onnx-int8-dynamic"]
BATCH_INDEPENDENT = ("torch", "onnx", "onnx-int8")


@pytest.mark.slow
@pytest.mark.realdata
def test_serving_backends_on_the_real_test_split(tmp_path: Path) -> None:
    if not (MODEL / "config.json").exists() or not (SPLITS / "test.parquet").exists():
        pytest.skip("needs models/bert and data/prepared (dvc repro bert)")
    import pandas as pd

    conf = conf_section("package")
    calibration = pd.read_parquet(SPLITS / "validation.parquet")["review_body"].tolist()
    tarball = tmp_path / "model.tar.gz"
    package.build_package(
        MODEL,
        tarball,
        model_name="bert",
        onnx=onnx_build.OnnxSettings.from_mapping(conf.onnx),
        calibration_texts=calibration,
    )
    test = pd.read_parquet(SPLITS / "test.parquet", columns=["review_body", "sentiment"])
    results: dict[str, dict[str, float]] = {}
    scores = {}
    for backend in BACKENDS:
        started = time.process_time()
        scores[backend] = batched = score_package(tarball, test, backend, request_rows=32, threads=1)
        cpu_ms = 1000 * (time.process_time() - started) / len(test)
        alone = score_package(tarball, test.head(64), backend, request_rows=1, threads=1)
        head = batched.probabilities[:64]
        results[backend] = {
            **batched.metrics,
            "cpu_ms_per_review_incl_load": cpu_ms,
            "max_probability_difference_single_vs_batched": float(abs(alone.probabilities - head).max()),
        }
    for backend, score in scores.items():
        results[backend].update({f"{k}_vs_fp32": v for k, v in score.compare(scores["torch"]).items()})
    out = ROOT / "reports" / "serve" / "speed_options.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"test_rows": len(test), "backends": results}, indent=2) + "\n")
    print(json.dumps(results, indent=2))
    for backend in BATCH_INDEPENDENT:
        assert results[backend]["max_probability_difference_single_vs_batched"] <= 1e-4, backend
        assert results[backend]["accuracy"] >= results["torch"]["accuracy"] - 0.02, backend
