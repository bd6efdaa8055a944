"""The explore queries written again in pandas: the reference the SQL is tested against, and the
other side of bench/sql_vs_pandas.py. Each function returns the same columns, in the same row
order, as the sql/ file of the same name.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence

import pandas as pd

from reviewpipe.prep.bands import age_band, band_labels

# A word is a run of non-whitespace, as RE2's \S in the SQL (whitespace = space, tab, CR, LF, FF).
# str.split() is the fast way in Python, but it also splits on \v, \x1c-\x1f, NBSP and other Unicode
# spaces: those become ordinary characters first (about twice as fast as str.count(r"[^ \t\r\n\f]+")).
_NOT_A_SEPARATOR = str.maketrans(
    {chr(c): "x" for c in range(sys.maxunicode + 1) if chr(c).isspace() and chr(c) not in " \t\r\n\f"}
)
# Columns each query reads (pandas gets the same projection DuckDB pushes down).
REVIEW_COLUMNS = ["sentiment", "product_category", "review_body", "age"]


def sentiment_counts(reviews: pd.DataFrame) -> pd.DataFrame:
    return (
        reviews.groupby("sentiment")
        .size()
        .rename("reviews")
        .reset_index()
        .sort_values("sentiment", ignore_index=True)
    )


def category_counts(reviews: pd.DataFrame) -> pd.DataFrame:
    counts = reviews.groupby("product_category", dropna=False).size().rename("reviews").reset_index()
    return counts.sort_values(
        ["reviews", "product_category"], ascending=[False, True], na_position="last", ignore_index=True
    )


def category_avg_sentiment(reviews: pd.DataFrame) -> pd.DataFrame:
    grouped = reviews.groupby("product_category", dropna=False)["sentiment"]
    frame = pd.DataFrame({"avg_sentiment": grouped.mean().astype(float), "reviews": grouped.size()})
    return frame.reset_index().sort_values(
        ["avg_sentiment", "product_category"], ascending=[False, True], na_position="last", ignore_index=True
    )


def category_sentiment_counts(reviews: pd.DataFrame) -> pd.DataFrame:
    counts = (
        reviews.groupby(["product_category", "sentiment"], dropna=False)
        .size()
        .rename("reviews")
        .reset_index()
    )
    totals = counts.groupby("product_category", dropna=False)["reviews"].transform("sum")
    counts["share"] = counts["reviews"] / totals
    return counts.sort_values(["product_category", "sentiment"], na_position="last", ignore_index=True)


def word_counts(reviews: pd.DataFrame) -> pd.Series:
    return reviews["review_body"].dropna().map(lambda text: len(text.translate(_NOT_A_SEPARATOR).split()))


def word_count_stats(reviews: pd.DataFrame) -> pd.DataFrame:
    words = word_counts(reviews)
    return pd.DataFrame(
        {
            "reviews": [len(words)],
            "mean_words": [words.mean()],
            "median_words": [words.quantile(0.5)],
            "p90_words": [words.quantile(0.9)],
            "min_words": [words.min()],
            "max_words": [words.max()],
        }
    )


def word_count_histogram(reviews: pd.DataFrame) -> pd.DataFrame:
    bins = (word_counts(reviews) // 10 * 10).rename("bin_start")
    return (
        bins.value_counts()
        .rename("reviews")
        .rename_axis("bin_start")
        .reset_index()
        .sort_values("bin_start", ignore_index=True)
    )


def sentiment_by_age_band(reviews: pd.DataFrame, edges: Sequence[int]) -> pd.DataFrame:
    labels = band_labels(edges)
    bands = pd.Categorical(age_band(reviews["age"], edges), categories=labels, ordered=True)
    frame = pd.DataFrame({"age_band": bands, "sentiment": reviews["sentiment"]})
    counts = (
        frame.groupby(["age_band", "sentiment"], dropna=False, observed=True)
        .size()
        .rename("reviews")
        .reset_index()
    )
    counts["share"] = counts["reviews"] / counts.groupby("age_band", dropna=False, observed=True)[
        "reviews"
    ].transform("sum")
    counts = counts.sort_values(["age_band", "sentiment"], na_position="last", ignore_index=True)
    return counts.assign(age_band=counts["age_band"].astype(object))


def rejects_by_reason(rejects: pd.DataFrame) -> pd.DataFrame:
    counts = rejects.groupby("reject_reason", dropna=False).size().rename("rows_rejected").reset_index()
    return counts.sort_values(["rows_rejected", "reject_reason"], ascending=[False, True], ignore_index=True)


REVIEW_QUERIES: dict[str, Callable[[pd.DataFrame], pd.DataFrame]] = {
    "sentiment_counts": sentiment_counts,
    "category_counts": category_counts,
    "category_avg_sentiment": category_avg_sentiment,
    "category_sentiment_counts": category_sentiment_counts,
    "word_count_stats": word_count_stats,
    "word_count_histogram": word_count_histogram,
}


def comparable(frame: pd.DataFrame) -> pd.DataFrame:
    """NULLs as None and numbers as float64, so a DuckDB result and its pandas twin compare by value
    (pd.testing.assert_frame_equal) whatever dtypes each side chose."""
    out = frame.copy()
    for column in out.columns:
        if pd.api.types.is_numeric_dtype(out[column]):
            out[column] = out[column].astype("float64")
        else:
            out[column] = out[column].astype(object).where(out[column].notna(), None)
    return out


def run_all(
    reviews: pd.DataFrame, rejects: pd.DataFrame | None, edges: Sequence[int]
) -> dict[str, pd.DataFrame]:
    """Every explore query in pandas, keyed like sql/*.sql."""
    results = {name: query(reviews) for name, query in REVIEW_QUERIES.items()}
    results["sentiment_by_age_band"] = sentiment_by_age_band(reviews, edges)
    if rejects is not None:
        results["rejects_by_reason"] = rejects_by_reason(rejects)
    return results
