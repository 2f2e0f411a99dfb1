"""How fast a dispatch survives the death of its worker: an `outpost serve` that only serves the API and
two `outpost worker` processes on one PostgreSQL database (the procrastinate queue), measured over rounds.

Each round submits a `sleep 30` dispatch, waits until it runs on a worker, SIGKILLs that worker (no
shutdown code runs, as when a machine dies) and measures, from the SIGKILL:

(a) **to queued**: until the dispatch is `queued` again (or already claimed by the other worker, when
    that came first between two looks): a living worker's upkeep found the dead one's heartbeat older
    than `--stale-s`;
(b) **to running again**: until it is `running` on the other worker, attempt 2.

Then the dispatch is cancelled and a replacement worker started for the next round. The dispatch row is
read on one database connection every few milliseconds. Expect (a) near `--stale-s`, give or take one
`--heartbeat-s` (the dead worker's last beat, and the upkeep's period).

    .venv/bin/python bench/worker_death.py --rounds 5 --heartbeat-s 0.5 --stale-s 3
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import psycopg
from psycopg.rows import dict_row

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common import publish, submit, summarize, table
from tests.integration.fleet_processes import Fleet, WorkerProcess, new_database
from tests.integration.processes import ServerProcess, wait_for_status_sync
from tests.procs import alive, pids_running

POLL_S = 0.005
TAKEOVER_TIMEOUT_S = 60.0


def sleep_argument(round_no: int) -> str:
    """About 30 s, and unique to the round: how the round's stray processes are found afterwards."""
    return f"30.{9100 + round_no}"


def watch_takeover(conn: psycopg.Connection[Any], dispatch_id: str, killed_at: float) -> dict[str, Any]:
    """Read the dispatch's row until it runs again (attempt 2); seconds from `killed_at` to each step."""
    to_queued_s: float | None = None
    seen_queued = False
    while True:
        row = conn.execute(
            "SELECT status, attempt, worker_id FROM dispatches WHERE id = %s", [dispatch_id]
        ).fetchone()
        elapsed_s = time.monotonic() - killed_at
        assert row is not None
        seen_queued = seen_queued or row["status"] == "queued"
        if to_queued_s is None and (row["status"] == "queued" or row["attempt"] >= 2):
            to_queued_s = elapsed_s
        if row["status"] == "running" and row["attempt"] == 2:
            return {"to_queued_s": to_queued_s, "to_running_s": elapsed_s, "seen_queued": seen_queued,
                    "taken_over_by": str(row["worker_id"])}  # fmt: skip
        if row["status"] not in {"queued", "provisioning", "running"} or elapsed_s > TAKEOVER_TIMEOUT_S:
            raise RuntimeError(f"dispatch {dispatch_id} is {row['status']} (attempt {row['attempt']})")
        time.sleep(POLL_S)


def holder_of(conn: psycopg.Connection[Any], fleet: Fleet, dispatch_id: str) -> WorkerProcess:
    row = conn.execute("SELECT worker_id FROM dispatches WHERE id = %s", [dispatch_id]).fetchone()
    assert row is not None
    [worker] = [worker for worker in fleet.started if worker.id == str(row["worker_id"])]
    return worker


def measure_round(
    client: httpx.Client, conn: psycopg.Connection[Any], fleet: Fleet, round_no: int
) -> dict[str, Any]:
    marker = sleep_argument(round_no)
    dispatch_id = str(submit(client, f"sleep {marker}")["id"])
    wait_for_status_sync(client, dispatch_id, {"running"}, 60)
    victim = holder_of(conn, fleet, dispatch_id)
    killed_at = time.monotonic()
    victim.kill_hard()
    found = watch_takeover(conn, dispatch_id, killed_at)
    if found["taken_over_by"] == victim.id:
        raise RuntimeError(f"dispatch {dispatch_id} runs again on the worker that was killed")
    client.post(f"/v1/dispatches/{dispatch_id}/cancel").raise_for_status()
    for pid in alive(pids_running(marker)):  # the killed worker's run may outlive it
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return {"round": round_no + 1, "dispatch_id": dispatch_id, "killed_worker": victim.id, **found}


def measure(args: argparse.Namespace) -> dict[str, Any]:
    worker_args = ("--slots", str(args.slots), "--agents", "shell")
    with tempfile.TemporaryDirectory() as tmp, new_database(args.postgres) as database_url:
        base = Path(tmp)
        env = {
            "OUTPOST_DATABASE_URL": database_url, "OUTPOST_WORKER__ENABLED": "false",
            "OUTPOST_SECRETS__MASTER_KEY_FILE": str(base / "master.key"), "OUTPOST_LOG_LEVEL": "warning",
            "OUTPOST_WORKER__HEARTBEAT_S": str(args.heartbeat_s),
            "OUTPOST_WORKER__STALE_S": str(args.stale_s),
        }  # fmt: skip
        api = ServerProcess(base / "api", env=env)
        api.start()
        fleet = Fleet(api, database_url, base)
        rounds = []
        try:
            fleet.start_workers(2, *worker_args)
            headers = {"Authorization": f"Bearer {api.create_tenant('bench')}"}
            with (
                httpx.Client(base_url=api.url, headers=headers, timeout=60) as client,
                psycopg.connect(database_url, autocommit=True, row_factory=dict_row) as conn,
            ):
                for round_no in range(args.rounds):
                    rounds.append(measure_round(client, conn, fleet, round_no))
                    fleet.start_worker(*worker_args)  # the replacement, for the next round
        finally:
            fleet.stop_all()
            api.stop()
    params = {"rounds": args.rounds, "workers": 2, "slots": args.slots, "heartbeat_s": args.heartbeat_s,
              "stale_s": args.stale_s, "task": "sleep 30"}  # fmt: skip
    summary = {name: summarize([r[name] for r in rounds]) for name in ("to_queued_s", "to_running_s")}
    return {"params": params, "rounds": rounds, "summary": summary}


def report(results: dict[str, Any]) -> str:
    params, summary = results["params"], results["summary"]
    rows: list[tuple[Any, ...]] = [
        (r["round"], r["to_queued_s"], r["to_running_s"], "yes" if r["seen_queued"] else "no")
        for r in results["rounds"]
    ]
    queued, running = summary["to_queued_s"], summary["to_running_s"]
    rows += [(stat, queued[stat], running[stat], "") for stat in ("p50", "max")]
    return "\n".join([
        f"1 API + 2 workers x {params['slots']} slots, heartbeat {params['heartbeat_s']:g} s, "
        f"stale after {params['stale_s']:g} s; SIGKILL of the worker running a `sleep 30` dispatch",
        "",
        table(["round", "SIGKILL -> queued (s)", "SIGKILL -> running again (s)", "seen queued"], rows),
    ])  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument(
        "--postgres",
        default="postgresql://postgres@127.0.0.1:5432/postgres",
        help="an admin URL: a scratch database is made and dropped",
    )
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--slots", type=int, default=2)
    parser.add_argument("--heartbeat-s", type=float, default=0.5)
    parser.add_argument("--stale-s", type=float, default=3.0)
    args = parser.parse_args()
    results = measure(args)
    publish("worker_death", results, report(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
