"""storage: atomic publishing (fsync before rename, nothing half-written, a killed writer's temp file
cleaned up), the shared table readers and writers, locally and on moto's S3 server."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pandas as pd
import pytest

from reviewpipe import storage
from reviewpipe.monitoring.cli import read_table
from reviewpipe.storage import StorageOptions
from tests.conftest import REPO_ROOT


def test_write_fsyncs_the_file_and_its_folder_before_and_after_the_rename(
    tmp_path: Path, monkeypatch
) -> None:
    calls: list[str] = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(os, "fsync", lambda fd: (calls.append("fsync"), real_fsync(fd))[1])
    monkeypatch.setattr(os, "replace", lambda a, b: (calls.append("replace"), real_replace(a, b))[1])
    storage.write_text(str(tmp_path / "out" / "report.html"), "<p>done</p>")
    assert (tmp_path / "out" / "report.html").read_text() == "<p>done</p>"
    assert calls == ["fsync", "replace", "fsync"]  # the data, the rename, then the folder entry
    assert os.listdir(tmp_path / "out") == ["report.html"]


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temp(tmp_path: Path) -> None:
    target = tmp_path / "params.yaml"
    target.write_text("old: 1\n")
    with pytest.raises(RuntimeError), storage.open_atomic(str(target), "w") as f:
        f.write("new: half")
        raise RuntimeError("killed mid-write")
    assert target.read_text() == "old: 1\n"
    assert os.listdir(tmp_path) == ["params.yaml"]


WRITER = textwrap.dedent(
    """
    import sys, time
    from reviewpipe import storage
    with storage.open_atomic(sys.argv[1], "wb") as f:
        f.write(b"half of it")
        f.flush()
        print("writing", flush=True)
        time.sleep(60)
        f.write(b" and the rest")
    """
)


def test_a_killed_writers_temp_file_is_removed_by_the_next_write(tmp_path: Path) -> None:
    target = tmp_path / "results" / "sentiment_counts.csv"
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT / "src")}
    writer = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(target)], stdout=subprocess.PIPE, env=env, text=True
    )
    try:
        assert writer.stdout.readline().strip() == "writing"
        leftovers = list(target.parent.glob("*.tmp-*"))
        assert len(leftovers) == 1 and not target.exists()
        # While its writer lives, the temp file is a write in progress: nobody removes it.
        assert storage.remove_stale_temp(str(tmp_path)) == []
    finally:
        writer.send_signal(signal.SIGKILL)  # no cleanup code runs
        writer.wait()
    assert leftovers[0].exists()
    other = tmp_path / "plots" / f"a.png{storage.TMP_MARK}{writer.pid}-0123abcd"  # the same dead writer
    other.parent.mkdir()
    other.write_bytes(b"x")
    storage.write_bytes(str(target), b"complete")
    assert target.read_bytes() == b"complete"
    assert not leftovers[0].exists()  # the next write of the same file swept its dead sibling
    assert storage.remove_stale_temp(str(tmp_path)) == [str(other)]  # a sweep gets the rest
    assert not list(tmp_path.rglob("*.tmp-*"))


def test_csv_reader_keeps_words_that_look_like_missing_values(tmp_path: Path) -> None:
    path = tmp_path / "batch.csv"
    path.write_text("review_id,review_body,age\n1,NA,30\n2,None,\n3,null,41\n4,,52\n5,NaN,60\n")
    frame = storage.read_csv(str(path))
    assert frame["review_body"].tolist()[:3] == ["NA", "None", "null"] and frame["review_body"][4] == "NaN"
    assert pd.isna(frame["review_body"][3])  # only an empty field is missing
    assert frame["age"].dtype == "float64" and pd.isna(frame["age"][1])  # numbers still parse
    text = storage.read_csv(str(path), text=True, keep_empty=True)
    assert text["review_id"].tolist() == ["1", "2", "3", "4", "5"] and text["review_body"][3] == ""
    # monitor reads CSV batches through the same reader
    assert read_table(str(path))["review_body"].tolist()[:3] == ["NA", "None", "null"]


def test_undecodable_bytes_survive_as_markers_instead_of_failing(tmp_path: Path) -> None:
    path = tmp_path / "batch.csv.gz"
    import gzip

    path.write_bytes(gzip.compress(b"review_id,review_body\n1,fine\n2,caf\xe9 latin-1\n"))
    with pytest.raises(UnicodeDecodeError):
        storage.read_csv(str(path))
    frame = storage.read_csv(str(path), text=True, encoding_errors="surrogateescape")
    assert [storage.has_undecodable(v) for v in frame["review_body"]] == [False, True]
    chunks = list(storage.iter_csv(str(path), 1, text=True, encoding_errors="surrogateescape"))
    assert [len(c) for c in chunks] == [1, 1]


def test_formula_cells_are_neutralised_and_numbers_are_not() -> None:
    frame = pd.DataFrame(
        {
            "text": ["=1+1", "+cmd", "-x", "@SUM(A1)", "\tTAB", "plain", None],
            "number": [-1, 2, -3, 4, 5, 6, 7],
            "typed": pd.array(["=a", "b", None, "-c", "d", "e", "f"], dtype="string"),
        }
    )
    out = storage.neutralize_formulas(frame)
    assert out["text"].tolist()[:6] == ["'=1+1", "'+cmd", "'-x", "'@SUM(A1)", "'\tTAB", "plain"]
    assert out["text"].tolist()[6] is None
    assert out["number"].tolist() == [-1, 2, -3, 4, 5, 6, 7]
    assert out["typed"].tolist()[:4] == ["'=a", "b", pd.NA, "'-c"]
    assert frame["text"][0] == "=1+1"  # the input is not changed


def test_tables_round_trip_on_s3_and_a_failed_s3_write_leaves_nothing(
    moto_server: str, s3_bucket: str
) -> None:
    options = StorageOptions(endpoint_url=moto_server)
    frame = pd.DataFrame({"review_id": [1, 2], "review_body": ["NA", "=cmd"]})
    storage.write_parquet(frame, f"s3://{s3_bucket}/t/x.parquet", options)
    pd.testing.assert_frame_equal(storage.read_parquet(f"s3://{s3_bucket}/t/x.parquet", options), frame)
    storage.write_csv(frame, f"s3://{s3_bucket}/t/x.csv", options, spreadsheet_safe=True)
    assert storage.read_csv(f"s3://{s3_bucket}/t/x.csv", options)["review_body"].tolist() == ["NA", "'=cmd"]
    with pytest.raises(RuntimeError), storage.open_atomic(f"s3://{s3_bucket}/t/half.bin", "wb", options) as f:
        f.write(b"x" * 1000)
        raise RuntimeError("interrupted")
    assert not storage.exists(f"s3://{s3_bucket}/t/half.bin", options)
    with pytest.raises(Exception, match="not found"):
        storage.read_parquet(f"s3://{s3_bucket}/t/absent.parquet", options, hint="Run `dvc repro prepare`.")
