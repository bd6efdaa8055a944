"""Stage `prepare` (and `features` after it) on a real lake + catalog built from synthetic data, and on
the real dataset when present."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from omegaconf import DictConfig, OmegaConf

from reviewpipe.config import load_params
from reviewpipe.data.synth import write_synth
from reviewpipe.prep.prepare import PREPARED_COLUMNS
from reviewpipe.prep.split import SPLITS
from reviewpipe.stages import catalog, features, ingest, prepare
from tests.conftest import REPO_ROOT

RAW = "data/raw/womens_clothing_ecommerce_reviews.csv.gz"


def params(**overrides: object) -> DictConfig:
    cfg = load_params(REPO_ROOT / "params.yaml")
    return OmegaConf.merge(cfg, OmegaConf.from_dotlist([f"{k}={v}" for k, v in overrides.items()]))


def build_catalog_in(workdir: Path, raw: Path | None = None) -> None:
    """ingest → catalog with the repository's params, relative paths under workdir."""
    cwd = os.getcwd()
    os.chdir(workdir)
    try:
        if raw is None:
            write_synth(RAW, rows=1500, seed=7)
        else:
            Path(RAW).parent.mkdir(parents=True)
            os.symlink(raw, RAW)
        ingest.main(params())
        catalog.main(params())
    finally:
        os.chdir(cwd)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("prepare_stage")
    build_catalog_in(path)
    return path


@pytest.fixture
def in_workdir(workdir: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.chdir(workdir)
    yield workdir


def read_split(out_dir: str, name: str) -> pd.DataFrame:
    return pd.read_parquet(Path(out_dir) / f"{name}.parquet")


def test_prepare_stage_outputs_and_invariants(in_workdir: Path) -> None:
    prepare.main(params(**{"prepare.out_dir": "out/a", "prepare.metrics": "out/a.json"}))
    splits = {s: read_split("out/a", s) for s in SPLITS}
    unbalanced = read_split("out/a", "unbalanced")
    assert all(list(df.columns) == PREPARED_COLUMNS for df in [*splits.values(), unbalanced])
    ids = [set(df["review_id"]) for df in splits.values()]
    assert not (ids[0] & ids[1] or ids[0] & ids[2] or ids[1] & ids[2])
    assert all((df["split_type"] == s).all() for s, df in splits.items())
    counts = {s: df["sentiment"].value_counts() for s, df in splits.items()}
    assert all(c.nunique() == 1 and len(c) == 3 for c in counts.values())  # balanced per split

    metrics = json.loads(Path("out/a.json").read_text())
    rows_in = metrics["rows_in"]
    assert rows_in == json.loads(Path("metrics/ingest.json").read_text())["rows_clean"]
    assert rows_in == metrics["rows_dropped"] + metrics["rows_after_filtering"]
    assert metrics["rows_after_filtering"] == len(unbalanced)
    assert metrics["human_labels_merged"] == 0
    assert metrics["rows"]["train"]["total"] == len(splits["train"])
    assert json.loads(Path("out/a/class_weights.json").read_text()) == {"-1": 1.0, "0": 1.0, "1": 1.0}
    stats = pd.read_csv("out/a/split_stats.csv")
    balanced_stats = stats[stats["dataset"] == "balanced"]
    assert balanced_stats["rows"].sum() == sum(len(df) for df in splits.values())
    per_split = balanced_stats.groupby("split_type")["rows"].sum().to_dict()
    assert per_split == {s: len(df) for s, df in splits.items()}
    dropped = pd.read_parquet("out/a/dropped.parquet")
    assert len(dropped) == metrics["rows_dropped"]
    assert not set(dropped["review_id"]) & set(unbalanced["review_id"])


def test_prepare_stage_is_byte_identical_for_identical_params(in_workdir: Path) -> None:
    for run in ("b1", "b2"):
        prepare.main(params(**{"prepare.out_dir": f"out/{run}", "prepare.metrics": f"out/{run}.json"}))
    for name in [*SPLITS, "unbalanced", "dropped"]:
        assert Path(f"out/b1/{name}.parquet").read_bytes() == Path(f"out/b2/{name}.parquet").read_bytes()
    assert Path("out/b1/split_stats.csv").read_bytes() == Path("out/b2/split_stats.csv").read_bytes()


def test_natural_protocol_stage(in_workdir: Path) -> None:
    overrides = {
        "prepare.protocol": "natural",
        "prepare.balance": "none",
        "prepare.class_weights": "true",
        "prepare.split.train": 0.8,
        "prepare.split.validation": 0.1,
        "prepare.split.test": 0.1,
        "prepare.out_dir": "out/n",
        "prepare.metrics": "out/n.json",
    }
    prepare.main(params(**overrides))
    unbalanced = read_split("out/n", "unbalanced")
    assert sum(len(read_split("out/n", s)) for s in SPLITS) == len(unbalanced)
    weights = json.loads(Path("out/n/class_weights.json").read_text())
    train = read_split("out/n", "train")["sentiment"]
    assert weights["-1"] == pytest.approx(len(train) / (3 * (train == -1).sum()))
    for _, cls in unbalanced.groupby("sentiment"):  # the fractions per class, up to binomial noise
        share = (cls["split_type"] == "validation").mean()
        assert abs(share - 0.1) < 4 * np.sqrt(0.1 * 0.9 / len(cls))
    metrics = json.loads(Path("out/n.json").read_text())
    assert metrics["stratification"]["splits"]["validation"]["rows"] == len(read_split("out/n", "validation"))


def test_human_labels_are_merged_by_the_stage(in_workdir: Path) -> None:
    prepare.main(
        params(**{"prepare.out_dir": "out/h0", "prepare.metrics": "out/h0.json", "prepare.balance": "none"})
    )
    before = read_split("out/h0", "unbalanced").set_index("review_id")
    positive = before[(before["sentiment"] == 1) & (before["split_type"] == "train")].index[:3].tolist()
    labels = Path("labels/annotator.jsonl")
    labels.parent.mkdir(exist_ok=True)
    labels.write_text(
        "".join(
            json.dumps(
                {"review_id": int(r), "label": -1, "annotator": "ann", "labeled_at": "2025-01-01T00:00:00Z"}
            )
            + "\n"
            for r in positive
        )
    )
    prepare.main(
        params(
            **{
                "prepare.out_dir": "out/h1",
                "prepare.metrics": "out/h1.json",
                "prepare.balance": "none",
                "prepare.human_labels_dir": "labels",
            }
        )
    )
    after = read_split("out/h1", "unbalanced").set_index("review_id")
    assert (after.loc[positive, "sentiment"] == -1).all() and (after.loc[positive, "label_id"] == 0).all()
    metrics = json.loads(Path("out/h1.json").read_text())
    assert metrics["human_labels_merged"] == 3 and metrics["human_labels_changed"] == 3


def relabel(reviews: pd.DataFrame, n: int, labels_dir: str) -> dict[int, int]:
    """Write human labels for `n` reviews spread over every split, each different from its rating's
    label; returns {review_id: new label}."""
    rng = np.random.default_rng(0)
    sizes = {"train": n - 2 * (n // 3), "validation": n // 3, "test": n // 3}
    picked = np.concatenate(
        [
            rng.choice(reviews.index[reviews["split_type"] == s], size=k, replace=False)
            for s, k in sizes.items()
        ]
    )
    new = {
        int(r): int(rng.choice([x for x in (-1, 0, 1) if x != reviews.loc[r, "sentiment"]])) for r in picked
    }
    path = Path(labels_dir) / "relabel.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        "".join(
            json.dumps({"review_id": r, "label": lab, "annotator": "t", "labeled_at": "2025-01-01T00:00:00Z"})
            + "\n"
            for r, lab in new.items()
        )
    )
    return new


def assert_relabel_moves_no_row(before_dir: str, after_dir: str, new: dict[int, int]) -> dict[str, int]:
    """Every review keeps its split (balanced files and unbalanced); train/validation take the human
    label, test keeps the rating's; returns how many relabelled reviews each split holds."""
    before = read_split(before_dir, "unbalanced").set_index("review_id")
    after = read_split(after_dir, "unbalanced").set_index("review_id")
    assert after.index.equals(before.index)
    assert after["split_type"].equals(before["split_type"])
    for name in SPLITS:
        ids_after = set(read_split(after_dir, name)["review_id"])
        assert (
            before.loc[list(ids_after), "split_type"].eq(name).all()
        )  # a balanced file holds its split only
    relabelled = after.loc[list(new)]
    on_test = relabelled["split_type"] == "test"
    assert relabelled["human_label"].tolist() == list(new.values())
    assert (relabelled.loc[on_test, "sentiment"] == before.loc[relabelled.index[on_test], "sentiment"]).all()
    assert (relabelled.loc[~on_test, "sentiment"] == relabelled.loc[~on_test, "human_label"]).all()
    assert read_split(after_dir, "test").equals(
        read_split(before_dir, "test").assign(
            human_label=lambda d: d["review_id"].map(lambda r: new.get(int(r))).astype("Int64")
        )
    )
    return relabelled["split_type"].value_counts().to_dict()


def test_relabelling_50_reviews_moves_no_row_between_splits(in_workdir: Path) -> None:
    prepare.main(params(**{"prepare.out_dir": "out/r0", "prepare.metrics": "out/r0.json"}))
    before = read_split("out/r0", "unbalanced").set_index("review_id")
    new = relabel(before, 50, "labels50")
    prepare.main(
        params(
            **{
                "prepare.out_dir": "out/r1",
                "prepare.metrics": "out/r1.json",
                "prepare.human_labels_dir": "labels50",
            }
        )
    )
    per_split = assert_relabel_moves_no_row("out/r0", "out/r1", new)
    metrics = json.loads(Path("out/r1.json").read_text())
    assert per_split == {"train": 18, "validation": 16, "test": 16}
    assert metrics["human_labels_on_test"] == 16
    assert metrics["human_labels_merged"] == metrics["human_labels_changed"] == 50 - per_split["test"]


def test_features_stage_after_prepare(in_workdir: Path) -> None:
    prepare.main(params(**{"prepare.out_dir": "out/f", "prepare.metrics": "out/f.json"}))
    features.main(
        params(
            **{
                "prepare.out_dir": "out/f",
                "features.store_uri": "out/store",
                "features.metrics": "out/features.json",
                "features.max_seq_length": 32,
            }
        )
    )
    prepared = json.loads(Path("out/f.json").read_text())
    metrics = json.loads(Path("out/features.json").read_text())
    assert metrics["rows"] == prepared["rows_prepared"]
    expected = {s: {k: v for k, v in prepared["rows"][s].items() if k != "total" and v} for s in SPLITS}
    assert metrics["rows_per_split_sentiment"] == expected
    lengths = metrics["token_length"]
    assert lengths["p50"] <= lengths["p90"] <= lengths["p95"] <= lengths["p99"] <= lengths["max"]


@pytest.mark.realdata
@pytest.mark.slow
def test_course_protocol_on_real_data(
    real_raw: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    build_catalog_in(tmp_path, real_raw)
    monkeypatch.chdir(tmp_path)
    prepare.main(params())
    metrics = json.loads(Path("metrics/prepare.json").read_text())

    # Independent computation from the raw file, the course's way.
    raw = pd.read_csv(real_raw, index_col=0)
    raw = raw.dropna(subset=["Review Text", "Class Name"])
    raw = raw[raw["Review Text"].str.strip() != ""]
    raw = raw[raw.groupby("Class Name")["Class Name"].transform("size") >= 10]
    sentiment = np.select([raw["Rating"] <= 2, raw["Rating"] == 3], [-1, 0], 1)
    minority = int(pd.Series(sentiment).value_counts().min())
    assert metrics["rows_after_filtering"] == len(raw)
    per_class = metrics["rows_per_sentiment"]
    assert per_class["-1"] == per_class["0"] == per_class["1"] <= minority + 2
    assert per_class["-1"] == sum(metrics["rows"][s]["-1"] for s in SPLITS)
    assert metrics["stratification"]["p_value"] > 0.001

    # Relabelling 50 real reviews and re-running prepare moves no review between splits.
    before = read_split("data/prepared", "unbalanced").set_index("review_id")
    new = relabel(before, 50, "data/relabel50")
    prepare.main(params(**{"prepare.out_dir": "out/r", "prepare.human_labels_dir": "data/relabel50"}))
    print(
        "real data, 50 relabelled reviews per split:",
        assert_relabel_moves_no_row("data/prepared", "out/r", new),
    )
    print(
        "real data, course protocol:",
        json.dumps(
            {
                k: metrics[k]
                for k in (
                    "rows_in",
                    "dropped",
                    "rejected_at_ingest",
                    "rows_after_filtering",
                    "unbalanced_rows_per_sentiment",
                    "rows_per_sentiment",
                    "rows",
                    "stratification",
                )
            }
        ),
    )
