"""Raw reviews CSV (any fsspec URI) -> clean rows + quarantined rejects, reconciled.

Pure functions: bytes/frames in, frames out; `reviewpipe.stages.ingest` does the writing.

How bad input is handled:
- The file is parsed with Python's csv reader (the parser pandas' python engine wraps; quoted
  newlines are fine) after decoding its bytes as latin-1, which maps every byte to one character,
  so parsing never fails on encoding. Each field is then decoded with `data.encoding`; a field that
  does not decode rejects only its row (`undecodable_bytes`). This works for every ASCII-compatible
  encoding (UTF-8, cp1252, ...); others (UTF-16) are decoded whole, strictly.
- A record with more or fewer fields than the header is kept in place and rejected
  (`wrong_field_count`). Broken quoting (an unclosed quote) fails the whole file with its line
  number: everything after it would be misread.
- Every rejected row gets ONE reason: the first rule it fails, in REJECT_RULES order, so counts per
  reason add up to rows_rejected. `source_row` is the row's 1-based position among the data rows
  of the file (the header is row 0), whatever embedded newlines it holds.
- Duplicates are judged last, among rows that pass every other rule: the first such row with a
  review_id is kept and later ones are rejected, so a broken first copy never hides a good one.
"""

from __future__ import annotations

import codecs
import csv
import gzip
import io
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd
from fsspec.utils import infer_compression

from reviewpipe.data.schema import (
    CLEAN_COLUMNS,
    CLEAN_DTYPES,
    INTEGER_COLUMNS,
    RAW_TO_CLEAN,
    REJECT_COLUMNS,
    SOURCE_COLUMNS,
    clean_name,
    sentiment_of,
)
from reviewpipe.errors import ReviewpipeError
from reviewpipe.storage import StorageOptions, get_fs

DEFAULT_RAW_URI = "data/raw/womens_clothing_ecommerce_reviews.csv.gz"

# Reject reasons, in the order rules are applied (a row's reason is the first rule it fails).
REJECT_RULES: tuple[str, ...] = (
    "wrong_field_count",        # more or fewer fields than the header
    "undecodable_bytes",        # a field is not valid in data.encoding
    "missing_review_id",
    "invalid_review_id",        # not a whole number
    "missing_rating",
    "invalid_rating",           # not a whole number
    "rating_out_of_range",      # not 1..5
    "missing_review_body",      # null, empty or only whitespace
    "invalid_age",              # not a whole number
    "age_out_of_range",         # outside [data.min_age, data.max_age]
    "invalid_clothing_id",      # not a whole number >= 0
    "invalid_recommended_ind",  # not 0 or 1
    "invalid_positive_feedback_count",  # not a whole number >= 0
    "duplicate_review_id",      # an earlier good row has the same review_id
)

_WHOLE_NUMBER = re.compile(r"\s*[+-]?\d{1,18}(?:\.0*)?\s*")


class ReconciliationError(ReviewpipeError):
    """rows_in != rows_clean + rows_rejected: ingest lost or invented rows (a bug, never data)."""


@dataclass
class IngestResult:
    clean: pd.DataFrame
    rejects: pd.DataFrame
    metrics: dict[str, Any] = field(default_factory=dict)


def missing_raw_message(uri: str) -> str:
    return (
        f"raw reviews file not found at {uri}. Put the Kaggle \"Women's E-Commerce Clothing Reviews\" "
        f"CSV (plain or .gz) at {DEFAULT_RAW_URI}, or point the pipeline at another path or s3:// URI: "
        f"`dvc exp run -S data.raw_uri=s3://bucket/reviews.csv.gz` (tracked), or for one run "
        f"`reviewpipe stage ingest -S data.raw_uri=/path/to/reviews.csv`."
    )


def read_raw_bytes(uri: str, options: StorageOptions | None = None, compression: str | None = "infer") -> bytes:
    """The raw file's bytes, decompressed: gzip by extension (compression=infer) or magic bytes,
    or as `compression` says (gzip | none | anything fsspec knows, e.g. bz2)."""
    fs, path = get_fs(uri, options)
    try:
        with fs.open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError as exc:
        raise ReviewpipeError(missing_raw_message(uri)) from exc
    except IsADirectoryError as exc:
        raise ReviewpipeError(f"{uri} is a directory; data.raw_uri must name the CSV file") from exc
    mode = (compression or "none").lower()
    if mode == "infer":
        mode = infer_compression(path) or ("gzip" if data[:2] == b"\x1f\x8b" else "none")
    if mode == "none":
        return data
    try:
        if mode == "gzip":
            return gzip.decompress(data)
        from fsspec.compression import compr

        if mode not in compr:
            raise ReviewpipeError(f"unknown data.compression {compression!r}; use infer, gzip or none")
        with compr[mode](io.BytesIO(data), mode="rb") as f:
            return f.read()
    except (OSError, EOFError) as exc:
        raise ReviewpipeError(
            f"{uri} is not valid {mode} data ({exc}); set data.compression=none for a plain CSV") from exc


def _ascii_compatible(encoding: str) -> bool:
    return '\n\r,"'.encode(encoding) == b'\n\r,"'


def parse_raw(data: bytes, encoding: str = "utf-8", source: str = "raw file") -> pd.DataFrame:
    """Raw CSV bytes -> one row per record: columns renamed to snake_case, values the file's strings
    (null where empty) still as latin-1 text for `validate` to decode, `source_row` (1-based) and
    `wrong_field_count` (the record has more or fewer fields than the header)."""
    try:
        codec = codecs.lookup(encoding).name
    except LookupError as exc:
        raise ReviewpipeError(f"unknown data.encoding {encoding!r}; use e.g. utf-8 or cp1252") from exc
    if not _ascii_compatible(codec):
        try:
            data, codec = data.decode(codec).encode("utf-8"), "utf-8"
        except UnicodeDecodeError as exc:
            raise ReviewpipeError(f"{source} is not valid {codec}: {exc}") from exc
    if data.startswith(codecs.BOM_UTF8):
        data = data[len(codecs.BOM_UTF8):]

    # Python's csv reader, the parser under pandas' python engine, used directly: pandas pads short
    # rows, truncates long ones and may drop a last row with an unclosed quote, all silently.
    reader = csv.reader(io.StringIO(data.decode("latin-1"), newline=""), strict=True)
    try:
        records = [record for record in reader if record]  # blank lines are not records
    except csv.Error as exc:
        raise ReviewpipeError(
            f"{source} is not a readable CSV (line {reader.line_num}: {exc}); a quote is probably "
            "unbalanced there. Fix the file or quarantine it.") from exc
    if not records:
        raise ReviewpipeError(f"{source} is empty: expected the Kaggle reviews CSV with a header")

    header = [_decode_header(name, codec) for name in records[0]]
    check_columns(header, source)
    if len(records) == 1:
        raise ReviewpipeError(f"{source} has a header but no data rows")
    width = len(header)
    position = {clean_name(name): i for i, name in reversed(list(enumerate(header))) if clean_name(name)}
    body = records[1:]
    wrong = [len(r) != width for r in body]
    # Keep malformed records in place: pad short ones, fold the surplus of long ones into the last field.
    fields = [r if len(r) == width else (r + [""] * (width - len(r)) if len(r) < width
                                          else [*r[:width - 1], ",".join(r[width - 1:])]) for r in body]
    columns = list(zip(*fields, strict=True)) if fields else [()] * width
    raw = pd.DataFrame({name: pd.Series(columns[position[name]], dtype=object) for name in SOURCE_COLUMNS})
    raw = raw.where(raw != "", None)
    raw["source_row"] = np.arange(1, len(raw) + 1, dtype="int64")
    raw["wrong_field_count"] = np.array(wrong, dtype=bool)
    return raw


def _decode_header(name: str, codec: str) -> str:
    return name.encode("latin-1").decode(codec, errors="replace").strip()


def check_columns(columns: list[str], source: str = "raw file") -> None:
    """Every Kaggle column must be present (an already snake_case header works too); one error
    names every missing column."""
    found = {clean_name(c) for c in columns} - {None}
    missing = [(raw, clean) for raw, clean in RAW_TO_CLEAN.items() if clean not in found]
    if missing:
        names = ", ".join(f"'{raw}' ({clean})" if raw else f"the unnamed first column ({clean})"
                          for raw, clean in missing)
        raise ReviewpipeError(
            f"{source} lacks {len(missing)} required column(s): {names}. Found: {columns}. "
            "Expected the Kaggle header: ,Clothing ID,Age,Title,Review Text,Rating,Recommended IND,"
            "Positive Feedback Count,Division Name,Department Name,Class Name")


def _decode_fields(raw: pd.DataFrame, codec: str) -> tuple[pd.DataFrame, pd.Series]:
    """Decode each latin-1 field with `codec`: (decoded frame, rows with an undecodable field).
    Undecodable fields keep their bytes as \\xNN escapes, so the reject shows what was there."""
    decoded = raw.copy()
    bad = pd.Series(False, index=raw.index)
    if codec == "latin-1" or codec == "iso8859-1":
        return decoded, bad
    for column in SOURCE_COLUMNS:
        values = raw[column]
        non_ascii = values.map(lambda v: v is not None and not v.isascii())
        for idx in values.index[non_ascii]:
            as_bytes = values[idx].encode("latin-1")
            try:
                decoded.at[idx, column] = as_bytes.decode(codec)
            except UnicodeDecodeError:
                decoded.at[idx, column] = as_bytes.decode(codec, errors="backslashreplace")
                bad[idx] = True
    return decoded, bad


def _whole_numbers(values: pd.Series) -> tuple[pd.Series, pd.Series]:
    """(parsed Int64 values, mask of present values that are not whole numbers). Parsed with int(),
    not floats, so 18-digit ids stay exact."""
    present = values.notna()
    text = values.where(present, "").astype(str)
    ok = text.str.fullmatch(_WHOLE_NUMBER.pattern) & present
    digits = text.str.strip().str.replace(r"\.0*$", "", regex=True)
    parsed = [int(v) if good else None for v, good in zip(digits.tolist(), ok.tolist(), strict=True)]
    return pd.Series(pd.array(parsed, dtype="Int64"), index=values.index), present & ~ok


def validate(raw: pd.DataFrame, min_age: int, max_age: int, encoding: str = "utf-8",
             ingested_at: datetime | None = None) -> IngestResult:
    """Parsed raw rows -> clean rows (typed, with sentiment and ingested_at) + rejects (source
    strings, reject_reason, source_row). Every input row lands in exactly one of the two."""
    codec = codecs.lookup(encoding).name
    if not _ascii_compatible(codec):
        codec = "utf-8"  # parse_raw already re-encoded the file as UTF-8
    ingested_at = ingested_at or datetime.now(UTC)
    rows = raw.reset_index(drop=True)
    reason = pd.Series(None, index=rows.index, dtype=object)

    def reject(mask: pd.Series, why: str) -> None:
        hit = mask.astype("boolean").fillna(False).to_numpy(dtype=bool) & reason.isna().to_numpy()
        reason[hit] = why

    if "wrong_field_count" in rows:
        reject(rows["wrong_field_count"], "wrong_field_count")

    rows, undecodable = _decode_fields(rows, codec)
    reject(undecodable, "undecodable_bytes")

    numbers: dict[str, pd.Series] = {}
    invalid: dict[str, pd.Series] = {}
    for column in INTEGER_COLUMNS:
        numbers[column], invalid[column] = _whole_numbers(rows[column])
    missing = {c: rows[c].isna() for c in SOURCE_COLUMNS}

    reject(missing["review_id"], "missing_review_id")
    reject(invalid["review_id"], "invalid_review_id")
    reject(missing["rating"], "missing_rating")
    reject(invalid["rating"], "invalid_rating")
    rating = numbers["rating"]
    reject(rating.notna() & ((rating < 1) | (rating > 5)).fillna(False), "rating_out_of_range")
    body_blank = rows["review_body"].map(lambda v: v is None or not str(v).strip())
    reject(body_blank, "missing_review_body")
    reject(invalid["age"], "invalid_age")
    age = numbers["age"]
    reject(((age < min_age) | (age > max_age)).fillna(False), "age_out_of_range")
    reject(invalid["clothing_id"] | (numbers["clothing_id"] < 0).fillna(False), "invalid_clothing_id")
    reject(invalid["recommended_ind"] | (~numbers["recommended_ind"].isin([0, 1]) & ~missing["recommended_ind"]),
           "invalid_recommended_ind")
    reject(invalid["positive_feedback_count"] | (numbers["positive_feedback_count"] < 0).fillna(False),
           "invalid_positive_feedback_count")
    # Duplicates last, among otherwise-good rows: keep the first, reject the later ones.
    passing = reason.isna()
    duplicate = passing & numbers["review_id"].where(passing).duplicated(keep="first")
    reject(duplicate, "duplicate_review_id")

    good = reason.isna()
    clean = pd.DataFrame(index=rows.index[good])
    for column in SOURCE_COLUMNS:
        clean[column] = numbers[column][good] if column in numbers else rows.loc[good, column]
    clean["sentiment"] = sentiment_of(clean["rating"]) if len(clean) else pd.Series(dtype="int64")
    stamp = pd.Timestamp(ingested_at)
    clean["ingested_at"] = stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")
    clean = clean[list(CLEAN_COLUMNS)].astype(CLEAN_DTYPES).reset_index(drop=True)

    rejects = rows.loc[~good, list(SOURCE_COLUMNS)].astype("string")
    rejects["reject_reason"] = reason[~good].astype("string")
    rejects["source_row"] = rows.loc[~good, "source_row"].astype("int64")
    rejects = rejects[list(REJECT_COLUMNS)].reset_index(drop=True)

    metrics = reconcile(len(rows), clean, rejects)
    return IngestResult(clean=clean, rejects=rejects, metrics=metrics)


def reconcile(rows_in: int, clean: pd.DataFrame, rejects: pd.DataFrame) -> dict[str, Any]:
    """The ingest metrics; raises ReconciliationError unless every input row is counted exactly once."""
    by_reason = {why: 0 for why in REJECT_RULES}
    for why, n in rejects["reject_reason"].value_counts().items():
        by_reason[str(why)] = int(n)
    metrics = {
        "rows_in": int(rows_in),
        "rows_clean": int(len(clean)),
        "rows_rejected": int(len(rejects)),
        "rejected_by_reason": by_reason,
    }
    problems = []
    if metrics["rows_in"] != metrics["rows_clean"] + metrics["rows_rejected"]:
        problems.append(f"rows_in {rows_in} != rows_clean {len(clean)} + rows_rejected {len(rejects)}")
    if sum(by_reason.values()) != metrics["rows_rejected"]:
        problems.append(f"reasons add up to {sum(by_reason.values())}, not rows_rejected {len(rejects)}")
    if set(by_reason) != set(REJECT_RULES):
        problems.append(f"unknown reject reasons {sorted(set(by_reason) - set(REJECT_RULES))}")
    if problems:
        raise ReconciliationError("ingest does not reconcile: " + "; ".join(problems)
                                  + ". This is a bug in reviewpipe, not in the data; please report it.")
    return metrics


def ingest(uri: str, *, options: StorageOptions | None = None, compression: str | None = "infer",
           encoding: str = "utf-8", min_age: int = 13, max_age: int = 110,
           ingested_at: datetime | None = None) -> IngestResult:
    """Read, parse, validate and reconcile the raw file at `uri`."""
    data = read_raw_bytes(uri, options, compression)
    raw = parse_raw(data, encoding, source=uri)
    return validate(raw, min_age, max_age, encoding, ingested_at)


def ingest_params(data: Any, options: StorageOptions | None = None,
                  ingested_at: datetime | None = None) -> IngestResult:
    """`ingest` driven by the params.yaml `data` section."""
    return ingest(
        str(data.get("raw_uri") or DEFAULT_RAW_URI), options=options,
        compression=data.get("compression", "infer"), encoding=data.get("encoding", "utf-8"),
        min_age=int(data.get("min_age", 13)), max_age=int(data.get("max_age", 110)),
        ingested_at=ingested_at,
    )
