"""Provider accounts and why a queued dispatch waits: the words the claim, the gateway and the API share.

Pure: no I/O. A provider account is whose key a model call goes out with: the tenant's own (the account
is the tenant's id) or the server's (`server`). A quota recorded against an account holds every run and
every queued dispatch that would call that provider with that key, and no other.
"""

from __future__ import annotations

import math
from datetime import datetime
from enum import StrEnum

SERVER_ACCOUNT = "server"
"""The account of the server's own provider keys (`OUTPOST_PROVIDERS__<NAME>__API_KEY`)."""


class HoldKind(StrEnum):
    """What keeps a queued dispatch from being claimed (the `held` field of its status event)."""

    TENANT_CAP = "tenant_cap"
    QUOTA = "quota"


def provider_account(tenant_id: str, has_own_settings: bool) -> str:
    """The account a tenant's calls to one provider go out with: its own once it set a key or a base URL
    of its own for that provider (the server's key never goes to a tenant's URL), else the server's."""
    return tenant_id if has_own_settings else SERVER_ACCOUNT


def iso_utc(moment: datetime) -> str:
    """`2026-01-02T03:04:05Z`: whole seconds, as people read it in a reason."""
    return moment.replace(microsecond=0).isoformat().replace("+00:00", "Z")


def quota_reason(provider: str, account: str, until: datetime) -> str:
    """Why a dispatch waits for a provider account; the same text for as long as the same quota holds."""
    whose = "the server's key" if account == SERVER_ACCOUNT else "this tenant's own key"
    return f"{provider} quota exhausted until {iso_utc(until)} ({whose})"


def tenant_cap_reason(cap: int) -> str:
    """Why a dispatch waits for one of its tenant's dispatches to end."""
    return f"the tenant runs as many dispatches at once as its max_concurrent_dispatches ({cap}) allows"


def failover_note(provider: str, until: datetime, model: str, fallback_provider: str) -> str:
    return (
        f"{provider} quota exhausted until {iso_utc(until)}: running on {model} ({fallback_provider}) "
        "instead, as the dispatch's failover allows"
    )


def account_failover_note(provider: str, until: datetime) -> str:
    """Why a dispatch runs on the server's key although its tenant has its own (never a key itself)."""
    return (
        f"{provider} quota exhausted until {iso_utc(until)} (this tenant's own key): running on the "
        "server's key instead, as the dispatch's failover allows"
    )


def seconds_until(until: datetime, now: datetime) -> int:
    """Whole seconds from `now` to `until`, rounded up and at least 1 (a `Retry-After` value)."""
    return max(1, math.ceil((until - now).total_seconds()))
