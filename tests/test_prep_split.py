"""Hash split and balancing: a function of (id, seed) only, honest stratification, order independence."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from reviewpipe.errors import ReviewpipeError
from reviewpipe.prep.balance import balance, balanced_class_weights
from reviewpipe.prep.split import SPLITS, assign_splits, stable_uniform, stratification_check

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


@pytest.mark.parametrize("fractions", [COURSE, NATURAL])
def test_split_is_the_hash_interval_and_each_class_gets_the_fractions_up_to_binomial_noise(
    fractions: dict[str, float],
) -> None:
    df = frame(20000)
    df["split_type"] = assign_splits(df, fractions, seed=42)
    u = stable_uniform(df["review_id"], 42)
    edges = np.cumsum([fractions[s] for s in SPLITS])
    expected = np.where(u < edges[0], "train", np.where(u < edges[1], "validation", "test"))
    assert (df["split_type"].to_numpy() == expected).all()
    for _, cls in df.groupby("sentiment"):
        for s in SPLITS:
            share = (cls["split_type"] == s).mean()
            sd = np.sqrt(fractions[s] * (1 - fractions[s]) / len(cls))
            assert abs(share - fractions[s]) < 4 * sd


def test_a_rows_split_depends_on_its_id_and_the_seed_only() -> None:
    df = frame(3000)
    alone = pd.concat([assign_splits(df.iloc[[i]], COURSE, seed=42) for i in range(0, 3000, 97)])
    together = assign_splits(df, COURSE, seed=42)
    assert together.loc[alone.index].equals(alone)  # the other rows do not matter
    relabelled = df.assign(sentiment=-df["sentiment"])
    assert assign_splits(relabelled, COURSE, seed=42).equals(together)  # the label does not matter


def test_stratification_check_reports_shares_gaps_and_independence() -> None:
    labels = pd.Series([-1] * 10 + [1] * 30 + [-1] * 10 + [1] * 10)
    splits = pd.Series(["train"] * 40 + ["test"] * 20)
    check = stratification_check(labels, splits)
    assert check["overall_share"] == {"-1": pytest.approx(20 / 60), "1": pytest.approx(40 / 60)}
    assert check["splits"]["train"]["per_class"]["-1"] == {
        "rows": 10,
        "share": 0.25,
        "gap": pytest.approx(0.25 - 1 / 3, abs=1e-6),
    }
    assert check["largest_share_gap"]["split"] == "test"
    assert check["largest_share_gap"]["gap"] == pytest.approx(0.5 - 1 / 3, abs=1e-6)
    from scipy.stats import chi2_contingency

    oracle = chi2_contingency(np.array([[10, 10], [10, 30]]), correction=False)
    assert check["p_value"] == pytest.approx(oracle.pvalue, abs=1e-6) and check["dof"] == 1
    hashed = frame(20000)
    hashed_check = stratification_check(hashed["sentiment"], assign_splits(hashed, COURSE, seed=42))
    assert hashed_check["p_value"] > 0.001 and abs(hashed_check["largest_share_gap"]["gap"]) < 0.02


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


def test_new_data_never_moves_existing_rows() -> None:
    old = frame(1000)
    new = pd.concat([old, frame(300, start=1000, seed=5)], ignore_index=True)
    before = assign_splits(old, COURSE, seed=42)
    after = assign_splits(new, COURSE, seed=42)
    assert after.iloc[: len(old)].equals(before)


def test_split_rejects_bad_fractions_and_duplicate_ids() -> None:
    with pytest.raises(ReviewpipeError, match="sum to 1"):
        assign_splits(frame(10), {"train": 0.9, "validation": 0.2, "test": 0.05}, seed=1)
    with pytest.raises(ReviewpipeError, match="missing"):
        assign_splits(frame(10), {"train": 0.9, "test": 0.1}, seed=1)
    with pytest.raises(ReviewpipeError, match="unique"):
        assign_splits(pd.concat([frame(5), frame(5)]), COURSE, seed=1)
    with pytest.raises(ReviewpipeError, match=r"prepare.split.method is gone.*conf/prepare"):
        assign_splits(frame(10), {**COURSE, "method": "rank"}, seed=1)


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
    for s in SPLITS:
        part = out[out["split_type"] == s]["sentiment"].value_counts()
        before = df[df["split_type"] == s]["sentiment"].value_counts()
        assert len(part) == 3 and (part == before.min()).all()  # every class the split's minority size
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
