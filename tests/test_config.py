"""conf/ (Hydra) and the committed params.yaml must agree: DVC composes one into the other."""

import shutil
from pathlib import Path

import pytest
import yaml
from omegaconf import OmegaConf

from reviewpipe.config import compose_params, load_params, validate_params
from reviewpipe.errors import ReviewpipeError
from reviewpipe.schema import BertParams, LakeParams, LocalDeployParams

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


# ---- the typed schema (reviewpipe.schema) --------------------------------------------------------
def _group_options() -> list[str]:
    """One override per non-default option of each conf group (bert=gpu, prepare=natural, ...)."""
    defaults = {
        next(iter(d)): d[next(iter(d))]
        for d in yaml.safe_load((ROOT / "conf" / "config.yaml").read_text())["defaults"]
        if isinstance(d, dict)
    }
    return [
        f"{group}={option.stem}"
        for group, default in defaults.items()
        for option in sorted((ROOT / "conf" / group).glob("*.yaml"))
        if option.stem != default
    ]


def test_committed_params_match_the_schema_completely() -> None:
    """Every key of params.yaml has a field in reviewpipe.schema, and every field a value in conf/."""
    validate_params(OmegaConf.load(ROOT / "params.yaml"), conf_dir=ROOT / "conf", complete=True)


@pytest.mark.parametrize("option", _group_options())
def test_every_conf_option_matches_the_schema(option: str, tmp_path: Path) -> None:
    compose_params(ROOT / "conf", tmp_path / "params.yaml", [option])
    validate_params(OmegaConf.load(tmp_path / "params.yaml"), conf_dir=ROOT / "conf", complete=True)


def test_group_options_are_found() -> None:
    assert {"bert=gpu", "prepare=natural", "deploy=sagemaker", "tune=bert", "lake=s3"} <= set(
        _group_options()
    )


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A copy of conf/ beside a params.yaml composed from it (edit conf/, then `compose`)."""
    shutil.copytree(ROOT / "conf", tmp_path / "conf")
    return tmp_path


def compose(project: Path, overrides: list[str] | None = None) -> Path:
    compose_params(project / "conf", project / "params.yaml", overrides)
    return project / "params.yaml"


def test_misspelled_key_names_itself_and_its_conf_file(project: Path) -> None:
    cpu = project / "conf" / "bert" / "cpu.yaml"
    cpu.write_text(cpu.read_text().replace("learning_rate:", "lerning_rate:"))
    with pytest.raises(ReviewpipeError) as caught:
        load_params(compose(project))
    message = str(caught.value)
    assert (
        "bert.lerning_rate: unknown key (did you mean `learning_rate`?); set in conf/bert/cpu.yaml" in message
    )
    assert "BertParams (src/reviewpipe/schema.py)" in message
    # the misspelling also leaves learning_rate unset: the complete check says so
    with pytest.raises(ReviewpipeError, match=r"bert.learning_rate: missing; give it a value in conf/bert/"):
        validate_params(OmegaConf.load(project / "params.yaml"), complete=True)


def test_wrong_type_and_unknown_choice_name_the_option_file(project: Path) -> None:
    gpu = project / "conf" / "bert" / "gpu.yaml"
    gpu.write_text(gpu.read_text().replace("max_epochs: 4", "max_epochs: four"))
    natural = project / "conf" / "prepare" / "natural.yaml"
    natural.write_text(natural.read_text().replace("balance: none", "balance: classes"))
    with pytest.raises(ReviewpipeError) as caught:
        load_params(compose(project, ["bert=gpu", "prepare=natural"]))
    message = str(caught.value)
    assert (
        "bert.max_epochs: Input should be a valid integer (got 'four'); set in conf/bert/gpu.yaml" in message
    )
    assert (
        "prepare.balance: Input should be 'none', 'sentiment' or 'category_sentiment' (got 'classes'); "
        "set in conf/prepare/natural.yaml" in message
    )


def test_a_tagged_section_is_checked_against_its_own_option(project: Path) -> None:
    with pytest.raises(ReviewpipeError) as caught:
        load_params(compose(project, ["deploy=sagemaker"]), ["deploy.sagemaker.instance_cont=2"])
    message = str(caught.value)
    assert "deploy.sagemaker.instance_cont: unknown key (did you mean `instance_count`?)" in message
    assert "a -S override" in message and "SageMakerDeployParams" in message


def test_override_of_unknown_key_fails_and_partial_params_load(tmp_path: Path) -> None:
    with pytest.raises(
        ReviewpipeError, match=r"lake.partition: unknown key \(did you mean `partition_by`\?\)"
    ):
        load_params(ROOT / "params.yaml", ["lake.partition=department_name"])
    # a params file may hold some sections, or part of one (its missing keys fail where they are read)
    (tmp_path / "params.yaml").write_text("lake:\n  uri: lake\n")
    assert load_params(tmp_path / "params.yaml").lake.uri == "lake"


def test_from_params_gives_typed_settings() -> None:
    params = load_params(ROOT / "params.yaml")
    bert = BertParams.from_params(params)
    assert isinstance(bert.learning_rate, float) and bert.learning_rate == params.bert.learning_rate
    assert bert.pooling in ("mean", "cls")
    assert [v.name for v in LocalDeployParams.from_params(params).variants] == ["champion"]
    with pytest.raises(ReviewpipeError, match=r"lake.partition_by: missing"):
        LakeParams.from_params(OmegaConf.create({"lake": {"uri": "lake"}}))
