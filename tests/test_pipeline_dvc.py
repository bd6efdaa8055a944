"""The real DVC pipeline, end to end, in a temporary copy of the repository (synthetic raw data)."""

from __future__ import annotations

import filecmp
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers.pipeline import RAW, copy_repo  # noqa: F401  (RAW: test_sweep_dvc imports it here)

DATA_STAGES = ["ingest", "catalog", "explore"]


def _run(cmd: list[str], cwd: Path, env: dict[str, str] | None = None) -> str:
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout + proc.stderr


def _venv_env() -> dict[str, str]:
    bindir = str(Path(sys.executable).parent)  # dvc and reviewpipe live beside this python
    return {**os.environ, "PATH": f"{bindir}{os.pathsep}{os.environ['PATH']}", "DVC_NO_ANALYTICS": "1"}


@pytest.fixture(scope="module")
def repo_copy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Tracked and untracked-not-ignored files of this checkout, as a fresh git repo + synthetic raw."""
    return copy_repo(tmp_path_factory.mktemp("repo") / "r")


def test_repro_data_stages_then_noop(repo_copy: Path) -> None:
    env = _venv_env()
    _run(["dvc", "repro", *DATA_STAGES], repo_copy, env)
    assert (repo_copy / "reports/explore/index.html").exists()
    assert (repo_copy / "data/catalog.duckdb").exists()
    second = _run(["dvc", "repro", *DATA_STAGES], repo_copy, env)
    assert "didn't change, skipping" in second or "up to date" in second
    assert "Running stage" not in second


def test_exp_run_override_changes_partitioning(repo_copy: Path) -> None:
    env = _venv_env()
    _run(["dvc", "exp", "run", "-S", "lake.partition_by=department_name", "ingest"], repo_copy, env)
    parts = {p.name.split("=")[0] for p in (repo_copy / "data/lake/reviews").iterdir() if "=" in p.name}
    assert parts == {"department_name"}
    # DVC wrote the composed override into params.yaml (Hydra composition, not a hand edit).
    assert "partition_by: department_name" in (repo_copy / "params.yaml").read_text()


def test_s3_remote_push_pull_roundtrip(repo_copy: Path, moto_server: str, s3_bucket: str) -> None:
    env = _venv_env()
    _run(["dvc", "repro", "ingest"], repo_copy, env)
    _run(["dvc", "remote", "add", "-f", "store", f"s3://{s3_bucket}/dvcstore"], repo_copy, env)
    _run(["dvc", "remote", "modify", "store", "endpointurl", moto_server], repo_copy, env)
    _run(["dvc", "push", "-r", "store", "ingest"], repo_copy, env)
    before = repo_copy.parent / "lake_before"
    shutil.copytree(repo_copy / "data/lake", before)
    shutil.rmtree(repo_copy / ".dvc/cache")
    shutil.rmtree(repo_copy / "data/lake")
    _run(["dvc", "pull", "-r", "store", "ingest"], repo_copy, env)
    cmp = filecmp.dircmp(before, repo_copy / "data/lake")
    assert _same_tree(cmp), "pulled lake differs from the pushed one"


def _same_tree(cmp: filecmp.dircmp) -> bool:
    if cmp.left_only or cmp.right_only or cmp.diff_files or cmp.funny_files:
        return False
    # dircmp compares shallowly; compare bytes for real.
    _, mismatch, errors = filecmp.cmpfiles(cmp.left, cmp.right, cmp.common_files, shallow=False)
    return not mismatch and not errors and all(_same_tree(sub) for sub in cmp.subdirs.values())
