"""Turning a claimed dispatch into a sandbox launch: model, gateway token, the adapter's command.

The adapter is pure; this is where its inputs are gathered (the model in force, the run's view of its
sandbox, a fresh one-dispatch token) and its command becomes a `SandboxSpec`. The provider key stays in
the gateway's grant, on the host.
"""

from __future__ import annotations

import posixpath
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from outpost.agents.base import AgentAdapter, AgentRun, GatewayAccess
from outpost.agents.catalog import Catalog, ModelChoice, resolve_model
from outpost.db.repositories.dispatches import DispatchRow
from outpost.domain.dispatch import Tier
from outpost.domain.quotas import SERVER_ACCOUNT
from outpost.gateway.server import ModelGateway
from outpost.gateway.tokens import Grant
from outpost.gateway.upstreams import Upstream, UpstreamResolver
from outpost.sandbox.base import EventSink, InboundService, RequestedLimits, Sandbox, SandboxSpec
from outpost.schemas.failover import account_taken
from outpost.services.budgets import BudgetGuard
from outpost.services.quotas import QuotaBook
from outpost.worker.run_budget import RunBudget
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
    budgets: BudgetGuard | None = None
    """Checks each model call against the dispatch's and its tenant's budgets; None: no checks."""
    quotas: QuotaBook | None = None
    """Records provider accounts out of quota and holds runs' calls on them; None: no quota awareness."""


@dataclass(slots=True)
class Launch:
    spec: SandboxSpec
    report: RunReport
    meter: RunMeter | None
    token: str | None
    budget: RunBudget | None = None

    def revoke(self, runtime: AgentRuntime) -> None:
        _release(runtime, self.token, self.budget)


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
    The caller calls `Launch.revoke` once the run is over: the token dies, the budget hold stops counting."""
    run_id = f"{row.id}.{row.attempt}"
    choice = resolve_model(runtime.catalog, row.agent, Tier(row.tier), row.model)
    services: tuple[InboundService, ...] = (runtime.gateway,) if choice else ()
    view = await sandbox.view(run_id, workdir, services)
    meter = RunMeter(runtime.catalog, choice, events) if choice else None
    token, budget = await _issue_token(runtime, run_id, row, choice, meter)
    gateway = GatewayAccess(view.urls[runtime.gateway.name], token) if token else None
    run = AgentRun(
        task=row.task, model=choice, executable=str(adapter.executable()),
        workdir=view.workdir, home=view.home, gateway=gateway, max_turns=runtime.max_turns, env=row.env,
    )  # fmt: skip
    try:
        command = adapter.build(run)
    except BaseException:
        _release(runtime, token, budget)
        raise
    # Set last: neither the dispatch's variables nor an adapter's can point the run elsewhere.
    env = {**command.env, OUTPUTS_ENV: posixpath.join(view.workdir, OUTPUTS_DIR)}
    spec = SandboxSpec(
        run_id=run_id, argv=command.argv, env=env, workdir=workdir, events=events, limits=limits,
        egress_allow=egress_allow, home_files=command.home_files, services=services,
        read_only=(*read_only, *((runtime.install_dir,) if adapter.install is not None else ())),
        on_staged=on_staged,
    )  # fmt: skip
    return Launch(spec, RunReport(adapter.new_parser()), meter, token, budget)


async def _issue_token(
    runtime: AgentRuntime, run_id: str, row: DispatchRow, choice: ModelChoice | None, meter: RunMeter | None
) -> tuple[str | None, RunBudget | None]:
    """The run's token, and its budget hold (once made, it counts until `_release`)."""
    if choice is None or meter is None:
        return None, None
    tenant_id = row.tenant_id
    on_server = account_taken(row.failover) == SERVER_ACCOUNT  # the claim failed over to it
    upstream = await runtime.providers.upstream_for(
        tenant_id, choice.provider, run_id=run_id, server_account=on_server
    )
    budget = RunBudget(runtime.budgets, row, meter) if runtime.budgets is not None else None
    grant = Grant(
        run_id=run_id, tenant_id=tenant_id,
        upstreams={choice.provider: upstream} if upstream is not None else {},
        on_usage=budget.on_usage if budget is not None else meter.on_usage, on_failure=meter.on_failure,
        hold=budget.hold if budget is not None else None,
    )  # fmt: skip
    grant = _watching_quotas(runtime, upstream, grant)
    return runtime.gateway.tokens.issue(grant), budget


def _watching_quotas(runtime: AgentRuntime, upstream: Upstream | None, grant: Grant) -> Grant:
    """`grant` reporting its calls' quota failures and successes to the quota book, with a last gate that
    answers calls itself while the upstream's account is out of quota."""
    if runtime.quotas is None or upstream is None:
        return grant
    hooks = runtime.quotas.hooks(upstream.account, grant.on_usage, grant.on_failure)
    return replace(
        grant, on_usage=hooks.on_usage, on_failure=hooks.on_failure, gates=(*grant.gates, hooks.gate)
    )


def _release(runtime: AgentRuntime, token: str | None, budget: RunBudget | None) -> None:
    if token is not None:
        runtime.gateway.tokens.revoke(token)
    if budget is not None:
        budget.close()
