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

from outpost.audit import entries as audit_entries
from outpost.audit.chain import WORKER
from outpost.audit.log import AuditLog
from outpost.db.store import Connection, Store
from outpost.db.types import utc_now
from outpost.errors import Conflict, NotFound
from outpost.logs import remember_secret
from outpost.schemas.git_credentials import HTTPS_PORT, GitCredentialRead, GitCredentialSet
from outpost.secrets.box import SecretUnreadable
from outpost.secrets.vault import SecretVault, SecretVersion
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


def _remembered(credential: HttpCredential) -> HttpCredential:
    """`credential`, its every spelling git could print now cut from log lines (see `outpost.logs`)."""
    for spelling in credential.secrets:
        remember_secret(spelling)
    return credential


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
    def __init__(self, store: Store, vault: SecretVault, audit: AuditLog) -> None:
        self._store = store
        self._audit = audit
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
        _remembered(HttpCredential(body.username, body.token.get_secret_value()))
        secret = git_credential_secret(host)
        try:
            async with self._store.write() as conn:
                # A new version beside a live one, both valid until the old is retired: a rotation.
                overlap = (
                    not body.retire_previous
                    and await self._vault.current_version(conn, caller.tenant_id, secret) is not None
                )
                version = await self._vault.store(
                    conn, caller.tenant_id, secret, sealed.sealed_text(), retire_older=body.retire_previous
                )
                written = audit_entries.secret_rotated if overlap else audit_entries.secret_written
                await self._audit.append(conn, written(caller.tenant_id, secret, version, caller.origin))
        except IntegrityError as exc:
            raise Conflict(f"the git credential for {host} was changed at the same time; try again") from exc
        return sealed.read(host)

    async def delete_credential(self, caller: Principal, host: str) -> None:
        """Raises NotFound when the tenant has no credential for `host`."""
        secret = git_credential_secret(host)
        async with self._store.write() as conn:
            if not (retired := await self._vault.retire(conn, caller.tenant_id, secret)):
                raise NotFound(f"this tenant has no git credential for {host}")
            retirement = audit_entries.secret_retired(caller.tenant_id, secret, retired, caller.origin)
            await self._audit.append(conn, retirement)

    async def list_versions(self, caller: Principal, host: str) -> list[SecretVersion]:
        """The live versions of the tenant's credential for `host`, newest (in force) first. Raises
        NotFound when there is none."""
        async with self._store.read() as conn:
            found = await self._vault.versions(conn, caller.tenant_id, git_credential_secret(host))
        if not found:
            raise NotFound(f"this tenant has no git credential for {host}")
        return found

    async def retire_version(self, caller: Principal, host: str, version: int) -> None:
        """Retire one version of the credential for `host`: the end of a rotation, or (the newest) its
        undoing. Raises NotFound when that version is not live."""
        async with self._store.write() as conn:
            secret = git_credential_secret(host)
            if not await self._vault.retire_version(conn, caller.tenant_id, secret, version):
                raise NotFound(f"this tenant has no live version {version} of the git credential for {host}")
            retirement = audit_entries.secret_retired(caller.tenant_id, secret, 1, caller.origin, version)
            await self._audit.append(conn, retirement)

    async def credential_for(
        self, tenant_id: str, host: str, *, run_id: str | None = None
    ) -> HttpCredential | None:
        """The credential the worker sends to `host` (as `credential_host` spells it) for this tenant;
        None when the tenant set none. Raises SecretUnreadable when it cannot be decrypted. Audited as
        read by the worker, for `run_id`."""
        secret = git_credential_secret(host)
        async with self._store.read() as conn:
            sealed = await self._open(conn, tenant_id, host)
            version = await self._vault.current_version(conn, tenant_id, secret)
        if sealed is None:
            return None
        read = audit_entries.secret_read(tenant_id, secret, version or 0, WORKER, run_id)
        await self._audit.record(self._store, [read])
        return _remembered(HttpCredential(sealed.username, sealed.token.get_secret_value()))

    async def _open(self, conn: Connection, tenant_id: str, host: str) -> _SealedCredential | None:
        current = await self._vault.current(conn, tenant_id, git_credential_secret(host))
        if current is None:
            return None
        try:
            return _SealedCredential.model_validate_json(current[1].get_secret_value())
        except ValidationError:
            # It decrypted, so it was sealed by this server: not tampering, but a value it cannot use.
            raise SecretUnreadable(f"the stored git credential for {host} is malformed") from None
