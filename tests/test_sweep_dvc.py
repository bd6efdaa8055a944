"""DVC grid sweeps (the README's `## Tuning and sweeps` commands) in a temporary copy of the repository:
queue baseline variants with Hydra's sweep syntax, run the queue, read them back, apply one."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from omegaconf import OmegaConf
from ruamel.yaml import YAML

from tests.test_pipeline_dvc import RAW, _run, _venv_env, repo_copy  # noqa: F401  (repo_copy is a fixture)

C_VALUES = (0.01, 1.0, 20.0)
BASELINE_STAGES = ("ingest", "catalog", "prepare", "baseline")


def experiments(show: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """`dvc exp show --json` -> {experiment name: its data (params, metrics)} for the queued experiments."""
    found = {}
    for commit in show:
        for exp in commit.get("experiments") or []:
            for rev in exp.get("revs") or []:
                found[rev["name"]] = rev["data"]
    return found


@pytest.mark.slow
def test_queued_grid_sweep_runs_every_variant_and_applies(repo_copy: Path) -> None:  # noqa: F811
    env = _venv_env()
    # Just the stages the baseline needs: `dvc exp apply` checks out every stage's outputs, and stages
    # that never ran here (BERT, reports, deploy) would have none.
    dvc_yaml = repo_copy / "dvc.yaml"
    pipeline = YAML().load(dvc_yaml.read_text())
    pipeline["stages"] = {name: pipeline["stages"][name] for name in BASELINE_STAGES}
    YAML().dump(pipeline, dvc_yaml)
    (repo_copy / "dvc.lock").unlink(missing_ok=True)
    # The upstream stages run once here; queued experiments start from this commit's dvc.lock and the
    # shared cache, so each one only retrains the baseline.
    _run(["dvc", "repro", "baseline"], repo_copy, env)
    _run(["git", "add", "dvc.yaml", "dvc.lock"], repo_copy)
    _run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "baseline"], repo_copy)

    queued = _run(
        [
            "dvc",
            "exp",
            "run",
            "--queue",
            "baseline",
            "-C",
            str(RAW),
            "-S",
            f"baseline.classifier.C=choice({','.join(map(str, C_VALUES))})",
        ],
        repo_copy,
        env,
    )
    assert queued.count("Queued experiment") == len(C_VALUES)
    _run(["dvc", "exp", "run", "--run-all"], repo_copy, env)

    show = json.loads(_run(["dvc", "exp", "show", "--json"], repo_copy, env))
    runs = experiments(show)
    by_c = {
        data["params"]["params.yaml"]["data"]["baseline"]["classifier"]["C"]: (name, data)
        for name, data in runs.items()
    }
    assert sorted(by_c) == sorted(C_VALUES), f"experiments: {sorted(by_c)}"
    metrics = {c: data["metrics"]["metrics/baseline.json"]["data"] for c, (_, data) in by_c.items()}
    train_f1 = [metrics[c]["train"]["macro_f1"] for c in sorted(C_VALUES)]
    # Weaker regularisation (larger C) fits the training split more closely: each variant really ran.
    assert train_f1 == sorted(train_f1) and len(set(train_f1)) == len(C_VALUES), train_f1
    assert all(0 <= m["validation"]["macro_f1"] <= 1 for m in metrics.values())
    csv = _run(["dvc", "exp", "show", "--csv"], repo_copy, env)
    assert all(name in csv for name, _ in by_c.values())

    # Applying the strongest-fitting variant puts its params.yaml and metrics into the workspace.
    strongest = max(C_VALUES)
    name, _ = by_c[strongest]
    _run(["dvc", "exp", "apply", name], repo_copy, env)
    applied_c = OmegaConf.load(repo_copy / "params.yaml").baseline.classifier.C
    assert applied_c == strongest
    assert json.loads((repo_copy / "metrics/baseline.json").read_text()) == metrics[strongest]
    # conf/ still holds the old value: the README says to copy an applied value there before the next
    # `dvc exp run`, which recomposes params.yaml from conf/.
    conf_c = OmegaConf.load(repo_copy / "conf/baseline/default.yaml").classifier.C
    assert conf_c != strongest
