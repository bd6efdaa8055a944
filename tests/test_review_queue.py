"""The review queue (threshold behaviour, files, order by the value of a label), the label store
(format, durability, torn lines, one label per review across processes) and
`reviewpipe review enqueue` with a tiny real model."""

from __future__ import annotations

import json
import multiprocessing
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline

from reviewpipe.cli import main
from reviewpipe.review.cli import enqueue
from reviewpipe.review.queue import read_queue, select_for_review, write_queue
from reviewpipe.review.store import AlreadyLabelled, LabelStore, ReviewLock, annotator_file_name, read_labels


def store_for(labels_dir: Path, annotator: str, state_dir: Path | None = None) -> LabelStore:
    return LabelStore(labels_dir, annotator, ReviewLock(state_dir or labels_dir.parent / "state"))


PROBABILITIES = np.array(
    [
        [0.05, 0.05, 0.90],  # exactly at the threshold: confident enough, not queued
        [0.10, 0.05, 0.85],  # below: queued
        [0.02, 0.97, 0.01],  # confident
        [0.40, 0.35, 0.25],  # queued, predicted -1
        [np.nan, np.nan, np.nan],  # not predicted (blank text): nothing to review
    ]
)


def test_only_predictions_below_the_threshold_are_queued() -> None:
    records = select_for_review(
        [1, 2, 3, 4, 5],
        ["a", "b", "c", "d", ""],
        PROBABILITIES,
        0.90,
        created_at="2026-01-01T00:00:00.000+00:00",
    )
    assert [r["review_id"] for r in records] == [2, 4]
    assert records[0] == {
        "review_id": 2,
        "text": "b",
        "predicted_label": 1,
        "probabilities": {"-1": 0.10, "0": 0.05, "1": 0.85},
        "confidence": 0.85,
        "created_at": "2026-01-01T00:00:00.000+00:00",
    }
    assert records[1]["predicted_label"] == -1
    assert [
        r["review_id"] for r in select_for_review([1, 2, 3, 4, 5], list("abcde"), PROBABILITIES, 0.95)
    ] == [1, 2, 4]
    assert select_for_review([1, 2, 3, 4, 5], list("abcde"), PROBABILITIES, 0.30) == []
    with pytest.raises(ValueError, match="threshold"):
        select_for_review([1], ["a"], PROBABILITIES[:1], 1.5)
    with pytest.raises(ValueError, match="probability rows"):
        select_for_review([1, 2], ["a", "b"], PROBABILITIES[:1], 0.9)


def test_queue_files_round_trip_and_deduplicate(tmp_path: Path) -> None:
    queue_dir = str(tmp_path / "queue")
    assert read_queue(queue_dir) == []
    assert write_queue([], queue_dir) is None
    first = select_for_review(np.array([7, 8]), ["x", "y"], np.full((2, 3), 1 / 3), 0.9)
    path = write_queue(first, queue_dir, name="a.jsonl")
    assert path == str(tmp_path / "queue" / "a.jsonl")
    lines = Path(path).read_text().splitlines()
    assert [json.loads(line)["review_id"] for line in lines] == [7, 8]  # numpy ints written as JSON ints
    write_queue([{**first[0], "text": "x again"}, {**first[1], "review_id": 9}], queue_dir, name="b.jsonl")
    (tmp_path / "queue" / "c.jsonl").write_text(json.dumps({**first[0], "review_id": 10}) + '\n{"torn": \n')
    queued = read_queue(queue_dir)
    assert [(r["review_id"], r["text"]) for r in queued] == [(7, "x"), (8, "y"), (9, "y"), (10, "x")]
    assert not list((tmp_path / "queue").glob("*.tmp-*"))


def test_queue_reads_the_least_confident_first_across_batches(tmp_path: Path) -> None:
    queue_dir = str(tmp_path / "queue")
    probabilities = np.array([[0.1, 0.2, 0.7], [0.45, 0.1, 0.45], [0.3, 0.3, 0.4]])
    write_queue(select_for_review([1, 2, 3], list("abc"), probabilities, 0.9, "t1"), queue_dir, "a.jsonl")
    later = np.array([[0.34, 0.33, 0.33], [0.6, 0.3, 0.1], [0.2, 0.4, 0.4]])
    write_queue(select_for_review([4, 5, 6], list("def"), later, 0.9, "t2"), queue_dir, "b.jsonl")
    queued = read_queue(queue_dir)
    # 1 - top probability: 4 (0.66), 3 and 6 (0.6; 3 was queued first), 2 (0.55), 5 (0.4), 1 (0.3)
    assert [r["review_id"] for r in queued] == [4, 3, 6, 2, 5, 1]


def test_label_store_appends_the_contract_records(tmp_path: Path) -> None:
    store = store_for(tmp_path / "labels", "Ana María")
    assert store.path.name == annotator_file_name("Ana María") == "Ana_Mar_a.jsonl"
    first = store.append("r1", -1)
    store.append(42, 1)
    records = [json.loads(line) for line in store.path.read_text().splitlines()]
    assert records == read_labels(tmp_path / "labels")
    assert list(records[0]) == ["review_id", "label", "annotator", "labeled_at"]
    assert records[0] == first and records[0]["annotator"] == "Ana María" and records[1]["review_id"] == 42
    assert pd.to_datetime(records[0]["labeled_at"], utc=True) <= pd.to_datetime(
        records[1]["labeled_at"], utc=True
    )
    other = store_for(tmp_path / "labels", "bob")
    other.append("r9", 0)
    assert other.labelled_ids() == {"r1", "42", "r9"}  # anyone's labels count
    with pytest.raises(AlreadyLabelled, match="already labelled"):
        other.append("r1", 1)  # never a second label for a review
    assert len(read_labels(tmp_path / "labels")) == 3
    with pytest.raises(ValueError):
        store.append("r2", 2)
    with pytest.raises(ValueError):
        store.append("r2", True)


def test_label_records_merge_in_prepare(tmp_path: Path) -> None:
    # The prepare stage's reader is the consumer of this format: it must accept every record.
    prepare = pytest.importorskip("reviewpipe.prep.prepare")
    store = store_for(tmp_path / "labels", "ana")
    store.append(5, 1)
    store.append("6", -1)
    with open(store.path, "a") as f:  # another tool's later label for the same review wins
        f.write(
            json.dumps({"review_id": 5, "label": 0, "annotator": "x", "labeled_at": "2099-01-01T00:00:00Z"})
        )
        f.write("\n")
    labels, invalid = prepare.read_human_labels(str(tmp_path / "labels"))
    assert invalid == 0
    assert dict(zip(labels["review_key"], labels["label"], strict=True)) == {"5": 0, "6": -1}


def test_torn_label_line_is_skipped_and_never_swallows_the_next_label(tmp_path: Path) -> None:
    labels = tmp_path / "labels"
    labels.mkdir()
    (labels / "ana.jsonl").write_text(
        '{"review_id": 1, "label": 1, "annotator": "ana", "labeled_at": "x"}\n{"review_id": 2, "lab'
    )
    assert [r["review_id"] for r in read_labels(labels)] == [1]
    store_for(labels, "ana").append(3, -1)  # the crash left a torn line; the next label survives it
    assert [(r["review_id"], r["label"]) for r in read_labels(labels)] == [(1, 1), (3, -1)]
    store_for(labels, "ana").append(2, 0)  # the torn review was never saved: it can be labelled
    assert [r["review_id"] for r in read_labels(labels)] == [1, 3, 2]
    assert (labels / "ana.jsonl").read_text().count("\n") == 4  # torn line closed, three whole records


def _label_everything(labels_dir: str, state_dir: str, annotator: str, ids: list[int], out: object) -> None:
    """One annotator process trying to label every review: counts what it saved and what it was refused."""
    store = LabelStore(labels_dir, annotator, ReviewLock(state_dir))
    saved = refused = 0
    for review_id in ids:
        try:
            store.append(review_id, 1)
            saved += 1
        except AlreadyLabelled:
            refused += 1
    out.put((annotator, saved, refused))


def test_two_processes_never_label_the_same_review_twice(tmp_path: Path) -> None:
    ids = list(range(60))
    context = multiprocessing.get_context("fork")
    out = context.Queue()
    workers = [
        context.Process(
            target=_label_everything,
            args=(str(tmp_path / "labels"), str(tmp_path / "state"), name, ids, out),
        )
        for name in ("ana", "bob")
    ]
    for w in workers:
        w.start()
    results = sorted(out.get(timeout=120) for _ in workers)
    for w in workers:
        w.join(timeout=60)
        assert w.exitcode == 0
    records = read_labels(tmp_path / "labels")
    assert sorted(r["review_id"] for r in records) == ids  # every review once, none twice
    assert sum(saved for _, saved, _ in results) == 60
    assert all(saved + refused == 60 for _, saved, refused in results)


class TinyModel:
    """A real TF-IDF + logistic regression model behind the predictor interface."""

    def __init__(self) -> None:
        texts = [
            "love it great",
            "perfect soft",
            "awful cheap",
            "terrible returned",
            "okay fine",
            "average fine",
        ]
        self.pipeline = make_pipeline(TfidfVectorizer(), LogisticRegression(C=0.5)).fit(
            texts, [1, 1, -1, -1, 0, 0]
        )

    def predict_proba(self, texts: list[str]) -> np.ndarray:
        return self.pipeline.predict_proba(texts)


def test_enqueue_predicts_and_queues_uncertain_reviews_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from reviewpipe.config import load_params

    monkeypatch.chdir(tmp_path)
    params_path = tmp_path / "params.yaml"
    params_path.write_text(
        yaml.safe_dump(
            {
                "review": {
                    "confidence_threshold": 0.9,
                    "queue_dir": "queue",
                    "labels_dir": "labels",
                    "state_dir": "state",
                    "model": {
                        "source": "none",
                        "variant": None,
                        "kind": "package",
                        "path": None,
                        "batch_size": 2,
                    },
                    "text_column": "review_body",
                    "id_column": "review_id",
                }
            }
        )
    )
    batch = pd.DataFrame({"review_id": [1, 2, 3, 4], "review_body": ["love it", "cheap awful", "hmm", "  "]})
    batch.to_csv(tmp_path / "batch.csv", index=False)
    model = TinyModel()
    params = load_params(params_path)
    path, counts = enqueue(params, "batch.csv", predictor=model)
    expected = model.predict_proba(["love it", "cheap awful", "hmm"]).max(axis=1) < 0.9
    assert counts == {"predicted": 3, "below_threshold": int(expected.sum()), "queued": int(expected.sum())}
    assert expected.all()  # a six-sentence model is never 90% sure
    order = np.argsort(model.predict_proba(["love it", "cheap awful", "hmm"]).max(axis=1), kind="stable")
    assert [r["review_id"] for r in read_queue("queue")] == [[1, 2, 3][i] for i in order]  # least sure first
    store_for(Path("labels"), "ana").append(1, 1)
    again, counts = enqueue(params, "batch.csv", predictor=model)  # already queued: nothing new
    assert again is None and counts["queued"] == 0
    assert len(list(Path("queue").glob("*.jsonl"))) == 1
    # Through the command line: no model configured is a user error, not a traceback.
    assert main(["review", "enqueue", "--params", str(params_path), "--input", "batch.csv"]) == 2
    assert main(["review", "--params", str(params_path)]) == 2  # nobody can sign in: no token, no --annotator
