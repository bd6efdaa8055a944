"""The labelling server's JSON API over real HTTP on loopback: the walk through the queue (least
confident first), blind labelling, claims that keep annotators apart (in one process, and across
two `reviewpipe review` processes), and a clean stop."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from reviewpipe.review.auth import AnnotatorTokens, hash_token
from reviewpipe.review.queue import read_queue, write_queue
from reviewpipe.review.server import ReviewServer
from reviewpipe.review.session import ReviewSession
from reviewpipe.review.store import Claims, LabelStore, ReviewLock, read_labels

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


TOKENS = {name: f"{name}-secret-token-0123456789" for name in ("ana", "carol")}


def start(folders: tuple[Path, Path], **options: object) -> ReviewServer:
    """The review server for every annotator in TOKENS, sessions opened as `reviewpipe review` does."""
    tokens = AnnotatorTokens({hash_token(token): name for name, token in TOKENS.items()})
    return ReviewServer(lambda name: session(folders, name), tokens, "127.0.0.1", 0, **options).start()  # type: ignore[arg-type]


def session(
    folders: tuple[Path, Path], annotator: str, *, ttl_s: float = 900, show_model_guess: bool = False
) -> ReviewSession:
    """A session as `reviewpipe review` opens it: labels, claims and lock shared through the folders."""
    queue_dir, labels_dir = folders
    lock = ReviewLock(labels_dir.parent / "state")
    return ReviewSession(
        read_queue(str(queue_dir)),
        LabelStore(labels_dir, annotator, lock),
        Claims(lock, ttl_s),
        show_model_guess=show_model_guess,
    )


@pytest.fixture
def folders(tmp_path: Path) -> tuple[Path, Path]:
    queue_dir, labels_dir = tmp_path / "queue", tmp_path / "labels"
    write_queue(QUEUE, str(queue_dir))
    LabelStore(labels_dir, "bob", ReviewLock(tmp_path / "state")).append(3, 0)
    return queue_dir, labels_dir


@pytest.fixture
def base_url(folders: tuple[Path, Path]) -> Iterator[str]:
    server = start(folders)
    yield server.url
    server.stop()


def call(
    url: str, body: object | None = None, raw: bytes | None = None, token: str | None = TOKENS["ana"]
) -> tuple[int, dict]:
    """A JSON API call as a script makes it: the annotator's token as a bearer token (ana's by default)."""
    data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(
        url, data=data, headers=headers, method="GET" if data is None else "POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_api_walks_the_queue_and_writes_each_label(base_url: str, folders: tuple[Path, Path]) -> None:
    _, labels_dir = folders
    status, state = call(f"{base_url}/api/next")
    # least confident first: 3 (0.40, labelled by bob), 4 (0.45), 1 (0.50), r2 (0.60)
    assert status == 200 and state["review"]["review_id"] == 4 and state["annotator"] == "ana"
    assert state["progress"] == {
        "total": 4,
        "labelled": 1,
        "labelled_this_session": 0,
        "skipped": 0,
        "held_by_others": 0,
        "remaining": 3,
    }

    status, state = call(f"{base_url}/api/label", {"review_id": 4, "label": -1})
    assert status == 200 and state["saved"]["label"] == -1 and state["review"]["review_id"] == 1
    ana = [r for r in read_labels(labels_dir) if r["annotator"] == "ana"]
    assert [(r["review_id"], r["label"]) for r in ana] == [(4, -1)]  # on disk when the reply came

    status, state = call(f"{base_url}/api/skip", {"review_id": 1})
    assert status == 200 and state["review"]["review_id"] == "r2"
    status, state = call(f"{base_url}/api/label", {"review_id": "r2", "label": 0})
    assert state["review"] is None
    assert state["progress"] == {
        "total": 4,
        "labelled": 3,
        "labelled_this_session": 2,
        "skipped": 1,
        "held_by_others": 0,
        "remaining": 0,
    }

    # A skipped review may still be labelled; a labelled one cannot be labelled twice.
    status, state = call(f"{base_url}/api/label", {"review_id": 1, "label": 1})
    assert status == 200 and state["progress"]["skipped"] == 0
    status, state = call(f"{base_url}/api/label", {"review_id": 4, "label": 1})
    assert status == 409 and "already labelled" in state["error"]
    ana = [(r["review_id"], r["label"]) for r in read_labels(labels_dir) if r["annotator"] == "ana"]
    assert ana == [(4, -1), ("r2", 0), (1, 1)]


def test_labelling_is_blind_unless_configured(base_url: str, folders: tuple[Path, Path]) -> None:
    status, state = call(f"{base_url}/api/next")
    assert state["blind"] is True
    assert state["review"] == {"review_id": 4, "text": "It is fine, I guess."}  # no guess, no probabilities
    with urllib.request.urlopen(f"{base_url}/", timeout=10) as response:
        assert b"model guessed" in response.read()  # the page can show a guess, and shows none here
    seeing = session(folders, "carol", show_model_guess=True).state()
    assert seeing["blind"] is False
    assert seeing["review"] == QUEUE[0]  # 4 is ana's; carol gets 1, with the model's guess


def test_two_annotators_are_never_shown_the_same_review(folders: tuple[Path, Path]) -> None:
    ana, carol = session(folders, "ana"), session(folders, "carol")
    assert ana.state()["review"]["review_id"] == 4
    assert carol.state()["review"]["review_id"] == 1  # 4 is claimed by ana
    assert ana.state()["review"]["review_id"] == 4  # a reload keeps ana's review
    status, body = carol.label(4, 1)
    assert status == 409 and "being labelled by ana" in body["error"]
    status, body = ana.label(4, 0)
    assert status == 200 and body["review"]["review_id"] == "r2"  # 1 is carol's
    status, body = carol.label(1, 1)
    assert status == 200 and body["review"] is None  # r2 is ana's
    assert body["progress"]["held_by_others"] == 1 and body["progress"]["remaining"] == 1
    _, labels_dir = folders
    assert sorted((str(r["review_id"]), r["annotator"]) for r in read_labels(labels_dir)) == [
        ("1", "carol"),
        ("3", "bob"),
        ("4", "ana"),
    ]


def test_a_claim_lapses_after_its_ttl(folders: tuple[Path, Path]) -> None:
    ana = session(folders, "ana", ttl_s=0.3)
    assert ana.state()["review"]["review_id"] == 4
    carol = session(folders, "carol", ttl_s=0.3)
    assert carol.state()["review"]["review_id"] == 1
    time.sleep(0.4)  # ana closed her tab; her claim lapses
    assert session(folders, "dana", ttl_s=0.3).state()["review"]["review_id"] == 4


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
    first = session(folders, "ana")
    first.label(4, 1)
    first.skip(1)
    assert first.state()["review"]["review_id"] == "r2"
    first.skip("r2")  # releases the claim
    second = session(folders, "carol")
    assert second.state()["review"]["review_id"] == 1
    assert second.state()["progress"]["labelled"] == 2


def write_review_params(folders: tuple[Path, Path], path: Path) -> Path:
    queue_dir, labels_dir = folders
    path.write_text(
        yaml.safe_dump(
            {
                "review": {
                    "queue_dir": str(queue_dir),
                    "labels_dir": str(labels_dir),
                    "state_dir": str(labels_dir.parent / "state"),
                    "claim_ttl_s": 900,
                    "show_model_guess": False,
                    "host": "127.0.0.1",
                    "port": 8765,
                    "session_ttl_s": 3600,
                    "allowed_hosts": [],
                    "confidence_threshold": 0.9,
                }
            }
        )
    )
    return path


def review_process(params: Path, annotator: str) -> tuple[subprocess.Popen, str, str, str]:
    """`reviewpipe review --annotator NAME` on a free port: (process, its first line, its URL, the
    one-run token it printed in its sign-in link)."""
    reviewpipe = str(Path(sys.executable).parent / "reviewpipe")
    process = subprocess.Popen(
        [reviewpipe, "review", "--annotator", annotator, "--port", "0", "--params", str(params)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    first = process.stdout.readline()
    url, _, token = process.stdout.readline().split()[1].partition("#token=")
    return process, first, url, token


def stop(process: subprocess.Popen) -> str:
    process.send_signal(signal.SIGTERM)
    out, err = process.communicate(timeout=20)
    assert process.returncode == 0, err
    return out


def test_review_command_serves_until_sigterm(folders: tuple[Path, Path], tmp_path: Path) -> None:
    _, labels_dir = folders
    process, first, url, token = review_process(
        write_review_params(folders, tmp_path / "params.yaml"), "dana"
    )
    try:
        assert "labelling 3 of 4 queued reviews as dana" in first
        assert call(f"{url}api/next", token=None)[0] == 401  # no token, no reviews
        assert call(f"{url}api/next", token=token)[1]["review"]["review_id"] == 4
        assert call(f"{url}api/label", {"review_id": 4, "label": 1}, token=token)[0] == 200
    finally:
        out = stop(process)
    assert "1 label(s) saved to" in out
    assert [(r["review_id"], r["label"]) for r in read_labels(labels_dir) if r["annotator"] == "dana"] == [
        (4, 1)
    ]


def test_two_review_processes_share_the_queue_without_overlap(
    folders: tuple[Path, Path], tmp_path: Path
) -> None:
    queue_dir, labels_dir = folders
    more = [{**QUEUE[0], "review_id": f"m{i}", "confidence": 0.3 + i / 100} for i in range(20)]
    write_queue(more, str(queue_dir), name="more.jsonl")
    params = write_review_params(folders, tmp_path / "params.yaml")
    servers = [review_process(params, name) for name in ("ana", "carol")]
    outcomes: dict[str, list[int]] = {"ana": [], "carol": []}

    def annotate(name: str, url: str, token: str) -> None:
        while (state := call(f"{url}api/next", token=token)[1])["review"] is not None:
            outcomes[name].append(
                call(f"{url}api/label", {"review_id": state["review"]["review_id"], "label": 0}, token=token)[
                    0
                ]
            )

    try:
        threads = [
            threading.Thread(target=annotate, args=(name, url, token))
            for name, (_, _, url, token) in zip(("ana", "carol"), servers, strict=True)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
    finally:
        for process, _, _, _ in servers:
            stop(process)
    labelled = [str(r["review_id"]) for r in read_labels(labels_dir)]
    assert sorted(labelled) == sorted({"1", "r2", "3", "4", *(r["review_id"] for r in more)})  # each once
    assert outcomes["ana"] and outcomes["carol"]  # both worked, side by side
    assert set(outcomes["ana"] + outcomes["carol"]) == {200}  # never shown a review the other held
