"""The composition root: builds every component from the settings, once, and wires them together."""

from __future__ import annotations

import fcntl
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from outpost.agents.catalog import default_catalog
from outpost.agents.registry import default_registry
from outpost.agents.status import AgentStatusCache
from outpost.audit.chain import KEY_PURPOSE as AUDIT_KEY_PURPOSE
from outpost.audit.log import AuditLog
from outpost.db.migrate import upgrade_to_head
from outpost.db.store import Store
from outpost.errors import Unavailable
from outpost.events.base import EventBus
from outpost.events.factory import build_event_bus
from outpost.events.streams import EventStreams
from outpost.gateway.server import ModelGateway
from outpost.gateway.tokens import GatewayTokens
from outpost.gateway.upstreams import upstreams_from_settings
from outpost.ledger.metrics import LedgerMetrics
from outpost.ledger.prices import build_price_table
from outpost.ledger.settlement import Ledger
from outpost.ledger.storage import StorageAccrual
from outpost.logs import remember_secrets_in
from outpost.sandbox.base import Sandbox
from outpost.sandbox.process import ProcessSandbox
from outpost.secrets.keyring import MasterKeyring
from outpost.secrets.master_key import load_keyring
from outpost.secrets.vault import SecretVault
from outpost.services.admission import Admission
from outpost.services.artifacts import ArtifactService
from outpost.services.audit import AuditService
from outpost.services.budgets import BudgetGuard
from outpost.services.dispatches import DispatchService
from outpost.services.fleet import FleetService
from outpost.services.fleet_runs import FleetRuns
from outpost.services.git_credentials import GitCredentialService
from outpost.services.keys import KeyService
from outpost.services.providers import ProviderService
from outpost.services.quotas import QuotaBook
from outpost.services.retention import RetentionJanitor
from outpost.services.runs import RunService
from outpost.services.usage import UsageService
from outpost.services.workspaces import WorkspaceService
from outpost.settings import Settings
from outpost.storage.base import ObjectStore
from outpost.storage.disk_guard import DiskGuard
from outpost.storage.factory import build_object_store, build_url_signer
from outpost.storage.signing import UrlSigner
from outpost.worker.agent_launch import AgentRuntime
from outpost.worker.executor import DispatchExecutor
from outpost.worker.persistent import PersistentStore
from outpost.worker.presence import WorkerPresence, retire_workers
from outpost.worker.queue.base import QueueBackend
from outpost.worker.queue.factory import advertised_agents, build_queue
from outpost.worker.run_outputs import OutputLimits
from outpost.worker.run_results import RunResults
from outpost.worker.run_workspace import RunWorkspaces, WorkspacePlaces
from outpost.workspaces.git import Git
from outpost.workspaces.mirrors import MirrorCache

log = logging.getLogger(__name__)


@dataclass
class Container:
    """Everything a running server holds. Built by `build_container`, started and stopped as a unit."""

    settings: Settings
    store: Store
    keys: KeyService
    dispatches: DispatchService
    runs: RunService
    sandbox: Sandbox
    worker: QueueBackend
    gateway: ModelGateway
    providers: ProviderService
    git_credentials: GitCredentialService
    vault: SecretVault
    objects: ObjectStore
    url_signer: UrlSigner
    agent_statuses: AgentStatusCache
    mirrors: MirrorCache
    artifacts: ArtifactService
    workspaces: WorkspaceService
    disk_guard: DiskGuard
    janitor: RetentionJanitor
    bus: EventBus
    event_streams: EventStreams
    budgets: BudgetGuard
    ledger: Ledger
    storage_accrual: StorageAccrual
    usage: UsageService
    quotas: QuotaBook
    audit: AuditService
    presence: WorkerPresence
    fleet: FleetService
    _lock_file: IO[str] | None = field(default=None, repr=False)

    async def start(self) -> None:
        """Migrate, recover from an earlier crash, start the worker.

        Raises Unavailable when the sandbox backend cannot work here (it says how to fix it), and
        SecretUnreadable when stored secrets were sealed under another master key, AuditKeyMismatch when
        the audit log was written under another one.
        """
        self.settings.data_dir.mkdir(parents=True, exist_ok=True)
        self.check_sandbox()
        try:
            await upgrade_to_head(self.store, job_queue=self.settings.worker.queue == "procrastinate")
            await self.bus.start()
            await self.worker.open()
            async with self.store.read() as conn:
                await self.vault.check_key(conn)
            await self.audit.check_key()
            await self.audit.seal_head()  # once, for a database from before heads were sealed
            self.storage_accrual.start()  # safe on several servers at once: tenants are locked
            if self.settings.worker.enabled:
                self._lock_file = lock_data_dir(self.settings.data_dir)
                await self._recover()
                await self.presence.start()  # registered before it takes work: claims name it
                self.worker.start()
                self.janitor.start()  # one sweeper per data dir: it runs where the worker does
        except BaseException:
            await self.stop()  # a start that fails leaves no connection or lock behind
            raise

    def check_sandbox(self) -> None:
        """Raises Unavailable, naming every problem, when the sandbox backend cannot run dispatches here."""
        problems = self.sandbox.problems() if self.settings.worker.enabled else []
        if problems:
            escape = (
                " (on a machine that cannot run it, OUTPOST_SANDBOX__BACKEND=process runs dispatches"
                " unconfined: insecure)"
                if self.sandbox.isolated
                else ""
            )
            raise Unavailable(
                f"the {self.sandbox.name} sandbox cannot run here: {'; '.join(problems)}{escape}"
            )

    async def end_streams(self) -> None:
        """End every open event stream (the server is stopping; clients resume from another one)."""
        await self.bus.close()

    async def stop(self) -> None:
        await self.end_streams()
        await self.janitor.stop()
        await self.storage_accrual.stop()
        await self.worker.stop()
        await self.sandbox.close()
        await self.presence.stop()
        await self.budgets.close()  # the runs' last costs, before the store closes
        await self.quotas.flush()  # the quotas the runs met, likewise
        await self.gateway.close()
        await self.mirrors.close()
        await self.objects.close()
        await self.store.dispose()
        if self._lock_file is not None:
            self._lock_file.close()

    async def _recover(self) -> None:
        killed = await self.sandbox.reap_leftovers()
        queued_again = failed = 0
        # Fleet workers share the database: they take back what a lost worker held (`FleetRuns`).
        if self.settings.worker.queue == "rows":
            queued_again, failed = await self.runs.reconcile_lost()
            await retire_workers(self.store)  # the workers of earlier starts hold nothing now
        if killed or queued_again or failed:
            log.warning(
                "recovered from an unclean stop: killed %d leftover processes, queued %d dispatches again, "
                "failed %d with worker_lost", killed, queued_again, failed,
            )  # fmt: skip


def build_container(settings: Settings) -> Container:
    store = Store(settings.resolved_database_url)
    bus = build_event_bus(settings.events, store.url, store.dialect)
    sandbox = build_sandbox(settings)
    agents = default_registry(settings.agents.install_dir.resolve())
    ledger = Ledger(build_price_table(default_catalog(), settings.ledger), LedgerMetrics())
    quotas = QuotaBook(store)
    server_upstreams = upstreams_from_settings(settings.providers)
    server_keys = [name for name, upstream in server_upstreams.items() if upstream.api_key is not None]
    admission = Admission(default_catalog(), server_keys)
    runs = RunService(store, settings.worker.max_attempts, bus, ledger, admission)
    gateway = ModelGateway(GatewayTokens(), settings.gateway)
    remember_secrets_in(settings)  # no log line may print a key from the settings
    keyring = build_keyring(settings)
    vault = SecretVault(keyring)
    audit_log = AuditLog.from_master_keys(keyring.derive_all(AUDIT_KEY_PURPOSE))
    audit = AuditService(store, audit_log, settings.retention.audit_days)
    objects = build_object_store(settings.storage, settings.data_dir)
    url_signer = build_url_signer(settings.storage, *url_signing_keys(keyring))
    providers = ProviderService(store, vault, server_upstreams, audit_log)
    limits = settings.limits
    budgets = BudgetGuard(
        store, limits.spend_refresh_ms / 1000, output_tokens_cap=limits.call_output_tokens_cap,
        reservation_s=limits.call_reservation_s,
    )  # fmt: skip
    runtime = AgentRuntime(
        gateway=gateway, providers=providers, catalog=default_catalog(),
        install_dir=settings.agents.install_dir.resolve(), max_turns=settings.agents.max_turns,
        budgets=budgets, quotas=quotas,
    )  # fmt: skip
    git_credentials = GitCredentialService(store, vault, audit_log)
    guard = DiskGuard(settings.data_dir, settings.retention)
    git = Git(settings.git, settings.data_dir.resolve() / "git-home")
    mirrors = MirrorCache(settings.data_dir.resolve() / "mirrors", git)
    persistent = PersistentStore(settings.data_dir.resolve() / "persistent", git)
    workspaces = WorkspaceService(store, persistent, settings.workspaces, audit_log)
    places = WorkspacePlaces(
        persistent=workspaces.persistent, sizes=workspaces,
        default_disk_bytes=settings.sandbox.disk_mb * 2**20, space=guard,
    )  # fmt: skip
    output_limits = OutputLimits.from_settings(settings.retention)
    executor = DispatchExecutor(
        runs=runs, sandbox=sandbox, agents=agents, runtime=runtime,
        workspaces=RunWorkspaces(git, mirrors, git_credentials, places),
        results=RunResults(store, objects, git, settings.retention.artifact_days, guard, output_limits),
        limits=settings.limits, flush_s=settings.worker.log_flush_ms / 1000,
        compute_sample_s=settings.ledger.compute_sample_s,
    )  # fmt: skip
    offered = advertised_agents(settings, agents)
    presence = WorkerPresence(
        store, slots=settings.worker.slots, agents=offered, heartbeat_s=settings.worker.heartbeat_s,
        busy=lambda: worker.busy,
    )  # fmt: skip
    # A dispatch held back by its tenant's cap is looked at again every heartbeat (one claim each).
    fleet_runs = FleetRuns(
        store, admission, settings.worker.max_attempts, bus, ledger, settings.worker.heartbeat_s
    )
    worker = build_queue(settings, store, runs, fleet_runs, executor, presence, offered)
    dispatches = DispatchService(
        store,
        worker,
        agents,
        settings.limits,
        settings.worker.abort_grace_s,
        settings.sandbox,
        settings.git,
        settings.workspaces.quota_bytes,
        bus,
        ledger,
        budgets=budgets,
        audit=audit_log,
    )
    keys = KeyService(store, settings.key_cache_ttl_s, audit_log, worker)
    return Container(
        settings=settings, store=store, keys=keys, dispatches=dispatches, runs=runs, sandbox=sandbox,
        worker=worker, gateway=gateway, providers=providers, vault=vault, objects=objects,
        url_signer=url_signer, git_credentials=git_credentials, mirrors=mirrors,
        artifacts=ArtifactService(store, dispatches, url_signer), workspaces=workspaces,
        agent_statuses=AgentStatusCache(settings.agents.install_dir, settings.providers),
        disk_guard=guard, janitor=build_janitor(settings, store, objects, guard, audit), bus=bus,
        event_streams=EventStreams(store, bus, dispatches, settings.events), budgets=budgets, ledger=ledger,
        storage_accrual=StorageAccrual(
            store, ledger.prices, ledger.metrics, settings.ledger.storage_accrual_interval_s
        ),
        usage=UsageService(store, ledger.prices.version),
        quotas=quotas, audit=audit,
        fleet=FleetService(store, settings.fleet, stale_s=settings.worker.stale_s),
        presence=presence,
    )  # fmt: skip


def build_janitor(
    settings: Settings, store: Store, objects: ObjectStore, guard: DiskGuard, audit: AuditService
) -> RetentionJanitor:
    on_disk = settings.storage.backend == "filesystem"  # its objects live under the data dir
    return RetentionJanitor(
        store, objects, guard, settings.retention, settings.data_dir, objects_in_data_dir=on_disk, audit=audit
    )


def build_keyring(settings: Settings, *, create: bool = True) -> MasterKeyring:
    """The current and previous master keys. Raises MasterKeyError when one is malformed, or the key file
    is readable by others or cannot be read. The first start creates the key file, in the data dir by
    default; with `create` false (offline commands) a missing key is an error instead."""
    if create:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
    secrets = settings.secrets
    return load_keyring(
        secrets.master_key, secrets.previous_master_keys, settings.resolved_master_key_file, create=create
    )


def url_signing_keys(keyring: MasterKeyring) -> tuple[bytes, list[bytes]]:
    """The key that signs download links, and those that still verify links signed before a master key
    rotation (they expire within the link lifetime anyway)."""
    purpose = b"outpost artifact urls v1"
    return keyring.derive(purpose), keyring.derive_all(purpose)[1:]


def build_sandbox(settings: Settings) -> Sandbox:
    if settings.sandbox.backend == "process":
        log.warning("sandbox backend 'process' is INSECURE: dispatch commands run unconfined on this host")
        return ProcessSandbox(settings.data_dir, settings.limits.max_line_bytes)
    if settings.sandbox.backend == "bwrap":
        from outpost.sandbox.bwrap import BwrapSandbox  # noqa: PLC0415 - backends load only when chosen
        from outpost.sandbox.bwrap_fs import DiskLimits  # noqa: PLC0415
        from outpost.sandbox.cgroups import Limits  # noqa: PLC0415

        box = settings.sandbox
        limits = Limits(memory_bytes=box.memory_mb * 2**20, pids_max=box.pids_max, cpu_cores=box.cpu_cores)
        return BwrapSandbox(
            settings.data_dir, settings.limits.max_line_bytes, box.uid_first, box.uid_count, limits,
            egress_allow=tuple(box.egress_allow), run_dir=box.run_dir,
            disk=DiskLimits(size_bytes=box.disk_mb * 2**20, inodes=box.disk_inodes),
            parked_launchers=box.parked_launchers,
        )  # fmt: skip
    raise ValueError(f"unknown sandbox backend {settings.sandbox.backend!r}")


def lock_data_dir(data_dir: Path) -> IO[str]:
    """Hold an exclusive lock on the data dir for as long as the returned file stays open.

    Two embedded servers on one data dir would each reconcile the other's runs as lost.
    """
    data_dir.mkdir(parents=True, exist_ok=True)
    lock_file = (data_dir / "server.lock").open("a+")
    try:
        fcntl.flock(lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock_file.close()
        raise Unavailable(
            f"another Outpost server is using the data dir {data_dir}; stop it or set OUTPOST_DATA_DIR"
        ) from None
    lock_file.truncate(0)
    lock_file.write(str(os.getpid()))
    lock_file.flush()
    return lock_file
