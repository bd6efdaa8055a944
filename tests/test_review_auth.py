"""The review page's transport and sign-in over real HTTP (issue 12 §4, issue 13 §1): a token per
annotator, labels stored under the token's annotator, CSRF tokens on cookie sessions, foreign
Origin/Host refused, the 64 KB body limit that a negative length or chunk size cannot bypass."""

from __future__ import annotations

import json
import stat
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from reviewpipe import cli
from reviewpipe.review.auth import TOKENS_FILE, AnnotatorTokens, hash_token
from reviewpipe.review.queue import read_queue, write_queue
from reviewpipe.review.server import ReviewServer
from reviewpipe.review.session import ReviewSession
from reviewpipe.review.store import Claims, LabelStore, ReviewLock, read_labels
from tests.test_serve import request
from tests.test_serve_hardening import closed_by_server, connect, head, responses

TOKENS = {"alice": "alice-token-0123456789abcdef", "bob": "bob-token-0123456789abcdef"}
QUEUE = [
    {
        "review_id": f"r{i}",
        "text": f"review {i}",
        "predicted_label": 0,
        "probabilities": {"-1": 0.3, "0": 0.4, "1": 0.3},
        "confidence": 0.4 + i / 100,
        "created_at": "2026-01-01T00:00:00Z",
    }
    for i in range(6)
]
JSON = "application/json"


@pytest.fixture
def folders(tmp_path: Path) -> Path:
    write_queue(QUEUE, str(tmp_path / "queue"))
    return tmp_path


def opener(root: Path, ttl: float = 900) -> Any:
    lock = ReviewLock(root / "state")

    def open_session(name: str) -> ReviewSession:
        return ReviewSession(
            read_queue(str(root / "queue")),
            LabelStore(root / "labels", name, lock),
            Claims(lock, ttl),
            show_model_guess=False,
        )

    return open_session


@pytest.fixture
def server(folders: Path) -> Iterator[ReviewServer]:
    tokens = AnnotatorTokens({hash_token(t): n for n, t in TOKENS.items()})
    srv = ReviewServer(opener(folders), tokens, "127.0.0.1", 0, session_ttl_s=1.5).start()
    yield srv
    srv.stop()


def api(
    url: str, method: str, path: str, body: Any = None, token: str | None = None, **headers: str
) -> tuple[int, Any, Any]:
    sent = {"Content-Type": JSON, **{k.replace("_", "-"): v for k, v in headers.items()}}
    if token:
        sent["Authorization"] = f"Bearer {token}"
    data = None if body is None else body if isinstance(body, bytes) else json.dumps(body).encode()
    status, response_headers, raw = request(url, method, path, data, sent)
    return status, response_headers, json.loads(raw) if raw else None


def sign_in(url: str, name: str) -> tuple[str, str]:
    """(Cookie header, CSRF token) after signing in as the page does."""
    status, headers, body = api(url, "POST", "/api/session", {"token": TOKENS[name]})
    assert status == 200 and body["annotator"] == name
    cookie = headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie
    return cookie.split(";", 1)[0], body["csrf"]


def labels(root: Path) -> list[tuple[str, str]]:
    return sorted((r["review_id"], r["annotator"]) for r in read_labels(root / "labels"))


def test_each_annotator_signs_in_with_a_token_of_their_own(server: ReviewServer, folders: Path) -> None:
    for name in ("alice", "bob"):
        status, _, state = api(server.url, "GET", "/api/next", token=TOKENS[name])
        assert status == 200 and state["annotator"] == name
        review = state["review"]["review_id"]
        body = {"review_id": review, "label": 1, "annotator": "mallory"}  # a name in the body is ignored
        assert api(server.url, "POST", "/api/label", body, token=TOKENS[name])[0] == 200
    assert {name for _, name in labels(folders)} == {"alice", "bob"}
    for token in (None, "guessed-token"):
        status, headers, body = api(server.url, "GET", "/api/next", token=token)
        assert status == 401 and "token" in body["error"]
        assert api(server.url, "POST", "/api/label", {"review_id": "r9", "label": 1}, token=token)[0] == 401
    assert api(server.url, "POST", "/api/session", {"token": "guessed-token"})[0] == 401


def test_a_cookie_session_posts_only_with_its_csrf_token(server: ReviewServer, folders: Path) -> None:
    cookie, csrf = sign_in(server.url, "alice")
    status, _, state = api(server.url, "GET", "/api/next", Cookie=cookie)
    assert status == 200 and state["annotator"] == "alice" and state["csrf"] == csrf
    label = {"review_id": state["review"]["review_id"], "label": -1}
    status, _, body = api(server.url, "POST", "/api/label", label, Cookie=cookie)  # a forged form post
    assert status == 403 and "CSRF" in body["error"]
    assert api(server.url, "POST", "/api/label", label, Cookie=cookie, X_CSRF_Token="wrong")[0] == 403
    assert labels(folders) == []
    assert api(server.url, "POST", "/api/label", label, Cookie=cookie, X_CSRF_Token=csrf)[0] == 200
    assert labels(folders) == [(label["review_id"], "alice")]
    # signed out: the cookie is worth nothing
    assert api(server.url, "DELETE", "/api/session", Cookie=cookie, X_CSRF_Token=csrf)[0] == 200
    assert api(server.url, "GET", "/api/next", Cookie=cookie)[0] == 401


def test_a_sign_in_expires(server: ReviewServer) -> None:
    cookie, _ = sign_in(server.url, "bob")
    assert api(server.url, "GET", "/api/next", Cookie=cookie)[0] == 200
    time.sleep(1.6)  # session_ttl_s = 1.5
    assert api(server.url, "GET", "/api/next", Cookie=cookie)[0] == 401


def test_posts_from_a_foreign_origin_or_host_are_refused(server: ReviewServer, folders: Path) -> None:
    cookie, csrf = sign_in(server.url, "alice")
    state = api(server.url, "GET", "/api/next", Cookie=cookie)[2]
    label = {"review_id": state["review"]["review_id"], "label": 0}
    signed = {"Cookie": cookie, "X_CSRF_Token": csrf}
    port = server.url.rsplit(":", 1)[1]
    for headers, status in [
        ({"Origin": "http://evil.example"}, 403),
        ({"Origin": "null"}, 403),
        ({"Host": f"evil.example:{port}"}, 403),  # DNS rebinding
        ({"Sec_Fetch_Site": "cross-site"}, 403),
        ({"Content_Type": "text/plain"}, 415),  # what a form on another site can send
    ]:
        assert api(server.url, "POST", "/api/label", label, **signed, **headers)[0] == status, headers
    assert api(server.url, "GET", "/api/next", token=TOKENS["alice"], Host=f"evil.example:{port}")[0] == 403
    assert (
        api(server.url, "POST", "/api/session", {"token": TOKENS["alice"]}, Origin="http://evil.example")[0]
        == 403
    )
    assert labels(folders) == []
    assert api(server.url, "POST", "/api/label", label, **signed, Origin=server.url)[0] == 200  # its own page


def test_the_page_cannot_be_framed_and_runs_only_its_own_script(server: ReviewServer) -> None:
    status, headers, body = request(server.url, "GET", "/")
    assert status == 200 and headers["X-Frame-Options"] == "DENY" and headers["Server"] == "reviewpipe-review"
    policy = headers["Content-Security-Policy"]
    assert (
        "frame-ancestors 'none'" in policy
        and "script-src 'sha256-" in policy
        and "unsafe-inline" not in policy.split("style-src")[0]
    )
    assert b"/api/session" in body


def test_the_64_kb_body_limit_holds(server: ReviewServer) -> None:
    sock = connect(server.url)
    sock.sendall(
        head("/api/label", Content_Type=JSON, Content_Length="-1") + b'{"review_id": "r1"' + b" " * 1000
    )
    [(status, _, _)] = responses(sock)
    assert status == 400 and closed_by_server(sock)

    sock = connect(server.url)
    sock.sendall(head("/api/label", Content_Type=JSON, Transfer_Encoding="chunked") + b"-1\r\n{}")
    [(status, _, _)] = responses(sock)
    assert status == 400 and closed_by_server(sock)

    sock = connect(server.url)
    chunk = b" " * 16384
    sock.sendall(head("/api/label", Content_Type=JSON, Transfer_Encoding="chunked"))
    for _ in range(5):  # 80 KB, and the stream would go on
        sock.sendall(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
    [(status, headers, body)] = responses(sock)
    assert status == 413 and "64 KB" in json.loads(body)["error"] and headers["connection"] == "close"

    status, _, body = api(server.url, "POST", "/api/label", b"[" * 30000 + b"]" * 30000, token=TOKENS["bob"])
    assert status == 400 and "nested too deeply" in body["error"]


def test_the_token_command_issues_rotates_and_keeps_only_hashes(
    folders: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    params = folders / "params.yaml"
    params.write_text(
        json.dumps({"review": {"state_dir": str(folders / "state"), "host": "127.0.0.1", "port": 8765}})
    )
    assert cli.main(["review", "token", "--annotator", "carol", "--params", str(params)]) == 0
    first = capsys.readouterr().out.splitlines()[1]
    assert cli.main(["review", "token", "--annotator", "carol", "--params", str(params)]) == 0
    out = capsys.readouterr().out
    second = out.splitlines()[1]
    assert f"http://127.0.0.1:8765/#token={second}" in out and first != second
    tokens_file = folders / "state" / TOKENS_FILE
    assert stat.S_IMODE(tokens_file.stat().st_mode) == 0o600
    assert first not in tokens_file.read_text() and second not in tokens_file.read_text()
    tokens = AnnotatorTokens.load(folders / "state")
    assert tokens.annotator(second) == "carol" and tokens.annotator(first) is None  # rotated
    srv = ReviewServer(opener(folders), tokens, "127.0.0.1", 0).start()
    try:
        assert api(srv.url, "GET", "/api/next", token=second)[2]["annotator"] == "carol"
    finally:
        srv.stop()
    assert cli.main(["review", "token", "--annotator", " ", "--params", str(params)]) == 2
