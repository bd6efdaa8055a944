"""`reviewpipe monitor`: Model Monitor, locally, watching the model that is actually deployed.

reviewpipe monitor baseline              statistics.json + constraints.json from production-like data
                                         (prepare's natural-mix training rows) scored by the deployed
                                         champion, and model_quality.json: its accuracy / macro-F1 on
                                         natural-mix validation rows (monitoring/baseline/)
reviewpipe monitor check --input URI     data-quality and drift checks of a batch (parquet, CSV, JSON
reviewpipe monitor check --since DATE    Lines; local or s3://) or of the lake rows ingested after DATE,
                                         scored by the deployed champion
reviewpipe monitor check --capture URI   captured traffic (SageMaker's data-capture layout): data checks
          [--ground-truth URI]           per variant on what was served, and model quality per variant
                                         and time window against ground truth (human labels, ratings,
                                         SageMaker ground-truth records), with the A/B comparison
Each check writes monitoring/<run>/ and exits 1 when a constraint is violated (monitor.fail_on_violation).
"""

from __future__ import annotations

import argparse
import datetime as dt
import html
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from reviewpipe import SENTIMENTS, storage
from reviewpipe.config import load_params, section, to_dict
from reviewpipe.errors import ReviewpipeError
from reviewpipe.monitoring import quality
from reviewpipe.monitoring.constraints import (
    Check,
    Thresholds,
    evaluate,
    suggest_constraints,
    violations_document,
)
from reviewpipe.monitoring.report import data_section, quality_section, render_page
from reviewpipe.monitoring.statistics import (
    PREDICTED_LABEL,
    PREDICTION_CONFIDENCE,
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
BASELINE = "baseline"
QUALITY_FILE = "model_quality.json"


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
    source.add_argument("--capture", help="check: captured traffic, the data-capture prefix (local or s3://)")
    parser.add_argument(
        "--ground-truth",
        help="check --capture: SageMaker ground-truth records (JSON Lines), besides monitor.quality.ground_truth",
    )
    parser.add_argument(
        "--run", help="check: output folder name under monitor.out_dir (default: a timestamp)"
    )
    parser.add_argument(
        "--no-fail", action="store_true", help="check: exit 0 even when constraints are violated"
    )


# ---------------------------------------------------------------- inputs


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
    if kind == "csv":  # the shared reader: reviews reading "NA", "None" or "null" stay text
        return storage.read_csv(uri, options)
    compression = "gzip" if lowered.endswith(".gz") else None
    with fs.open(path, "rb") as f:
        if kind == "parquet":
            return pd.read_parquet(f)
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


def predict(
    predictor: Any | None, texts: pd.Series, batch_size: int = 256
) -> tuple[np.ndarray | None, np.ndarray | None]:
    """(class probabilities (n, 3), labels (n,)) with NaN rows for missing/blank texts; the labels
    are what the model answers (a package's decision rule), else the top probability's class.
    (None, None) without a predictor."""
    if predictor is None:
        return None, None
    valid = texts.notna() & (texts.astype("string").str.strip() != "")
    probabilities = np.full((len(texts), 3), np.nan)
    labels = np.full(len(texts), np.nan)
    rows = np.flatnonzero(valid.to_numpy())
    served = getattr(predictor, "predict_served", None)
    for start in range(0, len(rows), batch_size):
        chunk = rows[start : start + batch_size]
        batch = texts.iloc[chunk].astype(str).tolist()
        if served is not None:
            probabilities[chunk], labels[chunk] = served(batch)
        else:
            probabilities[chunk] = predictor.predict_proba(batch)
            labels[chunk] = np.asarray(SENTIMENTS)[probabilities[chunk].argmax(axis=1)]
    return probabilities, labels


def _require_text(frame: pd.DataFrame, columns: MonitorColumns, source: str) -> None:
    if columns.text not in frame.columns:
        raise ReviewpipeError(
            f"{source} has no `{columns.text}` column (columns: {', '.join(frame.columns)}); "
            "set monitor.text_column to the review text column."
        )


def rows_of_split(frame: pd.DataFrame, split: str | None, uri: str, setting: str) -> pd.DataFrame:
    """The rows whose split_type is `split` (all rows for None)."""
    if split is None:
        return frame
    if "split_type" not in frame.columns:
        raise ReviewpipeError(
            f"{uri} has no split_type column to take the {split!r} rows from; point monitor.baseline_uri "
            f"at prepare's unbalanced.parquet, or set {setting}=null"
        )
    return frame[frame["split_type"] == split].reset_index(drop=True)


def _sample(frame: pd.DataFrame, limit: int | None, seed: int) -> pd.DataFrame:
    if limit is not None and len(frame) > limit:  # a sample keeps CPU prediction time bounded
        return frame.sample(limit, random_state=seed).reset_index(drop=True)
    return frame


@dataclass
class _Model:
    predictor: Any | None
    description: dict[str, Any] | None


def _model(params: Any, predictor: Any | None) -> _Model:
    """The monitored model: `predictor` (tests, notebooks) or the configured monitor.model."""
    if predictor is not None:
        return _Model(predictor, {"source": "argument", "kind": type(predictor).__name__})
    from reviewpipe.monitoring.champion import monitored_model

    resolved = monitored_model(params, "monitor")
    return _Model(None, None) if resolved is None else _Model(resolved.predictor, resolved.description)


# ---------------------------------------------------------------- baseline


def build_baseline(params: Any, input_uri: str | None = None, predictor: Any | None = None) -> str:
    """Profile production-like rows (+ the champion's predictions) into {out_dir}/baseline, and the
    champion's model quality on natural-mix validation rows; returns that folder. `predictor`
    (anything with predict_proba(texts)) replaces the configured monitor.model."""
    monitor = section(params, "monitor")
    options = storage.StorageOptions.from_params(params.get("storage"))
    columns = MonitorColumns.from_params(monitor)
    uri = input_uri or str(monitor.baseline_uri)
    table = read_table(uri, options)
    _require_text(table, columns, uri)
    split = None if input_uri or monitor.baseline_split is None else str(monitor.baseline_split)
    frame = _sample(
        rows_of_split(table, split, uri, "monitor.baseline_split"),
        None if monitor.max_baseline_rows is None else int(monitor.max_baseline_rows),
        int(monitor.seed),
    )
    if len(frame) == 0:
        raise ReviewpipeError(
            f"{uri} has no rows to build a baseline from" + (f" in split {split!r}" if split else "")
        )
    model = _model(params, predictor)
    batch_size = int(monitor.model.batch_size)
    probabilities, labels = predict(model.predictor, frame[columns.text], batch_size)
    stats = dataset_statistics(
        monitor_frame(frame, probabilities, columns, labels),
        columns,
        bins=int(monitor.buckets),
        sketch_size=int(monitor.sketch_size),
    )
    stats["dataset"]["source"] = uri + (f" (split_type={split})" if split else "")
    stats["model"] = model.description
    constraints = suggest_constraints(stats, Thresholds.from_params(monitor), columns)
    out = storage.join(str(monitor.out_dir), BASELINE)
    storage.write_json(storage.join(out, "statistics.json"), stats, options)
    storage.write_json(storage.join(out, "constraints.json"), constraints, options)
    quality_baseline = None
    if model.predictor is not None and monitor.quality_split is not None and not input_uri:
        quality_baseline = baseline_quality(table, str(monitor.quality_split), model.predictor, monitor, uri)
    if quality_baseline is not None:
        storage.write_json(storage.join(out, QUALITY_FILE), quality_baseline, options)
    else:  # a stale file from an earlier champion would be read as this one's
        fs, path = storage.get_fs(storage.join(out, QUALITY_FILE), options)
        if fs.exists(path):
            fs.rm(path)
    return out


def baseline_quality(
    table: pd.DataFrame, split: str, predictor: Any, monitor: Any, uri: str
) -> dict[str, Any]:
    """The champion's accuracy and macro-F1 (with intervals) on the natural-mix rows of `split`:
    the reference model-quality monitoring judges live windows against."""
    rows = rows_of_split(table, split, uri, "monitor.quality_split")
    label = str(monitor.label_column)
    if label not in rows.columns:
        raise ReviewpipeError(f"{uri} has no `{label}` column; set monitor.label_column")
    texts = rows[str(monitor.text_column)]
    rows = rows[texts.notna() & (texts.astype("string").str.strip() != "")].reset_index(drop=True)
    if len(rows) == 0:
        raise ReviewpipeError(f"{uri} has no {split!r} rows to measure the champion's quality on")
    _, predicted = predict(predictor, rows[str(monitor.text_column)], int(monitor.model.batch_size))
    settings = quality.QualitySettings.from_params(monitor)
    metrics = quality.quality_metrics(quality.codes(rows[label], predicted), settings)
    return {"dataset": {"source": f"{uri} (split_type={split})", "label": label}, **metrics}


# ---------------------------------------------------------------- checks


@dataclass
class CheckResult:
    """What `check_batch` wrote: the run folder, every data check (per variant for captured traffic)
    and the model-quality report (captured traffic with ground truth)."""

    run_dir: str
    checks: dict[str | None, list[Check]]
    quality: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def violations(self) -> list[tuple[str | None, Check]]:
        return [(v, c) for v, checks in self.checks.items() for c in checks if c.violated]

    @property
    def quality_violations(self) -> list[dict[str, Any]]:
        return self.quality["violations"] if self.quality else []


def _load_baseline(
    monitor: Any, options: storage.StorageOptions | None
) -> tuple[str, dict, dict, dict | None]:
    baseline_dir = storage.join(str(monitor.out_dir), BASELINE)
    hint = "Build it first: `reviewpipe monitor baseline` (or `dvc repro monitor_baseline`)."
    storage.require_exists(
        storage.join(baseline_dir, "constraints.json"), "monitoring baseline", hint, options
    )
    stats = storage.read_json(storage.join(baseline_dir, "statistics.json"), options)
    constraints = storage.read_json(storage.join(baseline_dir, "constraints.json"), options)
    quality_uri = storage.join(baseline_dir, QUALITY_FILE)
    quality_baseline = (
        storage.read_json(quality_uri, options) if storage.exists(quality_uri, options) else None
    )
    return baseline_dir, stats, constraints, quality_baseline


def _data_check(
    monitored: pd.DataFrame,
    baseline: dict,
    constraints: dict,
    monitor: Any,
    columns: MonitorColumns,
    skip: dict[str, str],
) -> tuple[dict, list[Check], list]:
    sketch_size = int(monitor.sketch_size)
    stats = dataset_statistics(monitored, columns, bins=int(monitor.buckets), sketch_size=sketch_size)
    checks, comparisons = evaluate(
        baseline, constraints, monitored, columns, sketch_size=sketch_size, skip=skip
    )
    return stats, checks, comparisons


def check_batch(
    params: Any,
    *,
    input_uri: str | None = None,
    since: str | None = None,
    capture_uri: str | None = None,
    ground_truth_uri: str | None = None,
    run_name: str | None = None,
    predictor: Any | None = None,
) -> CheckResult:
    """Check one batch (or captured traffic) against the baseline and write monitoring/<run>/."""
    monitor = section(params, "monitor")
    options = storage.StorageOptions.from_params(params.get("storage"))
    columns = MonitorColumns.from_params(monitor)
    baseline_dir, baseline, constraints, quality_baseline = _load_baseline(monitor, options)
    now = dt.datetime.now(dt.UTC)
    run_dir = storage.join(str(monitor.out_dir), run_name or now.strftime("%Y%m%dT%H%M%SZ"))
    if capture_uri is not None:
        result, fragments, source = _check_capture(
            params,
            monitor,
            columns,
            baseline,
            constraints,
            quality_baseline,
            capture_uri,
            ground_truth_uri,
            run_dir,
        )
    else:
        if ground_truth_uri is not None:
            raise ReviewpipeError("--ground-truth goes with --capture (it is joined to captured predictions)")
        result, fragments, source = _check_table(
            params, monitor, columns, baseline, constraints, input_uri, since, predictor, run_dir
        )
    document = {
        "violations": [{"variant": v, **c.as_violation()} for v, c in result.violations],
        "checks": [{"variant": v, **c.as_violation()} for v, cs in result.checks.items() for c in cs],
        "model_quality_violations": result.quality_violations,
        "notes": result.notes,
        "source": source,
        "created_at": now.isoformat(timespec="seconds"),
        "thresholds": to_dict(monitor.drift),
        "baseline": baseline_dir,
        "baseline_model": baseline.get("model"),
    }
    storage.write_json(storage.join(run_dir, "constraint_violations.json"), document, options)
    page = render_page(
        title="reviewpipe monitor: data quality, drift and model quality",
        generated_at=now.isoformat(timespec="seconds"),
        summary=f"Source: {html.escape(source)}.",
        fragments=fragments,
    )
    storage.write_bytes(storage.join(run_dir, "report.html"), page.encode("utf-8"), options)
    return result


def _check_table(
    params: Any,
    monitor: Any,
    columns: MonitorColumns,
    baseline: dict,
    constraints: dict,
    input_uri: str | None,
    since: str | None,
    predictor: Any | None,
    run_dir: str,
) -> tuple[CheckResult, list[str], str]:
    options = storage.StorageOptions.from_params(params.get("storage"))
    if since is not None:
        from reviewpipe.data.catalog import connect

        parse_since(since)  # a bad date is the user's mistake, whether or not the catalog exists
        with connect(params, read_only=True) as con:
            frame = read_since(con, since)
        source = f"lake rows ingested after {since}"
    elif input_uri is not None:
        frame, source = read_table(input_uri, options), input_uri
    else:
        raise ReviewpipeError("say which batch to check: --input FILE_OR_URI, --since DATE or --capture URI")
    if len(frame) == 0:
        raise ReviewpipeError(f"nothing to check: {source} has no rows")
    _require_text(frame, columns, source)
    probabilities = labels = None
    if feature(baseline, PREDICTED_LABEL) is not None:  # predict only when the baseline did
        model = _model(params, predictor)
        if model.predictor is None:
            raise ReviewpipeError(
                "the baseline monitors the model's predictions but monitor.model.source is `none`: "
                "set monitor.model, or rebuild the baseline without a model"
            )
        probabilities, labels = predict(model.predictor, frame[columns.text], int(monitor.model.batch_size))
    stats, checks, comparisons = _data_check(
        monitor_frame(frame, probabilities, columns, labels), baseline, constraints, monitor, columns, {}
    )
    stats["dataset"]["source"] = source
    storage.write_json(storage.join(run_dir, "statistics.json"), stats, options)
    fragment = data_section(
        heading="Data quality and drift",
        source=source,
        baseline=baseline,
        batch=stats,
        checks=checks,
        comparisons=comparisons,
    )
    return CheckResult(run_dir, {None: checks}), [fragment], source


def _ground_truth(
    params: Any, monitor: Any, uri: str | None, keys: pd.Series
) -> tuple[pd.DataFrame, list[str]]:
    """Ground truth for the captured keys from the configured sources (and --ground-truth), in order:
    an explicit file first, then monitor.quality.ground_truth (human, ratings)."""
    options = storage.StorageOptions.from_params(params.get("storage"))
    sources: list[tuple[str, pd.DataFrame]] = []
    notes: list[str] = []
    if uri is not None:
        sources.append(("ground_truth_file", quality.ground_truth_records(uri, options)))
    for name in monitor.quality.ground_truth:
        if name == "human":
            from reviewpipe.review.labels import read_human_labels

            labels, _ = read_human_labels(str(section(params, "review").labels_dir), options)
            sources.append(("human", labels.rename(columns={"review_key": "key"})))
        elif name == "ratings":
            from reviewpipe.data.catalog import connect

            try:
                with connect(params, read_only=True) as con:
                    ratings = con.execute(
                        "SELECT CAST(review_id AS VARCHAR) AS key, sentiment AS label FROM reviews "
                        "WHERE sentiment IN (-1, 0, 1) AND CAST(review_id AS VARCHAR) IN (SELECT * FROM unnest(?))",
                        [sorted(set(keys.astype(str)))],
                    ).df()
            except ReviewpipeError as exc:
                notes.append(f"ratings: no catalog to read them from ({exc})")
                continue
            sources.append(("ratings", ratings))
        else:
            raise ReviewpipeError(
                f"monitor.quality.ground_truth lists {name!r}; the sources are human and ratings"
            )
    return quality.combine_ground_truth(sources), notes


def _check_capture(
    params: Any,
    monitor: Any,
    columns: MonitorColumns,
    baseline: dict,
    constraints: dict,
    quality_baseline: dict | None,
    capture_uri: str,
    ground_truth_uri: str | None,
    run_dir: str,
) -> tuple[CheckResult, list[str], str]:
    from reviewpipe.monitoring.capture import PROBABILITY_COLUMNS, read_capture

    options = storage.StorageOptions.from_params(params.get("storage"))
    capture = read_capture(capture_uri, options)
    captured = capture.frame
    if captured.empty:
        raise ReviewpipeError(f"no readable captured predictions under {capture_uri}: {capture.summary()}")
    notes = [f"{n} capture record(s) rejected: {reason}" for reason, n in capture.rejected.items()]
    baseline_model = baseline.get("model")
    baseline_version = None if baseline_model is None else baseline_model.get("served_model_version")
    fragments: list[str] = []
    checks: dict[str | None, list[Check]] = {}
    for variant, part in captured.groupby("variant", sort=True):
        frame = pd.DataFrame(
            {columns.review_id: part["key"].to_numpy(), columns.text: part["text"].to_numpy()}
        )
        skip = {columns.category: "not in the captured requests"}
        versions = sorted(set(part["model_version"].dropna()))
        if baseline_version is None or versions != [baseline_version]:
            why = (
                f"variant {variant} served {', '.join(versions) or 'an unversioned model'}; the baseline "
                f"describes {baseline_version or 'no deployed model'}'s predictions"
            )
            skip |= {PREDICTED_LABEL: why, PREDICTION_CONFIDENCE: why}
        monitored = monitor_frame(
            frame, part[PROBABILITY_COLUMNS].to_numpy(), columns, part["predicted_label"].to_numpy()
        )
        stats, variant_checks, comparisons = _data_check(
            monitored, baseline, constraints, monitor, columns, skip
        )
        stats["dataset"]["source"] = f"{capture_uri} (variant {variant})"
        storage.write_json(storage.join(run_dir, "variants", str(variant), "statistics.json"), stats, options)
        storage.write_json(
            storage.join(run_dir, "variants", str(variant), "constraint_violations.json"),
            violations_document(variant_checks, skip),
            options,
        )
        checks[str(variant)] = variant_checks
        fragments.append(
            data_section(
                heading=f"Variant {variant}: data quality and drift",
                source=f"{capture_uri} ({len(part)} predictions)",
                baseline=baseline,
                batch=stats,
                checks=variant_checks,
                comparisons=comparisons,
                not_checked=skip,
            )
        )
    truth, truth_notes = _ground_truth(params, monitor, ground_truth_uri, captured["key"])
    notes += truth_notes
    reference = None if baseline_model is None else baseline_model.get("variant")
    report = quality.model_quality(
        captured, truth, quality_baseline, quality.QualitySettings.from_params(monitor), reference
    )
    report["capture"] = capture.summary()
    storage.write_json(storage.join(run_dir, QUALITY_FILE), report, options)
    fragments.append(quality_section(report))
    source = (
        f"captured traffic {capture_uri}: {len(captured)} predictions in {capture.records} records, "
        f"variants {', '.join(sorted(checks))}"
    )
    return CheckResult(run_dir, checks, report, notes), fragments, source


# ---------------------------------------------------------------- command


def run(args: argparse.Namespace) -> int:
    params = load_params(args.params, args.overrides)
    if args.action == BASELINE:
        if args.since or args.capture or args.ground_truth:
            raise ReviewpipeError(
                "--since, --capture and --ground-truth are for `monitor check`; the baseline reads "
                "--input or monitor.baseline_uri"
            )
        out = build_baseline(params, args.input)
        print(f"baseline written to {out} (statistics.json, constraints.json, {QUALITY_FILE} with a model)")
        return 0
    result = check_batch(
        params,
        input_uri=args.input,
        since=args.since,
        capture_uri=args.capture,
        ground_truth_uri=args.ground_truth,
        run_name=args.run,
    )
    for variant, c in result.violations:
        where = f"[{variant}] " if variant else ""
        print(
            f"VIOLATION {where}{c.feature_name} {c.constraint_check_type} {c.metric}={c.value:.4g} "
            f"(threshold {c.threshold:.4g}): {c.description}"
        )
    for v in result.quality_violations:
        print(
            f"VIOLATION [{v['variant']}] model quality {v['metric']}={v['value']:.4g} in the window from "
            f"{v['window']} (interval {v['interval'][0]:.4g}–{v['interval'][1]:.4g}; threshold {v['threshold']:.4g})"
        )
    if result.quality is not None:
        print(_quality_lines(result.quality))
    for note in result.notes:
        print(f"note: {note}")
    checked = sum(len(c) for c in result.checks.values())
    total = len(result.violations) + len(result.quality_violations)
    print(
        f"{total} violation(s) of {checked} data checks and the model-quality windows; report: "
        f"{storage.join(result.run_dir, 'report.html')}"
    )
    fail = bool(section(params, "monitor").fail_on_violation) and not args.no_fail
    return 1 if total and fail else 0


def _quality_lines(report: dict[str, Any]) -> str:
    truth = report["ground_truth"]
    lines = [
        f"model quality: {truth['joined_predictions']} predictions with ground truth {truth['by_source']}"
    ]
    for variant, body in report["variants"].items():
        o = body["overall"]
        lines.append(
            f"  {variant}: n={o['n']} accuracy {o['accuracy']['value']:.3f} "
            f"[{o['accuracy']['interval'][0]:.3f}, {o['accuracy']['interval'][1]:.3f}], macro-F1 "
            f"{o['macro_f1']['value']:.3f} [{o['macro_f1']['interval'][0]:.3f}, {o['macro_f1']['interval'][1]:.3f}]"
        )
    for variant, c in report["ab"]["comparisons"].items():
        if "accuracy_difference" in c:
            d = c["accuracy_difference"]
            lines.append(
                f"  A/B {variant} vs {report['ab']['reference']}: accuracy {d['value']:+.3f} "
                f"[{d['interval'][0]:+.3f}, {d['interval'][1]:+.3f}], Fisher p={c['accuracy_fisher_p_value']:.3g}: "
                f"{c['verdict']}"
            )
        else:
            lines.append(f"  A/B {variant}: {c['verdict']}")
    return "\n".join(lines)
