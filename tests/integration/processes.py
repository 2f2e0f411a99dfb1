"""Real `outpost` server processes for tests that need them (restarts, kill -9, the CLI)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from outpost.domain.dispatch import AgentName
from tests.sandboxes import sandbox_env

OUTPOST = str(Path(sys.executable).with_name("outpost"))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class ServerProcess:
    """One `outpost serve` on a free port; `env` holds its OUTPOST_* settings."""

    data_dir: Path
    env: dict[str, str] = field(default_factory=dict)
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def full_env(self) -> dict[str, str]:
        base = {k: v for k, v in os.environ.items() if not k.startswith("OUTPOST_")}
        return {
            **base,
            "OUTPOST_DATA_DIR": str(self.data_dir),
            "OUTPOST_LIMITS__REQUESTS_PER_S": "0",
            **sandbox_env(),
            **self._own_worker_on_postgres(),
            **self.env,
        }

    def _own_worker_on_postgres(self) -> dict[str, str]:
        """On PostgreSQL `outpost serve` serves only the API unless told otherwise: a server of these
        tests runs a fleet worker offering every agent, unless its env says whether it runs one."""
        if not self.env.get("OUTPOST_DATABASE_URL", "").startswith("postgres"):
            return {}
        if "OUTPOST_WORKER__ENABLED" in self.env:
            return {}
        every_agent = json.dumps([agent.value for agent in AgentName])
        return {"OUTPOST_WORKER__ENABLED": "true", "OUTPOST_WORKER__AGENTS": every_agent}

    @property
    def log_path(self) -> Path:
        return self.data_dir.with_name(f"{self.data_dir.name}-server.log")

    def start(self, ready_timeout_s: float = 30) -> None:
        # The log goes to a file: an undrained pipe would fill up and block the server.
        self.data_dir.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [OUTPOST, "serve", "--port", str(self.port)],
                env=self.full_env(),
                stdout=subprocess.DEVNULL,
                stderr=log,
            )
        deadline = time.monotonic() + ready_timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                log_text = self.log_path.read_text(errors="replace")
                raise AssertionError(f"outpost serve exited with {self.process.returncode}: {log_text}")
            try:
                if httpx.get(f"{self.url}/health/ready", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        raise AssertionError("outpost serve did not become ready")

    def kill_hard(self) -> None:
        """SIGKILL: no shutdown code runs, as in a crash."""
        if self.process is not None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)

    def create_tenant(self, name: str) -> str:
        """Run `outpost tenants create NAME` against this server's data dir; returns the key."""
        done = subprocess.run(
            [OUTPOST, "tenants", "create", name],
            env=self.full_env(),
            capture_output=True,
            text=True,
            check=True,
        )
        return done.stdout.strip().splitlines()[-1]


def wait_for_status_sync(
    client: httpx.Client, dispatch_id: str, statuses: set[str], timeout_s: float = 30
) -> dict[str, Any]:
    """Poll a dispatch over a real connection until it reaches one of `statuses`; fails on timeout."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        body: dict[str, Any] = client.get(f"/v1/dispatches/{dispatch_id}").json()
        if body["status"] in statuses:
            return body
        time.sleep(0.02)
    raise AssertionError(f"dispatch {dispatch_id} never reached {statuses}")


@contextmanager
def serving(data_dir: Path, env: dict[str, str] | None = None) -> Iterator[ServerProcess]:
    """`outpost serve` on `data_dir`, stopped (terminate, then kill) when the block ends."""
    process = ServerProcess(data_dir, env=env or {})
    try:
        process.start()
        yield process
    finally:
        process.stop()
