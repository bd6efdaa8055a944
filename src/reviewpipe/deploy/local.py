"""deploy.target=local: `reviewpipe serve` as a managed background process.

The server runs detached (its own session, stdin from /dev/null, output to a log file) so it keeps
serving after `reviewpipe stage deploy` / `dvc repro` returns, and DVC does not wait on its pipes.
The run directory holds `server.json` (pid, process start token, URL, what it serves),
`server.log` and `admin.token` (mode 0600: the bearer token for the server's admin endpoint, a new
random one per start, handed to the server as a file, never on its command line or in params);
`start` waits for GET /ping to answer 200, `stop` sends SIGTERM (the server finishes in-flight
requests and flushes data capture) and waits, then SIGKILLs after the timeout.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import re
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from reviewpipe.deploy import VariantConfig, checked_keys, now, variant_records
from reviewpipe.errors import ReviewpipeError

PID_FILE = "server.json"
LOG_FILE = "server.log"
SETTINGS_FILE = "serve.params.yaml"
TOKEN_FILE = "admin.token"
_LISTENING = re.compile(r"listening on (http://\S+)")


@dataclass(frozen=True)
class LocalSettings:
    """The `deploy.local` params section."""

    run_dir: str = "models/deploy/local"
    host: str = "127.0.0.1"
    port: int = 8080
    start_timeout_s: float = 600.0
    stop_timeout_s: float = 60.0

    @classmethod
    def from_mapping(cls, values: Any) -> LocalSettings:
        return cls(**checked_keys(values, cls.__dataclass_fields__, "deploy.local"))


# What `reviewpipe serve` runs: a change here restarts the local server on the next deploy.
SERVER_MODULES = ("server", "server_cli", "web", "batching", "router", "metrics", "capture", "package")


def server_code_hash() -> str:
    serving = Path(__file__).resolve().parents[1] / "serving"
    digest = hashlib.sha256()
    for name in SERVER_MODULES:
        path = serving / f"{name}.py"
        digest.update(name.encode() + b"\0" + (path.read_bytes() if path.exists() else b""))
    return digest.hexdigest()[:16]


# ---------------------------------------------------------------- processes


def _start_token(pid: int) -> str | None:
    """The process's start time in clock ticks (Linux /proc), to tell it from a reused pid."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]  # field 22 overall; fields after "(comm)" start at 3


def _alive(pid: int, token: str | None = None) -> bool:
    """True while `pid` runs (and is still the process with start token `token`, when given)."""
    try:
        reaped, _ = os.waitpid(pid, os.WNOHANG)  # our own child (tests): reap it once it exits
        if reaped == pid:
            return False
    except ChildProcessError:
        pass  # not our child: a later `reviewpipe deploy` call
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        if state == "Z":
            return False
    except OSError:
        pass
    return token is None or _start_token(pid) in (None, token)


def _http(
    url: str,
    method: str = "GET",
    path: str = "/ping",
    body: bytes | None = None,
    timeout: float = 5.0,
    token: str | None = None,
) -> tuple[int, bytes]:
    host, _, port = url.removeprefix("http://").rstrip("/").partition(":")
    conn = http.client.HTTPConnection(host, int(port or 80), timeout=timeout)
    headers = {"Content-Type": "application/json"} if body else {}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    try:
        conn.request(method, path, body=body, headers=headers)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def _ping(url: str) -> int | None:
    try:
        return _http(url)[0]
    except OSError:
        return None


class LocalEndpoint:
    """The background `reviewpipe serve` behind one run directory."""

    def __init__(self, settings: LocalSettings) -> None:
        self.settings = settings
        self.run_dir = Path(settings.run_dir)
        self.pid_file = self.run_dir / PID_FILE
        self.log_file = self.run_dir / LOG_FILE
        self.token_file = self.run_dir / TOKEN_FILE

    # ------------------------------------------------------------ bookkeeping

    def record(self) -> dict[str, Any] | None:
        """server.json, or None when no server was started here."""
        try:
            return json.loads(self.pid_file.read_text())
        except FileNotFoundError:
            return None
        except json.JSONDecodeError:
            return None  # a torn write from a crash: treat as not running

    def _write_record(self, record: dict[str, Any]) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        tmp = self.pid_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
        os.replace(tmp, self.pid_file)

    def is_running(self) -> bool:
        record = self.record()
        return bool(record) and _alive(int(record["pid"]), record.get("start_token"))

    def admin_token(self) -> str | None:
        try:
            return self.token_file.read_text().strip() or None
        except FileNotFoundError:
            return None

    def _new_admin_token(self) -> None:
        """A fresh random token, readable by this user only."""
        self.token_file.unlink(missing_ok=True)
        fd = os.open(self.token_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_urlsafe(32) + "\n")

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return ""

    # ------------------------------------------------------------ start / stop

    def start(
        self,
        variants: list[VariantConfig],
        serve_params: dict[str, Any] | None = None,
        endpoint_name: str | None = None,
    ) -> dict[str, Any]:
        """Start the server for `variants` (stopping an older one first) and wait for /ping 200.
        `endpoint_name` names the endpoint in data-capture paths.

        A server already running here with exactly these packages, weights and settings is kept.
        Returns server.json's record."""
        records = variant_records(variants)
        wanted = {
            "variants": records,
            "serve": serve_params or {},
            "host": self.settings.host,
            "port": self.settings.port,
            "endpoint_name": endpoint_name,
            "server_code": server_code_hash(),
        }
        current = self.record()
        if current and self.is_running() and _ping(current["url"]) == 200:
            if current.get("spec") == wanted:
                print(f"deploy: local server already running at {current['url']} (pid {current['pid']})")
                return current
            if _without_weights(current.get("spec")) == _without_weights(wanted):
                # Same models and settings: move traffic in place, as SageMaker would, no restart.
                self.shift({v.name: v.weight for v in variants})
                current["spec"] = wanted
                self._write_record(current)
                print(
                    f"deploy: local server at {current['url']} now weighted "
                    + ", ".join(f"{v.name}={v.weight:g}" for v in variants)
                )
                return current
        self.stop()
        self.run_dir.mkdir(parents=True, exist_ok=True)
        (self.run_dir / ".gitignore").write_text("*\n")  # pid, log: runtime state, never committed
        settings_path = self.run_dir / SETTINGS_FILE
        OmegaConf.save(OmegaConf.create({"serve": serve_params or {}}), settings_path)
        self._new_admin_token()
        command = [
            sys.executable,
            "-m",
            "reviewpipe.cli",
            "serve",
            "--params",
            str(settings_path),
            "--host",
            self.settings.host,
            "--port",
            str(self.settings.port),
            "--admin-token-file",
            str(self.token_file),
            "--trust",  # the deploy stage ships registry versions it checked; the server need not re-check
        ]
        if endpoint_name:
            command += ["--endpoint-name", endpoint_name]
        for variant in variants:
            command += ["--variant", f"{variant.name}={Path(variant.package).resolve()}:{variant.weight:g}"]
        with open(self.log_file, "ab") as log:
            offset = log.tell()
            log.write(f"--- {now()} deploy: {' '.join(command)}\n".encode())
            log.flush()
            proc = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                close_fds=True,
                env={k: v for k, v in os.environ.items() if k != "REVIEWPIPE_ADMIN_TOKEN"}
                | {"PYTHONUNBUFFERED": "1"},
            )
        record = {
            "pid": proc.pid,
            "start_token": _start_token(proc.pid),
            "url": None,
            "started_at": now(),
            "command": command,
            "log": str(self.log_file),
            "spec": wanted,
        }
        self._write_record(record)
        try:
            record["url"] = self._wait_for(proc, lambda: self._listening_url(offset), "start listening")
            self._write_record(record)
            self._wait_for(proc, lambda: _ping(record["url"]) == 200, f"answer 200 on {record['url']}/ping")
        except BaseException:
            self.stop()
            raise
        print(f"deploy: local server at {record['url']} (pid {proc.pid}, log {self.log_file})")
        return record

    def _listening_url(self, offset: int) -> str | None:
        """The URL the server printed (it may have picked the port) in the log after `offset`."""
        with open(self.log_file, "rb") as log:
            log.seek(offset)
            found = _LISTENING.search(log.read().decode(errors="replace"))
        return found.group(1) if found else None

    def _wait_for(self, proc: subprocess.Popen[bytes], check: Callable[[], Any], what: str) -> Any:
        """Poll `check` until it returns something truthy; fail if the server exits or time runs out."""
        deadline = time.monotonic() + self.settings.start_timeout_s
        while time.monotonic() < deadline:
            result = check()
            if result:
                return result
            if proc.poll() is not None:
                raise ReviewpipeError(
                    f"the server exited with code {proc.returncode} before it could {what}; "
                    f"last lines of {self.log_file}:\n{self.log_tail()}"
                )
            time.sleep(0.05)
        raise ReviewpipeError(
            f"the server did not {what} within {self.settings.start_timeout_s} s "
            f"(deploy.local.start_timeout_s); see {self.log_file}"
        )

    def stop(self, timeout: float | None = None) -> bool:
        """SIGTERM the server and wait for it (SIGKILL after `timeout`); True if one was running."""
        record = self.record()
        if not record:
            return False
        pid, token = int(record["pid"]), record.get("start_token")
        running = _alive(pid, token)
        if running:
            os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + (self.settings.stop_timeout_s if timeout is None else timeout)
            while _alive(pid, token) and time.monotonic() < deadline:
                time.sleep(0.05)
            if _alive(pid, token):
                os.kill(pid, signal.SIGKILL)
                while _alive(pid, token):
                    time.sleep(0.05)
                print(
                    f"deploy: server pid {pid} ignored SIGTERM for {self.settings.stop_timeout_s} s; killed",
                    file=sys.stderr,
                )
        self.pid_file.unlink(missing_ok=True)
        self.token_file.unlink(missing_ok=True)
        return running

    # ------------------------------------------------------------ runtime calls

    def _running_url(self) -> str:
        record = self.record()
        if not record or not self.is_running() or not record.get("url"):
            raise ReviewpipeError(
                f"no local server is running (run dir {self.run_dir}); "
                "start it with `reviewpipe stage deploy` (or `dvc repro deploy`)"
            )
        return str(record["url"])

    def shift(self, weights: dict[str, float]) -> dict[str, float]:
        """Change variant weights at runtime (the server's update_endpoint_weights_and_capacities)."""
        body = json.dumps(
            {
                "DesiredWeightsAndCapacities": [
                    {"VariantName": name, "DesiredWeight": weight} for name, weight in weights.items()
                ]
            }
        ).encode()
        status, answer = _http(
            self._running_url(), "POST", "/admin/variant-weights", body, token=self.admin_token()
        )
        if status != 200:
            raise ReviewpipeError(f"the server refused the weights: {answer.decode(errors='replace')}")
        return {k: float(v) for k, v in json.loads(answer)["weights"].items()}

    def status(self) -> dict[str, Any]:
        record = self.record()
        if not record:
            return {"running": False, "run_dir": str(self.run_dir)}
        running = self.is_running()
        out: dict[str, Any] = {
            "running": running,
            "pid": record["pid"],
            "url": record.get("url"),
            "log": record.get("log"),
            "started_at": record.get("started_at"),
        }
        if running and record.get("url"):
            out["ping"] = _ping(record["url"])
            try:
                status, body = _http(record["url"], path="/admin/variant-weights", token=self.admin_token())
                if status == 200:
                    out["weights"] = json.loads(body)["weights"]
            except OSError:
                pass
        return out


def deploy(
    variants: list[VariantConfig],
    settings: LocalSettings,
    serve_params: dict[str, Any] | None,
    endpoint_name: str,
) -> dict[str, Any]:
    """Start (or keep) the local server; returns the deployment state."""
    record = LocalEndpoint(settings).start(variants, serve_params, endpoint_name)
    weights = {v.name: v.weight for v in variants}
    return {
        "target": "local",
        "endpoint_name": endpoint_name,
        "url": record["url"],
        "invocations_url": f"{record['url']}/invocations",
        "pid": record["pid"],
        "log": record["log"],
        "variants": [{**v, "weight": weights[v["name"]]} for v in record["spec"]["variants"]],
        "deployed_at": now(),
    }


def _without_weights(spec: dict[str, Any] | None) -> dict[str, Any] | None:
    if not spec:
        return None
    return {
        **spec,
        "variants": [
            {k: v for k, v in variant.items() if k != "weight"} for variant in spec.get("variants", [])
        ],
    }
