"""A file-based Model Registry (a ModelPackageGroup): one JSON file per version under the registry
URI (local or s3://), with SageMaker's approval states (PendingManualApproval -> Approved, or Rejected).
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from reviewpipe import storage
from reviewpipe.errors import ReviewpipeError
from reviewpipe.storage import StorageOptions

PENDING = "PendingManualApproval"
APPROVED = "Approved"
REJECTED = "Rejected"
STATUSES = (PENDING, APPROVED, REJECTED)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


@dataclass
class ModelPackage:
    """One registry version (SageMaker's ModelPackage), stored as `versions/NNNN.json`."""

    version: int
    model_name: str
    model_path: str
    status: str
    metrics: dict[str, Any] = field(default_factory=dict)
    gate: dict[str, Any] = field(default_factory=dict)
    model_hash: str | None = None
    params_hash: str | None = None
    data_hash: str | None = None
    git_commit: str | None = None
    git_dirty: bool | None = None
    status_reason: str = ""
    created_at: str = ""
    updated_at: str = ""
    history: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelPackage:
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in data.items() if k in known})


class Registry:
    """Model registry under a URI (local or s3://): one JSON per version, written atomically."""

    def __init__(self, uri: str, options: StorageOptions | None = None) -> None:
        self.uri = uri
        self.options = options

    def _version_uri(self, version: int) -> str:
        return storage.join(self.uri, "versions", f"{version:04d}.json")

    def list(self, model_name: str | None = None, status: str | None = None) -> list[ModelPackage]:
        fs, path = storage.get_fs(storage.join(self.uri, "versions"), self.options)
        if not fs.exists(path):
            return []
        entries = []
        for file in fs.ls(path, detail=False):
            if not str(file).endswith(".json"):
                continue
            with fs.open(file, "r") as f:
                entries.append(ModelPackage.from_dict(json.load(f)))
        entries.sort(key=lambda e: e.version)
        return [
            e
            for e in entries
            if (model_name is None or e.model_name == model_name) and (status is None or e.status == status)
        ]

    def get(self, version: int | str) -> ModelPackage:
        """A version by number, or `latest` / `approved` (the newest approved one)."""
        if isinstance(version, str) and not version.isdigit():
            wanted = {"latest": None, "approved": APPROVED}
            if version not in wanted:
                raise ReviewpipeError(f"unknown version {version!r}: use a number, `latest` or `approved`")
            entries = self.list(status=wanted[version])
            if not entries:
                raise ReviewpipeError(
                    f"registry {self.uri} has no {version} version yet; "
                    "run `dvc repro register` (or `reviewpipe registry approve N`)"
                )
            return entries[-1]
        uri = self._version_uri(int(version))
        if not storage.exists(uri, self.options):
            known = [e.version for e in self.list()]
            raise ReviewpipeError(
                f"registry {self.uri} has no version {version}; versions: {known or 'none'}"
            )
        return ModelPackage.from_dict(storage.read_json(uri, self.options))

    def latest(self, model_name: str | None = None, status: str | None = None) -> ModelPackage | None:
        entries = self.list(model_name, status)
        return entries[-1] if entries else None

    def register(
        self,
        model_name: str,
        model_path: str,
        *,
        status: str,
        metrics: dict[str, Any],
        gate: dict[str, Any] | None = None,
        reason: str = "",
        model_hash: str | None = None,
        params_hash: str | None = None,
        data_hash: str | None = None,
        git_commit: str | None = None,
        git_dirty: bool | None = None,
    ) -> ModelPackage:
        """Append a new version (next integer) and return it."""
        if status not in STATUSES:
            raise ReviewpipeError(f"status must be one of {STATUSES}, not {status!r}")
        previous = self.list()
        now = _now()
        entry = ModelPackage(
            version=(previous[-1].version + 1) if previous else 1,
            model_name=model_name,
            model_path=model_path,
            status=status,
            metrics=metrics,
            gate=gate or {},
            model_hash=model_hash,
            params_hash=params_hash,
            data_hash=data_hash,
            git_commit=git_commit,
            git_dirty=git_dirty,
            status_reason=reason,
            created_at=now,
            updated_at=now,
            history=[{"status": status, "at": now, "by": "register", "reason": reason}],
        )
        storage.write_json(self._version_uri(entry.version), entry.to_dict(), self.options)
        return entry

    def set_status(
        self, version: int | str, status: str, *, by: str, reason: str = "", force: bool = False
    ) -> ModelPackage:
        """update_model_package(ModelApprovalStatus=...): PendingManualApproval -> Approved / Rejected.

        A version the gate rejected is approved only with `force` (a person overriding the gate).
        """
        entry = self.get(version)
        if status not in STATUSES:
            raise ReviewpipeError(f"status must be one of {STATUSES}, not {status!r}")
        if entry.status == status:
            return entry
        if entry.status == REJECTED and status == APPROVED and not force:
            raise ReviewpipeError(
                f"version {entry.version} was rejected ({entry.status_reason or 'no reason recorded'}); "
                "approve it anyway with --force if a person has reviewed it"
            )
        now = _now()
        entry.status, entry.status_reason, entry.updated_at = status, reason, now
        entry.history.append({"status": status, "at": now, "by": by, "reason": reason})
        storage.write_json(self._version_uri(entry.version), entry.to_dict(), self.options)
        return entry


def current_user() -> str:
    return os.environ.get("USER") or os.environ.get("USERNAME") or "unknown"
