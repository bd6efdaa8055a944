"""SageMaker inference handler for reviewpipe sentiment models; ships as `code/inference.py`.

Self-contained on purpose: SageMaker's Hugging Face / PyTorch / scikit-learn containers import
this file alone (with `code/requirements.txt` installed), so it needs only the standard library,
numpy and, per model kind, torch + transformers or joblib + scikit-learn. Never import reviewpipe.

Contract (the inference toolkit's four functions):
  model_fn(model_dir)                -> the loaded model (HF save_pretrained files or model.joblib at the root)
  input_fn(body, content_type)       -> {"texts": [...], "content_type": ...}
  predict_fn(data, model)            -> {"predictions": [{"label", "probabilities", "model_version"}, ...]}
  output_fn(prediction, accept)      -> bytes (application/json or application/jsonlines)

Requests: application/json {"inputs": "text"} or {"inputs": ["text", ...]}; application/jsonlines
with one {"inputs": ...} per line. JSON responses are {"predictions": [...], "model_version": ...};
JSON Lines responses are one prediction per review. Texts over the model's token limit are
truncated. Bad requests raise RequestError, whose `status` is the HTTP code a server should send.

Probabilities: a package built with a `calibration.json` (evaluate's per-model calibration: a
temperature, a log prior shift from the training to the production class mix, and per-class
decision weights) serves calibrated probabilities, p ∝ exp(log p_model / T + shift), and the label
argmax(weights · p); so a review threshold such as 0.90 means 90 % on real traffic.

Settings come from the environment, as a SageMaker endpoint's Environment would set them:
  REVIEWPIPE_QUANTIZE=none|int8|int8-dynamic   REVIEWPIPE_BACKEND=torch|onnx   REVIEWPIPE_NUM_THREADS=N
  REVIEWPIPE_BATCH_SIZE=N (rows per forward pass)   REVIEWPIPE_MAX_LENGTH=N (token limit)
  REVIEWPIPE_MODEL_VERSION (overrides model_info.json)
"""

from __future__ import annotations

import json
import logging
import os
import threading
import warnings
from typing import Any

import numpy as np

LABELS = (-1, 0, 1)  # sentiment labels in class-id order
JSON = "application/json"
JSONLINES = "application/jsonlines"
_CONTENT_TYPES = {
    JSON: JSON,
    "text/json": JSON,
    JSONLINES: JSONLINES,
    "application/jsonl": JSONLINES,
    "application/x-jsonlines": JSONLINES,
    "application/json-lines": JSONLINES,
}
MODEL_INFO = "model_info.json"
CALIBRATION_FILE = "calibration.json"
SKLEARN_FILE = "model.joblib"
AUTOGLUON_DIR = "autogluon"
AUTOGLUON_TEXT, AUTOGLUON_CATEGORY = "review_body", "product_category"  # = models.automl.TEXT, CATEGORY
# Characters kept before tokenising: far more than any token limit needs (a word piece spans at
# most ~100 characters), but it bounds tokenizer time for a multi-megabyte "review".
_CHARS_PER_TOKEN_BOUND = 100
MAX_PADDING_WASTE = 0.15  # share of padded tokens a forward pass may carry
# none: fp32. int8: static int8, activation scales calibrated when packaging (ONNX Runtime only), so a
# review's result does not depend on its batch. int8-dynamic: scales from each batch (batch-dependent).
QUANTIZE_MODES = ("none", "int8", "int8-dynamic")
ONNX_DIR = "onnx"  # graphs shipped in the package (or cached there by older packages)
ONNX_FILES = {"none": "model.onnx", "int8": "model.int8.onnx", "int8-dynamic": "model.int8-dynamic.onnx"}


class RequestError(ValueError):
    """A client mistake; `status` is the HTTP status to answer with."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


def _env(name: str, default: str = "") -> str:
    return os.environ.get(name, default).strip()


# ---------------------------------------------------------------- models


def max_sequence_length(config: Any, tokenizer: Any, configured: int | str = 0) -> int:
    """Where a text model truncates: the configured length (environment or package info), the
    position table and the tokenizer's own limit, whichever is shortest (512 when none is known)."""
    limits = [
        int(v)
        for v in (
            configured,
            getattr(config, "max_position_embeddings", 0),
            tokenizer.model_max_length if tokenizer.model_max_length < 10**6 else 0,
        )
        if v and int(v) > 0
    ]
    return min(limits) if limits else 512


class _Model:
    kind = "base"
    labels: tuple[int, ...] = LABELS
    version = "unversioned"
    max_length: int | None = None

    def predict_proba(self, texts: list[str]) -> np.ndarray:  # pragma: no cover - interface
        raise NotImplementedError


class SklearnModel(_Model):
    """A scikit-learn pipeline whose predict_proba takes raw texts."""

    kind = "sklearn"

    def __init__(self, path: str) -> None:
        import joblib

        self.pipeline = joblib.load(path)
        classes = [int(c) for c in getattr(self.pipeline, "classes_", range(len(LABELS)))]
        # Fit on class ids (0/1/2, reviewpipe's baseline) or on labels (-1/0/1, recognised by -1):
        # column j of predict_proba goes to its label's position; classes unseen in training stay 0.
        as_labels = classes if -1 in classes else [LABELS[c] for c in classes]
        self.positions = [LABELS.index(label) for label in as_labels]

    def predict_proba(self, texts: list[str]) -> np.ndarray:
        raw = np.asarray(self.pipeline.predict_proba(texts), dtype=np.float64)
        out = np.zeros((raw.shape[0], len(LABELS)), dtype=np.float64)
        out[:, self.positions] = raw
        return out


class HFModel(_Model):
    """An AutoModelForSequenceClassification save_pretrained directory (torch or ONNX Runtime).

    ONNX Runtime runs the graphs the package ships in onnx/ (built and, for int8, calibrated by
    `reviewpipe package`), so the endpoint serves the bytes that were scored before shipping."""

    kind = "huggingface"

    def __init__(self, model_dir: str, info: dict[str, Any]) -> None:
        import torch
        from transformers import AutoConfig, AutoTokenizer

        threads = int(_env("REVIEWPIPE_NUM_THREADS", "0") or 0)
        if threads > 0:
            torch.set_num_threads(threads)
        self.torch = torch
        self.quantize = _env("REVIEWPIPE_QUANTIZE", "none").lower() or "none"
        self.backend = _env("REVIEWPIPE_BACKEND", "torch").lower() or "torch"
        if self.quantize not in QUANTIZE_MODES:
            raise ValueError(f"REVIEWPIPE_QUANTIZE must be one of {QUANTIZE_MODES}, not {self.quantize!r}")
        if self.backend not in ("torch", "onnx"):
            raise ValueError(f"REVIEWPIPE_BACKEND must be torch or onnx, not {self.backend!r}")
        if self.backend == "torch" and self.quantize == "int8":
            raise ValueError(
                "REVIEWPIPE_QUANTIZE=int8 (static, calibrated) runs on REVIEWPIPE_BACKEND=onnx; torch has "
                "int8-dynamic only, whose results depend on the batch"
            )
        # trust_remote_code: a mean-pooling model ships its modeling file inside the package (config.json
        # auto_map, which the tokenizer reads too); standard architectures ignore the flag.
        self.tokenizer = AutoTokenizer.from_pretrained(model_dir, trust_remote_code=True)
        # A fast tokenizer's padding/truncation state is mutated per call: one caller at a time.
        self.tokenizer_lock = threading.Lock()
        config = AutoConfig.from_pretrained(model_dir, trust_remote_code=True)
        self.labels = tuple(int(config.id2label[i]) for i in range(config.num_labels))
        self.max_length = max_sequence_length(
            config, self.tokenizer, _env("REVIEWPIPE_MAX_LENGTH") or info.get("max_length") or 0
        )
        self.batch_size = int(_env("REVIEWPIPE_BATCH_SIZE", "32") or 32)
        self.onnx_session = None
        self.model = None
        shipped = os.path.join(model_dir, ONNX_DIR, ONNX_FILES[self.quantize])
        if self.backend == "onnx" and os.path.exists(shipped):
            self.onnx_session = _onnx_session(shipped)
            return
        if self.quantize == "int8":
            raise FileNotFoundError(
                f"{model_dir} has no {ONNX_DIR}/{ONNX_FILES['int8']} (the calibrated int8 graph); package "
                "the model with package.onnx.export true, or serve with REVIEWPIPE_QUANTIZE=none"
            )
        model = load_torch_model(model_dir)
        if self.backend == "onnx":
            self.onnx_session = _onnx_session(_exported(model, self.tokenizer, model_dir, self.quantize))
        elif self.quantize == "int8-dynamic":
            from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

            # Per-channel scales: per-tensor int8 cost the mean-pooling MiniLM 1.1 points of test accuracy
            # (per-channel: 0.6), at the same speed.
            model = quantize_dynamic(model, {torch.nn.Linear: per_channel_dynamic_qconfig}, dtype=torch.qint8)
        self.model = model

    def _encode(self, texts: list[str]) -> dict[str, list[list[int]]]:
        """Token ids per text, truncated to the model's limit, not padded."""
        with self.tokenizer_lock:
            return dict(self.tokenizer(texts, truncation=True, max_length=self.max_length))

    def _pad(self, encoded: dict[str, list[list[int]]], rows: list[int]) -> dict[str, np.ndarray]:
        width = max(len(encoded["input_ids"][i]) for i in rows)
        pad_id = self.tokenizer.pad_token_id or 0
        batch = {}
        for key, values in encoded.items():
            array = np.full((len(rows), width), pad_id if key == "input_ids" else 0, dtype=np.int64)
            for r, i in enumerate(rows):
                array[r, : len(values[i])] = values[i]
            batch[key] = array
        return batch

    def _logits(self, batch: dict[str, np.ndarray]) -> np.ndarray:
        if self.onnx_session is not None:
            wanted = {i.name for i in self.onnx_session.get_inputs()}
            return self.onnx_session.run(["logits"], {k: v for k, v in batch.items() if k in wanted})[0]
        with self.torch.inference_mode():
            tensors = {k: self.torch.from_numpy(v) for k, v in batch.items()}
            return self.model(**tensors).logits.float().numpy()

    def chunks(self, lengths: list[int]) -> list[list[int]]:
        """Rows grouped for forward passes: sorted by token length, at most batch_size each, and
        cut wherever padding would waste more than MAX_PADDING_WASTE of the compute (on CPU a
        padded token costs as much as a real one, and outweighs what batching saves)."""
        out: list[list[int]] = []
        current: list[int] = []
        real = 0
        for i in sorted(range(len(lengths)), key=lengths.__getitem__):
            padded = (len(current) + 1) * lengths[i]  # sorted: the newcomer is the longest
            if current and (
                len(current) >= self.batch_size or padded > (1 + MAX_PADDING_WASTE) * (real + lengths[i])
            ):
                out.append(current)
                current, real = [], 0
            current.append(i)
            real += lengths[i]
        if current:
            out.append(current)
        return out

    def predict_proba(self, texts: list[str]) -> np.ndarray:
        limit = self.max_length * _CHARS_PER_TOKEN_BOUND
        encoded = self._encode([t[:limit] for t in texts])
        out = np.empty((len(texts), len(self.labels)), dtype=np.float64)
        for rows in self.chunks([len(ids) for ids in encoded["input_ids"]]):
            logits = self._logits(self._pad(encoded, rows)).astype(np.float64)
            logits -= logits.max(axis=1, keepdims=True)
            probs = np.exp(logits)
            out[rows] = probs / probs.sum(axis=1, keepdims=True)
        return out


def load_torch_model(model_dir: str) -> Any:
    """The fp32 torch model of a save_pretrained directory, in eval mode."""
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(model_dir, trust_remote_code=True)
    model.eval()
    return model


def export_onnx(model: Any, tokenizer: Any, path: str) -> None:
    """torch -> ONNX (opset 17, dynamic batch and sequence axes, one output: logits), atomically."""
    import torch

    sample = tokenizer(
        ["a short review", "and a second, slightly longer one"], padding=True, return_tensors="pt"
    )
    names = [k for k in ("input_ids", "attention_mask", "token_type_ids") if k in sample]
    axes = {k: {0: "batch", 1: "sequence"} for k in names}
    axes["logits"] = {0: "batch"}

    class _Logits(torch.nn.Module):
        def __init__(self, inner: Any) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, *args: Any) -> Any:
            return self.inner(**dict(zip(names, args, strict=True))).logits

    tmp_path = path + ".tmp"
    with warnings.catch_warnings():  # tracer warnings about Python control flow: expected here
        warnings.simplefilter("ignore")
        torch.onnx.export(
            _Logits(model),
            tuple(sample[k] for k in names),
            tmp_path,
            input_names=names,
            output_names=["logits"],
            dynamic_axes=axes,
            opset_version=17,
            dynamo=False,
        )
    os.replace(tmp_path, path)


def _exported(model: Any, tokenizer: Any, model_dir: str, quantize: str) -> str:
    """A package without shipped graphs (built before they were): export once to a cache beside the
    model (or a temp dir when read-only); int8-dynamic quantizes that export."""
    import tempfile

    cache = os.path.join(model_dir, ONNX_DIR)
    try:
        os.makedirs(cache, exist_ok=True)
    except OSError:
        cache = tempfile.mkdtemp(prefix="reviewpipe-onnx-")
    fp32_path = os.path.join(cache, ONNX_FILES["none"])
    if not os.path.exists(fp32_path):
        export_onnx(model, tokenizer, fp32_path)
    if quantize == "none":
        return fp32_path
    path = os.path.join(cache, ONNX_FILES[quantize])
    if not os.path.exists(path):
        from onnxruntime.quantization import QuantType, quantize_dynamic

        root = logging.getLogger()
        level = root.level
        root.setLevel(max(level, logging.WARNING))  # the quantizer logs every tensor at INFO
        try:
            # per_channel: per-tensor cost 2.5 points of test accuracy on the real data, per-channel 0.6.
            quantize_dynamic(fp32_path, path + ".tmp", weight_type=QuantType.QInt8, per_channel=True)
        finally:
            root.setLevel(level)
        os.replace(path + ".tmp", path)
    return path


def _onnx_session(path: str) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")  # no busy-waiting on shared CPUs
    threads = int(_env("REVIEWPIPE_NUM_THREADS", "0") or 0)
    if threads > 0:
        options.intra_op_num_threads = threads
    return ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])


class AutoGluonModel(_Model):
    """An AutoGluon TabularPredictor (under autogluon/) over the review text and product category.

    Requests carry text only: the category is unknown (missing), as it is for a new review."""

    kind = "autogluon"

    def __init__(self, model_dir: str, info: dict[str, Any]) -> None:
        from autogluon.tabular import TabularPredictor

        logging.getLogger("autogluon").setLevel(logging.WARNING)
        self.predictor = TabularPredictor.load(
            os.path.join(model_dir, AUTOGLUON_DIR), verbosity=0, require_py_version_match=False
        )

    def predict_proba(self, texts: list[str]) -> np.ndarray:
        import pandas as pd

        frame = pd.DataFrame({AUTOGLUON_TEXT: pd.Series(texts, dtype="object")})
        frame[AUTOGLUON_CATEGORY] = pd.Series([None] * len(texts), dtype="object").astype("category")
        raw = self.predictor.predict_proba(frame, as_pandas=True)
        columns = {int(c): c for c in raw.columns}
        return np.column_stack(
            [raw[columns[s]].to_numpy(np.float64) if s in columns else np.zeros(len(raw)) for s in LABELS]
        )


def _sklearn(model_dir: str, info: dict[str, Any]) -> _Model:
    return SklearnModel(os.path.join(model_dir, SKLEARN_FILE))


# model_info.json `kind` -> its loader (model_dir, info). A new kind (an ensemble of these, say)
# adds one entry; packages without a kind (older builds) are recognised by their files.
MODEL_KINDS: dict[str, Any] = {"sklearn": _sklearn, "huggingface": HFModel, "autogluon": AutoGluonModel}


class EnsembleModel(_Model):
    """The stacked ensemble: members (each in its own kind's layout under members/<name>/) and
    stacker.json, softmax(coef · [log p_member ...] + intercept) — reviewpipe.models.ensemble.Stacker."""

    kind = "ensemble"

    def __init__(self, model_dir: str, info: dict[str, Any]) -> None:
        with open(os.path.join(model_dir, STACKER_FILE)) as f:
            spec = json.load(f)["stacker"]
        self.members = []
        for name in spec["members"]:
            member_dir = os.path.join(model_dir, "members", name)
            self.members.append(MODEL_KINDS[_kind_of(member_dir, {})](member_dir, {}))
        self.coef = np.asarray(spec["coef"], dtype=np.float64)
        self.intercept = np.asarray(spec["intercept"], dtype=np.float64)

    def predict_proba(self, texts: list[str]) -> np.ndarray:
        x = np.hstack([np.log(np.clip(m.predict_proba(texts), 1e-6, 1.0)) for m in self.members])
        z = x @ self.coef.T + self.intercept
        z -= z.max(axis=1, keepdims=True)
        p = np.exp(z)
        return p / p.sum(axis=1, keepdims=True)


MODEL_KINDS["ensemble"] = EnsembleModel
STACKER_FILE = "stacker.json"


def _kind_of(model_dir: str, info: dict[str, Any]) -> str:
    if info.get("kind") in MODEL_KINDS:
        return str(info["kind"])
    for kind, marker in (
        ("ensemble", STACKER_FILE),
        ("sklearn", SKLEARN_FILE),
        ("autogluon", AUTOGLUON_DIR),
        ("huggingface", "config.json"),
    ):
        if os.path.exists(os.path.join(model_dir, marker)):
            return kind
    raise FileNotFoundError(
        f"{model_dir} has neither {SKLEARN_FILE}, {AUTOGLUON_DIR}/ nor a Hugging Face config.json"
    )


def model_fn(model_dir: str, context: Any = None) -> _Model:
    """Load the model in `model_dir` (the unpacked tarball root)."""
    info_path = os.path.join(model_dir, MODEL_INFO)
    info: dict[str, Any] = {}
    if os.path.exists(info_path):
        with open(info_path) as f:
            info = json.load(f)
    model: _Model = MODEL_KINDS[_kind_of(model_dir, info)](model_dir, info)
    model.version = _env("REVIEWPIPE_MODEL_VERSION") or str(info.get("model_version") or "unversioned")
    model.calibration = load_calibration(model_dir)  # type: ignore[attr-defined]
    return model


# ---------------------------------------------------------------- calibration


def load_calibration(model_dir: str) -> dict[str, Any] | None:
    """The package's calibration.json (None when it has none), checked."""
    path = os.path.join(model_dir, CALIBRATION_FILE)
    if not os.path.exists(path):
        return None
    with open(path) as f:
        cal = json.load(f)
    temperature = float(cal["temperature"])
    shift = np.asarray(cal["log_prior_shift"], dtype=np.float64)
    weights = np.asarray(cal["decision_weights"], dtype=np.float64)
    if (
        temperature <= 0
        or shift.shape != (len(LABELS),)
        or weights.shape != (len(LABELS),)
        or (weights <= 0).any()
    ):
        raise ValueError(
            f"{path}: expected temperature > 0 and 3 prior shifts and 3 positive decision weights"
        )
    return {"temperature": temperature, "log_prior_shift": shift, "decision_weights": weights}


def calibrate(probs: np.ndarray, calibration: dict[str, Any] | None) -> tuple[np.ndarray, np.ndarray]:
    """(served probabilities, class index of the label) for raw model probabilities (class order -1, 0, 1).
    The same arithmetic as reviewpipe.evaluation.calibration.Calibration (this file cannot import it)."""
    if calibration is None:
        return probs, probs.argmax(axis=1)
    z = np.log(np.clip(probs, 1e-12, 1.0)) / calibration["temperature"] + calibration["log_prior_shift"]
    z -= z.max(axis=1, keepdims=True)
    served = np.exp(z)
    served /= served.sum(axis=1, keepdims=True)
    return served, (served * calibration["decision_weights"]).argmax(axis=1)


# ---------------------------------------------------------------- request / response


def _content_type(value: str | None) -> str:
    return (value or "").split(";", 1)[0].strip().lower()


def _texts_of(obj: Any, where: str) -> list[str]:
    if not isinstance(obj, dict) or "inputs" not in obj:
        raise RequestError(f'{where}: expected a JSON object with "inputs" (a string or a list of strings)')
    inputs = obj["inputs"]
    texts = [inputs] if isinstance(inputs, str) else inputs
    if not isinstance(texts, list) or not texts:
        raise RequestError(f'{where}: "inputs" must be a non-empty string or a non-empty list of strings')
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise RequestError(f"{where}: inputs[{i}] is {type(text).__name__}, expected a string")
        if not text.strip():
            raise RequestError(f"{where}: inputs[{i}] is empty; send the review text")
    return texts


def input_fn(input_data: bytes | str, content_type: str, context: Any = None) -> dict[str, Any]:
    """Parse a request body into {"texts": [...], "content_type": ...}; RequestError on bad input."""
    kind = _CONTENT_TYPES.get(_content_type(content_type))
    if kind is None:
        raise RequestError(f"unsupported content type {content_type!r}; use {JSON} or {JSONLINES}", 415)
    if isinstance(input_data, bytes | bytearray):
        try:
            input_data = bytes(input_data).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise RequestError(f"body is not valid UTF-8: {exc}") from exc
    if kind == JSON:
        try:
            obj = json.loads(input_data)
        except json.JSONDecodeError as exc:
            raise RequestError(f"malformed JSON: {exc}") from exc
        texts = _texts_of(obj, "body")
    else:
        texts = []
        for number, line in enumerate(input_data.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise RequestError(f"malformed JSON on line {number}: {exc}") from exc
            texts.extend(_texts_of(obj, f"line {number}"))
        if not texts:
            raise RequestError('empty JSON Lines body; send one {"inputs": ...} object per line')
    return {"texts": texts, "content_type": kind}


def predict_fn(data: dict[str, Any], model: _Model, context: Any = None) -> dict[str, Any]:
    """Label, per-class probabilities and model version for every text."""
    texts = data["texts"]
    probs, best = calibrate(model.predict_proba(texts), getattr(model, "calibration", None))
    keys = [str(label) for label in model.labels]
    predictions = [
        {
            "label": int(model.labels[b]),
            "probabilities": {k: round(float(p), 6) for k, p in zip(keys, row, strict=True)},
            "model_version": model.version,
        }
        for b, row in zip(best, probs, strict=True)
    ]
    return {
        "predictions": predictions,
        "model_version": model.version,
        "content_type": data.get("content_type", JSON),
    }


def output_fn(prediction: dict[str, Any], accept: str | None, context: Any = None) -> bytes:
    """Encode predictions as JSON (one object) or JSON Lines (one prediction per review)."""
    kind = _CONTENT_TYPES.get(_content_type(accept)) if accept and accept != "*/*" else None
    if accept and accept != "*/*" and kind is None:
        raise RequestError(f"cannot answer in {accept!r}; accept {JSON} or {JSONLINES}", 406)
    kind = kind or prediction.get("content_type", JSON)
    variant = prediction.get("variant")
    rows = prediction["predictions"]
    if variant is not None:
        rows = [{**row, "variant": variant} for row in rows]
    if kind == JSONLINES:
        return "".join(json.dumps(row) + "\n" for row in rows).encode("utf-8")
    body: dict[str, Any] = {"predictions": rows, "model_version": prediction.get("model_version")}
    if variant is not None:
        body["variant"] = variant
    return json.dumps(body).encode("utf-8")


# ---------------------------------------------------------------- micro-batching hooks
# Optional extras a batching server (reviewpipe serve) uses to run many requests in one
# predict_fn call; SageMaker's toolkit ignores them.


def merge_inputs(items: list[dict[str, Any]]) -> dict[str, Any]:
    """Many input_fn results -> one predict_fn input."""
    return {"texts": [text for item in items for text in item["texts"]]}


def split_predictions(prediction: dict[str, Any], items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One predict_fn result -> one per merged input, in order (each keeps its content type)."""
    out, start = [], 0
    for item in items:
        end = start + len(item["texts"])
        out.append(
            {
                **prediction,
                "predictions": prediction["predictions"][start:end],
                "content_type": item.get("content_type", JSON),
            }
        )
        start = end
    return out
