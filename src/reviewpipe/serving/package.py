"""SageMaker model packages: build (model.tar.gz in the inference-toolkit layout) and unpack.

Layout of every tarball (one `code/inference.py` serves every model kind):
    model_info.json           name, version, kind, labels, token limit, the SageMaker target
    code/inference.py         model_fn, input_fn, predict_fn, output_fn (self-contained)
    code/requirements.txt     only what the target image lacks (absent when it lacks nothing)
  kind huggingface: the save_pretrained files at the root (SageMaker's /opt/ml/model), remote code
                    included, plus onnx/model.onnx (fp32) and onnx/model.int8.onnx (static int8,
                    calibrated on validation reviews) when package.onnx.export is true
  kind sklearn:     model.joblib at the root
  kind autogluon:   the AutoGluon predictor directory under autogluon/
  calibration.json  (optional) evaluate's calibration of this model: served probabilities and labels
                    use it (see inference.py)
A new kind (e.g. an ensemble: member models in sub-directories + a meta-learner) adds a Packager
here and a model class in inference.py's MODEL_KINDS; nothing else changes.

Tarballs are byte-for-byte reproducible (sorted entries, zero mtimes, gzip mtime 0, no build-machine
paths inside), so the same model and params give the same sha256.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import shutil
import tarfile
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from reviewpipe import SENTIMENTS, __version__
from reviewpipe.errors import ReviewpipeError

INFERENCE_SOURCE = Path(__file__).with_name("inference.py")
SKIP_DIRS = {"onnx", "checkpoints", "__pycache__"}  # caches and training state never ship
SKIP_SUFFIXES = (".ckpt", ".tmp")
PATH_KEYS = ("_name_or_path", "name_or_path")  # config keys transformers fills with the load path


@dataclass(frozen=True)
class SageMakerTarget:
    """The `package.sagemaker` section: the serving image the packages are built for and what it
    already has installed (exact versions). A package needs nothing else at container start."""

    image: str
    python: str
    provides: dict[str, str]

    @classmethod
    def from_mapping(cls, values: Any) -> SageMakerTarget:
        return cls(
            str(values["image"]),
            str(values["python"]),
            {str(k): str(v) for k, v in values["provides"].items()},
        )

    def to_dict(self) -> dict[str, Any]:
        return {"image": self.image, "python": self.python, "provides": dict(sorted(self.provides.items()))}


@dataclass(frozen=True)
class Packager:
    """How one model kind goes into a tarball."""

    kind: str
    detect: Callable[[Path], bool]
    files: Callable[[Path], list[tuple[str, Path]]]  # (name in the tarball, file on disk)
    needs: tuple[str, ...]  # distributions its model class imports (beyond numpy)


def _walk(root: Path, prefix: str = "") -> list[tuple[str, Path]]:
    files = []
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root)
        if not path.is_file() or set(rel.parts[:-1]) & SKIP_DIRS or path.name.endswith(SKIP_SUFFIXES):
            continue
        if not prefix and rel.parts[0] in ("code", "model_info.json", "onnx", "calibration.json"):
            continue  # we write our own
        files.append((prefix + rel.as_posix(), path))
    return files


def _joblib_file(path: Path) -> Path:
    return path / "model.joblib" if path.is_dir() else path


PACKAGERS: dict[str, Packager] = {
    "sklearn": Packager(
        "sklearn",
        lambda p: (p.is_file() and p.suffix == ".joblib") or (p.is_dir() and (p / "model.joblib").exists()),
        lambda p: [("model.joblib", _joblib_file(p))],
        ("scikit-learn", "joblib"),
    ),
    "autogluon": Packager(
        "autogluon",
        lambda p: p.is_dir() and (p / "predictor.pkl").exists(),
        lambda p: _walk(p, "autogluon/"),
        ("autogluon.tabular",),
    ),
    "huggingface": Packager(
        "huggingface",
        lambda p: p.is_dir() and (p / "config.json").exists(),
        lambda p: _walk(p),
        ("torch", "transformers", "tokenizers"),
    ),
}


def _ensemble_members(path: Path) -> list[tuple[str, Path]]:
    """(name, model path) of each member of the stacked ensemble at `path`, in the stacker's order."""
    spec = json.loads((path / "stacker.json").read_text())
    return [(name, Path(spec["member_paths"][name])) for name in spec["stacker"]["members"]]


def _ensemble_files(path: Path) -> list[tuple[str, Path]]:
    """The stacker and each member in its own kind's layout under members/<name>/ (stacker.json
    itself is written without the build machine's member paths, in build_package)."""
    files = [("stacker.json", path / "stacker.json")]
    for name, member in _ensemble_members(path):
        kind = model_kind(member)
        files += [(f"members/{name}/{n}", p) for n, p in PACKAGERS[kind].files(member)]
    return files


# The stacked ensemble (models/ensemble.py): its members' kinds, in sub-directories.
PACKAGERS["ensemble"] = Packager(
    "ensemble",
    lambda p: p.is_dir() and (p / "stacker.json").exists(),
    _ensemble_files,
    tuple(dict.fromkeys(d for packager in PACKAGERS.values() for d in packager.needs)),
)


def model_kind(model_path: str | Path) -> str:
    """The packager kind of a model: a .joblib pipeline, an AutoGluon predictor directory or a
    Hugging Face save_pretrained directory."""
    path = Path(model_path)
    for kind, packager in PACKAGERS.items():
        if packager.detect(path):
            return kind
    raise ReviewpipeError(
        f"{model_path} is neither a .joblib pipeline, an AutoGluon predictor directory (predictor.pkl) "
        "nor a Hugging Face save_pretrained directory (config.json); train the model first "
        "(`dvc repro baseline` / `dvc repro automl` / `dvc repro bert`)."
    )


def _version_of(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def requirements_for(kind: str, target: SageMakerTarget | None = None) -> list[str]:
    """Pinned distributions the container must install: what the model kind imports, at the versions
    it was built with, minus what the target image provides (at any version: the model files are
    written to load with the image's own versions)."""
    provided = set(target.provides) if target else set()
    return [f"{d}=={v}" for d in PACKAGERS[kind].needs if d not in provided and (v := _version_of(d))]


def content_hash(files: list[tuple[str, Path]]) -> str:
    digest = hashlib.sha256()
    for name, path in files:
        digest.update(name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def _portable_json(data: bytes, model_name: str) -> bytes:
    """A Hugging Face JSON file without the build machine's paths (transformers writes the directory
    it loaded from into `_name_or_path`, also inside nested encoder configs)."""

    def scrub(node: Any) -> Any:
        if isinstance(node, dict):
            return {
                k: (model_name if k in PATH_KEYS and isinstance(v, str) else scrub(v))
                for k, v in node.items()
            }
        if isinstance(node, list):
            return [scrub(v) for v in node]
        return node

    obj = json.loads(data)
    return (json.dumps(scrub(obj), indent=2, sort_keys=True) + "\n").encode()


def build_package(
    model_path: str | Path,
    out_path: str | Path,
    *,
    model_name: str,
    model_version: str | None = None,
    registry: dict[str, Any] | None = None,
    max_length: int | None = None,
    calibration: dict[str, Any] | None = None,
    target: SageMakerTarget | None = None,
    onnx: Any = None,
    calibration_texts: Sequence[str] = (),
) -> dict[str, Any]:
    """Write a SageMaker model.tar.gz for `model_path` at `out_path`; returns its model_info.

    `model_version` defaults to `<model_name>-<first 12 hex of the model's content hash>`.
    `onnx` (an onnx_build.OnnxSettings) with `export` true adds the fp32 and static int8 ONNX graphs
    of a Hugging Face model, the int8 one calibrated on `calibration_texts`.
    """
    model_path = Path(model_path)
    kind = model_kind(model_path)
    files = PACKAGERS[kind].files(model_path)
    source_hash = content_hash(files)
    info: dict[str, Any] = {
        "model_name": model_name,
        "model_version": model_version or f"{model_name}-{source_hash[:12]}",
        "kind": kind,
        "labels": list(SENTIMENTS),
        "max_length": max_length,
        "source_hash": source_hash,
        "registry": registry or None,
        "packaged_by": f"reviewpipe {__version__}",
        "calibrated": calibration is not None,
        "sagemaker": target.to_dict() if target else None,
    }
    requirements = requirements_for(kind, target)
    entries: dict[str, Callable[[], bytes]] = {name: path.read_bytes for name, path in files}
    if kind in ("huggingface", "ensemble"):
        for name, path in files:
            top = "/" not in name or (kind == "ensemble" and name.count("/") == 2)  # an HF member's root
            if name.endswith(".json") and top and b"name_or_path" in path.read_bytes():
                entries[name] = lambda path=path: _portable_json(path.read_bytes(), model_name)
    if kind == "ensemble":  # the stacker only: member paths are the build machine's
        stacker = json.loads((model_path / "stacker.json").read_text())["stacker"]
        entries["stacker.json"] = lambda: json.dumps({"stacker": stacker}, indent=2, sort_keys=True).encode()
    with tempfile.TemporaryDirectory(prefix="reviewpipe-package-") as scratch:
        hf_models = _hugging_face_models(kind, model_path)
        if hf_models and onnx is not None and onnx.export:
            from reviewpipe.serving.onnx_build import build_onnx

            shipped = []
            for prefix, hf_dir in hf_models:  # the model itself, or each Hugging Face member of an ensemble
                graphs = build_onnx(hf_dir, Path(scratch) / prefix / "onnx", calibration_texts, onnx)
                for graph in graphs.values():
                    entries[f"{prefix}onnx/{graph.name}"] = graph.read_bytes
                    shipped.append(f"{prefix}onnx/{graph.name}")
            info["onnx"] = {
                "files": sorted(shipped),
                "calibration_rows": min(len(calibration_texts), onnx.calibration_rows),
                "quant_format": onnx.quant_format,
            }
        extra = {
            "model_info.json": json.dumps(info, indent=2, sort_keys=True).encode() + b"\n",
            "code/inference.py": INFERENCE_SOURCE.read_bytes(),
            "code/requirements.txt": "".join(f"{r}\n" for r in requirements).encode(),
        }
        if calibration is not None:
            keys = ("temperature", "log_prior_shift", "decision_weights", "fitted_on")
            extra["calibration.json"] = json.dumps(
                {k: calibration[k] for k in keys}, indent=2, sort_keys=True
            ).encode()
        for name, data in extra.items():
            entries[name] = lambda data=data: data
        if not requirements:
            del entries["code/requirements.txt"]  # the image has everything: the toolkit installs nothing
        _write_tarball(Path(out_path), entries)
    return info


def _hugging_face_models(kind: str, model_path: Path) -> list[tuple[str, Path]]:
    """(prefix in the tarball, directory) of each Hugging Face model a package holds: the model itself,
    or an ensemble's Hugging Face members (members/<name>/), whose ONNX graphs ship beside them."""
    if kind == "huggingface":
        return [("", model_path)]
    if kind == "ensemble":
        members = _ensemble_members(model_path)
        return [(f"members/{name}/", path) for name, path in members if model_kind(path) == "huggingface"]
    return []


def build_options(section: Any, options: Any = None) -> dict[str, Any]:
    """build_package's keyword settings from the `package` params section: the SageMaker target,
    the ONNX graphs and their calibration reviews (read here), the token limit."""
    import pandas as pd

    from reviewpipe import storage
    from reviewpipe.serving.onnx_build import OnnxSettings

    onnx = OnnxSettings.from_mapping(section["onnx"])
    calibration: list[str] = []
    if onnx.export:
        uri = section["onnx"]["calibration_uri"]
        storage.require_exists(
            uri, "the calibration reviews (package.onnx.calibration_uri)", "Run `dvc repro prepare`.", options
        )
        fs, path = storage.get_fs(uri, options)
        with fs.open(path, "rb") as f:
            frame = pd.read_parquet(f, columns=["review_body"])
        calibration = frame["review_body"].astype(str).head(onnx.calibration_rows).tolist()
    return {
        "target": SageMakerTarget.from_mapping(section["sagemaker"]),
        "onnx": onnx,
        "calibration_texts": calibration,
        "max_length": section["max_length"],
    }


def _write_tarball(out_path: Path, entries: dict[str, Callable[[], bytes]]) -> None:
    """A gzip'd tar with sorted members, mode 0644, mtime 0 and no owner names; published atomically."""
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_name(f".{out_path.name}.tmp")
    with (
        open(tmp, "wb") as raw,
        gzip.GzipFile(fileobj=raw, mode="wb", mtime=0, filename="") as gz,
        tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar,
    ):
        for name in sorted(entries):
            data = entries[name]()
            member = tarfile.TarInfo(name)
            member.size, member.mode, member.mtime = len(data), 0o644, 0
            tar.addfile(member, io.BytesIO(data))
    os.replace(tmp, out_path)


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def unpack_package(path: str | Path, into: str | Path | None = None, *, max_unpacked_bytes: int) -> Path:
    """A model directory for `path`: a tarball is extracted (safely) into `into` or a new temp dir;
    a directory is returned as is. Raises ReviewpipeError when it is neither, or when its files
    would take more than `max_unpacked_bytes` (serve.max_package_bytes) on disk."""
    path = Path(path)
    if path.is_dir():
        if not (path / "code" / "inference.py").exists():
            raise ReviewpipeError(
                f"{path} has no code/inference.py; point at a package built by "
                "`dvc repro package` (a model.tar.gz or its unpacked directory)"
            )
        return path
    if not path.is_file() or not tarfile.is_tarfile(path):
        raise ReviewpipeError(
            f"{path} is not a model.tar.gz or a model directory; build one with `dvc repro package`"
        )
    with tarfile.open(path, "r:*") as tar:
        total = 0
        for member in tar:  # headers only: sizes are known before anything is written
            total += max(member.size, 0)
            if total > max_unpacked_bytes:
                raise ReviewpipeError(
                    f"{path} unpacks to more than {max_unpacked_bytes} bytes (serve.max_package_bytes); "
                    "raise that limit if this package is really that large"
                )
    target = Path(into) if into else Path(tempfile.mkdtemp(prefix="reviewpipe-model-"))
    target.mkdir(parents=True, exist_ok=True)
    try:
        with tarfile.open(path, "r:*") as tar:
            tar.extractall(target, filter="data")  # refuses absolute paths, .., links out of the dir
        if not (target / "code" / "inference.py").exists():
            raise ReviewpipeError(
                f"{path} has no code/inference.py; it is not a reviewpipe/SageMaker package"
            )
    except BaseException:
        if into is None:
            shutil.rmtree(target, ignore_errors=True)
        raise
    return target
