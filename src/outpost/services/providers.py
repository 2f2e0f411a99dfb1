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

from outpost.db.repositories import tenant_providers as repo
from outpost.db.repositories.tenant_providers import TenantProviderRow
from outpost.db.store import Connection, Store
from outpost.db.types import utc_now
from outpost.errors import Conflict, NotFound, PermissionDenied
from outpost.gateway.upstreams import Upstream
from outpost.schemas.providers import ProviderRead, ProviderUpdate
from outpost.secrets.vault import SecretVault
from outpost.services.keys import Principal


def provider_key_secret(provider: str) -> str:
    return f"provider/{provider}/api_key"


class ProviderService:
    def __init__(self, store: Store, vault: SecretVault, server: Mapping[str, Upstream]) -> None:
        self._store = store
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
                row = await self._apply(conn, caller.tenant_id, name, update)
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
            await self._vault.retire(conn, caller.tenant_id, provider_key_secret(name))

    async def upstream_for(self, tenant_id: str, name: str) -> Upstream | None:
        """The upstream a run of this tenant calls for provider `name`, with the key to send; None when
        the provider is unknown. Raises SecretUnreadable when the tenant's key cannot be decrypted."""
        server = self._server.get(name)
        if server is None:
            return None
        async with self._store.read() as conn:
            row = await repo.get_tenant_provider(conn, tenant_id, name)
            if row is None:
                return server
            key = await self._vault.current(conn, tenant_id, provider_key_secret(name))
        api_key = key[1] if key else (server.api_key if row.base_url is None else None)
        return replace(server, base_url=row.base_url or server.base_url, api_key=api_key)

    async def _apply(
        self, conn: Connection, tenant_id: str, name: str, update: ProviderUpdate
    ) -> TenantProviderRow | None:
        current = await repo.get_tenant_provider(conn, tenant_id, name)
        secret = provider_key_secret(name)
        if "api_key" in update.model_fields_set:
            if update.api_key is None:
                await self._vault.retire(conn, tenant_id, secret)
            else:
                await self._vault.store(conn, tenant_id, secret, update.api_key, retire_older=True)
        keep_url = current.base_url if current else None
        base_url = update.base_url if "base_url" in update.model_fields_set else keep_url
        if base_url is None and await self._vault.current_version(conn, tenant_id, secret) is None:
            if current is not None:
                await repo.delete_tenant_provider(conn, tenant_id, name)
            return None
        row = TenantProviderRow(tenant_id, name, base_url, utc_now())
        await repo.upsert_tenant_provider(conn, row)
        return row

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
