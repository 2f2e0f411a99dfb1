"""Real `outpost worker` processes beside an API server, on one PostgreSQL database (the procrastinate
queue backend), for tests that kill, signal and time them."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg

from outpost.sandbox import cgroups, mounts
from outpost.sandbox.bwrap_fs import DEFAULT_RUN_DIR
from outpost.sandbox.naming import instance_marker, workspaces_dir
from tests.integration.processes import OUTPOST, ServerProcess


@contextmanager
def new_database(admin_url: str) -> Iterator[str]:
    """A new, empty PostgreSQL database (dropped afterwards); yields its libpq URL."""
    name = f"outpost_fleet_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"{admin_url.rpartition('/')[0]}/{name}"
    finally:
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@dataclass
class WorkerProcess:
    """One `outpost worker` with a data dir of its own; `env` holds the fleet's OUTPOST_* settings."""

    api: ServerProcess
    data_dir: Path
    args: list[str]
    database_url: str
    process: subprocess.Popen[bytes] | None = None
    id: str = ""
    """Its id in `workers`, once it has registered."""

    @property
    def log_path(self) -> Path:
        return self.data_dir.with_name(f"{self.data_dir.name}-worker.log")

    def launch(self) -> None:
        # The server's settings (database, queue, master key) with a data dir and a uid range of its own.
        env = ServerProcess(self.data_dir, env=self.api.env).full_env()
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [OUTPOST, "worker", *self.args], env=env, stdout=subprocess.DEVNULL, stderr=log
            )

    def wait_registered(self, ready_timeout_s: float = 60) -> None:
        assert self.process is not None
        deadline = time.monotonic() + ready_timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"outpost worker exited with {self.process.returncode}: {self.log()}")
            found = query(self.database_url, "SELECT id FROM workers WHERE pid = %s AND stopped_at IS NULL", [
                self.process.pid
            ])  # fmt: skip
            if found:
                self.id = str(found[0]["id"])
                return
            time.sleep(0.05)
        raise AssertionError(f"outpost worker did not register: {self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def logged_at(self, words: str) -> datetime:
        """When the worker first logged a message containing `words`; fails when it did not."""
        for line in self.log().splitlines():
            entry: dict[str, Any] = json.loads(line) if line.startswith("{") else {}
            if words in str(entry.get("message", "")):
                return datetime.fromisoformat(str(entry["ts"]))
        raise AssertionError(f"the worker never logged {words!r}")

    def kill_hard(self) -> None:
        """SIGKILL: no shutdown code runs, as when a machine dies."""
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)

    def terminate(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)

    def clear_leftovers(self) -> None:
        """Clear what a worker killed mid-run left (its bwrap staging dir and workspaces, still mounted,
        and its runs' and parked launchers' cgroups), as its restart's janitor would: a replacement with
        a data dir of its own never does. For a stopped worker only."""
        staging = DEFAULT_RUN_DIR / instance_marker(self.data_dir)
        for leftovers in (staging, workspaces_dir(self.data_dir)):
            mounts.unmount_all_under(leftovers)
        shutil.rmtree(staging, ignore_errors=True)
        if not cgroups.problems():  # the process backend (off CI) makes none
            cgroups.reap_stale(f"outpost-{instance_marker(self.data_dir)}")

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.terminate()
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)


@dataclass
class Fleet:
    """Workers started by one test; `stop_all` ends them and clears what they left in the queue."""

    api: ServerProcess
    database_url: str
    base_dir: Path
    started: list[WorkerProcess] = field(default_factory=list)

    def start_worker(self, *args: str) -> WorkerProcess:
        [worker] = self.start_workers(1, *args)
        return worker

    def start_workers(self, count: int, *args: str) -> list[WorkerProcess]:
        """`count` workers with the same options, started side by side."""
        workers = [
            WorkerProcess(
                self.api, self.base_dir / f"worker{len(self.started) + n}", list(args), self.database_url
            )
            for n in range(count)
        ]
        self.started.extend(workers)
        for worker in workers:
            worker.launch()
        for worker in workers:
            worker.wait_registered()
        return workers

    def stop_all(self) -> None:
        for worker in self.started:
            worker.stop()
            worker.clear_leftovers()
        # The next test starts from an empty queue: nothing of this one is left for its workers.
        execute(
            self.database_url,
            "UPDATE dispatches SET status = 'cancelled', finished_at = now() "
            "WHERE status IN ('queued', 'provisioning', 'running')",
        )
        execute(self.database_url, "DELETE FROM procrastinate_jobs")


def query(database_url: str, sql: str, parameters: list[Any] | None = None) -> list[dict[str, Any]]:
    with (
        psycopg.connect(database_url, autocommit=True) as conn,
        conn.cursor(row_factory=psycopg.rows.dict_row) as cursor,
    ):
        cursor.execute(sql.encode(), parameters)
        return cursor.fetchall()


def execute(database_url: str, sql: str, parameters: list[Any] | None = None) -> None:
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(sql.encode(), parameters)


def wait_until(condition: Callable[[], object], timeout_s: float, what: str | Callable[[], str]) -> None:
    """Poll `condition` until it is true; fail naming `what` after `timeout_s` (a callable is asked then,
    so the message can say what the state was at the time)."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what() if callable(what) else what}")
        time.sleep(0.02)
