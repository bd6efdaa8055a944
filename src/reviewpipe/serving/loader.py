"""Load a model package the way SageMaker's inference toolkit does, and only one we trust.

A package runs code when it loads: its `code/inference.py`, and through it joblib pickles,
AutoGluon pickles or Hugging Face remote code. So `serve`, `predict`, `deploy` and `score_package`
load a tarball only when its sha256 is recorded in the model registry, or when the caller passed
`--trust` (`verify_package`). The handler is imported from its file under a module name of its
own; `code/` is never put on `sys.path`, so nothing else in the process can import from a package.

`load_package` is the one loader: unpack (size-capped, `filter="data"`), import the handler,
`model_fn(model_dir)` under the Environment a SageMaker endpoint would carry.
"""

from __future__ import annotations

import importlib.util
import itertools
import json
import os
import re
import shutil
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from reviewpipe.errors import ReviewpipeError
from reviewpipe.serving.package import file_sha256, unpack_package

HANDLER_FUNCTIONS = ("model_fn", "input_fn", "predict_fn", "output_fn")
_module_ids = itertools.count()
_SHA256 = re.compile(r"[0-9a-f]{64}")


@contextmanager
def environment(values: Mapping[str, str] | None) -> Iterator[None]:
    """`values` set in os.environ for the block (what an endpoint's Environment would carry)."""
    values = dict(values or {})
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def load_handler(code_file: str | Path, name: str = "package") -> ModuleType:
    """Import `code_file` (a package's code/inference.py) as a fresh module with a unique name.

    Not registered in sys.modules and `code/` not added to sys.path: two packages never share a
    module, and no later `import` in this process can pick up a package's files."""
    code_file = Path(code_file)
    safe = re.sub(r"\W", "_", name)
    spec = importlib.util.spec_from_file_location(f"reviewpipe_handler_{safe}_{next(_module_ids)}", code_file)
    if spec is None or spec.loader is None:
        raise ReviewpipeError(f"{code_file} cannot be imported as a Python module")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    missing = [fn for fn in HANDLER_FUNCTIONS if not callable(getattr(module, fn, None))]
    if missing:
        raise ReviewpipeError(f"{code_file} does not define {', '.join(f'{m}()' for m in missing)}")
    return module


# ---------------------------------------------------------------- trust


def registered_sha256s(registry_uri: str, options: Any = None) -> set[str]:
    """Every package sha256 the registry at `registry_uri` records (none when it does not exist)."""
    from reviewpipe import registry, storage

    if not storage.exists(registry_uri, options):
        return set()
    found = set()
    for entry in registry.Registry(registry_uri, options).list():
        value = getattr(entry, "sha256", None)  # versions registered before packages were kept have none
        if isinstance(value, str) and _SHA256.fullmatch(value):
            found.add(value)
    return found


def add_trust_arguments(parser: Any) -> None:
    """`--trust` and `--registry` for the commands that load packages (serve, predict)."""
    parser.add_argument(
        "--registry",
        help="model registry whose recorded package sha256s may be loaded (default: register.registry_uri)",
    )
    parser.add_argument(
        "--trust",
        action="store_true",
        help="load the package even if the registry does not record its sha256 (it runs its own code)",
    )


def check_trusted(
    paths: Iterable[str | Path], args: Any, params: Mapping[str, Any], options: Any = None
) -> None:
    """verify_package for each path, with the command line's --trust / --registry (or the params')."""
    registry_uri = args.registry or dict(params.get("register") or {}).get("registry_uri")
    for path in paths:
        verify_package(path, trust=args.trust, registry_uri=registry_uri, options=options)


def verify_package(
    source: str | Path,
    *,
    trust: bool,
    registry_uri: str | None = None,
    known_sha256s: Iterable[str] | None = None,
    options: Any = None,
) -> str | None:
    """The tarball's sha256 when the registry (or `known_sha256s`) records it; ReviewpipeError otherwise.

    With `trust` the check is skipped (the caller vouches for the file) and the sha256 of a tarball
    is still returned. An unpacked directory has no sha256 to check, so it needs `trust`."""
    path = Path(source)
    if not path.exists():
        raise ReviewpipeError(f"model package {source} does not exist; build it with `dvc repro package`")
    sha256 = file_sha256(path) if path.is_file() else None
    if trust:
        return sha256
    if sha256 is None:
        raise ReviewpipeError(
            f"{source} is an unpacked directory: its code cannot be checked against the registry's "
            "sha256. Load the model.tar.gz instead, or pass --trust if you vouch for this directory"
        )
    known = set(known_sha256s or ())
    if registry_uri:
        known |= registered_sha256s(registry_uri, options)
    if sha256 not in known:
        where = f"the registry at {registry_uri}" if registry_uri else "the list of approved packages"
        raise ReviewpipeError(
            f"{source} (sha256 {sha256[:16]}…) is not recorded in {where}. A package runs its own "
            "code when loaded: build it with `dvc repro package`, or pass --trust if you built it yourself"
        )
    return sha256


# ---------------------------------------------------------------- loading


@dataclass
class LoadedPackage:
    """A package's handler module and its loaded model (call `close()` to remove the unpacked copy)."""

    source: Path
    model_dir: Path
    module: ModuleType
    model: Any
    info: dict[str, Any] = field(default_factory=dict)
    sha256: str | None = None
    temp_dir: Path | None = None

    @property
    def version(self) -> str:
        return str(getattr(self.model, "version", None) or self.info.get("model_version") or "unversioned")

    def close(self) -> None:
        if self.temp_dir is not None:
            shutil.rmtree(self.temp_dir, ignore_errors=True)
            self.temp_dir = None


def load_package(
    source: str | Path,
    *,
    max_unpacked_bytes: int,
    env: Mapping[str, str] | None = None,
    name: str = "package",
    sha256: str | None = None,
) -> LoadedPackage:
    """Unpack `source` (a model.tar.gz, or its unpacked directory), import its code/inference.py and
    call `model_fn(model_dir)` with `env` set, as a SageMaker endpoint's Environment would be.

    Call `verify_package` first: this function runs the package's code."""
    source = Path(source)
    model_dir = unpack_package(source, max_unpacked_bytes=max_unpacked_bytes)
    temp_dir = model_dir if model_dir != source else None
    try:
        module = load_handler(model_dir / "code" / "inference.py", name)
        info_path = model_dir / "model_info.json"
        info = json.loads(info_path.read_text()) if info_path.exists() else {}
        with environment(env):
            model = module.model_fn(str(model_dir))
    except BaseException:
        if temp_dir is not None:
            shutil.rmtree(temp_dir, ignore_errors=True)
        raise
    return LoadedPackage(source, model_dir, module, model, info, sha256, temp_dir)
