"""Each tenant's credentials for git hosts. The worker sends them when it fetches and pushes over
HTTPS; they never enter a sandbox and are never returned by the API.

A credential is the secret `git/<host>/credential`, whose sealed value is JSON holding the username, the
token and when they were set: one version holds all three, so a username is never paired with another
version's token. Setting a host again adds a version and retires the old one, as provider keys do.
"""

from __future__ import annotations

import json
from datetime import datetime

from pydantic import BaseModel, ConfigDict, SecretStr, ValidationError
from sqlalchemy.exc import IntegrityError

from outpost.db.store import Connection, Store
from outpost.db.types import utc_now
from outpost.errors import Conflict, NotFound
from outpost.schemas.git_credentials import HTTPS_PORT, GitCredentialRead, GitCredentialSet
from outpost.secrets.box import SecretUnreadable
from outpost.secrets.vault import SecretVault
from outpost.services.keys import Principal
from outpost.workspaces.git import HttpCredential
from outpost.workspaces.repo_url import RepoUrl

_PREFIX = "git/"
_SUFFIX = "/credential"


def git_credential_secret(host: str) -> str:
    return f"{_PREFIX}{host}{_SUFFIX}"


def _host_of(secret: str) -> str:
    return secret.removeprefix(_PREFIX).removesuffix(_SUFFIX)


def credential_host(url: RepoUrl) -> str:
    """The host a credential for `url` is stored under: its name or address, `:port` unless 443 (so
    `http://host/` needs a credential for `host:80`: a token set for https never goes out in clear)."""
    host = f"[{url.host}]" if ":" in url.host else url.host
    return host if url.port == HTTPS_PORT else f"{host}:{url.port}"


class _SealedCredential(BaseModel):
    """The sealed value of a `git/<host>/credential` secret."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    username: str
    token: SecretStr
    updated_at: datetime

    def sealed_text(self) -> SecretStr:
        # Spelled out: model_dump_json would write the token as `**********`.
        value = {"username": self.username, "token": self.token.get_secret_value()}
        return SecretStr(json.dumps({**value, "updated_at": self.updated_at.isoformat()}))

    def read(self, host: str) -> GitCredentialRead:
        return GitCredentialRead(host=host, username=self.username, updated_at=self.updated_at)


class GitCredentialService:
    def __init__(self, store: Store, vault: SecretVault) -> None:
        self._store = store
        self._vault = vault

    async def list_credentials(self, caller: Principal) -> list[GitCredentialRead]:
        """The tenant's credentials, by host, without their tokens. Raises SecretUnreadable."""
        async with self._store.read() as conn:
            names = await self._vault.live_names(conn, caller.tenant_id, _PREFIX)
            hosts = [_host_of(name) for name in names if name.endswith(_SUFFIX)]
            found = [(host, await self._open(conn, caller.tenant_id, host)) for host in hosts]
        return [sealed.read(host) for host, sealed in found if sealed is not None]

    async def set_credential(self, caller: Principal, host: str, body: GitCredentialSet) -> GitCredentialRead:
        """Store `body` as the tenant's credential for `host` (as `check_host` spells it), replacing
        any earlier one. Raises Conflict when another request sets the same host at the same time."""
        sealed = _SealedCredential(username=body.username, token=body.token, updated_at=utc_now())
        secret = git_credential_secret(host)
        try:
            async with self._store.write() as conn:
                await self._vault.store(
                    conn, caller.tenant_id, secret, sealed.sealed_text(), retire_older=True
                )
        except IntegrityError as exc:
            raise Conflict(f"the git credential for {host} was changed at the same time; try again") from exc
        return sealed.read(host)

    async def delete_credential(self, caller: Principal, host: str) -> None:
        """Raises NotFound when the tenant has no credential for `host`."""
        async with self._store.write() as conn:
            if not await self._vault.retire(conn, caller.tenant_id, git_credential_secret(host)):
                raise NotFound(f"this tenant has no git credential for {host}")

    async def credential_for(self, tenant_id: str, host: str) -> HttpCredential | None:
        """The credential the worker sends to `host` (as `credential_host` spells it) for this tenant;
        None when the tenant set none. Raises SecretUnreadable when it cannot be decrypted."""
        async with self._store.read() as conn:
            sealed = await self._open(conn, tenant_id, host)
        return None if sealed is None else HttpCredential(sealed.username, sealed.token.get_secret_value())

    async def _open(self, conn: Connection, tenant_id: str, host: str) -> _SealedCredential | None:
        current = await self._vault.current(conn, tenant_id, git_credential_secret(host))
        if current is None:
            return None
        try:
            return _SealedCredential.model_validate_json(current[1].get_secret_value())
        except ValidationError:
            # It decrypted, so it was sealed by this server: not tampering, but a value it cannot use.
            raise SecretUnreadable(f"the stored git credential for {host} is malformed") from None
