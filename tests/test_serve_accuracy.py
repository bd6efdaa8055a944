"""CPU speed options (dynamic int8, ONNX Runtime) against the original model on the real test split.

Runs only when the trained BERT (models/bert) and the prepared real test split exist; writes the
figures to reports/serve/speed_options.json and fails if an option costs more than 2 points of accuracy.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import numpy as np
import pytest

from reviewpipe.serving import inference

ROOT = Path(__file__).resolve().parents[1]
MODEL = ROOT / "models" / "bert"
TEST_SPLIT = ROOT / "data" / "prepared" / "test.parquet"
OPTIONS = [("torch", "none"), ("torch", "int8"), ("onnx", "none"), ("onnx", "int8")]


@pytest.mark.slow
@pytest.mark.realdata
def test_speed_options_keep_accuracy_on_the_real_test_split(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if not (MODEL / "config.json").exists() or not TEST_SPLIT.exists():
        pytest.skip("needs models/bert and data/prepared/test.parquet (dvc repro bert)")
    import pandas as pd

    test = pd.read_parquet(TEST_SPLIT, columns=["review_body", "sentiment"])
    texts, truth = test["review_body"].astype(str).tolist(), test["sentiment"].to_numpy()
    model_dir = tmp_path / "bert"
    shutil.copytree(MODEL, model_dir)  # the ONNX export cache must not land in a DVC output
    monkeypatch.setenv("REVIEWPIPE_NUM_THREADS", "1")
    results: dict[str, dict[str, float]] = {}
    predictions: dict[str, np.ndarray] = {}
    for backend, quantize in OPTIONS:
        if backend == "onnx":
            pytest.importorskip("onnxruntime")
        monkeypatch.setenv("REVIEWPIPE_BACKEND", backend)
        monkeypatch.setenv("REVIEWPIPE_QUANTIZE", quantize)
        model = inference.model_fn(str(model_dir))
        started = time.process_time()
        probs = model.predict_proba(texts)
        cpu_ms = 1000 * (time.process_time() - started) / len(texts)
        labels = np.asarray(model.labels)[probs.argmax(axis=1)]
        name = f"{backend}-{quantize}"
        predictions[name] = labels
        results[name] = {"accuracy": float((labels == truth).mean()), "cpu_ms_per_review": cpu_ms}

    reference = results["torch-none"]["accuracy"]
    for name, r in results.items():
        r["accuracy_change"] = r["accuracy"] - reference
        r["agreement_with_original"] = float((predictions[name] == predictions["torch-none"]).mean())
    out = ROOT / "reports" / "serve" / "speed_options.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"test_rows": len(texts), "options": results}, indent=2) + "\n")
    print(json.dumps(results, indent=2))

    assert results["onnx-none"]["agreement_with_original"] >= 0.995  # same maths, another runtime
    for name in ("torch-int8", "onnx-int8"):
        assert results[name]["accuracy_change"] >= -0.02, (name, results[name])
