"""`reviewpipe synth`: deterministic, realistic Kaggle-schema reviews with the promised bad rows."""

from __future__ import annotations

import gzip
import io
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from reviewpipe.cli import main as cli_main
from reviewpipe.data.ingest import parse_raw, validate
from reviewpipe.data.schema import RAW_COLUMNS
from reviewpipe.data.synth import BAD_ROW_KINDS, CATEGORIES, synth_reviews


def _read(data: bytes) -> pd.DataFrame:
    frame = pd.read_csv(
        io.BytesIO(data),
        dtype=str,
        keep_default_na=False,
        na_values=[""],
        encoding="latin-1",
        index_col=False,
    )
    return frame.rename(columns={"Unnamed: 0": ""})


@pytest.fixture(scope="module")
def clean_sample() -> pd.DataFrame:
    data, expected = synth_reviews(3000, seed=7)
    assert expected == {}
    return _read(data)


def test_same_seed_same_bytes_other_seed_other_bytes() -> None:
    first, expected_first = synth_reviews(500, seed=3, bad_rows=2)
    again, expected_again = synth_reviews(500, seed=3, bad_rows=2)
    other, _ = synth_reviews(500, seed=4, bad_rows=2)
    assert first == again and expected_first == expected_again
    assert first != other


def test_kaggle_header_and_row_count(clean_sample: pd.DataFrame) -> None:
    assert tuple(clean_sample.columns) == RAW_COLUMNS
    assert len(clean_sample) == 3000
    assert clean_sample[""].astype(int).tolist() == list(range(3000))


def test_rating_skew_like_the_real_data(clean_sample: pd.DataFrame) -> None:
    shares = clean_sample["Rating"].astype(int).value_counts(normalize=True).sort_index()
    np.testing.assert_allclose(shares.to_numpy(), [0.04, 0.07, 0.12, 0.22, 0.55], atol=0.025)


def test_categories_departments_divisions_consistent(clean_sample: pd.DataFrame) -> None:
    known = clean_sample.dropna(subset=["Class Name"])
    for category, department in (
        known[["Class Name", "Department Name"]].drop_duplicates().itertuples(index=False)
    ):
        assert CATEGORIES[category][0] == department
    assert set(known["Division Name"]) == {"General", "General Petite", "Initmates"}
    assert set(known.loc[known["Division Name"] == "Initmates", "Department Name"]) == {"Intimate"}
    counts = known["Class Name"].value_counts()
    assert counts.index[0] == "Dresses"
    assert {"Casual bottoms", "Chemises"} <= set(counts.index)  # rare classes still show up
    assert counts[["Casual bottoms", "Chemises"]].max() < 0.01 * len(clean_sample)
    unknown = clean_sample[clean_sample["Class Name"].isna()]
    assert len(unknown) >= 2  # rows without category, like the 14 real ones (null partitions)
    assert unknown[["Division Name", "Department Name"]].isna().all().all()


def test_null_titles_quoted_newlines_and_inch_marks(clean_sample: pd.DataFrame) -> None:
    assert 0.10 < clean_sample["Title"].isna().mean() < 0.22
    body = clean_sample["Review Text"]
    assert body.notna().all()
    assert body.str.contains("\n").mean() > 0.03  # embedded newlines survive the round trip
    assert body.str.contains("\r\n").any()
    assert body.str.contains("5'4\"", regex=False).any()


def test_ages_and_feedback_plausible(clean_sample: pd.DataFrame) -> None:
    age = clean_sample["Age"].astype(int)
    assert age.between(18, 99).all() and 38 < age.mean() < 48
    feedback = clean_sample["Positive Feedback Count"].astype(int)
    assert feedback.min() == 0 and (feedback == 0).mean() > 0.3
    recommended = clean_sample.groupby(clean_sample["Rating"].astype(int))["Recommended IND"].apply(
        lambda s: (s == "1").mean()
    )
    assert recommended[5] > 0.9 and recommended[1] < 0.2


def test_vocabulary_lets_a_model_learn_sentiment(clean_sample: pd.DataFrame) -> None:
    from sklearn.feature_extraction.text import CountVectorizer
    from sklearn.linear_model import LogisticRegression

    rating = clean_sample["Rating"].astype(int)
    label = np.select([rating <= 2, rating == 3], [-1, 0], 1)
    vectors = CountVectorizer().fit_transform(clean_sample["Review Text"])
    model = LogisticRegression(max_iter=500).fit(vectors[:2000], label[:2000])
    predicted = model.predict(vectors[2000:])
    recall = [np.mean(predicted[label[2000:] == c] == c) for c in (-1, 0, 1)]
    assert min(recall) > 0.5, recall  # every class is learnable, not just the majority


@pytest.mark.parametrize("bad_rows", [1, 4])
def test_expected_rejects_are_what_ingest_rejects(bad_rows: int) -> None:
    data, expected = synth_reviews(2000, seed=11, bad_rows=bad_rows)
    assert expected == dict.fromkeys(BAD_ROW_KINDS, bad_rows)
    result = validate(parse_raw(data), min_age=13, max_age=110)
    found = {k: v for k, v in result.metrics["rejected_by_reason"].items() if v}
    assert found == expected
    assert result.metrics["rows_in"] == 2000
    assert result.metrics["rows_clean"] == 2000 - 6 * bad_rows


def test_bad_rows_per_kind_and_undecodable_bytes_really_are() -> None:
    data, expected = synth_reviews(400, seed=5, bad_rows={"undecodable_bytes": 3, "invalid_rating": 1})
    assert expected == {"undecodable_bytes": 3, "invalid_rating": 1}
    with pytest.raises(UnicodeDecodeError):
        data.decode("utf-8")


def test_too_many_bad_rows_is_refused() -> None:
    with pytest.raises(ValueError, match="do not fit"):
        synth_reviews(10, seed=0, bad_rows=2)


def test_cli_writes_gzip_deterministically(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "raw" / "reviews.csv.gz"
    assert cli_main(["synth", "--rows", "300", "--seed", "9", "--output", str(out), "--bad-rows", "2"]) == 0
    first = out.read_bytes()
    assert first[:2] == b"\x1f\x8b"
    assert gzip.decompress(first) == synth_reviews(300, seed=9, bad_rows=2)[0]
    assert "duplicate_review_id=2" in capsys.readouterr().out
    assert cli_main(["synth", "--rows", "300", "--seed", "9", "--output", str(out), "--bad-rows", "2"]) == 0
    assert out.read_bytes() == first

    plain = tmp_path / "reviews.csv"
    assert cli_main(["synth", "--rows", "50", "--seed", "9", "--output", str(plain)]) == 0
    assert plain.read_bytes() == synth_reviews(50, seed=9)[0]


def test_cli_error_is_a_message_not_a_traceback(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = cli_main(["synth", "--rows", "5", "--output", str(tmp_path / "x.csv"), "--bad-rows", "3"])
    assert code == 2
    assert "do not fit" in capsys.readouterr().err
