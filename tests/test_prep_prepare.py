"""Course preparation on frames: drop reasons, human labels, protocols and their invariants."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from reviewpipe.errors import ReviewpipeError
from reviewpipe.prep.prepare import (
    PREPARED_COLUMNS,
    PrepareSettings,
    apply_human_labels,
    filter_reviews,
    latest_human_labels,
    prepare_reviews,
    read_human_labels,
)
from reviewpipe.prep.split import SPLITS

AGE_EDGES = [0, 25, 35, 45, 55, 65, 200]
COURSE = PrepareSettings()
NATURAL = PrepareSettings(
    protocol="natural",
    balance="none",
    class_weights=True,
    fractions={"train": 0.8, "validation": 0.1, "test": 0.1},
)


def reviews(n: int = 1200, seed: int = 0) -> pd.DataFrame:
    """Catalog-shaped rows: imbalanced sentiment, one rare category (5 rows), a few gaps."""
    rng = np.random.default_rng(seed)
    categories = rng.choice(["Dresses", "Knits", "Blouses", "Jeans"], size=n, p=[0.4, 0.3, 0.2, 0.1]).astype(
        object
    )
    categories[:5] = "Chemises"
    df = pd.DataFrame(
        {
            "review_id": np.arange(100, 100 + n, dtype="int64"),
            "review_body": [f"review number {i}" for i in range(n)],
            "product_category": pd.Series(categories, dtype="string"),
            "division_name": pd.Series(rng.choice(["General", "General Petite"], size=n), dtype="string"),
            "department_name": pd.Series(rng.choice(["Tops", "Dresses"], size=n), dtype="string"),
            "age": pd.Series(rng.integers(18, 90, size=n), dtype="Int64"),
            "sentiment": rng.choice([-1, 0, 1], size=n, p=[0.1, 0.15, 0.75]).astype("int64"),
        }
    )
    df["review_body"] = df["review_body"].astype("string")
    df.loc[[10, 11, 12], "review_body"] = [None, "", "   "]
    df.loc[[20, 21], "product_category"] = None
    return df


def test_filter_counts_every_dropped_row_by_first_reason() -> None:
    df = reviews()
    kept, dropped = filter_reviews(df, min_category_reviews=10)
    counts = dropped["drop_reason"].value_counts().to_dict()
    assert counts == {"missing_review_body": 3, "rare_category": 5, "missing_product_category": 2}
    assert len(kept) + len(dropped) == len(df)
    assert set(dropped.loc[dropped["drop_reason"] == "rare_category", "product_category"]) == {"Chemises"}
    assert not set(kept["review_id"]) & set(dropped["review_id"])


def test_rare_category_is_counted_after_other_drops() -> None:
    df = reviews().iloc[:40].copy()
    df["product_category"] = "Knits"
    df.loc[df.index[:31], "review_body"] = None  # 9 Knits with a body left: below 10
    kept, dropped = filter_reviews(df, min_category_reviews=10)
    assert kept.empty
    assert dropped["drop_reason"].value_counts().to_dict() == {"missing_review_body": 31, "rare_category": 9}


@pytest.mark.parametrize("settings", [COURSE, NATURAL], ids=["course", "natural"])
def test_prepare_invariants(settings: PrepareSettings) -> None:
    prepared = prepare_reviews(reviews(), settings, AGE_EDGES)
    balanced, unbalanced = prepared.balanced, prepared.unbalanced
    assert list(balanced.columns) == PREPARED_COLUMNS
    # no review in two splits, and the balanced rows keep the split they have before balancing
    assert balanced["review_id"].is_unique and unbalanced["review_id"].is_unique
    merged = balanced.merge(unbalanced, on="review_id", suffixes=("", "_before"))
    assert len(merged) == len(balanced)
    assert (merged["split_type"] == merged["split_type_before"]).all()
    # the realised class mix per split is reported against the whole (hash split: binomial noise)
    check = prepared.metrics["stratification"]
    for s in SPLITS:
        rows = unbalanced[unbalanced["split_type"] == s]
        assert check["splits"][s]["rows"] == len(rows)
        for label, cell in check["splits"][s]["per_class"].items():
            assert cell["rows"] == int((rows["rating_sentiment"] == int(label)).sum())
    assert check["p_value"] > 0.001
    assert (balanced["label_id"] == balanced["sentiment"] + 1).all()
    assert prepared.metrics["rows_in"] == 1200
    assert prepared.metrics["rows_dropped"] == 10
    assert prepared.metrics["human_labels_merged"] == 0


def test_course_protocol_balances_sentiment_to_the_minority() -> None:
    prepared = prepare_reviews(reviews(), COURSE, AGE_EDGES)
    minority = prepared.unbalanced["sentiment"].value_counts().min()
    unbalanced = prepared.unbalanced
    total = 0
    for s in SPLITS:
        row = prepared.metrics["rows"][s]
        split_minority = unbalanced[unbalanced["split_type"] == s]["sentiment"].value_counts().min()
        assert row["-1"] == row["0"] == row["1"] == split_minority
        total += split_minority
    assert total <= minority + 2  # per-split minorities add up to about the overall one
    assert prepared.metrics["rows_per_sentiment"] == {"-1": total, "0": total, "1": total}
    assert prepared.class_weights == {"-1": 1.0, "0": 1.0, "1": 1.0}
    assert prepared.metrics["rows_removed_by_balancing"] == len(unbalanced) - 3 * total


def test_natural_protocol_keeps_all_rows_and_weights_classes() -> None:
    prepared = prepare_reviews(reviews(), NATURAL, AGE_EDGES)
    assert len(prepared.balanced) == len(prepared.unbalanced) == 1190
    train = prepared.unbalanced.query("split_type == 'train'")["sentiment"]
    counts = train.value_counts()
    for s, w in prepared.class_weights.items():
        assert w == pytest.approx(len(train) / (3 * counts[int(s)]))
    assert prepared.class_weights["-1"] > prepared.class_weights["0"] > prepared.class_weights["1"]


def test_identical_params_give_byte_identical_parquet(tmp_path: Path) -> None:
    for run in ("a", "b"):
        prepared = prepare_reviews(reviews().sample(frac=1.0, random_state=len(run)), COURSE, AGE_EDGES)
        for s in SPLITS:
            (tmp_path / run).mkdir(exist_ok=True)
            prepared.split(s).to_parquet(tmp_path / run / f"{s}.parquet", index=False)  # as the stage writes
    for s in SPLITS:
        assert (tmp_path / "a" / f"{s}.parquet").read_bytes() == (
            tmp_path / "b" / f"{s}.parquet"
        ).read_bytes()
    other_seed = prepare_reviews(reviews(), PrepareSettings(seed=7), AGE_EDGES)
    assert not other_seed.split("test")["review_id"].equals(prepared.split("test")["review_id"])


def test_age_band_from_edges() -> None:
    df = reviews(50)
    df["age"] = pd.array([24, 25, 64, 65, None] * 10, dtype="Int64")
    prepared = prepare_reviews(df.assign(product_category="Knits"), NATURAL, AGE_EDGES)
    bands = prepared.unbalanced.set_index("review_id")["age_band"]
    assert bands.loc[100] == "<25" and bands.loc[101] == "25-34" and bands.loc[103] == "65+"
    assert pd.isna(bands.loc[104])


def test_settings_errors_say_what_to_change() -> None:
    with pytest.raises(ReviewpipeError, match="prepare.balance=none"):
        PrepareSettings.from_params({"balance": "sentiment", "class_weights": True})
    with pytest.raises(ReviewpipeError, match="prepare.balance must be one of"):
        PrepareSettings.from_params({"balance": "smote"})
    settings = PrepareSettings.from_params(
        {
            "balance": "none",
            "class_weights": True,
            "seed": 3,
            "split": {"train": 0.8, "validation": 0.1, "test": 0.1},
        }
    )
    assert settings.fractions == {"train": 0.8, "validation": 0.1, "test": 0.1} and settings.seed == 3
    with pytest.raises(ReviewpipeError, match="prepare.split.method is gone"):
        PrepareSettings.from_params(
            {"split": {"train": 0.8, "validation": 0.1, "test": 0.1, "method": "rank"}}
        )


def write_labels(path: Path, records: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in records) + "not json\n")


def test_human_labels_latest_wins_and_override_sentiment(tmp_path: Path) -> None:
    labels_dir = tmp_path / "review_labels"
    write_labels(
        labels_dir / "alice.jsonl",
        [
            {"review_id": 200, "label": -1, "annotator": "alice", "labeled_at": "2024-05-01T10:00:00Z"},
            {"review_id": 201, "label": 0, "annotator": "alice", "labeled_at": "2024-05-01T10:00:00Z"},
            {"review_id": 99999, "label": 1, "annotator": "alice", "labeled_at": "2024-05-01T10:00:00Z"},
            {"review_id": 202, "label": 7, "annotator": "alice", "labeled_at": "2024-05-01T10:00:00Z"},
        ],
    )
    write_labels(
        labels_dir / "bob.jsonl",
        [
            {"review_id": 200, "label": 1, "annotator": "bob", "labeled_at": "2024-05-02T09:00:00+00:00"},
            {"review_id": 201, "label": 1, "annotator": "bob", "labeled_at": "2024-04-01T00:00:00Z"},
        ],
    )
    labels, invalid = read_human_labels(str(labels_dir))
    assert invalid == 3  # label 7 and two lines that are not JSON
    assert labels.set_index("review_key")["label"].to_dict() == {"200": 1, "201": 0, "99999": 1}

    df = reviews()
    df.loc[df["review_id"] == 200, "sentiment"] = -1
    df.loc[df["review_id"] == 201, "sentiment"] = 0
    prepared = prepare_reviews(df, NATURAL, AGE_EDGES, labels, invalid)
    rows = prepared.unbalanced.set_index("review_id")
    assert rows.loc[200, "split_type"] in ("train", "validation")  # (review 200's hash: not test)
    assert rows.loc[200, "sentiment"] == 1 and rows.loc[200, "label_id"] == 2
    assert rows.loc[200, "rating_sentiment"] == -1 and rows.loc[200, "human_label"] == 1
    assert rows.loc[201, "sentiment"] == 0 and rows.loc[201, "human_label"] == 0
    assert rows["human_label"].notna().sum() == 2
    m = prepared.metrics
    assert (
        m["human_labels_merged"],
        m["human_labels_changed"],
        m["human_labels_on_test"],
        m["human_labels_unmatched"],
        m["human_labels_invalid"],
    ) == (2, 1, 0, 1, 3)


def test_human_labels_correct_train_and_validation_but_never_test() -> None:
    df = reviews()
    first = prepare_reviews(df, COURSE, AGE_EDGES).unbalanced.set_index("review_id")
    picked = [first.index[first["split_type"] == s][:4].tolist() for s in SPLITS]
    flipped = {rid: -int(first.loc[rid, "rating_sentiment"]) or 1 for ids in picked for rid in ids}
    labels, _ = latest_human_labels(
        [
            {"review_id": rid, "label": lab, "labeled_at": "2025-01-01T00:00:00Z"}
            for rid, lab in flipped.items()
        ]
    )
    after = prepare_reviews(df, COURSE, AGE_EDGES, labels).unbalanced.set_index("review_id")
    assert after["split_type"].equals(first["split_type"])
    for rid, lab in flipped.items():
        assert after.loc[rid, "human_label"] == lab
        if after.loc[rid, "split_type"] == "test":
            assert after.loc[rid, "sentiment"] == first.loc[rid, "sentiment"]  # the rating's label
        else:
            assert after.loc[rid, "sentiment"] == lab and after.loc[rid, "label_id"] == lab + 1
    untouched = ~after.index.isin(list(flipped))
    assert after.loc[untouched, "sentiment"].equals(first.loc[untouched, "sentiment"])


def test_missing_labels_dir_means_no_labels(tmp_path: Path) -> None:
    labels, invalid = read_human_labels(str(tmp_path / "absent"))
    assert labels.empty and invalid == 0
    df = reviews(30).assign(split_type="train")
    out, stats = apply_human_labels(df, labels)
    assert stats == {"merged": 0, "changed": 0, "on_test": 0, "unmatched": 0}
    assert out["sentiment"].equals(df["sentiment"]) and out["rating_sentiment"].equals(df["sentiment"])
    assert out["human_label"].isna().all()


def test_latest_human_labels_breaks_ties_by_record_order() -> None:
    same_time = "2024-05-01T10:00:00Z"
    labels, invalid = latest_human_labels(
        [
            {"review_id": "5", "label": 0, "labeled_at": same_time},
            {"review_id": 5, "label": -1, "labeled_at": same_time},
            {"review_id": 6, "label": 1},
        ]
    )
    assert invalid == 1
    assert labels.to_dict("records") == [{"review_key": "5", "label": -1}]


def test_missing_source_column_is_a_user_error() -> None:
    with pytest.raises(ReviewpipeError, match="sentiment"):
        prepare_reviews(reviews().drop(columns="sentiment"), COURSE, AGE_EDGES)
