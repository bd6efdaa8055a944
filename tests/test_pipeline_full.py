"""The whole pipeline through DVC, as users run it, on synthetic data with tiny models (slow: minutes).

1. `dvc repro` of every stage, then `dvc repro -f`: each stage's outputs are byte-identical, except
   in the stages dvc.yaml marks `# not byte-stable: why`.
2. A fresh `git clone` (no `dvc pull`) shows the metrics and plots users compare runs by:
   `dvc metrics show`, `dvc plots show/diff` and `dvc exp show` see all three models' test metrics,
   BERT's DVCLive metrics and training curves, the AutoGluon leaderboard and the gate's decision.
3. A DVC remote round trip: `dvc push` to S3 (moto's server), `dvc pull` into a fresh clone,
   `dvc status` clean, `dvc repro` recomputes nothing.
4. In that clone, `dvc exp run -S` of a changed setting shows in `dvc metrics diff` and `dvc exp show`.
The tests run in order on one repository (each step builds on the previous one).
"""

from __future__ import annotations

import json
import re
import shutil
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO_ROOT
from tests.helpers.bert import save_tiny_checkpoint
from tests.helpers.pipeline import copy_repo, git, run, tiny_overrides

pytestmark = [pytest.mark.slow, pytest.mark.timeout(3600)]

MODELS = ("baseline", "automl", "bert")


def out_hashes(repo: Path) -> dict[str, dict[str, str]]:
    """stage -> {output path: md5} from dvc.lock."""
    lock = yaml.safe_load((repo / "dvc.lock").read_text())["stages"]
    return {name: {o["path"]: o["md5"] for o in stage.get("outs", [])} for name, stage in lock.items()}


def unstable_reasons() -> dict[str, str]:
    """Stages dvc.yaml marks `# not byte-stable: why`."""
    reasons, stage = {}, None
    for line in (REPO_ROOT / "dvc.yaml").read_text().splitlines():
        if m := re.match(r"^  ([A-Za-z_]\w*):", line):
            stage = m.group(1)
        elif stage and (m := re.match(r"^\s+# not byte-stable: (.+)$", line)):
            reasons[stage] = m.group(1)
    return reasons


@pytest.fixture(scope="module")
def origin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A repository where the tiny pipeline ran and its results were committed (git + dvc.lock)."""
    root = tmp_path_factory.mktemp("pipeline")
    checkpoint = save_tiny_checkpoint(root / "tiny-bert")
    repo = copy_repo(root / "origin", overrides=tiny_overrides(checkpoint))
    try:
        run(["dvc", "repro"], repo)
        git(repo, "add", "-A")
        git(repo, "commit", "-qm", "tiny pipeline run")
        yield repo
    finally:  # the deploy stage's local server outlives `dvc repro`
        run(["reviewpipe", "deploy", "delete"], repo)


def test_forced_rerun_is_byte_identical_except_where_dvc_yaml_says_why(origin: Path) -> None:
    first = out_hashes(origin)
    ran = set(first)
    run(["dvc", "repro", "-f"], origin)
    second = out_hashes(origin)
    changed = {
        name: sorted(path for path, md5 in outs.items() if second[name].get(path) != md5)
        for name, outs in first.items()
    }
    unstable = {name for name, paths in changed.items() if paths}
    marked = set(unstable_reasons())
    stable = sorted(ran - unstable)
    print(f"byte-stable stages: {len(stable)} of {len(ran)}: {stable}; not: {sorted(unstable)}")
    # The committed state matches the workspace for the clones below, whatever this test finds.
    git(origin, "add", "-A")
    git(origin, "commit", "-qm", "forced rerun", "--allow-empty")
    undeclared = {name: changed[name] for name in unstable - marked}
    assert not undeclared, (
        "`dvc repro -f` changed these outputs: make them derive from data and params only, or say why in "
        f"dvc.yaml (`# not byte-stable: why` under the stage name): {undeclared}"
    )
    if stale := sorted((marked & ran) - unstable):
        warnings.warn(f"byte-stable now, remove `# not byte-stable` from dvc.yaml: {stale}", stacklevel=1)


def test_fresh_clone_shows_metrics_and_plots_without_pulling(origin: Path, tmp_path: Path) -> None:
    clone = tmp_path / "clone"
    git(tmp_path, "clone", "-q", str(origin), str(clone))

    metrics = json.loads(run(["dvc", "metrics", "show", "--json"], clone))
    data = next(iter(metrics.values()))["data"]
    evaluate = data["reports/evaluate/metrics.json"]["data"]["models"]
    for model in MODELS:
        assert 0 <= evaluate[model]["test"]["accuracy"] <= 1, model
        assert 0 <= evaluate[model]["test"]["macro_f1"] <= 1, model
    assert data["dvclive/bert/metrics.json"]["data"]["test"]["accuracy"] >= 0
    assert data["metrics/register.json"]["data"]["status"] in (
        "Rejected",
        "PendingManualApproval",
        "Approved",
    )
    assert data["metrics/automl.json"]["data"]["best_model"]

    plots = json.loads(run(["dvc", "plots", "show", "--json"], clone))
    names = set(plots["data"])
    assert any(n.startswith("dvclive/bert/plots/metrics/train/") for n in names), names
    assert any(n.startswith("dvclive/bert/plots/metrics/val/") for n in names), names
    assert "reports/automl/leaderboard.csv" in names
    assert any("confusion_matrix" in n for n in names) and any("/roc/" in n for n in names)
    # a training curve holds one point per logged step
    curve = plots["data"]["dvclive/bert/plots/metrics/train/loss_step.tsv"][0]["content"]["data"]["values"]
    assert len(curve) >= 2 and all(float(row["loss_step"]) > 0 for row in curve)

    diff = json.loads(run(["dvc", "plots", "diff", "HEAD~1", "--json"], clone))
    curve = diff["data"]["dvclive/bert/plots/metrics/train/loss_step.tsv"][0]
    assert {row["rev"] for row in curve["content"]["data"]["values"]} == {"HEAD~1", "workspace"}

    exp = json.loads(run(["dvc", "exp", "show", "--json"], clone))
    head = next(e for e in exp if e.get("rev") != "workspace")
    exp_metrics = head["data"]["metrics"]
    for model in MODELS:
        assert (
            0
            <= exp_metrics["reports/evaluate/metrics.json"]["data"]["models"][model]["test"]["macro_f1"]
            <= 1
        )
    assert "dvclive/bert/metrics.json" in exp_metrics


def test_remote_round_trip_then_nothing_to_recompute(
    origin: Path, tmp_path: Path, s3_bucket: str, moto_server: str
) -> None:
    run(["dvc", "remote", "add", "-d", "store", f"s3://{s3_bucket}/dvcstore"], origin)
    run(["dvc", "remote", "modify", "store", "endpointurl", moto_server], origin)
    git(origin, "add", ".dvc/config")
    git(origin, "commit", "-qm", "S3 remote")
    pushed = run(["dvc", "push"], origin)
    assert "pushed" in pushed

    clone = tmp_path / "clone"
    git(tmp_path, "clone", "-q", str(origin), str(clone))
    run(["dvc", "pull"], clone)
    for path in ("data/lake", "models/bert/config.json", "models/automl", "models/package/model.tar.gz"):
        assert (clone / path).exists(), path
    status = json.loads(run(["dvc", "status", "--json"], clone))
    assert status == {}, f"a fresh clone after `dvc pull` differs from dvc.lock: {status}"
    again = run(["dvc", "repro"], clone)
    assert "Running stage" not in again, again
    shutil.copytree(clone, origin.parent / "pulled", symlinks=True)


def test_experiment_shows_in_metrics_diff_and_exp_show(origin: Path) -> None:
    clone = origin.parent / "pulled"
    run(["dvc", "exp", "run", "-n", "strong-c", "-S", "baseline.classifier.C=50", "evaluate"], clone)
    diff = json.loads(run(["dvc", "metrics", "diff", "--json"], clone))
    changed = diff["reports/evaluate/metrics.json"]
    assert any(key.startswith("models.baseline.test.") for key in changed), changed
    assert not any(key.startswith("models.bert.") for key in changed)  # only the baseline retrained
    exp = json.loads(run(["dvc", "exp", "show", "--json"], clone))
    ran = [e for e in _walk(exp) if e.get("name") == "strong-c" and e.get("data")]
    assert ran, exp
    params = ran[0]["data"]["params"]["params.yaml"]["data"]
    assert params["baseline"]["classifier"]["C"] == 50
    models = ran[0]["data"]["metrics"]["reports/evaluate/metrics.json"]["data"]["models"]
    assert set(MODELS) <= set(models)


def _walk(node: object) -> list[dict]:
    """Every dict inside `node` (dvc exp show's nested commits and experiments)."""
    if isinstance(node, dict):
        return [node, *(d for value in node.values() for d in _walk(value))]
    if isinstance(node, list):
        return [d for item in node for d in _walk(item)]
    return []
