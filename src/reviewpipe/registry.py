"""Quality gate (a Pipelines ConditionStep) and a file-based Model Registry (a ModelPackageGroup).

The gate picks the champion among evaluated models by one metric and passes it only when the
metric reaches a floor and its largest between-group fairness gap stays under a ceiling.
Every decision is recorded as a registry version: one JSON file per version under the registry
URI, with SageMaker's approval states (PendingManualApproval -> Approved, or Rejected).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from reviewpipe import storage
from reviewpipe.errors import ReviewpipeError
from reviewpipe.storage import StorageOptions

PENDING = "PendingManualApproval"
APPROVED = "Approved"
REJECTED = "Rejected"
STATUSES = (PENDING, APPROVED, REJECTED)


# ---------------------------------------------------------------- the gate (ConditionStep)


@dataclass(frozen=True)
class GateDecision:
    """What the condition step decided about the champion, and why."""

    champion: str
    metric: str
    metric_value: float
    fairness_gap: float | None
    min_metric: float
    max_group_gap: float
    passed: bool
    reasons: tuple[str, ...]
    ranking: tuple[tuple[str, float], ...] = ()

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["reasons"] = list(self.reasons)
        out["ranking"] = [{"model": m, "value": v} for m, v in self.ranking]
        return out


def choose_champion(
    models: dict[str, dict[str, Any]], metric: str, candidates: list[str] | None = None
) -> tuple[str, list[tuple[str, float]]]:
    """The best model by `metric` (higher is better) and the full ranking; ties go to the first name."""
    pool = {name: m for name, m in models.items() if not candidates or name in candidates}
    if not pool:
        raise ReviewpipeError(
            f"no candidate model to register: metrics has {sorted(models)}, register.candidates is "
            f"{candidates}. Evaluate at least one of the candidates first."
        )
    missing = [name for name, m in pool.items() if not isinstance(m.get(metric), int | float)]
    if missing:
        raise ReviewpipeError(
            f"metric {metric!r} missing for {missing} in the evaluation metrics; set register.metric "
            f"to one of {sorted(next(iter(pool.values())))}."
        )
    ranking = sorted(((name, float(m[metric])) for name, m in pool.items()), key=lambda item: -item[1])
    return ranking[0][0], ranking


def largest_gap(fairness: dict[str, Any], model: str) -> float | None:
    """The largest between-group gap recorded for `model` (None when fairness says nothing about it).

    Reads the evaluate stage's fairness.json: `{"models": {name: {"largest_gap": {"value": ...},
    <feature>: {"gaps": {metric: gap}, ...}}}}`. Other layouts work too: without a model-level
    `largest_gap.value`, numbers under any key containing "gap" count; when no key mentions a gap,
    the model's section itself is read as {metric: gap}.
    """
    section = fairness.get("models", fairness)
    if not isinstance(section, dict) or not isinstance(section.get(model), dict):
        return None
    report = section[model]
    stated = report.get("largest_gap")
    if isinstance(stated, dict) and isinstance(stated.get("value"), int | float):
        return float(stated["value"])
    gaps = list(_numbers(report, counted=False))
    if not gaps:
        gaps = list(_numbers(report, counted=True))
    return max(gaps) if gaps else None


def _numbers(node: Any, counted: bool) -> Iterator[float]:
    """Numbers in a nested section; `counted` turns on below any key that mentions a gap."""
    if isinstance(node, bool):
        return
    if isinstance(node, int | float):
        if counted:
            yield float(node)
    elif isinstance(node, dict):
        for key, value in node.items():
            yield from _numbers(value, counted or "gap" in str(key).lower())
    elif isinstance(node, list):
        for value in node:
            yield from _numbers(value, counted)


def evaluate_gate(
    metrics: dict[str, Any],
    fairness: dict[str, Any] | None,
    metric: str,
    min_metric: float,
    max_group_gap: float,
    candidates: list[str] | None = None,
) -> GateDecision:
    """ConditionStep: champion by `metric`; passes iff metric >= min_metric and gap <= max_group_gap."""
    models = metrics.get("models", metrics)
    champion, ranking = choose_champion(models, metric, candidates)
    value = ranking[0][1]
    gap = largest_gap(fairness or {}, champion)
    reasons: list[str] = []
    if value < min_metric:
        reasons.append(f"{metric} {value:.4f} is below register.min_metric {min_metric}")
    if gap is None:
        reasons.append(f"no fairness gap recorded for {champion!r}; cannot check register.max_group_gap")
    elif gap > max_group_gap:
        reasons.append(f"largest between-group gap {gap:.4f} exceeds register.max_group_gap {max_group_gap}")
    return GateDecision(
        champion=champion,
        metric=metric,
        metric_value=value,
        fairness_gap=gap,
        min_metric=min_metric,
        max_group_gap=max_group_gap,
        passed=not reasons,
        reasons=tuple(reasons),
        ranking=tuple(ranking),
    )


# ---------------------------------------------------------------- lineage hashes


def hash_paths(paths: list[str | Path]) -> str | None:
    """sha256 over file names and contents (directories walked in sorted order); None if none exist."""
    digest = hashlib.sha256()
    found = False
    for root in paths:
        root = Path(root)
        if not root.exists():
            continue
        files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
        for path in files:
            found = True
            rel = path.name if root.is_file() else path.relative_to(root).as_posix()
            digest.update(rel.encode() + b"\0")
            with open(path, "rb") as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    digest.update(chunk)
    return digest.hexdigest() if found else None


def hash_params(params: Any) -> str:
    """sha256 of the canonical JSON of a params mapping."""
    return hashlib.sha256(json.dumps(params, sort_keys=True, default=str).encode()).hexdigest()


def git_state(cwd: str | Path = ".") -> tuple[str | None, bool | None]:
    """(HEAD commit, working tree dirty?) or (None, None) outside a git checkout."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = bool(
            subprocess.run(
                ["git", "status", "--porcelain", "--untracked-files=no"],
                cwd=cwd,
                capture_output=True,
                text=True,
                check=True,
            ).stdout.strip()
        )
    except (OSError, subprocess.CalledProcessError):
        return None, None
    return commit, dirty


# ---------------------------------------------------------------- the registry (ModelPackageGroup)


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
