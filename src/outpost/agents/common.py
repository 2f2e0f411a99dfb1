"""What every model-driven adapter does alike: insist on a model and the gateway, and layer its own
environment over the dispatch's."""

from __future__ import annotations

from collections.abc import Mapping

from outpost.agents.base import AgentRun, GatewayAccess
from outpost.agents.catalog import ModelChoice
from outpost.domain.dispatch import AgentName


def model_and_gateway(run: AgentRun, agent: AgentName) -> tuple[ModelChoice, GatewayAccess]:
    """The run's model and gateway. Raises ValueError when either is missing: the worker resolves both
    before it builds a command, so a gap here is a bug, not bad input."""
    if run.model is None:
        raise ValueError(f"a {agent} run needs a model")
    if run.gateway is None:
        raise ValueError(f"a {agent} run needs the model gateway")
    return run.model, run.gateway


def command_env(run: AgentRun, own: Mapping[str, str]) -> dict[str, str]:
    """The dispatch's variables with the adapter's own on top, so that a dispatch can never replace the
    gateway token, a base URL or an offline switch."""
    return {**run.env, **own}
