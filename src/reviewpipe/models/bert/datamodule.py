"""Feature rows -> padded tensor batches for the BERT stage (LightningDataModule).

Rows come from the feature store (review_id, input_ids, attention_mask, label_id, split_type, ...);
a frame without `input_ids` is tokenised from `review_body` here. Batches are padded only to their
own longest row (dynamic padding); length bucketing groups rows of similar length into a batch so
that little compute is spent on padding, and shuffles the batches (seeded, per epoch).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import lightning as L
import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from reviewpipe.errors import ReviewpipeError

SPLITS: tuple[str, str, str] = ("train", "validation", "test")
REQUIRED_COLUMNS: tuple[str, ...] = ("label_id", "split_type")


def _row_ids(input_ids: Any, attention_mask: Any | None) -> list[int]:
    """One stored row -> its unpadded token ids (padding positions have attention_mask 0)."""
    ids = np.asarray(input_ids, dtype=np.int64)
    if attention_mask is not None and len(attention_mask) == len(ids):
        ids = ids[np.asarray(attention_mask).astype(bool)]
    return ids.tolist()


def truncate(ids: list[int], max_length: int, sep_token_id: int | None) -> list[int]:
    """Cut to max_length, keeping the closing [SEP] so the model still sees a well-formed sequence."""
    if len(ids) <= max_length:
        return ids
    if sep_token_id is not None and ids[-1] == sep_token_id:
        return ids[: max_length - 1] + [sep_token_id]
    return ids[:max_length]


def encode_frame(
    frame: pd.DataFrame, tokenizer: Any, max_length: int, reuse_input_ids: bool = True
) -> list[list[int]]:
    """Token ids per row: the stored `input_ids` (unpadded, truncated) or `review_body` tokenised."""
    if reuse_input_ids and "input_ids" in frame.columns:
        masks = frame["attention_mask"] if "attention_mask" in frame.columns else [None] * len(frame)
        return [
            truncate(_row_ids(ids, mask), max_length, tokenizer.sep_token_id)
            for ids, mask in zip(frame["input_ids"], masks, strict=True)
        ]
    if "review_body" not in frame.columns:
        raise ReviewpipeError(
            "feature rows have neither `input_ids` nor `review_body`; rebuild the feature group "
            "(`dvc repro features`) so the BERT stage has text or tokens to train on."
        )
    texts = frame["review_body"].fillna("").astype(str).tolist()
    if not texts:  # an empty split; fast tokenizers fail on an empty batch
        return []
    return tokenizer(texts, truncation=True, max_length=max_length)["input_ids"]


class EncodedReviews(Dataset):
    """Token ids and class ids of one split; items are (ids, label) pairs padded later by the collator."""

    def __init__(self, input_ids: list[list[int]], labels: Sequence[int]) -> None:
        if len(input_ids) != len(labels):
            raise ValueError("input_ids and labels differ in length")
        self.input_ids = input_ids
        self.labels = np.asarray(labels, dtype=np.int64)
        self.lengths = np.fromiter((len(ids) for ids in input_ids), dtype=np.int64, count=len(input_ids))

    def __len__(self) -> int:
        return len(self.input_ids)

    def __getitem__(self, index: int) -> tuple[list[int], int]:
        return self.input_ids[index], int(self.labels[index])


class PadCollator:
    """Pads a batch to its own longest row; a class (not a closure) so worker processes can pickle it."""

    def __init__(self, pad_token_id: int) -> None:
        self.pad_token_id = pad_token_id

    def __call__(self, items: list[tuple[list[int], int]]) -> dict[str, torch.Tensor]:
        width = max(len(ids) for ids, _ in items)
        input_ids = torch.full((len(items), width), self.pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros((len(items), width), dtype=torch.long)
        for row, (ids, _) in enumerate(items):
            input_ids[row, : len(ids)] = torch.as_tensor(ids, dtype=torch.long)
            attention_mask[row, : len(ids)] = 1
        labels = torch.as_tensor([label for _, label in items], dtype=torch.long)
        return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}


def _distributed_world() -> tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_world_size(), torch.distributed.get_rank()
    return 1, 0


class LengthGroupedBatchSampler(Sampler[list[int]]):
    """Batches of row indices: shuffled (seed + epoch), optionally grouped by length, split across ranks.

    With grouping, the shuffled rows are cut into pools of `pool_batches` batches, each pool is sorted
    by length and cut into batches, and the batch order is shuffled again, so batches hold rows of
    similar length yet every epoch sees a different mix. Each rank takes every world_size-th batch;
    when training, the batch list is padded with its first batches so all ranks step equally often
    (DDP would otherwise wait forever on a rank with one batch fewer).
    """

    def __init__(
        self,
        lengths: Sequence[int],
        batch_size: int,
        *,
        shuffle: bool,
        group_by_length: bool,
        seed: int = 0,
        pool_batches: int = 50,
        even_ranks: bool | None = None,
    ) -> None:
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        self.lengths = np.asarray(lengths)
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.group_by_length = group_by_length
        self.seed = seed
        self.pool_batches = pool_batches
        self.even_ranks = shuffle if even_ranks is None else even_ranks
        self.epoch = 0

    @property
    def sampler(self) -> LengthGroupedBatchSampler:
        # Lightning calls set_epoch on `dataloader.batch_sampler.sampler` (torch's BatchSampler layout).
        return self

    def set_epoch(self, epoch: int) -> None:
        """Lightning calls this at every epoch start: a new, reproducible order per epoch."""
        self.epoch = epoch

    def all_batches(self) -> list[list[int]]:
        """Every rank's batches, in order, for the current epoch."""
        rng = np.random.default_rng([self.seed, self.epoch])
        order = rng.permutation(len(self.lengths)) if self.shuffle else np.arange(len(self.lengths))
        if self.group_by_length:
            pool = len(order) if not self.shuffle else self.batch_size * self.pool_batches
            order = (
                np.concatenate(
                    [
                        chunk[np.argsort(-self.lengths[chunk], kind="stable")]
                        for chunk in np.array_split(order, max(1, -(-len(order) // pool)))
                    ]
                )
                if len(order)
                else order
            )
        batches = [order[i : i + self.batch_size].tolist() for i in range(0, len(order), self.batch_size)]
        if self.shuffle and self.group_by_length:
            batches = [batches[i] for i in rng.permutation(len(batches))]
        return batches

    def _rank_batches(self) -> list[list[int]]:
        batches = self.all_batches()
        world, rank = _distributed_world()
        if world == 1:
            return batches
        if self.even_ranks and batches and len(batches) % world:
            batches = batches + batches[: world - len(batches) % world]
        return batches[rank::world]

    def __iter__(self) -> Iterator[list[int]]:
        yield from self._rank_batches()

    def __len__(self) -> int:
        n = -(-len(self.lengths) // self.batch_size)
        world, rank = _distributed_world()
        if world == 1:
            return n
        if self.even_ranks:
            return -(-n // world)
        return len(range(rank, n, world))


class ResumableDataLoader(DataLoader):
    """A DataLoader that knows its position within the epoch and can resume from it.

    After `load_state_dict`, the first pass over the current epoch skips the batches already
    trained on instead of repeating them (the batch order is a function of seed and epoch).
    ReviewDataModule saves and restores the position through Lightning checkpoints.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._consumed = 0
        self._skip: tuple[int, int] | None = None

    def __iter__(self) -> Iterator[Any]:
        epoch = getattr(self.batch_sampler, "epoch", 0)
        skip = self._skip[1] if self._skip is not None and self._skip[0] == epoch else 0
        self._skip = None
        self._consumed = 0
        iterator = super().__iter__()
        for _ in range(skip):  # only the indices are drawn again; the skipped batches are not trained on
            next(iterator)
            self._consumed += 1
        for batch in iterator:
            self._consumed += 1
            yield batch

    def state_dict(self) -> dict[str, int]:
        return {"epoch": int(getattr(self.batch_sampler, "epoch", 0)), "consumed": self._consumed}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self._skip = (int(state["epoch"]), int(state["consumed"]))

    def __len__(self) -> int:
        return len(self.batch_sampler)


class ReviewDataModule(L.LightningDataModule):
    """Train/validation/test loaders from one feature frame with a `split_type` column."""

    def __init__(
        self,
        frame: pd.DataFrame,
        tokenizer: Any,
        *,
        max_seq_length: int = 128,
        batch_size: int = 16,
        eval_batch_size: int = 64,
        length_bucketing: bool = True,
        num_workers: int = 0,
        seed: int = 42,
        reuse_input_ids: bool = True,
    ) -> None:
        super().__init__()
        missing = [c for c in REQUIRED_COLUMNS if c not in frame.columns]
        if missing:
            raise ReviewpipeError(
                f"feature rows lack columns {missing}; expected {list(REQUIRED_COLUMNS)} "
                "plus input_ids or review_body. Rebuild the features stage."
            )
        self.frame = frame
        self.tokenizer = tokenizer
        self.max_seq_length = max_seq_length
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size
        self.length_bucketing = length_bucketing
        self.num_workers = num_workers
        self.seed = seed
        self.reuse_input_ids = reuse_input_ids
        self.datasets: dict[str, EncodedReviews] = {}
        self._train_loader: ResumableDataLoader | None = None
        self._train_position: dict[str, int] | None = None

    def split_frame(self, split: str) -> pd.DataFrame:
        return self.frame[self.frame["split_type"] == split]

    def setup(self, stage: str | None = None) -> None:
        if self.datasets:
            return
        for split in SPLITS:
            rows = self.split_frame(split)
            if split == "train" and rows.empty:
                raise ReviewpipeError(
                    "the feature store has no `train` rows; run the prepare and features "
                    "stages (split_type must be train/validation/test)."
                )
            self.datasets[split] = EncodedReviews(
                encode_frame(rows, self.tokenizer, self.max_seq_length, self.reuse_input_ids),
                rows["label_id"].astype("int64").to_numpy(),
            )

    def _loader(self, split: str, train: bool) -> DataLoader:
        dataset = self.datasets[split]
        sampler = LengthGroupedBatchSampler(
            dataset.lengths,
            self.batch_size if train else self.eval_batch_size,
            shuffle=train,
            group_by_length=self.length_bucketing or not train,
            seed=self.seed,
        )
        loader_class = ResumableDataLoader if train else DataLoader
        # Its own generator: every DataLoader iterator otherwise draws a worker seed from the global
        # RNG, shifting the dropout masks of a resumed run away from an uninterrupted one.
        return loader_class(
            dataset,
            batch_sampler=sampler,
            collate_fn=PadCollator(self.tokenizer.pad_token_id),
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            generator=torch.Generator().manual_seed(self.seed),
        )

    def train_dataloader(self) -> DataLoader:
        loader = self._loader("train", train=True)
        if self._train_position is not None:
            loader.load_state_dict(self._train_position)
            self._train_position = None
        self._train_loader = loader
        return loader

    # The train loader's position travels in Lightning checkpoints through the datamodule: Lightning
    # restores datamodule state before it first builds the train loader, whereas it hands loader
    # state only to a loader it builds after the restore (not so when the LR schedule asks
    # `estimated_stepping_batches` early), so a mid-epoch resume would replay the epoch's first batches.
    def state_dict(self) -> dict[str, Any]:
        return {"train_position": self._train_loader.state_dict()} if self._train_loader is not None else {}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._train_position = state_dict.get("train_position")

    def val_dataloader(self) -> DataLoader:
        return self._loader("validation", train=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", train=False)
