"""SageMaker's inference-container contract, locally: a Starlette app under uvicorn (serving/web.py).

GET /ping (200 once every variant's model is loaded, 503 before), POST /invocations (the
package's own code/inference.py: input_fn -> micro-batched predict_fn -> output_fn), GET /metrics
(prometheus_client), GET|POST /admin/variant-weights (update_endpoint_weights_and_capacities;
bearer token, JSON only, same-origin only).

Headers: X-Amzn-SageMaker-Target-Variant pins a variant; X-Amzn-Invoked-Production-Variant says
which answered; X-Amzn-SageMaker-Inference-Id (1-64 printable characters) is kept with the data
capture record so ground truth can be joined later. Statuses: 400 bad input, 406 unanswerable
Accept, 408 body too slow, 413 too large (bytes or inputs), 415 content type, 503 still loading
or over the connection cap, 500 a model failure (the message never carries internals).

Each request is validated in full (input_fn, Unicode, input count) before it joins a batch; a
merged model call that fails is retried request by request (serving/batching.py).
`stop()` drains: stop accepting, finish in-flight requests, close idle connections, flush capture.
"""

from __future__ import annotations

import asyncio
import hmac
import importlib.util
import logging
import os
import re
import shutil
import threading
import time
from dataclasses import dataclass, field, fields
from pathlib import Path
from types import ModuleType
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from reviewpipe.errors import ReviewpipeError
from reviewpipe.serving.batching import MicroBatcher, Piece
from reviewpipe.serving.capture import CaptureSettings, DataCapture
from reviewpipe.serving.inference import QUANTIZE_MODES
from reviewpipe.serving.loader import load_package
from reviewpipe.serving.metrics import ServerMetrics
from reviewpipe.serving.router import INVOKED_VARIANT_HEADER, TARGET_VARIANT_HEADER, VariantRouter
from reviewpipe.serving.web import (
    BackgroundServer,
    Limits,
    Problem,
    allowed_hosts,
    is_loopback,
    media_type,
    parse_json,
    problem_response,
    read_body,
    require_json,
    require_same_origin,
)
from reviewpipe.storage import StorageOptions

log = logging.getLogger("reviewpipe.serve")
INFERENCE_ID_HEADER = "X-Amzn-SageMaker-Inference-Id"
ADMIN_TOKEN_ENV = "REVIEWPIPE_ADMIN_TOKEN"
ADMIN_MAX_BODY = 64 * 1024
SERVER_NAME = "reviewpipe-serve"
# What torch runs (static int8 is an ONNX Runtime graph): all a SageMaker container can, since the Hugging
# Face PyTorch image has no onnxruntime. code/inference.py refuses the rest itself (it ships alone).
TORCH_QUANTIZE_MODES = ("none", "int8-dynamic")
_VARIANT_NAME = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9._-]{0,62})")


@dataclass(frozen=True)
class AdminSettings:
    """`serve.admin`: the weights endpoint. The token itself never lives in params: it comes
    from the REVIEWPIPE_ADMIN_TOKEN environment variable or the file `token_file` names."""

    enabled: bool = True
    token_file: str | None = None


@dataclass
class ServeSettings:
    """The `serve` params section (conf/serve/default.yaml)."""

    host: str = "127.0.0.1"
    port: int = 8080
    max_batch_size: int = 32
    max_wait_ms: float = 5.0
    max_payload_bytes: int = 6 * 1024 * 1024
    max_inputs_per_request: int = 1000
    quantize: str = "none"
    backend: str = "torch"
    num_threads: int = 1
    workers: int = 2
    max_connections: int = 256
    header_timeout_s: float = 10.0
    body_timeout_s: float = 30.0
    idle_timeout_s: float = 5.0
    drain_timeout_s: float = 30.0
    max_package_bytes: int = 4 * 1024**3  # a model.tar.gz that unpacks to more is refused
    allowed_hosts: tuple[str, ...] = ()
    admin: AdminSettings = field(default_factory=AdminSettings)
    capture: CaptureSettings = field(default_factory=CaptureSettings)

    @classmethod
    def from_mapping(cls, values: Any, **overrides: Any) -> ServeSettings:
        merged = dict(values or {})
        merged.update({k: v for k, v in overrides.items() if v is not None})
        names = {f.name for f in fields(cls)}
        unknown = set(merged) - names
        if unknown:
            raise ReviewpipeError(f"serve has unknown keys {sorted(unknown)}; allowed: {sorted(names)}")
        if "admin" in merged and not isinstance(merged["admin"], AdminSettings):
            admin = dict(merged["admin"] or {})
            extra = set(admin) - {f.name for f in fields(AdminSettings)}
            if extra:
                raise ReviewpipeError(
                    f"serve.admin has unknown keys {sorted(extra)}; allowed: enabled, token_file"
                )
            merged["admin"] = AdminSettings(**admin)
        if "capture" in merged and not isinstance(merged["capture"], CaptureSettings):
            merged["capture"] = CaptureSettings.from_mapping(merged["capture"])
        merged["allowed_hosts"] = tuple(merged.get("allowed_hosts") or ())
        settings = cls(**merged)
        if settings.quantize not in QUANTIZE_MODES:
            raise ReviewpipeError(
                f"serve.quantize must be one of {QUANTIZE_MODES}, not {settings.quantize!r}"
            )
        if settings.backend not in ("torch", "onnx"):
            raise ReviewpipeError(f"serve.backend must be torch or onnx, not {settings.backend!r}")
        if settings.backend == "torch" and settings.quantize == "int8":
            raise ReviewpipeError(
                "serve.quantize=int8 (static, calibrated) runs on serve.backend=onnx; with torch use "
                "quantize none (or int8-dynamic, whose results depend on the batch)"
            )
        if settings.backend == "onnx" and importlib.util.find_spec("onnxruntime") is None:
            raise ReviewpipeError("serve.backend=onnx needs onnxruntime: pip install onnxruntime onnx")
        if settings.max_inputs_per_request < 1 or settings.max_payload_bytes < 1:
            raise ReviewpipeError("serve.max_inputs_per_request and serve.max_payload_bytes must be above 0")
        settings.limits()  # validates the timeouts and the connection cap
        return settings

    def limits(self) -> Limits:
        return Limits(
            max_connections=self.max_connections,
            header_timeout_s=self.header_timeout_s,
            body_timeout_s=self.body_timeout_s,
            idle_timeout_s=self.idle_timeout_s,
            drain_timeout_s=self.drain_timeout_s,
        )

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

    def container_environment(self, quantize: str = "none") -> dict[str, str]:
        """The Environment for a SageMaker container (endpoint or batch transform): the Hugging Face
        PyTorch image has torch and no onnxruntime, so it runs the torch backend whatever serve.backend
        the local server uses; quantize: none or int8-dynamic."""
        check_container_quantize(quantize, "quantize")
        return {**self.environment(), "REVIEWPIPE_BACKEND": "torch", "REVIEWPIPE_QUANTIZE": quantize}


def check_container_quantize(quantize: str, setting: str) -> None:
    """SageMaker's Hugging Face PyTorch image runs torch only: static int8 (an ONNX graph) cannot run there."""
    if quantize not in TORCH_QUANTIZE_MODES:
        raise ReviewpipeError(
            f"{setting}={quantize!r} cannot run in the SageMaker container (torch, no onnxruntime): "
            f"use one of {list(TORCH_QUANTIZE_MODES)}"
        )


def admin_token(settings: ServeSettings, token_file: str | None = None) -> str | None:
    """The admin token: from `token_file` (CLI) or serve.admin.token_file, else the environment."""
    path = token_file or settings.admin.token_file
    if path:
        try:
            token = Path(path).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ReviewpipeError(f"cannot read the admin token file {path}: {exc.strerror}") from exc
        if not token:
            raise ReviewpipeError(f"the admin token file {path} is empty; write a long random token into it")
        return token
    return os.environ.get(ADMIN_TOKEN_ENV, "").strip() or None


@dataclass(frozen=True)
class VariantSpec:
    name: str
    path: str
    weight: float = 1.0


def _status_of(exc: BaseException, default: int) -> int:
    status = getattr(exc, "status", None)
    return status if isinstance(status, int) and 400 <= status < 600 else default


def _client_message(exc: BaseException, status: int, what: str) -> str:
    """A handler's own 4xx message (written for clients) or a plain statement for a 5xx."""
    if status < 500:
        return str(exc)[:1000]
    return f"{what} failed; the server log has the details"


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
        self.splittable = False  # the handler has merge_inputs/split_predictions
        self.ready = False

    @property
    def name(self) -> str:
        return self.spec.name

    def load(self) -> None:
        """Unpack (if a tarball), import code/inference.py, model_fn(model_dir), start the batcher."""
        loaded = load_package(
            self.spec.path, max_unpacked_bytes=self.settings.max_package_bytes, name=self.name
        )
        self.model_dir, self._temp_dir = loaded.model_dir, loaded.temp_dir
        self.module, self.model = loaded.module, loaded.model
        module = loaded.module
        self.splittable = callable(getattr(module, "merge_inputs", None)) and callable(
            getattr(module, "split_predictions", None)
        )
        self.batcher = MicroBatcher(
            self._run_pieces,
            self.settings.max_batch_size,
            self.settings.max_wait_ms,
            name=f"batcher-{self.name}",
            workers=self.settings.workers,
            on_batch=lambda n, size: self.metrics.batch(self.name, n, size),
            join=_join_predictions,
        )
        self.ready = True

    # ------------------------------------------------------------ the three steps of a request

    def parse(self, body: bytes, content_type: str | None) -> tuple[Any, int]:
        """input_fn, then the checks that must pass before the request may join a batch:
        the input count cap and texts a tokenizer can encode. Returns (data, reviews)."""
        module = self.module
        assert module is not None
        try:
            data = module.input_fn(body, content_type)
        except RecursionError as exc:
            raise Problem(400, "body is JSON nested too deeply") from exc
        except Exception as exc:  # the handler's own validation: its status, else a client error
            client = isinstance(exc, ValueError | KeyError | TypeError | UnicodeError)
            status = _status_of(exc, 400 if client else 500)
            if status >= 500:
                log.exception("input_fn failed on variant %s", self.name)
            raise Problem(status, _client_message(exc, status, "reading the request")) from exc
        texts = data.get("texts") if isinstance(data, dict) else None
        if not isinstance(texts, list):
            return data, 1
        cap = self.settings.max_inputs_per_request
        if len(texts) > cap:
            raise Problem(
                413,
                f"{len(texts)} inputs exceed the limit of {cap} per request "
                "(serve.max_inputs_per_request); split them, or use `reviewpipe predict` for batches",
            )
        for i, text in enumerate(texts):
            if isinstance(text, str):
                try:
                    text.encode("utf-8")
                except UnicodeEncodeError as exc:
                    raise Problem(
                        400,
                        f"inputs[{i}] is not valid Unicode text (an unpaired surrogate at character "
                        f"{exc.start}); send UTF-8 text",
                    ) from exc
        return data, len(texts)

    def _run_pieces(self, pieces: list[Piece]) -> list[Any]:
        module = self.module
        assert module is not None
        if self.splittable:
            items = [{**p.item, "texts": p.item["texts"][p.start : p.stop]} for p in pieces]
            merged = module.merge_inputs(items)
            return list(module.split_predictions(module.predict_fn(merged, self.model), items))
        return [module.predict_fn(p.item, self.model) for p in pieces]  # a plain SageMaker handler

    def render(self, prediction: Any, accept: str | None, content_type: str | None) -> tuple[bytes, str]:
        module = self.module
        assert module is not None
        if isinstance(prediction, dict):
            prediction = {**prediction, "variant": self.name}
        response_type = media_type(accept)
        if not response_type or response_type == "*/*":
            response_type = media_type(content_type)
        try:
            payload = module.output_fn(prediction, response_type)
        except Exception as exc:
            status = _status_of(exc, 500)
            if status >= 500:
                log.exception("output_fn failed on variant %s", self.name)
            raise Problem(status, _client_message(exc, status, "writing the response")) from exc
        if isinstance(payload, tuple):  # some handlers return (body, content_type)
            payload, response_type = payload[0], payload[1]
        if isinstance(payload, str):
            payload = payload.encode("utf-8")
        return bytes(payload), response_type

    def close(self, timeout: float | None = None) -> None:
        if self.batcher is not None:
            self.batcher.close(timeout)
        if self._temp_dir is not None:
            shutil.rmtree(self._temp_dir, ignore_errors=True)
            self._temp_dir = None


def _join_predictions(parts: list[Any]) -> Any:
    """A request answered in several pieces: its predictions in order, the rest from the first."""
    return {**parts[0], "predictions": [row for part in parts for row in part["predictions"]]}


def _inference_id(request: Request) -> str | None:
    value = request.headers.get(INFERENCE_ID_HEADER)
    if value is None:
        return None
    if not 1 <= len(value) <= 64 or not value.isprintable() or value[0].isspace():
        raise Problem(400, f"{INFERENCE_ID_HEADER} must be 1 to 64 printable characters")
    return value


class ModelServer:
    """reviewpipe's local endpoint: variants behind one HTTP server."""

    def __init__(
        self,
        variants: list[VariantSpec],
        settings: ServeSettings | None = None,
        seed: int | None = None,
        admin_token: str | None = None,
        storage_options: StorageOptions | None = None,
    ) -> None:
        if not variants:
            raise ReviewpipeError("nothing to serve: give --model PATH or at least one --variant")
        names = [v.name for v in variants]
        if len(set(names)) != len(names):
            raise ReviewpipeError(f"variant names must be unique, got {names}")
        for spec in variants:
            if not _VARIANT_NAME.fullmatch(spec.name):
                raise ReviewpipeError(
                    f"variant name {spec.name!r}: use 1-63 letters, digits, '.', '_' or '-' (it names capture folders)"
                )
            if not Path(spec.path).exists():
                raise ReviewpipeError(
                    f"variant {spec.name}: {spec.path} does not exist; build it with `dvc repro package`"
                )
        self.settings = settings or ServeSettings()
        host = self.settings.host
        self.admin_token = admin_token
        if self.settings.admin.enabled and not admin_token and not is_loopback(host):
            raise ReviewpipeError(
                f"refusing to listen on {host} with the admin endpoint open to anyone: set the admin token "
                f"({ADMIN_TOKEN_ENV} or serve.admin.token_file), or serve.admin.enabled=false"
            )
        self.hosts = allowed_hosts(host, self.settings.allowed_hosts)
        self.metrics = ServerMetrics(names)
        self.router = VariantRouter({v.name: v.weight for v in variants}, seed=seed)
        self.variants = {v.name: Variant(v, self.settings, self.metrics) for v in variants}
        self.metrics.live.weights = self.router.weights
        self.metrics.live.queued = lambda: {
            name: v.batcher.queued() for name, v in self.variants.items() if v.batcher is not None
        }
        self.capture: DataCapture | None = None
        if self.settings.capture.enabled:
            self.capture = DataCapture(
                self.settings.capture,
                storage_options,
                on_written=self.metrics.capture_written,
                on_dropped=self.metrics.capture_drop,
            )
        self.load_error: str | None = None
        self._loaded = threading.Event()
        self._stopped = False
        self._in_flight = 0
        self._cut_off = 0
        self.app = Starlette(
            routes=[
                Route("/ping", self._ping, methods=["GET"]),
                Route("/invocations", self._invocations, methods=["POST"]),
                Route("/metrics", self._metrics, methods=["GET"]),
                Route("/admin/variant-weights", self._admin_weights, methods=["GET", "POST"]),
            ],
            exception_handlers={HTTPException: _http_exception},
        )
        self.http = BackgroundServer(self.app, host, self.settings.port, self.settings.limits(), SERVER_NAME)

    @property
    def url(self) -> str:
        return self.http.url

    @property
    def ready(self) -> bool:
        return self._loaded.is_set() and self.load_error is None

    def start(self, wait: bool = False, timeout: float | None = None) -> ModelServer:
        """Listen now (/ping answers 503) and load the models in the background (then 200)."""
        os.environ.update(self.settings.environment())
        self.http.start()
        loader = threading.Thread(target=self._load_all, name="loader", daemon=True)
        loader.start()
        if wait:
            self.wait_ready(timeout)
        return self

    def _load_all(self) -> None:
        for variant in self.variants.values():
            try:
                variant.load()
            except Exception as exc:
                log.exception("loading variant %s from %s failed", variant.name, variant.spec.path)
                detail = str(exc) if isinstance(exc, ReviewpipeError) else type(exc).__name__
                self.load_error = f"variant {variant.name}: {detail}"
                break
            self.metrics.set_variant(variant.name, loaded=True)
        self._loaded.set()

    def wait_ready(self, timeout: float | None = None) -> None:
        """Block until every model is loaded; ReviewpipeError if loading failed or timed out."""
        if not self._loaded.wait(timeout):
            raise ReviewpipeError(f"models not loaded after {timeout} s")
        if self.load_error:
            raise ReviewpipeError(f"could not load the model: {self.load_error}")

    def update_weights(self, request: Any) -> dict[str, float]:
        """{"name": weight, ...} or SageMaker's
        {"DesiredWeightsAndCapacities": [{"VariantName": ..., "DesiredWeight": ...}]}."""
        if isinstance(request, dict) and "DesiredWeightsAndCapacities" in request:
            try:
                request = {
                    d["VariantName"]: d["DesiredWeight"] for d in request["DesiredWeightsAndCapacities"]
                }
            except (KeyError, TypeError) as exc:
                raise Problem(
                    400, "each DesiredWeightsAndCapacities entry needs VariantName and DesiredWeight"
                ) from exc
        if not isinstance(request, dict) or not request:
            raise Problem(400, 'expected {"variant": weight, ...}')
        try:
            weights = self.router.set_weights(request)
        except ReviewpipeError as exc:
            raise Problem(400, str(exc)) from exc
        log.info("variant weights now %s", weights)
        return weights

    # ------------------------------------------------------------ routes

    async def _ping(self, request: Request) -> Response:
        if self.ready:
            return JSONResponse({"status": "ok", "variants": self.router.weights()})
        if self.load_error is None:
            return JSONResponse({"status": "loading"}, 503)
        return JSONResponse({"status": "failed", "error": f"{self.load_error}; see the server log"}, 503)

    async def _metrics(self, request: Request) -> Response:
        body, content_type = self.metrics.render(request.headers.get("accept"))
        return Response(body, headers={"Content-Type": content_type})

    async def _admin_weights(self, request: Request) -> Response:
        try:
            if not self.settings.admin.enabled:
                raise Problem(404, "the admin endpoint is disabled (serve.admin.enabled=false)")
            body = b""
            if request.method == "POST":
                body = await read_body(request, ADMIN_MAX_BODY, self.settings.body_timeout_s, "admin calls")
            require_same_origin(request, self.hosts)
            self._authorize(request)
            if request.method == "POST":
                require_json(request)
                return JSONResponse({"weights": self.update_weights(parse_json(body))})
            return JSONResponse({"weights": self.router.weights()})
        except Problem as problem:
            headers = {"WWW-Authenticate": "Bearer"} if problem.status == 401 else None
            return problem_response(problem, headers)

    def _authorize(self, request: Request) -> None:
        if not self.admin_token:
            raise Problem(
                403,
                f"admin calls need a token: start the server with {ADMIN_TOKEN_ENV} or serve.admin.token_file set",
            )
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(
            given.strip().encode(), self.admin_token.encode()
        ):
            raise Problem(401, "send the admin token: Authorization: Bearer <token>")

    async def _body(self, request: Request) -> bytes:
        limit, timeout = self.settings.max_payload_bytes, self.settings.body_timeout_s
        return await read_body(request, limit, timeout, "serve.max_payload_bytes")

    async def _invocations(self, request: Request) -> Response:
        started = time.perf_counter()
        self.metrics.request_started()
        self._in_flight += 1
        name: str | None = None
        status, reviews = 500, 0
        announced: Variant | None = None
        try:
            try:
                name = self.router.choose(request.headers.get(TARGET_VARIANT_HEADER))
            except ReviewpipeError as exc:
                await self._body(request)  # read (bounded) so the connection stays usable
                raise Problem(400, str(exc)) from exc
            variant = self.variants[name]
            if not variant.ready or variant.batcher is None:
                await self._body(request)  # read (bounded) so the connection stays usable
                raise Problem(503, f"variant {name} is still loading its model; retry after /ping is 200")
            batcher = variant.batcher
            batcher.announce()  # the batch being formed may wait for this request
            announced = variant
            body = await self._body(request)
            inference_id = _inference_id(request)
            content_type = request.headers.get("content-type")
            data, reviews = await run_in_threadpool(variant.parse, body, content_type)
            future = batcher.submit(data, reviews, divisible=variant.splittable, announced=True)
            announced = None
            try:
                prediction = await asyncio.wrap_future(future)
            except Exception as exc:
                status = _status_of(exc, 500)
                if status >= 500:
                    log.error("predict_fn failed on variant %s: %r", name, exc)
                raise Problem(status, _client_message(exc, status, "prediction")) from exc
            payload, response_type = await run_in_threadpool(
                variant.render, prediction, request.headers.get("accept"), content_type
            )
            status = 200
            if self.capture is not None and self.capture.sampled():
                self.capture.offer(name, body, content_type or "", payload, response_type, inference_id)
            return Response(payload, 200, {INVOKED_VARIANT_HEADER: name}, media_type=response_type)
        except Problem as problem:
            status = problem.status
            return problem_response(problem, {INVOKED_VARIANT_HEADER: name} if name else None)
        except asyncio.CancelledError:
            self._cut_off += 1  # the drain timed out on this request
            raise
        finally:
            if announced is not None and announced.batcher is not None:
                announced.batcher.withdraw()
            self._in_flight -= 1
            self.metrics.request_finished(
                name, status, time.perf_counter() - started, reviews if status == 200 else 0
            )

    # ------------------------------------------------------------ stopping

    def stop(self, drain_timeout: float | None = None) -> bool:
        """Stop accepting, finish in-flight requests, close connections, write buffered capture;
        True if every request finished in time."""
        if self._stopped:
            return True
        self._stopped = True
        timeout = self.settings.drain_timeout_s if drain_timeout is None else drain_timeout
        self.http.server.config.timeout_graceful_shutdown = max(1, round(timeout))
        self.http.stop(timeout + 10)
        drained = self._in_flight == 0 and self._cut_off == 0
        for variant in self.variants.values():
            variant.close(timeout=max(1.0, timeout))
        if self.capture is not None:
            self.capture.close()
        return drained

    def __enter__(self) -> ModelServer:
        return self.start(wait=True)

    def __exit__(self, *exc: Any) -> None:
        self.stop()


async def _http_exception(request: Request, exc: Exception) -> Response:
    status = getattr(exc, "status_code", 500)
    message = {404: f"no route {request.method} {request.url.path[:200]}", 405: "method not allowed"}
    return JSONResponse({"error": message.get(status, "request refused"), "code": status}, status)
