"""The labelling web server: one HTML page and a small JSON API on the standard library.

  GET  /             the page (page.html)
  GET  /api/next     {"review": next queued review or null, "progress": {...}, "annotator"}
  POST /api/label    {"review_id", "label": -1|0|1} -> the label is on disk (fsync) before the
                     reply, which carries the next review
  POST /api/skip     {"review_id"} -> the next review (skipped ones return in a later session)

What to show and how a label is saved (claims, the cross-process lock, blind labelling) is
review/session.py; this module is the HTTP transport.
"""

from __future__ import annotations

import json
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import Any

from reviewpipe.review.session import ReviewSession

MAX_BODY_BYTES = 64 * 1024


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
