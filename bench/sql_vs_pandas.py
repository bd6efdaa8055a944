"""DuckDB vs pandas on the explore queries, over the same parquet file of synthetic reviews.

    .venv/bin/python bench/sql_vs_pandas.py              # 5,000,000 rows (a few minutes on 2 cores)
    .venv/bin/python bench/sql_vs_pandas.py --rows 500000

Each side runs in its own fresh process, so each peak RSS (VmHWM) is that side's alone; the
process also reports its peak after imports, so the working memory (peak - baseline) compares too.
DuckDB runs the sql/*.sql files on the `reviews` table (default settings: all cores); pandas runs
reviewpipe.analytics.pandas_reference (the twins the tests check the SQL against) on the columns
it needs, read with pandas.read_parquet. Both results are compared before the ratios are printed.
Target: DuckDB at least 5x faster and at most half the memory.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
AGE_BANDS = [0, 25, 35, 45, 55, 65, 200]
# The reviews-table queries (the lake's rejects table is not part of the benchmark).
QUERIES = (
    "sentiment_counts",
    "category_counts",
    "category_avg_sentiment",
    "category_sentiment_counts",
    "word_count_stats",
    "word_count_histogram",
    "sentiment_by_age_band",
)
TARGET_SPEEDUP, TARGET_MEMORY_RATIO = 5.0, 0.5
VOCABULARY = (
    "the",
    "dress",
    "fits",
    "great",
    "love",
    "color",
    "small",
    "large",
    "fabric",
    "soft",
    "return",
    "size",
    "would",
    "recommend",
    "beautiful",
    "cute",
    "wear",
    "top",
    "little",
    "material",
    "perfect",
    "comfortable",
    "petite",
    "length",
    "waist",
    "flattering",
    "quality",
    "disappointed",
    "cheap",
    "runs",
    "true",
    "ordered",
    "usually",
    "and",
    "but",
    "so",
    "very",
    "really",
    "it",
    "is",
    "was",
    "a",
    "this",
    "with",
)


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)  # all threads of this process
    return usage.ru_utime + usage.ru_stime


def peak_rss_mb() -> float:
    """This process's peak resident memory (MiB) since it exec'd.

    VmHWM, not ru_maxrss: Linux carries ru_maxrss over exec from the forking parent, so a child
    would inherit the driver's peak (which held the generated data)."""
    try:
        with open("/proc/self/status") as status:
            return next(int(line.split()[1]) for line in status if line.startswith("VmHWM:")) / 1024
    except (OSError, StopIteration):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


# ---------------------------------------------------------------- data


def write_reviews(path: Path, rows: int, seed: int, chunk: int = 500_000) -> None:
    """`rows` synthetic reviews (Kaggle-like skew), vectorised, written chunk by chunk.

    Texts: a pool of 20,000 generated bodies (~55 words, as the real data), each row's made unique
    by appending its id, so neither side can share string objects between rows."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from reviewpipe.data.synth import CATEGORIES, RATING_SHARES

    rng = np.random.default_rng(seed)
    vocabulary = np.array(VOCABULARY)
    # Words per text: median ~45, mean ~55, long tail (the real reviews: mean ~60, max ~115).
    lengths = np.clip(rng.lognormal(3.8, 0.55, 20_000), 2, 115).astype(int)
    separators = np.array([" "] * 30 + ["  ", "\n", ". "])
    pool = pa.array(
        [
            "".join(
                w + s for w, s in zip(rng.choice(vocabulary, n), rng.choice(separators, n), strict=True)
            ).strip()
            for n in lengths
        ]
    )
    names = np.array(list(CATEGORIES), dtype=object)
    weights = np.array([c[1] for c in CATEGORIES.values()], dtype=float)
    writer = None
    for start in range(0, rows, chunk):
        n = min(chunk, rows - start)
        ids = np.arange(start, start + n, dtype=np.int64)
        rating = rng.choice(np.arange(1, 6), size=n, p=RATING_SHARES / RATING_SHARES.sum())
        category = names[rng.choice(len(names), size=n, p=weights / weights.sum())]
        category[rng.random(n) < 0.001] = None  # as the real data: a few rows without a category
        body = pc.binary_join_element_wise(
            pool.take(pa.array(rng.integers(0, len(pool), n))), pc.cast(pa.array(ids), pa.string()), " "
        )
        table = pa.table(
            {
                "review_id": ids,
                "clothing_id": rng.integers(0, 1206, n),
                "age": rng.integers(18, 100, n),
                "review_body": body,
                "rating": rating,
                "recommended_ind": (rating >= 4).astype(np.int64),
                "positive_feedback_count": rng.poisson(2.5, n),
                "product_category": pa.array(category, type=pa.string()),
                "sentiment": np.where(rating <= 2, -1, np.where(rating == 3, 0, 1)),
            }
        )
        writer = writer or pq.ParquetWriter(path, table.schema)
        writer.write_table(table, row_group_size=250_000)
    writer.close()


# ---------------------------------------------------------------- the two sides (child processes)


def run_duckdb(data: Path, out: Path, threads: int | None) -> dict:
    import duckdb

    from reviewpipe.analytics.explore import load_queries, prepare_connection, run_query

    queries = {name: sql for name, sql in load_queries(REPO_ROOT / "sql").items() if name in QUERIES}
    baseline, cpu = peak_rss_mb(), cpu_seconds()
    start = time.perf_counter()
    con = duckdb.connect(config={"threads": threads} if threads else {})
    con.execute(f"CREATE VIEW reviews AS SELECT * FROM read_parquet('{data}')")
    prepare_connection(con, AGE_BANDS)
    timings, results = {}, {}
    for name in QUERIES:
        t = time.perf_counter()
        results[name] = run_query(con, queries[name], name)
        timings[name] = time.perf_counter() - t
    seconds = time.perf_counter() - start
    return _finish(results, out, seconds, cpu_seconds() - cpu, timings, baseline)


def run_pandas(data: Path, out: Path, threads: int | None = None) -> dict:
    import pandas as pd

    from reviewpipe.analytics import pandas_reference as ref

    baseline, cpu = peak_rss_mb(), cpu_seconds()
    start = time.perf_counter()
    reviews = pd.read_parquet(data, columns=ref.REVIEW_COLUMNS)
    timings = {"read_parquet": time.perf_counter() - start}
    queries = {
        **ref.REVIEW_QUERIES,
        "sentiment_by_age_band": lambda r: ref.sentiment_by_age_band(r, AGE_BANDS),
    }
    results = {}
    for name in QUERIES:
        t = time.perf_counter()
        results[name] = queries[name](reviews)
        timings[name] = time.perf_counter() - t
    seconds = time.perf_counter() - start
    return _finish(results, out, seconds, cpu_seconds() - cpu, timings, baseline)


def _finish(results: dict, out: Path, seconds: float, cpu: float, timings: dict, baseline: float) -> dict:
    peak = peak_rss_mb()  # before writing results, which is not part of the work
    out.mkdir(parents=True, exist_ok=True)
    for name, frame in results.items():
        frame.to_pickle(out / f"{name}.pkl")
    return {
        "seconds": seconds,
        "cpu_seconds": cpu,
        "peak_rss_mb": peak,
        "baseline_rss_mb": baseline,
        "timings": timings,
    }


# ---------------------------------------------------------------- driver


def run_side(side: str, data: Path, out: Path, threads: int | None) -> dict:
    command = [sys.executable, __file__, "--side", side, "--data", str(data), "--out", str(out)]
    done = subprocess.run(
        command + (["--threads", str(threads)] if threads else []),
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        sys.exit(f"{side} side failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def compare_results(duck: Path, pandas_dir: Path) -> None:
    import pandas as pd

    from reviewpipe.analytics.pandas_reference import comparable

    for name in QUERIES:
        pd.testing.assert_frame_equal(
            comparable(pd.read_pickle(duck / f"{name}.pkl")),
            comparable(pd.read_pickle(pandas_dir / f"{name}.pkl")),
            rtol=1e-9,
            obj=name,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=5_000_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, help="DuckDB threads (default: all cores; pandas uses one)")
    parser.add_argument("--workdir", help="where the parquet file and results go (default: a temp dir)")
    parser.add_argument("--side", choices=["duckdb", "pandas"], help=argparse.SUPPRESS)
    parser.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.side:  # a child: run one side, print its figures as JSON
        print(
            json.dumps(
                (run_duckdb if args.side == "duckdb" else run_pandas)(args.data, args.out, args.threads)
            )
        )
        return

    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        work = Path(tmp)
        data = work / "reviews.parquet"
        t = time.perf_counter()
        write_reviews(data, args.rows, args.seed)
        print(
            f"data: {args.rows:,} rows, {data.stat().st_size / 2**20:,.0f} MiB parquet "
            f"(written in {time.perf_counter() - t:.1f}s)"
        )
        duck = run_side("duckdb", data, work / "duckdb", args.threads)
        pand = run_side("pandas", data, work / "pandas", None)
        compare_results(work / "duckdb", work / "pandas")
    import os

    print(
        f"results: identical on every query; {os.cpu_count()} CPUs, load average "
        f"{' '.join(f'{x:.1f}' for x in os.getloadavg())}\n"
    )
    print(f"{'query':<28}{'duckdb s':>10}{'pandas s':>10}")
    for name in ("read_parquet", *QUERIES):
        print(f"{name:<28}{duck['timings'].get(name, 0):>10.2f}{pand['timings'].get(name, 0):>10.2f}")
    speedup = pand["seconds"] / duck["seconds"]
    memory = duck["peak_rss_mb"] / pand["peak_rss_mb"]
    working = (duck["peak_rss_mb"] - duck["baseline_rss_mb"]) / max(
        pand["peak_rss_mb"] - pand["baseline_rss_mb"], 1e-9
    )
    print(f"\n{'':<28}{'duckdb':>10}{'pandas':>10}{'ratio':>10}")
    print(f"{'total seconds':<28}{duck['seconds']:>10.2f}{pand['seconds']:>10.2f}{speedup:>9.1f}x")
    print(
        f"{'CPU seconds (all threads)':<28}{duck['cpu_seconds']:>10.2f}{pand['cpu_seconds']:>10.2f}"
        f"{pand['cpu_seconds'] / duck['cpu_seconds']:>9.1f}x"
    )
    print(f"{'peak RSS MiB':<28}{duck['peak_rss_mb']:>10.0f}{pand['peak_rss_mb']:>10.0f}{memory:>10.2f}")
    print(
        f"{'  of which after imports':<28}{duck['peak_rss_mb'] - duck['baseline_rss_mb']:>10.0f}"
        f"{pand['peak_rss_mb'] - pand['baseline_rss_mb']:>10.0f}{working:>10.2f}"
    )
    print(
        f"\nDuckDB is {speedup:.1f}x faster (target >= {TARGET_SPEEDUP:g}x: "
        f"{'met' if speedup >= TARGET_SPEEDUP else 'NOT met'}) and uses {memory:.2f} of pandas' peak memory "
        f"(target <= {TARGET_MEMORY_RATIO}: {'met' if memory <= TARGET_MEMORY_RATIO else 'NOT met'})."
    )


if __name__ == "__main__":
    main()
