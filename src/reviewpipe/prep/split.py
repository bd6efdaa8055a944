"""Seeded, stratified train/validation/test split derived from a stable hash of (review_id, seed).

Every review gets a uniform number u in [0, 1) from sha256("{salt}:{seed}:{review_id}"), so the
split never depends on row order or on which other rows happen to be in the frame.

Two methods (`prepare.split.method`):

- ``rank`` (default): within each stratum (sentiment class) rows are sorted by u and cut at the
  largest-remainder counts of the fractions, so every class has each split's count within one row
  of ``fraction * class size`` (exact stratification). Equivalently: compare u with the fixed
  thresholds (0.90, 0.95 for 90/5/5) and then move the fewest rows needed to make the counts exact,
  always the rows whose u lies nearest a threshold. Consequence for new data: a row whose u is far
  from a threshold never changes split; when m rows are added to a class, at most m existing rows
  of that class cross each threshold (in practice about sqrt(m * f * (1 - f))).
- ``threshold``: a row's split is decided by u against the fixed thresholds alone, so adding data
  never moves an existing row; class counts are then only binomially close to the fractions.

Both at once are impossible: if no existing row may ever move, a row's split must be a function of
the row alone (take the frame holding just that row), and then nothing can force the counts of an
arbitrary set to be within one row of the fractions. ``rank`` chooses exact stratification and
near-stability; ``threshold`` chooses exact stability and near-stratification.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping

import numpy as np
import pandas as pd

from reviewpipe.errors import ReviewpipeError

SPLITS: tuple[str, str, str] = ("train", "validation", "test")
METHODS: tuple[str, str] = ("rank", "threshold")


def stable_uniform(ids: Iterable[object], seed: int, salt: str = "split") -> np.ndarray:
    """A uniform number in [0, 1) per id from sha256 of (salt, seed, id): the same id and seed
    always give the same number, on any machine, in any row order."""
    values = []
    for review_id in ids:
        digest = hashlib.sha256(f"{salt}:{seed}:{review_id}".encode()).digest()
        values.append(int.from_bytes(digest[:8], "big"))
    return np.asarray(values, dtype=np.uint64).astype(np.float64) / 2.0**64


def check_fractions(fractions: Mapping[str, float]) -> dict[str, float]:
    """{train, validation, test} fractions, each >= 0, summing to 1."""
    missing = [s for s in SPLITS if s not in fractions]
    unknown = [s for s in fractions if s not in SPLITS]
    if missing or unknown:
        raise ReviewpipeError(
            f"prepare.split needs exactly the fractions {list(SPLITS)}; missing {missing}, unknown {unknown}."
        )
    values = {s: float(fractions[s]) for s in SPLITS}
    if any(v < 0 for v in values.values()) or abs(sum(values.values()) - 1.0) > 1e-9:
        raise ReviewpipeError(f"prepare.split fractions must be >= 0 and sum to 1, got {values}.")
    return values


def apportion(n: int, fractions: Mapping[str, float]) -> dict[str, int]:
    """Split n rows into counts, each within one row of fraction * n, summing to n
    (largest remainder; ties go to the earlier split)."""
    exact = {s: fractions[s] * n for s in SPLITS}
    counts = {s: int(np.floor(exact[s])) for s in SPLITS}
    by_remainder = sorted(SPLITS, key=lambda s: (-(exact[s] - counts[s]), SPLITS.index(s)))
    for s in by_remainder[: n - sum(counts.values())]:
        counts[s] += 1
    return counts


def assign_splits(
    df: pd.DataFrame,
    fractions: Mapping[str, float],
    seed: int,
    stratify_by: str = "sentiment",
    method: str = "rank",
    id_column: str = "review_id",
) -> pd.Series:
    """The split ("train" | "validation" | "test") of every row, indexed like df."""
    fractions = check_fractions(fractions)
    if method not in METHODS:
        raise ReviewpipeError(f"prepare.split.method must be one of {list(METHODS)}, got {method!r}.")
    if df[id_column].duplicated().any():
        dupes = df.loc[df[id_column].duplicated(), id_column].head(5).tolist()
        raise ReviewpipeError(f"{id_column} must be unique to split by hash; duplicated e.g. {dupes}.")
    u = pd.Series(stable_uniform(df[id_column], seed), index=df.index)
    if method == "threshold":
        return _by_threshold(u, fractions)
    splits = pd.Series(pd.NA, index=df.index, dtype="string")
    for _, stratum in u.groupby(df[stratify_by], sort=True, dropna=False):
        ordered = stratum.sort_values(kind="stable").index
        counts = apportion(len(ordered), fractions)
        start = 0
        for name in SPLITS:
            splits.loc[ordered[start : start + counts[name]]] = name
            start += counts[name]
    return splits


def _by_threshold(u: pd.Series, fractions: Mapping[str, float]) -> pd.Series:
    edges = np.cumsum([fractions[s] for s in SPLITS])
    position = np.searchsorted(edges[:-1], u.to_numpy(), side="right")
    return pd.Series(np.asarray(SPLITS, dtype=object)[position], index=u.index, dtype="string")
