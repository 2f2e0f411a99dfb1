"""`outpost serve` with settings it cannot use: one line on stderr, a non-zero exit, no traceback."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.integration.processes import OUTPOST

BAD_SETTINGS = {
    "malformed-json": ("OUTPOST_SANDBOX__EGRESS_ALLOW", "not json"),
    "ip-literal-egress": ("OUTPOST_SANDBOX__EGRESS_ALLOW", '["169.254.169.254"]'),
    "slots-not-a-number": ("OUTPOST_WORKER__SLOTS", "many"),
    "unknown-backend": ("OUTPOST_SANDBOX__BACKEND", "docker"),
    "disk-zero": ("OUTPOST_SANDBOX__DISK_MB", "0"),
    "disk-inodes-negative": ("OUTPOST_SANDBOX__DISK_INODES", "-5"),
    "disk-not-a-number": ("OUTPOST_SANDBOX__DISK_MB", "2G"),
    "unknown-queue": ("OUTPOST_WORKER__QUEUE", "redis"),
    "queue-not-a-string": ("OUTPOST_WORKER__QUEUE", '["rows"]'),
}


@pytest.mark.parametrize(("name", "value"), BAD_SETTINGS.values(), ids=BAD_SETTINGS.keys())
def test_serve_refuses_a_bad_setting_in_one_line(tmp_path: Path, name: str, value: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OUTPOST_")}
    env.update({"OUTPOST_DATA_DIR": str(tmp_path / "data"), name: value})
    done = subprocess.run(
        [OUTPOST, "serve", "--port", "0"], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode != 0
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("outpost: invalid setting")
    assert "Traceback" not in done.stderr


def test_serve_refuses_the_procrastinate_queue_on_sqlite_in_one_line(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OUTPOST_")}
    env.update({"OUTPOST_DATA_DIR": str(tmp_path / "data"), "OUTPOST_WORKER__QUEUE": "procrastinate"})
    done = subprocess.run(
        [OUTPOST, "serve", "--port", "0"], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode != 0
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert "needs PostgreSQL" in lines[0]
    assert not (tmp_path / "data" / "outpost.db").exists()  # refused before anything was written
