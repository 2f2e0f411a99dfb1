"""Dispatches end to end on the bwrap backend."""

from __future__ import annotations

import os
import random
import socket
import subprocess
from pathlib import Path

import pytest

from tests.conftest import MakeServer, Server
from tests.integration.helpers import TERMINAL, all_events, submit, wait_for_status
from tests.integration.processes import OUTPOST
from tests.procs import pids_running


@pytest.fixture
async def bwrap_server(make_server: MakeServer, tmp_path: Path) -> Server:
    # pytest's temp dirs are private to root: the data dir need not be reachable by the sandbox's uids.
    uid_first = 400_000 + random.randrange(1000) * 64
    sandbox = {"backend": "bwrap", "uid_first": uid_first, "uid_count": 64, "memory_mb": 96, "pids_max": 48}
    return await make_server(data_dir=tmp_path / "data", sandbox=sandbox, limits={"requests_per_s": 0})


async def test_a_dispatch_runs_in_the_sandbox_as_its_own_uid(bwrap_server: Server) -> None:
    headers = await bwrap_server.new_tenant()
    created = await submit(bwrap_server.client, headers, "pwd; id -u; echo hello > out.txt; cat out.txt")
    done = await wait_for_status(bwrap_server.client, headers, created["id"], TERMINAL)
    assert done["status"] == "succeeded", done
    lines = [
        e["data"]["line"]
        for e in await all_events(bwrap_server.client, headers, created["id"])
        if e["kind"] == "log"
    ]
    assert lines[0] == "/workspace"
    assert int(lines[1]) >= 400_000
    assert lines[2] == "hello"


async def test_readiness_reports_the_isolated_backend(bwrap_server: Server) -> None:
    ready = (await bwrap_server.client.get("/health/ready")).json()
    assert ready["sandbox"] == {"backend": "bwrap", "isolated": True}


async def test_cancel_kills_a_sandboxed_run(bwrap_server: Server) -> None:
    headers = await bwrap_server.new_tenant()
    created = await submit(bwrap_server.client, headers, "echo started; setsid sleep 300 & sleep 300")
    await wait_for_status(bwrap_server.client, headers, created["id"], {"running"})
    response = await bwrap_server.client.post(f"/v1/dispatches/{created['id']}/cancel", headers=headers)
    assert response.json()["status"] == "cancelled"


def test_serve_refuses_to_start_with_a_bwrap_sandbox_it_cannot_use(tmp_path: Path) -> None:
    private = tmp_path / "private"  # pytest's temp dirs are not searchable by the sandbox uids
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("OUTPOST_")},
        "OUTPOST_DATA_DIR": str(tmp_path / "data"),
        "OUTPOST_SANDBOX__BACKEND": "bwrap",
        "OUTPOST_SANDBOX__RUN_DIR": str(private / "run"),
    }
    done = subprocess.run(
        [OUTPOST, "serve", "--port", "0"], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode != 0
    last_line = done.stderr.strip().splitlines()[-1]
    assert last_line.startswith("outpost: the bwrap sandbox cannot run here:")
    assert "is not searchable by others" in last_line


MEMORY_HOG = "/usr/bin/python3 -c 'x = bytearray(400 * 2**20); print(len(x))'"
FORK_STORM = (
    "/usr/bin/python3 -c 'import os, time\n"
    "for _ in range(200):\n"
    "    if os.fork() == 0:\n"
    "        time.sleep(30); os._exit(0)'"
)


DISK_FILLER = "head -c 8000000 /dev/zero > f"


@pytest.mark.parametrize(
    ("script", "reason"),
    [(MEMORY_HOG, "oom"), (FORK_STORM, "pids"), (DISK_FILLER, "disk_full")],
    ids=["memory", "processes", "disk"],
)
async def test_a_run_over_a_limit_fails_with_that_limit_as_reason(
    bwrap_server: Server, script: str, reason: str
) -> None:
    headers = await bwrap_server.new_tenant()
    created = await submit(bwrap_server.client, headers, script, limits={"disk_mb": 4})
    done = await wait_for_status(bwrap_server.client, headers, created["id"], TERMINAL)
    assert done["status"] == "failed"
    assert done["failure"]["reason"] == reason, done


async def test_a_timed_out_sandbox_leaves_no_process_behind(bwrap_server: Server) -> None:
    headers = await bwrap_server.new_tenant()
    marker = f"{random.randrange(100_000, 999_999)}.5"
    created = await submit(
        bwrap_server.client, headers, f"setsid sleep {marker} & sleep {marker}", timeout_s=1
    )
    done = await wait_for_status(bwrap_server.client, headers, created["id"], TERMINAL, timeout_s=15)
    assert done["status"] == "timed_out"
    assert pids_running(marker) == []


EGRESS_PROBE = """/usr/bin/python3 - <<'PY'
import os, socket
print("proxy", os.environ["HTTPS_PROXY"])
conn = socket.create_connection(("127.0.0.1", 3128), timeout=5)
conn.sendall(b"CONNECT blocked.example:443 HTTP/1.1\\r\\nHost: blocked.example:443\\r\\n\\r\\n")
print("answer", conn.recv(200).split(b"\\r\\n")[0].decode())
try:
    socket.create_connection(("127.0.0.1", HOST_PORT), timeout=2)
    print("direct: connected")
except OSError as exc:
    print("direct:", type(exc).__name__)
PY"""


async def test_egress_goes_only_through_the_proxy_and_every_decision_is_an_event(
    bwrap_server: Server,
) -> None:
    host_side = socket.create_server(("127.0.0.1", 0))  # a host service the sandbox must not reach
    port = host_side.getsockname()[1]
    headers = await bwrap_server.new_tenant()
    created = await submit(bwrap_server.client, headers, EGRESS_PROBE.replace("HOST_PORT", str(port)))
    done = await wait_for_status(bwrap_server.client, headers, created["id"], TERMINAL)
    host_side.close()
    events = await all_events(bwrap_server.client, headers, created["id"])
    lines = [e["data"]["line"] for e in events if e["kind"] == "log"]
    assert done["status"] == "succeeded", (done, lines)
    assert "proxy http://127.0.0.1:3128" in lines
    assert "answer HTTP/1.1 403 Forbidden" in lines
    assert "direct: ConnectionRefusedError" in lines  # the sandbox's own loopback, not the host's
    egress = [e["data"] for e in events if e["kind"] == "egress"]
    assert [(e["host"], e["port"], e["allowed"]) for e in egress] == [("blocked.example", 443, False)]


async def test_a_dispatch_can_lower_its_own_memory_limit(bwrap_server: Server) -> None:
    headers = await bwrap_server.new_tenant()
    allocate_48_mib = "/usr/bin/python3 -c 'x = bytearray(48 * 2**20); print(len(x))'"
    within_server_limit = await submit(bwrap_server.client, headers, allocate_48_mib)
    lowered = await submit(bwrap_server.client, headers, allocate_48_mib, limits={"memory_mb": 24})
    assert lowered["limits"] == {"memory_mb": 24, "pids": None, "cpu_cores": None, "disk_mb": None}
    ok = await wait_for_status(bwrap_server.client, headers, within_server_limit["id"], TERMINAL)
    killed = await wait_for_status(bwrap_server.client, headers, lowered["id"], TERMINAL)
    assert ok["status"] == "succeeded", ok
    assert (killed["status"], killed["failure"]["reason"]) == ("failed", "oom"), killed


PROXY_ANSWERS = """/usr/bin/python3 - <<'PY'
import socket
for host in ("extra.test", "other.test"):
    conn = socket.create_connection(("127.0.0.1", 3128), timeout=15)
    conn.sendall(f"CONNECT {host}:443 HTTP/1.1\\r\\nHost: {host}:443\\r\\n\\r\\n".encode())
    print(host, conn.recv(200).split(b" ")[1].decode())
PY"""


async def test_a_dispatch_can_add_hosts_to_the_egress_allowlist(bwrap_server: Server) -> None:
    headers = await bwrap_server.new_tenant()
    created = await submit(bwrap_server.client, headers, PROXY_ANSWERS, egress_allow=["extra.test"])
    assert created["egress_allow"] == ["extra.test"]
    await wait_for_status(bwrap_server.client, headers, created["id"], TERMINAL, timeout_s=40)
    events = await all_events(bwrap_server.client, headers, created["id"])
    lines = [e["data"]["line"] for e in events if e["kind"] == "log"]
    # The added host passes the policy (then fails to resolve: this machine has no DNS); the other does not.
    assert "other.test 403" in lines
    assert any(line.startswith("extra.test 5") for line in lines), lines
    decisions = {e["data"]["host"]: e["data"]["reason"] for e in events if e["kind"] == "egress"}
    assert set(decisions) == {"extra.test", "other.test"}
