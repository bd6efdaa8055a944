"""Hash split and balancing: stratification, stability under new data, order independence."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from reviewpipe.errors import ReviewpipeError
from reviewpipe.prep.balance import balance, balanced_class_weights
from reviewpipe.prep.split import SPLITS, apportion, assign_splits, stable_uniform

COURSE = {"train": 0.90, "validation": 0.05, "test": 0.05}
NATURAL = {"train": 0.80, "validation": 0.10, "test": 0.10}


def frame(n: int, start: int = 0, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "review_id": np.arange(start, start + n),
            "sentiment": rng.choice([-1, 0, 1], size=n, p=[0.15, 0.25, 0.60]),
            "product_category": rng.choice(
                ["Dresses", "Knits", "Blouses", "Trend"], size=n, p=[0.4, 0.3, 0.25, 0.05]
            ),
        }
    )


def test_stable_uniform_depends_on_id_and_seed_only() -> None:
    a = stable_uniform([1, 2, 3], seed=42)
    assert np.array_equal(a, stable_uniform([1, 2, 3], seed=42))
    assert np.array_equal(a[::-1], stable_uniform([3, 2, 1], seed=42))
    assert not np.array_equal(a, stable_uniform([1, 2, 3], seed=43))
    assert not np.array_equal(a, stable_uniform([1, 2, 3], seed=42, salt="balance"))
    assert ((a >= 0) & (a < 1)).all()


@pytest.mark.parametrize("n", [0, 1, 2, 10, 19, 20, 21, 333, 1001])
@pytest.mark.parametrize("fractions", [COURSE, NATURAL])
def test_apportion_within_one_row_and_sums(n: int, fractions: dict[str, float]) -> None:
    counts = apportion(n, fractions)
    assert sum(counts.values()) == n
    assert all(abs(counts[s] - fractions[s] * n) < 1 for s in SPLITS)


@pytest.mark.parametrize("fractions", [COURSE, NATURAL])
def test_rank_split_is_stratified_within_one_row_per_class(fractions: dict[str, float]) -> None:
    df = frame(2003)
    df["split_type"] = assign_splits(df, fractions, seed=42)
    for _, cls in df.groupby("sentiment"):
        counts = cls["split_type"].value_counts()
        for s in SPLITS:
            assert abs(counts.get(s, 0) - fractions[s] * len(cls)) < 1


def test_split_ignores_row_order_and_each_id_has_one_split() -> None:
    df = frame(500)
    splits = assign_splits(df, COURSE, seed=42)
    shuffled = df.sample(frac=1.0, random_state=1)
    again = assign_splits(shuffled, COURSE, seed=42)
    assert again.reindex(df.index).equals(splits)
    assert set(splits) == set(SPLITS)


def test_seed_changes_the_split() -> None:
    df = frame(500)
    assert not assign_splits(df, COURSE, seed=42).equals(assign_splits(df, COURSE, seed=7))


def test_threshold_split_never_moves_existing_rows() -> None:
    old = frame(1000)
    new = pd.concat([old, frame(300, start=1000, seed=5)], ignore_index=True)
    before = assign_splits(old, COURSE, seed=42, method="threshold")
    after = assign_splits(new, COURSE, seed=42, method="threshold")
    assert after.iloc[: len(old)].equals(before)


def test_rank_split_moves_at_most_added_rows_per_class_and_only_near_thresholds() -> None:
    old = frame(2000)
    added = frame(200, start=2000, seed=5)
    new = pd.concat([old, added], ignore_index=True)
    before = assign_splits(old, COURSE, seed=42)
    after = assign_splits(new, COURSE, seed=42).iloc[: len(old)]
    moved = before != after
    for sentiment, cls in old.groupby("sentiment"):
        added_here = int((added["sentiment"] == sentiment).sum())
        assert int(moved[cls.index].sum()) <= 2 * added_here  # at most m per threshold (2 thresholds)
    assert moved.mean() < 0.02
    u = stable_uniform(old["review_id"], 42)
    distance = np.minimum(np.abs(u - 0.90), np.abs(u - 0.95))
    assert (distance[moved.to_numpy()] < 0.05).all()  # far from a threshold never moves


def test_split_rejects_bad_fractions_and_duplicate_ids() -> None:
    with pytest.raises(ReviewpipeError, match="sum to 1"):
        assign_splits(frame(10), {"train": 0.9, "validation": 0.2, "test": 0.05}, seed=1)
    with pytest.raises(ReviewpipeError, match="missing"):
        assign_splits(frame(10), {"train": 0.9, "test": 0.1}, seed=1)
    with pytest.raises(ReviewpipeError, match="unique"):
        assign_splits(pd.concat([frame(5), frame(5)]), COURSE, seed=1)


def _with_splits(n: int = 3000) -> pd.DataFrame:
    df = frame(n)
    df["split_type"] = assign_splits(df, COURSE, seed=42)
    return df


def test_balance_none_keeps_everything() -> None:
    df = _with_splits()
    assert balance(df, "none", seed=42).equals(df)


def test_balance_sentiment_downsamples_each_split_to_its_minority() -> None:
    df = _with_splits()
    out = balance(df, "sentiment", seed=42)
    minority = df["sentiment"].value_counts().min()
    assert (out["sentiment"].value_counts() == minority).all()
    for s in SPLITS:
        part = out[out["split_type"] == s]["sentiment"].value_counts()
        assert part.nunique() == 1  # every class the same size in every split
        assert abs(part.iloc[0] - COURSE[s] * minority) < 1  # still stratified
    assert set(out.index) <= set(df.index)


def test_balance_category_sentiment_equalises_every_cell_within_each_split() -> None:
    df = _with_splits()
    out = balance(df, "category_sentiment", seed=42)
    for s in SPLITS:
        cells = out[out["split_type"] == s].groupby(["product_category", "sentiment"]).size()
        present = df[df["split_type"] == s].groupby(["product_category", "sentiment"]).size()
        assert (cells == present.min()).all()
        assert list(cells.index) == list(present.index)  # a cell absent from a split cannot be filled


def test_balance_is_seeded_and_order_independent() -> None:
    df = _with_splits()
    a = balance(df, "sentiment", seed=42)
    b = balance(df.sample(frac=1.0, random_state=3), "sentiment", seed=42)
    assert sorted(a["review_id"]) == sorted(b["review_id"])
    c = balance(df, "sentiment", seed=1)
    assert sorted(a["review_id"]) != sorted(c["review_id"])


def test_balance_rejects_unknown_strategy() -> None:
    with pytest.raises(ReviewpipeError, match="category_sentiment"):
        balance(_with_splits(30), "oversample", seed=1)


def test_balanced_class_weights_match_sklearn() -> None:
    from sklearn.utils.class_weight import compute_class_weight

    y = pd.Series([-1] * 10 + [0] * 30 + [1] * 60)
    expected = compute_class_weight("balanced", classes=np.array([-1, 0, 1]), y=y.to_numpy())
    weights = balanced_class_weights(y)
    assert list(weights) == ["-1", "0", "1"]
    assert np.allclose(list(weights.values()), expected)
    assert weights["-1"] == pytest.approx(100 / 30)
    with pytest.raises(ReviewpipeError, match=r"\[-1\]"):
        balanced_class_weights(pd.Series([0, 1, 1]))
