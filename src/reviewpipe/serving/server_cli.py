"""`reviewpipe serve`: run a model package (or several, as A/B variants) behind SageMaker's HTTP contract.

The admin token (POST /admin/variant-weights) comes from --admin-token-file, serve.admin.token_file or
the REVIEWPIPE_ADMIN_TOKEN environment variable, never from params or the command line itself.
Data capture (serve.capture) writes SageMaker's capture files; SIGTERM flushes them before exit.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from pathlib import Path

from reviewpipe.config import load_params, to_dict
from reviewpipe.serving.inference import QUANTIZE_MODES
from reviewpipe.serving.loader import add_trust_arguments, check_trusted
from reviewpipe.serving.router import parse_variant
from reviewpipe.serving.server import ModelServer, ServeSettings, VariantSpec, admin_token
from reviewpipe.storage import StorageOptions

SINGLE_VARIANT = "AllTraffic"  # SageMaker's usual name for a single-model endpoint's variant


def add_arguments(parser: argparse.ArgumentParser) -> None:
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument(
        "--model", help="model.tar.gz or its unpacked directory (e.g. models/package/model.tar.gz)"
    )
    what.add_argument(
        "--variant",
        action="append",
        metavar="NAME=PATH[:WEIGHT]",
        help="a production variant; repeat for A/B, e.g. --variant champion=models/package/"
        "model.tar.gz:0.8 --variant challenger=models/package/baseline.tar.gz:0.2",
    )
    parser.add_argument("--host", help="bind address (default: serve.host, 127.0.0.1)")
    parser.add_argument("--port", type=int, help="port (default: serve.port, 8080; 0 picks a free one)")
    parser.add_argument("--max-batch-size", type=int, help="reviews per model call (serve.max_batch_size)")
    parser.add_argument("--max-wait-ms", type=float, help="micro-batch wait (serve.max_wait_ms)")
    parser.add_argument("--max-payload-bytes", type=int, help="request size limit (serve.max_payload_bytes)")
    parser.add_argument("--quantize", choices=QUANTIZE_MODES, help="int8: static int8 graph (serve.quantize)")
    parser.add_argument("--backend", choices=["torch", "onnx"], help="torch or ONNX Runtime (serve.backend)")
    parser.add_argument(
        "--num-threads", type=int, help="threads per model call (serve.num_threads; 0: default)"
    )
    parser.add_argument("--workers", type=int, help="model calls at once (serve.workers)")
    parser.add_argument(
        "--admin-token-file",
        help="file holding the admin token (default: serve.admin.token_file, else $REVIEWPIPE_ADMIN_TOKEN)",
    )
    parser.add_argument(
        "--endpoint-name", help="the endpoint's name in data-capture paths (serve.capture.endpoint_name)"
    )
    parser.add_argument(
        "--params", default="params.yaml", help="params file with a `serve` section, if present"
    )
    parser.add_argument("--log-level", default="INFO", help="logging level (DEBUG logs every request)")
    add_trust_arguments(parser)


def _params(path: str) -> dict:
    return to_dict(load_params(path)) if Path(path).exists() else {}


def settings_from(args: argparse.Namespace) -> ServeSettings:
    section = dict(_params(args.params).get("serve") or {})
    if args.endpoint_name:
        section["capture"] = {**dict(section.get("capture") or {}), "endpoint_name": args.endpoint_name}
    return ServeSettings.from_mapping(
        section,
        host=args.host,
        port=args.port,
        max_batch_size=args.max_batch_size,
        max_wait_ms=args.max_wait_ms,
        max_payload_bytes=args.max_payload_bytes,
        quantize=args.quantize,
        backend=args.backend,
        num_threads=args.num_threads,
        workers=args.workers,
    )


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(
        level=args.log_level.upper(),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    specs = (
        [VariantSpec(SINGLE_VARIANT, args.model, 1.0)]
        if args.model
        else [VariantSpec(*parse_variant(v)) for v in args.variant]
    )
    settings = settings_from(args)
    params = _params(args.params)
    check_trusted([s.path for s in specs], args, params, StorageOptions.from_params(params.get("storage")))
    server = ModelServer(
        specs,
        settings,
        admin_token=admin_token(settings, args.admin_token_file),
        storage_options=StorageOptions.from_params(_params(args.params).get("storage")),
    )
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    server.start()
    variants = ", ".join(f"{s.name}={s.path} ({s.weight:g})" for s in specs)
    print(f"reviewpipe serve: listening on {server.url} (loading {variants})", flush=True)
    if settings.capture.enabled:
        capture = settings.capture
        print(
            f"reviewpipe serve: capturing {capture.sampling_percentage:g}% of invocations to "
            f"{capture.destination}/{capture.endpoint_name}/<variant>/yyyy/mm/dd/hh/",
            flush=True,
        )
    try:
        while not stop.wait(0.2):
            if server.load_error:
                server.stop(drain_timeout=0)
                print(f"error: could not load the model: {server.load_error}", file=sys.stderr)
                return 2
    finally:
        if stop.is_set():
            print("reviewpipe serve: stopping; finishing in-flight requests", flush=True)
            drained = server.stop()
            print("reviewpipe serve: stopped" + ("" if drained else " (drain timed out)"), flush=True)
    return 0
