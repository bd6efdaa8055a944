"""The HTTP layer both reviewpipe servers share: a Starlette app under uvicorn with bounded resources.

uvicorn (h11) parses HTTP: a negative or malformed Content-Length or chunk size is a 400 there,
and pipelined requests are answered in order. What uvicorn leaves to the application, or does not
bound, is here:
- a deadline for a request's headers (uvicorn has none: a client sending half a header would hold
  its connection forever), via a small subclass of uvicorn's h11 protocol;
- body reads with a byte limit (413) and a deadline (408), closing the connection after either so
  the unread rest is never parsed or drained;
- a connection cap (uvicorn's limit_concurrency: 503 above it) and a keep-alive idle timeout;
- Host / Origin / Content-Type checks for state-changing routes (CSRF, DNS rebinding);
- JSON that nests too deeply is a 400, not a 500;
- the server runs in a thread (`BackgroundServer`), so callers start and stop it like an object.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import socket
import threading
import time
from dataclasses import dataclass
from typing import Any

import h11
import uvicorn
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse
from uvicorn.protocols.http.h11_impl import H11Protocol

from reviewpipe.errors import ReviewpipeError

log = logging.getLogger("reviewpipe.web")
LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})


class Problem(Exception):
    """A request we refuse: HTTP `status` and a message for the client (never internals).
    `close`: the request body was not (fully) read, so the connection must not be reused."""

    def __init__(self, status: int, message: str, close: bool = False) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.close = close


def problem_response(problem: Problem, headers: dict[str, str] | None = None) -> JSONResponse:
    extra = dict(headers or {})
    if problem.close:
        extra["Connection"] = "close"
    return JSONResponse({"error": problem.message, "code": problem.status}, problem.status, extra)


# ---------------------------------------------------------------- request checks


async def read_body(request: Request, limit: int, timeout: float, setting: str) -> bytes:
    """The whole body, at most `limit` bytes (413) within `timeout` seconds (408).
    `setting` names the limit's params key for the message."""
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > limit:
        raise Problem(
            413, f"payload of {int(length)} bytes exceeds the {limit}-byte limit ({setting}); send less", True
        )
    chunks: list[bytes] = []
    total = 0
    try:
        async with asyncio.timeout(timeout):
            async for chunk in request.stream():
                total += len(chunk)
                if total > limit:
                    raise Problem(413, f"payload exceeds the {limit}-byte limit ({setting}); send less", True)
                chunks.append(chunk)
    except TimeoutError as exc:
        raise Problem(408, f"the request body did not arrive within {timeout:g} s", True) from exc
    except ClientDisconnect as exc:
        raise Problem(400, "the client closed the connection before the body arrived", True) from exc
    return b"".join(chunks)


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def parse_json(body: bytes | str, what: str = "body") -> Any:
    """Strict JSON (no NaN/Infinity); malformed or too deeply nested JSON is a 400."""
    try:
        return json.loads(body, parse_constant=_refuse_constant)
    except RecursionError as exc:
        raise Problem(400, f"{what} is JSON nested too deeply") from exc
    except (ValueError, UnicodeDecodeError) as exc:  # JSONDecodeError is a ValueError
        raise Problem(400, f"malformed JSON in {what}: {exc}") from exc


def media_type(value: str | None) -> str:
    return (value or "").split(";", 1)[0].strip().lower()


def require_json(request: Request) -> None:
    """State-changing routes take application/json only: a form or text/plain post (what a foreign
    web page can send without a CORS preflight) is refused."""
    if media_type(request.headers.get("content-type")) != "application/json":
        raise Problem(415, "send Content-Type: application/json")


def hostname(host_header: str) -> str:
    """`example.com:8080` -> `example.com`, `[::1]:8080` -> `::1`."""
    host = host_header.strip().lower()
    if host.startswith("["):
        return host[1:].split("]", 1)[0]
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def is_loopback(host: str) -> bool:
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def allowed_hosts(bind_host: str, extra: list[str] | tuple[str, ...] = ()) -> frozenset[str]:
    """Host names a browser may use to reach us: loopback names, the bound address when it is a
    specific one, and the configured extra names (e.g. the machine's DNS name)."""
    names = set(LOOPBACK_NAMES) | {h.lower() for h in extra}
    if bind_host not in ("0.0.0.0", "::", ""):
        names.add(bind_host.lower())
    return frozenset(names)


def require_host(request: Request, hosts: frozenset[str]) -> None:
    """Refuse a foreign Host header: a DNS-rebinding page reaching us under its own name."""
    host = request.headers.get("host", "")
    if hostname(host) not in hosts:
        raise Problem(403, f"Host {host[:100]!r} is not this server; use one of {sorted(hosts)}")


def require_same_origin(request: Request, hosts: frozenset[str]) -> None:
    """Refuse a foreign Host (DNS rebinding) and a foreign Origin (a request sent by another site)."""
    require_host(request, hosts)
    host = request.headers.get("host", "")
    origin = request.headers.get("origin")
    if origin is not None and origin.lower() != f"{request.url.scheme}://{host.lower()}":
        raise Problem(403, "cross-origin request refused")
    if request.headers.get("sec-fetch-site", "same-origin") not in ("same-origin", "none"):
        raise Problem(403, "cross-site request refused")


# ---------------------------------------------------------------- running


@dataclass(frozen=True)
class Limits:
    """Resource bounds of one server."""

    max_connections: int = 256  # open connections plus requests in progress; above: 503
    header_timeout_s: float = 10.0  # a request's headers must arrive within this
    body_timeout_s: float = 30.0  # ... and its body within this (408)
    idle_timeout_s: float = 5.0  # an idle keep-alive connection is closed after this
    drain_timeout_s: float = 30.0  # stop(): longest wait for in-flight requests

    def __post_init__(self) -> None:
        for name in ("max_connections", "header_timeout_s", "body_timeout_s", "idle_timeout_s"):
            if not getattr(self, name) > 0:
                raise ReviewpipeError(f"{name} must be above 0, not {getattr(self, name)!r}")


def _protocol_with_header_deadline(timeout: float) -> type[H11Protocol]:
    class HeaderDeadlineProtocol(H11Protocol):
        """uvicorn's h11 protocol plus a deadline for each request's head: a connection that
        has not sent a complete request line and headers `timeout` seconds after it opened (or
        after it started sending the next request) is closed."""

        _head_timer: asyncio.TimerHandle | None = None

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._arm()

        def data_received(self, data: bytes) -> None:
            if self._head_timer is None and self.conn.their_state is h11.IDLE:
                self._arm()
            super().data_received(data)
            if self.conn.their_state is not h11.IDLE:
                self._disarm()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

        def _arm(self) -> None:
            self._head_timer = self.loop.call_later(timeout, self._head_timed_out)

        def _disarm(self) -> None:
            if self._head_timer is not None:
                self._head_timer.cancel()
                self._head_timer = None

        def _head_timed_out(self) -> None:
            self._head_timer = None
            if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
                self.transport.close()

    return HeaderDeadlineProtocol


def bind(host: str, port: int) -> socket.socket:
    """A listening socket, or a ReviewpipeError naming the address."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
        sock = socket.socket(family, kind, proto)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(128)
    except OSError as exc:
        raise ReviewpipeError(
            f"cannot listen on {host}:{port}: {exc.strerror or exc}; pick another --port"
        ) from exc
    return sock


class BackgroundServer:
    """uvicorn serving `app` on an already bound socket, in a thread of its own."""

    def __init__(self, app: Any, host: str, port: int, limits: Limits, server_name: str) -> None:
        self.limits = limits
        self.socket = bind(host, port)
        config = uvicorn.Config(
            app,
            http=_protocol_with_header_deadline(limits.header_timeout_s),
            ws="none",
            loop="asyncio",
            lifespan="off",
            log_config=None,
            access_log=False,
            server_header=False,
            headers=[("server", server_name)],  # no "uvicorn", no Python version
            limit_concurrency=limits.max_connections,
            timeout_keep_alive=limits.idle_timeout_s,  # type: ignore[arg-type]
            timeout_graceful_shutdown=max(1, round(limits.drain_timeout_s)),
        )
        self.server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self.socket]}, name=f"{server_name}-http", daemon=True
        )

    @property
    def address(self) -> tuple[str, int]:
        host, port = self.socket.getsockname()[:2]
        return str(host), int(port)

    @property
    def url(self) -> str:
        host, port = self.address
        return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"

    def start(self, timeout: float = 30.0) -> None:
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise ReviewpipeError("the HTTP server did not start; see the log")
            time.sleep(0.01)

    def stop(self, timeout: float | None = None) -> None:
        """Stop accepting, let requests in progress finish (up to the drain timeout), close."""
        self.server.should_exit = True
        if self._thread.is_alive():
            self._thread.join(timeout if timeout is not None else self.limits.drain_timeout_s + 10)
        else:
            self.socket.close()
