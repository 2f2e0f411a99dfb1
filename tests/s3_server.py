"""A real S3 server for tests: moto's standalone server in a child process, on a free port."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import boto3

from tests.integration.processes import free_port

MOTO_SERVER = Path(sys.executable).with_name("moto_server")
ACCESS_KEY_ID = "testing"
SECRET_ACCESS_KEY = "testing"  # moto accepts any credentials
REGION = "us-east-1"


def moto_problem() -> str | None:
    """Why the moto server cannot run here, or None."""
    if not MOTO_SERVER.exists() and shutil.which("moto_server") is None:
        return "moto_server is not installed (it comes with the dev dependency moto[server])"
    return None


@contextmanager
def running_moto(log_path: Path, ready_timeout_s: float = 30) -> Iterator[str]:
    """Start `moto_server` and yield its endpoint URL; stop it on exit."""
    port = free_port()
    program = str(MOTO_SERVER) if MOTO_SERVER.exists() else "moto_server"
    with log_path.open("wb") as log:
        # The log goes to a file: an undrained pipe would fill up and block the server.
        process = subprocess.Popen([program, "-H", "127.0.0.1", "-p", str(port)], stdout=log, stderr=log)
    try:
        _wait_for_port(process, port, ready_timeout_s, log_path)
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _wait_for_port(process: subprocess.Popen[bytes], port: int, timeout_s: float, log_path: Path) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"moto_server exited with {process.returncode}: {log_path.read_text()}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.05)
    raise AssertionError(f"moto_server did not listen on port {port} within {timeout_s} s")


def s3_client(endpoint_url: str) -> Any:
    """A plain boto3 client of the test server, to look behind a store's back."""
    return boto3.client(
        "s3",
        endpoint_url=endpoint_url,
        region_name=REGION,
        aws_access_key_id=ACCESS_KEY_ID,
        aws_secret_access_key=SECRET_ACCESS_KEY,
    )


def new_bucket(endpoint_url: str) -> str:
    """A new empty bucket with a unique name (each test gets its own: no shared state)."""
    name = f"outpost-test-{uuid.uuid4().hex[:16]}"
    s3_client(endpoint_url).create_bucket(Bucket=name)
    return name
