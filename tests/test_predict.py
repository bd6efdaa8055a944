"""`reviewpipe predict` (Batch Transform, locally): parquet/CSV/JSON Lines in, parts + done markers out,
bad rows in rejects.jsonl with reasons, resumption after an interruption, S3 via moto, and agreement
with the real-time server on the same package."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import boto3
import numpy as np
import pandas as pd
import pytest

from reviewpipe import cli
from reviewpipe.errors import ReviewpipeError
from reviewpipe.serving.batch import BatchJob, PackagedModel, read_output, run_batch
from reviewpipe.serving.server import ModelServer, ServeSettings, VariantSpec
from reviewpipe.storage import StorageOptions
from tests.test_package import tiny_artifacts
from tests.test_serve import invoke

SETTINGS = ServeSettings(port=0, quantize="none", max_batch_size=8, max_wait_ms=2)
GOOD_TEXTS = [
    "love this dress, great fit",
    "awful fabric, terrible fit",
    "it is okay, nothing special",
    "the colour is lovely",
    "returned it the next day",
    "fits as expected",
]


@pytest.fixture(scope="module")
def baseline() -> PackagedModel:
    model = PackagedModel(tiny_artifacts()["baseline_tar"], SETTINGS)
    yield model
    model.close()


class Counting:
    """A Predictor that counts its calls and can stop the job (like Ctrl-C) on a given call."""

    def __init__(self, inner: PackagedModel, interrupt_on_call: int | None = None) -> None:
        self.inner, self.calls, self.interrupt_on_call = inner, 0, interrupt_on_call
        self.version, self.fingerprint = inner.version, inner.fingerprint

    def predict(self, texts: list[str]) -> list[dict[str, Any]]:
        self.calls += 1
        if self.calls == self.interrupt_on_call:
            raise KeyboardInterrupt
        return self.inner.predict(texts)


def reviews(rows: int) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "review_id": np.arange(1000, 1000 + rows),
            "review_body": [f"{GOOD_TEXTS[i % len(GOOD_TEXTS)]} #{i}" for i in range(rows)],
            "rating": 5,
        }
    )


def test_formats_bad_rows_and_output_layout(baseline: PackagedModel, tmp_path: Path) -> None:
    frame = pd.DataFrame(
        {
            "review_id": pd.array([1, 2, None, 4, 5, 6, 7], dtype="Int64"),
            "review_body": ["love it", None, "no id", "", "   ", "awful", "fine"],
        }
    )
    reasons = {
        1: "missing review_body",
        2: "missing review_id",
        3: "empty review_body",
        4: "empty review_body",
    }
    in_csv = {**reasons, 1: "empty review_body"}  # CSV cannot tell a missing field from an empty one
    inputs = {
        "in.parquet": lambda p: frame.to_parquet(p),
        "in.csv.gz": lambda p: frame.to_csv(p, index=False),
        "in.jsonl": lambda p: frame.to_json(p, orient="records", lines=True),
    }
    results = {}
    for name, write in inputs.items():
        write(tmp_path / name)
        out = tmp_path / f"out-{name}"
        manifest = run_batch(
            baseline, BatchJob(str(tmp_path / name), str(out), part_rows=3, batch_size=2), progress=False
        )
        assert (manifest["rows"], manifest["predicted"], manifest["rejected"]) == (7, 3, 4), name
        assert manifest["parts"] == ["part-00000.parquet", "part-00001.parquet", "part-00002.parquet"]
        assert manifest["model_version"] == baseline.version
        rejects = [json.loads(line) for line in (out / "rejects.jsonl").read_text().splitlines()]
        assert {r["row_number"]: r["reason"] for r in rejects} == (in_csv if ".csv" in name else reasons), (
            name
        )
        result = read_output(str(out))
        assert result["row_number"].tolist() == [0, 5, 6]
        assert result["review_id"].astype(str).tolist() == ["1", "6", "7"]  # CSV ids stay text
        assert result["predicted_sentiment"].tolist() == [1, -1, 0]
        probabilities = result[["proba_negative", "proba_neutral", "proba_positive"]].to_numpy()
        assert np.allclose(probabilities.sum(axis=1), 1, atol=1e-5)
        assert (result["model_version"] == baseline.version).all()
        assert sorted(p.name for p in out.glob("part-*.done.json")) == [
            f"part-0000{i}.done.json" for i in range(3)
        ]
        results[name] = result.drop(columns="review_id")
    pd.testing.assert_frame_equal(results["in.parquet"], results["in.csv.gz"])
    pd.testing.assert_frame_equal(results["in.parquet"], results["in.jsonl"])
    # JSON Lines input may carry a number where text belongs: rejected with its type, not fatal
    (tmp_path / "typed.jsonl").write_text(
        '{"review_id": 1, "review_body": 42}\n{"review_id": 2, "review_body": "ok"}\n'
    )
    run_batch(
        baseline,
        BatchJob(str(tmp_path / "typed.jsonl"), str(tmp_path / "typed-out"), output_format="jsonl"),
        progress=False,
    )
    assert (
        json.loads((tmp_path / "typed-out" / "rejects.jsonl").read_text())["reason"]
        == "review_body is int, expected a string"
    )
    assert [
        json.loads(x)["review_id"]
        for x in (tmp_path / "typed-out" / "part-00000.jsonl").read_text().splitlines()
    ] == [2]


def test_interrupted_job_resumes_without_recomputing_parts(baseline: PackagedModel, tmp_path: Path) -> None:
    reviews(50).to_parquet(tmp_path / "in.parquet")
    job = BatchJob(
        str(tmp_path / "in.parquet"), str(tmp_path / "out"), part_rows=10, batch_size=4
    )  # 3 calls a part
    reference = run_batch(
        baseline, BatchJob(job.input_uri, str(tmp_path / "ref"), part_rows=10, batch_size=4), progress=False
    )

    first = Counting(baseline, interrupt_on_call=7)  # the first call of part 2: parts 0 and 1 are done
    with pytest.raises(KeyboardInterrupt):
        run_batch(first, job, progress=False)
    out = tmp_path / "out"
    assert sorted(p.name for p in out.glob("part-*")) == [
        "part-00000.done.json",
        "part-00000.parquet",
        "part-00001.done.json",
        "part-00001.parquet",
    ]
    assert not (out / "_manifest.json").exists()
    written = {p.name: p.stat().st_mtime_ns for p in out.glob("part-*")}

    second = Counting(baseline)
    parts_seen: list[tuple[int, bool]] = []
    manifest = run_batch(
        second, job, progress=False, on_part=lambda i, skipped: parts_seen.append((i, skipped))
    )
    assert second.calls == 9  # parts 2, 3, 4 only
    assert parts_seen == [(0, True), (1, True), (2, False), (3, False), (4, False)]
    assert {name: (out / name).stat().st_mtime_ns for name in written} == written  # not rewritten
    assert (manifest["parts_skipped"], manifest["parts_written"], manifest["predicted"]) == (2, 3, 50)
    pd.testing.assert_frame_equal(read_output(str(out)), read_output(str(tmp_path / "ref")))
    assert manifest["parts"] == reference["parts"]

    # a part whose marker never got written (killed between the two writes) is redone, alone
    (out / "part-00003.done.json").unlink()
    third = Counting(baseline)
    assert run_batch(third, job, progress=False)["parts_written"] == 1 and third.calls == 3
    pd.testing.assert_frame_equal(read_output(str(out)), read_output(str(tmp_path / "ref")))

    # the same output directory for another job is refused, not mixed
    with pytest.raises(ReviewpipeError, match="part_rows differ"):
        run_batch(baseline, BatchJob(job.input_uri, job.output_uri, part_rows=20), progress=False)
    reviews(51).to_parquet(tmp_path / "in.parquet")
    with pytest.raises(ReviewpipeError, match="input differ"):
        run_batch(baseline, job, progress=False)


def test_s3_input_and_output(
    baseline: PackagedModel, s3_bucket: str, moto_server: str, tmp_path: Path
) -> None:
    s3 = boto3.client("s3", region_name="us-east-1")
    reviews(25).to_csv(tmp_path / "in.csv", index=False)
    s3.upload_file(str(tmp_path / "in.csv"), s3_bucket, "batch/in.csv")
    options = StorageOptions(endpoint_url=moto_server)
    job = BatchJob(f"s3://{s3_bucket}/batch/in.csv", f"s3://{s3_bucket}/batch/out", part_rows=10)
    manifest = run_batch(baseline, job, options, progress=False)
    keys = sorted(o["Key"] for o in s3.list_objects_v2(Bucket=s3_bucket, Prefix="batch/out/")["Contents"])
    assert keys == [
        "batch/out/_job.json",
        "batch/out/_manifest.json",
        *[f"batch/out/part-0000{i}.{ext}" for i in range(3) for ext in ("done.json", "parquet")],
        "batch/out/rejects.jsonl",
    ]
    result = read_output(job.output_uri, options)
    assert manifest["predicted"] == 25 and result["review_id"].tolist() == [str(i) for i in range(1000, 1025)]
    assert run_batch(baseline, job, options, progress=False)["parts_skipped"] == 3  # resumes on S3 too


def test_batch_and_realtime_predictions_agree(tmp_path: Path) -> None:
    """Same package, same settings: `reviewpipe predict` and `reviewpipe serve` give the same answers."""
    art = tiny_artifacts()
    texts = [*GOOD_TEXTS, "a much longer review that goes on about the fabric, the fit and the colour " * 5]
    pd.DataFrame({"review_id": range(len(texts)), "review_body": texts}).to_parquet(tmp_path / "in.parquet")
    server = ModelServer(
        [VariantSpec("bert", str(art["bert_tar"])), VariantSpec("baseline", str(art["baseline_tar"]))],
        SETTINGS,
    ).start(wait=True, timeout=120)
    try:
        for name in ("bert", "baseline"):
            model = PackagedModel(art[f"{name}_tar"], SETTINGS)
            try:
                run_batch(
                    model,
                    BatchJob(str(tmp_path / "in.parquet"), str(tmp_path / name), part_rows=4, batch_size=3),
                    progress=False,
                )
            finally:
                model.close()
            batch = read_output(str(tmp_path / name))
            realtime = []
            for text in texts:  # one request per review: other batch shapes than the job's
                status, _, body = invoke(server.url, {"inputs": text}, X_Amzn_SageMaker_Target_Variant=name)
                assert status == 200
                realtime.extend(body["predictions"])
            assert batch["predicted_sentiment"].tolist() == [p["label"] for p in realtime]
            assert batch["model_version"].tolist() == [p["model_version"] for p in realtime]
            expected = [[p["probabilities"][k] for k in ("-1", "0", "1")] for p in realtime]
            np.testing.assert_allclose(
                batch[["proba_negative", "proba_neutral", "proba_positive"]].to_numpy(), expected, atol=2e-6
            )
    finally:
        server.stop(drain_timeout=5)


def test_cli_runs_and_reports_user_mistakes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    art = tiny_artifacts()
    reviews(12).to_json(tmp_path / "in.jsonl", orient="records", lines=True)

    def predict(
        *extra: str,
        model: Path = art["baseline_tar"],
        source: Path = tmp_path / "in.jsonl",
        output: str = "out",
    ) -> int:
        return cli.main(
            [
                "predict",
                "--model",
                str(model),
                "--input",
                str(source),
                "--output",
                str(tmp_path / output),
                "--part-rows",
                "5",
                "--format",
                "jsonl",
                "--no-progress",
                "--params",
                str(tmp_path / "none.yaml"),
                "--trust",
                *extra,
            ]
        )

    assert predict() == 0
    assert "12 predictions, 0 rejected rows (3 parts written, 0 already done)" in capsys.readouterr().out
    assert len(read_output(str(tmp_path / "out"))) == 12
    assert predict() == 0
    assert "(0 parts written, 3 already done)" in capsys.readouterr().out
    assert predict("--text-column", "body", output="o2") == 2
    assert "has no column(s) ['body']" in capsys.readouterr().err
    assert predict(model=tmp_path / "nope.tar.gz", output="o3") == 2
    assert "does not exist" in capsys.readouterr().err
    (tmp_path / "in.txt").write_text("x")
    assert predict(source=tmp_path / "in.txt", output="o4") == 2
    assert "cannot tell the format" in capsys.readouterr().err
    assert not os.path.exists(tmp_path / "o4" / "_manifest.json")


def test_undecodable_bytes_and_broken_lines_reject_their_row_only(
    baseline: PackagedModel, tmp_path: Path
) -> None:
    """A byte that is not UTF-8 (CSV or JSON Lines) or a line that is not JSON rejects its row into
    rejects.jsonl with the reason; the job goes on (it used to die with a UnicodeDecodeError)."""
    (tmp_path / "in.csv").write_bytes(
        b"review_id,review_body\n1,love it\n2,the caf\xe9 colour is off\n3,NA\n4,awful fit\n"
    )
    manifest = run_batch(
        baseline, BatchJob(str(tmp_path / "in.csv"), str(tmp_path / "out-csv")), progress=False
    )
    assert (manifest["predicted"], manifest["rejected"]) == (3, 1)
    (reject,) = [json.loads(x) for x in (tmp_path / "out-csv" / "rejects.jsonl").read_text().splitlines()]
    assert reject == {
        "row_number": 1,
        "review_id": "2",
        "reason": "undecodable bytes in review_body (not UTF-8)",
        "text": "the caf\\xe9 colour is off",
    }
    assert read_output(str(tmp_path / "out-csv"))["review_id"].tolist() == ["1", "3", "4"]  # "NA" is a review

    (tmp_path / "in.jsonl").write_bytes(
        b'{"review_id": 1, "review_body": "love it"}\n'
        b'{"review_id": 2, "review_body": "caf\xe9"}\n'
        b'{"review_id": 3, "review_body": "unterminated\n'
        b"[1, 2]\n"
        b'{"review_id": 5, "review_body": "awful fit"}\n'
    )
    manifest = run_batch(
        baseline,
        BatchJob(str(tmp_path / "in.jsonl"), str(tmp_path / "out-jsonl"), part_rows=2),
        progress=False,
    )
    assert (manifest["rows"], manifest["predicted"], manifest["rejected"]) == (5, 2, 3)
    rejects = {
        r["row_number"]: r
        for r in map(json.loads, (tmp_path / "out-jsonl" / "rejects.jsonl").read_text().splitlines())
    }
    assert (
        rejects[1]["reason"].startswith("undecodable bytes (not UTF-8)") and "caf\\xe9" in rejects[1]["text"]
    )
    assert rejects[2]["reason"].startswith("not valid JSON")
    assert rejects[3]["reason"] == "not a JSON object (list)"
    assert read_output(str(tmp_path / "out-jsonl"))["review_id"].tolist() == [1, 5]


def test_predict_over_the_lake_reads_each_reviews_current_version(
    baseline: PackagedModel, tmp_path: Path
) -> None:
    from reviewpipe.data.append import AppendSettings, Batch, ingest_batches
    from reviewpipe.data.ingest import ReadSettings
    from reviewpipe.data.synth import synth_reviews
    from tests.test_data_append import raw_rows, write_raw

    header, rows = raw_rows(synth_reviews(60, seed=4)[0])
    settings = AppendSettings(ReadSettings(), "product_category", "256MB", 0)
    lake_uri = str(tmp_path / "lake")
    ingest_batches(
        [Batch.of(write_raw(tmp_path / "b1.csv", header, rows), "2024-01-01")],
        lake_uri,
        settings,
        rebuild=False,
    )
    changed = [[*rows[0][:4], "Changed my mind, returned it.", *rows[0][5:]]]
    metrics = ingest_batches(
        [Batch.of(write_raw(tmp_path / "b2.csv", header, changed), "2024-02-01")],
        lake_uri,
        settings,
        rebuild=False,
    )
    assert metrics["rows_changed"] == 1 and metrics["lake"]["review_rows"] == 61
    job = BatchJob(f"{lake_uri}/reviews", str(tmp_path / "out"), part_rows=25)
    manifest = run_batch(baseline, job, progress=False)
    result = read_output(str(tmp_path / "out"))
    assert manifest["rows"] == len(result) == metrics["lake"]["review_ids"] == 60
    assert result["review_id"].is_unique and result["review_id"].tolist() == sorted(result["review_id"])
    # A later batch publishes a new lake version: the old output is for another input, refused.
    new = [[str(10_000), *rows[1][1:]]]
    ingest_batches(
        [Batch.of(write_raw(tmp_path / "b3.csv", header, new), "2024-03-01")],
        lake_uri,
        settings,
        rebuild=False,
    )
    with pytest.raises(ReviewpipeError, match="holds output of another job"):
        run_batch(baseline, job, progress=False)


def test_offline_model_calls_get_every_core_and_answer_as_with_the_servers_share() -> None:
    """serve.num_threads is a server worker's share of the cores; a batch job or the monitoring
    baseline is the only caller, so its model calls run on every core, with the same answers."""
    pytest.importorskip("onnxruntime")
    onnx = ServeSettings(port=0, backend="onnx", quantize="none", num_threads=1, max_batch_size=8)
    offline = PackagedModel(tiny_artifacts()["bert_tar"], onnx)
    pinned = PackagedModel(tiny_artifacts()["bert_tar"], onnx, threads=1)
    try:
        threads = [m.model.onnx_session.get_session_options().intra_op_num_threads for m in (offline, pinned)]
        assert threads == [0, 1]  # 0: ONNX Runtime's default, one thread per core
        assert offline.predict(GOOD_TEXTS) == pinned.predict(GOOD_TEXTS)
    finally:
        offline.close()
        pinned.close()


def test_predict_refuses_a_negative_thread_count(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    reviews(3).to_parquet(tmp_path / "in.parquet")
    assert (
        cli.main(
            [
                "predict",
                "--model",
                str(tiny_artifacts()["baseline_tar"]),
                "--input",
                str(tmp_path / "in.parquet"),
                "--output",
                str(tmp_path / "out"),
                "--num-threads",
                "-1",
                "--trust",
            ]
        )
        != 0
    )
    assert "--num-threads must be 0 (every core) or more, not -1" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
