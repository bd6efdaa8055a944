"""`reviewpipe tune` on a tiny synthetic prepared folder: outputs, seeding, pruning, write-back."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from omegaconf import OmegaConf

from reviewpipe.cli import main
from reviewpipe.errors import ReviewpipeError
from reviewpipe.tuning.objectives import baseline_objective, nested_order, read_tuning_data
from reviewpipe.tuning.space import apply_overrides, parse_space
from reviewpipe.tuning.study import TuneSettings, run_study, trials_frame
from tests.conftest import REPO_ROOT
from tests.helpers.params import conf_section

CONF = REPO_ROOT / "conf"
WORDS = {
    0: ["awful", "itchy", "returned", "cheap", "ripped"],
    1: ["okay", "average", "fine", "plain", "meh"],
    2: ["lovely", "perfect", "soft", "great", "flattering"],
}
NOISE = [f"w{i}" for i in range(300)]


def tiny_split(n: int, seed: int, signal: float = 0.6) -> pd.DataFrame:
    """Reviews of noise words plus one or two sentiment words that match the label with probability
    `signal`: weak enough that regularisation and n-gram settings change the validation score."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 3
    texts = []
    for y in labels:
        words = list(rng.choice(NOISE, size=int(rng.integers(5, 12))))
        shown = int(y) if rng.random() < signal else int(rng.integers(0, 3))
        words += list(rng.choice(WORDS[shown], size=int(rng.integers(1, 3))))
        texts.append(" ".join(rng.permutation(words)))
    return pd.DataFrame(
        {
            "review_id": np.arange(n) + seed * 10_000,
            "review_body": texts,
            "label_id": labels,
            "sentiment": labels - 1,
        }
    )


@pytest.fixture(autouse=True)
def one_blas_thread() -> Iterator[None]:
    """Tiny fits run 3x faster on one BLAS thread than on a busy shared machine's two."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1):
        yield


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """data/prepared-like folder: train (240 rows), validation (90), class weights; deliberately no test split."""
    out = tmp_path_factory.mktemp("prepared")
    tiny_split(240, seed=1).to_parquet(out / "train.parquet", index=False)
    tiny_split(90, seed=2).to_parquet(out / "validation.parquet", index=False)
    (out / "class_weights.json").write_text(json.dumps({"-1": 1.0, "0": 1.0, "1": 1.0}))
    return out


def baseline_section() -> dict[str, Any]:
    return OmegaConf.to_container(conf_section("baseline"))  # type: ignore[return-value]


def tune_cfg(**overrides: Any) -> dict[str, Any]:
    return {**OmegaConf.to_container(conf_section("tune")), **overrides}  # type: ignore[dict-item]


@pytest.fixture
def project(tmp_path: Path, prepared: Path) -> Path:
    """A working dir with a mini conf/ (root selecting the repository's baseline and tune files) and params.yaml."""
    conf = tmp_path / "conf"
    for group, option in (
        ("paths", "default"),
        ("baseline", "default"),
        ("tune", "baseline"),
        ("tune", "bert"),
    ):
        (conf / group).mkdir(parents=True, exist_ok=True)
        shutil.copy(CONF / group / f"{option}.yaml", conf / group / f"{option}.yaml")
    (conf / "config.yaml").write_text(
        "defaults:\n  - paths: default\n  - baseline: default\n  - tune: baseline\n  - _self_\n"
        f"tune:\n  data_dir: {prepared}\n  out_dir: {tmp_path / 'reports' / 'tune'}\n"
    )
    from reviewpipe.config import compose_params

    compose_params(conf, tmp_path / "params.yaml")
    return tmp_path


def run_tune(project: Path, *args: str) -> int:
    return main(
        ["tune", "--params", str(project / "params.yaml"), "--conf-dir", str(project / "conf"), *args]
    )


@pytest.mark.parametrize("sampler", ["random", "tpe"])
def test_tune_writes_trials_best_params_and_plots(
    project: Path, sampler: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run_tune(project, "--model", "baseline", "--trials", "4", "--sampler", sampler) == 0
    out = project / "reports" / "tune" / "baseline"
    trials = pd.read_csv(out / "trials.csv")
    best = json.loads((out / "best_params.json").read_text())
    assert len(trials) == 4 and set(trials["state"]) <= {"COMPLETE", "PRUNED"}
    assert {
        "number",
        "value",
        "state",
        "duration_s",
        "params_classifier.C",
        "params_word.ngram_range.1",
    } <= set(trials.columns)
    complete = trials[trials["state"] == "COMPLETE"]
    assert best["best_value"] == pytest.approx(complete["value"].max())
    row = complete.loc[complete["value"].idxmax()]
    assert best["best_trial"] == row["number"]
    assert best["params"]["classifier.C"] == pytest.approx(row["params_classifier.C"])
    assert 0.1 <= best["params"]["classifier.C"] <= 20 and best["params"]["char.ngram_range.1"] in (3, 4, 5)
    assert best["sampler"] == sampler and 0 <= best["current_value"] <= 1
    for plot in ("optimization_history.png", "param_importances.png", "intermediate_values.png"):
        assert (out / plot).stat().st_size > 5_000, plot
    printed = capsys.readouterr().out
    assert f"best trial {best['best_trial']} scores {best['best_value']:.4f}" in printed
    assert "validation macro-F1" in printed


def objective_and_section(
    prepared: Path, fractions: tuple[float, ...] = (0.25, 0.5, 1.0)
) -> tuple[Any, dict[str, Any]]:
    """The baseline objective (learning-curve steps) and section, word n-grams only to keep fits quick."""
    data = read_tuning_data(str(prepared))
    objective = baseline_objective(data, {"fractions": list(fractions)}, data_dir=str(prepared))
    return objective, apply_overrides(baseline_section(), {"char.enabled": False})


def test_same_seed_same_trials_other_seed_other_trials(prepared: Path) -> None:
    objective, section = objective_and_section(prepared, fractions=(1.0,))

    def frame(sampler: str, seed: int) -> pd.DataFrame:
        settings = TuneSettings.from_params(tune_cfg(trials=4, sampler=sampler, seed=seed, pruner="none"))
        return trials_frame(run_study(objective, section, settings)).drop(columns="duration_s")

    for sampler in ("random", "tpe"):
        pd.testing.assert_frame_equal(frame(sampler, 7), frame(sampler, 7))
    assert not np.allclose(
        frame("random", 7)["params_classifier.C"], frame("random", 8)["params_classifier.C"]
    )


def test_aggressive_median_pruner_prunes_and_none_does_not(prepared: Path) -> None:
    objective, section = objective_and_section(prepared)
    aggressive = TuneSettings.from_params(
        tune_cfg(trials=10, sampler="random", seed=3, pruner="median", startup_trials=0, warmup_steps=0)
    )
    trials = trials_frame(run_study(objective, section, aggressive))
    pruned = trials[trials["state"] == "PRUNED"]
    assert len(pruned) >= 1
    assert (pruned["steps_reported"] < 3).all() and pruned["value"].isna().all()
    assert (trials.loc[trials["state"] == "COMPLETE", "steps_reported"] == 3).all()
    unpruned = trials_frame(
        run_study(
            objective,
            section,
            TuneSettings.from_params(tune_cfg(trials=4, sampler="random", seed=3, pruner="none")),
        )
    )
    assert set(unpruned["state"]) == {"COMPLETE"}


def test_write_back_updates_conf_and_params_agree(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    conf_file = project / "conf" / "baseline" / "default.yaml"
    # Start from a poor setting (weak regularisation on these noisy reviews) that the study can beat.
    conf_file.write_text(conf_file.read_text().replace("C: 0.3 ", "C: 20.0"))
    from reviewpipe.config import compose_params

    compose_params(project / "conf", project / "params.yaml")
    before = conf_file.read_text()
    assert "C: 20.0" in before
    assert run_tune(project, "--model", "baseline", "--trials", "4", "--sampler", "tpe", "--write-back") == 0
    best = json.loads((project / "reports" / "tune" / "baseline" / "best_params.json").read_text())
    printed = capsys.readouterr().out
    assert best["best_value"] > best["current_value"], "the tiny study must beat the current settings"
    after = conf_file.read_text()
    assert after != before
    assert "# inverse regularisation strength" in after and "# TF-IDF (word + character n-grams)" in after
    params = OmegaConf.to_container(OmegaConf.load(project / "params.yaml"))
    # the edited file, its ${paths.*} resolved as composing does
    written = OmegaConf.to_container(
        OmegaConf.create({"paths": params["paths"], "baseline": OmegaConf.load(conf_file)}), resolve=True
    )["baseline"]
    assert apply_overrides(baseline_section(), best["params"]) == written  # only the tuned keys changed
    assert written["classifier"]["C"] == best["params"]["classifier.C"] != 20.0
    assert params["baseline"] == written  # params.yaml recomposed from the edited conf/
    assert "recomposed" in printed and str(conf_file) in printed


def test_write_back_declines_when_no_trial_beats_the_current_settings(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    conf_file = project / "conf" / "baseline" / "default.yaml"
    before = conf_file.read_text()
    # A space holding only the current values: every trial ties with them.
    tune_file = project / "conf" / "tune" / "baseline.yaml"
    cfg = OmegaConf.load(tune_file)
    cfg.space = {"classifier.C": {"type": "categorical", "choices": [0.3]}}
    OmegaConf.save(cfg, tune_file)
    from reviewpipe.config import compose_params

    compose_params(project / "conf", project / "params.yaml")
    assert run_tune(project, "--trials", "2", "--pruner", "none", "--write-back") == 0
    assert "not writing back" in capsys.readouterr().out
    assert conf_file.read_text() == before


def test_search_space_mistakes_are_user_errors(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(ReviewpipeError, match="log-scaled range needs low > 0"):
        parse_space({"classifier.C": {"type": "float", "low": 0, "high": 1, "log": True}})
    with pytest.raises(ReviewpipeError, match="non-empty `choices`"):
        parse_space({"word.min_df": {"type": "categorical", "choices": []}})
    with pytest.raises(ReviewpipeError, match="no `gamma` there"):
        apply_overrides(baseline_section(), {"classifier.gamma": 1.0})
    with pytest.raises(ReviewpipeError, match="no `7` there"):
        apply_overrides(baseline_section(), {"word.ngram_range.7": 1})
    assert run_tune(project, "--trials", "0") == 2
    assert "trials must be at least 1" in capsys.readouterr().err
    tune_file = project / "conf" / "tune" / "baseline.yaml"
    tune_file.write_text(tune_file.read_text().replace("classifier.C:", "classifier.gamma:"))
    from reviewpipe.config import compose_params

    compose_params(project / "conf", project / "params.yaml")
    assert run_tune(project, "--trials", "1") == 2
    err = capsys.readouterr().err
    assert "error: search space key `classifier.gamma`" in err and "Traceback" not in err


def test_nested_order_prefixes_are_stratified_and_nested() -> None:
    labels = np.repeat([0, 1, 2], [60, 30, 30])
    order = nested_order(labels, seed=5)
    assert sorted(order) == list(range(120))
    for k in (12, 40, 60):
        counts = np.bincount(labels[order[:k]], minlength=3)
        assert abs(counts[0] - k / 2) <= 1 and abs(counts[1] - k / 4) <= 1
    assert not np.array_equal(order, nested_order(labels, seed=6))


def test_test_split_is_never_read(prepared: Path) -> None:
    # The prepared fixture has no test.parquet at all; tuning works without it.
    assert not (prepared / "test.parquet").exists()
    assert set(read_tuning_data(str(prepared))) == {"train", "validation"}


def test_other_models_space_comes_from_conf_with_the_commands_overrides(project: Path) -> None:
    from reviewpipe.config import load_params
    from reviewpipe.tuning.cli import tune_section

    overrides = ["tune.objective.max_train_rows=10", "tune.trials=3"]
    params = load_params(project / "params.yaml", overrides)
    assert tune_section(params, None, project / "conf")["model"] == "baseline"
    assert tune_section(params, "baseline", project / "conf")["trials"] == 3
    bert = tune_section(params, "bert", project / "conf", overrides)
    assert bert["model"] == "bert" and bert["trials"] == 3 and bert["objective"]["max_train_rows"] == 10
    assert set(bert["space"]) == {"learning_rate", "batch_size", "warmup_ratio", "max_epochs", "weight_decay"}
    assert bert["objective"]["fixed"]["val_check_interval"] == 0.5  # the rest of conf/tune/bert.yaml
