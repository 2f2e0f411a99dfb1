"""The limits a dispatch runs with: what it asked for, bounded by its tenant's caps and the server's.

Pure: no I/O. Three levels, each bounded by the one above it:

    server      settings.sandbox (memory_mb, pids_max, cpu_cores, disk_mb) and settings.limits.max_timeout_s
    tenant      the tenant's stored caps; a cap only ever lowers the server's (one above it is inert)
    dispatch    `limits` and `timeout_s` of the request; at most the lower of the two caps

A dispatch that leaves a sandbox limit out gets its tenant's cap where that is below the server's (the
server's own value otherwise, applied by the backend); one that leaves `timeout_s` out gets the server's
default, lowered to its tenant's cap.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from outpost.errors import InvalidInput

SANDBOX_LIMITS = ("memory_mb", "pids", "cpu_cores", "disk_mb")
"""The names of the sandbox limits, as a dispatch's `limits` object and a tenant's caps spell them."""
TENANT_CAPS = (*SANDBOX_LIMITS, "timeout_s")
"""Everything a tenant can be capped on."""

_TENANT = "for this tenant"
_SERVER = "on this server"


@dataclass(frozen=True, slots=True)
class ServerLimits:
    """The server's caps: `sandbox` maps each of SANDBOX_LIMITS to its cap (which is also its default)."""

    sandbox: Mapping[str, float]
    max_timeout_s: int
    default_timeout_s: int


@dataclass(frozen=True, slots=True)
class EffectiveLimits:
    """What a dispatch runs with. `sandbox` holds only the limits it asked for or its tenant lowered; the
    others are the backend's (the server's) own."""

    sandbox: dict[str, float]
    timeout_s: int


def resolve_limits(
    server: ServerLimits,
    tenant_caps: Mapping[str, float],
    asked: Mapping[str, float],
    asked_timeout_s: int | None,
) -> EffectiveLimits:
    """The limits a dispatch runs with. Raises InvalidInput naming the first field over its cap
    (`limits.memory_mb`, `timeout_s`, …), and whose cap it is."""
    sandbox: dict[str, float] = {}
    for name, server_cap in server.sandbox.items():
        cap, owner = _lower_cap(server_cap, tenant_caps.get(name))
        value = asked.get(name)
        if value is not None:
            _check_at_most(f"limits.{name}", value, cap, owner)
            sandbox[name] = value
        elif owner == _TENANT:
            sandbox[name] = cap
    cap, owner = _lower_cap(server.max_timeout_s, tenant_caps.get("timeout_s"))
    if asked_timeout_s is not None:
        _check_at_most("timeout_s", asked_timeout_s, cap, owner)
        return EffectiveLimits(sandbox, asked_timeout_s)
    return EffectiveLimits(sandbox, int(min(server.default_timeout_s, cap)))


def _lower_cap(server_cap: float, tenant_cap: float | None) -> tuple[float, str]:
    """The cap in force and whose it is; on a tie the server's, since the tenant's changes nothing."""
    if tenant_cap is not None and tenant_cap < server_cap:
        return tenant_cap, _TENANT
    return server_cap, _SERVER


def _check_at_most(field: str, value: float, cap: float, owner: str) -> None:
    if value > cap:
        raise InvalidInput(f"{field} must be at most {cap} {owner}", field=field)
