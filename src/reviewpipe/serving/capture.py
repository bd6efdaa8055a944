"""Data capture in SageMaker's format: what each variant was asked and what it answered.

Files (JSON Lines; local paths or s3:// through reviewpipe.storage), one new file per variant and
hour at each flush, named like SageMaker's (`MM-SS-mmm-<uuid>.jsonl`, the minute, second and
millisecond of its first record):

    {destination}/{endpoint_name}/{variant}/yyyy/mm/dd/hh/MM-SS-mmm-<uuid>.jsonl

One line per captured invocation, exactly SageMaker's layout (eventVersion "0"):

    {"captureData": {
       "endpointInput":  {"observedContentType": "application/json", "mode": "INPUT",
                          "data": "{\\"inputs\\": \\"Love it\\"}", "encoding": "JSON"},
       "endpointOutput": {"observedContentType": "application/json", "mode": "OUTPUT",
                          "data": "{\\"predictions\\": [...]}", "encoding": "JSON"}},
     "eventMetadata": {"eventId": "<uuid4>", "inferenceId": "<client's id>",
                       "inferenceTime": "2026-01-31T13:05:09Z"},
     "eventVersion": "0"}

`observedContentType` is the Content-Type header as sent (request) or answered (response).
`encoding` is JSON or CSV (then `data` is the body as text) when the content type is listed in
capture.json_content_types / capture.csv_content_types and the body is UTF-8; otherwise BASE64.
`inferenceId` is present only when the client sent X-Amzn-SageMaker-Inference-Id, as on SageMaker;
it is how ground truth is joined to predictions later. `inferenceTime` is UTC, to the second.
Only successful invocations (HTTP 200) are captured, a `sampling_percentage` share of them.

Capture never fails or slows a request beyond handing a record to a bounded buffer: a background
thread writes every `flush_interval_s`; a record that does not fit the buffer (records or bytes)
is dropped and counted, as is a record whose write failed; `close()` (SIGTERM) writes the rest.
"""

from __future__ import annotations

import base64
import json
import logging
import random
import threading
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from typing import Any

from reviewpipe import storage
from reviewpipe.errors import ReviewpipeError

log = logging.getLogger("reviewpipe.capture")
EVENT_VERSION = "0"


@dataclass(frozen=True)
class CaptureSettings:
    """The `serve.capture` params section (conf/serve/default.yaml)."""

    enabled: bool = False
    destination: str = "data/capture"
    endpoint_name: str = "reviewpipe-sentiment"
    sampling_percentage: float = 100.0
    flush_interval_s: float = 5.0
    buffer_records: int = 10000
    buffer_bytes: int = 64 * 1024 * 1024
    json_content_types: tuple[str, ...] = ("application/json", "application/jsonlines")
    csv_content_types: tuple[str, ...] = ("text/csv",)

    @classmethod
    def from_mapping(cls, values: Any) -> CaptureSettings:
        values = dict(values or {})
        unknown = set(values) - {f.name for f in fields(cls)}
        if unknown:
            raise ReviewpipeError(
                f"serve.capture has unknown keys {sorted(unknown)}; allowed: {sorted(f.name for f in fields(cls))}"
            )
        for key in ("json_content_types", "csv_content_types"):
            if key in values:
                values[key] = tuple(str(v).lower() for v in values[key] or ())
        settings = cls(**values)
        if not 0 <= float(settings.sampling_percentage) <= 100:
            raise ReviewpipeError(
                f"serve.capture.sampling_percentage must be between 0 and 100, not {settings.sampling_percentage!r}"
            )
        if settings.flush_interval_s <= 0 or settings.buffer_records < 1 or settings.buffer_bytes < 1:
            raise ReviewpipeError(
                "serve.capture: flush_interval_s, buffer_records and buffer_bytes must be above 0"
            )
        if settings.enabled and not settings.destination:
            raise ReviewpipeError("serve.capture.destination is empty; give a folder or s3:// prefix")
        return settings


@dataclass
class _Event:
    variant: str
    request: bytes
    request_type: str
    response: bytes
    response_type: str
    inference_id: str | None
    when: float
    event_id: str = field(default_factory=lambda: str(uuid.uuid4()))

    @property
    def size(self) -> int:
        return len(self.request) + len(self.response)


def _base_type(content_type: str) -> str:
    return content_type.split(";", 1)[0].strip().lower()


def _payload(body: bytes, content_type: str, mode: str, settings: CaptureSettings) -> dict[str, str]:
    kind = _base_type(content_type)
    encoding = (
        "JSON"
        if kind in settings.json_content_types
        else "CSV"
        if kind in settings.csv_content_types
        else None
    )
    if encoding is not None:
        try:
            data = body.decode("utf-8")
        except UnicodeDecodeError:
            encoding = None
    if encoding is None:
        encoding, data = "BASE64", base64.b64encode(body).decode("ascii")
    return {"observedContentType": content_type, "mode": mode, "data": data, "encoding": encoding}


def capture_record(event: _Event, settings: CaptureSettings) -> dict[str, Any]:
    """One JSON Lines record in SageMaker's data-capture layout."""
    metadata: dict[str, str] = {"eventId": event.event_id}
    if event.inference_id is not None:
        metadata["inferenceId"] = event.inference_id
    metadata["inferenceTime"] = datetime.fromtimestamp(event.when, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {
        "captureData": {
            "endpointInput": _payload(event.request, event.request_type, "INPUT", settings),
            "endpointOutput": _payload(event.response, event.response_type, "OUTPUT", settings),
        },
        "eventMetadata": metadata,
        "eventVersion": EVENT_VERSION,
    }


def capture_path(settings: CaptureSettings, variant: str, first: float) -> str:
    """Where a file whose first record is at time `first` goes."""
    t = datetime.fromtimestamp(first, UTC)
    name = f"{t:%M-%S}-{t.microsecond // 1000:03d}-{uuid.uuid4()}.jsonl"
    return storage.join(
        settings.destination,
        settings.endpoint_name,
        variant,
        f"{t:%Y}",
        f"{t:%m}",
        f"{t:%d}",
        f"{t:%H}",
        name,
    )


class DataCapture:
    """A bounded buffer of invocations and the thread that writes them."""

    def __init__(
        self,
        settings: CaptureSettings,
        options: storage.StorageOptions | None = None,
        on_written: Any = None,
        on_dropped: Any = None,
        seed: int | None = None,
    ) -> None:
        self.settings = settings
        self.options = options
        self.on_written = on_written or (lambda variant, n: None)  # (variant, records)
        self.on_dropped = on_dropped or (lambda variant, reason, n: None)  # (variant, reason, records)
        self._random = random.Random(seed)
        self._lock = threading.Condition()
        self._buffer: list[_Event] = []
        self._bytes = 0
        self._closed = False
        self._writing = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="capture-writer", daemon=True)
        self._thread.start()

    def sampled(self) -> bool:
        """Whether this invocation is one of the sampling_percentage share to capture."""
        share = float(self.settings.sampling_percentage)
        return share >= 100 or (share > 0 and self._random.random() * 100 < share)

    def offer(
        self,
        variant: str,
        request: bytes,
        request_type: str,
        response: bytes,
        response_type: str,
        inference_id: str | None = None,
        when: float | None = None,
    ) -> bool:
        """Buffer one invocation; never blocks. False if it was dropped (buffer full, closed)."""
        event = _Event(
            variant, request, request_type, response, response_type, inference_id, when or time.time()
        )
        with self._lock:
            full = (
                self._closed
                or len(self._buffer) >= self.settings.buffer_records
                or self._bytes + event.size > self.settings.buffer_bytes
            )
            if not full:
                self._buffer.append(event)
                self._bytes += event.size
        if full:
            self.on_dropped(variant, "buffer", 1)
            return False
        return True

    def flush(self) -> int:
        """Write everything buffered now; returns the records written."""
        with self._writing:  # one writer at a time: the thread, close() or a test
            with self._lock:
                events, self._buffer, self._bytes = self._buffer, [], 0
            return self._write(events)

    def close(self, timeout: float = 30.0) -> None:
        """Stop accepting and write what is buffered (SIGTERM)."""
        with self._lock:
            self._closed = True
            self._lock.notify_all()
        self._thread.join(timeout)
        self.flush()

    def _run(self) -> None:
        while True:
            with self._lock:
                if not self._closed:
                    self._lock.wait(self.settings.flush_interval_s)
                closed = self._closed
            try:
                self.flush()
            except Exception:  # never let the writer die: count and carry on
                log.exception("data capture flush failed")
            if closed:
                return

    def _write(self, events: list[_Event]) -> int:
        groups: dict[tuple[str, str], list[_Event]] = defaultdict(list)
        for event in events:
            hour = datetime.fromtimestamp(event.when, UTC).strftime("%Y%m%d%H")
            groups[(event.variant, hour)].append(event)
        written = 0
        for (variant, _), group in groups.items():
            uri = capture_path(self.settings, variant, group[0].when)
            try:
                lines = "".join(
                    json.dumps(capture_record(e, self.settings), ensure_ascii=False) + "\n" for e in group
                )
                storage.write_bytes(uri, lines.encode("utf-8"), self.options)
            except Exception as exc:
                log.warning("data capture: could not write %d record(s) to %s: %s", len(group), uri, exc)
                self.on_dropped(variant, "write", len(group))
                continue
            written += len(group)
            self.on_written(variant, len(group))
        return written
