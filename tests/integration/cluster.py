"""A small Outpost cluster of real processes for tests: API replicas and `outpost worker` processes on one
PostgreSQL database (the procrastinate queue), with a moto S3 server as the artifact store of every one
of them, as a deployment with several machines has it."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from tests.integration.fleet_processes import Fleet, WorkerProcess, new_database, query
from tests.integration.helpers import TERMINAL
from tests.integration.processes import ServerProcess
from tests.s3_server import ACCESS_KEY_ID, REGION, SECRET_ACCESS_KEY, new_bucket, running_moto, s3_client


@dataclass
class Cluster:
    """Replicas that only serve the API, and a fleet kept at `worker_count` living workers."""

    database_url: str
    s3_endpoint: str
    bucket: str
    replicas: list[ServerProcess]
    fleet: Fleet
    worker_count: int
    worker_args: tuple[str, ...]

    def living_workers(self) -> list[WorkerProcess]:
        return [w for w in self.fleet.started if w.process is not None and w.process.poll() is None]

    def living_replica(self) -> ServerProcess:
        return next(r for r in self.replicas if r.process is not None and r.process.poll() is None)

    def worker_by_id(self, worker_id: str) -> WorkerProcess:
        [found] = [worker for worker in self.fleet.started if worker.id == worker_id]
        return found

    def restart_replica(self, index: int) -> ServerProcess:
        """A new `outpost serve` in place of replica `index` (dead or not): same data dir, settings and
        port, so clients that knew the old one reach the new one."""
        old = self.replicas[index]
        old.stop()
        fresh = ServerProcess(old.data_dir, env=old.env, port=old.port)
        fresh.start()
        self.replicas[index] = fresh
        return fresh

    def heal(self) -> None:
        """Restart dead replicas and start workers until `worker_count` live: what a test left broken
        does not carry over to the next one."""
        for index, replica in enumerate(self.replicas):
            if replica.process is None or replica.process.poll() is not None:
                self.restart_replica(index)
        missing = self.worker_count - len(self.living_workers())
        if missing > 0:
            self.fleet.start_workers(missing, *self.worker_args)

    def cancel_unfinished(self, client: httpx.Client) -> None:
        """Cancel, through the API (which stops their runs), the dispatches a failed test left going."""
        rows = query(self.database_url, "SELECT id FROM dispatches WHERE status <> ALL(%s)", [list(TERMINAL)])
        for row in rows:
            client.post(f"/v1/dispatches/{row['id']}/cancel")

    def stored_objects(self, dispatch_id: str) -> dict[str, bytes]:
        """What the bucket holds for the dispatch, read with a plain S3 client: artifact name -> bytes."""
        s3 = s3_client(self.s3_endpoint)
        listed: list[dict[str, Any]] = s3.list_objects_v2(Bucket=self.bucket).get("Contents", [])
        marker = f"/dispatches/{dispatch_id}/"
        return {
            item["Key"].split(marker, 1)[1]: s3.get_object(Bucket=self.bucket, Key=item["Key"])["Body"].read()
            for item in listed
            if marker in item["Key"]
        }

    def stop(self) -> None:
        for replica in self.replicas:
            replica.stop()


def cluster_env(base: Path, database_url: str, s3_endpoint: str, bucket: str) -> dict[str, str]:
    """The settings every process of the cluster shares (workers read them from the replicas')."""
    return {
        "OUTPOST_DATABASE_URL": database_url, "OUTPOST_WORKER__ENABLED": "false",
        "OUTPOST_SECRETS__MASTER_KEY_FILE": str(base / "master.key"),
        # A dead worker is found within seconds, not half a minute.
        "OUTPOST_WORKER__HEARTBEAT_S": "0.5", "OUTPOST_WORKER__STALE_S": "3",
        "OUTPOST_WORKER__POLL_INTERVAL_S": "0.2",
        # Streams read the store on their own only every 30 s: an event that reaches a stream sooner
        # came through a NOTIFY from the process that wrote it.
        "OUTPOST_EVENTS__POLL_INTERVAL_S": "30",
        "OUTPOST_STORAGE__BACKEND": "s3", "OUTPOST_STORAGE__S3__BUCKET": bucket,
        "OUTPOST_STORAGE__S3__ENDPOINT_URL": s3_endpoint, "OUTPOST_STORAGE__S3__REGION": REGION,
        "OUTPOST_STORAGE__S3__ACCESS_KEY_ID": ACCESS_KEY_ID,
        "OUTPOST_STORAGE__S3__SECRET_ACCESS_KEY": SECRET_ACCESS_KEY,
    }  # fmt: skip


@contextmanager
def running_cluster(
    admin_url: str, base: Path, *, replicas: int, workers: int, worker_args: tuple[str, ...]
) -> Iterator[Cluster]:
    """A cluster on a new database and a new bucket; every process stopped, the database dropped and the
    S3 server stopped afterwards, whatever happened."""
    with ExitStack() as stack:
        endpoint = stack.enter_context(running_moto(base / "moto.log"))
        database_url = stack.enter_context(new_database(admin_url))
        env = cluster_env(base, database_url, endpoint, new_bucket(endpoint))
        servers = [ServerProcess(base / f"api{n}", env=env) for n in range(replicas)]
        fleet = Fleet(servers[0], database_url, base)
        cluster = Cluster(
            database_url, endpoint, env["OUTPOST_STORAGE__S3__BUCKET"], servers, fleet, workers, worker_args
        )
        stack.callback(cluster.stop)
        stack.callback(fleet.stop_all)  # runs first: workers stop before the replicas and the database
        for server in servers:  # one after the other: the first one makes the master key and the schema
            server.start()
        fleet.start_workers(workers, *worker_args)
        yield cluster
