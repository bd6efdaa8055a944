"""Objectives: train on the train split, score macro-F1 on the validation split (never the test split).

Both report intermediate scores so a pruner can stop a poor trial early:
- baseline: the model is fitted on growing, nested, stratified fractions of the train split
  (e.g. 25 %, 50 %, 100 %); each fit's validation macro-F1 is one step, a learning curve.
- bert: every Lightning validation check reports val/macro_f1 (`OptunaPruning`, a small version of
  optuna-integration's PyTorchLightningPruningCallback); the score is the best check, as the bert
  stage keeps the best checkpoint.
"""

from __future__ import annotations

import gc
import tempfile
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import optuna
import pandas as pd
from lightning.pytorch.callbacks import Callback

from reviewpipe.errors import ReviewpipeError
from reviewpipe.storage import StorageOptions
from reviewpipe.tuning.study import Objective

TUNING_SPLITS = ("train", "validation")
LABEL = "label_id"


def read_tuning_data(data_dir: str, options: StorageOptions | None = None) -> dict[str, pd.DataFrame]:
    """The prepared train and validation splits (the test split is not read)."""
    from reviewpipe.models.splits import read_split

    return {
        split: read_split(data_dir, split, options, required=("review_body", LABEL))
        for split in TUNING_SPLITS
    }


def stratified_sample(frame: pd.DataFrame, rows: int | None, seed: int) -> pd.DataFrame:
    """At most `rows` rows, each class keeping its share (for quick tuning on a large split)."""
    if rows is None or len(frame) <= rows:
        return frame
    order = nested_order(frame[LABEL].to_numpy(), seed)
    return frame.iloc[np.sort(order[:rows])]


def nested_order(labels: np.ndarray, seed: int) -> np.ndarray:
    """A row order whose every prefix is (nearly) stratified: classes interleaved in proportion.

    Taking the first k rows gives a stratified subset, and smaller subsets are inside larger ones,
    so a learning curve's steps differ only by the data added."""
    rng = np.random.default_rng(seed)
    keys = np.empty(len(labels))
    for label in np.unique(labels):
        idx = np.flatnonzero(labels == label)
        # Rank within the class, scaled to [0, 1): the class's rows spread evenly over the order.
        keys[rng.permutation(idx)] = (np.arange(len(idx)) + rng.random()) / len(idx)
    return np.argsort(keys, kind="stable")


class OptunaPruning(Callback):
    """Reports `monitor` after each validation check as step 0, 1, 2, ... and prunes when told.

    Steps count validation checks rather than optimizer steps, so trials with different batch
    sizes are compared after the same share of training."""

    def __init__(self, trial: optuna.Trial, monitor: str) -> None:
        self.trial = trial
        self.monitor = monitor
        self.checks = 0
        self.best: float | None = None

    def on_validation_end(self, trainer: Any, pl_module: Any) -> None:
        if trainer.sanity_checking:
            return
        value = trainer.callback_metrics.get(self.monitor)
        if value is None:
            return
        score = float(value)
        self.best = score if self.best is None else max(self.best, score)
        step, self.checks = self.checks, self.checks + 1
        self.trial.report(score, step)
        if self.trial.should_prune():
            raise optuna.TrialPruned(f"{self.monitor}={score:.4f} at validation check {step}")


def bert_objective(
    data: Mapping[str, pd.DataFrame],
    objective_cfg: Mapping[str, Any],
    *,
    tokenizer: Any | None = None,
    network_factory: Callable[[Mapping[str, Any]], Any] | None = None,
    class_weights: list[float] | None = None,
) -> Objective:
    """Fine-tune with the trial's `bert` settings; the value is the best validation macro-F1.

    `objective_cfg`: `fixed` (bert settings every trial uses, e.g. limit_train_batches),
    `max_train_rows` / `max_validation_rows` (stratified samples, for quick tuning). The texts are
    tokenised once, here, and every trial reuses the ids. Tests pass a tiny tokenizer and network."""
    import lightning as L
    import torch

    from reviewpipe.models.bert.datamodule import ReviewDataModule
    from reviewpipe.models.bert.module import SentimentClassifier, build_network
    from reviewpipe.models.bert.train import MONITOR, build_trainer, settings

    fixed = dict(objective_cfg.get("fixed") or {})
    seed = int(objective_cfg.get("seed", 42))
    train = stratified_sample(data["train"], objective_cfg.get("max_train_rows"), seed)
    validation = stratified_sample(data["validation"], objective_cfg.get("max_validation_rows"), seed)
    frame = pd.concat(
        [train.assign(split_type="train"), validation.assign(split_type="validation")], ignore_index=True
    )[["review_body", LABEL, "split_type"]]
    tokenized: dict[tuple[str, int], pd.DataFrame] = {}

    def encoded(checkpoint: str, max_length: int) -> tuple[Any, pd.DataFrame]:
        nonlocal tokenizer
        if tokenizer is None:
            from transformers import AutoTokenizer

            from reviewpipe.hf import resolve_checkpoint

            tokenizer = AutoTokenizer.from_pretrained(resolve_checkpoint(checkpoint))
        key = (checkpoint, max_length)
        if key not in tokenized:
            ids = tokenizer(
                frame["review_body"].fillna("").astype(str).tolist(), truncation=True, max_length=max_length
            )["input_ids"]
            tokenized[key] = frame.assign(input_ids=ids)
        return tokenizer, tokenized[key]

    def objective(trial: optuna.Trial, cfg: dict[str, Any]) -> float:
        s = settings({**cfg, **fixed})
        if s["threads"]:
            torch.set_num_threads(int(s["threads"]))
        L.seed_everything(int(s["seed"]), workers=True, verbose=False)
        tok, rows = encoded(str(s["checkpoint"]), int(s["max_seq_length"]))
        datamodule = ReviewDataModule(
            rows,
            tok,
            max_seq_length=int(s["max_seq_length"]),
            batch_size=int(s["batch_size"]),
            eval_batch_size=int(s["eval_batch_size"]),
            length_bucketing=bool(s["length_bucketing"]),
            num_workers=int(s["num_workers"]),
            seed=int(s["seed"]),
            reuse_input_ids=True,
        )
        network = (
            network_factory(s) if network_factory else build_network(str(s["checkpoint"]), str(s["pooling"]))
        )
        module = SentimentClassifier(
            network,
            learning_rate=float(s["learning_rate"]),
            weight_decay=float(s["weight_decay"]),
            warmup_ratio=float(s["warmup_ratio"]),
            class_weights=class_weights if s["class_weights"] else None,
            freeze_word_embeddings=bool(s["freeze_word_embeddings"]),
            freeze_layers=int(s["freeze_layers"]),
        )
        pruning = OptunaPruning(trial, MONITOR)
        with tempfile.TemporaryDirectory(prefix="tune-bert-") as scratch:
            # A trial keeps no weights, only its score: no checkpoint writers (hundreds of MB a save).
            trainer = build_trainer(
                {**s, "fast_dev_run": False}, scratch, None, [pruning], checkpointing=False
            )
            try:
                trainer.fit(module, datamodule=datamodule)
            finally:
                del trainer, module, network, datamodule
                gc.collect()  # release this trial's network before the next one is built
        if pruning.best is None:
            raise ReviewpipeError(
                "the BERT trial ran no validation check; raise limit_val_batches / "
                "limit_train_batches in conf/tune/bert.yaml `objective.fixed`."
            )
        return pruning.best

    return objective


def baseline_objective(
    data: Mapping[str, pd.DataFrame],
    objective_cfg: Mapping[str, Any],
    *,
    data_dir: str = "data/prepared",
    options: StorageOptions | None = None,
) -> Objective:
    """Fit the TF-IDF baseline with the trial's settings; the value is validation macro-F1 on all train rows.

    `objective_cfg.fractions` (e.g. [0.25, 0.5, 1.0]) are the learning-curve steps reported to the
    pruner; the last must be 1.0 so the value is the full-data score. `max_train_rows` samples."""
    from reviewpipe.models.baseline import score, train_baseline
    from reviewpipe.schema import BaselineParams
    from reviewpipe.stages.baseline import resolve_class_weight

    fractions = [float(f) for f in objective_cfg.get("fractions") or [1.0]]
    if any(not 0 < f <= 1 for f in fractions) or fractions != sorted(fractions) or fractions[-1] != 1.0:
        raise ReviewpipeError(
            f"tune.objective.fractions must rise within (0, 1] and end at 1.0 (got {fractions})."
        )
    seed = int(objective_cfg.get("seed", 42))
    train = stratified_sample(data["train"], objective_cfg.get("max_train_rows"), seed)
    validation = stratified_sample(data["validation"], objective_cfg.get("max_validation_rows"), seed)
    order = nested_order(train[LABEL].to_numpy(), seed)
    weights: dict[Any, Any] = {}

    def objective(trial: optuna.Trial, cfg: dict[str, Any]) -> float:
        settings = BaselineParams.model_validate(cfg)  # the baseline section with this trial's values
        choice = settings.classifier.class_weight
        if choice not in weights:
            weights[choice] = resolve_class_weight(choice, data_dir, options)
        value = float("nan")
        for step, fraction in enumerate(fractions):
            rows = train.iloc[np.sort(order[: max(3, round(fraction * len(train)))])]
            model = train_baseline(rows, settings, weights[choice])
            value = score(model, validation, settings.text_column)["macro_f1"]
            trial.report(value, step)
            # After the full-data fit the trial is done: a complete result is never thrown away.
            if fraction < 1.0 and trial.should_prune():
                raise optuna.TrialPruned(f"macro-F1 {value:.4f} with {fraction:.0%} of the train split")
        return value

    return objective


def complete_section(model: str, section: Mapping[str, Any]) -> dict[str, Any]:
    """The section as its trainer reads it: for bert, validated against the schema (every key present)."""
    if model == "bert":
        from reviewpipe.models.bert.train import settings

        return settings(section)
    return dict(section)


def make_objective(
    settings: Any,
    section: Mapping[str, Any],
    data: Mapping[str, pd.DataFrame],
    options: StorageOptions | None = None,
) -> Objective:
    """The objective for `settings.model` over the prepared train/validation frames."""
    if settings.model == "bert":
        weights = None
        if section.get("class_weights"):
            from reviewpipe.models.splits import read_class_weights

            # The weights of the data the trials train on (tune.data_dir), as the baseline objective does.
            weights = list(read_class_weights(settings.data_dir, options).values())
        return bert_objective(data, settings.objective, class_weights=weights)
    if settings.model == "baseline":
        return baseline_objective(data, settings.objective, data_dir=settings.data_dir, options=options)
    raise ReviewpipeError(f"no tuning objective for model {settings.model!r}; use baseline or bert.")
