"""Course data preparation as pure functions: filter → split → human labels → balance → weights.

Order matters. The split is a function of (review_id, seed) alone and is assigned before any label
is looked at, so a human label never moves a review between splits (prep/split.py). Human labels
then correct the training and validation labels only: the test split keeps its rating-derived
labels for the headline figures, and a human label on a test row is kept beside it (`human_label`)
for evaluate's separate report. Balancing runs after, within each split, so the balanced splits
and `unbalanced.parquet` agree on every review's split (prep/balance.py). Every row that is
dropped is counted by reason; nothing vanishes silently.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from reviewpipe import SENTIMENTS
from reviewpipe.errors import ReviewpipeError
from reviewpipe.prep.balance import STRATEGIES, balance, balanced_class_weights, uniform_class_weights
from reviewpipe.prep.bands import age_band
from reviewpipe.prep.split import SPLITS, assign_splits, check_fractions, stratification_check
from reviewpipe.review.labels import latest_human_labels, read_human_labels

__all__ = ["latest_human_labels", "read_human_labels"]  # the label format's readers (review/labels.py)

# What prepare reads from the catalog view `reviews`.
SOURCE_COLUMNS: list[str] = [
    "review_id",
    "review_body",
    "product_category",
    "division_name",
    "department_name",
    "age",
    "sentiment",
]
SOURCE_SQL = f"SELECT {', '.join(SOURCE_COLUMNS)} FROM reviews ORDER BY review_id"

# The prepared-data contract (docs: helper brief, "Prepared").
PREPARED_COLUMNS: list[str] = [
    "review_id",
    "review_body",
    "product_category",
    "division_name",
    "department_name",
    "age",
    "age_band",
    "sentiment",  # the training target: a human label on train/validation rows, else the rating's
    "rating_sentiment",  # from the star rating, never changed (test keeps it as its label)
    "human_label",  # the latest human label (nullable), on every split, test included
    "label_id",
    "split_type",
]
# Splits whose labels a human label corrects; test keeps the rating-derived label.
RELABELLED_SPLITS: tuple[str, ...] = ("train", "validation")
# Drop reasons, in the order they are checked (a row is counted under its first reason).
DROP_REASONS: tuple[str, ...] = (
    "missing_review_body",
    "missing_product_category",
    "missing_sentiment",
    "rare_category",
)
LABEL_ID: dict[int, int] = {s: i for i, s in enumerate(SENTIMENTS)}


@dataclass(frozen=True)
class PrepareSettings:
    """The `prepare` params section, checked."""

    protocol: str = "course"
    min_category_reviews: int = 10
    balance: str = "sentiment"
    class_weights: bool = False
    fractions: dict[str, float] = field(
        default_factory=lambda: {"train": 0.90, "validation": 0.05, "test": 0.05}
    )
    seed: int = 42

    @classmethod
    def from_params(cls, section: Mapping[str, Any]) -> PrepareSettings:
        split = dict(section.get("split", {}) or {})
        settings = cls(
            protocol=str(section.get("protocol", "course")),
            min_category_reviews=int(section.get("min_category_reviews", 10)),
            balance=str(section.get("balance", "sentiment")),
            class_weights=bool(section.get("class_weights", False)),
            fractions=check_fractions(split) if split else cls().fractions,
            seed=int(section.get("seed", 42)),
        )
        if settings.balance not in STRATEGIES:
            raise ReviewpipeError(
                f"prepare.balance must be one of {list(STRATEGIES)}, got {settings.balance!r}."
            )
        if settings.class_weights and settings.balance != "none":
            raise ReviewpipeError(
                "prepare.class_weights: true keeps all rows, but prepare.balance is "
                f"{settings.balance!r}; set prepare.balance=none or prepare.class_weights=false."
            )
        return settings


@dataclass
class Prepared:
    """Everything the prepare stage writes, in memory."""

    unbalanced: pd.DataFrame
    balanced: pd.DataFrame
    dropped: pd.DataFrame
    class_weights: dict[str, float]
    metrics: dict[str, Any]

    def split(self, name: str) -> pd.DataFrame:
        return self.balanced[self.balanced["split_type"] == name].reset_index(drop=True)


def _blank(values: pd.Series) -> pd.Series:
    return values.isna() | (values.astype("string").str.strip() == "")


def filter_reviews(df: pd.DataFrame, min_category_reviews: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(kept, dropped): drop rows without a review body, category or sentiment, then categories
    with fewer than `min_category_reviews` remaining reviews. `dropped` has review_id,
    product_category and drop_reason."""
    reason = pd.Series(pd.NA, index=df.index, dtype="string")
    reason[_blank(df["review_body"])] = "missing_review_body"
    reason[reason.isna() & _blank(df["product_category"])] = "missing_product_category"
    reason[reason.isna() & df["sentiment"].isna()] = "missing_sentiment"
    sizes = df.loc[reason.isna()].groupby("product_category")["review_id"].transform("size")
    rare = sizes.index[sizes < min_category_reviews]
    reason.loc[rare] = "rare_category"
    dropped = df.loc[reason.notna(), ["review_id", "product_category"]].assign(drop_reason=reason.dropna())
    return df.loc[reason.isna()].copy(), dropped.reset_index(drop=True)


def drop_counts(dropped: pd.DataFrame) -> dict[str, int]:
    counts = dropped["drop_reason"].value_counts()
    return {r: int(counts.get(r, 0)) for r in DROP_REASONS}


def apply_human_labels(df: pd.DataFrame, labels: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, int]]:
    """Human labels on a frame that already has `split_type`. Every row gets `rating_sentiment`
    (the rating's label, unchanged) and `human_label` (the latest human label, or missing); the
    training target `sentiment` takes the human label on train and validation rows only.

    Counts: merged (labels applied to train/validation rows), changed (of those, differing from the
    rating's label), on_test (labels on test rows: kept in `human_label`, not applied), unmatched
    (labels for reviews not among the prepared rows)."""
    keys = df["review_id"].astype(str)
    by_key = labels.set_index("review_key")["label"]
    human = keys.map(by_key)
    matched = human.notna()
    applied = matched & df["split_type"].isin(RELABELLED_SPLITS)
    out = df.copy()
    out["rating_sentiment"] = out["sentiment"]
    out["human_label"] = human.astype("Int64")
    changed = int((applied & (human != out["sentiment"])).sum())
    out.loc[applied, "sentiment"] = human[applied].astype("int64")
    stats = {
        "merged": int(applied.sum()),
        "changed": changed,
        "on_test": int((matched & ~applied).sum()),
        "unmatched": int((~by_key.index.isin(keys)).sum()),
    }
    return out, stats


def to_prepared_columns(df: pd.DataFrame, age_edges: Sequence[int]) -> pd.DataFrame:
    out = df.copy()
    out["sentiment"] = out["sentiment"].astype("int64")
    out["rating_sentiment"] = out["rating_sentiment"].astype("int64")
    unknown = sorted(set(out["rating_sentiment"]) - set(LABEL_ID))
    if unknown:
        raise ReviewpipeError(f"sentiment values must be {list(SENTIMENTS)}; found {unknown} in the lake.")
    out["age_band"] = age_band(out["age"], age_edges)
    out["label_id"] = out["sentiment"].map(LABEL_ID).astype("int64")
    return out


def prepare_reviews(
    source: pd.DataFrame,
    settings: PrepareSettings,
    age_edges: Sequence[int],
    human_labels: pd.DataFrame | None = None,
    human_labels_invalid: int = 0,
) -> Prepared:
    """The whole preparation on a frame with SOURCE_COLUMNS."""
    missing = [c for c in SOURCE_COLUMNS if c not in source.columns]
    if missing:
        raise ReviewpipeError(
            f"the reviews table lacks columns {missing}; re-run the ingest and catalog stages."
        )
    kept, dropped = filter_reviews(source, settings.min_category_reviews)
    kept["split_type"] = assign_splits(kept, settings.fractions, settings.seed)
    labels = human_labels if human_labels is not None else latest_human_labels([])[0]
    kept, label_stats = apply_human_labels(kept, labels)
    kept = to_prepared_columns(kept, age_edges)
    unbalanced = _ordered(kept)
    balanced = _ordered(balance(unbalanced, settings.balance, settings.seed))
    train = unbalanced[unbalanced["split_type"] == "train"]["sentiment"]
    weights = balanced_class_weights(train) if settings.class_weights else uniform_class_weights()
    metrics = {
        "protocol": settings.protocol,
        "balance": settings.balance,
        "seed": settings.seed,
        "rows_in": int(len(source)),
        "dropped": drop_counts(dropped),
        "rows_dropped": int(len(dropped)),
        "rows_after_filtering": int(len(unbalanced)),
        "human_labels_merged": label_stats["merged"],
        "human_labels_changed": label_stats["changed"],
        "human_labels_on_test": label_stats["on_test"],
        "human_labels_unmatched": label_stats["unmatched"],
        "human_labels_invalid": int(human_labels_invalid),
        "rows_removed_by_balancing": int(len(unbalanced) - len(balanced)),
        "rows_prepared": int(len(balanced)),
        "rows_per_sentiment": _per_sentiment(balanced),
        "unbalanced_rows_per_sentiment": _per_sentiment(unbalanced),
        "rows": {
            s: {
                **_per_sentiment(balanced[balanced["split_type"] == s]),
                "total": int((balanced["split_type"] == s).sum()),
            }
            for s in SPLITS
        },
        "class_weights": weights,
        # The rating-derived classes (never relabelled) across the hash split, before balancing.
        "stratification": stratification_check(unbalanced["rating_sentiment"], unbalanced["split_type"]),
    }
    return Prepared(unbalanced, balanced, dropped, weights, metrics)


def _ordered(df: pd.DataFrame) -> pd.DataFrame:
    return df[PREPARED_COLUMNS].sort_values("review_id", kind="stable").reset_index(drop=True)


def _per_sentiment(df: pd.DataFrame) -> dict[str, int]:
    counts = df["sentiment"].value_counts()
    return {str(s): int(counts.get(s, 0)) for s in SENTIMENTS}


def split_statistics(prepared: Prepared) -> pd.DataFrame:
    """Rows per dataset (balanced | unbalanced) × split × sentiment × category, tidy."""
    frames = []
    for dataset, df in (("balanced", prepared.balanced), ("unbalanced", prepared.unbalanced)):
        counts = (
            df.groupby(["split_type", "sentiment", "product_category"], sort=True)
            .size()
            .rename("rows")
            .reset_index()
        )
        frames.append(counts.assign(dataset=dataset))
    stats = pd.concat(frames, ignore_index=True)
    return stats[["dataset", "split_type", "sentiment", "product_category", "rows"]]
