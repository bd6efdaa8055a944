"""The lifecycle controls bind, with real `dvc repro` runs on synthetic data (baseline only, so it
runs in minutes): evaluate → register (gate) → package (deployable version) → deploy (local server).

Each control is checked by the NEXT step obeying it: a rejected version is not packaged and the
previously approved one keeps serving; a manual approval followed by `dvc repro` packages and serves
that version; with nothing approved, `package` fails and says how to fix it.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
from pathlib import Path
from typing import Any

import pytest
from omegaconf import OmegaConf
from ruamel.yaml import YAML

from reviewpipe import registry
from reviewpipe.deploy.local import _alive
from tests.test_pipeline_dvc import _run, _venv_env, repo_copy  # noqa: F401  (repo_copy is a fixture)
from tests.test_serve import invoke

UNTRAINED = ("automl", "bert", "ensemble")  # not trained here: their stages and their deps go


def _baseline_only(repo: Path) -> None:
    """dvc.yaml without the automl/BERT stages (and evaluate's/register's deps on their models)."""
    yaml = YAML()
    pipeline = yaml.load((repo / "dvc.yaml").read_text())
    stages = pipeline["stages"]
    for name in (*UNTRAINED, "features", "explain", "monitor_baseline"):
        stages.pop(name, None)
    for name in ("evaluate", "register"):
        stages[name]["deps"] = [
            d for d in stages[name]["deps"] if not any(f"model_paths.{m}" in str(d) for m in UNTRAINED)
        ]
    yaml.dump(pipeline, repo / "dvc.yaml")
    (repo / "dvc.lock").unlink(missing_ok=True)


def _set_params(repo: Path, **values: Any) -> None:
    params = OmegaConf.load(repo / "params.yaml")
    for key, value in values.items():
        OmegaConf.update(params, key.replace("__", "."), value, merge=False)
    OmegaConf.save(params, repo / "params.yaml")


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _served(repo: Path) -> dict[str, Any]:
    state = json.loads((repo / "models/deploy/deployment.json").read_text())
    return {"pid": state["pid"], "url": state["url"], **state["registry_versions"]["champion"]}


@pytest.mark.slow
def test_gate_approval_package_and_deploy_bind(repo_copy: Path) -> None:  # noqa: F811
    env = _venv_env()
    repo = repo_copy
    _baseline_only(repo)
    _set_params(
        repo,
        evaluate__models=["baseline"],
        register__candidates=["baseline"],
        register__min_metric=0.0,
        register__fairness__min_support=10,
        evaluate__fairness__min_group_rows=5,
        deploy__local__port=0,
        serve__quantize="none",
        serve__max_wait_ms=2,
    )
    reg = registry.Registry(str(repo / "models/registry"))
    shipped = repo / "models/package/model.tar.gz"
    pid = None
    try:
        # 1. The gate passes (approval: auto): version 1 is approved, packaged and served.
        out = _run(["dvc", "repro", "deploy"], repo, env)
        assert "version 1 passed the gate and is approved" in out
        served = _served(repo)
        pid = served["pid"]
        assert served["version"] == 1 and served["sha256"] == reg.get(1).sha256 == _sha256(shipped)
        assert invoke(served["url"], {"inputs": "love it"})[0] == 200
        again = _run(["dvc", "repro", "deploy"], repo, env)
        assert "Running stage" not in again  # the registry write inside the run left the lock consistent

        # 2. A retrained model the gate rejects: nothing new is packaged or deployed.
        _set_params(repo, baseline__classifier__C=0.05, register__min_metric=0.99)  # default C: 0.3
        out = _run(["dvc", "repro", "deploy"], repo, env)
        assert reg.get(2).status == registry.REJECTED and reg.get(2).sha256 != reg.get(1).sha256
        assert "version 2 REJECTED: served validation macro_f1" in out
        assert "version 1 (baseline, Approved) keeps serving" in out
        assert _sha256(shipped) == reg.get(1).sha256
        assert "Running stage 'deploy'" not in out  # the same package: the server is untouched
        assert _served(repo)["version"] == 1 and _alive(pid)

        # 3. A person approves version 2 anyway: `dvc repro` packages and serves it (register does not rerun).
        out = _run(["reviewpipe", "registry", "approve", "2", "--force", "--reason", "reviewed"], repo, env)
        assert "deployable: version 2 (baseline, Approved)" in out
        out = _run(["dvc", "repro", "deploy"], repo, env)
        assert "Running stage 'register'" not in out and "Running stage 'package'" in out
        served = _served(repo)
        assert served["version"] == 2 and _sha256(shipped) == reg.get(2).sha256 == served["sha256"]
        pid = served["pid"]

        # 4. Manual approval: a version that passes waits; version 2 keeps serving until approved.
        _set_params(repo, baseline__classifier__C=3.0, register__min_metric=0.0, register__approval="manual")
        out = _run(["dvc", "repro", "deploy"], repo, env)
        assert reg.get(3).status == registry.PENDING
        assert (
            "approve it with `reviewpipe registry approve 3`; version 2 (baseline, Approved) keeps serving"
            in out
        )
        assert _served(repo)["version"] == 2 and _sha256(shipped) == reg.get(2).sha256
        _run(["reviewpipe", "registry", "approve", "3"], repo, env)
        _run(["dvc", "repro", "deploy"], repo, env)
        served = _served(repo)
        assert served["version"] == 3 and _sha256(shipped) == reg.get(3).sha256
        pid = served["pid"]
        manifest = json.loads((repo / "models/package/manifest.json").read_text())
        assert manifest["model"]["registry"]["version"] == 3 and manifest["model"]["kind"] == "sklearn"

        # 5. Nothing approved: package fails and says how to approve one or change the gate.
        for version in ("3", "2", "1"):
            _run(["reviewpipe", "registry", "reject", version, "--reason", "audit"], repo, env)
        proc = subprocess.run(["dvc", "repro", "package"], cwd=repo, env=env, capture_output=True, text=True)
        assert proc.returncode != 0
        message = proc.stdout + proc.stderr
        assert "no deployable version" in message and "reviewpipe registry approve N" in message
        assert "change the gate in conf/register/" in message
    finally:
        state = repo / "models/deploy/deployment.json"
        if state.exists():
            _run(["reviewpipe", "deploy", "delete"], repo, env)
        if pid and _alive(pid):
            os.kill(pid, signal.SIGKILL)
