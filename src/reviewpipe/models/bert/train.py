"""Fit the BERT classifier with a Lightning Trainer built from the `bert` params section.

`fit_bert` is the whole job: seed, data, network, Trainer (DVCLive logger, checkpoints, early
stopping on validation macro-F1, resume from the last checkpoint), test with the best checkpoint,
and a Hugging Face save_pretrained directory plus test metrics for serving and evaluation.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import lightning as L
import pandas as pd
import torch
from lightning.pytorch.callbacks import Callback, Checkpoint, EarlyStopping, ModelCheckpoint, Timer
from lightning.pytorch.callbacks.early_stopping import EarlyStoppingReason

from reviewpipe.models.bert.datamodule import ReviewDataModule
from reviewpipe.models.bert.module import ID2LABEL, SentimentClassifier, build_network
from reviewpipe.progress import ProgressLine, is_terminal

MONITOR = "val/macro_f1"
LAST_CHECKPOINT = "last.ckpt"
RUN_FILE = "run.json"
TEST_METRICS_FILE = "test_metrics.json"
# Settings that change how a run trains (not how it is displayed or where it writes): a checkpoint is
# resumed only by a run whose fingerprint over these and the data matches.
RUN_INDEPENDENT = {
    "enable_progress_bar",
    "progress_every_n_steps",
    "max_time",
    "resume",
    "threads",
    "num_workers",
    "out_dir",
    "ckpt_dir",
    "live_dir",
    "log_every_n_steps",
    "ckpt_every_n_steps",
    "class_weights_uri",
}


def settings(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """The `bert` section checked against the schema (reviewpipe.schema.BertParams): every setting
    comes from conf/bert/, none from code; a missing or unknown key is an error that names it."""
    from pydantic import ValidationError

    from reviewpipe.config import to_dict, validation_error
    from reviewpipe.schema import BertParams

    values = to_dict(cfg)
    try:
        return BertParams.model_validate(values).model_dump()
    except ValidationError as exc:
        raise validation_error(exc, "bert", values) from exc


def resolve_precision(precision: str, accelerator: str) -> str:
    """`auto`: bf16-mixed on a GPU, 32-true on CPU (bf16 autocast on CPU is slower, not faster)."""
    if precision != "auto":
        return precision
    on_gpu = accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available())
    return "bf16-mixed" if on_gpu else "32-true"


class LastCheckpoint(Checkpoint):
    """`last.ckpt`, what an interrupted run resumes from: every N optimizer steps (0: never), after
    every validation and at every epoch end; written to a temporary file, then renamed, so a kill
    mid-write leaves the previous one intact. (ModelCheckpoint's save_last only writes when its
    top-k also saves.) A Checkpoint subclass so Lightning runs it after the best-model callback,
    whose updated state it then saves."""

    def __init__(self, dirpath: str | Path, every_n_steps: int = 0) -> None:
        self.path = Path(dirpath) / LAST_CHECKPOINT
        self.every_n_steps = every_n_steps
        self._saved_step = -1

    def _save(self, trainer: L.Trainer) -> None:
        if trainer.sanity_checking or trainer.fast_dev_run or self._saved_step == trainer.global_step:
            return
        tmp = self.path.with_name(self.path.name + ".tmp")
        trainer.save_checkpoint(tmp)  # every rank takes part; rank 0 writes
        if trainer.is_global_zero:
            os.replace(tmp, self.path)
        self._saved_step = trainer.global_step

    def on_train_batch_end(self, trainer: L.Trainer, *args: Any) -> None:
        if self.every_n_steps and trainer.global_step % self.every_n_steps == 0:
            self._save(trainer)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.state.fn == "fit":
            self._save(trainer)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._save(trainer)


class ProgressLines(Callback):
    """Plain lines for logs (no terminal): the plan at the start, then every N optimizer steps the
    step, loss, elapsed time and ETA, and each validation's scores. `dvc repro` and CI capture
    stdout, where a progress bar shows nothing useful for the minutes a CPU run takes."""

    def __init__(self, every_n_steps: int, name: str = "bert") -> None:
        self.every_n_steps = every_n_steps
        self.name = name
        self.progress: ProgressLine | None = None

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        planned = int(trainer.estimated_stepping_batches)
        self.progress = ProgressLine(self.name, planned, self.every_n_steps, start=trainer.global_step)
        if trainer.is_global_zero:
            resumed = f", resuming at step {trainer.global_step}" if trainer.global_step else ""
            limit = f", safety stop max_time {trainer.max_time}" if getattr(trainer, "max_time", None) else ""
            print(
                f"{self.name}: planned {planned} optimizer steps ({trainer.num_training_batches} batches "
                f"per epoch, max_epochs {trainer.max_epochs}, max_steps {trainer.max_steps}){resumed}{limit}; "
                "the learning rate decays to 0 at the last planned step",
                flush=True,
            )

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if self.progress is None or not trainer.is_global_zero:
            return
        loss = outputs["loss"] if isinstance(outputs, Mapping) else outputs
        lr = trainer.optimizers[0].param_groups[0]["lr"] if trainer.optimizers else None
        fields: dict[str, Any] = {"epoch": f"{trainer.current_epoch + 1}/{trainer.max_epochs}"}
        if loss is not None:
            fields["loss"] = float(loss)
        if lr is not None:
            fields["lr"] = float(lr)
        self.progress.update(int(trainer.global_step), **fields)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or trainer.state.fn != "fit" or not trainer.is_global_zero:
            return
        scores = {
            k.split("/", 1)[1]: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")
        }
        text = ", ".join(f"{k} {v:.4f}" for k, v in sorted(scores.items()))
        print(f"{self.name}: validation at step {trainer.global_step}: {text}", flush=True)


STOP_REASONS = ("planned_steps", "early_stopping", "max_time", "interrupted")


class FitOutcome(Callback):
    """Puts the plan, the steps taken and why fit ended into `trainer.callback_metrics` at the end of
    training. Under ddp_spawn, fit runs in worker processes: callback metrics are what Lightning copies
    back to this one (its trainer never stepped and has no data source to estimate the plan from)."""

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        planned = int(trainer.estimated_stepping_batches)
        reason = stop_reason(trainer, planned)
        trainer.callback_metrics["fit/planned_steps"] = torch.tensor(float(planned))
        trainer.callback_metrics["fit/global_step"] = torch.tensor(float(trainer.global_step))
        trainer.callback_metrics["fit/stopped_by"] = torch.tensor(float(STOP_REASONS.index(reason)))


def fit_outcome(trainer: L.Trainer) -> tuple[int, int, str]:
    """(planned optimizer steps, steps taken, why fit ended) as FitOutcome recorded them, in any process."""
    metrics = trainer.callback_metrics
    return (
        int(metrics["fit/planned_steps"]),
        int(metrics["fit/global_step"]),
        STOP_REASONS[int(metrics["fit/stopped_by"])],
    )


def stop_reason(trainer: L.Trainer, planned_steps: int) -> str:
    """Why fit ended: `planned_steps` (the schedule ran to its end), `early_stopping`, or `max_time`
    (the safety stop: the run is incomplete, and a rerun with a larger max_time resumes it)."""
    if trainer.global_step >= planned_steps:
        return "planned_steps"
    for callback in trainer.callbacks:
        if (
            isinstance(callback, EarlyStopping)
            and callback.stopping_reason != EarlyStoppingReason.NOT_STOPPED
        ):
            return "early_stopping"
    for callback in trainer.callbacks:
        if isinstance(callback, Timer) and (callback.time_remaining() or 0) <= 0:
            return "max_time"
    return "interrupted"


def show_progress_bar(setting: Any) -> bool:
    """`enable_progress_bar`: true/false, or `auto` (a bar on a terminal, plain lines in a log)."""
    return is_terminal() if str(setting).lower() == "auto" else bool(setting)


def live_logger(live_dir: str | Path, resume: bool) -> Any:
    """DVCLive's Lightning logger; resume=True continues the metrics history already in live_dir."""
    from dvclive.lightning import DVCLiveLogger

    # dvcyaml=False: dvc.yaml already declares this stage's metrics and plots.
    return DVCLiveLogger(dir=str(live_dir), resume=resume, dvcyaml=False, save_dvc_exp=False, report=None)


class CpuThreads(Callback):
    """torch CPU threads in every training process (spawned DDP workers do not inherit the setting)."""

    def __init__(self, threads: int) -> None:
        self.threads = threads

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        torch.set_num_threads(self.threads)


def build_trainer(
    cfg: Mapping[str, Any],
    ckpt_dir: str | Path,
    live_dir: str | Path | None,
    extra_callbacks: list[Callback] | None = None,
    resume_logs: bool = False,
    checkpointing: bool = True,
) -> L.Trainer:
    """A Trainer from the section: best-by-macro-F1 and rolling last checkpoints (unless
    `checkpointing` is off, e.g. for tuning trials that keep only a score), early stopping,
    DVCLive (when live_dir is given), precision by accelerator."""
    s = settings(cfg)
    callbacks: list[Callback] = []
    if checkpointing:
        callbacks += [
            ModelCheckpoint(
                dirpath=str(Path(ckpt_dir) / "best"),
                filename="epoch{epoch:02d}-step{step:05d}",
                auto_insert_metric_name=False,
                monitor=MONITOR,
                mode="max",
                save_top_k=1,
            ),
            LastCheckpoint(ckpt_dir, int(s["ckpt_every_n_steps"])),
        ]
    # Checked right after each validation: on resuming from a checkpoint taken there, the epoch-end
    # hooks run again without validation metrics.
    callbacks.append(
        EarlyStopping(
            monitor=MONITOR,
            mode="max",
            check_on_train_epoch_end=False,
            patience=int(s["early_stopping_patience"]),
        )
    )
    callbacks.append(FitOutcome())
    callbacks += extra_callbacks or []
    logger: Any = live_logger(live_dir, resume_logs) if live_dir is not None else False
    if s["threads"]:
        callbacks.append(CpuThreads(int(s["threads"])))
    progress_bar = show_progress_bar(s["enable_progress_bar"])
    if not progress_bar and int(s["progress_every_n_steps"]) > 0:
        callbacks.append(ProgressLines(int(s["progress_every_n_steps"])))
    return L.Trainer(
        accelerator=s["accelerator"],
        devices=s["devices"],
        num_nodes=int(s["num_nodes"]),
        strategy=s["strategy"],
        precision=resolve_precision(str(s["precision"]), str(s["accelerator"])),
        max_epochs=int(s["max_epochs"]),
        max_steps=int(s["max_steps"]),
        max_time=s["max_time"] or None,
        accumulate_grad_batches=int(s["accumulate_grad_batches"]),
        gradient_clip_val=s["gradient_clip_val"],
        gradient_clip_algorithm="norm",
        limit_train_batches=s["limit_train_batches"],
        limit_val_batches=s["limit_val_batches"],
        val_check_interval=s["val_check_interval"],
        fast_dev_run=s["fast_dev_run"],
        log_every_n_steps=int(s["log_every_n_steps"]),
        enable_progress_bar=progress_bar,
        enable_model_summary=False,
        # The datamodule's batch sampler splits batches across ranks itself, keeping length buckets intact.
        use_distributed_sampler=False,
        callbacks=callbacks,
        logger=logger,
        default_root_dir=str(ckpt_dir),
        deterministic=False,
        enable_checkpointing=checkpointing,
    )


def run_fingerprint(cfg: Mapping[str, Any], frame: pd.DataFrame, class_weights: list[float] | None) -> str:
    """Hash of the training settings and the rows (ids, labels, splits, texts) a run trains on."""
    training = {k: v for k, v in sorted(settings(cfg).items()) if k not in RUN_INDEPENDENT}
    columns = [c for c in ("review_id", "label_id", "split_type", "review_body") if c in frame.columns]
    rows = pd.util.hash_pandas_object(frame[columns], index=False).to_numpy()
    digest = hashlib.sha256(json.dumps([training, class_weights], sort_keys=True, default=str).encode())
    digest.update(rows.tobytes())
    return digest.hexdigest()[:16]


def _is_launching_rank() -> bool:
    # Under `strategy: ddp` Lightning re-runs the command for ranks > 0 with these set.
    return os.environ.get("LOCAL_RANK", "0") == "0" and os.environ.get("NODE_RANK", "0") == "0"


def prepare_checkpoint_dir(ckpt_dir: str | Path, fingerprint: str, resume: bool) -> bool:
    """True when `ckpt_dir` holds an interrupted run of the same settings and data to resume.

    Otherwise (another fingerprint, a finished run, or resume off) the old checkpoints are removed and
    the directory is marked as a new run: DVC keeps the directory between runs (persist), so a
    finished run's last.ckpt must never be mistaken for an interrupted one.
    """
    ckpt_dir = Path(ckpt_dir)
    run_file = ckpt_dir / RUN_FILE
    previous = json.loads(run_file.read_text()) if run_file.exists() else {}
    if (
        resume
        and previous.get("fingerprint") == fingerprint
        and previous.get("status") == "running"
        and (ckpt_dir / LAST_CHECKPOINT).exists()
    ):
        return True
    if _is_launching_rank():
        if ckpt_dir.exists():
            for old in ckpt_dir.rglob("*.ckpt"):
                old.unlink()
        ckpt_dir.mkdir(parents=True, exist_ok=True)
        run_file.write_text(json.dumps({"fingerprint": fingerprint, "status": "running"}) + "\n")
    return False


def mark_finished(ckpt_dir: str | Path) -> None:
    run_file = Path(ckpt_dir) / RUN_FILE
    run = json.loads(run_file.read_text()) if run_file.exists() else {}
    run_file.write_text(json.dumps({**run, "status": "finished"}) + "\n")


def best_checkpoint(trainer: L.Trainer) -> str | None:
    for cb in trainer.checkpoint_callbacks:
        if isinstance(cb, ModelCheckpoint) and cb.monitor == MONITOR and cb.best_model_path:
            return cb.best_model_path
    return None


def fit_bert(
    cfg: Mapping[str, Any],
    frame: pd.DataFrame,
    *,
    out_dir: str | Path,
    ckpt_dir: str | Path,
    live_dir: str | Path | None = None,
    class_weights: list[float] | None = None,
    network: torch.nn.Module | None = None,
    tokenizer: Any | None = None,
    extra_callbacks: list[Callback] | None = None,
) -> dict[str, Any]:
    """Train on the frame's train split, pick the best epoch on validation macro-F1, test it, and
    write `out_dir` (save_pretrained model + tokenizer + test_metrics.json). Returns the test metrics.

    An existing `ckpt_dir/last.ckpt` is resumed from when `resume` is true (an interrupted run).
    `network`/`tokenizer` default to the configured checkpoint; tests pass tiny ones.
    """
    s = settings(cfg)
    started = time.perf_counter()
    if s["threads"]:
        torch.set_num_threads(int(s["threads"]))
    L.seed_everything(int(s["seed"]), workers=True)
    if tokenizer is None:
        from transformers import AutoTokenizer

        from reviewpipe.hf import resolve_checkpoint

        tokenizer = AutoTokenizer.from_pretrained(resolve_checkpoint(str(s["checkpoint"])))
    datamodule = ReviewDataModule(
        frame,
        tokenizer,
        max_seq_length=int(s["max_seq_length"]),
        batch_size=int(s["batch_size"]),
        eval_batch_size=int(s["eval_batch_size"]),
        length_bucketing=bool(s["length_bucketing"]),
        num_workers=int(s["num_workers"]),
        seed=int(s["seed"]),
        reuse_input_ids=bool(s["reuse_input_ids"]),
    )
    module = SentimentClassifier(
        network if network is not None else build_network(str(s["checkpoint"]), str(s["pooling"])),
        learning_rate=float(s["learning_rate"]),
        weight_decay=float(s["weight_decay"]),
        warmup_ratio=float(s["warmup_ratio"]),
        class_weights=class_weights,
        freeze_word_embeddings=bool(s["freeze_word_embeddings"]),
        freeze_layers=int(s["freeze_layers"]),
    )

    last = Path(ckpt_dir) / LAST_CHECKPOINT
    resume = prepare_checkpoint_dir(
        ckpt_dir, run_fingerprint(s, frame, class_weights), bool(s["resume"]) and not s["fast_dev_run"]
    )
    if resume and live_dir is not None:
        trim_live_history(live_dir, _checkpoint_step(last))
    trainer = build_trainer(s, ckpt_dir, live_dir, extra_callbacks, resume_logs=resume)
    trainer.fit(module, datamodule=datamodule, ckpt_path=str(last) if resume else None)
    planned, steps, stopped_by = fit_outcome(trainer)

    best = best_checkpoint(trainer)
    if live_dir is not None and not s["fast_dev_run"]:
        # Test metrics join the fit history: a fresh Live (as ddp_spawn's test workers would create
        # from the fit logger) would start the directory over.
        trainer.loggers = [live_logger(live_dir, resume=True)]
    results = trainer.test(module, datamodule=datamodule, ckpt_path=best, verbose=False)
    if best:  # the weights to ship; loaded here too, since test under ddp_spawn ran in other processes
        state = torch.load(best, map_location="cpu", weights_only=True)["state_dict"]
        module.load_state_dict(state)
    metrics = {key.split("/", 1)[1]: float(value) for key, value in (results[0] if results else {}).items()}
    metrics.update(
        {
            # Counted from the frame: under ddp_spawn the datamodule is set up in the worker processes only.
            "test_rows": int((frame["split_type"] == "test").sum()),
            "train_rows": int((frame["split_type"] == "train").sum()),
            "best_checkpoint": Path(best).name if best else None,
            "global_step": steps,
            # The schedule is planned from max_epochs/max_steps; max_time is only a safety stop, and a run
            # it stopped is incomplete (its learning rate never decayed): rerun with a larger max_time to resume.
            "planned_steps": planned,
            "stopped_by": stopped_by,
            "complete": stopped_by in ("planned_steps", "early_stopping") or bool(s["fast_dev_run"]),
            "resumed": resume,
            "world_size": int(trainer.world_size),
            "wall_seconds": round(time.perf_counter() - started, 1),
        }
    )
    if trainer.is_global_zero:
        save_pretrained(module, tokenizer, out_dir, metrics, max_seq_length=int(s["max_seq_length"]))
        if live_dir is not None and not s["fast_dev_run"]:
            record_run(trainer, metrics)
        if metrics["complete"]:
            mark_finished(ckpt_dir)  # an incomplete run stays resumable from last.ckpt
        else:
            print(
                f"bert: INCOMPLETE: max_time stopped training at step {metrics['global_step']} of "
                f"{planned} planned; the model is saved, but its learning rate never decayed. Raise "
                "bert.max_time (or lower max_epochs/max_steps) and rerun: training resumes from "
                f"{last}.",
                flush=True,
            )
    return metrics


def record_run(trainer: L.Trainer, metrics: Mapping[str, Any]) -> None:
    """The run's plan and outcome in DVCLive's metrics.json (what `dvc metrics show` lists)."""
    for logger in trainer.loggers:
        live = getattr(logger, "experiment", None)
        if live is not None and hasattr(live, "summary"):
            live.summary["run"] = {
                "planned_steps": int(metrics["planned_steps"]),
                "global_step": int(metrics["global_step"]),
                "complete": int(bool(metrics["complete"])),
            }
            live.make_summary()


def _checkpoint_step(path: Path) -> int:
    return int(torch.load(path, map_location="cpu", weights_only=True, mmap=True)["global_step"])


def trim_live_history(live_dir: str | Path, step: int) -> None:
    """Drop the DVCLive rows the interrupted run logged after its last checkpoint (taken at global
    step `step`; Lightning logs the rows before it with smaller steps): the resumed run logs them again."""
    for tsv in (Path(live_dir) / "plots" / "metrics").rglob("*.tsv"):
        rows = pd.read_csv(tsv, sep="\t")
        if "step" in rows.columns and (rows["step"] >= step).any():
            rows[rows["step"] < step].to_csv(tsv, sep="\t", index=False)


def save_pretrained(
    module: SentimentClassifier,
    tokenizer: Any,
    out_dir: str | Path,
    metrics: Mapping[str, Any],
    max_seq_length: int | None = None,
) -> None:
    """The serving artefact: HF model + tokenizer + label map, and the test metrics beside them.
    The tokenizer's model_max_length becomes the training length, so serving truncates alike."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    network = module.network
    network.config.id2label = dict(ID2LABEL)
    network.config.label2id = {label: i for i, label in ID2LABEL.items()}
    network.save_pretrained(out)
    previous = tokenizer.model_max_length
    tokenizer.model_max_length = max_seq_length or previous
    try:
        tokenizer.save_pretrained(out)
    finally:
        tokenizer.model_max_length = previous
    (out / TEST_METRICS_FILE).write_text(json.dumps(dict(metrics), indent=2, sort_keys=True) + "\n")
