"""The whole DVC pipeline in a throwaway git repository: a copy of this checkout, synthetic raw
data and tiny model settings, so `dvc repro` of every stage takes minutes on a CPU."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO_ROOT

RAW = Path("data/raw/womens_clothing_ecommerce_reviews.csv.gz")


def tiny_overrides(checkpoint: Path) -> list[str]:
    """Settings that keep each model stage to seconds (composed into params.yaml with conf/)."""
    return [
        f"features.checkpoint={checkpoint}",
        "features.max_seq_length=64",
        f"bert.checkpoint={checkpoint}",
        "bert.max_seq_length=64",
        "bert.batch_size=16",
        "bert.max_epochs=1",
        "bert.max_time=null",
        "bert.val_check_interval=1.0",
        "bert.log_every_n_steps=2",
        "bert.enable_progress_bar=false",
        "bert.threads=1",
        "automl.time_limit=60",
        "automl.model_types=[GBM]",
        "automl.ngram.max_features=300",
        "automl.num_cpus=1",
        "explain.background_rows=50",
        "explain.global_rows=50",
        "explain.reviews=2",
        "explain.bert_sample=2",
        "explain.max_evals=20",
        "monitor.max_baseline_rows=300",
        # ~40 validation rows: groups this small still count, so the fairness gate measures something
        # (with none large enough it rejects, and package has no deployable version)
        "evaluate.fairness.min_group_rows=5",
        "register.fairness.min_support=5",
        "deploy.local.port=0",  # a free port: the deploy stage leaves a local server running
        "serve.quantize=none",
        "serve.backend=torch",
    ]


def run(cmd: list[str], cwd: Path, timeout: float = 1800) -> str:
    """Run `cmd` in `cwd` with this venv's dvc and reviewpipe; a repository there runs its own src/."""
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "DVC_NO_ANALYTICS": "1",
    }
    if (cwd / "src" / "reviewpipe").is_dir():
        env["PYTHONPATH"] = str(cwd / "src")
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, (
        f"{' '.join(cmd)} failed in {cwd}:\n{proc.stdout[-6000:]}\n{proc.stderr[-6000:]}"
    )
    return proc.stdout + proc.stderr


def git(cwd: Path, *args: str) -> str:
    return run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd)


# Records of the committed real-data run (registry versions, what is deployed). A copy starts without
# them, like a new project, so its registry numbers versions from 1.
RUN_RECORDS = ("models/registry/versions/", "models/deploy/deployment.json")


def copy_repo(dst: Path, rows: int = 1500, overrides: list[str] | None = None) -> Path:
    """Tracked and untracked-not-ignored files of this checkout as a fresh git repo (one commit), with a
    synthetic raw file in place of the real one. `overrides` (dotted, as for -S) are written into
    conf/config.yaml, so params.yaml and every later `dvc exp run` compose them."""
    import yaml
    from omegaconf import OmegaConf

    from reviewpipe.config import compose_params

    files = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO_ROOT,
        capture_output=True,
        check=True,
    ).stdout.split(b"\0")
    for rel in filter(None, (f.decode() for f in files)):
        src = REPO_ROOT / rel
        if rel.startswith(RUN_RECORDS):  # this checkout's own registry and deployment: a new project has none
            continue
        if src.is_file():
            (dst / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst / rel)
    run(["reviewpipe", "synth", "--rows", str(rows), "--seed", "7", "--output", str(RAW)], dst)
    if overrides:
        root = dst / "conf" / "config.yaml"
        config = yaml.safe_load(root.read_text())
        extra = OmegaConf.to_container(OmegaConf.from_dotlist(overrides))
        root.write_text(
            yaml.safe_dump(OmegaConf.to_container(OmegaConf.merge(config, extra)), sort_keys=False)
        )
        compose_params(dst / "conf", dst / "params.yaml")
    git(dst, "init", "-q", "-b", "main")
    git(dst, "add", "-A")
    git(dst, "commit", "-qm", "copy")
    return dst
