"""SageMaker's inference-container contract on a threaded HTTP server, locally.

GET /ping (200 once every variant's model is loaded, 503 before), POST /invocations (the
package's own code/inference.py: input_fn -> micro-batched predict_fn -> output_fn),
GET /metrics (Prometheus text), GET|POST /admin/variant-weights (update_endpoint_weights_and_capacities).
`stop()` drains: stop accepting, let in-flight requests finish, close idle keep-alive connections.
"""

from __future__ import annotations

import importlib.util
import itertools
import json
import logging
import os
import select
import shutil
import socket
import socketserver
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, fields
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import ModuleType
from typing import Any

from reviewpipe.errors import ReviewpipeError
from reviewpipe.serving.batching import MicroBatcher
from reviewpipe.serving.metrics import ServerMetrics
from reviewpipe.serving.package import unpack_package
from reviewpipe.serving.router import INVOKED_VARIANT_HEADER, TARGET_VARIANT_HEADER, VariantRouter

log = logging.getLogger("reviewpipe.serve")
_module_ids = itertools.count()


@dataclass
class ServeSettings:
    """The `serve` params section (conf/serve/default.yaml)."""

    host: str = "127.0.0.1"
    port: int = 8080
    max_batch_size: int = 32
    max_wait_ms: float = 5.0
    max_payload_bytes: int = 6 * 1024 * 1024
    quantize: str = "none"
    backend: str = "torch"
    num_threads: int = 1
    workers: int = 2
    drain_timeout_s: float = 30.0
    idle_timeout_s: float = 60.0

    @classmethod
    def from_mapping(cls, values: Any, **overrides: Any) -> ServeSettings:
        names = {f.name for f in fields(cls)}
        merged = {k: v for k, v in dict(values or {}).items() if k in names}
        merged.update({k: v for k, v in overrides.items() if v is not None})
        settings = cls(**merged)
        if settings.quantize not in ("none", "int8"):
            raise ReviewpipeError(f"serve.quantize must be none or int8, not {settings.quantize!r}")
        if settings.backend not in ("torch", "onnx"):
            raise ReviewpipeError(f"serve.backend must be torch or onnx, not {settings.backend!r}")
        if settings.backend == "onnx" and importlib.util.find_spec("onnxruntime") is None:
            raise ReviewpipeError("serve.backend=onnx needs onnxruntime: pip install onnxruntime onnx")
        return settings

    def environment(self) -> dict[str, str]:
        """What a SageMaker endpoint's Environment would carry to code/inference.py."""
        env = {
            "REVIEWPIPE_QUANTIZE": self.quantize,
            "REVIEWPIPE_BACKEND": self.backend,
            "REVIEWPIPE_BATCH_SIZE": str(self.max_batch_size),
        }
        if self.num_threads > 0:
            env["REVIEWPIPE_NUM_THREADS"] = str(self.num_threads)
        return env


@dataclass(frozen=True)
class VariantSpec:
    name: str
    path: str
    weight: float = 1.0


class HTTPError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _status_of(exc: BaseException, default: int) -> int:
    status = getattr(exc, "status", None)
    return status if isinstance(status, int) and 400 <= status < 600 else default


def _base_type(value: str | None) -> str:
    return (value or "").split(";", 1)[0].strip().lower()


class Variant:
    """One ProductionVariant: its package, its inference.py module, its model and its batcher."""

    def __init__(self, spec: VariantSpec, settings: ServeSettings, metrics: ServerMetrics) -> None:
        self.spec = spec
        self.settings = settings
        self.metrics = metrics
        self.module: ModuleType | None = None
        self.model: Any = None
        self.batcher: MicroBatcher | None = None
        self.model_dir: Path | None = None
        self._temp_dir: Path | None = None
        self.ready = False

    @property
    def name(self) -> str:
        return self.spec.name

    def load(self) -> None:
        """Unpack (if a tarball), import code/inference.py, model_fn(model_dir), start the batcher."""
        source = Path(self.spec.path)
        self.model_dir = unpack_package(source)
        if self.model_dir != source:
            self._temp_dir = self.model_dir
        code_dir = self.model_dir / "code"
        # SageMaker puts code/ on sys.path so inference.py may import its siblings.
        if str(code_dir) not in sys.path:
            sys.path.insert(0, str(code_dir))
        spec = importlib.util.spec_from_file_location(
            f"reviewpipe_inference_{self.name}_{next(_module_ids)}", code_dir / "inference.py"
        )
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        for fn in ("model_fn", "input_fn", "predict_fn", "output_fn"):
            if not callable(getattr(module, fn, None)):
                raise ReviewpipeError(f"{code_dir / 'inference.py'} does not define {fn}()")
        self.module = module
        self.model = module.model_fn(str(self.model_dir))
        self.batcher = MicroBatcher(
            self._run_batch,
            self.settings.max_batch_size,
            self.settings.max_wait_ms,
            name=f"batcher-{self.name}",
            workers=self.settings.workers,
            on_batch=lambda n, size: self.metrics.batch(self.name, n, size),
        )
        self.ready = True

    def _run_batch(self, items: list[Any]) -> list[Any]:
        module = self.module
        assert module is not None
        if hasattr(module, "merge_inputs") and hasattr(module, "split_predictions"):
            merged = module.merge_inputs(items)
            return module.split_predictions(module.predict_fn(merged, self.model), items)
        return [module.predict_fn(item, self.model) for item in items]  # a plain SageMaker handler

    def invoke(
        self, read_body: Callable[[], bytes], content_type: str | None, accept: str | None
    ) -> tuple[bytes, str, int]:
        """(response body, response content type, reviews) for one request whose body
        `read_body()` returns; the batcher hears of the request before its body is read."""
        module, batcher = self.module, self.batcher
        assert module is not None and batcher is not None
        batcher.announce()
        try:
            data = module.input_fn(read_body(), content_type)
        except HTTPError:
            batcher.withdraw()
            raise
        except Exception as exc:  # the handler's own validation: its status, else a client error
            batcher.withdraw()
            raise HTTPError(
                _status_of(exc, 400 if isinstance(exc, ValueError | KeyError | TypeError) else 500), str(exc)
            ) from exc
        texts = data.get("texts") if isinstance(data, dict) else None
        reviews = len(texts) if isinstance(texts, list) else 1
        try:
            prediction = batcher.submit(data, reviews, announced=True).result()
        except Exception as exc:
            log.exception("predict_fn failed on variant %s", self.name)
            raise HTTPError(_status_of(exc, 500), f"prediction failed: {exc}") from exc
        if isinstance(prediction, dict):
            prediction = {**prediction, "variant": self.name}
        response_type = _base_type(accept)
        if not response_type or response_type == "*/*":
            response_type = _base_type(content_type)
        try:
            payload = module.output_fn(prediction, response_type)
        except Exception as exc:
            raise HTTPError(_status_of(exc, 500), str(exc)) from exc
        if isinstance(payload, tuple):  # some handlers return (body, content_type)
            payload, response_type = payload[0], payload[1]
        if isinstance(payload, str):
            payload = payload.encode("utf-8")
        return payload, response_type, reviews

    def close(self, timeout: float | None = None) -> None:
        if self.batcher is not None:
            self.batcher.close(timeout)
        if self._temp_dir is not None:
            shutil.rmtree(self._temp_dir, ignore_errors=True)
            self._temp_dir = None


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128
    app: ModelServer

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.connections: set[Any] = set()
        self.connections_lock = threading.Lock()
        super().__init__(*args, **kwargs)

    def server_bind(self) -> None:
        # HTTPServer.server_bind resolves the host's FQDN, which can stall without DNS.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = str(self.server_address[0]), int(self.server_address[1])

    def track(self, handler: Any, open_: bool) -> None:
        with self.connections_lock:
            (self.connections.add if open_ else self.connections.discard)(handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.exception("connection from %s failed", client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive
    server_version = "reviewpipe-serve"
    server: _HTTPServer

    def setup(self) -> None:
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.server.track(self, True)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.track(self, False)

    def handle_one_request(self) -> None:
        # Wait for the next request in short slices so a draining server can close idle
        # keep-alive connections instead of blocking on them.
        app = self.server.app
        idle_since = time.monotonic()
        while True:
            readable, _, _ = select.select([self.connection], [], [], 0.05)
            if readable:
                break
            if app.draining or time.monotonic() - idle_since > app.settings.idle_timeout_s:
                self.close_connection = True
                return
        super().handle_one_request()

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - base class signature
        log.debug("%s " + format, self.address_string(), *args)

    # ------------------------------------------------------------ plumbing

    def _send(
        self, status: int, body: bytes, content_type: str, headers: dict[str, str] | None = None
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        if self.server.app.draining or self.close_connection:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        self.wfile.write(body)

    def _send_json(self, status: int, obj: Any, headers: dict[str, str] | None = None) -> None:
        self._send(status, json.dumps(obj).encode("utf-8"), "application/json", headers)

    def _read_body(self, limit: int) -> bytes:
        length = self.headers.get("Content-Length")
        if length is None:
            if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
                return self._read_chunked(limit)
            return b""
        try:
            size = int(length)
        except ValueError as exc:
            self.close_connection = True
            raise HTTPError(400, f"bad Content-Length {length!r}") from exc
        if size > limit:
            self.close_connection = True  # the unread body must not be parsed as the next request
            raise HTTPError(
                413,
                f"payload of {size} bytes exceeds the {limit}-byte limit "
                "(serve.max_payload_bytes); split it into smaller requests",
            )
        return self.rfile.read(size)

    def _read_chunked(self, limit: int) -> bytes:
        parts, total = [], 0
        while True:
            size = int(self.rfile.readline().split(b";", 1)[0].strip() or b"0", 16)
            if size == 0:
                while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                    pass
                return b"".join(parts)
            total += size
            if total > limit:
                self.close_connection = True
                raise HTTPError(413, f"payload exceeds the {limit}-byte limit (serve.max_payload_bytes)")
            parts.append(self.rfile.read(size))
            self.rfile.readline()

    # ------------------------------------------------------------ routes

    def do_GET(self) -> None:  # noqa: N802 - http.server naming
        app = self.server.app
        path = self.path.split("?", 1)[0]
        if path == "/ping":
            if app.ready:
                self._send_json(200, {"status": "ok", "variants": app.router.weights()})
            else:
                self._send_json(
                    503,
                    {"status": "loading" if app.load_error is None else "failed", "error": app.load_error},
                )
        elif path == "/metrics":
            self._send(
                200,
                app.metrics.render(app.router.weights()).encode(),
                "text/plain; version=0.0.4; charset=utf-8",
            )
        elif path == "/admin/variant-weights":
            self._send_json(200, {"weights": app.router.weights()})
        else:
            self._send_json(404, {"error": f"no route GET {path}", "code": 404})

    def do_POST(self) -> None:  # noqa: N802
        path = self.path.split("?", 1)[0]
        if path == "/invocations":
            self._invoke()
            return
        try:
            body = self._read_body(self.server.app.settings.max_payload_bytes)
            if path != "/admin/variant-weights":
                raise HTTPError(404, f"no route POST {path}")
            self._send_json(200, {"weights": self.server.app.update_weights(body)})
        except HTTPError as exc:
            self._send_json(exc.status, {"error": str(exc), "code": exc.status})

    def _invoke(self) -> None:
        app = self.server.app
        started = time.perf_counter()
        app.metrics.request_started()
        variant_name = self.headers.get(TARGET_VARIANT_HEADER) or "none"
        status, reviews = 500, 0
        try:
            limit = app.settings.max_payload_bytes
            try:
                variant_name = app.router.choose(self.headers.get(TARGET_VARIANT_HEADER))
            except ReviewpipeError as exc:
                self._read_body(limit)  # keep the connection usable
                raise HTTPError(400, str(exc)) from exc
            variant = app.variants[variant_name]
            if not variant.ready:
                self._read_body(limit)
                raise HTTPError(
                    503, f"variant {variant_name} is still loading its model; retry after /ping is 200"
                )
            payload, content_type, reviews = variant.invoke(
                lambda: self._read_body(limit), self.headers.get("Content-Type"), self.headers.get("Accept")
            )
            status = 200
            self._send(200, payload, content_type, {INVOKED_VARIANT_HEADER: variant_name})
        except HTTPError as exc:
            status = exc.status
            self._send_json(
                status,
                {"error": str(exc), "code": status},
                {INVOKED_VARIANT_HEADER: variant_name} if variant_name in app.variants else None,
            )
        except Exception as exc:  # a bug, not the client's fault: say so, keep serving
            log.exception("invocation failed")
            status = 500
            self._send_json(500, {"error": f"internal error: {exc}", "code": 500})
        finally:
            app.metrics.request_finished(variant_name, status, time.perf_counter() - started, reviews)


class ModelServer:
    """reviewpipe's local endpoint: variants behind one HTTP server."""

    def __init__(
        self, variants: list[VariantSpec], settings: ServeSettings | None = None, seed: int | None = None
    ) -> None:
        if not variants:
            raise ReviewpipeError("nothing to serve: give --model PATH or at least one --variant")
        names = [v.name for v in variants]
        if len(set(names)) != len(names):
            raise ReviewpipeError(f"variant names must be unique, got {names}")
        for spec in variants:
            if not Path(spec.path).exists():
                raise ReviewpipeError(
                    f"variant {spec.name}: {spec.path} does not exist; build it with `dvc repro package`"
                )
        self.settings = settings or ServeSettings()
        self.metrics = ServerMetrics()
        self.router = VariantRouter({v.name: v.weight for v in variants}, seed=seed)
        self.variants = {v.name: Variant(v, self.settings, self.metrics) for v in variants}
        for spec in variants:
            self.metrics.set_variant(spec.name, loaded=False)
        self.load_error: str | None = None
        self.draining = False
        self._loaded = threading.Event()
        self._stopped = False
        try:
            self.httpd = _HTTPServer((self.settings.host, self.settings.port), _Handler)
        except OSError as exc:
            raise ReviewpipeError(
                f"cannot listen on {self.settings.host}:{self.settings.port}: {exc}; pick another --port"
            ) from exc
        self.httpd.app = self
        self._serve_thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.1}, name="http", daemon=True
        )

    @property
    def url(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def ready(self) -> bool:
        return self._loaded.is_set() and self.load_error is None

    def start(self, wait: bool = False, timeout: float | None = None) -> ModelServer:
        """Listen now (/ping answers 503) and load the models in the background (then 200)."""
        os.environ.update(self.settings.environment())
        self._serve_thread.start()
        loader = threading.Thread(target=self._load_all, name="loader", daemon=True)
        loader.start()
        if wait:
            self.wait_ready(timeout)
        return self

    def _load_all(self) -> None:
        try:
            for variant in self.variants.values():
                variant.load()
                self.metrics.set_variant(variant.name, loaded=True)
        except Exception as exc:
            log.exception("loading a model failed")
            self.load_error = f"{type(exc).__name__}: {exc}"
        finally:
            self._loaded.set()

    def wait_ready(self, timeout: float | None = None) -> None:
        """Block until every model is loaded; ReviewpipeError if loading failed or timed out."""
        if not self._loaded.wait(timeout):
            raise ReviewpipeError(f"models not loaded after {timeout} s")
        if self.load_error:
            raise ReviewpipeError(f"could not load the model: {self.load_error}")

    def update_weights(self, body: bytes) -> dict[str, float]:
        """POST /admin/variant-weights: {"name": weight, ...} or SageMaker's
        {"DesiredWeightsAndCapacities": [{"VariantName": ..., "DesiredWeight": ...}]}."""
        try:
            request = json.loads(body or b"{}")
        except json.JSONDecodeError as exc:
            raise HTTPError(400, f"malformed JSON: {exc}") from exc
        if isinstance(request, dict) and "DesiredWeightsAndCapacities" in request:
            try:
                request = {
                    d["VariantName"]: d["DesiredWeight"] for d in request["DesiredWeightsAndCapacities"]
                }
            except (KeyError, TypeError) as exc:
                raise HTTPError(
                    400, "each DesiredWeightsAndCapacities entry needs VariantName and DesiredWeight"
                ) from exc
        if not isinstance(request, dict) or not request:
            raise HTTPError(400, 'expected {"variant": weight, ...}')
        try:
            weights = self.router.set_weights(request)
        except ReviewpipeError as exc:
            raise HTTPError(400, str(exc)) from exc
        log.info("variant weights now %s", weights)
        return weights

    def stop(self, drain_timeout: float | None = None) -> bool:
        """Stop accepting, finish in-flight requests, close connections; True if all drained in time."""
        if self._stopped:
            return True
        self._stopped = True
        self.draining = True
        if self._serve_thread.is_alive():
            self.httpd.shutdown()
        self.httpd.server_close()  # the listening socket: new connections are refused from here
        deadline = time.monotonic() + (
            self.settings.drain_timeout_s if drain_timeout is None else drain_timeout
        )
        while self.httpd.connections and time.monotonic() < deadline:
            time.sleep(0.02)
        drained = not self.httpd.connections
        for variant in self.variants.values():
            variant.close(timeout=max(0.0, deadline - time.monotonic()))
        return drained

    def __enter__(self) -> ModelServer:
        return self.start(wait=True)

    def __exit__(self, *exc: Any) -> None:
        self.stop()
