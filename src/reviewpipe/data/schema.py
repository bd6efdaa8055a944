"""The reviews schema: Kaggle raw column names -> snake_case, clean types, sentiment from rating."""

from __future__ import annotations

import pandas as pd

# Kaggle "Women's E-Commerce Clothing Reviews" header, in file order. The first column has no name
# (pandas calls it "Unnamed: 0"); it is the review's id.
RAW_INDEX_NAMES: tuple[str, ...] = ("", "Unnamed: 0")
RAW_TO_CLEAN: dict[str, str] = {
    "": "review_id",
    "Clothing ID": "clothing_id",
    "Age": "age",
    "Title": "title",
    "Review Text": "review_body",
    "Rating": "rating",
    "Recommended IND": "recommended_ind",
    "Positive Feedback Count": "positive_feedback_count",
    "Division Name": "division_name",
    "Department Name": "department_name",
    "Class Name": "product_category",
}
RAW_COLUMNS: tuple[str, ...] = tuple(RAW_TO_CLEAN)
SOURCE_COLUMNS: tuple[str, ...] = tuple(RAW_TO_CLEAN.values())  # snake_case, file order

# Whole numbers; the first three may not be null (a review without id or rating is no review).
INTEGER_COLUMNS: tuple[str, ...] = (
    "review_id",
    "rating",
    "clothing_id",
    "age",
    "recommended_ind",
    "positive_feedback_count",
)
REQUIRED_NOT_NULL: tuple[str, ...] = ("review_id", "rating", "review_body")
STRING_COLUMNS: tuple[str, ...] = (
    "title",
    "review_body",
    "division_name",
    "department_name",
    "product_category",
)

# What a review's content hash covers: every source column but its id (the key it versions).
CONTENT_COLUMNS: tuple[str, ...] = SOURCE_COLUMNS[1:]
# The clean table (lake `reviews`), in order. `ingested_at`: when the row's batch entered the lake
# (the version order); `content_hash`: see CONTENT_COLUMNS (re-ingesting an unchanged row adds nothing).
CLEAN_COLUMNS: tuple[str, ...] = (*SOURCE_COLUMNS, "sentiment", "ingested_at", "content_hash")
# Rejected rows: source columns as the raw strings, why, and where in their file.
REJECT_COLUMNS: tuple[str, ...] = (*SOURCE_COLUMNS, "reject_reason", "source_row")
# The lake's `rejects` table: the same, plus the batch's ingested_at and a hash of the row.
LAKE_REJECT_COLUMNS: tuple[str, ...] = (*REJECT_COLUMNS, "ingested_at", "content_hash")

CLEAN_DTYPES: dict[str, str] = {
    "review_id": "int64",
    "clothing_id": "Int64",
    "age": "Int64",
    "title": "string",
    "review_body": "string",
    "rating": "int64",
    "recommended_ind": "Int64",
    "positive_feedback_count": "Int64",
    "division_name": "string",
    "department_name": "string",
    "product_category": "string",
    "sentiment": "int64",
    "ingested_at": "datetime64[us, UTC]",
    "content_hash": "string",
}


def clean_name(raw_name: str) -> str | None:
    """Kaggle header name (or an already snake_case one) -> clean name; None if unknown."""
    name = raw_name.strip()
    if name in RAW_INDEX_NAMES:
        return "review_id"
    if name in RAW_TO_CLEAN:
        return RAW_TO_CLEAN[name]
    return name if name in SOURCE_COLUMNS else None


def sentiment_of(rating: pd.Series | int) -> pd.Series | int:
    """Rating 1-2 -> -1, 3 -> 0, 4-5 -> +1 (the course's mapping). Works on a scalar or a Series."""
    if isinstance(rating, pd.Series):
        values = rating.astype("int64")
        if ((values < 1) | (values > 5)).any():
            raise ValueError("ratings must be 1..5; validate before deriving sentiment")
        return pd.Series(
            ((values >= 3).astype("int64") + (values >= 4).astype("int64")) - 1,
            index=rating.index,
            name="sentiment",
        )
    if not 1 <= int(rating) <= 5:
        raise ValueError(f"rating must be 1..5, got {rating!r}")
    return -1 if rating <= 2 else (0 if rating == 3 else 1)
