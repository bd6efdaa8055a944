"""The labelling server's JSON API over real HTTP on loopback."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from reviewpipe.review.queue import write_queue
from reviewpipe.review.server import ReviewSession, make_server
from reviewpipe.review.store import LabelStore, read_labels

QUEUE = [
    {
        "review_id": 1,
        "text": "Runs small but lovely.",
        "predicted_label": 1,
        "probabilities": {"-1": 0.2, "0": 0.3, "1": 0.5},
        "confidence": 0.5,
        "created_at": "2026-01-01T00:00:00Z",
    },
    {
        "review_id": "r2",
        "text": "The <b>zipper</b> broke & I returned it.",
        "predicted_label": -1,
        "probabilities": {"-1": 0.6, "0": 0.3, "1": 0.1},
        "confidence": 0.6,
        "created_at": "2026-01-01T00:00:00Z",
    },
    {
        "review_id": 3,
        "text": "Already labelled by bob.",
        "predicted_label": 0,
        "probabilities": {"-1": 0.3, "0": 0.4, "1": 0.3},
        "confidence": 0.4,
        "created_at": "2026-01-01T00:00:00Z",
    },
    {
        "review_id": 4,
        "text": "It is fine, I guess.",
        "predicted_label": 0,
        "probabilities": {"-1": 0.2, "0": 0.45, "1": 0.35},
        "confidence": 0.45,
        "created_at": "2026-01-01T00:00:00Z",
    },
]


def start(session: ReviewSession) -> tuple[str, object]:
    server = make_server(session, "127.0.0.1", 0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    host, port = server.server_address[:2]
    return f"http://{host}:{port}", server


@pytest.fixture
def folders(tmp_path: Path) -> tuple[Path, Path]:
    queue_dir, labels_dir = tmp_path / "queue", tmp_path / "labels"
    write_queue(QUEUE, str(queue_dir))
    LabelStore(labels_dir, "bob").append(3, 0)
    return queue_dir, labels_dir


@pytest.fixture
def base_url(folders: tuple[Path, Path]) -> Iterator[str]:
    from reviewpipe.review.queue import read_queue

    queue_dir, labels_dir = folders
    url, server = start(ReviewSession(read_queue(str(queue_dir)), LabelStore(labels_dir, "ana")))
    yield url
    server.shutdown()
    server.server_close()


def call(url: str, body: object | None = None, raw: bytes | None = None) -> tuple[int, dict]:
    data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
    request = urllib.request.Request(
        url, data=data, headers={"Content-Type": "application/json"}, method="GET" if data is None else "POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_api_walks_the_queue_and_writes_each_label(base_url: str, folders: tuple[Path, Path]) -> None:
    _, labels_dir = folders
    status, state = call(f"{base_url}/api/next")
    assert status == 200 and state["review"]["review_id"] == 1 and state["annotator"] == "ana"
    assert state["progress"] == {
        "total": 4,
        "labelled": 1,
        "labelled_this_session": 0,
        "skipped": 0,
        "remaining": 3,
    }

    status, state = call(f"{base_url}/api/label", {"review_id": 1, "label": -1})
    assert status == 200 and state["saved"]["label"] == -1 and state["review"]["review_id"] == "r2"
    ana = [r for r in read_labels(labels_dir) if r["annotator"] == "ana"]
    assert [(r["review_id"], r["label"]) for r in ana] == [(1, -1)]  # on disk when the reply came

    status, state = call(f"{base_url}/api/skip", {"review_id": "r2"})
    assert status == 200 and state["review"]["review_id"] == 4  # 3 was labelled by bob
    status, state = call(f"{base_url}/api/label", {"review_id": 4, "label": 0})
    assert state["review"] is None
    assert state["progress"] == {
        "total": 4,
        "labelled": 3,
        "labelled_this_session": 2,
        "skipped": 1,
        "remaining": 0,
    }

    # A skipped review may still be labelled; a labelled one cannot be labelled twice.
    status, state = call(f"{base_url}/api/label", {"review_id": "r2", "label": 1})
    assert status == 200 and state["progress"]["skipped"] == 0
    status, state = call(f"{base_url}/api/label", {"review_id": 1, "label": 1})
    assert status == 409 and "already labelled" in state["error"]
    ana = [(r["review_id"], r["label"]) for r in read_labels(labels_dir) if r["annotator"] == "ana"]
    assert ana == [(1, -1), (4, 0), ("r2", 1)]


def test_api_rejects_bad_requests(base_url: str) -> None:
    assert call(f"{base_url}/api/label", {"review_id": 1, "label": 2})[0] == 400
    assert call(f"{base_url}/api/label", {"review_id": 1, "label": True})[0] == 400
    assert call(f"{base_url}/api/label", {"review_id": 99, "label": 1})[0] == 404
    assert call(f"{base_url}/api/label", {"label": 1})[0] == 400
    status, body = call(f"{base_url}/api/label", raw=b"{not json")
    assert status == 400 and "malformed JSON" in body["error"]
    assert call(f"{base_url}/api/nothing")[0] == 404
    with urllib.request.urlopen(f"{base_url}/", timeout=10) as response:
        assert response.headers["Content-Type"].startswith("text/html")
        assert b"/api/label" in response.read()


def test_a_new_session_shows_skipped_but_never_labelled_reviews(folders: tuple[Path, Path]) -> None:
    from reviewpipe.review.queue import read_queue

    queue_dir, labels_dir = folders
    first = ReviewSession(read_queue(str(queue_dir)), LabelStore(labels_dir, "ana"))
    first.label(1, 1)
    first.skip("r2")
    assert first.state()["review"]["review_id"] == 4
    second = ReviewSession(read_queue(str(queue_dir)), LabelStore(labels_dir, "carol"))
    assert second.state()["review"]["review_id"] == "r2"
    assert second.state()["progress"]["labelled"] == 2


def test_review_command_serves_until_sigterm(folders: tuple[Path, Path], tmp_path: Path) -> None:
    queue_dir, labels_dir = folders
    params = tmp_path / "params.yaml"
    params.write_text(
        yaml.safe_dump(
            {
                "review": {
                    "queue_dir": str(queue_dir),
                    "labels_dir": str(labels_dir),
                    "host": "127.0.0.1",
                    "port": 8765,
                    "confidence_threshold": 0.9,
                }
            }
        )
    )
    reviewpipe = str(Path(sys.executable).parent / "reviewpipe")
    process = subprocess.Popen(
        [reviewpipe, "review", "--annotator", "dana", "--port", "0", "--params", str(params)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        first = process.stdout.readline()
        assert "labelling 3 of 4 queued reviews as dana" in first
        url = process.stdout.readline().split()[1]
        assert call(f"{url}api/label", {"review_id": 1, "label": 1})[0] == 200
    finally:
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=20)
    assert process.returncode == 0, err
    assert "1 label(s) saved to" in out
    assert [(r["review_id"], r["label"]) for r in read_labels(labels_dir) if r["annotator"] == "dana"] == [
        (1, 1)
    ]
