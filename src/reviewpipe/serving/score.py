"""Score a packaged model exactly as it will be served: its own code/inference.py, the serving backend.

`score_package(tarball, rows, backend)` unpacks the tarball, imports its handler from the file (as
SageMaker's toolkit does; reviewpipe's own model code is not used), loads the model with the
backend's Environment, and sends the rows through input_fn -> predict_fn -> output_fn as JSON
requests. The probabilities it returns are the served ones (rounded as the response rounds them),
so the gate can compare the served artifact with the fp32 model it evaluated.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from reviewpipe import SENTIMENTS
from reviewpipe.errors import ReviewpipeError
from reviewpipe.serving.loader import load_package
from reviewpipe.serving.package import file_sha256

# backend name -> the Environment code/inference.py reads (REVIEWPIPE_BACKEND / REVIEWPIPE_QUANTIZE).
# "int8" is what serve.quantize=int8 serves (ONNX: static int8, fixed activation scales);
# "int8-dynamic" scales activations per batch, so a review's result depends on its batch.
BACKENDS: dict[str, dict[str, str]] = {
    "torch": {"REVIEWPIPE_BACKEND": "torch", "REVIEWPIPE_QUANTIZE": "none"},
    "torch-int8-dynamic": {"REVIEWPIPE_BACKEND": "torch", "REVIEWPIPE_QUANTIZE": "int8-dynamic"},
    "onnx": {"REVIEWPIPE_BACKEND": "onnx", "REVIEWPIPE_QUANTIZE": "none"},
    "onnx-int8": {"REVIEWPIPE_BACKEND": "onnx", "REVIEWPIPE_QUANTIZE": "int8"},
    "onnx-int8-dynamic": {"REVIEWPIPE_BACKEND": "onnx", "REVIEWPIPE_QUANTIZE": "int8-dynamic"},
}
REFERENCE_BACKEND = "torch"  # fp32, the model as trained and evaluated
JSON = "application/json"


def backend_name(backend: str, quantize: str) -> str:
    """The BACKENDS name for serve.backend / serve.quantize (`onnx` + `int8` -> `onnx-int8`)."""
    name = backend if quantize in ("none", "") else f"{backend}-{quantize}"
    if name not in BACKENDS:
        raise ReviewpipeError(
            f"serve.backend={backend} with serve.quantize={quantize} is not a serving backend; "
            f"choose one of {sorted(BACKENDS)}"
        )
    return name


def serving_backend(serve: Mapping[str, Any]) -> str:
    """The backend a deployment with this `serve` section runs (what the gate must score)."""
    return backend_name(str(serve["backend"]), str(serve["quantize"]))


def deployed_backend(serve: Mapping[str, Any], deploy: Mapping[str, Any] | None) -> str:
    """The backend the configured deploy target runs: `serve.backend`/`serve.quantize` for the local
    server, `deploy.sagemaker.backend`/`quantize` for a SageMaker endpoint (its container has torch
    and no onnxruntime), so the gate scores the package as it will actually be served."""
    if deploy is not None and deploy.get("target") == "sagemaker":
        sagemaker = deploy.get("sagemaker") or {}
        return backend_name(str(sagemaker.get("backend", "torch")), str(sagemaker.get("quantize", "none")))
    return serving_backend(serve)


@dataclass
class PackageScore:
    """What the packaged artifact served for each row, and its metrics when labels were given."""

    backend: str
    sha256: str | None
    model_version: str
    kind: str
    probabilities: np.ndarray  # (rows, 3), class order -1, 0, 1, as served (6 decimals)
    metrics: dict[str, Any] = field(default_factory=dict)
    # the labels the package answered (-1/0/1): with a decision rule shipped in the package they can
    # differ from the probabilities' argmax; None: take the argmax
    labels: np.ndarray | None = None

    @property
    def predicted(self) -> np.ndarray:
        """Served labels (-1/0/1), as the package answered them."""
        if self.labels is not None:
            return self.labels
        return np.asarray(SENTIMENTS)[self.probabilities.argmax(axis=1)]

    def compare(self, reference: PackageScore | np.ndarray) -> dict[str, float]:
        """Agreement of labels and the largest per-row probability difference against `reference`
        (another score, or (rows, 3) probabilities in class order -1, 0, 1, e.g. the fp32 model's)."""
        other = reference.probabilities if isinstance(reference, PackageScore) else np.asarray(reference)
        if other.shape != self.probabilities.shape:
            raise ReviewpipeError(
                f"cannot compare scores of shape {self.probabilities.shape} with {other.shape}: "
                "score the same rows"
            )
        mine = self.probabilities.argmax(axis=1)
        if isinstance(reference, PackageScore):  # served labels on both sides (decision rules included)
            mine = np.searchsorted(SENTIMENTS, self.predicted)
            other_labels = np.searchsorted(SENTIMENTS, reference.predicted)
        else:
            other_labels = other.argmax(axis=1)
        return {
            "agreement": float((other_labels == mine).mean()),
            "max_probability_difference": float(np.abs(other - self.probabilities).max()),
        }

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON for the registry and reports (no per-row data)."""
        return {
            "backend": self.backend,
            "package_sha256": self.sha256,
            "model_version": self.model_version,
            "kind": self.kind,
            "rows": int(len(self.probabilities)),
            **self.metrics,
        }


def score_package(
    tarball: str | Path,
    rows: pd.DataFrame | Sequence[str],
    backend: str = "onnx-int8",
    *,
    text_column: str = "review_body",
    label_column: str | None = "sentiment",
    request_rows: int = 64,
    max_unpacked_bytes: int = 4 * 1024**3,
    threads: int = 0,
) -> PackageScore:
    """Serve `rows` through the package's own handler with `backend` (a BACKENDS name).

    `rows`: a frame with `text_column` (and `label_column` with -1/0/1 for metrics), or texts.
    Requests carry `request_rows` reviews each; results do not depend on it for a batch-independent
    backend. The caller vouches for the tarball (it runs its code): score what `package` built."""
    if backend not in BACKENDS:
        raise ReviewpipeError(f"unknown serving backend {backend!r}; choose one of {sorted(BACKENDS)}")
    texts, truth = _texts_and_labels(rows, text_column, label_column)
    env = {**BACKENDS[backend], "REVIEWPIPE_BATCH_SIZE": str(request_rows)}
    if threads > 0:
        env["REVIEWPIPE_NUM_THREADS"] = str(threads)
    path = Path(tarball)
    loaded = load_package(path, max_unpacked_bytes=max_unpacked_bytes, env=env, name=f"score_{backend}")
    try:
        answers = [
            _served(loaded.module, loaded.model, texts[start : start + request_rows])
            for start in range(0, len(texts), request_rows)
        ]
    finally:
        loaded.close()
    probabilities = np.vstack([a[0] for a in answers])
    labels = np.concatenate([a[1] for a in answers])
    score = PackageScore(
        backend=backend,
        sha256=file_sha256(path) if path.is_file() else None,
        model_version=loaded.version,
        kind=str(loaded.info.get("kind", "unknown")),
        probabilities=probabilities,
        labels=labels,
    )
    if truth is not None:  # the metrics of the labels the package answered (its decision rule)
        from sklearn.metrics import accuracy_score, f1_score

        score.metrics = {
            "accuracy": float(accuracy_score(truth, labels)),
            "macro_f1": float(
                f1_score(truth, labels, labels=list(SENTIMENTS), average="macro", zero_division=0)
            ),
            "rows": int(len(truth)),
        }
    return score


def _texts_and_labels(
    rows: pd.DataFrame | Sequence[str], text_column: str, label_column: str | None
) -> tuple[list[str], np.ndarray | None]:
    if isinstance(rows, pd.DataFrame):
        if text_column not in rows.columns:
            raise ReviewpipeError(
                f"rows to score have no {text_column!r} column; columns: {list(rows.columns)}"
            )
        texts = rows[text_column].tolist()
        truth = None
        if label_column and label_column in rows.columns:
            truth = rows[label_column].to_numpy(dtype=int)
            bad = sorted(set(truth.tolist()) - set(SENTIMENTS))
            if bad:
                raise ReviewpipeError(f"{label_column} holds {bad}; expected sentiments {list(SENTIMENTS)}")
    else:
        texts, truth = list(rows), None
    for i, text in enumerate(texts):
        if not isinstance(text, str) or not text.strip():
            raise ReviewpipeError(f"row {i} has no review text ({text!r}); drop it before scoring")
    if not texts:
        raise ReviewpipeError("no rows to score")
    return texts, truth


def _served(module: Any, model: Any, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """One JSON request through input_fn -> predict_fn -> output_fn; (probabilities, labels) as answered."""
    body = json.dumps({"inputs": texts}).encode("utf-8")
    answer = module.output_fn(module.predict_fn(module.input_fn(body, JSON), model), JSON)
    if isinstance(answer, tuple):  # handlers may return (body, content type)
        answer = answer[0]
    predictions = json.loads(answer)["predictions"]
    keys = [str(label) for label in SENTIMENTS]
    probabilities = np.asarray([[p["probabilities"][k] for k in keys] for p in predictions], dtype=np.float64)
    return probabilities, np.asarray([int(p["label"]) for p in predictions], dtype=int)
