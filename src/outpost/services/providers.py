"""Model providers as each tenant sees them: the server's upstreams, overridden by the tenant's own key
and (set by an admin) base URL.

The server's key is only ever sent to the server's base URL: a tenant whose calls go to another URL
sends its own key there, or none.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Literal

from sqlalchemy.exc import IntegrityError

from outpost.audit import entries as audit_entries
from outpost.audit.chain import WORKER, AuditEntry, Origin
from outpost.audit.log import AuditLog
from outpost.db.repositories import tenant_providers as repo
from outpost.db.repositories.tenant_providers import TenantProviderRow
from outpost.db.store import Connection, Store
from outpost.db.types import utc_now
from outpost.domain.quotas import provider_account
from outpost.errors import Conflict, NotFound, PermissionDenied
from outpost.gateway.upstreams import Upstream
from outpost.schemas.providers import ProviderRead, ProviderUpdate
from outpost.secrets.vault import SecretVault, SecretVersion
from outpost.services.keys import Principal


def provider_key_secret(provider: str) -> str:
    return f"provider/{provider}/api_key"


class ProviderService:
    def __init__(
        self, store: Store, vault: SecretVault, server: Mapping[str, Upstream], audit: AuditLog
    ) -> None:
        self._store = store
        self._audit = audit
        self._vault = vault
        self._server = server

    async def list_providers(self, caller: Principal) -> list[ProviderRead]:
        async with self._store.read() as conn:
            own = {row.provider: row for row in await repo.list_tenant_providers(conn, caller.tenant_id)}
            return [await self._read(conn, caller.tenant_id, name, own.get(name)) for name in self._server]

    async def get_provider(self, caller: Principal, name: str) -> ProviderRead:
        self._known(name)
        async with self._store.read() as conn:
            row = await repo.get_tenant_provider(conn, caller.tenant_id, name)
            return await self._read(conn, caller.tenant_id, name, row)

    async def update_provider(self, caller: Principal, name: str, update: ProviderUpdate) -> ProviderRead:
        """Raises NotFound for an unknown provider, PermissionDenied when a tenant key sets base_url."""
        self._known(name)
        if "base_url" in update.model_fields_set and not caller.is_admin:
            raise PermissionDenied("only an admin key can change where a tenant's model calls go")
        try:
            async with self._store.write() as conn:
                row, audited = await self._apply(conn, caller, name, update)
                await self._audit.append(conn, *audited)
                return await self._read(conn, caller.tenant_id, name, row)
        except IntegrityError as exc:
            raise Conflict(f"provider {name!r} was changed at the same time; try again") from exc

    async def reset_provider(self, caller: Principal, name: str) -> None:
        """Drop the tenant's own key and base URL. Raises NotFound when it has neither; PermissionDenied
        when a tenant key would drop an admin-set base URL."""
        self._known(name)
        async with self._store.write() as conn:
            row = await repo.get_tenant_provider(conn, caller.tenant_id, name)
            if row is None:
                raise NotFound(f"this tenant has no settings of its own for provider {name!r}")
            if row.base_url is not None and not caller.is_admin:
                raise PermissionDenied("only an admin key can remove an admin-set base URL")
            await repo.delete_tenant_provider(conn, caller.tenant_id, name)
            secret = provider_key_secret(name)
            if retired := await self._vault.retire(conn, caller.tenant_id, secret):
                retirement = audit_entries.secret_retired(caller.tenant_id, secret, retired, caller.origin)
                await self._audit.append(conn, retirement)

    async def list_key_versions(self, caller: Principal, name: str) -> list[SecretVersion]:
        """The live versions of the tenant's key for provider `name`, newest (in force) first. Raises
        NotFound for an unknown provider."""
        self._known(name)
        async with self._store.read() as conn:
            return await self._vault.versions(conn, caller.tenant_id, provider_key_secret(name))

    async def retire_key_version(self, caller: Principal, name: str, version: int) -> None:
        """Retire one version of the tenant's key: the end of a rotation (an old version), or its undoing
        (the new one; the next older live version is in force again). Retiring the last one brings back
        the server's key, as clearing it does. Raises NotFound when that version is not live."""
        self._known(name)
        async with self._store.write() as conn:
            secret = provider_key_secret(name)
            if not await self._vault.retire_version(conn, caller.tenant_id, secret, version):
                raise NotFound(f"provider {name!r} has no live key version {version} for this tenant")
            row = await repo.get_tenant_provider(conn, caller.tenant_id, name)
            no_key = await self._vault.current_version(conn, caller.tenant_id, secret) is None
            if row is not None and row.base_url is None and no_key:
                await repo.delete_tenant_provider(conn, caller.tenant_id, name)
            retirement = audit_entries.secret_retired(caller.tenant_id, secret, 1, caller.origin, version)
            await self._audit.append(conn, retirement)

    async def upstream_for(
        self, tenant_id: str, name: str, *, run_id: str | None = None, server_account: bool = False
    ) -> Upstream | None:
        """The upstream a run of this tenant calls for provider `name`, with the key to send; None when
        the provider is unknown. Raises SecretUnreadable when the tenant's key cannot be decrypted. A
        tenant key decrypted is audited as read by the worker, for `run_id`. With `server_account` (a
        claim moved the dispatch onto the server's key, `failover.accounts`), the server's upstream as
        it is: its key, to its base URL."""
        server = self._server.get(name)
        if server is None or server_account:
            return server
        async with self._store.read() as conn:
            row = await repo.get_tenant_provider(conn, tenant_id, name)
            if row is None:
                return server
            key = await self._vault.current(conn, tenant_id, provider_key_secret(name))
        if key is not None:
            read = audit_entries.secret_read(tenant_id, provider_key_secret(name), key[0], WORKER, run_id)
            await self._audit.record(self._store, [read])
        api_key = key[1] if key else (server.api_key if row.base_url is None else None)
        account = provider_account(tenant_id, has_own_settings=True)
        return replace(server, base_url=row.base_url or server.base_url, api_key=api_key, account=account)

    async def _apply(
        self, conn: Connection, caller: Principal, name: str, update: ProviderUpdate
    ) -> tuple[TenantProviderRow | None, list[AuditEntry]]:
        """The tenant's settings after `update`, and what to audit (appended last, by the caller)."""
        tenant_id = caller.tenant_id
        current = await repo.get_tenant_provider(conn, tenant_id, name)
        secret = provider_key_secret(name)
        audited = await self._apply_key(conn, tenant_id, secret, update, caller.origin)
        keep_url = current.base_url if current else None
        base_url = update.base_url if "base_url" in update.model_fields_set else keep_url
        if base_url is None and await self._vault.current_version(conn, tenant_id, secret) is None:
            if current is not None:
                await repo.delete_tenant_provider(conn, tenant_id, name)
            return None, audited
        row = TenantProviderRow(tenant_id, name, base_url, utc_now())
        await repo.upsert_tenant_provider(conn, row)
        return row, audited

    async def _apply_key(
        self, conn: Connection, tenant_id: str, secret: str, update: ProviderUpdate, origin: Origin
    ) -> list[AuditEntry]:
        """Store, rotate in or clear the tenant's key as `update` says; returns what to audit."""
        if "api_key" not in update.model_fields_set:
            return []
        if update.api_key is None:
            retired = await self._vault.retire(conn, tenant_id, secret)
            return [audit_entries.secret_retired(tenant_id, secret, retired, origin)] if retired else []
        retire = update.retire_previous
        # A new version beside a live one, both valid until the old is retired: a rotation.
        overlap = not retire and await self._vault.current_version(conn, tenant_id, secret) is not None
        version = await self._vault.store(conn, tenant_id, secret, update.api_key, retire_older=retire)
        written = audit_entries.secret_rotated if overlap else audit_entries.secret_written
        return [written(tenant_id, secret, version, origin)]

    async def _read(
        self, conn: Connection, tenant_id: str, name: str, row: TenantProviderRow | None
    ) -> ProviderRead:
        server = self._server[name]
        version = await self._vault.current_version(conn, tenant_id, provider_key_secret(name))
        own_url = row is not None and row.base_url is not None
        key_source: Literal["tenant", "server"] | None = None
        if version is not None:
            key_source = "tenant"
        elif server.api_key is not None and not own_url:
            key_source = "server"
        return ProviderRead(
            name=name, base_url=row.base_url if row and row.base_url else server.base_url,
            base_url_source="tenant" if own_url else "server", api_key_source=key_source,
            api_key_version=version, updated_at=row.updated_at if row else None,
        )  # fmt: skip

    def _known(self, name: str) -> None:
        if name not in self._server:
            raise NotFound(f"no model provider named {name!r}; known: {', '.join(sorted(self._server))}")
