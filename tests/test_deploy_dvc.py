"""`dvc repro deploy` with deploy.target=local, as a user runs it: the stage returns, the server keeps
serving, a second repro is a no-op that keeps the same server, and `reviewpipe deploy delete` stops it."""

from __future__ import annotations

import json
import os
import shutil
import signal
from pathlib import Path

import pytest
import yaml
from omegaconf import OmegaConf

from reviewpipe import registry
from reviewpipe.deploy.local import _alive
from tests.conftest import REPO_ROOT
from tests.helpers.params import conf_section
from tests.test_deploy_sagemaker import baseline_packages
from tests.test_pipeline_dvc import _run, _venv_env
from tests.test_registry import register_package
from tests.test_serve import invoke, request


@pytest.mark.slow
def test_dvc_repro_deploys_once_and_leaves_the_server_running(tmp_path: Path) -> None:
    env = _venv_env()
    repo = tmp_path / "repo"
    stage = yaml.safe_load((REPO_ROOT / "dvc.yaml").read_text())["stages"]["deploy"]
    for dep in stage["deps"]:  # the stage's code dependencies, so DVC can hash them
        src = REPO_ROOT / dep
        if src.is_dir():
            shutil.copytree(src, repo / dep, ignore=shutil.ignore_patterns("__pycache__"))
        elif src.is_file():
            (repo / dep).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, repo / dep)
    packages = baseline_packages(repo / "models" / "package", ("model",))
    reg = registry.Registry(str(repo / "models" / "registry"))  # deploy serves Approved versions only
    register_package(reg, packages["model"], "baseline", registry.APPROVED)
    (repo / "dvc.yaml").write_text(yaml.safe_dump({"stages": {"deploy": stage}}, sort_keys=False))
    deploy = conf_section("deploy")
    deploy.local.port = 0
    OmegaConf.save(
        OmegaConf.create(
            {
                "deploy": deploy,
                "serve": {"quantize": "none", "max_wait_ms": 2},
                "register": {"registry_uri": "models/registry"},
                "package": {"out_dir": "models/package"},  # dvc.yaml's deps interpolate it
                "storage": {},
            }
        ),
        repo / "params.yaml",
    )
    assert [v.package for v in deploy.variants] == [str(p.relative_to(repo)) for p in packages.values()]
    _run(["git", "init", "-q"], repo)
    _run(["dvc", "init", "-q"], repo, env)
    pid = None
    try:
        first = _run(["dvc", "repro", "deploy"], repo, env)  # pipes captured: must return all the same
        assert "local server at http://127.0.0.1:" in first
        state = json.loads((repo / "models" / "deploy" / "deployment.json").read_text())
        pid, url = state["pid"], state["url"]
        assert state["registry_versions"]["champion"]["version"] == 1
        assert _alive(pid) and request(url)[0] == 200
        assert invoke(url, {"inputs": "love it"})[0] == 200
        lock = yaml.safe_load((repo / "dvc.lock").read_text())["stages"]["deploy"]
        assert [o["path"] for o in lock["outs"]] == ["models/deploy/deployment.json"]

        second = _run(["dvc", "repro", "deploy"], repo, env)
        assert "didn't change, skipping" in second and "Running stage" not in second
        assert _alive(pid) and request(url)[0] == 200

        # a forced re-run keeps the same healthy server (same packages, weights, settings)
        _run(["dvc", "repro", "-f", "deploy"], repo, env)
        assert json.loads((repo / "models" / "deploy" / "deployment.json").read_text())["pid"] == pid

        out = _run(["reviewpipe", "deploy", "delete"], repo, env)
        assert "deleted: local server" in out and not _alive(pid)
        assert "deleted" in _run(["dvc", "status", "deploy"], repo, env)  # the state file is gone
    finally:
        if pid and _alive(pid):
            os.kill(pid, signal.SIGKILL)
