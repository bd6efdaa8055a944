"""`reviewpipe monitor`: Model Monitor, locally.

reviewpipe monitor baseline            statistics.json + constraints.json from the training data
                                       and the champion's predictions (monitoring/baseline/)
reviewpipe monitor check --input URI   data-quality and drift checks of a batch (parquet, CSV,
reviewpipe monitor check --since DATE  JSON Lines; local or s3://) or of the lake partitions
                                       ingested after DATE; writes monitoring/<run>/ and exits 1
                                       when a constraint is violated (monitor.fail_on_violation)
"""

from __future__ import annotations

import argparse
import datetime as dt
from typing import Any

import numpy as np
import pandas as pd

from reviewpipe import storage
from reviewpipe.config import load_params, section, to_dict
from reviewpipe.errors import ReviewpipeError
from reviewpipe.monitoring.constraints import Thresholds, evaluate, suggest_constraints, violations_document
from reviewpipe.monitoring.report import render_report
from reviewpipe.monitoring.statistics import (
    PREDICTED_LABEL,
    MonitorColumns,
    dataset_statistics,
    feature,
    monitor_frame,
)

TABLE_SUFFIXES = {
    ".parquet": "parquet",
    ".pq": "parquet",
    ".csv": "csv",
    ".csv.gz": "csv",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "jsonl",
    ".jsonl.gz": "jsonl",
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=("baseline", "check"), help="build the baseline, or check a batch")
    parser.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")
    parser.add_argument(
        "-S",
        "--set",
        dest="overrides",
        action="append",
        default=[],
        help="override a param, e.g. -S monitor.drift.psi_threshold=0.25",
    )
    source = parser.add_mutually_exclusive_group()
    source.add_argument(
        "--input", help="batch to check (baseline: data to profile, default monitor.baseline_uri)"
    )
    source.add_argument("--since", help="check: the lake rows ingested after this date/time (ISO 8601)")
    parser.add_argument(
        "--run", help="check: output folder name under monitor.out_dir (default: a timestamp)"
    )
    parser.add_argument(
        "--no-fail", action="store_true", help="check: exit 0 even when constraints are violated"
    )


def read_table(uri: str, options: storage.StorageOptions | None = None) -> pd.DataFrame:
    """A parquet, CSV or JSON Lines file (or a folder of parquet files), local or remote."""
    fs, path = storage.get_fs(uri, options)
    if not fs.exists(path):
        raise ReviewpipeError(
            f"input not found: {uri}. Give a parquet, CSV or JSON Lines file (local or s3://)."
        )
    if fs.isdir(path):
        return pd.read_parquet(path, filesystem=fs)
    lowered = path.lower()
    kind = next(
        (
            k
            for suffix, k in sorted(TABLE_SUFFIXES.items(), key=lambda kv: -len(kv[0]))
            if lowered.endswith(suffix)
        ),
        None,
    )
    if kind is None:
        raise ReviewpipeError(f"cannot tell the format of {uri}: use a .parquet, .csv or .jsonl file")
    compression = "gzip" if lowered.endswith(".gz") else None
    with fs.open(path, "rb") as f:
        if kind == "parquet":
            return pd.read_parquet(f)
        if kind == "csv":
            return pd.read_csv(f, compression=compression)
        return pd.read_json(f, lines=True, compression=compression)


def parse_since(since: str) -> dt.datetime:
    """An ISO 8601 date or date-time as naive UTC (how ingested_at is stored)."""
    try:
        moment = dt.datetime.fromisoformat(since)
    except ValueError as exc:
        raise ReviewpipeError(
            f"--since {since!r} is not an ISO 8601 date or date-time (e.g. 2024-05-01)"
        ) from exc
    return moment.astimezone(dt.UTC).replace(tzinfo=None) if moment.tzinfo is not None else moment


def read_since(con: Any, since: str, table: str = "reviews") -> pd.DataFrame:
    """Rows of the catalog's `reviews` view ingested after `since` (ISO 8601 date or date-time)."""
    moment = parse_since(since)
    return con.execute(
        f"SELECT * FROM {table} WHERE CAST(ingested_at AS TIMESTAMP) > ? ORDER BY ingested_at", [moment]
    ).df()


def load_champion(model: Any, setting: str = "monitor.model") -> Any | None:
    """The predictor named by a `model` params block ({kind, path}); None for kind `none`."""
    kind = str(model.get("kind", "none"))
    if kind == "none":
        return None
    path = str(model.get("path"))
    storage.require_exists(
        path,
        f"the {kind} model ({setting}.path)",
        f"Train it with `dvc repro`, or point {setting}.path at the champion"
        + (" (or set monitor.model.kind=none for data checks only)." if setting == "monitor.model" else "."),
    )
    from reviewpipe.models.predictors import load_predictor

    return load_predictor(kind, path)


def predict_probabilities(
    predictor: Any | None, texts: pd.Series, batch_size: int = 256
) -> np.ndarray | None:
    """Class probabilities (n, 3), rows of NaN for missing/blank texts; None without a predictor."""
    if predictor is None:
        return None
    valid = texts.notna() & (texts.astype("string").str.strip() != "")
    probabilities = np.full((len(texts), 3), np.nan)
    rows = np.flatnonzero(valid.to_numpy())
    for start in range(0, len(rows), batch_size):
        chunk = rows[start : start + batch_size]
        probabilities[chunk] = predictor.predict_proba(texts.iloc[chunk].astype(str).tolist())
    return probabilities


def _batch_size(monitor: Any) -> int:
    return int((monitor.get("model", {}) or {}).get("batch_size", 256))


def _require_text(frame: pd.DataFrame, columns: MonitorColumns, source: str) -> None:
    if columns.text not in frame.columns:
        raise ReviewpipeError(
            f"{source} has no `{columns.text}` column (columns: {', '.join(frame.columns)}); "
            "set monitor.text_column to the review text column."
        )


def _predictor(monitor: Any, predictor: Any | None) -> Any | None:
    return predictor if predictor is not None else load_champion(monitor.get("model", {}) or {})


def build_baseline(params: Any, input_uri: str | None = None, predictor: Any | None = None) -> str:
    """Profile the baseline data (+ predictions) into {out_dir}/baseline; returns that folder.
    `predictor` (anything with predict_proba(texts)) replaces the configured monitor.model."""
    monitor = section(params, "monitor")
    options = storage.StorageOptions.from_params(params.get("storage"))
    columns = MonitorColumns.from_params(monitor)
    uri = input_uri or str(monitor.baseline_uri)
    frame = read_table(uri, options)
    _require_text(frame, columns, uri)
    if len(frame) == 0:
        raise ReviewpipeError(f"{uri} has no rows to build a baseline from")
    limit = monitor.get("max_baseline_rows")
    if limit and len(frame) > int(limit):  # a sample keeps CPU prediction time bounded
        frame = frame.sample(int(limit), random_state=int(monitor.get("seed", 0))).reset_index(drop=True)
    probabilities = predict_probabilities(
        _predictor(monitor, predictor), frame[columns.text], _batch_size(monitor)
    )
    monitored = monitor_frame(frame, probabilities, columns)
    stats = dataset_statistics(
        monitored,
        columns,
        bins=int(monitor.get("buckets", 10)),
        sketch_size=int(monitor.get("sketch_size", 1001)),
    )
    stats["dataset"]["source"] = uri
    constraints = suggest_constraints(stats, Thresholds.from_params(monitor), columns)
    out = storage.join(str(monitor.out_dir), "baseline")
    storage.write_json(storage.join(out, "statistics.json"), stats, options)
    storage.write_json(storage.join(out, "constraints.json"), constraints, options)
    return out


def check_batch(
    params: Any,
    *,
    input_uri: str | None = None,
    since: str | None = None,
    run_name: str | None = None,
    predictor: Any | None = None,
) -> tuple[str, list]:
    """Check one batch against the baseline; returns (run folder, checks)."""
    monitor = section(params, "monitor")
    options = storage.StorageOptions.from_params(params.get("storage"))
    columns = MonitorColumns.from_params(monitor)
    baseline_dir = storage.join(str(monitor.out_dir), "baseline")
    hint = "Build it first: `reviewpipe monitor baseline` (or `dvc repro monitor_baseline`)."
    storage.require_exists(
        storage.join(baseline_dir, "constraints.json"), "monitoring baseline", hint, options
    )
    baseline = storage.read_json(storage.join(baseline_dir, "statistics.json"), options)
    constraints = storage.read_json(storage.join(baseline_dir, "constraints.json"), options)

    if since is not None:
        from reviewpipe.data.catalog import connect

        parse_since(since)  # a bad date is the user's mistake, whether or not the catalog exists
        with connect(params, read_only=True) as con:
            frame = read_since(con, since)
        source = f"lake rows ingested after {since}"
    elif input_uri is not None:
        frame, source = read_table(input_uri, options), input_uri
    else:
        raise ReviewpipeError("say which batch to check: --input FILE_OR_URI or --since DATE")
    if len(frame) == 0:
        raise ReviewpipeError(f"nothing to check: {source} has no rows")
    _require_text(frame, columns, source)

    # Predict only when the baseline monitored predictions too.
    probabilities = None
    if feature(baseline, PREDICTED_LABEL) is not None:
        champion = _predictor(monitor, predictor)
        if champion is None:
            raise ReviewpipeError(
                "the baseline monitors the model's predictions but monitor.model.kind is `none`: "
                "set monitor.model, or rebuild the baseline without a model"
            )
        probabilities = predict_probabilities(champion, frame[columns.text], _batch_size(monitor))
    monitored = monitor_frame(frame, probabilities, columns)
    sketch_size = int(monitor.get("sketch_size", 1001))
    batch_stats = dataset_statistics(
        monitored, columns, bins=int(monitor.get("buckets", 10)), sketch_size=sketch_size
    )
    batch_stats["dataset"]["source"] = source
    checks, comparisons = evaluate(baseline, constraints, monitored, columns, sketch_size=sketch_size)

    now = dt.datetime.now(dt.UTC)
    run_dir = storage.join(str(monitor.out_dir), run_name or now.strftime("%Y%m%dT%H%M%SZ"))
    storage.write_json(storage.join(run_dir, "statistics.json"), batch_stats, options)
    document = violations_document(checks)
    document.update(
        {
            "source": source,
            "created_at": now.isoformat(timespec="seconds"),
            "thresholds": to_dict(monitor.get("drift")),
            "baseline": baseline_dir,
        }
    )
    storage.write_json(storage.join(run_dir, "constraint_violations.json"), document, options)
    page = render_report(
        title="reviewpipe monitor: data quality and drift",
        source=source,
        baseline=baseline,
        batch=batch_stats,
        checks=checks,
        comparisons=comparisons,
        generated_at=now.isoformat(timespec="seconds"),
    )
    fs, path = storage.get_fs(storage.join(run_dir, "report.html"), options)
    with fs.open(path, "w", encoding="utf-8") as f:
        f.write(page)
    return run_dir, checks


def run(args: argparse.Namespace) -> int:
    params = load_params(args.params, args.overrides)
    if args.action == "baseline":
        if args.since:
            raise ReviewpipeError(
                "--since is for `monitor check`; the baseline reads --input or monitor.baseline_uri"
            )
        out = build_baseline(params, args.input)
        print(f"baseline written to {out} (statistics.json, constraints.json)")
        return 0
    run_dir, checks = check_batch(params, input_uri=args.input, since=args.since, run_name=args.run)
    violated = [c for c in checks if c.violated]
    for c in violated:
        print(
            f"VIOLATION {c.feature_name} {c.constraint_check_type} {c.metric}={c.value:.4g} "
            f"(threshold {c.threshold:.4g}): {c.description}"
        )
    print(
        f"{len(violated)} violation(s) of {len(checks)} checks; report: {storage.join(run_dir, 'report.html')}"
    )
    fail = bool(section(params, "monitor").get("fail_on_violation", True)) and not args.no_fail
    return 1 if violated and fail else 0
