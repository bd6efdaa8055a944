"""The labelling web server: one HTML page and a small JSON API (Starlette under uvicorn).

  GET    /             the page (page.html): a sign-in form, then the reviews
  POST   /api/session  {"token"} -> {"annotator", "csrf"} and a session cookie (sign in)
  DELETE /api/session  sign out
  GET    /api/next     {"review": next review or null, "progress": {...}, "annotator", "csrf"}
  POST   /api/label    {"review_id", "label": -1|0|1} -> the label is on disk (fsync) before the
                       reply, which carries the next review
  POST   /api/skip     {"review_id"} -> the next review (skipped ones return in a later session)

Every annotator signs in with a token of their own (review/auth.py); labels are stored under the
token's annotator. Posts must be JSON, from this server's own origin (Origin, Host and
Sec-Fetch-Site are checked: no cross-site forms, no DNS rebinding) and, when signed in by cookie,
carry the session's CSRF token in X-CSRF-Token. Bodies are capped at 64 KB (413) and must arrive in
time (408); HTTP parsing, keep-alive and pipelining are uvicorn's (serving/web.py).

What to show and how a label is saved (claims, the cross-process lock, blind labelling) is
review/session.py; this module is the HTTP transport.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import threading
from collections.abc import Callable
from importlib import resources
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from reviewpipe.review.auth import AnnotatorTokens, SignIns
from reviewpipe.review.session import ReviewSession
from reviewpipe.serving.web import (
    BackgroundServer,
    Limits,
    Problem,
    allowed_hosts,
    parse_json,
    problem_response,
    read_body,
    require_host,
    require_json,
    require_same_origin,
)

MAX_BODY_BYTES = 64 * 1024
LIMITS = Limits(
    max_connections=64, header_timeout_s=10, body_timeout_s=30, idle_timeout_s=5, drain_timeout_s=5
)
COOKIE = "reviewpipe_session"
CSRF_HEADER = "x-csrf-token"
SERVER_NAME = "reviewpipe-review"


def page_html() -> str:
    return resources.files("reviewpipe.review").joinpath("page.html").read_text(encoding="utf-8")


def _page_headers(page: str) -> dict[str, str]:
    """No framing (clickjacking a label click), only this page's own inline script runs."""
    scripts = re.findall(r"<script>(.*?)</script>", page, flags=re.S)
    hashes = " ".join(
        f"'sha256-{base64.b64encode(hashlib.sha256(s.encode()).digest()).decode()}'" for s in scripts
    )
    return {
        "Content-Security-Policy": f"default-src 'self'; script-src {hashes}; style-src 'unsafe-inline'; "
        "frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
        "X-Frame-Options": "DENY",
        "Referrer-Policy": "no-referrer",
        "Cache-Control": "no-store",
    }


class ReviewServer:
    """The review page for every annotator who holds a token; one labelling session each."""

    def __init__(
        self,
        open_session: Callable[[str], ReviewSession],
        tokens: AnnotatorTokens,
        host: str = "127.0.0.1",
        port: int = 8765,
        *,
        extra_hosts: list[str] | tuple[str, ...] = (),
        session_ttl_s: float = 12 * 3600,
    ) -> None:
        self.open_session = open_session
        self.tokens = tokens
        self.signins = SignIns(session_ttl_s)
        self.sessions: dict[str, ReviewSession] = {}
        self._sessions_lock = threading.Lock()
        self.hosts = allowed_hosts(host, extra_hosts)
        self.page = page_html()
        self.page_headers = _page_headers(self.page)
        self.app = Starlette(
            routes=[
                Route("/", self._page, methods=["GET"]),
                Route("/index.html", self._page, methods=["GET"]),
                Route("/api/session", self._sign_in, methods=["POST"]),
                Route("/api/session", self._sign_out, methods=["DELETE"]),
                Route("/api/next", self._next, methods=["GET"]),
                Route("/api/label", self._label, methods=["POST"]),
                Route("/api/skip", self._skip, methods=["POST"]),
            ],
            exception_handlers={HTTPException: _http_exception},
        )
        self.http = BackgroundServer(self.app, host, port, LIMITS, SERVER_NAME)

    @property
    def url(self) -> str:
        return self.http.url

    def start(self) -> ReviewServer:
        self.http.start()
        return self

    def stop(self) -> None:
        self.http.stop()

    def session(self, annotator: str) -> ReviewSession:
        """This annotator's labelling session, opened on first use (opening one claims a review)."""
        with self._sessions_lock:
            if annotator not in self.sessions:
                self.sessions[annotator] = self.open_session(annotator)
            return self.sessions[annotator]

    # ------------------------------------------------------------ auth

    def _who(self, request: Request, post: bool) -> tuple[str, str | None]:
        """(annotator, CSRF token of the cookie session or None for a bearer token); 401/403 else."""
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer":
            name = self.tokens.annotator(token.strip())
            if name is None:
                raise Problem(401, "unknown token; ask for yours: reviewpipe review token --annotator NAME")
            return name, None
        signed_in = self.signins.get(request.cookies.get(COOKIE))
        if signed_in is None:
            raise Problem(401, "sign in with your annotator token")
        name, csrf = signed_in
        if post and not hmac.compare_digest(request.headers.get(CSRF_HEADER, "").encode(), csrf.encode()):
            raise Problem(403, "missing or wrong CSRF token; reload the page")
        return name, csrf

    async def _guarded(self, request: Request, post: bool) -> tuple[str, str | None, Any]:
        """The checks every API call passes: bounded body, own origin, JSON, a signed-in annotator."""
        body = await read_body(request, MAX_BODY_BYTES, LIMITS.body_timeout_s, "64 KB") if post else b""
        require_same_origin(request, self.hosts)
        if post:
            require_json(request)
        name, csrf = self._who(request, post)
        payload = parse_json(body or b"{}") if post else None
        return name, csrf, payload

    # ------------------------------------------------------------ routes

    async def _page(self, request: Request) -> Response:
        try:
            require_host(request, self.hosts)  # a link from elsewhere may open the page; posts are checked
        except Problem as problem:
            return problem_response(problem)
        return HTMLResponse(self.page, headers=self.page_headers)

    async def _sign_in(self, request: Request) -> Response:
        try:
            body = await read_body(request, MAX_BODY_BYTES, LIMITS.body_timeout_s, "64 KB")
            require_same_origin(request, self.hosts)
            require_json(request)
            payload = parse_json(body)
            token = payload.get("token") if isinstance(payload, dict) else None
            name = self.tokens.annotator(token) if isinstance(token, str) else None
            if name is None:
                raise Problem(401, "unknown token; ask for yours: reviewpipe review token --annotator NAME")
        except Problem as problem:
            return problem_response(problem)
        sid, csrf = self.signins.open(name)
        response = JSONResponse({"annotator": name, "csrf": csrf}, headers={"Cache-Control": "no-store"})
        response.set_cookie(
            COOKIE, sid, max_age=int(self.signins.ttl_s), path="/", httponly=True, samesite="strict"
        )
        return response

    async def _sign_out(self, request: Request) -> Response:
        try:
            await self._guarded(request, post=True)
        except Problem as problem:
            return problem_response(problem)
        self.signins.close(request.cookies.get(COOKIE))
        response = JSONResponse({"signed_out": True})
        response.delete_cookie(COOKIE, path="/", httponly=True, samesite="strict")
        return response

    async def _next(self, request: Request) -> Response:
        try:
            name, csrf, _ = await self._guarded(request, post=False)
        except Problem as problem:
            return problem_response(problem)
        state = await run_in_threadpool(lambda: self.session(name).state())
        return _json(200, {**state, "csrf": csrf})

    async def _label(self, request: Request) -> Response:
        return await self._act(request, "label")

    async def _skip(self, request: Request) -> Response:
        return await self._act(request, "skip")

    async def _act(self, request: Request, action: str) -> Response:
        try:
            name, csrf, payload = await self._guarded(request, post=True)
            if not isinstance(payload, dict) or "review_id" not in payload:
                raise Problem(400, "send a JSON object with review_id")
        except Problem as problem:
            return problem_response(problem)
        session = self.session(name)
        if action == "label":
            status, body = await run_in_threadpool(session.label, payload["review_id"], payload.get("label"))
        else:
            status, body = await run_in_threadpool(session.skip, payload["review_id"])
        return _json(int(status), {**body, "csrf": csrf})


def _json(status: int, payload: dict[str, Any]) -> JSONResponse:
    return JSONResponse(payload, status, headers={"Cache-Control": "no-store"})


async def _http_exception(request: Request, exc: Exception) -> Response:
    status = getattr(exc, "status_code", 500)
    message = {404: f"no such page: {request.url.path[:200]}", 405: "method not allowed"}
    return JSONResponse({"error": message.get(status, "request refused"), "code": status}, status)
