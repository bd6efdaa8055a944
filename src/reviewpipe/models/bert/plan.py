"""Plan a BERT run before starting it: how many optimizer steps the settings make, and what they
cost on this machine.

The schedule (warm-up, then linear decay to 0) covers exactly the planned steps, which come from
`max_epochs` / `max_steps` and the data, never from the clock; `max_time` is only a safety stop.
So a run's length is chosen up front: `python bench/train_throughput.py --plan` measures a few real
training steps (forward, backward, AdamW) on batches drawn across the epoch's length buckets,
fits seconds = a + b x padded tokens, and prices every batch the configured epochs will run,
plus the validation passes and the final test pass.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from reviewpipe.models.bert.datamodule import LengthGroupedBatchSampler
from reviewpipe.progress import format_duration


def planned_steps(batches_per_epoch: int, max_epochs: int, max_steps: int, accumulate: int = 1) -> int:
    """Optimizer steps a run takes, as Lightning's `estimated_stepping_batches` counts them."""
    if max_epochs == -1:
        if max_steps == -1:
            raise ValueError("max_epochs and max_steps are both -1: the run has no planned end")
        return max_steps
    steps = math.ceil(batches_per_epoch / accumulate) * max(max_epochs, 1)
    return min(steps, max_steps) if max_steps != -1 else steps


def validations_per_epoch(batches_per_epoch: int, val_check_interval: float | int) -> int:
    """Validation passes in one epoch: a float is a share of the epoch, an int a number of batches."""
    if isinstance(val_check_interval, float) and val_check_interval <= 1.0:
        return max(1, int(1.0 / val_check_interval + 1e-9))
    return max(1, batches_per_epoch // int(val_check_interval))


def epoch_tokens(
    lengths: Sequence[int], batch_size: int, *, bucketing: bool, seed: int, shuffle: bool = True
) -> list[int]:
    """Padded tokens (rows x longest row) of each batch of one epoch, batched as training batches them."""
    lengths = np.asarray(lengths)
    sampler = LengthGroupedBatchSampler(
        lengths, batch_size, shuffle=shuffle, group_by_length=bucketing, seed=seed
    )
    return [len(rows) * int(lengths[rows].max()) for rows in sampler.all_batches()]


@dataclass(frozen=True)
class LinearCost:
    """seconds = fixed + per_token x padded tokens, fitted on measured batches."""

    fixed: float
    per_token: float

    @classmethod
    def fit(cls, tokens: Sequence[int], seconds: Sequence[float]) -> LinearCost:
        x, y = np.asarray(tokens, dtype=float), np.asarray(seconds, dtype=float)
        if len(x) >= 2 and np.ptp(x) > 0:
            per_token, fixed = np.polyfit(x, y, 1)
            if per_token > 0 and fixed >= 0:
                return cls(float(fixed), float(per_token))
        return cls(0.0, float(y.sum() / x.sum()))  # one size measured, or a negative intercept: proportional

    def seconds(self, tokens: Sequence[int]) -> float:
        return float(len(tokens) * self.fixed + self.per_token * float(np.sum(tokens)))


def pick_batches(tokens: Sequence[int], count: int) -> list[int]:
    """Indices of `count` batches spread over the range of sizes (smallest to largest)."""
    order = np.argsort(np.asarray(tokens), kind="stable")
    picks = np.linspace(0, len(order) - 1, num=min(count, len(order))).round().astype(int)
    return [int(order[i]) for i in dict.fromkeys(picks.tolist())]


def measure(
    module: Any, batches: Sequence[Mapping[str, Any]], *, train: bool, warmup: int = 1
) -> list[float]:
    """Seconds per batch: a full training step (forward, backward, clipping, fused AdamW) when
    `train`, else a forward pass in inference mode. The first `warmup` batches run untimed."""
    import torch

    from reviewpipe.models.bert.module import decay_parameter_groups

    optimizer = None
    if train:
        module.train()
        optimizer = torch.optim.AdamW(decay_parameter_groups(module.network, 0.01), lr=1e-5, fused=True)
    else:
        module.eval()
    times: list[float] = []
    for i, batch in enumerate([*batches[:warmup], *batches]):
        started = time.perf_counter()
        if train:
            loss, _ = module._step(batch)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(module.parameters(), 1.0)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        else:
            with torch.inference_mode():
                module._step(batch)
        if i >= warmup:
            times.append(time.perf_counter() - started)
    return times


def make_plan(
    s: Mapping[str, Any],
    *,
    train_tokens: Sequence[int],
    val_tokens: Sequence[int],
    test_tokens: Sequence[int],
    train_cost: LinearCost,
    eval_cost: LinearCost,
    budget_seconds: float | None = None,
) -> dict[str, Any]:
    """The configured run's steps and estimated wall time, the cost of 1-4 epochs, and the
    max_steps that fits `budget_seconds` (validation and test included)."""
    batches = len(train_tokens)
    accumulate = int(s["accumulate_grad_batches"])
    steps = planned_steps(batches, int(s["max_epochs"]), int(s["max_steps"]), accumulate)
    epoch_train = train_cost.seconds(train_tokens)
    one_validation, test = eval_cost.seconds(val_tokens), eval_cost.seconds(test_tokens)
    per_epoch_validations = validations_per_epoch(batches, s["val_check_interval"])

    def cost(n_steps: int) -> float:
        epochs = n_steps * accumulate / batches
        return epochs * (epoch_train + per_epoch_validations * one_validation) + test

    plan: dict[str, Any] = {
        "train_batches_per_epoch": batches,
        "planned_steps": steps,
        "planned_epochs": round(steps * accumulate / batches, 2),
        "seconds_per_step": round(epoch_train / math.ceil(batches / accumulate), 3),
        "train_seconds_per_epoch": round(epoch_train, 1),
        "validation_seconds": round(one_validation, 1),
        "validations_per_epoch": per_epoch_validations,
        "test_seconds": round(test, 1),
        "planned_seconds": round(cost(steps), 1),
        "epochs": {n: round(cost(planned_steps(batches, n, -1, accumulate)), 1) for n in (1, 2, 3, 4)},
        "cost_model": {"train": vars(train_cost), "eval": vars(eval_cost)},
    }
    if budget_seconds is not None:
        per_step = cost(1) - cost(0)
        plan["budget_seconds"] = budget_seconds
        plan["max_steps_for_budget"] = (
            max(0, int((budget_seconds - cost(0)) / per_step)) if per_step > 0 else None
        )
    return plan


def format_plan(plan: Mapping[str, Any], s: Mapping[str, Any]) -> str:
    """The plan as the lines a user reads before choosing max_epochs / max_steps."""
    lines = [
        f"bert plan on this machine (load average {os.getloadavg()[0]:.1f} while measuring; "
        "a busier machine runs slower):",
        f"  {plan['train_batches_per_epoch']} batches per epoch (batch_size {s['batch_size']}, "
        f"length_bucketing {s['length_bucketing']}); {plan['seconds_per_step']:.2f} s per optimizer step; "
        f"an epoch trains in {format_duration(plan['train_seconds_per_epoch'])}",
        f"  validation {format_duration(plan['validation_seconds'])} x {plan['validations_per_epoch']} per epoch; "
        f"test {format_duration(plan['test_seconds'])}",
        f"  configured (max_epochs {s['max_epochs']}, max_steps {s['max_steps']}): {plan['planned_steps']} steps "
        f"= {plan['planned_epochs']} epochs, about {format_duration(plan['planned_seconds'])} "
        f"(safety stop max_time {s['max_time']})",
        "  epochs: " + ", ".join(f"{n} -> {format_duration(sec)}" for n, sec in plan["epochs"].items()),
    ]
    if "max_steps_for_budget" in plan:
        lines.append(
            f"  a budget of {format_duration(plan['budget_seconds'])} fits max_steps "
            f"{plan['max_steps_for_budget']} (set bert.max_steps, or max_epochs to the whole epochs it covers)"
        )
    return "\n".join(lines)


def plan_run(
    cfg: Mapping[str, Any],
    frame: Any,
    *,
    tokenizer: Any,
    network: Any,
    measured_steps: int = 6,
    budget_seconds: float | None = None,
    class_weights: list[float] | None = None,
) -> dict[str, Any]:
    """Measure `measured_steps` training steps and a few evaluation batches of the configured model
    on the frame's own batches, then plan the configured run (see `make_plan`)."""
    import torch

    from reviewpipe.models.bert.datamodule import PadCollator, ReviewDataModule
    from reviewpipe.models.bert.module import SentimentClassifier
    from reviewpipe.models.bert.train import settings

    s = settings(cfg)
    if s["threads"]:
        torch.set_num_threads(int(s["threads"]))
    data = ReviewDataModule(
        frame,
        tokenizer,
        max_seq_length=int(s["max_seq_length"]),
        batch_size=int(s["batch_size"]),
        eval_batch_size=int(s["eval_batch_size"]),
        length_bucketing=bool(s["length_bucketing"]),
        seed=int(s["seed"]),
        reuse_input_ids=bool(s["reuse_input_ids"]),
    )
    data.setup("fit")
    collate = PadCollator(tokenizer.pad_token_id)
    module = SentimentClassifier(
        network,
        class_weights=class_weights,
        freeze_word_embeddings=bool(s["freeze_word_embeddings"]),
        freeze_layers=int(s["freeze_layers"]),
    )

    def timed(split: str, batch_size: int, train: bool, count: int) -> tuple[list[int], LinearCost]:
        dataset = data.datasets[split]
        sampler = LengthGroupedBatchSampler(
            dataset.lengths,
            batch_size,
            shuffle=train,
            group_by_length=bool(s["length_bucketing"]) or not train,
            seed=int(s["seed"]),
        )
        rows = sampler.all_batches()
        tokens = [len(r) * int(dataset.lengths[r].max()) for r in rows]
        picked = pick_batches(tokens, count)
        batches = [collate([dataset[i] for i in rows[p]]) for p in picked]
        seconds = measure(module, batches, train=train)
        return tokens, LinearCost.fit([tokens[p] for p in picked], seconds)

    train_tokens, train_cost = timed("train", int(s["batch_size"]), True, measured_steps)
    val_tokens, eval_cost = timed("validation", int(s["eval_batch_size"]), False, 3)
    test_tokens = epoch_tokens(
        data.datasets["test"].lengths,
        int(s["eval_batch_size"]),
        bucketing=True,
        seed=int(s["seed"]),
        shuffle=False,
    )
    return make_plan(
        s,
        train_tokens=train_tokens,
        val_tokens=val_tokens,
        test_tokens=test_tokens,
        train_cost=train_cost,
        eval_cost=eval_cost,
        budget_seconds=budget_seconds,
    )
