"""Which model `monitor` and `review` watch: the one actually deployed, not a fixed path.

`model.source`:
- `deployed` (the default): the deployment record (`deploy.state_path`, written by the deploy stage
  and rewritten by `reviewpipe deploy shift`) lists the variants behind the endpoint, each with its
  package, sha256 and model version. The monitored one is `model.variant`, or, when that is null,
  the variant serving the largest share of traffic. Its package must still be the deployed bytes
  (sha256), and it is scored through its own code/inference.py with the serving settings (`serve`;
  on every core, which changes no answer), exactly as the endpoint answers, so a baseline describes
  what production returns.
- `path`: `model.kind` + `model.path` (a package, or a trained model of one kind).
- `none`: no model; data checks only.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from reviewpipe import SENTIMENTS, storage
from reviewpipe.errors import ReviewpipeError


@dataclass(frozen=True)
class DeployedModel:
    """One variant of the deployment record."""

    variant: str
    package: str
    sha256: str
    model_version: str
    weight: float

    def describe(self) -> dict[str, Any]:
        return {
            "source": "deployed",
            "variant": self.variant,
            "package": self.package,
            "sha256": self.sha256,
            "model_version": self.model_version,
            "weight": self.weight,
        }


def deployed_variants(state_path: str, setting: str) -> list[DeployedModel]:
    """Every variant in the deployment record, in its order."""
    hint = f"Deploy first (`dvc repro deploy`), or set {setting}.source=path with a kind and path."
    storage.require_exists(state_path, "the deployment record (deploy.state_path)", hint)
    state = storage.read_json(state_path)
    variants = state["variants"] if isinstance(state, dict) and "variants" in state else []
    if not variants:
        raise ReviewpipeError(f"{state_path} lists no variants; re-run `dvc repro deploy`. {hint}")
    return [
        DeployedModel(
            variant=str(v["name"]),
            package=str(v["package"]),
            sha256=str(v["sha256"]),
            model_version=str(v["model_version"]),
            weight=float(v["weight"]),
        )
        for v in variants
    ]


def choose_variant(variants: Sequence[DeployedModel], name: str | None, setting: str) -> DeployedModel:
    """The variant called `name`, or the one with the largest weight (the first listed on a tie)."""
    if name is None:
        return max(variants, key=lambda v: v.weight)  # max keeps the first of equal weights
    for v in variants:
        if v.variant == name:
            return v
    raise ReviewpipeError(
        f"{setting}.variant={name!r} is not deployed; the deployment has {[v.variant for v in variants]}"
    )


def package_registry_entry(package: str) -> dict[str, Any] | None:
    """The registry version a package was built from (its model_info.json), if any."""
    import json
    import tarfile

    with tarfile.open(package, "r:*") as tar:
        member = tar.extractfile("model_info.json")
        info = json.load(member) if member is not None else {}
    return info.get("registry")


class PackagePredictor:
    """A model package scored through its own code/inference.py with the serving settings (the
    loader `reviewpipe serve` and `reviewpipe predict` use), behind predict_proba(texts)."""

    kind = "package"

    def __init__(self, package: str | Path, serve: Any, expected_sha256: str | None = None) -> None:
        from reviewpipe.config import to_dict
        from reviewpipe.serving.batch import PackagedModel
        from reviewpipe.serving.package import file_sha256
        from reviewpipe.serving.server import ServeSettings

        path = Path(package)
        if expected_sha256 is not None:
            storage.require_exists(str(path), "the deployed package", "Re-run `dvc repro deploy`.")
            actual = file_sha256(path)
            if actual != expected_sha256:
                raise ReviewpipeError(
                    f"{path} is not the package that is deployed (sha256 {actual[:12]}…, the deployment "
                    f"record says {expected_sha256[:12]}…): it was rebuilt since. Deploy it "
                    "(`dvc repro deploy`) or monitor it explicitly with model.source=path."
                )
        self.model = PackagedModel(path, ServeSettings.from_mapping(to_dict(serve)))
        self.version = self.model.version

    def predict_served(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """(probabilities (n, 3), labels (n,)) as the endpoint answers them: a calibrated package's
        label comes from its decision rule, not always from the top probability."""
        rows = self.model.predict(list(texts))
        probabilities = np.asarray(
            [[float(r["probabilities"][str(s)]) for s in SENTIMENTS] for r in rows], dtype=np.float64
        ).reshape(len(rows), len(SENTIMENTS))
        return probabilities, np.asarray([int(r["label"]) for r in rows], dtype=np.int64)

    def predict_proba(self, texts: Sequence[str], categories: Sequence[str] | None = None) -> np.ndarray:
        return self.predict_served(texts)[0]

    def close(self) -> None:
        self.model.close()


@dataclass
class Monitored:
    """The model a monitor or review command predicts with, and what it is (for the records)."""

    predictor: Any
    description: dict[str, Any]


def monitored_model(params: Any, section_name: str) -> Monitored | None:
    """The `<section>.model` block resolved: the deployed variant's package, a configured model, or
    None (source none)."""
    from reviewpipe.config import section

    model = section(params, section_name).model
    setting = f"{section_name}.model"
    source = str(model.source)
    if source == "none":
        return None
    if source == "deployed":
        chosen = choose_variant(
            deployed_variants(str(section(params, "deploy").state_path), setting),
            None if model.variant is None else str(model.variant),
            setting,
        )
        predictor = PackagePredictor(chosen.package, section(params, "serve"), chosen.sha256)
        description = {
            **chosen.describe(),
            "served_model_version": predictor.version,
            "registry": package_registry_entry(chosen.package),
        }
        return Monitored(predictor, description)
    if source != "path":
        raise ReviewpipeError(f"{setting}.source must be deployed, path or none, not {source!r}")
    if model.path is None:
        raise ReviewpipeError(f"{setting}.source=path needs {setting}.path (and {setting}.kind)")
    kind, path = str(model.kind), str(model.path)
    storage.require_exists(path, f"the {kind} model ({setting}.path)", f"Build it, or fix {setting}.path.")
    if kind == "package":
        predictor = PackagePredictor(path, section(params, "serve"))
        return Monitored(
            predictor, {"source": "path", "kind": kind, "path": path, "model_version": predictor.version}
        )
    from reviewpipe.models.predictors import load_predictor

    return Monitored(load_predictor(kind, path), {"source": "path", "kind": kind, "path": path})
