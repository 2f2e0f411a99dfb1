"""Scaled out on one machine: an `outpost serve` that only serves the API, and `outpost worker` processes
on one PostgreSQL database (the procrastinate queue), measured end to end over real HTTP.

1. **Submit to agent start**, one dispatch at a time: from before the POST to the moment the run's own
   process starts, as it prints it (`date +%s.%N` inside the sandbox; same machine, same clock).
2. **A burst**: `--burst` dispatches of a `--burst-seconds` agent (`sleep`) submitted at once, across
   the workers' slots. Every dispatch must succeed on its first attempt, with exactly one `running`
   status event and one job: zero lost, zero run twice. Reports the wall time, the throughput and the
   queue wait (created to started) percentiles.

With `--rcu-expedited` (root), the starts take turns with normal and expedited RCU grace periods, which
decide what moving a run into its cgroup costs (cgroup v1; see docs/deploy.md, "Start latency"). With
`--compare-parked PHASES`, the starts alternate in phases between workers with parked launchers (the
default) and workers without, restarted for each phase.

    .venv/bin/python bench/fleet_dispatch.py --workers 3 --slots 20 --starts 100 --burst 300 \\
        --postgres postgresql://postgres@127.0.0.1:5432/postgres
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common import publish, summarize, table
from tests.integration.fleet_processes import Fleet, new_database, query
from tests.integration.processes import ServerProcess, wait_for_status_sync

TARGET_START_P50_MS = 50.0
TERMINAL = {"succeeded", "failed", "cancelled", "timed_out"}


def submit(client: httpx.Client, task: str) -> str:
    response = client.post("/v1/dispatches", json={"agent": "shell", "task": task})
    response.raise_for_status()
    return str(response.json()["id"])


STEPS = ("queued", "provisioning", "running", "agent start")
"""Where a start's time goes: the server's status events, then the run's own printed time."""


def milestones(client: httpx.Client, dispatch_id: str) -> dict[str, float]:
    """Epoch seconds of each of `STEPS`: the status events' times, and the time the run's process
    printed as it started."""
    events = client.get(f"/v1/dispatches/{dispatch_id}/logs?limit=100").json()["items"]
    found: dict[str, float] = {}
    for event in events:
        at = datetime.fromisoformat(event["created_at"].replace("Z", "+00:00")).timestamp()
        if event["kind"] == "status" and event["data"]["status"] in STEPS:
            found.setdefault(event["data"]["status"], at)
        elif event["kind"] == "log":
            found.setdefault("agent start", float(event["data"]["line"].strip()))
    if set(found) != set(STEPS):
        raise RuntimeError(f"dispatch {dispatch_id} lacks {set(STEPS) - set(found)}")
    return found


RCU_EXPEDITED = Path("/sys/kernel/rcu_expedited")
"""With cgroup v1, moving a process into a cgroup waits for an RCU grace period (~11 ms here) unless
another move happened just before; expedited grace periods make it ~0.4 ms (see docs/deploy.md)."""


def measure_starts(
    client: httpx.Client, runs: int, warmup: int, rcu_settings: tuple[str, ...] = ()
) -> list[dict[str, list[float]]]:
    """Per step (from the one before, the first from the POST), and `total`, in ms. With `rcu_settings`
    ("0", "1"), the starts take turns with `/sys/kernel/rcu_expedited` set to each (side by side, so that
    the machine's load weighs on both alike; the caller restores the setting): one result per setting."""
    turns = rcu_settings or ("",)
    spans: list[dict[str, list[float]]] = [{step: [] for step in (*STEPS, "total")} for _ in turns]
    for run in range((warmup + runs) * len(turns)):
        turn = run % len(turns)
        if rcu_settings:
            RCU_EXPEDITED.write_text(rcu_settings[turn])
        submitted = time.time()
        dispatch_id = submit(client, "date +%s.%N")
        body = wait_for_status_sync(client, dispatch_id, TERMINAL, 60)
        if body["status"] != "succeeded":
            raise RuntimeError(f"dispatch {dispatch_id} ended {body['status']}")
        if run < warmup * len(turns):
            continue
        at = milestones(client, dispatch_id)
        previous = submitted
        for step in STEPS:
            spans[turn][step].append((at[step] - previous) * 1000)
            previous = at[step]
        spans[turn]["total"].append((at["agent start"] - submitted) * 1000)
    return spans


def measure_burst(client: httpx.Client, database_url: str, count: int, seconds: float) -> dict[str, Any]:
    started = time.monotonic()
    with ThreadPoolExecutor(16) as pool:
        ids = list(pool.map(lambda _: submit(client, f"sleep {seconds}"), range(count)))
    submitted_s = time.monotonic() - started
    timeout_s = 120 + 4 * seconds * count
    with ThreadPoolExecutor(16) as pool:
        bodies = list(
            pool.map(lambda dispatch_id: wait_for_status_sync(client, dispatch_id, TERMINAL, timeout_s), ids)
        )
    wall_s = time.monotonic() - started
    rows = query(
        database_url,
        "SELECT d.id, d.status, d.attempt, d.created_at, d.started_at, d.finished_at,"
        " (SELECT count(*) FROM dispatch_events e WHERE e.dispatch_id = d.id AND e.kind = 'status'"
        "   AND e.data->>'status' = 'running') AS runs,"
        " (SELECT count(*) FROM procrastinate_jobs j WHERE j.queueing_lock = d.id) AS jobs"
        " FROM dispatches d WHERE d.id = ANY(%s)",
        [ids],
    )
    waits_ms = [_ms(row["started_at"], row["created_at"]) for row in rows if row["started_at"]]
    return {
        "dispatches": count, "seconds_each": seconds, "submit_s": submitted_s, "wall_s": wall_s,
        "throughput_per_s": count / wall_s, "answered": len(bodies), "rows": len(rows),
        "succeeded": sum(row["status"] == "succeeded" for row in rows),
        "not_first_attempt": sum(row["attempt"] != 1 for row in rows),
        "ran_twice": sum(row["runs"] != 1 for row in rows),
        "extra_jobs": sum(row["jobs"] > 1 for row in rows),  # a succeeded job is deleted
        "queue_wait_ms": summarize(waits_ms),
    }  # fmt: skip


def _ms(later: datetime, earlier: datetime) -> float:
    return (later - earlier).total_seconds() * 1000


def measure(args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp, new_database(args.postgres) as database_url:
        base = Path(tmp)
        env = {
            "OUTPOST_DATABASE_URL": database_url, "OUTPOST_WORKER__ENABLED": "false",
            "OUTPOST_SECRETS__MASTER_KEY_FILE": str(base / "master.key"), "OUTPOST_LOG_LEVEL": "warning",
        }  # fmt: skip
        api = ServerProcess(base / "api", env=env)
        api.start()
        fleet = Fleet(api, database_url, base)
        try:
            fleet.start_workers(args.workers, "--slots", str(args.slots), "--agents", "shell")
            key = api.create_tenant("bench")
            headers = {"Authorization": f"Bearer {key}"}
            with httpx.Client(base_url=api.url, headers=headers, timeout=60) as client:
                if args.rcu_expedited:
                    starts, tuned = measure_both_rcu_settings(client, args.starts, args.warmup)
                elif args.compare_parked:
                    starts, tuned = measure_parked_phases(client, fleet, args)
                else:
                    [starts], tuned = measure_starts(client, args.starts, args.warmup), None
                burst = measure_burst(client, database_url, args.burst, args.burst_seconds)
        finally:
            fleet.stop_all()
            api.stop()
    params = {"workers": args.workers, "slots": args.slots, "starts": args.starts}
    start_ms = {step: summarize(values) for step, values in starts.items()}
    results = {"params": params, "submit_to_agent_start_ms": start_ms, "burst": burst}
    if tuned is not None:
        label = "with rcu_expedited=1" if args.rcu_expedited else "without parked launchers"
        results["compared"] = {"label": label, **{step: summarize(values) for step, values in tuned.items()}}
    return results


def measure_parked_phases(
    client: httpx.Client, fleet: Fleet, args: argparse.Namespace
) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """The starts in phases that take turns between workers with parked launchers (the default) and
    workers without (`OUTPOST_SANDBOX__PARKED_LAUNCHERS=0`), restarted for each phase, so that the
    machine's load weighs on both alike. Default workers are running again afterwards."""
    merged: list[dict[str, list[float]]] = [{step: [] for step in (*STEPS, "total")} for _ in range(2)]
    per_phase = max(1, args.starts // args.compare_parked)
    for phase in range(2 * args.compare_parked):
        _restart_workers(fleet, args, parked=("2", "0")[phase % 2])
        [spans] = measure_starts(client, per_phase, args.warmup)
        for step, values in spans.items():
            merged[phase % 2][step] += values
    _restart_workers(fleet, args, parked=None)
    return merged[0], merged[1]


def _restart_workers(fleet: Fleet, args: argparse.Namespace, parked: str | None) -> None:
    fleet.stop_all()
    fleet.api.env.pop("OUTPOST_SANDBOX__PARKED_LAUNCHERS", None)
    if parked is not None:
        fleet.api.env["OUTPOST_SANDBOX__PARKED_LAUNCHERS"] = parked  # workers take the API's settings
    fleet.start_workers(args.workers, "--slots", str(args.slots), "--agents", "shell")


def measure_both_rcu_settings(
    client: httpx.Client, runs: int, warmup: int
) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """The starts with normal and with expedited RCU grace periods, in turns (host-wide: restored)."""
    original = RCU_EXPEDITED.read_text().strip()
    try:
        normal, expedited = measure_starts(client, runs, warmup, rcu_settings=("0", "1"))
    finally:
        RCU_EXPEDITED.write_text(original)
    return normal, expedited


def report(results: dict[str, Any]) -> str:
    spans = results["submit_to_agent_start_ms"]
    start = spans["total"]
    burst = results["burst"]
    wait = burst["queue_wait_ms"]
    params = results["params"]
    rows = [
        (f"  -> {step} (ms)", spans[step]["n"], spans[step]["p50"], spans[step]["p90"], spans[step]["p99"])
        for step in STEPS
    ]
    rows += [
        ("submit -> agent start (ms)", start["n"], start["p50"], start["p90"], start["p99"]),
        ("burst queue wait (ms)", wait["n"], wait["p50"], wait["p90"], wait["p99"]),
    ]
    tuned = results.get("compared")
    if tuned is not None:
        rows += [
            (f"  {tuned['label']}: -> {step} (ms)", tuned[step]["n"], tuned[step]["p50"], tuned[step]["p90"],
             tuned[step]["p99"])
            for step in (*STEPS, "total")
        ]  # fmt: skip
    met = start["p50"] <= TARGET_START_P50_MS
    clean = burst["succeeded"] == burst["dispatches"] and not (
        burst["not_first_attempt"] or burst["ran_twice"] or burst["extra_jobs"]
    )
    return "\n".join([
        f"{params['workers']} workers x {params['slots']} slots, shell agent, bwrap sandbox",
        "",
        table(["figure", "n", "p50", "p90", "p99"], rows),
        "",
        f"burst: {burst['dispatches']} x sleep {burst['seconds_each']:g} s in {burst['wall_s']:.1f} s "
        f"({burst['throughput_per_s']:.1f}/s), submitted in {burst['submit_s']:.1f} s; succeeded "
        f"{burst['succeeded']}, not first attempt {burst['not_first_attempt']}, ran twice "
        f"{burst['ran_twice']}, extra jobs {burst['extra_jobs']}: "
        + ("none lost or doubled" if clean else "NOT clean"),
        f"target submit -> agent start p50 <= {TARGET_START_P50_MS:.0f} ms: {'met' if met else 'NOT met'}",
    ])  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument(
        "--postgres", required=True, help="an admin URL: a scratch database is made and dropped"
    )
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument("--slots", type=int, default=20)
    parser.add_argument("--starts", type=int, default=100, help="timed single dispatches")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--burst", type=int, default=300)
    parser.add_argument("--burst-seconds", type=float, default=2.0)
    parser.add_argument(
        "--rcu-expedited", action="store_true",
        help="starts take turns with /sys/kernel/rcu_expedited 0 and 1 (root; restored afterwards)",
    )  # fmt: skip
    parser.add_argument(
        "--compare-parked", type=int, default=0, metavar="PHASES",
        help="starts in PHASES phases each with and without parked launchers (workers restarted)",
    )  # fmt: skip
    args = parser.parse_args()
    if args.compare_parked < 0 or args.compare_parked > args.starts:
        parser.error("--compare-parked takes 0 (off) up to --starts phases")
    if args.rcu_expedited and args.compare_parked:
        parser.error("--rcu-expedited and --compare-parked each compare the starts: choose one")
    if args.rcu_expedited and not os.access(RCU_EXPEDITED, os.W_OK):
        parser.error(f"--rcu-expedited needs to write {RCU_EXPEDITED} (run as root)")
    results = measure(args)
    publish("fleet_dispatch", results, report(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
