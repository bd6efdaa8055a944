"""BERT tuning: Lightning validation checks report to Optuna and prune; the CLI with the packaged MiniLM (slow)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import optuna
import pandas as pd
import pytest
from omegaconf import OmegaConf

from reviewpipe.tuning.objectives import bert_objective, complete_section
from reviewpipe.tuning.study import TuneSettings, run_study, trials_frame
from tests.conftest import REPO_ROOT
from tests.helpers.params import conf_section
from tests.test_bert_train import tiny_network, tokenizer  # noqa: F401  (tokenizer is a fixture)
from tests.test_tune import prepared, run_tune, tiny_split  # noqa: F401  (prepared is a fixture)

FIXED = {
    "enable_progress_bar": False,
    "max_seq_length": 24,
    "eval_batch_size": 32,
    "val_check_interval": 0.5,
    "early_stopping_patience": 10,
    "seed": 3,
}
SPACE = {
    "learning_rate": {"type": "float", "low": 1e-4, "high": 3e-3, "log": True},
    "batch_size": {"type": "categorical", "choices": [16, 32]},
}


def tiny_objective(tokenizer: Any) -> Any:  # noqa: F811
    data = {"train": tiny_split(64, seed=1), "validation": tiny_split(24, seed=2)}
    return bert_objective(
        data,
        {"fixed": FIXED},
        tokenizer=tokenizer,
        network_factory=lambda s: tiny_network(tokenizer.vocab_size),
    )


def test_each_validation_check_is_reported_and_the_value_is_the_best(tokenizer) -> None:  # noqa: F811
    settings = TuneSettings.from_params(
        {"model": "bert", "trials": 2, "sampler": "random", "seed": 0, "pruner": "none", "space": SPACE}
    )
    section = complete_section("bert", {**OmegaConf.to_container(conf_section("bert")), "max_epochs": 1})
    study = run_study(tiny_objective(tokenizer), section, settings)
    assert {t.params["batch_size"] for t in study.trials} == {16, 32}
    for trial in study.trials:
        assert trial.state == optuna.trial.TrialState.COMPLETE
        # val_check_interval 0.5: 2 checks an epoch, numbered 0, 1 whatever the batch size (4 or 2 batches).
        assert sorted(trial.intermediate_values) == [0, 1]
        assert trial.value == pytest.approx(max(trial.intermediate_values.values()))
    assert trials_frame(study)["steps_reported"].tolist() == [2, 2]


class PruneAfterFirstCheck(optuna.pruners.BasePruner):
    """The most aggressive pruner: stop every trial at its first report."""

    def prune(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> bool:
        return bool(trial.intermediate_values)


def test_a_pruned_trial_stops_inside_lightning_fit(tokenizer) -> None:  # noqa: F811
    objective = tiny_objective(tokenizer)
    section = complete_section("bert", {**OmegaConf.to_container(conf_section("bert")), "max_epochs": 2})
    study = optuna.create_study(
        direction="maximize", pruner=PruneAfterFirstCheck(), sampler=optuna.samplers.RandomSampler(seed=0)
    )
    study.optimize(lambda trial: objective(trial, {**section, "learning_rate": 1e-3}), n_trials=2)
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.PRUNED] * 2
    assert all(list(t.intermediate_values) == [0] for t in study.trials)  # stopped at the first of 4 checks


@pytest.mark.slow
def test_tune_bert_command_with_the_packaged_minilm(tmp_path: Path, prepared: Path) -> None:  # noqa: F811
    conf = tmp_path / "conf"
    for group, option in (("paths", "default"), ("bert", "cpu"), ("tune", "bert"), ("tune", "baseline")):
        (conf / group).mkdir(parents=True, exist_ok=True)
        shutil.copy(REPO_ROOT / "conf" / group / f"{option}.yaml", conf / group / f"{option}.yaml")
    out = tmp_path / "reports" / "tune"
    (conf / "config.yaml").write_text(
        "defaults:\n  - paths: default\n  - bert: cpu\n  - tune: bert\n  - _self_\n"
        f"tune:\n  data_dir: {prepared}\n  out_dir: {out}\n  score_current: false\n"
        "  objective:\n    max_train_rows: 64\n    max_validation_rows: 30\n"
        "    fixed: {limit_train_batches: 2, limit_val_batches: 1, val_check_interval: 1.0,"
        " max_seq_length: 32, enable_progress_bar: false, threads: 1}\n"
    )
    from reviewpipe.config import compose_params

    compose_params(conf, tmp_path / "params.yaml")
    assert run_tune(tmp_path, "--trials", "2", "--pruner", "none", "--write-back") == 0
    trials = pd.read_csv(out / "bert" / "trials.csv")
    best = json.loads((out / "bert" / "best_params.json").read_text())
    assert list(trials["state"]) == ["COMPLETE", "COMPLETE"]
    assert best["best_value"] == pytest.approx(trials["value"].max())
    assert 1e-5 <= best["params"]["learning_rate"] <= 5e-5 and best["params"]["batch_size"] in (16, 32)
    assert best["current_value"] is None  # not scored, so --write-back writes the best trial unconditionally
    written = OmegaConf.load(conf / "bert" / "cpu.yaml")
    composed = OmegaConf.load(tmp_path / "params.yaml").bert
    for key, value in best["params"].items():
        assert written[key] == value and composed[key] == value, key
    assert "# AdamW; never on biases or LayerNorm" in (conf / "bert" / "cpu.yaml").read_text()
