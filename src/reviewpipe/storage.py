"""One way to touch storage: every path is a URI (local, file://, s3://) opened through fsspec.

S3 options come from the `storage` params section or the standard AWS environment
(AWS_ENDPOINT_URL, AWS_PROFILE, ...); credentials only from the standard AWS chain.
"""

from __future__ import annotations

import json
import os
import posixpath
import uuid
from dataclasses import dataclass
from typing import Any

import fsspec
from fsspec.core import url_to_fs

from reviewpipe.errors import ReviewpipeError


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


def exists(uri: str, options: StorageOptions | None = None) -> bool:
    fs, path = get_fs(uri, options)
    return fs.exists(path)


def read_json(uri: str, options: StorageOptions | None = None) -> Any:
    fs, path = get_fs(uri, options)
    with fs.open(path, "r") as f:
        return json.load(f)


def write_bytes(uri: str, data: bytes, options: StorageOptions | None = None) -> None:
    """Publish a file whole: a temporary sibling, then rename (local) or a single PUT (S3),
    so readers see the old or the new content, never a part."""
    fs, path = get_fs(uri, options)
    if is_remote(uri):
        fs.pipe_file(path, data)
        return
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.tmp-{uuid.uuid4().hex[:8]}"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def write_json(uri: str, obj: Any, options: StorageOptions | None = None) -> None:
    """Write JSON atomically (see write_bytes)."""
    write_bytes(uri, (json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n").encode(), options)


def require_exists(uri: str, what: str, hint: str, options: StorageOptions | None = None) -> None:
    if not exists(uri, options):
        raise ReviewpipeError(f"{what} not found at {uri}. {hint}")


def register_with_duckdb(con: Any, uri: str, options: StorageOptions | None = None) -> None:
    """Give DuckDB the same fsspec filesystem we use (httpfs cannot be downloaded offline)."""
    if is_remote(uri):
        fs, _ = get_fs(uri, options)
        con.register_filesystem(fs)
