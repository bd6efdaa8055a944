"""deploy.target=local: `reviewpipe stage deploy` (run as DVC runs it, a subprocess with pipes) leaves a
detached `reviewpipe serve` behind, answering on loopback; re-runs keep it or re-weight it in place;
`reviewpipe deploy status|shift|delete` manage it; failures and stubborn processes are handled."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from omegaconf import OmegaConf

from reviewpipe import cli, registry
from reviewpipe.deploy import VariantConfig
from reviewpipe.deploy.local import LocalEndpoint, LocalSettings, _alive
from reviewpipe.errors import ReviewpipeError
from reviewpipe.serving import package
from tests.helpers.params import conf_section
from tests.test_deploy_sagemaker import baseline_packages
from tests.test_registry import register_package
from tests.test_serve import invoke, request

ROOT = Path(__file__).resolve().parents[1]


def write_params(workdir: Path, champion: float = 0.9, challenger: float = 0.1) -> Path:
    """params.yaml for two tiny baseline variants (quick to load; the BERT path is test_serve's)."""
    art = baseline_packages(workdir / "packages", ("champion", "challenger"))
    reg = registry.Registry(str(workdir / "registry"))  # deploy serves Approved registry versions only
    for name in ("champion", "challenger"):
        if reg.find_by_sha256(registry.file_sha256(str(art[name])), status=registry.APPROVED) is None:
            register_package(reg, art[name], name, registry.APPROVED)
    deploy = conf_section("deploy")
    deploy.variants = [
        {"name": "champion", "package": str(art["champion"]), "weight": champion},
        {"name": "challenger", "package": str(art["challenger"]), "weight": challenger},
    ]
    deploy.local.port = 0  # the server picks a free port and prints it
    deploy.local.start_timeout_s = 240
    params = OmegaConf.create(
        {
            "deploy": deploy,
            "register": {"registry_uri": str(workdir / "registry")},
            "storage": {},
            "serve": {
                "quantize": "none",
                "backend": "torch",
                "max_wait_ms": 2,
                "max_batch_size": 8,
                "drain_timeout_s": 10,
            },
        }
    )
    OmegaConf.save(params, workdir / "params.yaml")
    return workdir / "params.yaml"


def run_stage(workdir: Path) -> subprocess.CompletedProcess[str]:
    """What `dvc repro deploy` runs; capture_output gives it pipes a careless child would hold open."""
    return subprocess.run(
        [sys.executable, "-m", "reviewpipe.cli", "stage", "deploy"],
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=300,
    )


def wait_gone(pid: int, timeout: float = 30) -> bool:
    deadline = time.monotonic() + timeout
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    return not _alive(pid)


def served_weights(url: str, run_dir: Path) -> dict[str, Any]:
    token = (run_dir / "admin.token").read_text().strip()
    assert request(url, "GET", "/admin/variant-weights")[0] == 401  # the token is needed
    status, _, body = request(
        url, "GET", "/admin/variant-weights", headers={"Authorization": f"Bearer {token}"}
    )
    assert status == 200
    return json.loads(body)["weights"]


def test_stage_leaves_a_detached_server_that_the_cli_manages(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    write_params(tmp_path)
    monkeypatch.chdir(tmp_path)
    state_path = tmp_path / "models" / "deploy" / "deployment.json"
    pid = None
    try:
        started = time.monotonic()
        done = run_stage(tmp_path)
        assert done.returncode == 0, done.stderr
        assert time.monotonic() - started < 240  # returned: the server did not hold the stage's pipes
        state = json.loads(state_path.read_text())
        pid, url = state["pid"], state["url"]
        assert state["target"] == "local" and state["invocations_url"] == f"{url}/invocations"
        assert [(v["name"], v["weight"], v["model_version"]) for v in state["variants"]] == [
            ("champion", 0.9, "champion-v1"),
            ("challenger", 0.1, "challenger-v1"),
        ]
        # detached: its own session, alive after the stage process exited, output in the log
        assert _alive(pid) and os.getsid(pid) == pid != os.getsid(0)
        assert request(url)[0] == 200
        status, headers, body = invoke(
            url, {"inputs": "love this dress"}, X_Amzn_SageMaker_Target_Variant="challenger"
        )
        assert status == 200 and body["variant"] == "challenger"
        assert body["predictions"][0]["label"] == 1 and body["model_version"] == "challenger-v1"
        assert "listening on" in (tmp_path / "models" / "deploy" / "local" / "server.log").read_text()
        assert (tmp_path / "models" / "deploy" / "local" / ".gitignore").read_text() == "*\n"
        command = json.loads((tmp_path / "models" / "deploy" / "local" / "server.json").read_text())[
            "command"
        ]
        assert command[command.index("--endpoint-name") + 1] == "reviewpipe-sentiment"  # capture paths
        token_file = tmp_path / "models" / "deploy" / "local" / "admin.token"
        assert token_file.stat().st_mode & 0o777 == 0o600 and len(token_file.read_text().strip()) >= 40
        assert token_file.read_text().strip() not in " ".join(
            json.loads((tmp_path / "models" / "deploy" / "local" / "server.json").read_text())["command"]
        )

        # same params again: the running server is kept
        assert run_stage(tmp_path).returncode == 0
        assert json.loads(state_path.read_text())["pid"] == pid
        # other weights only: moved in place, no restart
        write_params(tmp_path, champion=0.6, challenger=0.4)
        again = run_stage(tmp_path)
        assert again.returncode == 0 and "now weighted champion=0.6, challenger=0.4" in again.stdout
        assert json.loads(state_path.read_text())["pid"] == pid
        assert served_weights(url, tmp_path / "models" / "deploy" / "local") == {
            "champion": 0.6,
            "challenger": 0.4,
        }

        # the CLI: shift, status, delete
        assert cli.main(["deploy", "shift", "--variant", "challenger", "--weight", "0"]) == 0
        assert served_weights(url, tmp_path / "models" / "deploy" / "local") == {
            "champion": 0.6,
            "challenger": 0.0,
        }
        assert {v["name"]: v["weight"] for v in json.loads(state_path.read_text())["variants"]} == {
            "champion": 0.6,
            "challenger": 0.0,
        }
        assert (
            cli.main(["deploy", "shift", "--variant", "champion", "--weight", "0"]) == 2
        )  # all zero: refused
        capsys.readouterr()
        assert cli.main(["deploy", "status"]) == 0
        status_out = json.loads(capsys.readouterr().out)
        assert status_out["running"] and status_out["ping"] == 200 and status_out["pid"] == pid
        assert cli.main(["deploy", "delete"]) == 0
        assert wait_gone(pid, 5)  # delete waits for the exit
        assert (
            not state_path.exists()
            and not (tmp_path / "models" / "deploy" / "local" / "server.json").exists()
        )
        with pytest.raises(ConnectionRefusedError):
            request(url)
        assert cli.main(["deploy", "status"]) == 1
        assert cli.main(["deploy", "shift", "--variant", "champion", "--weight", "1"]) == 2  # nothing running
    finally:
        if pid and _alive(pid):
            os.kill(pid, signal.SIGKILL)


def test_a_server_that_cannot_load_fails_the_start_with_its_log(tmp_path: Path) -> None:
    broken = tmp_path / "broken.joblib"
    broken.write_bytes(b"this is not a pickle")
    package.build_package(broken, tmp_path / "broken.tar.gz", model_name="broken")
    endpoint = LocalEndpoint(LocalSettings(run_dir=str(tmp_path / "run"), port=0, start_timeout_s=120))
    with pytest.raises(ReviewpipeError, match="exited with code 2") as caught:
        endpoint.start([VariantConfig("only", str(tmp_path / "broken.tar.gz"))], {"quantize": "none"})
    assert "could not load the model" in str(caught.value)  # the log's last lines travel in the message
    assert endpoint.record() is None and not endpoint.is_running()


def test_stop_kills_a_server_that_ignores_sigterm(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    stubborn = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import signal, time\n"
            "signal.signal(signal.SIGTERM, signal.SIG_IGN)\nprint('ready', flush=True)\n"
            "time.sleep(120)",
        ],
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        assert stubborn.stdout is not None and stubborn.stdout.readline() == "ready\n"
        endpoint = LocalEndpoint(LocalSettings(run_dir=str(tmp_path), stop_timeout_s=0.5))
        endpoint._write_record({"pid": stubborn.pid, "start_token": None, "url": "http://127.0.0.1:9"})
        started = time.monotonic()
        assert endpoint.stop() is True
        assert 0.5 <= time.monotonic() - started < 10  # the grace period, then SIGKILL
        with pytest.raises(ProcessLookupError):  # gone (and reaped: stop() waited for it)
            os.kill(stubborn.pid, 0)
        assert "ignored SIGTERM for 0.5 s; killed" in capsys.readouterr().err
        assert endpoint.record() is None
        assert endpoint.stop() is False  # nothing left to stop
    finally:
        if stubborn.poll() is None:
            stubborn.kill()


def test_a_reused_pid_is_not_mistaken_for_the_server(tmp_path: Path) -> None:
    endpoint = LocalEndpoint(LocalSettings(run_dir=str(tmp_path)))
    endpoint._write_record({"pid": os.getpid(), "start_token": "1", "url": "http://127.0.0.1:9"})
    assert not endpoint.is_running()  # our pid, but another start time: not the server it recorded
    assert endpoint.stop() is False and _alive(os.getpid())


def test_local_settings_refuse_unknown_keys() -> None:
    with pytest.raises(ReviewpipeError, match="unknown keys"):
        LocalSettings.from_mapping({"prot": 8080})
