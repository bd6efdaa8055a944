"""Raw reviews CSV (any fsspec URI) -> clean rows + quarantined rejects, reconciled.

Pure functions: streams/frames in, frames out; `reviewpipe.data.append` writes the lake.

How the file is read (memory stays flat as the file grows):
- The file is streamed: decompressed on the fly (gzip by extension or magic bytes), metered
  against `data.max_raw_bytes` (a gzip bomb stops at the cap with a clear message), and parsed into
  chunks of `data.chunk_rows` records (`iter_raw_chunks`). Nothing holds the whole file.
- Records are parsed with Python's csv reader (the parser pandas' python engine wraps; quoted
  newlines are fine) after decoding the bytes as latin-1, which maps every byte to one character,
  so parsing never fails on encoding. Each field is then decoded with `data.encoding`; a field that
  does not decode rejects only its row (`undecodable_bytes`). This works for every ASCII-compatible
  encoding (UTF-8, cp1252, ...); others (UTF-16) are decoded by the stream, strictly.
- A field longer than `data.max_field_bytes` (128 KB by default) rejects its row
  (`field_too_large`, the field cut to its first KB in the reject). A quoted field that runs past
  64 x that limit stops the file: that is an unbalanced quote swallowing the rows after it.
- A record with more or fewer fields than the header is kept in place and rejected
  (`wrong_field_count`). Broken quoting (an unclosed quote) fails the whole file with its line
  number: everything after it would be misread.
- Every rejected row gets ONE reason: the first rule it fails, in REJECT_RULES order, so counts per
  reason add up to rows_rejected. `source_row` is the row's 1-based position among the data rows
  of the file (the header is row 0), whatever embedded newlines it holds.
- Duplicates are judged last, among rows that pass every other rule: the first such row with a
  review_id is kept and later ones are rejected, so a broken first copy never hides a good one.
  (`validate` does it within a frame; the streaming path does it across chunks in DuckDB.)
"""

from __future__ import annotations

import codecs
import csv
import gzip
import hashlib
import io
import itertools
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import IO, Any

import numpy as np
import pandas as pd
from fsspec.utils import infer_compression

from reviewpipe.data.schema import (
    CLEAN_COLUMNS,
    CLEAN_DTYPES,
    CONTENT_COLUMNS,
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
    "wrong_field_count",  # more or fewer fields than the header
    "field_too_large",  # a field longer than data.max_field_bytes
    "undecodable_bytes",  # a field is not valid in data.encoding
    "missing_review_id",
    "invalid_review_id",  # not a whole number
    "missing_rating",
    "invalid_rating",  # not a whole number
    "rating_out_of_range",  # not 1..5
    "missing_review_body",  # null, empty or only whitespace
    "invalid_age",  # not a whole number
    "age_out_of_range",  # outside [data.min_age, data.max_age]
    "invalid_clothing_id",  # not a whole number >= 0
    "invalid_recommended_ind",  # not 0 or 1
    "invalid_positive_feedback_count",  # not a whole number >= 0
    "duplicate_review_id",  # an earlier good row has the same review_id
)

_WHOLE_NUMBER = re.compile(r"\s*[+-]?\d{1,18}(?:\.0*)?\s*")
# How much of an oversized field the reject keeps, and how far past the limit a quoted field may run
# before it is taken for an unbalanced quote (the parser must hold a field to measure it).
KEPT_OF_OVERSIZED_FIELD = 1024
HARD_FIELD_FACTOR = 64


class ReconciliationError(ReviewpipeError):
    """rows_in != rows_clean + rows_rejected: ingest lost or invented rows (a bug, never data)."""


@dataclass(frozen=True)
class ReadSettings:
    """How a raw file is read and validated (the `data` params section)."""

    encoding: str = "utf-8"
    compression: str | None = "infer"
    min_age: int = 13
    max_age: int = 110
    chunk_rows: int = 20_000
    max_raw_bytes: int = 4 * 1024**3
    max_field_bytes: int = 128 * 1024

    @classmethod
    def from_params(cls, data: Any) -> ReadSettings:
        settings = cls(
            encoding=str(data.encoding),
            compression=str(data.compression),
            min_age=int(data.min_age),
            max_age=int(data.max_age),
            chunk_rows=int(data.chunk_rows),
            max_raw_bytes=int(data.max_raw_bytes),
            max_field_bytes=int(data.max_field_bytes),
        )
        for name in ("chunk_rows", "max_raw_bytes", "max_field_bytes"):
            if getattr(settings, name) < 1:
                raise ReviewpipeError(f"data.{name} must be at least 1, got {getattr(settings, name)}")
        return settings


@dataclass
class IngestResult:
    clean: pd.DataFrame
    rejects: pd.DataFrame
    metrics: dict[str, Any] = field(default_factory=dict)
    # With check_duplicates=False: the decoded source strings of the clean rows (for rejects that a
    # later, cross-chunk duplicate check makes of them).
    clean_source: pd.DataFrame | None = None


def missing_raw_message(uri: str) -> str:
    return (
        f'raw reviews file not found at {uri}. Put the Kaggle "Women\'s E-Commerce Clothing Reviews" '
        f"CSV (plain or .gz) at {DEFAULT_RAW_URI}, or point the pipeline at another path or s3:// URI: "
        f"`dvc exp run -S data.raw_uri=s3://bucket/reviews.csv.gz` (tracked), or for one run "
        f"`reviewpipe stage ingest -S data.raw_uri=/path/to/reviews.csv`."
    )


# ---------------------------------------------------------------- reading the bytes


class _Metered(io.RawIOBase):
    """Reads a binary stream, counting and hashing the bytes, and stops at `limit` bytes."""

    def __init__(self, raw: IO[bytes], limit: int, source: str, mode: str) -> None:
        self._raw, self.limit, self.source, self.mode = raw, limit, source, mode
        self.bytes_read = 0
        self.sha256 = hashlib.sha256()

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        try:
            data = self._raw.read(len(buffer))
        except (OSError, EOFError) as exc:
            raise ReviewpipeError(
                f"{self.source} is not valid {self.mode} data ({exc}); set data.compression=none for a "
                "plain CSV"
            ) from exc
        n = len(data)
        self.bytes_read += n
        if self.bytes_read > self.limit:
            raise ReviewpipeError(
                f"{self.source} is larger than data.max_raw_bytes={self.limit:,} bytes (uncompressed); "
                "if the file is genuine, raise data.max_raw_bytes"
            )
        self.sha256.update(data)
        buffer[:n] = data
        return n


@contextmanager
def open_raw(
    uri: str,
    options: StorageOptions | None = None,
    compression: str | None = "infer",
    max_bytes: int = ReadSettings.max_raw_bytes,
) -> Iterator[_Metered]:
    """The raw file as a decompressed, metered binary stream: gzip by extension (compression=infer)
    or magic bytes, or as `compression` says (gzip | none | anything fsspec knows, e.g. bz2)."""
    fs, path = get_fs(uri, options)
    try:
        handle = fs.open(path, "rb")
    except FileNotFoundError as exc:
        raise ReviewpipeError(missing_raw_message(uri)) from exc
    except IsADirectoryError as exc:
        raise ReviewpipeError(f"{uri} is a directory; data.raw_uri must name the CSV file") from exc
    try:
        mode = (compression or "none").lower()
        if mode == "infer":
            head = handle.read(2)
            handle.seek(0)
            mode = infer_compression(path) or ("gzip" if head == b"\x1f\x8b" else "none")
        if mode == "none":
            stream: IO[bytes] = handle
        elif mode == "gzip":
            stream = gzip.GzipFile(fileobj=handle, mode="rb")
        else:
            from fsspec.compression import compr

            if mode not in compr:
                raise ReviewpipeError(f"unknown data.compression {compression!r}; use infer, gzip or none")
            stream = compr[mode](handle, mode="rb")
        yield _Metered(stream, max_bytes, uri, mode)
    finally:
        handle.close()


def read_raw_bytes(
    uri: str, options: StorageOptions | None = None, compression: str | None = "infer"
) -> bytes:
    """The raw file's bytes, decompressed (small files and tests; ingest streams instead)."""
    with open_raw(uri, options, compression) as stream:
        return stream.read()


# ---------------------------------------------------------------- parsing


def _ascii_compatible(encoding: str) -> bool:
    return '\n\r,"'.encode(encoding) == b'\n\r,"'


def _codec(encoding: str) -> str:
    try:
        return codecs.lookup(encoding).name
    except LookupError as exc:
        raise ReviewpipeError(f"unknown data.encoding {encoding!r}; use e.g. utf-8 or cp1252") from exc


def field_codec(encoding: str) -> str | None:
    """The codec `validate` decodes fields with; None when the stream already decoded them."""
    codec = _codec(encoding)
    return codec if _ascii_compatible(codec) else None


def iter_raw_chunks(
    stream: IO[bytes],
    encoding: str = "utf-8",
    source: str = "raw file",
    chunk_rows: int = ReadSettings.chunk_rows,
    max_field_bytes: int = ReadSettings.max_field_bytes,
) -> Iterator[pd.DataFrame]:
    """Raw CSV stream -> frames of up to `chunk_rows` records: columns renamed to snake_case,
    values the file's strings (null where empty; still latin-1 text for `validate` to decode when
    the encoding is ASCII-compatible), `source_row` (1-based), `wrong_field_count` and
    `field_too_large` flags."""
    codec = _codec(encoding)
    if isinstance(stream, io.RawIOBase):
        stream = io.BufferedReader(stream, 1 << 20)
    if _ascii_compatible(codec):
        text = io.TextIOWrapper(stream, encoding="latin-1", newline="")
        header_codec: str | None = codec
    else:
        text = io.TextIOWrapper(stream, encoding=codec, errors="strict", newline="")
        header_codec = None
    hard_limit = max_field_bytes * HARD_FIELD_FACTOR
    # Python's csv reader, the parser under pandas' python engine, used directly: pandas pads short
    # rows, truncates long ones and may drop a last row with an unclosed quote, all silently.
    reader = csv.reader(text, strict=True)
    records = _records(reader, source, hard_limit, codec)
    try:
        header_record = next(records)
    except StopIteration:
        raise ReviewpipeError(f"{source} is empty: expected the Kaggle reviews CSV with a header") from None
    if header_record and header_record[0].startswith(("\ufeff", "\xef\xbb\xbf")):
        header_record[0] = header_record[0].removeprefix("\ufeff").removeprefix("\xef\xbb\xbf")
    header = [_decode_header(name, header_codec) for name in header_record]
    check_columns(header, source)
    width = len(header)
    position = {clean_name(name): i for i, name in reversed(list(enumerate(header))) if clean_name(name)}
    first_row, batch = 1, []
    for record in records:
        batch.append(record)
        if len(batch) == chunk_rows:
            yield _raw_frame(batch, position, width, first_row, max_field_bytes)
            first_row += len(batch)
            batch = []
    if batch:
        yield _raw_frame(batch, position, width, first_row, max_field_bytes)
    elif first_row == 1:
        raise ReviewpipeError(f"{source} has a header but no data rows")


def _records(reader: Any, source: str, hard_limit: int, codec: str) -> Iterator[list[str]]:
    """Non-blank records, parsed with the field size limit set to `hard_limit` for every record
    (csv's limit is process-wide state; another parse in between may have changed it)."""
    while True:
        csv.field_size_limit(hard_limit)
        try:
            record = next(reader)
        except StopIteration:
            return
        except UnicodeDecodeError as exc:
            raise ReviewpipeError(f"{source} is not valid {codec}: {exc}") from exc
        except csv.Error as exc:
            if "field larger than field limit" in str(exc):
                raise ReviewpipeError(
                    f"{source}: a field starting near line {reader.line_num} runs past {hard_limit:,} bytes "
                    f"({HARD_FIELD_FACTOR} x data.max_field_bytes): a quote is probably unbalanced there, "
                    "swallowing the rows after it. Fix the file, or raise data.max_field_bytes if such "
                    "fields are genuine."
                ) from exc
            raise ReviewpipeError(
                f"{source} is not a readable CSV (line {reader.line_num}: {exc}); a quote is probably "
                "unbalanced there. Fix the file or quarantine it."
            ) from exc
        if record:  # blank lines are not records
            yield record


def _raw_frame(
    body: list[list[str]], position: dict[str | None, int], width: int, first_row: int, max_field_bytes: int
) -> pd.DataFrame:
    wrong = [len(r) != width for r in body]
    # Keep malformed records in place: pad short ones, fold the surplus of long ones into the last field.
    fields = [
        r
        if len(r) == width
        else (r + [""] * (width - len(r)) if len(r) < width else [*r[: width - 1], ",".join(r[width - 1 :])])
        for r in body
    ]
    # Per-row checks at C speed for the common case: no field over the limit, every byte ASCII.
    if max(map(len, itertools.chain.from_iterable(fields)), default=0) > max_field_bytes:
        too_large = [max(map(len, r)) > max_field_bytes for r in fields]
        fields = [
            [_cut(v, max_field_bytes) for v in r] if big else r
            for r, big in zip(fields, too_large, strict=True)
        ]
    else:
        too_large = [False] * len(fields)
    joined = ["".join(r) for r in fields]
    non_ascii = [not text.isascii() for text in joined]
    columns = list(zip(*fields, strict=True))
    raw = pd.DataFrame({name: pd.Series(columns[position[name]], dtype=object) for name in SOURCE_COLUMNS})
    raw = raw.where(raw != "", None)
    raw["source_row"] = np.arange(first_row, first_row + len(raw), dtype="int64")
    raw["wrong_field_count"] = np.array(wrong, dtype=bool)
    raw["field_too_large"] = np.array(too_large, dtype=bool)
    raw["non_ascii"] = np.array(non_ascii, dtype=bool)
    return raw


def _cut(value: str, limit: int) -> str:
    if len(value) <= limit:
        return value
    return f"{value[:KEPT_OF_OVERSIZED_FIELD]}... [{len(value):,} bytes, over data.max_field_bytes={limit:,}]"


def parse_raw(
    data: bytes,
    encoding: str = "utf-8",
    source: str = "raw file",
    max_field_bytes: int = ReadSettings.max_field_bytes,
) -> pd.DataFrame:
    """Raw CSV bytes -> one frame of all records (see `iter_raw_chunks`)."""
    chunks = list(iter_raw_chunks(io.BytesIO(data), encoding, source, 1 << 30, max_field_bytes))
    return pd.concat(chunks, ignore_index=True)


def _decode_header(name: str, codec: str | None) -> str:
    if codec is None:
        return name.strip()
    return name.encode("latin-1").decode(codec, errors="replace").strip()


def check_columns(columns: list[str], source: str = "raw file") -> None:
    """Every Kaggle column must be present (an already snake_case header works too); one error
    names every missing column."""
    found = {clean_name(c) for c in columns} - {None}
    missing = [(raw, clean) for raw, clean in RAW_TO_CLEAN.items() if clean not in found]
    if missing:
        names = ", ".join(
            f"'{raw}' ({clean})" if raw else f"the unnamed first column ({clean})" for raw, clean in missing
        )
        raise ReviewpipeError(
            f"{source} lacks {len(missing)} required column(s): {names}. Found: {columns}. "
            "Expected the Kaggle header: ,Clothing ID,Age,Title,Review Text,Rating,Recommended IND,"
            "Positive Feedback Count,Division Name,Department Name,Class Name"
        )


# ---------------------------------------------------------------- validation


def _decode_fields(raw: pd.DataFrame, codec: str | None) -> tuple[pd.DataFrame, pd.Series]:
    """Decode each latin-1 field with `codec`: (decoded frame, rows with an undecodable field).
    Undecodable fields keep their bytes as \\xNN escapes, so the reject shows what was there."""
    decoded = raw.copy()
    bad = pd.Series(False, index=raw.index)
    if codec is None or codec in ("latin-1", "iso8859-1"):
        return decoded, bad
    rows = raw.index[raw["non_ascii"]] if "non_ascii" in raw else raw.index  # flagged by the parser
    for column in SOURCE_COLUMNS:
        values = raw.loc[rows, column]
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
    plain = text.str.isdigit() & (text.str.len() <= 18)
    if bool((plain | ~present).all()):  # the common case: plain digits, parsed by numpy
        try:
            numbers = np.where(present.to_numpy(), text.to_numpy(), "0").astype(np.int64)
        except ValueError:  # digits numpy does not read (e.g. superscripts): the careful path below
            numbers = None
        if numbers is not None:
            parsed = pd.array(numbers, dtype="Int64")
            parsed[~present.to_numpy()] = pd.NA
            return pd.Series(parsed, index=values.index), pd.Series(False, index=values.index)
    ok = text.str.fullmatch(_WHOLE_NUMBER.pattern) & present
    digits = text.str.strip().str.replace(r"\.0*$", "", regex=True)
    parsed = [int(v) if good else None for v, good in zip(digits.tolist(), ok.tolist(), strict=True)]
    return pd.Series(pd.array(parsed, dtype="Int64"), index=values.index), present & ~ok


def content_hashes(clean: pd.DataFrame) -> pd.Series:
    """Per row, a 16-hex-digit hash of its content (every source column but the id, as typed
    values): equal rows, equal hashes; a changed field, a new hash. md5 of the values joined by a
    separator (NULL as a NUL character), computed by DuckDB: a standard hash, stable across versions."""
    if clean.empty:
        return pd.Series([], dtype="string", index=clean.index)
    import duckdb

    parts = ", ".join(f'coalesce(CAST("{c}" AS VARCHAR), chr(0))' for c in CONTENT_COLUMNS)
    con = duckdb.connect()
    try:
        con.register("content", clean[list(CONTENT_COLUMNS)].reset_index(drop=True))
        hashes = con.execute(f"SELECT left(md5(concat_ws(chr(31), {parts})), 16) FROM content").fetchnumpy()
    finally:
        con.close()
    return pd.Series(next(iter(hashes.values())), index=clean.index, dtype="string")


def _utc(moment: datetime | None) -> pd.Timestamp:
    stamp = pd.Timestamp(moment or datetime.now(UTC))
    return stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")


def validate(
    raw: pd.DataFrame,
    min_age: int,
    max_age: int,
    encoding: str = "utf-8",
    ingested_at: datetime | None = None,
    check_duplicates: bool = True,
) -> IngestResult:
    """Parsed raw rows -> clean rows (typed, with sentiment, ingested_at and content_hash) +
    rejects (source strings, reject_reason, source_row). Every input row lands in exactly one of
    the two. `check_duplicates=False` leaves duplicate ids to the caller (chunked ingest)."""
    codec = field_codec(encoding)
    rows = raw.reset_index(drop=True)
    reason = pd.Series(None, index=rows.index, dtype=object)

    def reject(mask: pd.Series, why: str) -> None:
        hit = mask.astype("boolean").fillna(False).to_numpy(dtype=bool) & reason.isna().to_numpy()
        reason[hit] = why

    for flag in ("wrong_field_count", "field_too_large"):
        if flag in rows:
            reject(rows[flag], flag)

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
    body = rows["review_body"]
    body_blank = body.isna() | body.fillna("").astype(str).str.strip().eq("")
    reject(body_blank, "missing_review_body")
    reject(invalid["age"], "invalid_age")
    age = numbers["age"]
    reject(((age < min_age) | (age > max_age)).fillna(False), "age_out_of_range")
    reject(invalid["clothing_id"] | (numbers["clothing_id"] < 0).fillna(False), "invalid_clothing_id")
    reject(
        invalid["recommended_ind"] | (~numbers["recommended_ind"].isin([0, 1]) & ~missing["recommended_ind"]),
        "invalid_recommended_ind",
    )
    reject(
        invalid["positive_feedback_count"] | (numbers["positive_feedback_count"] < 0).fillna(False),
        "invalid_positive_feedback_count",
    )
    if check_duplicates:  # last, among otherwise-good rows: keep the first, reject the later ones
        passing = reason.isna()
        duplicate = passing & numbers["review_id"].where(passing).duplicated(keep="first")
        reject(duplicate, "duplicate_review_id")

    good = reason.isna()
    clean = pd.DataFrame(index=rows.index[good])
    for column in SOURCE_COLUMNS:
        clean[column] = numbers[column][good] if column in numbers else rows.loc[good, column]
    clean["sentiment"] = sentiment_of(clean["rating"]) if len(clean) else pd.Series(dtype="int64")
    clean["ingested_at"] = _utc(ingested_at)
    clean = clean[[c for c in CLEAN_COLUMNS if c != "content_hash"]].astype(
        {c: t for c, t in CLEAN_DTYPES.items() if c != "content_hash"}
    )
    clean["content_hash"] = content_hashes(clean)
    clean = clean[list(CLEAN_COLUMNS)].reset_index(drop=True)

    rejects = source_strings(rows.loc[~good])
    rejects["reject_reason"] = reason[~good].astype("string")
    rejects = rejects[list(REJECT_COLUMNS)].reset_index(drop=True)

    metrics = reconcile(len(rows), clean, rejects)
    clean_source = None if check_duplicates else source_strings(rows.loc[good]).reset_index(drop=True)
    return IngestResult(clean=clean, rejects=rejects, metrics=metrics, clean_source=clean_source)


def source_strings(rows: pd.DataFrame) -> pd.DataFrame:
    """The decoded source strings of rows, with their source_row (what a reject shows)."""
    out = rows[list(SOURCE_COLUMNS)].astype("string")
    out["source_row"] = rows["source_row"].astype("int64")
    return out


def reconcile_counts(rows_in: int, rows_clean: int, by_reason: dict[str, int]) -> dict[str, Any]:
    """The ingest metrics; raises ReconciliationError unless every input row is counted exactly once."""
    counts = {why: 0 for why in REJECT_RULES}
    counts.update({str(k): int(v) for k, v in by_reason.items()})
    rows_rejected = sum(counts.values())
    metrics = {
        "rows_in": int(rows_in),
        "rows_clean": int(rows_clean),
        "rows_rejected": int(rows_rejected),
        "rejected_by_reason": counts,
    }
    problems = []
    if metrics["rows_in"] != metrics["rows_clean"] + metrics["rows_rejected"]:
        problems.append(f"rows_in {rows_in} != rows_clean {rows_clean} + rows_rejected {rows_rejected}")
    if set(counts) != set(REJECT_RULES):
        problems.append(f"unknown reject reasons {sorted(set(counts) - set(REJECT_RULES))}")
    if problems:
        raise ReconciliationError(
            "ingest does not reconcile: "
            + "; ".join(problems)
            + ". This is a bug in reviewpipe, not in the data; please report it."
        )
    return metrics


def reconcile(rows_in: int, clean: pd.DataFrame, rejects: pd.DataFrame) -> dict[str, Any]:
    """`reconcile_counts` for frames of clean and rejected rows."""
    by_reason = {str(k): int(v) for k, v in rejects["reject_reason"].value_counts().items()}
    return reconcile_counts(rows_in, len(clean), by_reason)


def ingest(
    uri: str,
    *,
    options: StorageOptions | None = None,
    compression: str | None = "infer",
    encoding: str = "utf-8",
    min_age: int = 13,
    max_age: int = 110,
    ingested_at: datetime | None = None,
    max_field_bytes: int = ReadSettings.max_field_bytes,
) -> IngestResult:
    """Read, parse, validate and reconcile the raw file at `uri`, all in memory (small files,
    tests, notebooks; the ingest stage streams it into the lake with `reviewpipe.data.append`)."""
    with open_raw(uri, options, compression) as stream:
        raw = pd.concat(
            list(iter_raw_chunks(stream, encoding, uri, 1 << 30, max_field_bytes)), ignore_index=True
        )
    return validate(raw, min_age, max_age, encoding, ingested_at)
