"""One way to touch storage: every path is a URI (local, file://, s3://) opened through fsspec.

S3 options come from the `storage` params section or the standard AWS environment
(AWS_ENDPOINT_URL, AWS_PROFILE, ...); credentials only from the standard AWS chain.

Every write publishes a whole file or nothing (`open_atomic`): locally a temporary sibling
`<name>.tmp-<pid>-<random>`, flushed and fsync'ed, then renamed over the target (and the folder
fsync'ed, so the rename survives a power cut); on S3 one object that appears only when complete
(an aborted multipart upload leaves nothing). A process killed mid-write leaves its temporary file;
the next write to the same target, or `remove_stale_temp` over a folder, deletes temporary files
whose writer is gone. The readers and writers for tables (parquet, CSV) live here too, so stages do
not each open files their own way.
"""

from __future__ import annotations

import io
import json
import os
import posixpath
import re
import shutil
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import IO, Any

import fsspec
import pandas as pd
from fsspec.core import url_to_fs
from fsspec.utils import infer_compression

from reviewpipe.errors import ReviewpipeError

TMP_MARK = ".tmp-"
# `<target>.tmp-<writer pid>-<8 hex>` (and its side files, e.g. DuckDB's `.wal`): the pid tells a
# dead writer's leftover from a live write.
_TMP_NAME = re.compile(r"^(?P<target>.+)\.tmp-(?P<pid>\d+)-[0-9a-f]{8}(?:\.\w+)?$")
# A temporary file this old is stale even if a process with its pid exists (pids get reused).
STALE_TMP_SECONDS = 24 * 3600
# Spreadsheets run a cell that starts with one of these as a formula (OWASP "CSV injection").
FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")


@dataclass(frozen=True)
class StorageOptions:
    """Options for S3-compatible stores. None means: let the AWS chain / environment decide."""

    endpoint_url: str | None = None
    profile: str | None = None
    region: str | None = None

    @classmethod
    def from_params(cls, section: Any | None) -> StorageOptions:
        section = section or {}
        get = section.get if hasattr(section, "get") else (lambda k, d=None: d)
        return cls(
            endpoint_url=get("endpoint_url")
            or os.environ.get("AWS_ENDPOINT_URL_S3")
            or os.environ.get("AWS_ENDPOINT_URL"),
            profile=get("profile") or None,
            region=get("region") or None,
        )

    def fsspec_kwargs(self, protocol: str) -> dict[str, Any]:
        if protocol not in ("s3", "s3a"):
            return {}
        kwargs: dict[str, Any] = {}
        client: dict[str, Any] = {}
        if self.endpoint_url:
            client["endpoint_url"] = self.endpoint_url
        if self.region:
            client["region_name"] = self.region
        if client:
            kwargs["client_kwargs"] = client
        if self.profile:
            kwargs["profile"] = self.profile
        return kwargs


def protocol_of(uri: str) -> str:
    return uri.split("://", 1)[0] if "://" in uri else "file"


def is_remote(uri: str) -> bool:
    return protocol_of(uri) not in ("file", "local")


def get_fs(uri: str, options: StorageOptions | None = None) -> tuple[fsspec.AbstractFileSystem, str]:
    """(filesystem, path-within-filesystem) for a URI."""
    options = options or StorageOptions()
    return url_to_fs(uri, **options.fsspec_kwargs(protocol_of(uri)))


def join(uri: str, *parts: str) -> str:
    if is_remote(uri) or uri.startswith("file://"):
        return posixpath.join(uri.rstrip("/"), *parts)
    return os.path.join(uri, *parts)


def full_uri(fs: fsspec.AbstractFileSystem, path: str) -> str:
    """A path returned by fs back into a URI DuckDB/pandas can open with the same fs."""
    protocol = fs.protocol[0] if isinstance(fs.protocol, tuple) else fs.protocol
    return path if protocol in ("file", "local") else f"{protocol}://{path}"


def local_path(uri: str) -> str:
    """A local URI as an OS path (`file://` stripped)."""
    return uri[len("file://") :] if uri.startswith("file://") else uri


def exists(uri: str, options: StorageOptions | None = None) -> bool:
    fs, path = get_fs(uri, options)
    return fs.exists(path)


def require_exists(uri: str, what: str, hint: str, options: StorageOptions | None = None) -> None:
    if not exists(uri, options):
        raise ReviewpipeError(f"{what} not found at {uri}. {hint}")


def register_with_duckdb(con: Any, uri: str, options: StorageOptions | None = None) -> None:
    """Give DuckDB the same fsspec filesystem we use (httpfs cannot be downloaded offline)."""
    if is_remote(uri):
        fs, _ = get_fs(uri, options)
        con.register_filesystem(fs)


# ---------------------------------------------------------------- atomic writes


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def is_stale_temp(path: str, now: float | None = None) -> bool:
    """A local `<target>.tmp-<pid>-<hex>` file whose writer is gone (or that is older than a day)."""
    match = _TMP_NAME.match(os.path.basename(path))
    if not match:
        return False
    try:
        age = (now or time.time()) - os.path.getmtime(path)
    except FileNotFoundError:
        return False
    return age > STALE_TMP_SECONDS or not _pid_alive(int(match["pid"]))


def remove_stale_temp(folder: str) -> list[str]:
    """Delete the stale temporary files (see `is_stale_temp`) under a local folder; returns them.
    A no-op for remote URIs: S3 writes leave no temporary objects."""
    if is_remote(folder) or not os.path.isdir(local_path(folder)):
        return []
    removed = []
    for dirpath, _, filenames in os.walk(local_path(folder)):
        for name in filenames:
            path = os.path.join(dirpath, name)
            if TMP_MARK in name and is_stale_temp(path):
                _remove_quietly(path)
                removed.append(path)
    return sorted(removed)


def remove_stale_siblings(path: str) -> None:
    """Delete the stale temporary files of earlier writes to the local file `path` (a killed
    writer's leftovers); writers that publish a file their own way call it before they start."""
    folder, name = os.path.split(path)
    try:
        candidates = os.listdir(folder or ".")
    except FileNotFoundError:
        return
    for other in candidates:
        match = _TMP_NAME.match(other)
        if match and match["target"] == name and is_stale_temp(os.path.join(folder, other)):
            _remove_quietly(os.path.join(folder, other))


def _remove_quietly(path: str) -> None:
    with suppress(FileNotFoundError):
        os.remove(path)


def _fsync_dir(folder: str) -> None:
    try:
        fd = os.open(folder or ".", os.O_RDONLY)
    except OSError:  # platforms without directory handles
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def temp_name(path: str) -> str:
    """The temporary sibling a local write of `path` goes through."""
    return f"{path}{TMP_MARK}{os.getpid()}-{uuid.uuid4().hex[:8]}"


@contextmanager
def open_atomic(
    uri: str, mode: str = "wb", options: StorageOptions | None = None, durable: bool = True
) -> Iterator[IO[Any]]:
    """A file opened for writing that appears at `uri` whole when the block ends, or not at all
    when it raises. Text mode ("w") writes UTF-8. `durable=False` skips the fsyncs (scratch files
    that need atomicity but not to survive a power cut)."""
    if mode not in ("wb", "w"):
        raise ValueError(f"open_atomic writes ('wb' or 'w'), not {mode!r}")
    with _open_atomic_binary(uri, options, durable) as handle:
        if mode == "wb":
            yield handle
            return
        text = io.TextIOWrapper(handle, encoding="utf-8", newline="")
        yield text
        text.flush()
        text.detach()  # the binary handle stays open for the publish step


@contextmanager
def _open_atomic_binary(uri: str, options: StorageOptions | None, durable: bool) -> Iterator[IO[bytes]]:
    fs, path = get_fs(uri, options)
    if is_remote(uri):
        handle = fs.open(path, "wb")
        try:
            yield handle
        except BaseException:
            handle.discard()  # abort a multipart upload; the single PUT has not happened yet
            handle.closed = True
            raise
        handle.close()
        return
    path = os.path.abspath(local_path(uri))
    folder = os.path.dirname(path)
    os.makedirs(folder, exist_ok=True)
    remove_stale_siblings(path)
    tmp = temp_name(path)
    try:
        with open(tmp, "wb") as f:
            yield f
            f.flush()
            if durable:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        _remove_quietly(tmp)
        raise
    if durable:
        _fsync_dir(folder)


def publish_local(tmp: str, path: str) -> None:
    """Publish a finished local temporary file (see `temp_name`) at `path`: fsync it, rename it
    over `path`, fsync the folder. For writers that must produce the file themselves (a database)."""
    fd = os.open(tmp, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    _fsync_dir(os.path.dirname(os.path.abspath(path)))


def write_bytes(uri: str, data: bytes, options: StorageOptions | None = None) -> None:
    """Publish a file whole (see `open_atomic`): readers see the old or the new content, never a part."""
    with open_atomic(uri, "wb", options) as f:
        f.write(data)


def write_text(uri: str, text: str, options: StorageOptions | None = None) -> None:
    """Write UTF-8 text atomically (see `open_atomic`)."""
    write_bytes(uri, text.encode("utf-8"), options)


def write_json(uri: str, obj: Any, options: StorageOptions | None = None) -> None:
    """Write JSON atomically (see `open_atomic`); keys sorted, so equal objects give equal bytes."""
    write_text(uri, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n", options)


def create_exclusive(uri: str, data: bytes, options: StorageOptions | None = None) -> bool:
    """Publish a file whole only if nothing is at `uri` yet; False when something already is.

    Atomic create-if-absent for concurrent writers (registry version numbers): locally a hard link
    of a complete temporary file (link(2) fails when the name exists), on S3 a conditional PUT
    (`If-None-Match: *`)."""
    fs, path = get_fs(uri, options)
    if is_remote(uri):
        try:
            fs.pipe_file(path, data, mode="create")
        except FileExistsError:
            return False
        return True
    path = os.path.abspath(local_path(uri))
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = temp_name(path)
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.link(tmp, path)
    except FileExistsError:
        return False
    finally:
        _remove_quietly(tmp)
    _fsync_dir(os.path.dirname(path))
    return True


def upload_file(local_file: str, uri: str, options: StorageOptions | None = None) -> None:
    """Copy a local file to `uri` whole (see `open_atomic`), in chunks."""
    with open(local_file, "rb") as src, open_atomic(uri, "wb", options) as dst:
        shutil.copyfileobj(src, dst, 1 << 20)


def download_file(uri: str, local_file: str, options: StorageOptions | None = None) -> None:
    """Copy `uri` to a local file whole (see `open_atomic`), in chunks."""
    fs, path = get_fs(uri, options)
    with fs.open(path, "rb") as src, open_atomic(local_file, "wb") as dst:
        shutil.copyfileobj(src, dst, 1 << 20)


def read_bytes(uri: str, options: StorageOptions | None = None) -> bytes:
    fs, path = get_fs(uri, options)
    with fs.open(path, "rb") as f:
        return f.read()


def read_json(uri: str, options: StorageOptions | None = None) -> Any:
    fs, path = get_fs(uri, options)
    with fs.open(path, "r") as f:
        return json.load(f)


# ---------------------------------------------------------------- tables: parquet


def read_parquet(
    uri: str, options: StorageOptions | None = None, columns: list[str] | None = None, hint: str | None = None
) -> pd.DataFrame:
    """One parquet file (or a folder of them) as a frame. With `hint`, a missing file is a
    ReviewpipeError naming it and saying what to do (the hint)."""
    fs, path = get_fs(uri, options)
    if hint is not None and not fs.exists(path):
        raise ReviewpipeError(f"{uri} not found. {hint}")
    if fs.isdir(path):
        return pd.read_parquet(path, filesystem=fs, columns=columns)
    with fs.open(path, "rb") as f:
        return pd.read_parquet(f, columns=columns)


def write_parquet(
    frame: pd.DataFrame, uri: str, options: StorageOptions | None = None, durable: bool = True
) -> None:
    """Parquet without the index, published atomically; the same frame gives the same bytes."""
    with open_atomic(uri, "wb", options, durable) as f:
        frame.to_parquet(f, index=False)


# ---------------------------------------------------------------- tables: CSV


def csv_compression(uri: str) -> str | None:
    """gzip, bz2, ... from the file name (fsspec's rule); None for a plain file."""
    return infer_compression(uri)


def _csv_kwargs(uri: str, text: bool, keep_empty: bool, encoding_errors: str) -> dict[str, Any]:
    """pandas.read_csv settings of the one CSV reader: only an empty field is missing ("NA", "None",
    "null", "NaN" stay text: they are words a review can consist of); with `keep_empty`, not even that."""
    return {
        "dtype": str if text else None,
        "keep_default_na": False,
        "na_values": [] if keep_empty else [""],
        "compression": csv_compression(uri),
        "encoding": "utf-8",
        "encoding_errors": encoding_errors,
    }


def read_csv(
    uri: str,
    options: StorageOptions | None = None,
    *,
    text: bool = False,
    keep_empty: bool = False,
    encoding_errors: str = "strict",
) -> pd.DataFrame:
    """A CSV file (plain or compressed by extension) as a frame: the shared reader for every
    command. Only empty fields are missing; `text=True` keeps every column as strings (ids stay
    as written); `encoding_errors="surrogateescape"` keeps undecodable bytes as lone surrogates
    (see `has_undecodable`) instead of failing the whole file."""
    fs, path = get_fs(uri, options)
    with fs.open(path, "rb") as f:
        return pd.read_csv(f, **_csv_kwargs(uri, text, keep_empty, encoding_errors))


def iter_csv(
    uri: str,
    chunk_rows: int,
    options: StorageOptions | None = None,
    *,
    text: bool = False,
    keep_empty: bool = False,
    encoding_errors: str = "strict",
) -> Iterator[pd.DataFrame]:
    """`read_csv` in frames of at most `chunk_rows` rows (memory bounded by the chunk)."""
    fs, path = get_fs(uri, options)
    with fs.open(path, "rb") as f:
        yield from pd.read_csv(f, chunksize=chunk_rows, **_csv_kwargs(uri, text, keep_empty, encoding_errors))


_SURROGATE = re.compile("[\udc80-\udcff]")


def has_undecodable(value: Any) -> bool:
    """A string read with encoding_errors="surrogateescape" that held bytes invalid in UTF-8."""
    return isinstance(value, str) and _SURROGATE.search(value) is not None


def neutralize_formulas(frame: pd.DataFrame) -> pd.DataFrame:
    """Text cells a spreadsheet would run as a formula (`=HYPERLINK(...)`, `+`, `-`, `@`, tab, CR)
    get a leading `'` so they show as text (OWASP's CSV-injection advice). Numbers are untouched."""
    out = frame.copy()
    for column in out.columns:
        values = out[column]
        if values.dtype == object or isinstance(values.dtype, pd.StringDtype):
            risky = values.map(lambda v: isinstance(v, str) and v.startswith(FORMULA_PREFIXES))
            if risky.any():
                out[column] = values.where(~risky, "'" + values.astype("string"))
    return out


def csv_bytes(frame: pd.DataFrame, spreadsheet_safe: bool = False) -> bytes:
    """A frame as UTF-8 CSV without the index; `spreadsheet_safe` neutralises formula cells."""
    return (neutralize_formulas(frame) if spreadsheet_safe else frame).to_csv(index=False).encode("utf-8")


def write_csv(
    frame: pd.DataFrame, uri: str, options: StorageOptions | None = None, spreadsheet_safe: bool = False
) -> None:
    """CSV without the index, published atomically (see `csv_bytes`)."""
    write_bytes(uri, csv_bytes(frame, spreadsheet_safe), options)
