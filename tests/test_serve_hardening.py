"""Issue 13 §1, probed as a hostile client would, over real HTTP (raw sockets where a normal
client would not send such bytes): each test reproduces one finding and shows it fixed."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import h11
import pytest

from reviewpipe import cli
from reviewpipe.errors import ReviewpipeError
from reviewpipe.serving.server import ModelServer, ServeSettings, VariantSpec
from tests.test_package import tiny_artifacts
from tests.test_serve import ADMIN_TOKEN, JSON, Gated, _metric, admin, invoke, request, wait_until

LIMIT = 64 * 1024


# ---------------------------------------------------------------- raw HTTP


def connect(url: str, timeout: float = 20) -> socket.socket:
    host, port = url.removeprefix("http://").split(":")
    return socket.create_connection((host, int(port)), timeout=timeout)


def responses(sock: socket.socket, count: int = 1) -> list[tuple[int, dict[str, str], bytes]]:
    """Read `count` responses from a raw socket with h11 (client side), in order."""
    conn = h11.Connection(h11.CLIENT)
    out = []
    for _ in range(count):
        conn.send(h11.Request(method="POST", target="/", headers=[("Host", "x"), ("Content-Length", "0")]))
        conn.send(h11.EndOfMessage())  # (only h11's state: these bytes are never sent)
        status, headers, body = 0, {}, b""
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                conn.receive_data(sock.recv(65536))
            elif isinstance(event, h11.Response):
                status = event.status_code
                headers = {k.decode().lower(): v.decode() for k, v in event.headers}
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage):
                break
            elif isinstance(event, h11.ConnectionClosed):
                raise AssertionError("connection closed before a full response")
        out.append((status, headers, body))
        if conn.their_state is h11.MUST_CLOSE:
            break
        conn.start_next_cycle()
    return out


def closed_by_server(sock: socket.socket, timeout: float = 10) -> bool:
    """True once the server has closed the connection (EOF or reset) within `timeout`."""
    sock.settimeout(timeout)
    try:
        while True:
            if not sock.recv(65536):
                return True
    except (ConnectionResetError, BrokenPipeError):
        return True
    except TimeoutError:
        return False


def head(path: str = "/invocations", **headers: str) -> bytes:
    lines = [
        f"POST {path} HTTP/1.1",
        "Host: 127.0.0.1",
        *(f"{k.replace('_', '-')}: {v}" for k, v in headers.items()),
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def body_of(texts: list[str]) -> bytes:
    return json.dumps({"inputs": texts}).encode()


# ---------------------------------------------------------------- servers


@pytest.fixture(scope="module")
def baseline() -> Iterator[ModelServer]:
    """A quick-loading real package (TF-IDF) with small limits and short timeouts."""
    settings = ServeSettings(
        port=0,
        max_payload_bytes=LIMIT,
        max_inputs_per_request=50,
        header_timeout_s=1,
        body_timeout_s=1,
        max_connections=400,
        max_wait_ms=2,
    )
    srv = ModelServer(
        [VariantSpec("champion", str(tiny_artifacts()["baseline_tar"]))], settings, admin_token=ADMIN_TOKEN
    )
    srv.start(wait=True, timeout=120)
    yield srv
    srv.stop(drain_timeout=5)


@pytest.fixture(scope="module")
def bert() -> Iterator[ModelServer]:
    srv = ModelServer(
        [VariantSpec("champion", str(tiny_artifacts()["bert_tar"]))],
        ServeSettings(port=0, max_wait_ms=20, max_batch_size=16),
    )
    srv.start(wait=True, timeout=120)
    yield srv
    srv.stop(drain_timeout=5)


@pytest.fixture
def gated(tmp_path: Path) -> Iterator[Gated]:
    g = Gated(tmp_path)  # batches of up to 16 reviews
    yield g
    g.close()


# ---------------------------------------------------------------- body limit bypass


def test_negative_content_length_is_refused_not_read_until_close(baseline: ModelServer) -> None:
    sock = connect(baseline.url)
    # The start of a 10 MB body; the connection stays open, as an attacker's would.
    sock.sendall(head(Content_Type=JSON, Content_Length="-1") + body_of(["great dress"] * 100))
    [(status, _, _)] = responses(sock)
    assert status == 400  # was: read until the client closed; 200 with 20,000 predictions for 10 MB
    assert closed_by_server(sock)


def test_negative_chunk_size_is_refused(baseline: ModelServer) -> None:
    sock = connect(baseline.url)
    sock.sendall(head(Content_Type=JSON, Transfer_Encoding="chunked") + b"-1\r\n" + body_of(["great"] * 100))
    [(status, _, _)] = responses(sock)
    assert status == 400 and closed_by_server(sock)


def test_a_chunked_body_over_the_limit_is_413_and_the_rest_is_never_read(baseline: ModelServer) -> None:
    sock = connect(baseline.url)
    chunk = b'"great dress", ' * 1000  # 15 KB
    sock.sendall(head(Content_Type=JSON, Transfer_Encoding="chunked"))
    for _ in range(LIMIT // len(chunk) + 1):  # just past the limit; the stream would go on
        sock.sendall(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
    [(status, headers, body)] = responses(sock)
    assert status == 413 and "65536-byte limit" in json.loads(body)["error"]
    assert headers["connection"] == "close" and closed_by_server(sock)
    with pytest.raises(OSError):  # nothing more is read: the connection is gone
        for _ in range(100):
            sock.sendall(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
            time.sleep(0.01)


def test_a_declared_length_over_the_limit_is_413_before_the_body(baseline: ModelServer) -> None:
    sock = connect(baseline.url)
    sock.sendall(head(Content_Type=JSON, Content_Length=str(10 * LIMIT)))  # no body sent at all
    [(status, _, body)] = responses(sock)
    assert (
        status == 413
        and "exceeds the 65536-byte limit (serve.max_payload_bytes)" in json.loads(body)["error"]
    )
    assert closed_by_server(sock)


# ---------------------------------------------------------------- one request never fails others


def test_a_lone_surrogate_is_refused_before_batching(gated: Gated) -> None:
    held = gated.hold()
    good = [gated.send(f"good review {i}") for i in range(12)]
    bad = gated.send("bad \udfff")
    gated.wait_queued(12)
    status, _, body = bad.result(30)  # answered while the model is still busy: never queued
    assert status == 400 and "inputs[0] is not valid Unicode text" in body["error"]
    gated.open()
    held.result(30)
    assert [f.result(30)[0] for f in good] == [200] * 12
    assert [call for call in gated.calls() if any("bad" in t for t in call)] == []


def test_a_lone_surrogate_with_a_real_tokenizer_fails_only_itself(bert: ModelServer) -> None:
    payloads = [{"inputs": f"a lovely dress, number {i}"} for i in range(12)] + [{"inputs": "bad \udfff"}]
    with ThreadPoolExecutor(13) as pool:
        results = list(pool.map(lambda p: invoke(bert.url, p), payloads))
    assert [status for status, _, _ in results] == [200] * 12 + [400]  # was: 2 to 9 of the 12 got 500


def test_a_merged_call_that_fails_is_retried_per_request(gated: Gated) -> None:
    held = gated.hold()
    good = [gated.send(f"good review {i}") for i in range(11)]
    poison = gated.send("poison pill")
    gated.wait_queued(12)
    gated.open()
    held.result(30)
    assert [f.result(30)[0] for f in good] == [200] * 11
    assert [f.result(30)[2]["predictions"] for f in good] == [
        [{"echo": f"good review {i}"}] for i in range(11)
    ]
    status, _, body = poison.result(30)
    assert status == 500 and body["error"] == "prediction failed; the server log has the details"
    assert "choked" not in json.dumps(body)  # no internals
    calls = gated.calls()
    assert len(calls[1]) == 12 and len(calls) == 2 + 12  # the merged call, then each request alone


# ---------------------------------------------------------------- admin endpoint


def test_admin_refuses_a_foreign_page_dns_rebinding_and_no_token(baseline: ModelServer) -> None:
    weights = {"champion": 0.5}
    port = baseline.url.rsplit(":", 1)[1]
    body = json.dumps(weights).encode()
    # What any web page can send: a text/plain "simple request" with its own Origin and no token.
    status, _, raw = request(
        baseline.url,
        "POST",
        "/admin/variant-weights",
        body,
        {"Content-Type": "text/plain", "Origin": "http://evil.example", "Host": f"evil.example:{port}"},
    )
    assert status == 403 and "Host" in json.loads(raw)["error"]
    # DNS rebinding: the attacker's name resolves to 127.0.0.1, so the Host header is theirs.
    assert admin(baseline.url, "POST", weights, Host=f"evil.example:{port}")[0] == 403
    assert admin(baseline.url, "POST", weights, Origin="http://evil.example")[0] == 403
    assert admin(baseline.url, "POST", weights, Content_Type="text/plain")[0] == 415
    assert admin(baseline.url, "POST", weights, token="wrong")[0] == 401
    status, headers, _ = request(baseline.url, "POST", "/admin/variant-weights", body, {"Content-Type": JSON})
    assert status == 401 and headers["WWW-Authenticate"] == "Bearer"
    assert request(baseline.url, "GET", "/admin/variant-weights")[0] == 401
    assert baseline.router.weights() == {"champion": 1.0}
    status, _, raw = admin(baseline.url, "POST", weights, Origin=baseline.url)  # own origin, token: fine
    assert status == 200 and json.loads(raw)["weights"] == weights
    admin(baseline.url, "POST", {"champion": 1.0})


def test_admin_needs_a_configured_token_and_can_be_disabled(tmp_path: Path) -> None:
    package = str(tiny_artifacts()["baseline_tar"])
    with ModelServer([VariantSpec("only", package)], ServeSettings(port=0)) as srv:  # loopback, no token
        status, _, raw = admin(srv.url, "POST", {"only": 1})
        assert status == 403 and "REVIEWPIPE_ADMIN_TOKEN" in json.loads(raw)["error"]
    settings = ServeSettings.from_mapping({"port": 0, "admin": {"enabled": False}})
    with ModelServer([VariantSpec("only", package)], settings, admin_token=ADMIN_TOKEN) as srv:
        assert admin(srv.url, "POST", {"only": 1})[0] == 404


def test_a_non_loopback_bind_with_an_open_admin_endpoint_is_refused(tmp_path: Path, capsys) -> None:
    package = str(tiny_artifacts()["baseline_tar"])
    with pytest.raises(ReviewpipeError, match="refusing to listen on 0.0.0.0"):
        ModelServer([VariantSpec("only", package)], ServeSettings(host="0.0.0.0", port=0))
    token_file = tmp_path / "token"
    token_file.write_text("a-long-random-token\n")
    params = tmp_path / "none.yaml"
    code = cli.main(
        ["serve", "--model", package, "--host", "0.0.0.0", "--port", "0", "--params", str(params), "--trust"]
    )
    assert code == 2 and "refusing to listen on 0.0.0.0" in capsys.readouterr().err
    srv = ModelServer(  # with a token (from a file, never params) it may listen everywhere
        [VariantSpec("only", package)],
        ServeSettings(host="0.0.0.0", port=0),
        admin_token="a-long-random-token",
    )
    srv.http.socket.close()


# ---------------------------------------------------------------- bounded resources


def test_300_half_sent_headers_do_not_hold_the_server(baseline: ModelServer) -> None:
    threads_before = threading.active_count()
    slow = [connect(baseline.url) for _ in range(300)]
    for sock in slow:
        sock.sendall(b"POST /invocations HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-")  # and never more
    try:
        assert invoke(baseline.url, {"inputs": "still serving"})[0] == 200
        assert threading.active_count() < threads_before + 10  # no thread per connection
        assert all(closed_by_server(sock, timeout=15) for sock in slow)  # header_timeout_s = 1
    finally:
        for sock in slow:
            sock.close()


def test_a_body_that_stops_arriving_is_408(baseline: ModelServer) -> None:
    sock = connect(baseline.url)
    sock.sendall(head(Content_Type=JSON, Content_Length="100") + b'{"inputs": ')  # 11 of 100 bytes
    [(status, headers, body)] = responses(sock)
    assert status == 408 and "did not arrive within 1 s" in json.loads(body)["error"]
    assert headers["connection"] == "close" and closed_by_server(sock)


def test_connections_over_the_cap_get_503_until_others_close(tmp_path: Path) -> None:
    settings = ServeSettings(port=0, max_connections=8, header_timeout_s=30)
    with ModelServer([VariantSpec("only", str(tiny_artifacts()["baseline_tar"]))], settings) as srv:
        idle = [connect(srv.url) for _ in range(10)]
        time.sleep(0.2)
        status, _, body = invoke(srv.url, {"inputs": "hello"})
        assert status == 503 and body == b"Service Unavailable"
        for sock in idle:
            sock.close()
        wait_until(lambda: invoke(srv.url, {"inputs": "hello"})[0] == 200, timeout=10)


def test_inputs_per_request_are_capped(baseline: ModelServer) -> None:
    status, _, body = invoke(baseline.url, {"inputs": ["ok"] * 51})
    assert status == 413 and "serve.max_inputs_per_request" in body["error"]
    assert invoke(baseline.url, {"inputs": ["ok"] * 50})[0] == 200


def test_a_one_review_request_is_not_stuck_behind_two_big_ones(tmp_path: Path) -> None:
    gated = Gated(tmp_path, max_batch_size=8)
    try:
        _one_small_request_behind_two_big_ones(gated)
    finally:
        gated.close()


def _one_small_request_behind_two_big_ones(gated: Gated) -> None:
    held = gated.hold()
    big_a = gated.send([f"a{i}" for i in range(40)])
    big_b = gated.send([f"b{i}" for i in range(40)])
    wait_until(lambda: gated.server.variants["gated"].batcher.queued() == 80)  # type: ignore[union-attr]
    small = gated.send("one review")
    gated.wait_queued(81)
    gated.open()
    held.result(30)
    assert small.result(30)[2]["predictions"] == [{"echo": "one review"}]
    calls = gated.calls()
    assert "one review" in calls[1] and len(calls[1]) == 8  # the very next model call, shared fairly
    assert big_a.result(30)[2]["predictions"] == [{"echo": f"a{i}"} for i in range(40)]
    assert big_b.result(30)[2]["predictions"] == [{"echo": f"b{i}"} for i in range(40)]


def test_unknown_variant_names_never_become_metric_labels(baseline: ModelServer) -> None:
    before = request(baseline.url, "GET", "/metrics")[2].decode()
    for i in range(20):
        status, _, _ = invoke(baseline.url, {"inputs": "x"}, X_Amzn_SageMaker_Target_Variant=f"made-up-{i}")
        assert status == 400
    after = request(baseline.url, "GET", "/metrics")[2].decode()
    assert "made-up" not in after
    assert (
        _metric(after, "reviewpipe_requests_total", variant="none", code="400")
        - _metric(before, "reviewpipe_requests_total", variant="none", code="400")
        == 20
    )


def test_pipelined_requests_are_all_answered_in_order(baseline: ModelServer) -> None:
    sock = connect(baseline.url)
    first, second = body_of(["love it"]), body_of(["awful", "fine", "great"])
    sock.sendall(
        head(Content_Type=JSON, Content_Length=str(len(first)))
        + first
        + head(Content_Type=JSON, Content_Length=str(len(second)))
        + second
        + b"GET /ping HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    )  # one write: the second request arrives while the first is being answered
    answers = responses(sock, 3)
    assert [status for status, _, _ in answers] == [200, 200, 200]
    assert len(json.loads(answers[0][2])["predictions"]) == 1
    assert len(json.loads(answers[1][2])["predictions"]) == 3
    assert json.loads(answers[2][2])["status"] == "ok"
    sock.close()


@pytest.mark.parametrize("content_type", [JSON, "application/jsonlines"])
def test_deeply_nested_json_is_400(baseline: ModelServer, content_type: str) -> None:
    nested = b'{"inputs": ' + b"[" * 30000 + b"]" * 30000 + b"}"
    status, _, body = invoke(baseline.url, nested, content_type)
    assert status == 400 and "nested too deeply" in body["error"]


# ---------------------------------------------------------------- errors without internals


def test_errors_name_the_problem_without_internals(tmp_path: Path, baseline: ModelServer) -> None:
    status, headers, _ = request(baseline.url)
    assert status == 200 and headers["Server"] == "reviewpipe-serve"  # no Python version, no library
    broken = tmp_path / "broken.joblib"
    broken.write_bytes(b"this is not a pickle")
    from reviewpipe.serving import package

    package.build_package(broken, tmp_path / "broken.tar.gz", model_name="broken")
    srv = ModelServer([VariantSpec("broken", str(tmp_path / "broken.tar.gz"))], ServeSettings(port=0)).start()
    try:
        with pytest.raises(ReviewpipeError):
            srv.wait_ready(60)
        status, _, raw = request(srv.url)
        text = raw.decode()
        assert status == 503 and json.loads(text)["status"] == "failed"
        assert "variant broken" in text and "server log" in text
        assert "/tmp" not in text and "reviewpipe-model-" not in text and "Traceback" not in text
    finally:
        srv.stop(drain_timeout=2)
