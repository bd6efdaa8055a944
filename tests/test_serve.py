"""`reviewpipe serve` over real HTTP on loopback: SageMaker's contract, errors, A/B variants,
admin weights, metrics, micro-batching, a bounded load test, and SIGTERM draining (subprocess)."""

from __future__ import annotations

import http.client
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from email.message import Message
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from reviewpipe.serving.router import VariantRouter, parse_variant
from reviewpipe.serving.server import ModelServer, ServeSettings, VariantSpec
from tests.test_package import tiny_artifacts

ROOT = Path(__file__).resolve().parents[1]
JSON = "application/json"
ADMIN_TOKEN = "test-admin-token-0123456789"


def admin(url: str, method: str = "GET", payload: Any = None, token: str = ADMIN_TOKEN, **headers: str):
    """An admin call as `reviewpipe deploy shift` makes it: bearer token, JSON body."""
    body = (
        None if payload is None else payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    )
    sent = {"Authorization": f"Bearer {token}", "Content-Type": JSON}
    sent.update({k.replace("_", "-"): v for k, v in headers.items()})
    return request(url, method, "/admin/variant-weights", body, sent)


def request(
    url: str,
    method: str = "GET",
    path: str = "/ping",
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
    conn: http.client.HTTPConnection | None = None,
    timeout: float = 30,
) -> tuple[int, Message, bytes]:
    """(status, headers (case-insensitive), body) of one request over a real connection."""
    own = conn is None
    if conn is None:
        host, port = url.removeprefix("http://").split(":")
        conn = http.client.HTTPConnection(host, int(port), timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        return response.status, response.headers, response.read()
    finally:
        if own:
            conn.close()


def invoke(url: str, payload: Any, content_type: str = JSON, **headers: str) -> tuple[int, Message, Any]:
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    status, hdrs, data = request(
        url,
        "POST",
        "/invocations",
        body,
        {"Content-Type": content_type, **{k.replace("_", "-"): v for k, v in headers.items()}},
    )
    return (
        status,
        hdrs,
        json.loads(data) if data and hdrs.get("Content-Type", "").split(";")[0] == JSON else data,
    )


@pytest.fixture(scope="module")
def server() -> Iterator[ModelServer]:
    art = tiny_artifacts()
    settings = ServeSettings(port=0, max_wait_ms=10, max_batch_size=16, quantize="int8-dynamic")
    srv = ModelServer(
        [
            VariantSpec("champion", str(art["bert_tar"]), 1.0),
            VariantSpec("challenger", str(art["baseline_tar"]), 0.0),
        ],
        settings,
        seed=7,
        admin_token=ADMIN_TOKEN,
    )
    srv.start(wait=True, timeout=120)
    yield srv
    srv.stop(drain_timeout=5)


@pytest.fixture
def weights(server: ModelServer) -> Iterator[None]:
    yield
    server.router.set_weights({"champion": 1.0, "challenger": 0.0})


def test_ping_and_single_review(server: ModelServer) -> None:
    assert request(server.url)[0] == 200
    status, headers, body = invoke(server.url, {"inputs": "I love this dress"})
    assert status == 200 and headers["Content-Type"] == JSON
    assert headers["X-Amzn-Invoked-Production-Variant"] == "champion" and body["variant"] == "champion"
    [prediction] = body["predictions"]
    assert prediction["label"] in (-1, 0, 1) and prediction["model_version"] == "bert-v7"
    assert set(prediction["probabilities"]) == {"-1", "0", "1"}
    assert abs(sum(prediction["probabilities"].values()) - 1) < 1e-4


def test_list_and_jsonlines_requests(server: ModelServer) -> None:
    status, _, body = invoke(server.url, {"inputs": ["great", "bad", "fine"]})
    assert status == 200 and len(body["predictions"]) == 3
    lines = b'{"inputs": "great"}\n{"inputs": ["bad", "fine"]}\n'
    status, headers, raw = invoke(server.url, lines, "application/jsonlines")
    assert status == 200 and headers["Content-Type"] == "application/jsonlines"
    rows = [json.loads(line) for line in raw.decode().splitlines()]
    assert len(rows) == 3 and all(r["variant"] == "champion" and r["label"] in (-1, 0, 1) for r in rows)
    # Accept picks the response format whatever the request format
    status, headers, raw = invoke(server.url, {"inputs": ["a", "b"]}, Accept="application/jsonlines")
    assert status == 200 and len(raw.decode().splitlines()) == 2


def test_bad_requests_get_clear_statuses(server: ModelServer) -> None:
    for payload, content_type, expected, message in [
        (b'{"inputs": "unterminated', JSON, 400, "malformed JSON"),
        ({"inputs": ""}, JSON, 400, "empty"),
        ({"inputs": ["fine", "   "]}, JSON, 400, "inputs[1] is empty"),
        ({"inputs": []}, JSON, 400, "non-empty"),
        (b"text,label", "text/csv", 415, "unsupported content type"),
    ]:
        status, _, body = invoke(server.url, payload, content_type)
        assert status == expected, (payload, body)
        assert message in body["error"] and body["code"] == expected
    status, _, body = invoke(server.url, {"inputs": "x"}, Accept="text/csv")
    assert status == 406
    assert request(server.url, "GET", "/nope")[0] == 404


def test_long_review_is_truncated_not_rejected(server: ModelServer) -> None:
    status, _, body = invoke(server.url, {"inputs": "runs small but lovely colour " * 3000})
    assert status == 200 and len(body["predictions"]) == 1


def test_payload_limit_is_413(tmp_path: Path) -> None:
    assert ServeSettings().max_payload_bytes == 6 * 1024 * 1024  # SageMaker's real-time limit
    art = tiny_artifacts()
    with ModelServer(
        [VariantSpec("only", str(art["baseline_tar"]))], ServeSettings(port=0, max_payload_bytes=2000)
    ) as srv:
        status, headers, body = invoke(srv.url, {"inputs": "x" * 3000})
        assert status == 413 and "exceeds the 2000-byte limit" in body["error"]
        assert headers.get("Connection") == "close"
        assert invoke(srv.url, {"inputs": "x" * 1000})[0] == 200


def test_variant_pinning_and_weighted_routing(server: ModelServer, weights: None) -> None:
    status, headers, body = invoke(
        server.url, {"inputs": "nice"}, X_Amzn_SageMaker_Target_Variant="challenger"
    )  # weight 0, but pinned
    assert status == 200 and headers["X-Amzn-Invoked-Production-Variant"] == "challenger"
    assert body["variant"] == "challenger" and body["predictions"][0]["model_version"].startswith("baseline-")
    status, _, body = invoke(server.url, {"inputs": "nice"}, X_Amzn_SageMaker_Target_Variant="nobody")
    assert status == 400 and "unknown variant 'nobody'" in body["error"]

    status, _, body = admin(server.url, "POST", {"champion": 0.8, "challenger": 0.2})
    assert status == 200 and json.loads(body)["weights"] == {"champion": 0.8, "challenger": 0.2}
    seen = Counter(
        invoke(server.url, {"inputs": "ok"})[1]["X-Amzn-Invoked-Production-Variant"] for _ in range(40)
    )
    assert set(seen) == {"champion", "challenger"} and seen["champion"] > seen["challenger"], seen

    sagemaker_shaped = {
        "DesiredWeightsAndCapacities": [
            {"VariantName": "champion", "DesiredWeight": 0},
            {"VariantName": "challenger", "DesiredWeight": 1},
        ]
    }
    assert admin(server.url, "POST", sagemaker_shaped)[0] == 200
    assert {invoke(server.url, {"inputs": "ok"})[2]["variant"] for _ in range(20)} == {"challenger"}
    assert json.loads(admin(server.url)[2])["weights"] == {
        "champion": 0.0,
        "challenger": 1.0,
    }


def test_admin_refuses_bad_weights(server: ModelServer, weights: None) -> None:
    for body, message in [
        (b"{oops", "malformed JSON"),
        (b'{"ghost": 1}', "unknown variant"),
        (b'{"champion": -1}', ">= 0"),
        (b'{"champion": 0, "challenger": 0}', "above 0"),
        (b"[]", "expected"),
        (b'{"champion": NaN}', "not a JSON number"),
        (b'{"champion": Infinity}', "not a JSON number"),
        (b'{"champion": 1e309}', "finite"),
        (b'{"champion": "1"}', "finite number"),
        (b"[" * 20000 + b"]" * 20000, "nested too deeply"),
    ]:
        status, _, raw = admin(server.url, "POST", body)
        assert status == 400 and message in json.loads(raw)["error"], body[:40]
    assert server.router.weights() == {"champion": 1.0, "challenger": 0.0}
    status, _, raw = request(server.url)
    assert status == 200 and json.loads(raw)["variants"] == {"champion": 1.0, "challenger": 0.0}


def _metric(text: str, name: str, **labels: str) -> float:
    """A sample's value in a /metrics body (0 when absent), read with prometheus_client's parser."""
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return float(sample.value)
    return 0.0


def test_metrics_count_requests_errors_and_latency(server: ModelServer) -> None:
    before = request(server.url, "GET", "/metrics")[2].decode()
    for _ in range(3):
        invoke(server.url, {"inputs": "good"})
    invoke(server.url, b"{bad", JSON)
    status, headers, raw = request(server.url, "GET", "/metrics")
    text = raw.decode()
    assert status == 200 and headers["Content-Type"].startswith("text/plain")
    assert (
        _metric(text, "reviewpipe_requests_total", variant="champion", code="200")
        - _metric(before, "reviewpipe_requests_total", variant="champion", code="200")
        == 3
    )
    assert (
        _metric(text, "reviewpipe_request_errors_total", variant="champion", code="400")
        - _metric(before, "reviewpipe_request_errors_total", variant="champion", code="400")
        == 1
    )
    total = sum(
        _metric(text, "reviewpipe_requests_total", variant="champion", code=c) for c in ("200", "400", "406")
    )
    assert (
        _metric(text, "reviewpipe_request_latency_seconds_bucket", variant="champion", le="+Inf") >= total - 1
    )
    assert "# TYPE reviewpipe_request_latency_seconds histogram" in text
    assert _metric(text, "reviewpipe_model_loaded", variant="challenger") == 1
    assert _metric(text, "reviewpipe_variant_weight", variant="champion") == 1


GATED_HANDLER = """
import json, os, time
GATE, LOG = {gate!r}, {log!r}
def model_fn(model_dir):
    return "gated"
def input_fn(body, content_type):
    inputs = json.loads(body)["inputs"]
    return {{"texts": [inputs] if isinstance(inputs, str) else inputs}}
def predict_fn(data, model):
    with open(LOG, "a") as f:  # one line per model call: the texts it got
        f.write(json.dumps(data["texts"]) + "\\n")
    while not os.path.exists(GATE):  # the test opens the gate once everything is queued
        time.sleep(0.005)
    if any("poison" in text for text in data["texts"]):
        raise RuntimeError("the model choked on " + repr(data["texts"]))
    return {{"predictions": [{{"echo": text}} for text in data["texts"]]}}
def output_fn(prediction, accept):
    return json.dumps(prediction)
def merge_inputs(items):
    return {{"texts": [text for item in items for text in item["texts"]]}}
def split_predictions(prediction, items):
    out, start = [], 0
    for item in items:
        end = start + len(item["texts"])
        out.append({{"predictions": prediction["predictions"][start:end]}})
        start = end
    return out
"""


class Gated:
    """A server whose model blocks until the test opens its gate, and logs every model call:
    batching tests then depend on what was queued, never on thread scheduling."""

    def __init__(self, root: Path, **settings: Any) -> None:
        self.gate, self.log = root / "gate", root / "calls.jsonl"
        (root / "pkg" / "code").mkdir(parents=True)
        (root / "pkg" / "code" / "inference.py").write_text(
            GATED_HANDLER.format(gate=str(self.gate), log=str(self.log))
        )
        options = {"port": 0, "workers": 1, "max_wait_ms": 2000, "max_batch_size": 16, **settings}
        self.server = ModelServer([VariantSpec("gated", str(root / "pkg"))], ServeSettings(**options))
        self.server.start(wait=True, timeout=60)
        self.pool = ThreadPoolExecutor(64)

    def calls(self) -> list[list[str]]:
        return [json.loads(line) for line in self.log.read_text().splitlines()] if self.log.exists() else []

    def send(self, inputs: Any, **headers: str) -> Any:
        return self.pool.submit(invoke, self.server.url, {"inputs": inputs}, **headers)

    def hold(self) -> Any:
        """One request the model is busy with (behind the gate) while others queue up."""
        held = self.send("hold")
        wait_until(lambda: len(self.calls()) == 1)
        return held

    def wait_queued(self, reviews: int) -> None:
        metrics = lambda: request(self.server.url, "GET", "/metrics")[2].decode()  # noqa: E731
        wait_until(
            lambda: _metric(metrics(), "reviewpipe_batcher_queued_reviews", variant="gated") == reviews
        )

    def open(self) -> None:
        self.gate.touch()

    def close(self) -> None:
        self.open()
        self.pool.shutdown()
        self.server.stop(drain_timeout=5)


def wait_until(check: Any, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.01)


@pytest.fixture
def gated(tmp_path: Path) -> Iterator[Gated]:
    g = Gated(tmp_path)
    yield g
    g.close()


def test_concurrent_requests_share_model_calls(gated: Gated) -> None:
    """Requests that queue while the model is busy form the next batch: 12 requests, 2 calls.
    (Issue 11 §7: the old version counted calls under real scheduling and failed when busy.)"""
    held = gated.hold()
    futures = [gated.send(f"review number {i}") for i in range(11)]
    gated.wait_queued(11)
    gated.open()
    assert held.result(timeout=60)[0] == 200
    results = [f.result(timeout=60) for f in futures]
    assert [status for status, _, _ in results] == [200] * 11
    assert [body["predictions"] for _, _, body in results] == [
        [{"echo": f"review number {i}"}] for i in range(11)
    ]
    calls = gated.calls()
    assert calls[0] == ["hold"] and sorted(calls[1]) == sorted(f"review number {i}" for i in range(11))
    assert len(calls) == 2
    metrics = request(gated.server.url, "GET", "/metrics")[2].decode()
    assert _metric(metrics, "reviewpipe_batch_size_count", variant="gated") == 2
    assert _metric(metrics, "reviewpipe_batch_size_sum", variant="gated") == 12


def test_load_8_clients_x_200_requests_without_errors(server: ModelServer) -> None:
    def client(worker: int) -> Counter:
        host, port = server.url.removeprefix("http://").split(":")
        conn = http.client.HTTPConnection(host, int(port), timeout=30)  # keep-alive, like a real client
        codes: Counter = Counter()
        try:
            for i in range(200):
                body = json.dumps({"inputs": f"client {worker} review {i}: fits well"}).encode()
                codes[
                    request(server.url, "POST", "/invocations", body, {"Content-Type": JSON}, conn=conn)[0]
                ] += 1
        finally:
            conn.close()
        return codes

    started = time.monotonic()
    with ThreadPoolExecutor(8) as pool:
        totals = sum(pool.map(client, range(8)), Counter())
    assert totals == Counter({200: 1600}), totals
    assert time.monotonic() - started < 120


def test_ping_is_503_until_the_model_is_loaded(tmp_path: Path) -> None:
    """A plain SageMaker handler (no batching hooks) whose model_fn waits for a flag file."""
    flag = tmp_path / "go"
    (tmp_path / "pkg" / "code").mkdir(parents=True)
    (tmp_path / "pkg" / "code" / "inference.py").write_text(f"""
import json, os, time
def model_fn(model_dir):
    while not os.path.exists({str(flag)!r}):
        time.sleep(0.02)
    return "model"
def input_fn(body, content_type):
    return json.loads(body)
def predict_fn(data, model):
    return {{"echo": data["inputs"], "model": model}}
def output_fn(prediction, accept):
    return json.dumps(prediction)
""")
    srv = ModelServer([VariantSpec("slow", str(tmp_path / "pkg"))], ServeSettings(port=0)).start()
    try:
        status, _, body = request(srv.url)
        assert status == 503 and json.loads(body)["status"] == "loading"
        assert invoke(srv.url, {"inputs": "x"})[0] == 503
        flag.touch()
        srv.wait_ready(30)
        assert request(srv.url)[0] == 200
        status, headers, body = invoke(srv.url, {"inputs": "x"})
        assert status == 200 and body == {"echo": "x", "model": "model", "variant": "slow"}
    finally:
        srv.stop(drain_timeout=2)


def test_router_splits_traffic_by_weight() -> None:
    router = VariantRouter({"champion": 0.8, "challenger": 0.2}, seed=1)
    seen = Counter(router.choose() for _ in range(5000))
    assert 0.77 <= seen["champion"] / 5000 <= 0.83, seen
    assert router.choose("challenger") == "challenger"
    router.set_weights({"challenger": 0})
    assert {router.choose() for _ in range(200)} == {"champion"}


def test_parse_variant() -> None:
    assert parse_variant("champion=models/package/model.tar.gz:0.8") == (
        "champion",
        "models/package/model.tar.gz",
        0.8,
    )
    assert parse_variant("b=/tmp/x.tar.gz") == ("b", "/tmp/x.tar.gz", 1.0)
    from reviewpipe.errors import ReviewpipeError

    with pytest.raises(ReviewpipeError, match="NAME=PATH"):
        parse_variant("just-a-path")


SLOW_HANDLER = """
import json, time
def model_fn(model_dir):
    return "slow-model"
def input_fn(body, content_type):
    return json.loads(body)
def predict_fn(data, model):
    time.sleep(0.25)  # long enough that every request is in flight when SIGTERM lands
    return {"predictions": [{"label": 1, "echo": data["inputs"]}]}
def output_fn(prediction, accept):
    return json.dumps(prediction)
"""


def test_sigterm_finishes_in_flight_requests_then_exits_0(tmp_path: Path) -> None:
    (tmp_path / "pkg" / "code").mkdir(parents=True)
    (tmp_path / "pkg" / "code" / "inference.py").write_text(SLOW_HANDLER)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "reviewpipe.cli",
            "serve",
            "--model",
            str(tmp_path / "pkg"),
            "--port",
            "0",
            "--trust",
            "--params",
            str(tmp_path / "none.yaml"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=ROOT,
    )
    try:
        line = proc.stdout.readline()  # type: ignore[union-attr]
        url = re.search(r"listening on (http://\S+)", line).group(1)  # type: ignore[union-attr]
        deadline = time.monotonic() + 120
        while request(url)[0] != 200:
            assert time.monotonic() < deadline and proc.poll() is None
            time.sleep(0.1)
        host, port = url.removeprefix("http://").split(":")
        idle = http.client.HTTPConnection(host, int(port), timeout=30)  # an idle keep-alive client
        assert request(url, conn=idle)[0] == 200
        with ThreadPoolExecutor(8) as pool:
            futures = [pool.submit(invoke, url, {"inputs": f"in flight {i}"}) for i in range(8)]
            # every request is inside the server before the signal
            while _metric(request(url, "GET", "/metrics")[2].decode(), "reviewpipe_in_flight_requests") < 8:
                assert time.monotonic() < deadline
                time.sleep(0.01)
            proc.send_signal(signal.SIGTERM)
            results = [f.result(timeout=60) for f in futures]
        assert [status for status, _, _ in results] == [200] * 8
        assert sorted(body["predictions"][0]["echo"] for _, _, body in results) == [
            f"in flight {i}" for i in range(8)
        ]
        assert proc.wait(timeout=20) == 0  # the idle keep-alive connection did not hold it up
        idle.close()
        with pytest.raises(ConnectionRefusedError):
            request(url)
        assert "stopped" in proc.stdout.read()  # type: ignore[union-attr]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_settings_defaults_match_conf() -> None:
    """Code defaults (what tests and `predict` use) equal conf/serve/default.yaml, except the speed
    options: conf serves ONNX int8, code defaults to the plain torch model."""
    from omegaconf import OmegaConf

    conf = OmegaConf.to_container(OmegaConf.load(ROOT / "conf" / "serve" / "default.yaml"))
    assert isinstance(conf, dict)
    assert ServeSettings.from_mapping(conf, quantize="none", backend="torch") == ServeSettings()
    from reviewpipe.errors import ReviewpipeError

    with pytest.raises(ReviewpipeError, match="unknown keys"):
        ServeSettings.from_mapping({**conf, "max_batch": 3})
