"""A cluster as deployed on several machines: two API replicas and three `outpost worker` processes on
one PostgreSQL database, artifacts in S3. Events, cancels and downloads work across replicas, and a
replica or worker that dies loses no dispatch and runs none twice."""

from __future__ import annotations

import hashlib
import json
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import Any

import httpx
import pytest

from tests.integration.cluster import Cluster, running_cluster
from tests.integration.fleet_processes import query, wait_until
from tests.integration.helpers import TERMINAL
from tests.integration.processes import ServerProcess, wait_for_status_sync
from tests.integration.sse_client import SseEvent, sse_items
from tests.procs import alive, pids_running
from tests.requirements import require
from tests.s3_server import moto_problem

# The first test also waits for the cluster to start (moto, two replicas, three workers).
pytestmark = [pytest.mark.postgres, pytest.mark.slow, pytest.mark.timeout(240)]

WORKER_ARGS = ("--agents", "shell", "--slots", "4", "--drain-timeout", "0")


@pytest.fixture(scope="module")
def running(pg_server: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Cluster, str]]:
    """The module's cluster and the API key of its tenant."""
    require(moto_problem())
    base = tmp_path_factory.mktemp("cluster")
    with running_cluster(pg_server, base, replicas=2, workers=3, worker_args=WORKER_ARGS) as started:
        yield started, started.replicas[0].create_tenant("cluster")


@pytest.fixture
def cluster(running: tuple[Cluster, str]) -> Iterator[Cluster]:
    """The module's cluster with both replicas and three workers alive; what a test leaves going is
    cancelled after it."""
    started, key = running
    started.heal()
    yield started
    with _client(started.living_replica(), key) as client:
        started.cancel_unfinished(client)


@pytest.fixture
def key(running: tuple[Cluster, str]) -> str:
    return running[1]


def _client(replica: ServerProcess, key: str) -> httpx.Client:
    return httpx.Client(base_url=replica.url, headers={"Authorization": f"Bearer {key}"}, timeout=30)


def _submit(client: httpx.Client, task: str) -> str:
    response = client.post("/v1/dispatches", json={"agent": "shell", "task": task})
    assert response.status_code == 202, response.text
    return str(response.json()["id"])


def _logs(client: httpx.Client, dispatch_id: str) -> list[dict[str, Any]]:
    body = client.get(f"/v1/dispatches/{dispatch_id}/logs?limit=1000").json()
    assert body["next_after"] is None
    items: list[dict[str, Any]] = body["items"]
    return items


async def _follow(url: str, key: str, dispatch_id: str) -> AsyncIterator[tuple[float, SseEvent]]:
    """The dispatch's live stream on the replica at `url`: each event with the time it arrived."""
    headers = {"Authorization": f"Bearer {key}"}
    async with (
        httpx.AsyncClient(base_url=url, headers=headers, timeout=60) as http,
        http.stream("GET", f"/v1/dispatches/{dispatch_id}/events") as response,
    ):
        assert response.status_code == 200
        async for item in sse_items(response):
            if isinstance(item, SseEvent):
                yield time.time(), item


def _at(created_at: str) -> float:
    return datetime.fromisoformat(created_at.replace("Z", "+00:00")).timestamp()


def _instant(event: dict[str, Any]) -> dict[str, Any]:
    """The event with its time as an instant: `events.jsonl` writes UTC as `+00:00`, the API as `Z`."""
    return {**event, "created_at": _at(event["created_at"])}


SLOW_LINES = (
    "for i in 1 2 3 4 5; do echo line $i; sleep 0.2; done; echo made in the workspace > notes.md; "
    'echo made on a worker > "$OUTPOST_OUTPUTS_DIR/note.txt"'
)


async def test_a_dispatch_submitted_to_one_replica_streams_and_downloads_live_from_the_other(
    cluster: Cluster, key: str
) -> None:
    a, b = cluster.replicas
    with _client(a, key) as client_a, _client(b, key) as client_b:
        dispatch_id = _submit(client_a, SLOW_LINES)
        received = [(at, event) async for at, event in _follow(b.url, key, dispatch_id)]
        events = [event.json() for _, event in received]
        assert events == _logs(client_a, dispatch_id)
        assert [event["seq"] for event in events] == list(range(1, len(events) + 1))
        assert [(e.id, e.event) for _, e in received] == [(str(d["seq"]), d["kind"]) for d in events]
        assert (events[-1]["kind"], events[-1]["data"]["status"]) == ("status", "succeeded")
        arrivals = [at for at, _ in received]
        logged = [(at, e) for at, e in zip(arrivals, events, strict=True) if e["kind"] == "log"]
        lines = [(at, e["data"]["line"]) for at, e in logged]
        assert [line for _, line in lines] == [f"line {n}" for n in range(1, 6)]
        assert lines[0][0] < _at(events[-1]["created_at"])  # live through NOTIFY, not read at the end
        listing = client_b.get(f"/v1/dispatches/{dispatch_id}/artifacts").json()["items"]
    downloaded = {item["name"]: _download(item, b) for item in listing}
    assert {"changes.patch", "events.jsonl", "final-message.md", "outputs/note.txt"} <= set(downloaded)
    assert downloaded["outputs/note.txt"] == b"made on a worker\n"
    assert downloaded["final-message.md"].decode() == "\n".join(f"line {n}" for n in range(1, 6))
    assert b"+made in the workspace" in downloaded["changes.patch"]
    stored_events = [_instant(json.loads(line)) for line in downloaded["events.jsonl"].splitlines()]
    assert stored_events == [_instant(event) for event in events[: len(stored_events)]]
    assert len(stored_events) >= logged[-1][1]["seq"]  # up to the run's last line at least
    assert cluster.stored_objects(dispatch_id) == downloaded  # the bytes really are in the bucket


def _download(item: dict[str, Any], replica: ServerProcess) -> bytes:
    """An artifact through its signed link (no API key), checked against its listing."""
    assert item["download_url"].startswith(f"{replica.url}/v1/artifacts/")
    response = httpx.get(item["download_url"], timeout=30)
    assert response.status_code == 200, response.text
    assert len(response.content) == item["size_bytes"]
    assert hashlib.sha256(response.content).hexdigest() == item["sha256"]
    return response.content


def test_a_cancel_sent_to_one_replica_stops_a_run_submitted_to_the_other(cluster: Cluster, key: str) -> None:
    a, b = cluster.replicas
    marker = "60.3719"  # the sleep's argument: how the test finds the run's processes
    with _client(a, key) as client_a, _client(b, key) as client_b:
        dispatch_id = _submit(client_a, f"sleep {marker}")
        wait_for_status_sync(client_a, dispatch_id, {"running"})
        wait_until(lambda: alive(pids_running(marker)), 10, "the run's processes")
        [row] = query(cluster.database_url, "SELECT worker_id FROM dispatches WHERE id = %s", [dispatch_id])
        cancelled = client_b.post(f"/v1/dispatches/{dispatch_id}/cancel")
        assert (cancelled.status_code, cancelled.json()["status"]) == (200, "cancelled")
        seen_from_a = client_a.get(f"/v1/dispatches/{dispatch_id}").json()
        assert seen_from_a["status"] == "cancelled"
        assert _logs(client_a, dispatch_id)[-1]["data"]["status"] == "cancelled"
    wait_until(lambda: not alive(pids_running(marker)), 10, "the run's processes to end")
    worker = cluster.worker_by_id(str(row["worker_id"]))
    worker.logged_at(f"dispatch {dispatch_id}: abort received")  # the worker heard it, not just the row


def test_a_replica_killed_mid_request_loses_no_accepted_dispatch_and_runs_none_twice(
    cluster: Cluster, key: str
) -> None:
    a, b = cluster.replicas
    marker = uuid.uuid4().hex[:12]
    posts = _PostLoop(a, key, marker)
    posts.start(threads=3)
    wait_until(lambda: len(posts.accepted) >= 15, 30, "accepted dispatches")
    a.kill_hard()
    posts.join()
    assert posts.answers_other_than_202 == []
    rows = query(
        cluster.database_url,
        "SELECT d.id, d.status, (SELECT count(*) FROM procrastinate_jobs j WHERE j.queueing_lock = d.id"
        "   AND j.status IN ('todo', 'doing')) AS jobs FROM dispatches d WHERE d.task LIKE %s",
        [f"echo {marker} %"],
    )
    assert set(posts.accepted) <= {row["id"] for row in rows}
    assert [row for row in rows if row["status"] == "queued" and row["jobs"] == 0] == []
    with _client(b, key) as client_b:
        for row in rows:
            done = wait_for_status_sync(client_b, row["id"], TERMINAL)
            assert (done["status"], done["attempt"]) == ("succeeded", 1)
    counts = _status_counts(cluster, [row["id"] for row in rows])
    assert {(count["running"], count["succeeded"]) for count in counts.values()} == {(1, 1)}  # each ran once
    print(f"{len(posts.accepted)} accepted, {len(rows) - len(posts.accepted)} more stored of POSTs cut off")
    restarted = cluster.restart_replica(0)
    with _client(restarted, key) as client_a:
        assert {client_a.get(f"/v1/dispatches/{i}").json()["status"] for i in posts.accepted} == {"succeeded"}
        after = _submit(client_a, f"echo {marker} after the restart")
        done = wait_for_status_sync(client_a, after, TERMINAL)
        assert done["result"] == f"{marker} after the restart"


class _PostLoop:
    """Threads that POST `echo` dispatches to one replica until it stops answering."""

    def __init__(self, replica: ServerProcess, key: str, marker: str) -> None:
        self.replica, self.key, self.marker = replica, key, marker
        self.accepted: list[str] = []
        self.answers_other_than_202: list[int] = []
        self._threads: list[threading.Thread] = []

    def start(self, threads: int) -> None:
        self._threads = [threading.Thread(target=self._post, args=(n,)) for n in range(threads)]
        for thread in self._threads:
            thread.start()

    def join(self) -> None:
        for thread in self._threads:
            thread.join(30)
            assert not thread.is_alive()

    def _post(self, thread_no: int) -> None:
        with _client(self.replica, self.key) as client:
            for n in range(10_000):
                task = f"echo {self.marker} {thread_no} {n}"
                try:
                    response = client.post("/v1/dispatches", json={"agent": "shell", "task": task})
                except httpx.TransportError:
                    return  # the replica died: this POST may or may not have been stored
                if response.status_code == 202:
                    self.accepted.append(response.json()["id"])
                else:
                    self.answers_other_than_202.append(response.status_code)


def test_dispatches_of_a_killed_and_a_stopped_worker_each_succeed_exactly_once(
    cluster: Cluster, key: str
) -> None:
    victim, stopped, _ = cluster.living_workers()
    with _client(cluster.replicas[0], key) as client:
        # 24 dispatches on 12 slots: while both workers' slots are full, neither claims another one. The
        # POSTs go at once and each run lasts 3 s, so the slots fill however slowly the API answers.
        started = time.monotonic()
        ids = _submit_all(client, ["sleep 3"] * 24)
        submitted_in = time.monotonic() - started
        wait_until(
            lambda: _slots_full(cluster, victim.id, stopped.id), 30,
            lambda: f"both workers' slots to fill (24 POSTs took {submitted_in:.2f} s; running per worker: "
            f"{_running_per_worker(cluster)})",
        )  # fmt: skip
        lost, handed_back = set(_running_on(cluster, victim.id)), set(_running_on(cluster, stopped.id))
        signalled_at = time.time()
        victim.kill_hard()
        stopped.terminate()
        assert stopped.process is not None
        assert stopped.process.wait(30) == 0  # drain timeout 0: its runs are handed back at once
        cluster.fleet.start_worker(*WORKER_ARGS)
        for dispatch_id in ids:
            assert wait_for_status_sync(client, dispatch_id, TERMINAL, 60)["status"] == "succeeded"
        notes = {dispatch_id: _notes(client, dispatch_id) for dispatch_id in ids}
    counts, attempts = _status_counts(cluster, ids), _attempts(cluster, ids)
    for dispatch_id, count in counts.items():
        assert (count["succeeded"], count["running"]) == (1, attempts[dispatch_id])  # one run per attempt
    again = {dispatch_id for dispatch_id in ids if attempts[dispatch_id] == 2}
    print(f"ran again: {len(again & lost)}/{len(lost)} of the killed worker's, {len(again & handed_back)}/"
          f"{len(handed_back)} of the stopped one's")  # fmt: skip
    assert again <= lost | handed_back  # only runs of the two workers went again
    for held, note in ((lost, "worker lost"), (handed_back, "its worker stopped")):
        assert again & held, f"no run was taken back ({note})"
        assert all(notes[i] == [f"{note} during attempt 1; queued again"] for i in again & held)
        # A run that did not go again ended by itself as its worker was signalled (0.5 s: the drain's).
        assert all(_finished_by(cluster, i, signalled_at + 0.5) for i in held - again)


def _submit_all(client: httpx.Client, tasks: list[str]) -> list[str]:
    """The ids of `tasks` submitted by concurrent POSTs, in the order of `tasks`."""
    with ThreadPoolExecutor(max_workers=8) as pool:
        return list(pool.map(lambda task: _submit(client, task), tasks))


def _running_per_worker(cluster: Cluster) -> dict[str, int]:
    rows = query(
        cluster.database_url,
        "SELECT worker_id, count(*) AS n FROM dispatches WHERE status IN ('provisioning', 'running')"
        " GROUP BY worker_id",
    )
    return {str(row["worker_id"]): int(row["n"]) for row in rows}


def _slots_full(cluster: Cluster, *worker_ids: str) -> bool:
    return all(len(_running_on(cluster, worker_id)) == 4 for worker_id in worker_ids)


def _running_on(cluster: Cluster, worker_id: str) -> list[str]:
    rows = query(
        cluster.database_url,
        "SELECT id FROM dispatches WHERE worker_id = %s AND status IN ('provisioning', 'running')",
        [worker_id],
    )
    return [str(row["id"]) for row in rows]


def _notes(client: httpx.Client, dispatch_id: str) -> list[str]:
    statuses = [event["data"] for event in _logs(client, dispatch_id) if event["kind"] == "status"]
    return [data["note"] for data in statuses if "note" in data]


def _status_counts(cluster: Cluster, ids: list[str]) -> dict[str, dict[str, int]]:
    """Per dispatch, how many status events of each status it has."""
    rows = query(
        cluster.database_url,
        "SELECT dispatch_id, data->>'status' AS status, count(*) AS n FROM dispatch_events"
        " WHERE dispatch_id = ANY(%s) AND kind = 'status' GROUP BY 1, 2",
        [ids],
    )
    counts: dict[str, dict[str, int]] = {dispatch_id: {"succeeded": 0, "running": 0} for dispatch_id in ids}
    for row in rows:
        counts[row["dispatch_id"]][row["status"]] = row["n"]
    return counts


def _attempts(cluster: Cluster, ids: list[str]) -> dict[str, int]:
    rows = query(cluster.database_url, "SELECT id, attempt FROM dispatches WHERE id = ANY(%s)", [ids])
    return {str(row["id"]): int(row["attempt"]) for row in rows}


def _finished_by(cluster: Cluster, dispatch_id: str, at: float) -> bool:
    [row] = query(cluster.database_url, "SELECT finished_at FROM dispatches WHERE id = %s", [dispatch_id])
    return bool(row["finished_at"].timestamp() <= at)
