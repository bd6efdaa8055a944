"""conf/ (Hydra) and the committed params.yaml must agree: DVC composes one into the other."""

from pathlib import Path

import yaml

from reviewpipe.config import compose_params, load_params

ROOT = Path(__file__).resolve().parents[1]


def test_committed_params_match_conf(tmp_path: Path) -> None:
    out = tmp_path / "params.yaml"
    compose_params(ROOT / "conf", out)
    composed = yaml.safe_load(out.read_text())
    committed = yaml.safe_load((ROOT / "params.yaml").read_text())
    assert composed == committed, "params.yaml is stale: run `make params` (or `dvc exp run`) and commit it"


def test_override_composes(tmp_path: Path) -> None:
    out = tmp_path / "params.yaml"
    compose_params(ROOT / "conf", out, ["lake.partition_by=department_name"])
    assert load_params(out).lake.partition_by == "department_name"


def test_stage_code_never_uses_hydra_main() -> None:
    offenders = [
        p
        for p in (ROOT / "src").rglob("*.py")
        if "@hydra.main" in p.read_text() or "${hydra:" in p.read_text()
    ]
    assert offenders == []
