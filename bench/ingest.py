"""Ingest memory: the streaming ingest (bounded chunks) vs reading the whole file first, on synthetic
raw CSV, each side in its own fresh process (peak RSS = VmHWM, see bench/sql_vs_pandas.py).

    .venv/bin/python bench/ingest.py                        # 5,000,000 rows streamed; peers at 500,000
    .venv/bin/python bench/ingest.py --rows 200000 --peer-rows 50000   # a quick run

Sides:
- `streaming`: `reviewpipe.data.append.ingest_batches` (what `dvc repro ingest` and `reviewpipe
  ingest --append` run): chunks of data.chunk_rows records, DuckDB under data.duckdb_memory_limit.
- `whole` (the peer: ingest before streaming): the decompressed file in memory, parsed into one
  frame, validated, then published (`reviewpipe.data.ingest.ingest` + `lake.publish_table`).
Both run at --peer-rows (same file), and streaming also at --rows, so the figures say: how much
less the streaming side holds at equal size, and how little it grows from --peer-rows to --rows
(the whole-file side grows linearly; at 5M rows it needs more memory than this machine has).
Targets: streaming at --rows within 1.5x its own peak at --peer-rows; at --peer-rows at most a
quarter of the whole-file peak.
"""

from __future__ import annotations

import argparse
import gzip
import itertools
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from sql_vs_pandas import cpu_seconds, peak_rss_mb  # noqa: E402 (the bench folder is not a package)

TARGET_FLAT, TARGET_RATIO = 1.5, 0.25
INGESTED_AT = "2024-01-01T00:00:00Z"


def write_raw(path: Path, rows: int, seed: int, chunk: int = 50_000) -> int:
    """`rows` synthetic Kaggle-schema reviews as a gzip CSV: one synthetic chunk (with a few bad
    rows) repeated with its ids shifted, so ids stay unique; returns the uncompressed size."""
    from reviewpipe.data.synth import synth_reviews

    data, _ = synth_reviews(min(chunk, rows), seed, bad_rows=2 if min(chunk, rows) > 100 else 0)
    header, body = data.split(b"\n", 1)
    size = len(header) + 1
    with gzip.open(path, "wb", compresslevel=1) as out:
        out.write(header + b"\n")
        for start in range(0, rows, chunk):
            part = _shift_ids(body, start, min(chunk, rows - start))
            out.write(part)
            size += len(part)
    return size


def _shift_ids(body: bytes, offset: int, rows: int) -> bytes:
    """The first `rows` records with `offset` added to each id (records may hold quoted newlines)."""
    import csv
    import io

    text = body.decode("latin-1")
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    for record in itertools.islice(filter(None, csv.reader(io.StringIO(text, newline=""))), rows):
        if record:
            if record[0].strip().isdigit():
                record[0] = str(int(record[0]) + offset)
            writer.writerow(record)
    return out.getvalue().encode("latin-1")


# ---------------------------------------------------------------- the sides (child processes)


def run_streaming(raw: Path, lake: Path, chunk_rows: int, memory_limit: str) -> dict:
    from reviewpipe.data.append import AppendSettings, Batch, ingest_batches
    from reviewpipe.data.ingest import ReadSettings

    baseline, cpu, start = peak_rss_mb(), cpu_seconds(), time.perf_counter()
    settings = AppendSettings(ReadSettings(chunk_rows=chunk_rows), "product_category", memory_limit, 0)
    metrics = ingest_batches(
        [Batch.of(str(raw), INGESTED_AT)], str(lake), settings, rebuild=True, log=lambda _: None
    )
    return _figures(metrics["rows_in"], metrics["rows_clean"], start, cpu, baseline)


def run_whole(raw: Path, lake: Path, chunk_rows: int, memory_limit: str) -> dict:
    import pandas as pd

    from reviewpipe.data import lake as lake_mod
    from reviewpipe.data.ingest import ingest

    baseline, cpu, start = peak_rss_mb(), cpu_seconds(), time.perf_counter()
    result = ingest(str(raw), ingested_at=pd.Timestamp(INGESTED_AT).to_pydatetime())
    lake_mod.publish_table(str(lake), "rejects", result.rejects, None)
    lake_mod.publish_table(str(lake), "reviews", result.clean, "product_category")
    return _figures(result.metrics["rows_in"], result.metrics["rows_clean"], start, cpu, baseline)


def _figures(rows_in: int, rows_clean: int, start: float, cpu: float, baseline: float) -> dict:
    seconds = time.perf_counter() - start
    return {
        "rows_in": rows_in,
        "rows_clean": rows_clean,
        "seconds": seconds,
        "cpu_seconds": cpu_seconds() - cpu,
        "peak_rss_mb": peak_rss_mb(),
        "baseline_rss_mb": baseline,
    }


SIDES = {"streaming": run_streaming, "whole": run_whole}


def run_side(side: str, raw: Path, lake: Path, chunk_rows: int, memory_limit: str) -> dict:
    command = [
        sys.executable,
        __file__,
        "--side",
        side,
        "--raw",
        str(raw),
        "--lake",
        str(lake),
        "--chunk-rows",
        str(chunk_rows),
        "--memory-limit",
        memory_limit,
    ]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        sys.exit(f"{side} side failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=5_000_000, help="rows the streaming side ingests")
    parser.add_argument("--peer-rows", type=int, default=500_000, help="rows both sides ingest")
    parser.add_argument("--chunk-rows", type=int, default=20_000, help="data.chunk_rows")
    parser.add_argument("--memory-limit", default="1GB", help="data.duckdb_memory_limit")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", help="where the raw files and lakes go (default: a temp dir)")
    parser.add_argument("--side", choices=sorted(SIDES), help=argparse.SUPPRESS)
    parser.add_argument("--raw", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--lake", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.side:  # a child: run one side, print its figures as JSON
        print(json.dumps(SIDES[args.side](args.raw, args.lake, args.chunk_rows, args.memory_limit)))
        return
    if args.peer_rows > args.rows:
        sys.exit("--peer-rows must not exceed --rows")
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        work = Path(tmp)
        runs = {}
        for rows in sorted({args.peer_rows, args.rows}):
            raw = work / f"raw-{rows}.csv.gz"
            t = time.perf_counter()
            size = write_raw(raw, rows, args.seed)
            print(
                f"{rows:,} rows: {size / 1e6:,.0f} MB raw CSV ({raw.stat().st_size / 1e6:,.0f} MB gzip), "
                f"written in {time.perf_counter() - t:,.0f} s",
                flush=True,
            )
            sides = ("streaming", "whole") if rows == args.peer_rows else ("streaming",)
            for side in sides:
                runs[(side, rows)] = result = run_side(
                    side, raw, work / f"lake-{side}-{rows}", args.chunk_rows, args.memory_limit
                )
                print(
                    f"  {side:>9}: peak RSS {result['peak_rss_mb']:,.0f} MiB (after imports "
                    f"{result['baseline_rss_mb']:,.0f}), {result['seconds']:,.1f} s, "
                    f"{result['rows_in'] / result['seconds']:,.0f} rows/s",
                    flush=True,
                )
            raw.unlink()
        if runs[("streaming", args.peer_rows)]["rows_clean"] != runs[("whole", args.peer_rows)]["rows_clean"]:
            sys.exit("the two sides disagree on the clean rows")
    small, large = runs[("streaming", args.peer_rows)], runs[("streaming", args.rows)]
    whole = runs[("whole", args.peer_rows)]
    flat = large["peak_rss_mb"] / small["peak_rss_mb"]
    ratio = small["peak_rss_mb"] / whole["peak_rss_mb"]
    work_ratio = (small["peak_rss_mb"] - small["baseline_rss_mb"]) / (
        whole["peak_rss_mb"] - whole["baseline_rss_mb"]
    )
    print(
        f"streaming peak at {args.rows:,} rows / at {args.peer_rows:,} rows: {flat:.2f}x "
        f"(target <= {TARGET_FLAT}x: {'met' if flat <= TARGET_FLAT else 'MISSED'})"
    )
    print(
        f"streaming / whole-file peak at {args.peer_rows:,} rows: {ratio:.2f}x, working memory "
        f"(peak - after imports) {work_ratio:.2f}x (target <= {TARGET_RATIO}x: "
        f"{'met' if ratio <= TARGET_RATIO else 'MISSED'})"
    )
    print(
        f"throughput at {args.peer_rows:,} rows: streaming {small['rows_in'] / small['seconds']:,.0f} rows/s, "
        f"whole file {whole['rows_in'] / whole['seconds']:,.0f} rows/s"
    )


if __name__ == "__main__":
    main()
