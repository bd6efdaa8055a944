"""`reviewpipe review`: human-in-the-loop labelling (Augmented AI, locally).

reviewpipe review token --annotator NAME       issue NAME's sign-in token (shown once; a new one
                                                replaces the old), kept hashed in review.state_dir
reviewpipe review [--annotator NAME] [--port N] serve the labelling page to every annotator with a
                                                token (--annotator: also a token for NAME, this run)
reviewpipe review enqueue --input URI           score a batch with the deployed champion and queue
                                                the predictions below review.confidence_threshold
reviewpipe review enqueue --capture URI         queue what the endpoint answered below the threshold
                                                (captured traffic; keyed by inferenceId = review id)
"""

from __future__ import annotations

import argparse
import signal
import threading
from typing import Any

import numpy as np

from reviewpipe import storage
from reviewpipe.config import load_params, section
from reviewpipe.errors import ReviewpipeError
from reviewpipe.review.queue import read_queue, select_for_review, write_queue
from reviewpipe.review.store import Claims, LabelStore, ReviewLock, read_labels


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "action",
        nargs="?",
        choices=("serve", "enqueue", "token"),
        default="serve",
        help="serve the labelling page (default), enqueue low-confidence predictions, or issue a token",
    )
    parser.add_argument(
        "--annotator", help="token: whose token; serve: also sign NAME in for this run (a one-run token)"
    )
    parser.add_argument("--port", type=int, help="serve: port (default review.port; 0 = any free port)")
    parser.add_argument("--host", help="serve: interface (default review.host, 127.0.0.1)")
    source = parser.add_mutually_exclusive_group()
    source.add_argument(
        "--input", help="enqueue: batch to predict (parquet, CSV or JSON Lines; local or s3://)"
    )
    source.add_argument(
        "--capture", help="enqueue: captured traffic (the data-capture prefix; local or s3://)"
    )
    parser.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")
    parser.add_argument(
        "-S",
        "--set",
        dest="overrides",
        action="append",
        default=[],
        help="override a param, e.g. -S review.confidence_threshold=0.8",
    )


def _scored_batch(
    params: Any, input_uri: str, predictor: Any | None
) -> tuple[list, list, np.ndarray, np.ndarray]:
    """(ids, texts, probabilities, answered labels) of a batch scored by the review model (the
    deployed champion)."""
    from reviewpipe.monitoring.cli import predict, read_table

    review = section(params, "review")
    text_column, id_column = str(review.text_column), str(review.id_column)
    frame = read_table(input_uri, storage.StorageOptions.from_params(params.get("storage")))
    missing = [c for c in (id_column, text_column) if c not in frame.columns]
    if missing:
        raise ReviewpipeError(
            f"{input_uri} lacks column(s) {', '.join(missing)} (has {', '.join(frame.columns)}); "
            "set review.id_column / review.text_column."
        )
    if predictor is None:
        from reviewpipe.monitoring.champion import monitored_model

        resolved = monitored_model(params, "review")
        if resolved is None:
            raise ReviewpipeError("review.model.source is `none`: enqueueing needs a model to predict with")
        predictor = resolved.predictor
    probabilities, labels = predict(predictor, frame[text_column], int(review.model.batch_size))
    return frame[id_column].tolist(), frame[text_column].tolist(), probabilities, labels


def _captured_batch(params: Any, capture_uri: str) -> tuple[list, list, np.ndarray, np.ndarray]:
    """(keys, texts, served probabilities, served labels) of captured traffic: what the endpoint answered."""
    from reviewpipe.monitoring.capture import PROBABILITY_COLUMNS, read_capture

    captured = read_capture(capture_uri, storage.StorageOptions.from_params(params.get("storage"))).frame
    return (
        captured["key"].tolist(),
        captured["text"].tolist(),
        captured[PROBABILITY_COLUMNS].to_numpy(),
        captured["predicted_label"].to_numpy(),
    )


def enqueue(
    params: Any, input_uri: str | None = None, predictor: Any | None = None, capture_uri: str | None = None
) -> tuple[str | None, dict[str, int]]:
    """Queue the uncertain predictions of a batch (scored by the review model; `predictor` replaces
    it) or of captured traffic (as served), except reviews already queued or labelled.
    Returns (queue file or None, counts)."""
    review = section(params, "review")
    options = storage.StorageOptions.from_params(params.get("storage"))
    if capture_uri is not None:
        ids, texts, probabilities, labels = _captured_batch(params, capture_uri)
    elif input_uri is not None:
        ids, texts, probabilities, labels = _scored_batch(params, input_uri, predictor)
    else:
        raise ReviewpipeError("enqueue needs --input BATCH or --capture PREFIX")
    records = select_for_review(ids, texts, probabilities, float(review.confidence_threshold), labels=labels)
    done = {str(r["review_id"]) for r in read_queue(str(review.queue_dir), options)}
    done |= {str(r["review_id"]) for r in read_labels(str(review.labels_dir))}
    fresh = [r for r in records if str(r["review_id"]) not in done]
    path = write_queue(fresh, str(review.queue_dir), options=options)
    return path, {
        "predicted": int((~np.isnan(probabilities).any(axis=1)).sum()),
        "below_threshold": len(records),
        "queued": len(fresh),
    }


def open_session(review: Any, queue: list[dict[str, Any]], annotator: str) -> Any:
    """A labelling session for `annotator` over `queue`, sharing labels, claims and the lock with
    every other session on the same review.labels_dir / review.state_dir."""
    from reviewpipe.review.session import ReviewSession

    lock = ReviewLock(str(review.state_dir))
    return ReviewSession(
        queue,
        LabelStore(str(review.labels_dir), annotator, lock),
        Claims(lock, float(review.claim_ttl_s)),
        show_model_guess=bool(review.show_model_guess),
    )


def serve(
    params: Any, annotator: str | None = None, host: str | None = None, port: int | None = None
) -> None:
    from reviewpipe.review.auth import AnnotatorTokens
    from reviewpipe.review.server import ReviewServer

    review = section(params, "review")
    options = storage.StorageOptions.from_params(params.get("storage"))
    queue = read_queue(str(review.queue_dir), options)
    if not queue:
        raise ReviewpipeError(
            f"the review queue {review.queue_dir} is empty: fill it with "
            "`reviewpipe review enqueue --input BATCH`."
        )
    tokens = AnnotatorTokens.load(str(review.state_dir))
    one_run_token = tokens.issue(annotator) if annotator else None
    if not tokens.names():
        raise ReviewpipeError(
            "no annotator can sign in: issue tokens with `reviewpipe review token --annotator NAME`, "
            "or label yourself with `reviewpipe review --annotator YOUR_NAME`"
        )
    server = ReviewServer(
        lambda name: open_session(review, queue, name),
        tokens,
        host or str(review.host),
        int(review.port) if port is None else port,
        extra_hosts=list(review.allowed_hosts),
        session_ttl_s=float(review.session_ttl_s),
    ).start()
    if annotator:
        progress = server.session(annotator.strip()).state()["progress"]
        print(
            f"labelling {progress['remaining']} of {progress['total']} queued reviews as {annotator.strip()}; "
            f"labels go to {review.labels_dir}\nopen {server.url}/#token={one_run_token}  (Ctrl-C to stop)",
            flush=True,
        )
    else:
        print(
            f"serving {len(queue)} queued reviews to {', '.join(tokens.names())}; labels go to "
            f"{review.labels_dir}\nopen {server.url}/ and sign in with your token  (Ctrl-C to stop)",
            flush=True,
        )
    stop = threading.Event()
    if threading.current_thread() is threading.main_thread():
        # SIGTERM (a process manager) stops as cleanly as Ctrl-C; every label is already on disk.
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        while not stop.wait(0.2):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
        saved = sum(s.labelled_here for s in server.sessions.values())
        print(f"{saved} label(s) saved to {review.labels_dir}")


def issue(params: Any, annotator: str) -> str:
    from reviewpipe.review.auth import issue_token

    review = section(params, "review")
    token = issue_token(str(review.state_dir), annotator)
    print(
        f"token for {annotator.strip()} (shown once; keep it secret, it replaces any earlier one):\n{token}\n"
        f"sign in at http://{review.host}:{review.port}/#token={token}",
        flush=True,
    )
    return token


def run(args: argparse.Namespace) -> int:
    params = load_params(args.params, args.overrides)
    if args.action == "enqueue":
        if not args.input and not args.capture:
            raise ReviewpipeError(
                "enqueue needs --input BATCH (parquet, CSV or JSON Lines) or --capture PREFIX (local or s3://)"
            )
        path, counts = enqueue(params, args.input, capture_uri=args.capture)
        print(
            f"{counts['below_threshold']} of {counts['predicted']} predictions below the confidence threshold; "
            f"{counts['queued']} newly queued" + (f" in {path}" if path else "")
        )
        return 0
    if args.action == "token":
        if not args.annotator or not args.annotator.strip():
            raise ReviewpipeError("say whose token: reviewpipe review token --annotator NAME")
        issue(params, args.annotator)
        return 0
    serve(params, args.annotator, args.host, args.port)
    return 0
