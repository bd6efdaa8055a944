"""Train/validation/test split as a function of (review_id, seed) alone.

Every review gets a uniform number u in [0, 1) from sha256("split:{seed}:{review_id}") and lands in
the split whose interval of the cumulative fractions holds u (90/5/5: train below 0.90, validation
below 0.95, test above). Nothing else enters: not the row order, not the other rows, not the label.
So a review never changes split when its label is corrected by a person, when new batches are
ingested, or when rows are filtered out: a row the model trained on can never reach a later test
split, and a test row can never be trained on after a relabel.

Stratification is honest rather than forced. u is independent of the label, so every class is
split by the configured fractions *in expectation*; the realised shares differ by binomial noise
(about sqrt(f (1 - f) / n_class)). Forcing exact per-class counts (ranking rows within each class)
would make a row's split depend on its label and on the other rows, which is exactly what moves rows
when labels change. `stratification_check` measures the realised class mix of every split against
the whole and tests independence (chi-square), and prepare reports it in its metrics.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from reviewpipe.errors import ReviewpipeError

SPLITS: tuple[str, str, str] = ("train", "validation", "test")


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
    if "method" in fractions:
        raise ReviewpipeError(
            "prepare.split.method is gone: a review's split is a function of (review_id, prepare.seed) "
            "only, so relabelling or adding data never moves a row between splits. Remove "
            "prepare.split.method from conf/prepare/ (or your -S override)."
        )
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


def split_of(u: np.ndarray, fractions: Mapping[str, float]) -> np.ndarray:
    """The split name for each uniform number: the interval of the cumulative fractions it falls in."""
    edges = np.cumsum([fractions[s] for s in SPLITS])
    position = np.searchsorted(edges[:-1], np.asarray(u, dtype=float), side="right")
    return np.asarray(SPLITS, dtype=object)[position]


def assign_splits(
    df: pd.DataFrame, fractions: Mapping[str, float], seed: int, id_column: str = "review_id"
) -> pd.Series:
    """The split ("train" | "validation" | "test") of every row, indexed like df."""
    fractions = check_fractions(fractions)
    if df[id_column].duplicated().any():
        dupes = df.loc[df[id_column].duplicated(), id_column].head(5).tolist()
        raise ReviewpipeError(f"{id_column} must be unique to split by hash; duplicated e.g. {dupes}.")
    u = stable_uniform(df[id_column], seed)
    return pd.Series(split_of(u, fractions), index=df.index, dtype="string")


def stratification_check(labels: pd.Series, splits: pd.Series) -> dict[str, Any]:
    """How far each split's class mix is from the whole's: per split and class the row count, the
    share within the split and its gap to the overall share; the largest gap; and the chi-square
    test of independence between split and class (a small p-value would mean the hash split is
    not behaving like a random one)."""
    table = pd.crosstab(splits, labels).reindex(index=[s for s in SPLITS if s in set(splits)])
    overall = table.sum(axis=0) / table.to_numpy().sum()
    per_split: dict[str, dict[str, Any]] = {}
    largest = {"split": None, "label": None, "gap": 0.0}
    for split, row in table.iterrows():
        shares = row / row.sum()
        per_split[str(split)] = {
            "rows": int(row.sum()),
            "per_class": {
                str(label): {
                    "rows": int(row[label]),
                    "share": round(float(shares[label]), 6),
                    "gap": round(float(shares[label] - overall[label]), 6),
                }
                for label in table.columns
            },
        }
        for label in table.columns:
            gap = float(shares[label] - overall[label])
            if abs(gap) > abs(largest["gap"]):
                largest = {"split": str(split), "label": str(label), "gap": round(gap, 6)}
    if table.shape[0] > 1 and table.shape[1] > 1:
        result = stats.chi2_contingency(table.to_numpy(), correction=False)
        chi2, p_value, dof = float(result.statistic), float(result.pvalue), int(result.dof)
    else:
        chi2, p_value, dof = 0.0, 1.0, 0
    return {
        "overall_share": {str(label): round(float(overall[label]), 6) for label in table.columns},
        "splits": per_split,
        "largest_share_gap": largest,
        "chi2": round(chi2, 6),
        "dof": dof,
        "p_value": round(p_value, 6),
    }
