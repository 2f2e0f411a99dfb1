"""Shared pieces of the benchmark scripts: a server subprocess in a temp data dir, tenants, statistics,
machine facts, result files and plain-text tables.

Every benchmark runs `outpost serve` of this checkout (the Python that runs the script runs the server
too) on a free loopback port, with the per-key rate limit off, and tears it down at the end.
"""

from __future__ import annotations

import json
import math
import os
import platform
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx

BENCH_DIR = Path(__file__).resolve().parent
RESULTS_DIR = BENCH_DIR / "results"
OUTPOST = [sys.executable, "-m", "outpost"]
READY_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class Tenant:
    name: str
    id: str
    key: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def own_uid_range() -> dict[str, str]:
    """A sandbox uid block of the server's own: a server's sweeps kill what runs under its uids, so two
    servers on one host (another benchmark, a developer's) must not share a block."""
    return {
        "OUTPOST_SANDBOX__UID_FIRST": str(300_000 + random.randrange(2000) * 256),
        "OUTPOST_SANDBOX__UID_COUNT": "256",
    }


class BenchServer:
    """`outpost serve` as a subprocess over a fresh temp data dir (deleted on close).

    Use as a context manager. `prepare()` migrates the database without starting the server, so a
    benchmark can fill it first; `start()` launches the server and waits for /health/ready.
    """

    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        self.data_dir = Path(tempfile.mkdtemp(prefix="outpost-bench-"))
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        # Outpost settings of the calling shell are dropped: a benchmark must not reach a configured
        # database (OUTPOST_DATABASE_URL) or inherit limits that skew its figures.
        inherited = {name: value for name, value in os.environ.items() if not name.startswith("OUTPOST_")}
        self.env = {
            **inherited,
            "OUTPOST_DATA_DIR": str(self.data_dir),
            "OUTPOST_LIMITS__REQUESTS_PER_S": "0",
            "OUTPOST_LOG_LEVEL": "warning",
            **own_uid_range(),
            **(env or {}),
        }
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = self.data_dir / "server.log"

    @property
    def database_path(self) -> Path:
        return self.data_dir / "outpost.db"

    def cli(self, *args: str) -> str:
        """Run an `outpost` command against this data dir; returns its stdout."""
        done = subprocess.run(
            [*OUTPOST, *args], env=self.env, capture_output=True, text=True, check=False, timeout=120
        )
        if done.returncode != 0:
            raise RuntimeError(f"outpost {' '.join(args)} failed: {done.stderr.strip()}")
        return done.stdout

    def prepare(self) -> None:
        """Create the schema (`outpost db upgrade`) without starting the server."""
        self.cli("db", "upgrade")

    def create_tenant(self, name: str) -> Tenant:
        """`outpost tenants create NAME`: prints "tenant NAME (ID)", then the first API key."""
        lines = self.cli("tenants", "create", name).strip().splitlines()
        if len(lines) < 2 or not lines[0].startswith("tenant ") or not lines[0].endswith(")"):
            raise RuntimeError(f"unexpected output of `outpost tenants create`: {lines!r}")
        tenant_id = lines[0].rsplit("(", 1)[1].rstrip(")")
        return Tenant(name=name, id=tenant_id, key=lines[1].strip())

    def client(self, tenant: Tenant, timeout_s: float = 30.0) -> httpx.Client:
        """A keep-alive HTTP client for this server, authenticated as `tenant`."""
        return httpx.Client(base_url=self.url, headers=tenant.headers, timeout=timeout_s)

    def start(self) -> None:
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [*OUTPOST, "serve", "--port", str(self.port)],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        self._wait_ready()

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_S
        with httpx.Client(base_url=self.url, timeout=2.0) as client:
            while time.monotonic() < deadline:
                if self.process is not None and self.process.poll() is not None:
                    raise RuntimeError(f"the server exited early:\n{self.log_tail()}")
                try:
                    if client.get("/health/ready").status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                time.sleep(0.05)
        raise RuntimeError(f"the server was not ready within {READY_TIMEOUT_S} s:\n{self.log_tail()}")

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no server log)"

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if the server is still there after STOP_TIMEOUT_S."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=STOP_TIMEOUT_S)

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.data_dir, ignore_errors=True)

    def __enter__(self) -> BenchServer:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def submit(client: httpx.Client, task: str, agent: str = "shell") -> dict[str, Any]:
    response = client.post("/v1/dispatches", json={"agent": agent, "task": task})
    response.raise_for_status()
    body: dict[str, Any] = response.json()
    return body


def wait_for_status(
    client: httpx.Client, ids: Iterable[str], statuses: set[str], timeout_s: float = 60.0
) -> None:
    """Poll until every dispatch in `ids` has one of `statuses`; RuntimeError on timeout."""
    pending = set(ids)
    deadline = time.monotonic() + timeout_s
    while pending:
        for dispatch_id in list(pending):
            if client.get(f"/v1/dispatches/{dispatch_id}").json()["status"] in statuses:
                pending.discard(dispatch_id)
        if pending and time.monotonic() > deadline:
            raise RuntimeError(f"{len(pending)} dispatches did not reach {sorted(statuses)} in {timeout_s} s")
        if pending:
            time.sleep(0.1)


def cancel_all(client: httpx.Client, ids: Iterable[str]) -> int:
    """Cancel each dispatch (idempotent); returns how many cancel calls succeeded."""
    done = 0
    for dispatch_id in ids:
        try:
            if client.post(f"/v1/dispatches/{dispatch_id}/cancel", timeout=30.0).status_code == 200:
                done += 1
        except httpx.HTTPError as exc:
            print(f"warning: cancelling {dispatch_id} failed: {exc}", file=sys.stderr)
    return done


def percentile(values: Sequence[float], pct: float) -> float:
    """The `pct`-th percentile (0-100) with linear interpolation between closest ranks."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = (len(ordered) - 1) * pct / 100
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def summarize(values: Sequence[float]) -> dict[str, float]:
    """n, mean, p50, p90, p99 and max of a sample (same unit as the sample)."""
    return {
        "n": len(values),
        "mean": sum(values) / len(values) if values else math.nan,
        "p50": percentile(values, 50),
        "p90": percentile(values, 90),
        "p99": percentile(values, 99),
        "max": max(values) if values else math.nan,
    }


def _busy_cpu_s() -> float:
    """CPU seconds the whole machine has been busy since boot (all cores, from /proc/stat)."""
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    except OSError:
        return math.nan
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(v) for v in fields[:8])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


_STARTED = (time.monotonic(), _busy_cpu_s())


def machine_share() -> dict[str, float]:
    """Since this script started: wall time, CPU used by it and its waited-for children (server, wrk),
    and CPU used by everything else on the machine (other processes disturb the figures)."""
    wall = time.monotonic() - _STARTED[0]
    times = os.times()
    ours = times.user + times.system + times.children_user + times.children_system
    others = max(0.0, _busy_cpu_s() - _STARTED[1] - ours)
    return {
        "wall_s": round(wall, 1),
        "benchmark_cpu_s": round(ours, 1),
        "other_processes_cpu_s": round(others, 1),
        "other_processes_cores": round(others / wall, 2) if wall > 0 else math.nan,
    }


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine_facts() -> dict[str, Any]:
    nproc = subprocess.run(["nproc"], capture_output=True, text=True, check=False).stdout.strip()
    return {
        "nproc": int(nproc) if nproc.isdigit() else os.cpu_count(),
        "cpu_model": cpu_model(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "loadavg_at_end": [round(v, 2) for v in os.getloadavg()],
        "cpu_share": machine_share(),
        "source": source_revision(),
    }


def source_revision() -> str:
    """The checkout's commit, with "+dirty" when src/ has uncommitted changes (what was measured)."""
    root = BENCH_DIR.parent

    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, check=False)
        return done.stdout.strip()

    commit = git("rev-parse", "--short", "HEAD") or "unknown"
    return commit + ("+dirty" if git("status", "--porcelain", "--", "src") else "")


def write_results(name: str, results: Mapping[str, Any]) -> Path:
    """Write bench/results/<name>.json (with machine facts and a timestamp); returns its path."""
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"{name}.json"
    document = {
        "benchmark": name,
        "recorded_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": machine_facts(),
        **results,
    }
    path.write_text(json.dumps(document, indent=2) + "\n")
    share = document["machine"]["cpu_share"]
    print(
        f"\nmachine: {share['wall_s']} s wall; this benchmark used {share['benchmark_cpu_s']} CPU-s, "
        f"other processes {share['other_processes_cpu_s']} CPU-s (~{share['other_processes_cores']} cores)"
    )
    return path


def publish(name: str, results: Mapping[str, Any], text: str) -> None:
    """Print a benchmark's report, then save its results and say where."""
    print(text)
    print(f"\nresults: {write_results(name, results)}")


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """A plain-text table; floats are printed with two decimals."""
    cells = [[_cell(value) for value in row] for row in rows]
    widths = [max(len(str(h)), *(len(row[i]) for row in cells)) for i, h in enumerate(headers)]
    lines = ["  ".join(str(h).rjust(w) for h, w in zip(headers, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)) for row in cells]
    return "\n".join(lines)


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.2f}"
    return str(value)
