"""A Hugging Face package served by SageMaker's own serving stack: Multi Model Server (Java) with the
Hugging Face inference toolkit's handler service, at the versions of package.sagemaker.image.

The toolkits pin old libraries (transformers 4.51.3, numpy 1.26), so they live in their own virtual
environment, built once from tests/sagemaker/requirements.txt and cached under
~/.cache/reviewpipe/ (REVIEWPIPE_SAGEMAKER_VENV overrides the place). The model server is started
the way the toolkit's `serving.main()` starts it (its own MMS configuration, code/ on PYTHONPATH),
except that it binds 127.0.0.1 and its configuration file is written to a temp dir, not /etc.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from reviewpipe.serving import inference, package
from tests.helpers.params import conf_section
from tests.test_package_score import ONNX, REVIEWS

ROOT = Path(__file__).resolve().parents[1]
REQUIREMENTS = ROOT / "tests" / "sagemaker" / "requirements.txt"
HANDLER = "sagemaker_huggingface_inference_toolkit.handler_service"


def toolkit_venv() -> Path:
    """The cached toolkit venv (built on first use: a few minutes, from the package registry)."""
    digest = hashlib.sha256(REQUIREMENTS.read_bytes()).hexdigest()[:12]
    default = Path.home() / ".cache" / "reviewpipe" / f"sagemaker-hf-toolkit-{digest}"
    venv = Path(os.environ.get("REVIEWPIPE_SAGEMAKER_VENV", default))
    python = venv / "bin" / "python"
    if (venv / ".complete").exists():
        return venv
    shutil.rmtree(venv, ignore_errors=True)
    venv.parent.mkdir(parents=True, exist_ok=True)
    base = getattr(sys, "_base_executable", sys.executable)
    subprocess.run([base, "-m", "venv", str(venv)], check=True)
    subprocess.run(
        [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", "-r", str(REQUIREMENTS)],
        check=True,
        timeout=1800,
    )
    (venv / ".complete").write_text(REQUIREMENTS.read_text())
    return venv


def free_port() -> int:
    """A free loopback port below 32768 (Multi Model Server refuses higher ones: "Invalid port number")."""
    for port in random.Random().sample(range(20000, 32000), 200):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port in 20000-32000")


def call(
    url: str, body: bytes | None = None, headers: dict[str, str] | None = None
) -> tuple[int, str, bytes]:
    request = urllib.request.Request(url, data=body, headers=headers or {}, method="POST" if body else "GET")
    try:
        with urllib.request.urlopen(request, timeout=300) as response:  # a shared CPU can be slow
            return response.status, response.headers.get("Content-Type", ""), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers.get("Content-Type", ""), exc.read()


@pytest.fixture(scope="module")
def mean_pooling_package(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny mean-pooling model (Hugging Face remote code, as the bert stage saves) packaged with
    the stage's settings: transformers 5 wrote its files; the image's transformers 4.51.3 reads them."""
    from tests.helpers.bert import save_tiny_checkpoint

    root = tmp_path_factory.mktemp("sagemaker")
    save_tiny_checkpoint(root / "bert", seed=3, pooling="mean", max_position_embeddings=64)
    target = package.SageMakerTarget.from_mapping(conf_section("package").sagemaker)
    tarball = root / "model.tar.gz"
    package.build_package(
        root / "bert",
        tarball,
        model_name="bert",
        model_version="bert-v9",
        target=target,
        onnx=ONNX,
        calibration_texts=REVIEWS,
    )
    return tarball


@pytest.fixture(scope="module")
def endpoint(mean_pooling_package: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    venv = toolkit_venv()
    base = tmp_path_factory.mktemp("opt_ml")  # SageMaker's /opt/ml
    model_dir = package.unpack_package(mean_pooling_package, base / "model", max_unpacked_bytes=1 << 30)
    assert not (model_dir / "code" / "requirements.txt").exists()  # nothing to pip install at start
    port = free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))},
        "PATH": f"{venv / 'bin'}:{os.environ['PATH']}",
        "SAGEMAKER_BASE_DIR": str(base),
        "SAGEMAKER_BIND_TO_PORT": str(port),
        "SAGEMAKER_MODEL_SERVER_WORKERS": "1",
        "PYTHONPATH": f"{model_dir / 'code'}:",  # what the toolkit's _set_python_path does
        "HF_HUB_OFFLINE": "1",
        "REVIEWPIPE_BACKEND": "torch",  # the SageMaker image has no onnxruntime
        "REVIEWPIPE_QUANTIZE": "none",
        "REVIEWPIPE_NUM_THREADS": "1",
        "TMPDIR": str(base),  # MMS keeps its pid file in the temp dir: one per test run, not per machine
    }
    config = base / "sagemaker-mms.properties"
    script = (
        "from sagemaker_inference import environment, model_server as m; "
        f"print(m._generate_mms_config_properties(environment.Environment(), {HANDLER!r})); "
        "print('LOG=' + m.DEFAULT_MMS_LOG_FILE)"
    )
    out = subprocess.run(
        [str(venv / "bin" / "python"), "-c", script], env=env, capture_output=True, text=True, check=True
    ).stdout
    properties, log_config = out.rsplit("LOG=", 1)
    config.write_text(properties.replace("http://0.0.0.0:", "http://127.0.0.1:"))
    log = open(base / "mms.log", "wb")  # noqa: SIM115 - open for the server's lifetime
    server = subprocess.Popen(
        [
            str(venv / "bin" / "multi-model-server"),
            "--start",
            "--foreground",
            "--model-store",
            "/",
            "--mms-config",
            str(config),
            "--log-config",
            log_config.strip(),
            "--models",
            f"model={model_dir}",
        ],
        env=env,
        cwd=base,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its own process group: the Java server it forks is stopped with it
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 300
        while True:
            try:
                status, _, _ = call(f"{url}/ping")
            except OSError:
                status = 0
            # MMS answers /ping before the worker has loaded the model: wait for a real answer
            if (
                status == 200
                and call(f"{url}/invocations", b'{"inputs": "ok"}', {"Content-Type": "application/json"})[0]
                == 200
            ):
                break
            assert server.poll() is None, (base / "mms.log").read_text()[-5000:]
            assert time.monotonic() < deadline, (base / "mms.log").read_text()[-5000:]
            time.sleep(2)
        yield url
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
        log.close()


@pytest.mark.slow
def test_toolkit_handler_answers_sagemaker_request_formats(
    endpoint: str, mean_pooling_package: Path, tmp_path: Path
) -> None:
    texts = ["love this dress", "awful fabric, returned it", "it is fine I guess"]
    # what `reviewpipe serve` (this venv: transformers 5, same handler) answers for the same package
    local = inference.model_fn(
        str(package.unpack_package(mean_pooling_package, tmp_path / "m", max_unpacked_bytes=1 << 30))
    )
    expected = inference.predict_fn({"texts": texts}, local)["predictions"]

    status, content_type, body = call(
        f"{endpoint}/invocations",
        json.dumps({"inputs": texts}).encode(),
        {"Content-Type": "application/json"},
    )
    assert status == 200 and content_type.startswith("application/json")  # no Accept: JSON
    answer = json.loads(body)
    assert answer["model_version"] == "bert-v9"
    for got, want in zip(answer["predictions"], expected, strict=True):
        assert got["label"] == want["label"]
        np.testing.assert_allclose(
            [got["probabilities"][k] for k in ("-1", "0", "1")],
            [want["probabilities"][k] for k in ("-1", "0", "1")],
            atol=2e-6,
        )

    status, _, body = call(
        f"{endpoint}/invocations", b'{"inputs": "love it"}', {"Content-Type": "application/json"}
    )
    assert status == 200 and len(json.loads(body)["predictions"]) == 1

    lines = "".join(json.dumps({"inputs": t}) + "\n" for t in texts).encode()
    status, content_type, body = call(
        f"{endpoint}/invocations",
        lines,
        {"Content-Type": "application/jsonlines", "Accept": "application/jsonlines"},
    )
    assert status == 200 and content_type.startswith("application/jsonlines")
    assert [json.loads(line)["label"] for line in body.decode().splitlines()] == [
        p["label"] for p in expected
    ]

    # JSON Lines in, no Accept: `reviewpipe serve` answers in the request's type, the toolkit in JSON
    status, content_type, body = call(
        f"{endpoint}/invocations", lines, {"Content-Type": "application/jsonlines"}
    )
    assert status == 200 and content_type.startswith("application/json") and "predictions" in json.loads(body)

    # every handler error is a 400 under the toolkit (reviewpipe serve: 400, 415, 406 by cause)
    for body, headers in (
        (b"{not json", {"Content-Type": "application/json"}),
        (b'{"inputs": ""}', {"Content-Type": "application/json"}),
        (b"a,b", {"Content-Type": "text/csv"}),
        (b'{"inputs": "a"}', {"Content-Type": "application/json", "Accept": "text/csv"}),
    ):
        status, _, _ = call(f"{endpoint}/invocations", body, headers)
        assert status == 400, (body, headers, status)
