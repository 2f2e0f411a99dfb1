"""Turning a claimed dispatch into a sandbox launch: model, gateway token, the adapter's command.

The adapter is pure; this is where its inputs are gathered (the model in force, the run's view of its
sandbox, a fresh one-dispatch token) and its command becomes a `SandboxSpec`. The provider key stays in
the gateway's grant, on the host.
"""

from __future__ import annotations

import posixpath
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from outpost.agents.base import AgentAdapter, AgentRun, GatewayAccess
from outpost.agents.catalog import Catalog, ModelChoice, resolve_model
from outpost.db.repositories.dispatches import DispatchRow
from outpost.domain.dispatch import Tier
from outpost.gateway.server import ModelGateway
from outpost.gateway.tokens import Grant
from outpost.gateway.upstreams import UpstreamResolver
from outpost.sandbox.base import EventSink, InboundService, RequestedLimits, Sandbox, SandboxSpec
from outpost.worker.run_meter import RunMeter
from outpost.worker.run_outputs import OUTPUTS_ENV
from outpost.worker.run_report import RunReport
from outpost.workspaces.checkout import OUTPUTS_DIR


@dataclass(frozen=True, slots=True)
class AgentRuntime:
    """What every agent run shares: the gateway, the providers behind it, the catalog, the CLIs."""

    gateway: ModelGateway
    providers: UpstreamResolver
    catalog: Catalog
    install_dir: Path
    max_turns: int


@dataclass(slots=True)
class Launch:
    spec: SandboxSpec
    report: RunReport
    meter: RunMeter | None
    token: str | None

    def revoke(self, runtime: AgentRuntime) -> None:
        if self.token is not None:
            runtime.gateway.tokens.revoke(self.token)


async def prepare_launch(
    runtime: AgentRuntime,
    sandbox: Sandbox,
    adapter: AgentAdapter,
    row: DispatchRow,
    workdir: Path,
    limits: RequestedLimits,
    events: EventSink,
    egress_allow: tuple[str, ...],
    read_only: tuple[Path, ...] = (),
    on_staged: Callable[[], None] | None = None,
) -> Launch:
    """Raises InvalidInput when the dispatch's model is no longer in the catalog, SandboxError when the
    gateway cannot be made reachable, SecretUnreadable when the tenant's provider key cannot be decrypted.
    The caller revokes the token once the run is over."""
    run_id = f"{row.id}.{row.attempt}"
    choice = resolve_model(runtime.catalog, row.agent, Tier(row.tier), row.model)
    services: tuple[InboundService, ...] = (runtime.gateway,) if choice else ()
    view = await sandbox.view(run_id, workdir, services)
    meter = RunMeter(runtime.catalog, choice, events) if choice else None
    token = await _issue_token(runtime, run_id, row.tenant_id, choice, meter)
    gateway = GatewayAccess(view.urls[runtime.gateway.name], token) if token else None
    run = AgentRun(
        task=row.task, model=choice, executable=str(adapter.executable()),
        workdir=view.workdir, home=view.home, gateway=gateway, max_turns=runtime.max_turns, env=row.env,
    )  # fmt: skip
    try:
        command = adapter.build(run)
    except BaseException:
        if token is not None:
            runtime.gateway.tokens.revoke(token)
        raise
    # Set last: neither the dispatch's variables nor an adapter's can point the run elsewhere.
    env = {**command.env, OUTPUTS_ENV: posixpath.join(view.workdir, OUTPUTS_DIR)}
    spec = SandboxSpec(
        run_id=run_id, argv=command.argv, env=env, workdir=workdir, events=events, limits=limits,
        egress_allow=egress_allow, home_files=command.home_files, services=services,
        read_only=(*read_only, *((runtime.install_dir,) if adapter.install is not None else ())),
        on_staged=on_staged,
    )  # fmt: skip
    return Launch(spec, RunReport(adapter.new_parser()), meter, token)


async def _issue_token(
    runtime: AgentRuntime, run_id: str, tenant_id: str, choice: ModelChoice | None, meter: RunMeter | None
) -> str | None:
    if choice is None or meter is None:
        return None
    upstream = await runtime.providers.upstream_for(tenant_id, choice.provider)
    grant = Grant(
        run_id=run_id, tenant_id=tenant_id,
        upstreams={choice.provider: upstream} if upstream is not None else {},
        on_usage=meter.on_usage, on_failure=meter.on_failure,
    )  # fmt: skip
    return runtime.gateway.tokens.issue(grant)
