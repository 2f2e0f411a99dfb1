"""What each audited action records: one builder per action, so every row of a kind looks the same.

Actions: `auth.failed`, `tenant.create`, `tenant.policy`, `key.create`, `key.revoke`, `dispatch.create`,
`dispatch.cancel`, `workspace.create`, `workspace.delete`, `secret.write`, `secret.rotate`,
`secret.retire`, `secret.read`, `audit.pruned`. Secrets are named (`provider/openai/api_key`,
`git/github.com/credential`) with their version, never shown.
"""

from __future__ import annotations

import getpass
from dataclasses import fields
from datetime import datetime

from outpost.audit.chain import RETENTION, AuditEntry, Origin
from outpost.audit.verify import PRUNED
from outpost.db.repositories.dispatches import DispatchRow
from outpost.db.repositories.tenants import ApiKeyRow, TenantRow
from outpost.db.repositories.workspaces import WorkspaceRow

_NOT_POLICY = frozenset({"id", "name", "created_at"})
KEY_SCHEME = "op"  # as keys are written: `op_<prefix>_<secret>`


def cli_origin() -> Origin:
    """The offline admin commands, run by the local user named (when the system can say who)."""
    try:
        return Origin(f"cli:{getpass.getuser()}")
    except (OSError, KeyError):  # no login name and no passwd entry (a bare container)
        return Origin("cli")


def auth_failed(reason: str, prefix: str | None, source_ip: str | None) -> AuditEntry:
    """A request refused for its key: `missing`, `malformed`, `unknown`, `wrong_secret`, `revoked` or
    `expired` (the response says none of this). No tenant: the caller is not known to be anyone."""
    actor = f"prefix:{KEY_SCHEME}_{prefix}" if prefix else None
    return AuditEntry("auth.failed", None, Origin(actor, source_ip), detail={"reason": reason})


def tenant_created(tenant: TenantRow, first_key: ApiKeyRow, origin: Origin) -> AuditEntry:
    key = first_key
    detail = {"name": tenant.name, "key": key.id, "prefix": _shown(key), "admin": key.is_admin}
    return AuditEntry("tenant.create", tenant.id, origin, tenant.id, detail)


def tenant_policy_changed(before: TenantRow, after: TenantRow, origin: Origin) -> AuditEntry:
    """Every policy field (caps, egress hosts, budget, concurrency) before and after."""
    return AuditEntry(
        "tenant.policy", after.id, origin, after.id, {"before": _policy(before), "after": _policy(after)}
    )


def key_created(key: ApiKeyRow, origin: Origin) -> AuditEntry:
    detail = {"prefix": _shown(key), "name": key.name, "admin": key.is_admin, "expires_at": key.expires_at}
    return AuditEntry("key.create", key.tenant_id, origin, key.id, detail)


def key_revoked(key: ApiKeyRow, origin: Origin) -> AuditEntry:
    return AuditEntry("key.revoke", key.tenant_id, origin, key.id, {"prefix": _shown(key), "name": key.name})


def dispatch_created(row: DispatchRow, origin: Origin) -> AuditEntry:
    detail = {
        "agent": row.agent, "model": row.model, "tier": row.tier, "repo": (row.repo or {}).get("url"),
        "workspace": row.workspace_name, "max_cost_micro_usd": row.max_cost_micro_usd,
    }  # fmt: skip
    return AuditEntry("dispatch.create", row.tenant_id, origin, row.id, detail)


def dispatch_submitted(
    row: DispatchRow, new_workspace: WorkspaceRow | None, origin: Origin
) -> list[AuditEntry]:
    """A submit's rows: the persistent workspace it created, if it did, then the dispatch."""
    created = [workspace_created(new_workspace, row.id, origin)] if new_workspace else []
    return [*created, dispatch_created(row, origin)]


def dispatch_cancelled(row: DispatchRow, origin: Origin) -> AuditEntry:
    """A cancel that found the dispatch active; `status` is how it ended (a run may finish first)."""
    return AuditEntry("dispatch.cancel", row.tenant_id, origin, row.id, {"status": row.status})


def workspace_created(row: WorkspaceRow, dispatch_id: str, origin: Origin) -> AuditEntry:
    detail = {"name": row.name, "repo": row.repo_url, "dispatch": dispatch_id}
    return AuditEntry("workspace.create", row.tenant_id, origin, row.id, detail)


def workspace_deleted(row: WorkspaceRow, origin: Origin) -> AuditEntry:
    detail = {"name": row.name, "size_bytes": row.size_bytes}
    return AuditEntry("workspace.delete", row.tenant_id, origin, row.id, detail)


def secret_written(tenant_id: str, name: str, version: int, origin: Origin) -> AuditEntry:
    return AuditEntry("secret.write", tenant_id, origin, name, {"version": version})


def secret_rotated(tenant_id: str, name: str, version: int, origin: Origin) -> AuditEntry:
    """A new version added beside the old ones, which stay valid until retired."""
    return AuditEntry("secret.rotate", tenant_id, origin, name, {"version": version})


def secret_retired(
    tenant_id: str, name: str, versions: int, origin: Origin, version: int | None = None
) -> AuditEntry:
    """`versions` retired: every live one, or the one `version` named."""
    return AuditEntry("secret.retire", tenant_id, origin, name, {"versions": versions, "version": version})


def secret_read(tenant_id: str, name: str, version: int, origin: Origin, run_id: str | None) -> AuditEntry:
    """A secret decrypted for use (the worker, for a run)."""
    return AuditEntry("secret.read", tenant_id, origin, name, {"version": version, "run": run_id})


def audit_pruned(through_seq: int, last_hash: str, rows: int, before: datetime) -> AuditEntry:
    """Retention deletes rows up to `through_seq`; `hash` (that row's) lets verification start after it."""
    detail = {"through_seq": through_seq, "hash": last_hash, "rows": rows, "before": before}
    return AuditEntry(PRUNED, None, RETENTION, None, detail)


def _shown(key: ApiKeyRow) -> str:
    """A key's prefix as listings show it (`op_<prefix>`)."""
    return f"{KEY_SCHEME}_{key.prefix}"


def _policy(row: TenantRow) -> dict[str, object]:
    # Every field but the tenant's identity: fields added to the policy later are recorded too.
    return {item.name: getattr(row, item.name) for item in fields(row) if item.name not in _NOT_POLICY}
