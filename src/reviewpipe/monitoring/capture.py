"""Captured traffic in SageMaker's data-capture format, as a frame of served predictions.

SageMaker (and `reviewpipe serve` with capture on) writes JSON Lines under
`{prefix}/{endpoint}/{variant}/yyyy/mm/dd/hh/*.jsonl`, one record per request:

    {"captureData": {"endpointInput":  {"observedContentType", "mode": "INPUT",  "data", "encoding"},
                     "endpointOutput": {"observedContentType", "mode": "OUTPUT", "data", "encoding"}},
     "eventMetadata": {"eventId", "inferenceId" (optional, set by the caller), "inferenceTime"},
     "eventVersion": "0"}

`encoding` is JSON or CSV (data is the payload text) or BASE64 (data is the payload, base64).
Requests are reviewpipe's: application/json {"inputs": text | [texts]}, application/jsonlines (one
{"inputs": ...} per line) or text/csv (one text per line); responses {"predictions": [...]} or one
prediction per JSON line, each {"label", "probabilities", "model_version"}.

`read_capture` gives one row per review: the variant and endpoint (from the path), event and
inference ids, the time, the text, and what was answered (label, class probabilities, confidence,
model version). The join key for ground truth is the inferenceId (SageMaker's rule: the eventId
when the caller set none); a request holding n > 1 reviews gives keys `{id}#0` … `{id}#{n-1}`.
Callers who want quality monitoring send one review per request with InferenceId = review id.
Records that cannot be read are not dropped silently: they are counted by reason, with examples.
"""

from __future__ import annotations

import base64
import csv
import datetime as dt
import io
import json
import posixpath
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from reviewpipe import SENTIMENTS, storage
from reviewpipe.errors import ReviewpipeError

# Path components after the variant: yyyy/mm/dd/hh/file.jsonl
_DATE_DEPTH = 5
PROBABILITY_COLUMNS = [f"p_{s}" for s in SENTIMENTS]
CAPTURE_COLUMNS = [
    "key",
    "event_id",
    "inference_id",
    "inference_time",
    "endpoint",
    "variant",
    "text",
    "predicted_label",
    *PROBABILITY_COLUMNS,
    "confidence",
    "model_version",
]
MAX_EXAMPLES = 3


class BadRecord(ValueError):
    """One capture record that cannot be read; the message is the reason."""


@dataclass
class Capture:
    """Served predictions (one row per review) and what could not be read."""

    frame: pd.DataFrame
    files: int
    records: int
    rejected: Counter = field(default_factory=Counter)
    examples: dict[str, list[str]] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        return {
            "files": self.files,
            "records": self.records,
            "predictions": len(self.frame),
            "rejected": dict(self.rejected),
            "rejected_examples": self.examples,
            "variants": {
                str(k): int(v) for k, v in self.frame["variant"].value_counts().sort_index().items()
            },
        }


def _payload(part: Any, what: str) -> tuple[str, str]:
    """(content type, payload text) of endpointInput / endpointOutput."""
    if not isinstance(part, dict) or "data" not in part:
        raise BadRecord(f"no captureData.{what}.data")
    encoding = str(part.get("encoding", "")).upper()
    data = part["data"]
    if encoding == "BASE64":
        try:
            text = base64.b64decode(data, validate=True).decode("utf-8")
        except (ValueError, TypeError) as exc:
            raise BadRecord(f"{what}: data is not base64-encoded UTF-8") from exc
    elif encoding in ("JSON", "CSV"):
        text = data if isinstance(data, str) else json.dumps(data)
    else:
        raise BadRecord(f"{what}: unknown encoding {encoding or 'none'!r} (JSON, CSV or BASE64)")
    content_type = str(part.get("observedContentType", "")).split(";", 1)[0].strip().lower()
    return content_type, text


def _json_lines(text: str, what: str) -> list[Any]:
    try:
        return [json.loads(line) for line in text.splitlines() if line.strip()]
    except json.JSONDecodeError as exc:
        raise BadRecord(f"{what}: not JSON Lines") from exc


def request_texts(content_type: str, text: str) -> list[str]:
    """The reviews of one captured request."""
    if content_type in ("text/csv", "text/plain"):
        return [row[0] if row else "" for row in csv.reader(io.StringIO(text))]
    if "jsonl" in content_type or "json-lines" in content_type:
        bodies = _json_lines(text, "endpointInput")
    elif "json" in content_type:
        try:
            bodies = [json.loads(text)]
        except json.JSONDecodeError as exc:
            raise BadRecord("endpointInput: not JSON") from exc
    else:
        raise BadRecord(f"endpointInput: unsupported content type {content_type or 'none'!r}")
    texts: list[str] = []
    for body in bodies:
        inputs = body.get("inputs") if isinstance(body, dict) else None
        if isinstance(inputs, str):
            texts.append(inputs)
        elif isinstance(inputs, list) and all(isinstance(t, str) for t in inputs):
            texts.extend(inputs)
        else:
            raise BadRecord('endpointInput: expected {"inputs": text or [texts]}')
    return texts


def response_predictions(content_type: str, text: str) -> list[dict[str, Any]]:
    """The predictions of one captured response."""
    if "jsonl" in content_type or "json-lines" in content_type:
        rows = _json_lines(text, "endpointOutput")
    elif "json" in content_type:
        try:
            body = json.loads(text)
        except json.JSONDecodeError as exc:
            raise BadRecord("endpointOutput: not JSON") from exc
        rows = body.get("predictions") if isinstance(body, dict) else None
        if not isinstance(rows, list):
            raise BadRecord('endpointOutput: expected {"predictions": [...]}')
    else:
        raise BadRecord(f"endpointOutput: unsupported content type {content_type or 'none'!r}")
    for row in rows:
        probabilities = row.get("probabilities") if isinstance(row, dict) else None
        if not isinstance(probabilities, dict) or not all(str(s) in probabilities for s in SENTIMENTS):
            raise BadRecord("endpointOutput: a prediction without probabilities for -1, 0 and 1")
    return rows


def _utc(value: Any) -> dt.datetime:
    """An ISO 8601 time as aware UTC (naive times are UTC, as SageMaker writes them)."""
    try:
        moment = dt.datetime.fromisoformat(str(value))
    except ValueError as exc:
        raise BadRecord(f"eventMetadata.inferenceTime {value!r} is not an ISO 8601 time") from exc
    return moment.replace(tzinfo=dt.UTC) if moment.tzinfo is None else moment.astimezone(dt.UTC)


def parse_record(record: Any, endpoint: str | None, variant: str) -> list[dict[str, Any]]:
    """One capture record → one row per review (see CAPTURE_COLUMNS)."""
    if not isinstance(record, dict) or not isinstance(record.get("captureData"), dict):
        raise BadRecord("no captureData")
    meta = record.get("eventMetadata")
    if not isinstance(meta, dict) or not meta.get("eventId") or not meta.get("inferenceTime"):
        raise BadRecord("no eventMetadata.eventId / inferenceTime")
    when = _utc(meta["inferenceTime"])
    data = record["captureData"]
    if "endpointOutput" not in data:
        raise BadRecord("no endpointOutput (capture mode Input only): nothing was answered to monitor")
    texts = request_texts(*_payload(data.get("endpointInput"), "endpointInput"))
    predictions = response_predictions(*_payload(data["endpointOutput"], "endpointOutput"))
    if len(texts) != len(predictions) or not texts:
        raise BadRecord(f"{len(texts)} reviews in the request but {len(predictions)} predictions")
    event_id = str(meta["eventId"])
    inference_id = meta.get("inferenceId")
    base = str(inference_id) if inference_id not in (None, "") else event_id
    rows = []
    for i, (text, prediction) in enumerate(zip(texts, predictions, strict=True)):
        probabilities = [float(prediction["probabilities"][str(s)]) for s in SENTIMENTS]
        label = prediction.get("label")  # what was answered (a calibrated package's decision rule)
        if label not in SENTIMENTS or isinstance(label, bool):
            label = SENTIMENTS[int(np.argmax(probabilities))]
        rows.append(
            {
                "key": base if len(texts) == 1 else f"{base}#{i}",
                "event_id": event_id,
                "inference_id": None if inference_id in (None, "") else str(inference_id),
                "inference_time": when,
                "endpoint": endpoint,
                "variant": variant,
                "text": text,
                "predicted_label": int(label),
                **dict(zip(PROBABILITY_COLUMNS, probabilities, strict=True)),
                "confidence": max(probabilities),
                "model_version": None
                if prediction.get("model_version") is None
                else str(prediction["model_version"]),
            }
        )
    return rows


def capture_files(
    uri: str, options: storage.StorageOptions | None = None
) -> list[tuple[str, str | None, str]]:
    """(file, endpoint, variant) for every *.jsonl under `uri`, laid out as
    {endpoint}/{variant}/yyyy/mm/dd/hh/*.jsonl below it (uri may be the prefix, an endpoint's or a
    variant's folder)."""
    fs, root = storage.get_fs(uri, options)
    if not fs.exists(root):
        raise ReviewpipeError(f"no captured data at {uri}: give the data-capture prefix (local or s3://)")
    found = []
    for file in sorted(fs.find(root)):
        if not file.endswith(".jsonl"):
            continue
        parts = posixpath.normpath(file).split("/")
        if len(parts) < _DATE_DEPTH + 1 or not all(p.isdigit() for p in parts[-_DATE_DEPTH:-1]):
            raise ReviewpipeError(
                f"{file} is not laid out as {{endpoint}}/{{variant}}/yyyy/mm/dd/hh/*.jsonl under {uri}"
            )
        endpoint = parts[-(_DATE_DEPTH + 2)] if len(parts) >= _DATE_DEPTH + 2 else None
        found.append((file, endpoint, parts[-(_DATE_DEPTH + 1)]))
    if not found:
        raise ReviewpipeError(f"no *.jsonl capture files under {uri}")
    return found


def read_capture(uri: str, options: storage.StorageOptions | None = None) -> Capture:
    """Every captured prediction under `uri` (see the module docstring)."""
    fs, _ = storage.get_fs(uri, options)
    rows: list[dict[str, Any]] = []
    rejected: Counter = Counter()
    examples: dict[str, list[str]] = {}
    files = capture_files(uri, options)
    records = 0
    for file, endpoint, variant in files:
        with fs.open(file, "r", encoding="utf-8") as f:
            for number, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                records += 1
                try:
                    rows.extend(parse_record(json.loads(line), endpoint, variant))
                except (json.JSONDecodeError, BadRecord) as exc:
                    reason = (
                        "not a JSON line (torn write?)" if isinstance(exc, json.JSONDecodeError) else str(exc)
                    )
                    rejected[reason] += 1
                    if len(examples.setdefault(reason, [])) < MAX_EXAMPLES:
                        examples[reason].append(f"{file}:{number}")
    frame = pd.DataFrame(rows, columns=CAPTURE_COLUMNS)
    frame["inference_time"] = pd.to_datetime(frame["inference_time"], utc=True)
    return Capture(
        frame.sort_values(["inference_time", "key"], kind="stable").reset_index(drop=True),
        len(files),
        records,
        rejected,
        examples,
    )
