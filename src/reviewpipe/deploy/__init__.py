"""Deployment: put packaged models behind an endpoint, locally (`reviewpipe serve` as a managed
background process) or on SageMaker (S3 + model + endpoint config + endpoint), with A/B variants.

Shared here: the variants a deployment serves (ProductionVariants) and the deployment state file
(the `deploy` stage's output: endpoint URL/ARN, variants, weights; never credentials).
"""

from __future__ import annotations

import json
import tarfile
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from reviewpipe import storage
from reviewpipe.config import to_dict
from reviewpipe.errors import ReviewpipeError

TARGETS = ("local", "sagemaker")


@dataclass(frozen=True)
class VariantConfig:
    """One ProductionVariant: a name, a packaged model and its share of traffic."""

    name: str
    package: str
    weight: float = 1.0
    instance_type: str | None = None  # SageMaker only; None: deploy.sagemaker.instance_type
    instance_count: int | None = None  # SageMaker only; None: deploy.sagemaker.instance_count


def variant_configs(section: Any) -> list[VariantConfig]:
    """The `deploy.variants` list, validated (unique names, weights >= 0 with one above 0)."""
    raw = to_dict(section.get("variants") if hasattr(section, "get") else None) or []
    if not isinstance(raw, list) or not raw:
        raise ReviewpipeError(
            "deploy.variants is empty; list at least one {name, package, weight} (see conf/deploy/local.yaml)"
        )
    variants = []
    for i, item in enumerate(raw):
        if not isinstance(item, dict) or not item.get("name") or not item.get("package"):
            raise ReviewpipeError(f"deploy.variants[{i}] needs a name and a package path, got {item!r}")
        known = {"name", "package", "weight", "instance_type", "instance_count"}
        if set(item) - known:
            raise ReviewpipeError(
                f"deploy.variants[{i}] has unknown keys {sorted(set(item) - known)}; allowed: {sorted(known)}"
            )
        weight = item.get("weight", 1.0)
        if isinstance(weight, bool) or not isinstance(weight, int | float) or weight < 0:
            raise ReviewpipeError(f"deploy.variants[{i}].weight must be a number >= 0, not {weight!r}")
        variants.append(
            VariantConfig(
                str(item["name"]),
                str(item["package"]),
                float(weight),
                item.get("instance_type"),
                item.get("instance_count"),
            )
        )
    names = [v.name for v in variants]
    if len(set(names)) != len(names):
        raise ReviewpipeError(f"deploy.variants names must be unique, got {names}")
    if sum(v.weight for v in variants) <= 0:
        raise ReviewpipeError("deploy.variants: at least one variant needs a weight above 0")
    return variants


def package_info(path: str | Path) -> dict[str, Any]:
    """sha256, size and model_version of a packaged model (a model.tar.gz built by `package`)."""
    from reviewpipe.serving.package import file_sha256

    path = Path(path)
    if not path.is_file() or not tarfile.is_tarfile(path):
        raise ReviewpipeError(f"{path} is not a model.tar.gz; build the packages with `dvc repro package`")
    with tarfile.open(path, "r:*") as tar:
        try:
            member = tar.extractfile("model_info.json")
            info = json.load(member) if member else {}
        except KeyError:
            info = {}
        if "code/inference.py" not in tar.getnames():
            raise ReviewpipeError(
                f"{path} has no code/inference.py; it is not a package built by `dvc repro package`"
            )
    return {
        "sha256": file_sha256(path),
        "bytes": path.stat().st_size,
        "model_version": info.get("model_version", "unversioned"),
        "kind": info.get("kind"),
    }


def variant_records(variants: list[VariantConfig]) -> list[dict[str, Any]]:
    """What the state file says about each variant (no SageMaker fields for local deployments)."""
    return [
        {**{k: v for k, v in asdict(variant).items() if v is not None}, **package_info(variant.package)}
        for variant in variants
    ]


def checked_keys(values: Any, allowed: Any, where: str) -> dict[str, Any]:
    """A params section as a dict, refusing keys the code does not know (typos, stray secrets)."""
    values = dict(to_dict(values) or {})
    unknown = set(values) - set(allowed)
    if unknown:
        raise ReviewpipeError(f"{where} has unknown keys {sorted(unknown)}; allowed: {sorted(allowed)}")
    return values


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def read_state(path: str) -> dict[str, Any] | None:
    """The deployment state file, or None when nothing is deployed (or it was deleted)."""
    return storage.read_json(path) if storage.exists(path) else None


def write_state(path: str, state: dict[str, Any]) -> None:
    storage.write_json(path, state)


def remove_state(path: str) -> None:
    fs, p = storage.get_fs(path)
    if fs.exists(p):
        fs.rm(p)
