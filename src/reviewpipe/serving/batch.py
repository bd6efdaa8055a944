"""`reviewpipe predict`: SageMaker Batch Transform, locally.

Reads parquet, CSV or JSON Lines (local path or s3://) in fixed-size parts of rows, predicts each
part through the package's own code/inference.py (loaded exactly as `reviewpipe serve` loads it:
input_fn -> predict_fn), and writes one output part file per input part, then its done marker:

    <output>/_job.json                 what this output is for (input, model, part size, columns)
    <output>/part-00000.parquet        id, row_number, predicted_sentiment, proba_*, model_version
    <output>/part-00000.done.json      written after its part: rows, predictions, rejected rows + reasons
    <output>/rejects.jsonl             every rejected row with its reason (written at the end)
    <output>/_manifest.json            written last: parts, counts, model version

A rerun with the same input, model and part size skips every part that has a done marker, so an
interrupted job resumes where it stopped. Bad rows (missing id, missing/empty/non-string text) are
reported in rejects.jsonl with a reason; they never stop the job.
"""

from __future__ import annotations

import argparse
import io
import json
import posixpath
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import pandas as pd

from reviewpipe import storage
from reviewpipe.data import lake
from reviewpipe.errors import ReviewpipeError
from reviewpipe.serving.inference import QUANTIZE_MODES
from reviewpipe.serving.loader import add_trust_arguments, check_trusted, environment
from reviewpipe.storage import StorageOptions

INPUT_FORMATS = ("parquet", "csv", "jsonl", "lake")
OUTPUT_FORMATS = ("parquet", "jsonl")
PROBABILITY_COLUMNS = {"-1": "proba_negative", "0": "proba_neutral", "1": "proba_positive"}
JOB_FILE = "_job.json"
MANIFEST_FILE = "_manifest.json"
REJECTS_FILE = "rejects.jsonl"
# Set on a row that could not be read (bad bytes, bad JSON): the reason it is rejected with.
INPUT_ERROR = "_input_error"
_REJECT_TEXT_CHARS = 200  # enough of a rejected text to recognise it


class Predictor(Protocol):
    """What run_batch needs: texts in, one prediction dict per text out (inference.predict_fn rows)."""

    version: str
    fingerprint: str

    def predict(self, texts: list[str]) -> list[dict[str, Any]]: ...


# ---------------------------------------------------------------- the model


class PackagedModel:
    """A model package run through its own code/inference.py, loaded by the server's own loader
    with the same settings (serve section), so batch and real-time predictions agree.

    Except the thread count: serve.num_threads splits the cores among the server's workers, while
    an offline job (batch predict, the monitoring baseline) is the machine's only caller, so its
    model calls get `threads` (0: every core). The thread count does not change a prediction."""

    def __init__(self, path: str | Path, serve_settings: Any = None, threads: int = 0) -> None:
        from reviewpipe.serving.metrics import ServerMetrics
        from reviewpipe.serving.server import ServeSettings, Variant, VariantSpec

        settings = serve_settings or ServeSettings()
        self.path = Path(path)
        if not self.path.exists():
            raise ReviewpipeError(f"--model {path} does not exist; build it with `dvc repro package`")
        self._variant = Variant(VariantSpec("batch", str(self.path)), settings, ServerMetrics())
        # What the endpoint's Environment would carry, the thread count set either way (an inherited
        # value would otherwise apply).
        with environment({**settings.environment(), "REVIEWPIPE_NUM_THREADS": str(threads)}):
            self._variant.load()
        self.module = self._variant.module
        self.model = self._variant.model
        self.version = str(getattr(self.model, "version", "unversioned"))
        self.fingerprint = _model_fingerprint(self.path, self._variant.model_dir)

    def predict(self, texts: list[str]) -> list[dict[str, Any]]:
        assert self.module is not None
        body = "".join(json.dumps({"inputs": text}) + "\n" for text in texts)
        data = self.module.input_fn(body.encode("utf-8"), "application/jsonlines")
        return list(self.module.predict_fn(data, self.model)["predictions"])

    def close(self) -> None:
        self._variant.close(timeout=5)


def _model_fingerprint(path: Path, model_dir: Path | None) -> str:
    from reviewpipe.serving.package import file_sha256

    if path.is_file():
        return file_sha256(path)
    info_path = Path(model_dir or path) / "model_info.json"
    if info_path.exists():
        info = json.loads(info_path.read_text())
        if info.get("source_hash"):
            return f"{info.get('model_version')}:{info['source_hash']}"
    return f"dir:{path.resolve()}"


# ---------------------------------------------------------------- input


def input_format(uri: str, explicit: str | None = None, options: StorageOptions | None = None) -> str:
    """parquet | csv | jsonl | lake, from --input-format, the file name (.gz allowed for csv/jsonl),
    or a lake table folder (it holds a _manifest.json)."""
    if explicit:
        if explicit not in INPUT_FORMATS:
            raise ReviewpipeError(f"--input-format must be one of {INPUT_FORMATS}, not {explicit!r}")
        return explicit
    name = uri.lower().removesuffix(".gz")
    for suffix, fmt in (
        (".parquet", "parquet"),
        (".pq", "parquet"),
        (".csv", "csv"),
        (".jsonl", "jsonl"),
        (".ndjson", "jsonl"),
        (".json", "jsonl"),
    ):
        if name.endswith(suffix):
            return fmt
    if storage.exists(storage.join(uri, lake.MANIFEST), options):
        return "lake"
    raise ReviewpipeError(
        f"cannot tell the format of {uri}; name it .parquet/.csv/.jsonl, give a lake table folder "
        "(e.g. data/lake/reviews), or pass --input-format"
    )


def _exact_parts(frames: Iterator[pd.DataFrame], rows: int) -> Iterator[pd.DataFrame]:
    """Re-chunk into frames of exactly `rows` rows (the last may be shorter): parts stay stable."""
    pending: list[pd.DataFrame] = []
    held = 0
    for frame in frames:
        pending.append(frame)
        held += len(frame)
        while held >= rows:
            merged = pd.concat(pending, ignore_index=True)
            yield merged.iloc[:rows].reset_index(drop=True)
            rest = merged.iloc[rows:].reset_index(drop=True)
            pending, held = [rest], len(rest)
    if held:
        yield pd.concat(pending, ignore_index=True)


def _jsonl_frames(handle: Any, rows: int) -> Iterator[pd.DataFrame]:
    """JSON Lines in frames of `rows` records. A line that is not UTF-8, not JSON or not an object
    becomes a row with only `INPUT_ERROR` set (rejected with that reason), never the job's end."""
    records: list[dict[str, Any]] = []
    for line in handle:
        if not line.strip():
            continue  # blank lines are not records (as pandas reads JSON Lines)
        try:
            value = json.loads(line.decode("utf-8"))
            record = (
                value
                if isinstance(value, dict)
                else {INPUT_ERROR: f"not a JSON object ({type(value).__name__})"}
            )
        except UnicodeDecodeError as exc:
            record = {INPUT_ERROR: f"undecodable bytes (not UTF-8) at byte {exc.start}", "_text": line}
        except json.JSONDecodeError as exc:
            record = {INPUT_ERROR: f"not valid JSON ({exc.msg})", "_text": line}
        records.append(record)
        if len(records) == rows:
            yield _records_frame(records)
            records = []
    if records:
        yield _records_frame(records)


def _records_frame(records: list[dict[str, Any]]) -> pd.DataFrame:
    frame = pd.DataFrame.from_records(records)
    if INPUT_ERROR not in frame.columns:
        frame[INPUT_ERROR] = None
    return frame


def read_parts(
    uri: str, fmt: str, rows: int, columns: list[str], options: StorageOptions | None = None
) -> tuple[Iterator[pd.DataFrame], int | None]:
    """(parts of `rows` rows with `columns` (and INPUT_ERROR where a row could not be read), total
    rows when the format knows it)."""
    if fmt == "lake":
        manifest = lake.read_manifest(uri, options)
        return _exact_parts(lake.iter_current(uri, columns, rows, options), rows), None if manifest[
            "record_id"
        ] else int(manifest["rows"])
    fs, path = storage.get_fs(uri, options)
    if not fs.exists(path):
        raise ReviewpipeError(f"--input {uri} not found")

    def check(available: list[str]) -> None:
        missing = [c for c in columns if c not in available]
        if missing:
            raise ReviewpipeError(
                f"{uri} has no column(s) {missing}; it has {available}. "
                "Pick them with --text-column / --id-column"
            )

    if fmt == "parquet":
        import pyarrow.parquet as pq

        handle = fs.open(path, "rb")
        parquet = pq.ParquetFile(handle)
        check(parquet.schema_arrow.names)

        def parquet_frames() -> Iterator[pd.DataFrame]:
            try:
                for batch in parquet.iter_batches(batch_size=rows, columns=columns):
                    yield batch.to_pandas()
            finally:
                handle.close()

        return _exact_parts(parquet_frames(), rows), parquet.metadata.num_rows

    def text_frames() -> Iterator[pd.DataFrame]:
        if fmt == "csv":
            # Everything as text, as written (ids 1.0 vs 1, "" and "NA" kept); bytes that are not
            # UTF-8 kept as lone surrogates, so only their row is rejected.
            frames = storage.iter_csv(
                uri, rows, options, text=True, keep_empty=True, encoding_errors="surrogateescape"
            )
        else:
            frames = _jsonl_lines(uri, rows, options)
        checked = False
        for frame in frames:
            unreadable = frame[INPUT_ERROR].notna() if INPUT_ERROR in frame.columns else None
            if not checked and (unreadable is None or not unreadable.all()):
                check([c for c in frame.columns if c != INPUT_ERROR])
                checked = True
            for column in columns:  # a later JSON chunk whose records all lack a key
                if column not in frame.columns:
                    frame[column] = None
            extra = [c for c in (INPUT_ERROR, "_text") if c in frame.columns]
            yield frame[[*columns, *extra]]

    return _exact_parts(text_frames(), rows), None


def _jsonl_lines(uri: str, rows: int, options: StorageOptions | None) -> Iterator[pd.DataFrame]:
    fs, path = storage.get_fs(uri, options)
    with fs.open(path, "rb", compression="infer") as handle:
        yield from _jsonl_frames(handle, rows)


# ---------------------------------------------------------------- validation


def _null(value: Any) -> bool:
    """None, NaN, pd.NA, NaT (not a list or other container)."""
    if isinstance(value, str):
        return False
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):  # array-like: a value, just not a text
        return False


def _missing(value: Any) -> bool:
    return _null(value) or (isinstance(value, str) and not value.strip())


def _shown(value: Any) -> Any:
    """A value for rejects.jsonl: undecodable bytes (kept as surrogates, or raw bytes) as \\xNN."""
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="backslashreplace").rstrip("\r\n")
    if storage.has_undecodable(value):
        return value.encode("utf-8", errors="surrogateescape").decode("utf-8", errors="backslashreplace")
    return value


def split_rejects(
    part: pd.DataFrame, first_row: int, text_column: str, id_column: str
) -> tuple[pd.DataFrame, list[dict[str, Any]]]:
    """(rows to predict with their row_number, rejected rows with a reason)."""
    keep, rejects = [], []
    errors = part[INPUT_ERROR].tolist() if INPUT_ERROR in part.columns else [None] * len(part)
    raw_lines = part["_text"].tolist() if "_text" in part.columns else [None] * len(part)
    for offset, (identifier, text, error, line) in enumerate(
        zip(part[id_column].tolist(), part[text_column].tolist(), errors, raw_lines, strict=True)
    ):
        row = first_row + offset
        reason = None
        if isinstance(error, str):
            reason, text = error, line if isinstance(line, bytes) else text
        elif storage.has_undecodable(identifier) or storage.has_undecodable(text):
            column = id_column if storage.has_undecodable(identifier) else text_column
            reason = f"undecodable bytes in {column} (not UTF-8)"
        elif _missing(identifier):
            reason = f"missing {id_column}"
        elif _null(text):
            reason = f"missing {text_column}"
        elif not isinstance(text, str):
            reason = f"{text_column} is {type(text).__name__}, expected a string"
        elif not text.strip():
            reason = f"empty {text_column}"
        if reason is None:
            keep.append(offset)
        else:
            rejects.append(
                {
                    "row_number": row,
                    id_column: None if _missing(identifier) else _shown(_plain(identifier)),
                    "reason": reason,
                    "text": None if _null(text) else str(_shown(text))[:_REJECT_TEXT_CHARS],
                }
            )
    valid = part.iloc[keep].drop(columns=[c for c in (INPUT_ERROR, "_text") if c in part.columns])
    valid = valid.reset_index(drop=True)
    valid.insert(0, "row_number", [first_row + i for i in keep])
    return valid, rejects


def _plain(value: Any) -> Any:
    """A JSON-safe scalar (numpy ints/floats -> Python)."""
    return value.item() if hasattr(value, "item") else value


def _ids(series: pd.Series) -> pd.Series:
    """Ids as one stable dtype: integral floats (a JSON chunk that had a null) back to int64."""
    if series.dtype.kind == "f" and len(series) and (series % 1 == 0).all():
        return series.astype("int64")
    return series


# ---------------------------------------------------------------- output


def predictions_frame(valid: pd.DataFrame, predictions: list[dict[str, Any]], id_column: str) -> pd.DataFrame:
    out = pd.DataFrame({id_column: _ids(valid[id_column]), "row_number": valid["row_number"].astype("int64")})
    out["predicted_sentiment"] = pd.Series([int(p["label"]) for p in predictions], dtype="int64")
    for key, column in PROBABILITY_COLUMNS.items():
        out[column] = pd.Series([float(p["probabilities"][key]) for p in predictions], dtype="float64")
    out["model_version"] = [str(p["model_version"]) for p in predictions]
    return out


def _encode(frame: pd.DataFrame, fmt: str) -> bytes:
    if fmt == "parquet":
        buffer = io.BytesIO()
        frame.to_parquet(buffer, index=False)
        return buffer.getvalue()
    return frame.to_json(orient="records", lines=True, force_ascii=False).encode("utf-8")


def part_name(index: int, fmt: str) -> str:
    return f"part-{index:05d}.{fmt}"


def marker_name(index: int) -> str:
    return f"part-{index:05d}.done.json"


def read_output(output_uri: str, options: StorageOptions | None = None) -> pd.DataFrame:
    """All predictions of a finished job, in input order (from the manifest's parts)."""
    manifest = storage.read_json(storage.join(output_uri, MANIFEST_FILE), options)
    frames = []
    for name in manifest["parts"]:
        fs, path = storage.get_fs(storage.join(output_uri, name), options)
        with fs.open(path, "rb") as f:
            frames.append(pd.read_parquet(f) if name.endswith(".parquet") else pd.read_json(f, lines=True))
    if not frames:
        return pd.DataFrame()
    return pd.concat(frames, ignore_index=True)


# ---------------------------------------------------------------- the job


@dataclass(frozen=True)
class BatchJob:
    input_uri: str
    output_uri: str
    text_column: str = "review_body"
    id_column: str = "review_id"
    batch_size: int = 64  # texts per predict_fn call
    part_rows: int = 10_000  # input rows per output part (the unit of resumption)
    output_format: str = "parquet"
    input_format: str | None = None

    def validate(self) -> None:
        if self.batch_size < 1 or self.part_rows < 1:
            raise ReviewpipeError("--batch-size and --part-rows must be at least 1")
        if self.output_format not in OUTPUT_FORMATS:
            raise ReviewpipeError(f"--format must be one of {OUTPUT_FORMATS}, not {self.output_format!r}")
        if self.text_column == self.id_column:
            raise ReviewpipeError("--text-column and --id-column must differ")


def _input_identity(uri: str, fmt: str, options: StorageOptions | None) -> dict[str, Any]:
    if fmt == "lake":  # a lake table changes only by publishing a new manifest
        return {"lake_run_id": str(lake.read_manifest(uri, options)["run_id"])}
    fs, path = storage.get_fs(uri, options)
    info = fs.info(path)
    return {k: str(info[k]) for k in ("size", "ETag", "mtime", "LastModified") if info.get(k) is not None}


def run_batch(
    model: Predictor,
    job: BatchJob,
    options: StorageOptions | None = None,
    progress: bool = True,
    on_part: Callable[[int, bool], None] | None = None,
) -> dict[str, Any]:
    """Predict every row of job.input_uri into job.output_uri (resuming); returns the manifest.

    `on_part(index, skipped)` is called after each part (for progress reporting and tests)."""
    from tqdm import tqdm

    job.validate()
    fmt = input_format(job.input_uri, job.input_format, options)
    identity = {
        "input_uri": job.input_uri,
        "input": _input_identity(job.input_uri, fmt, options),
        "input_format": fmt,
        "model": model.fingerprint,
        "part_rows": job.part_rows,
        "text_column": job.text_column,
        "id_column": job.id_column,
        "output_format": job.output_format,
    }
    job_uri = storage.join(job.output_uri, JOB_FILE)
    if storage.exists(job_uri, options):
        previous = storage.read_json(job_uri, options)
        changed = sorted(k for k in identity if previous.get(k) != identity[k])
        if changed:
            raise ReviewpipeError(
                f"{job.output_uri} holds output of another job ({', '.join(changed)} differ); "
                "write to a new --output, or delete it to start over"
            )
    else:
        storage.write_json(job_uri, identity, options)
    fs, out_path = storage.get_fs(job.output_uri, options)
    fs.invalidate_cache()
    done = {posixpath.basename(p) for p in fs.find(out_path)} if fs.exists(out_path) else set()

    parts, total = read_parts(job.input_uri, fmt, job.part_rows, [job.id_column, job.text_column], options)
    part_files: list[str] = []
    rejects: list[dict[str, Any]] = []
    counts = {"rows": 0, "predicted": 0, "rejected": 0, "parts_skipped": 0, "parts_written": 0}
    with tqdm(total=total, unit="rows", desc="predict", disable=not progress, dynamic_ncols=True) as bar:
        for index, part in enumerate(parts):
            marker_uri = storage.join(job.output_uri, marker_name(index))
            if marker_name(index) in done:
                marker = storage.read_json(marker_uri, options)
                counts["parts_skipped"] += 1
            else:
                marker = _predict_part(model, job, part, index, options)
                counts["parts_written"] += 1
            if marker["file"]:
                part_files.append(marker["file"])
            rejects.extend(marker["rejects"])
            counts["rows"] += marker["rows"]
            counts["predicted"] += marker["predicted"]
            counts["rejected"] += len(marker["rejects"])
            bar.update(len(part))
            if on_part is not None:
                on_part(index, marker_name(index) in done)
    storage.write_bytes(
        storage.join(job.output_uri, REJECTS_FILE),
        "".join(json.dumps(r, default=str) + "\n" for r in rejects).encode("utf-8"),
        options,
    )
    manifest = {
        "parts": part_files,
        "rejects_file": REJECTS_FILE,
        "model_version": model.version,
        "model": model.fingerprint,
        "input_uri": job.input_uri,
        "id_column": job.id_column,
        "columns": [
            job.id_column,
            "row_number",
            "predicted_sentiment",
            *PROBABILITY_COLUMNS.values(),
            "model_version",
        ],
        **counts,
    }
    storage.write_json(storage.join(job.output_uri, MANIFEST_FILE), manifest, options)
    return manifest


def _predict_part(
    model: Predictor, job: BatchJob, part: pd.DataFrame, index: int, options: StorageOptions | None
) -> dict[str, Any]:
    first_row = index * job.part_rows
    valid, rejects = split_rejects(part, first_row, job.text_column, job.id_column)
    texts = valid[job.text_column].tolist()
    predictions: list[dict[str, Any]] = []
    for start in range(0, len(texts), job.batch_size):
        predictions.extend(model.predict(texts[start : start + job.batch_size]))
    if len(predictions) != len(texts):
        raise RuntimeError(f"the model returned {len(predictions)} predictions for {len(texts)} texts")
    name = part_name(index, job.output_format) if texts else None
    if name:
        frame = predictions_frame(valid, predictions, job.id_column)
        storage.write_bytes(storage.join(job.output_uri, name), _encode(frame, job.output_format), options)
    marker = {
        "part": index,
        "first_row": first_row,
        "rows": len(part),
        "predicted": len(texts),
        "file": name,
        "rejects": rejects,
    }
    # The marker goes last: a part without one is redone on the next run.
    storage.write_bytes(
        storage.join(job.output_uri, marker_name(index)),
        json.dumps(marker, default=str).encode("utf-8"),
        options,
    )
    return marker


# ---------------------------------------------------------------- CLI


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="model.tar.gz or its unpacked directory")
    parser.add_argument(
        "--input",
        required=True,
        help="parquet, CSV or JSON Lines file, or a lake table folder such as data/lake/reviews "
        "(its current version of each review); local path or s3://",
    )
    parser.add_argument(
        "--output", required=True, help="output directory (local path or s3://); reruns resume"
    )
    parser.add_argument("--batch-size", type=int, default=64, help="texts per model call (default 64)")
    parser.add_argument(
        "--part-rows",
        type=int,
        default=10_000,
        help="input rows per output part, the unit of resumption (default 10000)",
    )
    parser.add_argument("--text-column", default="review_body", help="column with the review text")
    parser.add_argument("--id-column", default="review_id", help="column with the review id")
    parser.add_argument(
        "--format",
        dest="output_format",
        choices=OUTPUT_FORMATS,
        default="parquet",
        help="output part format (default parquet)",
    )
    parser.add_argument(
        "--input-format", choices=INPUT_FORMATS, help="override the format from the file name"
    )
    parser.add_argument("--quantize", choices=QUANTIZE_MODES, help="override serve.quantize")
    parser.add_argument(
        "--num-threads",
        type=int,
        default=0,
        help="threads per model call (default 0: every core; serve.num_threads is the server's per-worker share)",
    )
    parser.add_argument(
        "--params",
        default="params.yaml",
        help="params file: `serve` (model settings, as the server) and `storage` (S3 options)",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument(
        "--engine",
        choices=["local", "sagemaker"],
        default="local",
        help="local: this machine; sagemaker: a Batch Transform job on the package (`transform` params); "
        "see README 'From a laptop to AWS'",
    )
    add_trust_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from reviewpipe.config import load_params, to_dict
    from reviewpipe.serving.server import ServeSettings

    params = load_params(args.params) if Path(args.params).exists() else {}
    options = StorageOptions.from_params(params.get("storage") if params else None)
    settings = ServeSettings.from_mapping(
        to_dict(params.get("serve")) if params else {}, max_batch_size=args.batch_size, quantize=args.quantize
    )
    job = BatchJob(
        args.input,
        args.output,
        args.text_column,
        args.id_column,
        args.batch_size,
        args.part_rows,
        args.output_format,
        args.input_format,
    )
    job.validate()
    check_trusted([args.model], args, to_dict(params) if params else {}, options)
    if args.engine == "sagemaker":
        from reviewpipe.aws.transform import run_transform

        manifest = run_transform(
            args.model, job, params, settings.container_environment(str(params.transform.quantize))
        )
        print(
            f"predict: {manifest['predicted']} predictions, {manifest['rejected']} rejected rows -> {args.output}"
        )
        return 0
    if args.num_threads < 0:
        raise ReviewpipeError(f"--num-threads must be 0 (every core) or more, not {args.num_threads}")
    model = PackagedModel(args.model, settings, threads=args.num_threads)
    try:
        manifest = run_batch(model, job, options, progress=not args.no_progress)
    finally:
        model.close()
    print(
        f"predict: {manifest['predicted']} predictions, {manifest['rejected']} rejected rows "
        f"({manifest['parts_written']} parts written, {manifest['parts_skipped']} already done) -> {args.output}"
        + (f"; reasons in {storage.join(args.output, REJECTS_FILE)}" if manifest["rejected"] else "")
    )
    return 0
