"""A file-based Model Registry (a ModelPackageGroup) under a URI (local or s3://).

    versions/NNNN.json          one ModelPackage per version, SageMaker's approval states
                                (PendingManualApproval -> Approved, or Rejected)
    packages/<sha256>.tar.gz    the model.tar.gz each version was gated on (its ModelDataUrl)

Version numbers are unique under concurrent writers: a version file is created only if absent
(`storage.create_exclusive`), and a writer that loses the race takes the next number.
The deployable version is the newest Approved one: `package` ships it, nothing else.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from reviewpipe import storage
from reviewpipe.errors import ReviewpipeError
from reviewpipe.serving.package import file_sha256
from reviewpipe.storage import StorageOptions

PENDING = "PendingManualApproval"
APPROVED = "Approved"
REJECTED = "Rejected"
STATUSES = (PENDING, APPROVED, REJECTED)
APPROVAL_MODES = ("auto", "manual")
MAX_RACE_RETRIES = 1000


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def initial_status(passed: bool, approval: str) -> str:
    """A new version's status: Rejected when the gate failed; else Approved (auto) or Pending (manual)."""
    if approval not in APPROVAL_MODES:
        raise ReviewpipeError(f"register.approval must be one of {APPROVAL_MODES}, not {approval!r}")
    if not passed:
        return REJECTED
    return APPROVED if approval == "auto" else PENDING


@dataclass
class ModelPackage:
    """One registry version (SageMaker's ModelPackage), stored as `versions/NNNN.json`.

    `metrics` holds every evaluation set (validation and test, fp32, as evaluate scored the model);
    `serving` the packaged artifact scored through its own handler at fp32 and with the backend deploy
    serves, per set; `gate` the gate's inputs, checks and outcome; `package` the gated model.tar.gz:
    uri, sha256, bytes, model_version, kind.
    """

    version: int
    model_name: str
    model_path: str
    status: str
    metrics: dict[str, Any] = field(default_factory=dict)
    gate: dict[str, Any] = field(default_factory=dict)
    package: dict[str, Any] = field(default_factory=dict)
    serving: dict[str, Any] = field(default_factory=dict)  # the package as served vs fp32, per set
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

    @property
    def sha256(self) -> str | None:
        return self.package.get("sha256")

    def describe(self) -> str:
        """`version 3 (bert, Approved)` for one-line messages."""
        return f"version {self.version} ({self.model_name}, {self.status})"


class Registry:
    """Model registry under a URI (local or s3://): one JSON per version plus its package."""

    def __init__(self, uri: str, options: StorageOptions | None = None) -> None:
        self.uri = uri
        self.options = options

    def _version_uri(self, version: int) -> str:
        return storage.join(self.uri, "versions", f"{version:04d}.json")

    def package_uri(self, sha256: str) -> str:
        return storage.join(self.uri, "packages", f"{sha256}.tar.gz")

    # ------------------------------------------------------------ reading
    def list(self, model_name: str | None = None, status: str | None = None) -> list[ModelPackage]:
        fs, path = storage.get_fs(storage.join(self.uri, "versions"), self.options)
        if not fs.exists(path):
            return []
        fs.invalidate_cache(path)  # another process may have added a version since we last looked
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
        """A version by number, or `latest`, `approved` (the newest approved) or `deployable` (the same)."""
        if isinstance(version, str) and not version.isdigit():
            wanted = {"latest": None, "approved": APPROVED, "deployable": APPROVED}
            if version not in wanted:
                raise ReviewpipeError(
                    f"unknown version {version!r}: use a number, `latest`, `approved` or `deployable`"
                )
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

    def deployable(self) -> ModelPackage | None:
        """The version `package` ships: the newest Approved one (None when none is approved).

        With register.approval=auto a version that passes the gate is Approved when registered;
        with manual it waits for `reviewpipe registry approve N`. Rejected versions never qualify.
        """
        return self.latest(status=APPROVED)

    def find_by_sha256(self, sha256: str, status: str | None = None) -> ModelPackage | None:
        """The newest version (with `status`, if given) whose package has this sha256: the lookup
        serve, predict and deploy verify a package against."""
        matches = [e for e in self.list(status=status) if e.sha256 == sha256]
        return matches[-1] if matches else None

    # ------------------------------------------------------------ packages
    def store_package(self, local_tarball: str) -> dict[str, Any]:
        """Copy a built model.tar.gz into `packages/<sha256>.tar.gz` (content-addressed, kept for
        every version so an older approved version can be shipped again); returns uri, sha256, bytes."""
        sha256 = file_sha256(local_tarball)
        uri = self.package_uri(sha256)
        if not storage.exists(uri, self.options):
            storage.upload_file(local_tarball, uri, self.options)
        return {"uri": uri, "sha256": sha256, "bytes": os.path.getsize(local_tarball)}

    def fetch_package(self, entry: ModelPackage, local_path: str) -> str:
        """Copy a version's package to `local_path` and check its sha256 against the version's record."""
        if not entry.sha256:
            raise ReviewpipeError(
                f"{entry.describe()} records no package; it was registered before packages were "
                "stored. Run `dvc repro register` to register the model again."
            )
        uri = entry.package.get("uri") or self.package_uri(entry.sha256)
        storage.require_exists(
            uri, f"the package of {entry.describe()}", "The registry is incomplete.", self.options
        )
        storage.download_file(uri, local_path, self.options)
        actual = file_sha256(local_path)
        if actual != entry.sha256:
            os.unlink(local_path)
            raise ReviewpipeError(
                f"the package of {entry.describe()} at {uri} has sha256 {actual}, but the registry "
                f"recorded {entry.sha256}: it was changed after registration. Refusing to ship it; "
                "register the model again (`dvc repro register`)."
            )
        return actual

    # ------------------------------------------------------------ writing
    def register(
        self,
        model_name: str,
        model_path: str,
        *,
        status: str,
        metrics: dict[str, Any],
        gate: dict[str, Any] | None = None,
        package: dict[str, Any] | None = None,
        serving: dict[str, Any] | None = None,
        reason: str = "",
        model_hash: str | None = None,
        params_hash: str | None = None,
        data_hash: str | None = None,
        git_commit: str | None = None,
        git_dirty: bool | None = None,
    ) -> ModelPackage:
        """Append a new version with the next free number and return it (safe under concurrent writers)."""
        if status not in STATUSES:
            raise ReviewpipeError(f"status must be one of {STATUSES}, not {status!r}")
        now = _now()
        entry = ModelPackage(
            version=0,
            model_name=model_name,
            model_path=model_path,
            status=status,
            metrics=metrics,
            gate=gate or {},
            package=package or {},
            serving=serving or {},
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
        previous = self.list()
        entry.version = (previous[-1].version + 1) if previous else 1
        for _ in range(MAX_RACE_RETRIES):
            if storage.create_exclusive(self._version_uri(entry.version), _encode(entry), self.options):
                return entry
            entry.version += 1  # another writer took this number
        raise ReviewpipeError(
            f"could not claim a version number in {self.uri} after {MAX_RACE_RETRIES} tries"
        )

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


def _encode(entry: ModelPackage) -> bytes:
    return (json.dumps(entry.to_dict(), indent=2, sort_keys=True, default=str) + "\n").encode()


def current_user() -> str:
    return os.environ.get("USER") or os.environ.get("USERNAME") or "unknown"
