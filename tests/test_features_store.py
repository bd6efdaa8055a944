"""The offline feature group: round trip, point-in-time reads, schema checks, SQL, S3."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from reviewpipe.errors import ReviewpipeError
from reviewpipe.features.store import FeatureDefinition, FeatureGroup, arrow_type, definitions_from_frame
from reviewpipe.storage import StorageOptions

FEATURES = [
    FeatureDefinition("review_id", "int64", "id"),
    FeatureDefinition("event_time", "timestamp[us, tz=UTC]", "when"),
    FeatureDefinition("input_ids", "list<item: int32>", "tokens"),
    FeatureDefinition("sentiment", "int64", "label"),
    FeatureDefinition("split_type", "string", "split"),
]
T1, T2, T3 = (pd.Timestamp(f"2024-05-0{d}T12:00:00Z") for d in (1, 2, 3))


def rows(ids: list[int], when: pd.Timestamp, sentiment: int = 1, split: str = "train") -> pd.DataFrame:
    return pd.DataFrame(
        {
            "review_id": ids,
            "event_time": pd.Series([when] * len(ids), dtype="datetime64[us, UTC]"),
            "input_ids": [[101, i, 102] for i in ids],
            "sentiment": [sentiment] * len(ids),
            "split_type": [split] * len(ids),
        }
    )


def group(root: Path | str, options: StorageOptions | None = None) -> FeatureGroup:
    return FeatureGroup("reviews-fg", str(root), options=options).create(FEATURES, "test group")


def test_ingest_then_read_round_trip(tmp_path: Path) -> None:
    fg = group(tmp_path)
    df = rows([1, 2, 3], T1)
    part = fg.ingest(df)
    assert Path(part).parent == tmp_path / "reviews-fg" / "data"
    back = fg.to_df()
    assert list(back.columns) == [f.name for f in FEATURES] + ["write_time"]
    assert back["review_id"].tolist() == [1, 2, 3]
    assert [list(x) for x in back["input_ids"]] == [[101, 1, 102], [101, 2, 102], [101, 3, 102]]
    assert (back["event_time"] == T1).all()
    assert back["split_type"].tolist() == ["train"] * 3

    fg.ingest(rows([4], T2))  # append-only: a second part file, the first untouched
    assert len(fg.part_files()) == 2 and part in fg.part_files()
    assert fg.to_df()["review_id"].tolist() == [1, 2, 3, 4]


def test_same_rows_at_the_same_write_time_give_the_same_files(tmp_path: Path) -> None:
    """A pipeline stage passes a write time derived from its params: reruns are byte-identical."""
    files = []
    for run in ("a", "b"):
        fg = FeatureGroup("reviews-fg", str(tmp_path / run)).create(FEATURES, "test group", creation_time=T1)
        part = Path(fg.ingest(rows([1, 2, 3], T1), write_time=T1))
        definition = (tmp_path / run / "reviews-fg" / "definition.json").read_text()
        files.append((part.name, part.read_bytes(), definition.replace(str(tmp_path / run), "<store>")))
        assert (fg.to_df()["write_time"] == T1).all()
        assert json.loads(files[-1][2])["CreationTime"] == "2024-05-01T12:00:00+00:00"
    assert files[0] == files[1] and files[0][0].startswith("part-20240501T120000000000Z-")
    other = FeatureGroup("reviews-fg", str(tmp_path / "a")).ingest(rows([1, 2, 4], T1), write_time=T1)
    assert Path(other).name != files[0][0]  # other content, another name: nothing overwritten


def test_stage_event_time_defaults_to_the_newest_batch() -> None:
    from omegaconf import OmegaConf

    from reviewpipe.stages.features import record_time

    data = OmegaConf.create({"ingested_at": "2018-01-01T00:00:00Z", "batches": []})
    assert record_time(None, data) == pd.Timestamp("2018-01-01T00:00:00Z")
    data.batches = [{"uri": "b.csv", "ingested_at": "2024-06-30T00:00:00Z"}]
    assert record_time(None, data) == pd.Timestamp("2024-06-30T00:00:00Z")
    assert record_time("2025-01-02T03:04:05", data) == pd.Timestamp("2025-01-02T03:04:05Z")


def test_definition_file_describes_the_group(tmp_path: Path) -> None:
    group(tmp_path)
    definition = json.loads((tmp_path / "reviews-fg" / "definition.json").read_text())
    assert definition["FeatureGroupName"] == "reviews-fg"
    assert definition["RecordIdentifierFeatureName"] == "review_id"
    assert definition["EventTimeFeatureName"] == "event_time"
    by_name = {f["FeatureName"]: f for f in definition["FeatureDefinitions"]}
    assert by_name["input_ids"] == {
        "FeatureName": "input_ids",
        "FeatureType": "Integral",
        "CollectionType": "List",
        "ArrowType": "list<item: int32>",
        "Description": "tokens",
    }
    assert by_name["split_type"]["FeatureType"] == "String"
    # a fresh object reads the same definition back
    assert FeatureGroup("reviews-fg", str(tmp_path)).features == FEATURES


def test_point_in_time_with_two_versions_of_a_record(tmp_path: Path) -> None:
    fg = group(tmp_path)
    fg.ingest(rows([1, 2], T1, sentiment=0))
    fg.ingest(rows([1], T2, sentiment=1, split="test"))  # record 1 changes at T2
    fg.ingest(rows([3], T3))  # record 3 appears at T3

    before = fg.as_of(T1 - pd.Timedelta(seconds=1))
    assert before.empty
    at_t1 = fg.as_of(T1).set_index("review_id")
    assert sorted(at_t1.index) == [1, 2] and at_t1.loc[1, "sentiment"] == 0
    between = fg.as_of("2024-05-01T18:00:00Z").set_index("review_id")
    assert between.loc[1, "sentiment"] == 0 and between.loc[1, "split_type"] == "train"
    later = fg.as_of(T3).set_index("review_id")
    assert later.loc[1, "sentiment"] == 1 and later.loc[1, "split_type"] == "test"
    assert sorted(later.index) == [1, 2, 3]
    assert "write_time" not in later.columns

    latest = fg.get_record(1)
    assert latest["sentiment"] == 1 and latest["event_time"] == T2
    assert fg.get_record(999) is None
    # a late-arriving older version does not replace the latest one
    fg.ingest(rows([1], T1 - pd.Timedelta(days=1), sentiment=-1))
    assert fg.get_record(1)["sentiment"] == 1
    assert len(fg.to_df()) == 5  # every version stays in the offline store


def test_same_event_time_rewritten_later_wins(tmp_path: Path) -> None:
    fg = group(tmp_path)
    fg.ingest(rows([1], T1, sentiment=0))
    fg.ingest(rows([1], T1, sentiment=-1))  # a correction of the same event
    assert fg.get_record(1)["sentiment"] == -1
    assert fg.as_of(T2)["sentiment"].tolist() == [-1]


def test_point_in_time_join_for_entity_times(tmp_path: Path) -> None:
    fg = group(tmp_path)
    fg.ingest(rows([1, 2], T1, sentiment=0))
    fg.ingest(rows([1], T2, sentiment=1))
    entities = pd.DataFrame({"review_id": [1, 1, 2], "as_of_time": [T1, T3, T1 - pd.Timedelta(hours=1)]})
    joined = fg.point_in_time(entities)
    assert joined[["review_id", "sentiment"]].values.tolist() == [[1, 0], [1, 1]]


@pytest.mark.parametrize(
    "change, named",
    [
        (lambda df: df.drop(columns="sentiment"), "missing columns ['sentiment']"),
        (lambda df: df.assign(extra=1), "unexpected columns ['extra']"),
        (lambda df: df.assign(sentiment=["good"] * len(df)), "sentiment (expected int64"),
        (lambda df: df.assign(event_time=["yesterday"] * len(df)), "event_time (expected timestamp"),
        (lambda df: df.assign(review_id=[None] * len(df)), "['review_id'] may not be null"),
    ],
)
def test_schema_mismatch_is_a_clear_error_and_writes_nothing(tmp_path: Path, change, named: str) -> None:
    fg = group(tmp_path)
    fg.ingest(rows([1], T1))
    with pytest.raises(ReviewpipeError, match="nothing was written") as error:
        fg.ingest(change(rows([2, 3], T2)))
    assert named in str(error.value)
    assert len(fg.part_files()) == 1
    assert sorted(p.name for p in (tmp_path / "reviews-fg" / "data").iterdir()) == [
        Path(fg.part_files()[0]).name
    ]


def test_create_checks_the_definition(tmp_path: Path) -> None:
    fg = group(tmp_path)
    assert group(tmp_path).features == fg.features  # same definition again: fine
    with pytest.raises(ReviewpipeError, match="other features"):
        FeatureGroup("reviews-fg", str(tmp_path)).create(FEATURES[:-1])
    with pytest.raises(ReviewpipeError, match="must be a timestamp"):
        FeatureGroup("g2", str(tmp_path)).create(
            [FeatureDefinition("review_id", "int64"), FeatureDefinition("event_time", "string")]
        )
    with pytest.raises(ReviewpipeError, match="reserved"):
        FeatureGroup("g3", str(tmp_path)).create([*FEATURES, FeatureDefinition("write_time", "string")])
    with pytest.raises(ReviewpipeError, match="not found"):
        FeatureGroup("never-created", str(tmp_path)).to_df()
    with pytest.raises(ReviewpipeError, match="letters, digits"):
        FeatureGroup("bad name; drop", str(tmp_path))
    fg.delete()
    assert not fg.exists()


def test_sql_like_athena_count_per_sentiment_and_split(tmp_path: Path) -> None:
    fg = group(tmp_path)
    fg.ingest(
        pd.concat(
            [rows([1, 2, 3], T1, 1, "train"), rows([4], T1, -1, "train"), rows([5, 6], T1, 0, "test")],
            ignore_index=True,
        )
    )
    counts = fg.query(
        'SELECT split_type, sentiment, COUNT(*) AS n FROM "reviews-fg" GROUP BY 1, 2 ORDER BY 1, 2'
    )
    assert counts.values.tolist() == [["test", 0, 2], ["train", -1, 1], ["train", 1, 3]]
    with pytest.raises(ReviewpipeError, match="query on feature group"):
        fg.query('SELECT nope FROM "reviews-fg"')


def test_empty_group_reads_as_empty_typed_table(tmp_path: Path) -> None:
    fg = group(tmp_path)
    assert fg.to_df().empty and "input_ids" in fg.to_df().columns
    assert fg.query('SELECT COUNT(*) AS n FROM "reviews-fg"')["n"].tolist() == [0]
    assert fg.get_record(1) is None


def test_definitions_from_frame_and_type_names() -> None:
    definitions = definitions_from_frame(rows([1], T1), {"review_id": "id"})
    assert [(d.name, d.type) for d in definitions] == [
        ("review_id", "int64"),
        ("event_time", "timestamp[us, tz=UTC]"),
        ("input_ids", "list<item: int64>"),
        ("sentiment", "int64"),
        ("split_type", "string"),
    ]
    assert definitions[0].description == "id"
    assert str(arrow_type("list<item: int32>")) == "list<item: int32>"
    with pytest.raises(ReviewpipeError, match="unknown feature type"):
        arrow_type("decimal-ish")


def test_feature_group_on_s3(s3_bucket: str) -> None:
    options = StorageOptions.from_params({})  # endpoint from the moto fixture's environment
    fg = group(f"s3://{s3_bucket}/features", options)
    part = fg.ingest(rows([1, 2], T1, sentiment=0))
    fg.ingest(rows([1], T2, sentiment=1))
    assert part.startswith(f"s3://{s3_bucket}/features/reviews-fg/data/part-")
    assert len(fg.to_df()) == 3
    assert fg.get_record(1)["sentiment"] == 1
    assert fg.as_of(T1).set_index("review_id").loc[1, "sentiment"] == 0
    assert fg.query('SELECT COUNT(DISTINCT review_id) AS n FROM "reviews-fg"')["n"].tolist() == [2]
    again = FeatureGroup("reviews-fg", f"s3://{s3_bucket}/features", options=options)
    assert again.features == FEATURES
    with pytest.raises(ReviewpipeError, match="nothing was written"):
        again.ingest(rows([3], T3).drop(columns="split_type"))
    assert len(again.part_files()) == 2
