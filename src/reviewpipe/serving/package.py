"""SageMaker model packages: build (model.tar.gz in the inference-toolkit layout) and unpack.

Layout of every tarball:
    <save_pretrained files> or model.joblib     at the root (SageMaker's /opt/ml/model)
    model_info.json                              name, version, kind, labels, token limit
    code/inference.py                            model_fn, input_fn, predict_fn, output_fn
    code/requirements.txt                        what the container must pip install
    calibration.json                             (optional) evaluate's calibration of this model: served
                                                 probabilities and labels use it (see inference.py)
Tarballs are byte-for-byte reproducible (sorted entries, zero mtimes), so DVC sees a change
only when the model, the handler or the stamped version changes.
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
from importlib import metadata
from pathlib import Path
from typing import Any

from reviewpipe import SENTIMENTS, __version__
from reviewpipe.errors import ReviewpipeError

INFERENCE_SOURCE = Path(__file__).with_name("inference.py")
SKIP_DIRS = {"onnx", "checkpoints", "__pycache__"}  # caches and training state never ship
SKIP_SUFFIXES = (".ckpt", ".tmp")


def model_kind(model_path: str | Path) -> str:
    """`sklearn` for a .joblib file, `huggingface` for a save_pretrained directory."""
    path = Path(model_path)
    if path.is_file() and path.suffix == ".joblib":
        return "sklearn"
    if path.is_dir() and (path / "model.joblib").exists():
        return "sklearn"
    if path.is_dir() and (path / "config.json").exists():
        return "huggingface"
    raise ReviewpipeError(
        f"{model_path} is neither a .joblib pipeline nor a Hugging Face save_pretrained directory "
        "(config.json); train the model first (`dvc repro baseline` / `dvc repro bert`)."
    )


def _model_files(model_path: Path) -> list[tuple[str, Path]]:
    """(name in the tarball, file on disk) for the model's own files."""
    if model_path.is_file():
        return [("model.joblib", model_path)]
    files = []
    for path in sorted(model_path.rglob("*")):
        rel = path.relative_to(model_path)
        if not path.is_file() or set(rel.parts[:-1]) & SKIP_DIRS or path.name.endswith(SKIP_SUFFIXES):
            continue
        if rel.parts[0] in ("code", "model_info.json"):
            continue  # we write our own
        files.append((rel.as_posix(), path))
    return files


def _version_of(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def requirements_for(kind: str) -> list[str]:
    """Pinned extras for the container (torch and numpy come with SageMaker's framework images)."""
    dists = ["transformers", "tokenizers"] if kind == "huggingface" else ["scikit-learn", "joblib"]
    return [f"{d}=={v}" for d in dists if (v := _version_of(d))]


def content_hash(files: list[tuple[str, Path]]) -> str:
    digest = hashlib.sha256()
    for name, path in files:
        digest.update(name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def build_package(
    model_path: str | Path,
    out_path: str | Path,
    *,
    model_name: str,
    model_version: str | None = None,
    registry: dict[str, Any] | None = None,
    max_length: int | None = None,
    calibration: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Write a SageMaker model.tar.gz for `model_path` at `out_path`; returns its model_info.

    `model_version` defaults to `<model_name>-<first 12 hex of the model's content hash>`.
    """
    model_path = Path(model_path)
    kind = model_kind(model_path)
    if kind == "sklearn" and model_path.is_dir():
        model_path = model_path / "model.joblib"
    files = _model_files(model_path)
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
    }
    extra = {
        "model_info.json": json.dumps(info, indent=2, sort_keys=True).encode() + b"\n",
        "code/inference.py": INFERENCE_SOURCE.read_bytes(),
        "code/requirements.txt": "".join(f"{r}\n" for r in requirements_for(kind)).encode(),
    }
    if calibration is not None:
        keys = ("temperature", "log_prior_shift", "decision_weights", "fitted_on")
        extra["calibration.json"] = json.dumps(
            {k: calibration[k] for k in keys}, indent=2, sort_keys=True
        ).encode()
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_name(f".{out_path.name}.tmp")
    with (
        open(tmp, "wb") as raw,
        gzip.GzipFile(fileobj=raw, mode="wb", mtime=0, filename="") as gz,
        tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar,
    ):
        entries = [(name, path.read_bytes) for name, path in files]
        entries += [(name, (lambda data=data: data)) for name, data in extra.items()]
        for name, read in sorted(entries, key=lambda e: e[0]):
            data = read()
            member = tarfile.TarInfo(name)
            member.size, member.mode, member.mtime = len(data), 0o644, 0
            tar.addfile(member, io.BytesIO(data))
    os.replace(tmp, out_path)
    return info


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def unpack_package(path: str | Path, into: str | Path | None = None) -> Path:
    """A model directory for `path`: a tarball is extracted (safely) into `into` or a new temp dir;
    a directory is returned as is. Raises ReviewpipeError when it is neither."""
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
    target = Path(into) if into else Path(tempfile.mkdtemp(prefix="reviewpipe-model-"))
    target.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "r:*") as tar:
        tar.extractall(target, filter="data")  # refuses absolute paths, .., links out of the dir
    if not (target / "code" / "inference.py").exists():
        if into is None:
            shutil.rmtree(target, ignore_errors=True)
        raise ReviewpipeError(f"{path} has no code/inference.py; it is not a reviewpipe/SageMaker package")
    return target
