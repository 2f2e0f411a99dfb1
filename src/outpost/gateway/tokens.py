"""One-dispatch gateway tokens: the only credential a sandboxed run ever holds.

A token is issued when a run starts and revoked when it ends. It is random (256 bits), kept only as its
SHA-256 in memory (the gateway runs in the worker that runs the sandbox, so no other process needs it),
and valid only on the listener of the run it was issued to: a token replayed from another sandbox, or
after its run ended, is refused.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Awaitable, Callable, Mapping
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass

from outpost.gateway.call_bounds import PlannedCall
from outpost.gateway.metering import MeteredCall
from outpost.gateway.upstream_errors import ProviderFailure
from outpost.gateway.upstreams import Upstream

TOKEN_PREFIX = "opgw_"  # noqa: S105 - a marker that makes tokens easy to find in leak checks, not a secret


@dataclass(frozen=True, slots=True)
class CallRefusal:
    """Why the gateway answers a call itself instead of forwarding it (a budget spent, a provider account
    out of quota): the status the run's CLI gets, in its provider's error format, and when to retry."""

    status: int
    message: str
    retry_after_s: int | None = None


CallGate = Callable[[str], Awaitable[CallRefusal | None]]
"""Asked with the provider's name before each call is forwarded; a refusal stops the call. Must be quick:
every model call of the run waits for it."""

CallHold = Callable[[str, PlannedCall], AbstractAsyncContextManager[CallRefusal | None]]
"""Entered with the provider's name and the call's plan after the gates pass: gives a refusal, or holds
what the call may cost while it is forwarded and metered (its usage is reported before the hold ends).
May wait while other calls in flight could use up what is left of a budget."""


@dataclass(frozen=True, slots=True)
class Grant:
    """What a token allows, and where the gateway reports what happened on its calls."""

    run_id: str
    tenant_id: str
    upstreams: Mapping[str, Upstream]
    """The providers the run may call (its model's), with the base URL and key in force for its tenant."""
    on_usage: Callable[[str, MeteredCall], None]
    """`(provider, call)` after each metered model call. Must not block."""
    on_failure: Callable[[str, ProviderFailure], None]
    """`(provider, failure)` when a provider refused or failed a call. Must not block."""
    gates: tuple[CallGate, ...] = ()
    """Checks each call must pass before it is forwarded, in order (see `CallGate`)."""
    hold: CallHold | None = None
    """The run's budget hold, entered for each call that passed the gates (see `CallHold`)."""


class GatewayTokens:
    def __init__(self) -> None:
        self._grants: dict[str, Grant] = {}

    def issue(self, grant: Grant) -> str:
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        self._grants[_digest(token)] = grant
        return token

    def revoke(self, token: str) -> None:
        """Idempotent."""
        self._grants.pop(_digest(token), None)

    def check(self, token: str | None, run_id: str | None) -> Grant | None:
        """The token's grant, if it is live and, when the listener belongs to one run (`run_id`), that
        run's own. A dict lookup by digest: its time does not depend on how much of a guess matched."""
        if not token or not token.startswith(TOKEN_PREFIX) or len(token) > 200:
            return None
        grant = self._grants.get(_digest(token))
        if grant is None or (run_id is not None and grant.run_id != run_id):
            return None
        return grant


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()
