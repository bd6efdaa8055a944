"""The labelling web server: one HTML page and a small JSON API on the standard library.

  GET  /             the page (page.html)
  GET  /api/next     {"review": next queued review or null, "progress": {...}, "annotator"}
  POST /api/label    {"review_id", "label": -1|0|1} -> the label is on disk (fsync) before the
                     reply, which carries the next review
  POST /api/skip     {"review_id"} -> the next review (skipped ones return in a later session)

Reviews labelled by anyone (any file in labels_dir, re-read on every request, so annotators
working side by side do not label the same review twice) are never shown again.
"""

from __future__ import annotations

import json
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import Any

from reviewpipe import SENTIMENTS
from reviewpipe.review.store import LabelStore

MAX_BODY_BYTES = 64 * 1024


class ReviewSession:
    """What one annotator has left to do; thread-safe (the server handles requests in threads)."""

    def __init__(self, queue: list[dict[str, Any]], store: LabelStore) -> None:
        self.queue = queue
        self.store = store
        self.by_id = {str(r["review_id"]): r for r in queue}
        self.labelled = store.labelled_ids() & set(self.by_id)
        self.labelled_here = 0
        self.skipped: set[str] = set()
        self._lock = threading.Lock()

    def _next(self) -> dict[str, Any] | None:
        for record in self.queue:
            key = str(record["review_id"])
            if key not in self.labelled and key not in self.skipped:
                return record
        return None

    def _progress(self) -> dict[str, int]:
        total = len(self.by_id)
        return {
            "total": total,
            "labelled": len(self.labelled),
            "labelled_this_session": self.labelled_here,
            "skipped": len(self.skipped),
            "remaining": total - len(self.labelled) - len(self.skipped),
        }

    def _refresh(self) -> None:
        # Other annotators (other servers) may have labelled queued reviews since we started.
        self.labelled |= self.store.labelled_ids() & set(self.by_id)
        self.skipped -= self.labelled

    def state(self) -> dict[str, Any]:
        with self._lock:
            self._refresh()
            return self._state()

    def _state(self) -> dict[str, Any]:
        return {"review": self._next(), "progress": self._progress(), "annotator": self.store.annotator}

    def label(self, review_id: Any, label: Any) -> tuple[HTTPStatus, dict[str, Any]]:
        if label not in SENTIMENTS or isinstance(label, bool):
            return HTTPStatus.BAD_REQUEST, {
                "error": f"label must be one of {list(SENTIMENTS)}, got {label!r}"
            }
        with self._lock:
            key = str(review_id)
            if key not in self.by_id:
                return HTTPStatus.NOT_FOUND, {
                    "error": f"review {review_id!r} is not in the queue",
                    **self._state(),
                }
            self._refresh()
            if key in self.labelled:
                return HTTPStatus.CONFLICT, {
                    "error": f"review {review_id!r} is already labelled",
                    **self._state(),
                }
            record = self.store.append(self.by_id[key]["review_id"], label)  # durable before we move on
            self.labelled.add(key)
            self.skipped.discard(key)
            self.labelled_here += 1
            return HTTPStatus.OK, {"saved": record, **self._state()}

    def skip(self, review_id: Any) -> tuple[HTTPStatus, dict[str, Any]]:
        with self._lock:
            key = str(review_id)
            if key not in self.by_id:
                return HTTPStatus.NOT_FOUND, {
                    "error": f"review {review_id!r} is not in the queue",
                    **self._state(),
                }
            if key not in self.labelled:
                self.skipped.add(key)
            return HTTPStatus.OK, self._state()


def page_html() -> str:
    return resources.files("reviewpipe.review").joinpath("page.html").read_text(encoding="utf-8")


class _Handler(BaseHTTPRequestHandler):
    session: ReviewSession  # set on the subclass make_server builds
    page: str
    server_version = "reviewpipe-review/1"

    def log_message(self, format: str, *args: Any) -> None:  # keep the terminal for the summary
        pass

    def _send(self, status: HTTPStatus, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def _json(self, status: HTTPStatus, payload: dict[str, Any]) -> None:
        self._send(status, json.dumps(payload, ensure_ascii=False).encode("utf-8"), "application/json")

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path in ("/", "/index.html"):
            self._send(HTTPStatus.OK, self.page.encode("utf-8"), "text/html; charset=utf-8")
        elif path == "/api/next":
            self._json(HTTPStatus.OK, self.session.state())
        else:
            self._json(HTTPStatus.NOT_FOUND, {"error": f"no such page: {path}"})

    def do_POST(self) -> None:
        path = self.path.split("?", 1)[0]
        if path not in ("/api/label", "/api/skip"):
            self._json(HTTPStatus.NOT_FOUND, {"error": f"no such endpoint: {path}"})
            return
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY_BYTES:
            self._json(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, {"error": "request body too large"})
            return
        try:
            body = json.loads(self.rfile.read(length) or b"{}")
        except json.JSONDecodeError as exc:
            self._json(HTTPStatus.BAD_REQUEST, {"error": f"malformed JSON: {exc}"})
            return
        if not isinstance(body, dict) or "review_id" not in body:
            self._json(HTTPStatus.BAD_REQUEST, {"error": "send a JSON object with review_id"})
            return
        if path == "/api/label":
            status, payload = self.session.label(body["review_id"], body.get("label"))
        else:
            status, payload = self.session.skip(body["review_id"])
        self._json(status, payload)


def make_server(session: ReviewSession, host: str = "127.0.0.1", port: int = 8765) -> ThreadingHTTPServer:
    """A server bound to host:port (port 0: any free port; see server.server_address)."""
    handler = type("ReviewHandler", (_Handler,), {"session": session, "page": page_html()})
    server = ThreadingHTTPServer((host, port), handler)
    server.daemon_threads = True
    return server
