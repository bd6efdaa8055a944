"""Data capture in SageMaker's layout: the record format and paths, sampling, bounded buffering
with counted drops, S3 (moto's server), capture through a running server, and the SIGTERM flush."""

from __future__ import annotations

import base64
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from reviewpipe.errors import ReviewpipeError
from reviewpipe.serving import capture as capture_module
from reviewpipe.serving.capture import CaptureSettings, DataCapture
from reviewpipe.serving.server import ModelServer, ServeSettings, VariantSpec
from reviewpipe.storage import StorageOptions
from tests.test_deploy_sagemaker import baseline_packages
from tests.test_serve import JSON, _metric, invoke, request, wait_until

ROOT = Path(__file__).resolve().parents[1]
WHEN = datetime(2026, 1, 31, 13, 5, 9, 250000, tzinfo=UTC).timestamp()
FILE_NAME = re.compile(r"\d\d-\d\d-\d{3}-[0-9a-f-]{36}\.jsonl")


def read_capture(root: Path) -> dict[str, list[dict[str, Any]]]:
    """{relative file path: records} for every capture file under `root`."""
    return {
        str(path.relative_to(root)): [json.loads(line) for line in path.read_text().splitlines()]
        for path in sorted(root.rglob("*.jsonl"))
    }


class Counts:
    def __init__(self) -> None:
        self.written: dict[str, int] = {}
        self.dropped: dict[tuple[str, str], int] = {}

    def on_written(self, variant: str, n: int) -> None:
        self.written[variant] = self.written.get(variant, 0) + n

    def on_dropped(self, variant: str, reason: str, n: int) -> None:
        self.dropped[(variant, reason)] = self.dropped.get((variant, reason), 0) + n


def make(tmp_path: Path, counts: Counts | None = None, **options: Any) -> DataCapture:
    settings = CaptureSettings.from_mapping(
        {"enabled": True, "destination": str(tmp_path / "capture"), "endpoint_name": "ep", **options}
    )
    counts = counts or Counts()
    return DataCapture(settings, on_written=counts.on_written, on_dropped=counts.on_dropped, seed=0)


def test_records_and_paths_follow_sagemakers_layout(tmp_path: Path) -> None:
    capture = make(tmp_path, flush_interval_s=3600)
    request_body, response_body = b'{"inputs": "Love it"}', b'{"predictions": [{"label": 1}]}'
    assert capture.offer("champion", request_body, "application/json", response_body, JSON, "order-42", WHEN)
    assert capture.offer(
        "champion", b"a,b\n", "text/csv; charset=utf-8", b"\x00\xff", "application/x-npy", None, WHEN
    )
    assert capture.offer("challenger", request_body, JSON, response_body, JSON, None, WHEN + 3600)
    assert capture.flush() == 3
    files = read_capture(tmp_path / "capture")
    assert sorted(str(Path(name).parent) for name in files) == [
        "ep/challenger/2026/01/31/14",
        "ep/champion/2026/01/31/13",
    ]
    champion_file = next(name for name in files if "/champion/" in name)
    assert FILE_NAME.fullmatch(Path(champion_file).name) and Path(champion_file).name.startswith("05-09-250-")
    first, second = files[champion_file]
    assert first == {
        "captureData": {
            "endpointInput": {
                "observedContentType": "application/json",
                "mode": "INPUT",
                "data": '{"inputs": "Love it"}',
                "encoding": "JSON",
            },
            "endpointOutput": {
                "observedContentType": "application/json",
                "mode": "OUTPUT",
                "data": '{"predictions": [{"label": 1}]}',
                "encoding": "JSON",
            },
        },
        "eventMetadata": {
            "eventId": first["eventMetadata"]["eventId"],
            "inferenceId": "order-42",
            "inferenceTime": "2026-01-31T13:05:09Z",
        },
        "eventVersion": "0",
    }
    assert uuid.UUID(first["eventMetadata"]["eventId"]).version == 4
    assert second["captureData"]["endpointInput"] == {
        "observedContentType": "text/csv; charset=utf-8",
        "mode": "INPUT",
        "data": "a,b\n",
        "encoding": "CSV",
    }
    output = second["captureData"]["endpointOutput"]
    assert output["encoding"] == "BASE64" and base64.b64decode(output["data"]) == b"\x00\xff"
    assert "inferenceId" not in second["eventMetadata"]  # as on SageMaker: only when the client sent one
    capture.close()


def test_sampling_percentage(tmp_path: Path) -> None:
    none, every, some = (make(tmp_path, sampling_percentage=p) for p in (0, 100, 30))
    assert not any(none.sampled() for _ in range(1000)) and all(every.sampled() for _ in range(1000))
    assert 500 <= sum(some.sampled() for _ in range(2000)) <= 720  # 30% of 2,000 (binomial, ±5 sd)
    for capture in (none, every, some):
        capture.close()
    with pytest.raises(ReviewpipeError, match="between 0 and 100"):
        CaptureSettings.from_mapping({"sampling_percentage": 120})
    with pytest.raises(ReviewpipeError, match="unknown keys"):
        CaptureSettings.from_mapping({"sampling_rate": 10})


def test_a_full_buffer_drops_and_counts_never_blocks(tmp_path: Path) -> None:
    counts = Counts()
    capture = make(tmp_path, counts, flush_interval_s=3600, buffer_records=3, buffer_bytes=1000)
    offered = [capture.offer("v", b"x" * 10, JSON, b"y", JSON) for _ in range(5)]
    assert offered == [True, True, True, False, False] and counts.dropped == {("v", "buffer"): 2}
    capture.flush()
    assert not capture.offer("v", b"x" * 2000, JSON, b"y", JSON)  # over buffer_bytes alone
    assert counts.dropped == {("v", "buffer"): 3} and counts.written == {"v": 3}
    capture.close()


def test_a_failed_write_is_counted_not_raised(tmp_path: Path) -> None:
    (tmp_path / "capture").write_text("a file where the folder should be")
    counts = Counts()
    capture = make(tmp_path, counts, flush_interval_s=3600)
    capture.offer("v", b"{}", JSON, b"{}", JSON)
    assert capture.flush() == 0 and counts.dropped == {("v", "write"): 1}
    capture.close()


def test_capture_to_s3(s3_bucket: str, moto_server: str) -> None:
    import boto3

    settings = CaptureSettings.from_mapping(
        {"enabled": True, "destination": f"s3://{s3_bucket}/datacapture", "endpoint_name": "ep"}
    )
    capture = DataCapture(settings, StorageOptions(endpoint_url=moto_server))
    capture.offer("AllTraffic", b'{"inputs": "x"}', JSON, b"{}", JSON, "id-1", WHEN)
    capture.close()
    s3 = boto3.client("s3", endpoint_url=moto_server, region_name="us-east-1")
    [obj] = s3.list_objects_v2(Bucket=s3_bucket)["Contents"]
    assert obj["Key"].startswith("datacapture/ep/AllTraffic/2026/01/31/13/05-09-250-")
    record = json.loads(s3.get_object(Bucket=s3_bucket, Key=obj["Key"])["Body"].read())
    assert record["eventMetadata"]["inferenceId"] == "id-1"


def test_a_serving_endpoint_captures_each_variant(tmp_path: Path) -> None:
    packages = baseline_packages(tmp_path / "pkg", ("champion", "challenger"))
    settings = ServeSettings.from_mapping(
        {
            "port": 0,
            "capture": {"enabled": True, "destination": str(tmp_path / "capture"), "endpoint_name": "ep"},
        }
    )
    srv = ModelServer([VariantSpec(n, str(p)) for n, p in packages.items()], settings).start(
        wait=True, timeout=60
    )
    answers = {}
    try:
        for i, variant in enumerate(["champion", "challenger", "champion"]):
            status, _, body = invoke(
                srv.url,
                {"inputs": [f"love it {i}"]},
                X_Amzn_SageMaker_Target_Variant=variant,
                X_Amzn_SageMaker_Inference_Id=f"review-{i}",
            )
            assert status == 200
            answers[f"review-{i}"] = (variant, body)
        assert invoke(srv.url, {"inputs": ""})[0] == 400  # failed invocations are not captured
        assert invoke(srv.url, {"inputs": "x"}, X_Amzn_SageMaker_Inference_Id="")[0] == 400
    finally:
        srv.stop(drain_timeout=5)  # flushes the buffer
    files = read_capture(tmp_path / "capture")
    records = {
        r["eventMetadata"]["inferenceId"]: (name.split("/")[1], r) for name, rs in files.items() for r in rs
    }
    assert set(records) == set(answers)
    for inference_id, (variant, record) in records.items():
        assert variant == answers[inference_id][0]
        assert json.loads(record["captureData"]["endpointOutput"]["data"]) == answers[inference_id][1]
        assert json.loads(record["captureData"]["endpointInput"]["data"])["inputs"][0].startswith("love it")
    text = srv.metrics.render()[0].decode()
    assert _metric(text, "reviewpipe_capture_records_total", variant="champion") == 2


def test_capture_never_slows_a_request_when_storage_hangs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    release = threading.Event()
    real_write = capture_module.storage.write_bytes

    def hanging_write(*args: Any, **kwargs: Any) -> None:
        release.wait(60)
        real_write(*args, **kwargs)

    monkeypatch.setattr(capture_module.storage, "write_bytes", hanging_write)
    [package] = baseline_packages(tmp_path / "pkg", ("only",)).values()
    settings = ServeSettings.from_mapping(
        {
            "port": 0,
            "capture": {
                "enabled": True,
                "destination": str(tmp_path / "capture"),
                "flush_interval_s": 0.05,
                "buffer_records": 5,
            },
        }
    )
    srv = ModelServer([VariantSpec("only", str(package))], settings).start(wait=True, timeout=60)
    try:
        invoke(srv.url, {"inputs": "first"})  # the writer takes it and hangs on storage
        wait_until(lambda: not srv.capture._buffer)  # type: ignore[union-attr]
        assert [invoke(srv.url, {"inputs": f"r{i}"})[0] for i in range(20)] == [200] * 20
        metrics = request(srv.url, "GET", "/metrics")[2].decode()
        assert _metric(metrics, "reviewpipe_capture_dropped_total", variant="only", reason="buffer") == 15
    finally:
        release.set()
        srv.stop(drain_timeout=5)
    assert sum(len(r) for r in read_capture(tmp_path / "capture").values()) == 6  # 1 + the 5 buffered


def test_sigterm_flushes_the_capture_buffer(tmp_path: Path) -> None:
    [package] = baseline_packages(tmp_path / "pkg", ("only",)).values()
    params = tmp_path / "params.yaml"
    params.write_text(
        yaml.safe_dump(
            {
                "serve": {
                    "quantize": "none",
                    "backend": "torch",
                    "capture": {
                        "enabled": True,
                        "destination": str(tmp_path / "capture"),
                        "flush_interval_s": 3600,  # only SIGTERM writes it
                    },
                }
            }
        )
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "reviewpipe.cli", "serve", "--model", str(package), "--port", "0", "--trust"]
        + ["--params", str(params), "--endpoint-name", "my-endpoint"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        cwd=ROOT,
    )
    try:
        url = re.search(r"listening on (http://\S+)", proc.stdout.readline()).group(1)  # type: ignore[union-attr]
        assert "capturing 100% of invocations" in proc.stdout.readline()  # type: ignore[union-attr]
        deadline = time.monotonic() + 120
        while request(url)[0] != 200:
            assert time.monotonic() < deadline and proc.poll() is None
            time.sleep(0.1)
        for i in range(7):
            assert invoke(url, {"inputs": f"review {i}"}, X_Amzn_SageMaker_Inference_Id=f"id-{i}")[0] == 200
        assert read_capture(tmp_path / "capture") == {}
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    [(name, records)] = read_capture(tmp_path / "capture").items()
    assert name.startswith("my-endpoint/AllTraffic/")
    assert sorted(r["eventMetadata"]["inferenceId"] for r in records) == [f"id-{i}" for i in range(7)]
