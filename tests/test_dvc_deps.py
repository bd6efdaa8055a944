"""dvc.yaml lists every file of src/reviewpipe that a stage runs, so a code change reruns its stages.

For each stage, the import closure of `reviewpipe.cli` -> `reviewpipe.stages` -> `reviewpipe.stages.NAME`
(what `reviewpipe stage NAME` executes, lazy imports included; see tests/helpers/imports.py) must be
covered by the stage's deps in dvc.yaml, each file by itself or by a listed folder above it.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT
from tests.helpers.imports import import_closure

SRC = REPO_ROOT / "src"
ENTRY = ("reviewpipe.cli", "reviewpipe.stages")  # `reviewpipe stage NAME` runs through these


@pytest.fixture(scope="module")
def stages() -> dict[str, tuple[str, list[str]]]:
    """stage name -> (cmd, deps as written, params interpolated), resolved by DVC itself."""
    from dvc.repo import Repo

    with Repo(str(REPO_ROOT)) as repo:
        return {s.name: (s.cmd, [d.def_path for d in s.deps]) for s in repo.index.stages}


def test_every_stage_runs_through_reviewpipe_stage(stages: dict[str, tuple[str, list[str]]]) -> None:
    wrong = {name: cmd for name, (cmd, _) in stages.items() if cmd != f"reviewpipe stage {name}"}
    assert not wrong, f"each stage's cmd must be `reviewpipe stage NAME` (stages/NAME.py): {wrong}"
    missing = [name for name in stages if not (SRC / "reviewpipe" / "stages" / f"{name}.py").is_file()]
    assert not missing, f"no src/reviewpipe/stages/NAME.py for stage(s) {missing}"


def _covered(path: str, deps: list[str]) -> bool:
    return any(path == d or path.startswith(d.rstrip("/") + "/") for d in deps)


def test_stage_deps_cover_the_code_they_run(stages: dict[str, tuple[str, list[str]]]) -> None:
    missing: dict[str, list[str]] = {}
    for name, (_, deps) in sorted(stages.items()):
        files = import_closure(SRC, [*ENTRY, f"reviewpipe.stages.{name}"])
        needed = sorted(str(f.relative_to(REPO_ROOT)) for f in files)
        if uncovered := [path for path in needed if not _covered(path, deps)]:
            missing[name] = uncovered
    if missing:
        pytest.fail(
            "dvc.yaml deps miss code their stage runs (a change to it would not rerun the stage).\n"
            "Add these lines (or a folder above them) to dvc.yaml:\n"
            + "\n".join(
                f"  stages.{name}.deps:\n" + "\n".join(f"    - {path}" for path in paths)
                for name, paths in missing.items()
            ),
            pytrace=False,
        )


def test_code_deps_exist(stages: dict[str, tuple[str, list[str]]]) -> None:
    """A renamed or deleted module left in dvc.yaml makes `dvc repro` fail on a missing dependency."""
    stale = [
        f"  stages.{name}.deps lists {d}, which does not exist: remove or rename it"
        for name, (_, deps) in sorted(stages.items())
        for d in deps
        if d.startswith("src/") and not (REPO_ROOT / d).exists()
    ]
    assert not stale, "dvc.yaml names code that is gone:\n" + "\n".join(stale)


def test_closure_follows_lazy_relative_and_package_imports(tmp_path: Path) -> None:
    """The closure itself: lazy (in-function) and relative imports, parent __init__ files, data files read
    by name; imports only for type checkers are left out."""
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text('"""sub."""\n')
    (pkg / "entry.py").write_text(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from pkg import typing_only\n"
        "def run():\n    from .sub import lazy\n    return open('page.html')\n"
    )
    (pkg / "sub" / "lazy.py").write_text("import pkg.sub.deeper\n")
    (pkg / "sub" / "deeper.py").write_text("import json\n")
    (pkg / "typing_only.py").write_text("")
    (pkg / "page.html").write_text("<p>")
    (pkg / "unused.py").write_text("")
    found = {str(p.relative_to(tmp_path)) for p in import_closure(tmp_path, ["pkg.entry"], package="pkg")}
    assert found == {  # pkg/__init__.py is empty: it runs nothing
        "pkg/entry.py",
        "pkg/page.html",
        "pkg/sub/__init__.py",
        "pkg/sub/lazy.py",
        "pkg/sub/deeper.py",
    }


def test_python_bytecode_never_changes_a_stage(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Running the code writes __pycache__ into the source folders that stages list as deps; with the
    project's .dvcignore that must not make DVC see the stage as changed (nor a clone without them)."""
    import shutil

    from dvc.repo import Repo

    monkeypatch.chdir(tmp_path)  # DVC resolves stage targets from the working directory
    Repo.init(str(tmp_path), no_scm=True)
    shutil.copy(REPO_ROOT / ".dvcignore", tmp_path / ".dvcignore")
    package = tmp_path / "src" / "pkg"
    package.mkdir(parents=True)
    (package / "mod.py").write_text("X = 1\n")
    (tmp_path / "dvc.yaml").write_text(
        "stages:\n  run:\n    cmd: python -c pass\n    deps:\n      - src/pkg\n"
    )
    with Repo(str(tmp_path)) as repo:
        repo.reproduce("run")
    (package / "__pycache__").mkdir()
    (package / "__pycache__" / "mod.cpython-311.pyc").write_bytes(b"\x00bytecode")
    with Repo(str(tmp_path)) as repo:
        assert repo.status() == {}
    (package / "mod.py").write_text("X = 2\n")
    with Repo(str(tmp_path)) as repo:
        assert repo.status() == {"run": [{"changed deps": {"src/pkg": "modified"}}]}
