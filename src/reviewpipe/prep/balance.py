"""Balancing by downsampling (seeded, order-independent) and balanced class weights.

Which rows survive downsampling is decided by a stable hash of (review_id, seed) with its own salt,
independent of the split hash (the same hash would keep only low-u rows, i.e. mostly train): within
each group the rows with the smallest hash are kept. So the result does not depend on row order,
and a kept review tends to stay kept when new data arrives.

Balancing runs within each split (`within="split_type"`): a review's split is decided once, before
balancing, so the balanced and unbalanced outputs never put one review in two different splits.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from reviewpipe import SENTIMENTS
from reviewpipe.errors import ReviewpipeError
from reviewpipe.prep.split import stable_uniform

STRATEGIES: dict[str, list[str]] = {
    "none": [],
    "sentiment": ["sentiment"],
    "category_sentiment": ["product_category", "sentiment"],
}


def balance(
    df: pd.DataFrame,
    strategy: str,
    seed: int,
    within: str | None = "split_type",
    id_column: str = "review_id",
) -> pd.DataFrame:
    """Downsample every group of the strategy to the smallest group's size (within each `within`
    value, e.g. each split). `none` returns df unchanged. Row order of the survivors is kept.

    Only groups that occur count: a category with no negative review in a split has no cell to
    fill, so its other cells are still cut to the smallest observed cell."""
    if strategy not in STRATEGIES:
        raise ReviewpipeError(f"prepare.balance must be one of {list(STRATEGIES)}, got {strategy!r}.")
    keys = STRATEGIES[strategy]
    if not keys or df.empty:
        return df
    rank = pd.Series(stable_uniform(df[id_column], seed, salt="balance"), index=df.index)
    outer = df[within] if within else pd.Series(0, index=df.index)
    kept: list[np.ndarray] = []
    for _, part in df.groupby(outer, sort=True):
        groups = part.groupby(keys, sort=True, dropna=False).groups
        target = min(len(index) for index in groups.values())
        for index in groups.values():
            kept.append(rank.loc[index].nsmallest(target, keep="first").index.to_numpy())
    return df.loc[df.index.isin(np.concatenate(kept))]


def balanced_class_weights(sentiments: pd.Series, classes: Sequence[int] = SENTIMENTS) -> dict[str, float]:
    """n / (k * n_c) per class (scikit-learn's "balanced"), keyed "-1", "0", "1"."""
    counts = sentiments.value_counts()
    absent = [c for c in classes if counts.get(c, 0) == 0]
    if absent:
        raise ReviewpipeError(
            f"cannot compute class weights: no training rows with sentiment {absent}. "
            "Check prepare.min_category_reviews and the data."
        )
    n = int(counts.loc[list(classes)].sum())
    return {str(c): n / (len(classes) * int(counts[c])) for c in classes}


def uniform_class_weights(classes: Sequence[int] = SENTIMENTS) -> dict[str, float]:
    return {str(c): 1.0 for c in classes}
