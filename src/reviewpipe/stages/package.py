"""Stage `package`: one SageMaker model.tar.gz per configured model, stamped with its registry version."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig

from reviewpipe import registry, storage
from reviewpipe.config import section, to_dict
from reviewpipe.serving import package
from reviewpipe.storage import StorageOptions


def registered_version(reg: registry.Registry, model_path: str) -> registry.ModelPackage | None:
    """The newest registry version of exactly this model (same path and same content hash)."""
    current = registry.hash_paths([model_path])
    matches = [e for e in reg.list() if Path(e.model_path) == Path(model_path) and e.model_hash == current]
    return matches[-1] if matches else None


def calibrations(uri: str | None, options: StorageOptions | None = None) -> dict[str, dict]:
    """evaluate's calibration per model name ({} when package.calibration_uri is null)."""
    if uri is None:
        return {}
    storage.require_exists(
        uri,
        "evaluate's calibration.json",
        "Run `dvc repro evaluate`, or set package.calibration_uri=null to ship uncalibrated probabilities.",
        options,
    )
    return {name: report["calibration"] for name, report in storage.read_json(uri, options)["models"].items()}


def main(params: DictConfig) -> None:
    cfg = section(params, "package")
    options = StorageOptions.from_params(params.get("storage"))
    reg = registry.Registry(cfg.registry_uri, options)
    calibrated = calibrations(cfg.calibration_uri, options)
    build = package.build_options(to_dict(cfg), options)
    manifest = {}
    for tarball, model_path in to_dict(cfg.models).items():
        entry = registered_version(reg, model_path)
        # models/bert -> bert; models/baseline/model.joblib -> baseline
        name = (
            entry.model_name
            if entry
            else (Path(model_path).parent.name if Path(model_path).is_file() else Path(model_path).name)
        )
        out = Path(cfg.out_dir) / f"{tarball}.tar.gz"
        info = package.build_package(
            model_path,
            out,
            model_name=name,
            model_version=f"{name}-v{entry.version}" if entry else None,
            registry={"uri": cfg.registry_uri, "version": entry.version, "status": entry.status}
            if entry
            else None,
            calibration=calibrated.get(name),
            **build,
        )
        manifest[tarball] = {
            "tarball": str(out),
            "model_path": model_path,
            "kind": info["kind"],
            "model_version": info["model_version"],
            "registry": info["registry"],
            "sha256": package.file_sha256(out),
            "bytes": out.stat().st_size,
        }
        status = f"registry v{entry.version} {entry.status}" if entry else "not registered"
        confidence = "calibrated" if info["calibrated"] else "uncalibrated"
        print(
            f"package: {out} <- {model_path} ({info['kind']}, {info['model_version']}, {status}, {confidence})"
        )
    storage.write_json(str(Path(cfg.out_dir) / "manifest.json"), manifest)
