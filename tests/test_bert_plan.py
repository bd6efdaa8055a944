"""Planning a BERT run: the step count agrees with Lightning's, and the cost model adds up."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from reviewpipe.models.bert.plan import (
    LinearCost,
    epoch_tokens,
    format_plan,
    make_plan,
    pick_batches,
    plan_run,
    planned_steps,
    validations_per_epoch,
)
from reviewpipe.models.bert.train import fit_bert, settings
from tests.test_bert_train import tiny_cfg, tiny_frame, tiny_network, tokenizer  # noqa: F401


@pytest.mark.parametrize(
    ("overrides", "expected"), [({"accumulate_grad_batches": 4}, 4), ({"max_steps": 5}, 5)]
)
def test_planned_steps_are_the_steps_lightning_schedules_and_runs(
    tokenizer,  # noqa: F811
    tmp_path: Path,
    overrides: dict,
    expected: int,
) -> None:
    cfg = tiny_cfg(ckpt_every_n_steps=0, **overrides)  # 24 train rows, batch 4: 6 batches, 2 epochs
    assert planned_steps(
        6, 2, int(settings(cfg)["max_steps"]), int(settings(cfg)["accumulate_grad_batches"])
    ) == (expected)
    metrics = fit_bert(
        cfg,
        tiny_frame(),
        out_dir=tmp_path / "bert",
        ckpt_dir=tmp_path / "ckpt",
        network=tiny_network(tokenizer.vocab_size),
        tokenizer=tokenizer,
    )
    assert metrics["planned_steps"] == metrics["global_step"] == expected


def test_step_counting_rules() -> None:
    assert planned_steps(566, 2, -1) == 1132 and planned_steps(566, 3, 1000) == 1000
    assert planned_steps(7, 2, -1, accumulate=2) == 8  # a short last group still steps
    assert planned_steps(10, -1, 300) == 300
    with pytest.raises(ValueError, match="no planned end"):
        planned_steps(10, -1, -1)
    assert validations_per_epoch(200, 0.5) == 2 and validations_per_epoch(200, 1.0) == 1
    assert validations_per_epoch(200, 50) == 4


def test_the_cost_model_is_fitted_and_priced_per_batch() -> None:
    tokens = [1000, 2000, 3000, 4000]
    cost = LinearCost.fit(tokens, [0.1 + 0.001 * t for t in tokens])
    assert cost.fixed == pytest.approx(0.1) and cost.per_token == pytest.approx(0.001)
    assert cost.seconds([1000, 1000]) == pytest.approx(2.2)
    assert LinearCost.fit([500, 500], [1.0, 1.0]) == LinearCost(0.0, 0.002)  # one size: proportional
    assert pick_batches([5, 1, 9, 3, 7], 3) == [1, 0, 2]  # smallest, middle, largest


def test_bucketing_pads_less_than_random_batches() -> None:
    lengths = np.random.default_rng(0).integers(10, 130, size=640)
    bucketed = epoch_tokens(lengths, 32, bucketing=True, seed=1)
    plain = epoch_tokens(lengths, 32, bucketing=False, seed=1)
    assert len(bucketed) == len(plain) == 20
    assert lengths.sum() <= sum(bucketed) < 0.8 * sum(plain)


def test_plan_arithmetic_and_budget() -> None:
    s = {"accumulate_grad_batches": 1, "max_epochs": 2, "max_steps": -1, "val_check_interval": 0.5}
    plan = make_plan(
        s,
        train_tokens=[1000] * 10,  # 10 s an epoch at 1 ms per token
        val_tokens=[500, 500],  # 0.5 s a validation, twice an epoch
        test_tokens=[1000],  # 0.5 s
        train_cost=LinearCost(0.0, 0.001),
        eval_cost=LinearCost(0.0, 0.0005),
        budget_seconds=12.0,
    )
    assert plan["planned_steps"] == 20 and plan["planned_epochs"] == 2.0 and plan["seconds_per_step"] == 1.0
    assert plan["planned_seconds"] == 22.5 and plan["epochs"] == {1: 11.5, 2: 22.5, 3: 33.5, 4: 44.5}
    assert plan["max_steps_for_budget"] == 10  # (12 - 0.5) / 1.1 s per step, validation included


def test_plan_run_measures_the_configured_model_on_its_own_batches(tokenizer) -> None:  # noqa: F811
    cfg = settings(tiny_cfg(max_time="00:00:30:00"))
    plan = plan_run(
        cfg,
        tiny_frame(),
        tokenizer=tokenizer,
        network=tiny_network(tokenizer.vocab_size),
        measured_steps=3,
        budget_seconds=60.0,
    )
    assert plan["train_batches_per_epoch"] == 6 and plan["planned_steps"] == 12
    # 12 steps are 2 epochs; times are rounded to 0.1 s, which one epoch of a tiny model may not exceed
    assert plan["seconds_per_step"] > 0 and plan["planned_seconds"] == plan["epochs"][2]
    assert plan["epochs"][4] > plan["epochs"][1] >= 0
    text = format_plan(plan, cfg)
    assert "12 steps = 2.0 epochs" in text and "max_time 00:00:30:00" in text and "fits max_steps" in text
