"""Smoke tests of the benchmarks (bench/*.py) at tiny sizes, so they keep running as the code moves.
They check that each benchmark completes and reports its comparison, never its speed."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT
from tests.helpers.bert import save_tiny_checkpoint


def bench(script: str, *args: str, timeout: float = 600) -> str:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT / "src")}
    proc = subprocess.run(
        [sys.executable, str(REPO_ROOT / "bench" / script), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        cwd=REPO_ROOT,
    )
    assert proc.returncode == 0, f"bench/{script} failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    return proc.stdout


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_checkpoint(tmp_path_factory.mktemp("bench") / "tiny-bert")


def test_sql_vs_pandas_runs_and_compares_results(tmp_path: Path) -> None:
    out = bench("sql_vs_pandas.py", "--rows", "3000", "--threads", "1", "--workdir", str(tmp_path))
    assert "results: identical on every query" in out
    assert "DuckDB is" in out and "faster" in out


def test_ingest_runs_both_sides(tmp_path: Path) -> None:
    out = bench(
        "ingest.py",
        *("--rows", "3000", "--peer-rows", "2000", "--chunk-rows", "500", "--workdir", str(tmp_path)),
    )
    assert "streaming / whole-file peak at 2,000 rows" in out and "throughput at 2,000 rows" in out


@pytest.mark.slow
def test_monitor_real_runs_on_a_small_synthetic_file(tmp_path: Path) -> None:
    raw = tmp_path / "reviews.csv.gz"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "reviewpipe.cli",
            "synth",
            "--rows",
            "3000",
            "--seed",
            "5",
            "--output",
            str(raw),
        ],
        check=True,
        capture_output=True,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT / "src")},
    )
    bench("monitor_real.py", "--raw", str(raw), "--workdir", str(tmp_path / "work"), timeout=1800)
    results = json.loads((tmp_path / "work" / "monitor_real.json").read_text())
    assert results["shifted_batch"]["violations"] > 0  # the incident is flagged
    assert {"capture_same", "capture_shift"} <= set(results)

    # --champion: a given package (a path relative to the caller) is the champion, served and baselined
    champion = tmp_path / "work" / "models" / "package" / "model.tar.gz"
    relative = os.path.relpath(champion, REPO_ROOT)
    bench("monitor_real.py", "--raw", str(raw), "--workdir", str(tmp_path / "w2"), "--champion", relative)
    results = json.loads((tmp_path / "w2" / "monitor_real.json").read_text())
    assert results["baseline"]["model"]["sha256"] == hashlib.sha256(champion.read_bytes()).hexdigest()
    assert results["capture_same"]["variants"].keys() == {"champion", "challenger"}
    # the same scratch folder with another champion is refused, not silently monitored with the old one
    other = tmp_path / "work" / "models" / "package" / "challenger.tar.gz"
    rerun = subprocess.run(
        [sys.executable, str(REPO_ROOT / "bench" / "monitor_real.py"), "--raw", str(raw)]
        + ["--workdir", str(tmp_path / "w2"), "--champion", str(other)],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT / "src")},
    )
    assert rerun.returncode != 0 and "another champion package" in rerun.stderr


@pytest.mark.slow
def test_train_throughput_runs_both_loops(tiny_checkpoint: Path) -> None:
    out = bench(
        "train_throughput.py",
        *("--checkpoint", str(tiny_checkpoint), "--batch-size", "4", "--max-length", "32"),
        *("--warmup", "1", "--steps", "2"),
    )
    assert "Lightning:" in out and "HF Trainer:" in out
    ratio = float(out.split("ratio Lightning / HF Trainer:")[1].split("x")[0])
    assert ratio > 0


@pytest.mark.slow
def test_serve_runs_both_servers(tiny_checkpoint: Path, tmp_path: Path) -> None:
    figures = tmp_path / "serve.json"
    bench(
        "serve.py",
        *("--model", str(tiny_checkpoint), "--clients", "2", "--seconds", "1", "--single", "3"),
        *("--skip-capture", "--out", str(figures)),
    )
    report = json.loads(figures.read_text())
    assert {"reviewpipe", "hf_pipeline"} <= set(report["results"])
    assert all(r["load_rps"] > 0 for r in report["results"].values())
    assert report["ratios"]["throughput_x"] > 0
    # the compute figures: the sent reviews' forward FLOPs against this CPU's measured matmul rate
    compute = report["compute"]
    assert compute["matmul_gflops"] > 0 and compute["tokens_per_review"] > 2  # [CLS] text [SEP]
    for name in ("reviewpipe", "hf_pipeline"):
        share = report["results"][name]["load_rps"] * compute["gflop_per_review"] / compute["matmul_gflops"]
        assert compute[f"{name}_share_of_matmul"] == pytest.approx(share)


@pytest.mark.parametrize("head", ["bert", "mean_pooling"])
def test_serve_forward_flops_agree_with_torchs_flop_counter(head: str, tmp_path: Path) -> None:
    """The benchmark's per-review FLOPs against torch's FlopCounterMode over the encoder's forward
    pass (eager attention, whose two products it counts), averaged over reviews of unequal length,
    for a standard checkpoint and for the project's mean-pooling head (which nests its encoder's config)."""
    import importlib.util

    import torch
    from torch.utils.flop_counter import FlopCounterMode
    from transformers import AutoModel, AutoTokenizer

    from reviewpipe.models.bert.modeling_mean_pooling import MeanPoolingConfig

    if head == "bert":
        model_dir = save_tiny_checkpoint(tmp_path / "bert")
        encoder_config = AutoModel.from_pretrained(model_dir).config
    else:
        model_dir = save_tiny_checkpoint(tmp_path / "mean", pooling="mean")
        encoder_config = MeanPoolingConfig.from_pretrained(model_dir).encoder_config()
    spec = importlib.util.spec_from_file_location("bench_serve", REPO_ROOT / "bench" / "serve.py")
    serve = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(serve)
    texts = ["fits well", "the fabric is thin and the colour is not what the photo shows at all"]
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    encoder = AutoModel.from_config(
        encoder_config, attn_implementation="eager", add_pooling_layer=False
    ).eval()
    counted, lengths = [], []
    for text in texts:
        encoded = tokenizer([text], return_tensors="pt")
        with FlopCounterMode(display=False) as counter, torch.inference_mode():
            encoder(**encoded)
        counted.append(counter.get_total_flops())
        lengths.append(encoded["input_ids"].shape[1])
    gflop, tokens = serve.forward_gflop(str(model_dir), texts)
    assert lengths[0] < lengths[1] and tokens == sum(lengths) / 2
    assert gflop * 1e9 == pytest.approx(sum(counted) / 2)
