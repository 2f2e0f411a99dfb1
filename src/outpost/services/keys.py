"""Tenants, API keys and request authentication.

A key reads `op_<prefix>_<secret>`: the prefix (12 random characters) identifies the key in listings and
logs; the secret (256 random bits) is stored only as its SHA-256 digest. A slow password hash is not
needed: the secret is random and long, so the digest cannot be searched.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import string
import time
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from sqlalchemy.exc import IntegrityError

from outpost.audit import entries as audit_entries
from outpost.audit.chain import SYSTEM, Origin
from outpost.audit.log import AuditLog
from outpost.db.repositories import tenants as repo
from outpost.db.repositories.tenants import ApiKeyRow, TenantRow
from outpost.db.store import Store
from outpost.db.types import utc_now
from outpost.domain.ids import new_ulid
from outpost.errors import AuthenticationFailed, Conflict, NotFound, PermissionDenied
from outpost.schemas.keys import KeyCreate
from outpost.schemas.tenants import TenantPolicyUpdate
from outpost.worker.queue.base import DispatchQueue

KEY_SCHEME = "op"
_PREFIX_ALPHABET = string.ascii_lowercase + string.digits
_PREFIX_LEN = 12
_CACHE_MAX_ENTRIES = 10_000
INVALID_KEY = "missing or invalid API key: send 'Authorization: Bearer <key>' with a valid, unrevoked key"


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: the key's tenant and whether the key is an admin key."""

    tenant_id: str
    key_id: str
    is_admin: bool
    source_ip: str | None = None
    """The address the request came from (as the server saw it), for the audit log."""

    @property
    def origin(self) -> Origin:
        """The caller as the audit log names it."""
        return Origin(f"key:{self.key_id}", self.source_ip)


@dataclass(frozen=True, slots=True)
class IssuedKey:
    row: ApiKeyRow
    token: str


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _split_token(token: str) -> tuple[str, str] | None:
    parts = token.split("_", 2)
    if len(parts) != 3 or parts[0] != KEY_SCHEME or len(parts[1]) != _PREFIX_LEN or not parts[2]:
        return None
    return parts[1], parts[2]


class KeyService:
    def __init__(
        self, store: Store, cache_ttl_s: float, audit: AuditLog, queue: DispatchQueue | None = None
    ) -> None:
        """`queue`: told when a tenant's cap grows, so that dispatches it held back start at once (offline
        commands have none: those dispatches start at their next recheck)."""
        self._store = store
        self._cache_ttl_s = cache_ttl_s
        self._audit = audit
        self._queue = queue
        # token digest → (principal, key expiry, cached at): spares a database read on every request.
        self._cache: dict[str, tuple[Principal, datetime | None, float]] = {}

    async def create_tenant(
        self, name: str, *, admin: bool, origin: Origin = SYSTEM
    ) -> tuple[TenantRow, IssuedKey]:
        """Create a tenant and its first key. Raises Conflict when the name is taken."""
        tenant = TenantRow(id=new_ulid(), name=name, created_at=utc_now())
        issued = self._new_key(tenant.id, "initial", is_admin=admin, expires_at=None)
        try:
            async with self._store.write() as conn:
                await repo.insert_tenant(conn, tenant)
                await repo.insert_key(conn, issued.row)
                await self._audit.append(conn, audit_entries.tenant_created(tenant, issued.row, origin))
        except IntegrityError as exc:
            raise Conflict(f"a tenant named {name!r} already exists") from exc
        return tenant, issued

    async def get_tenant(self, tenant_id: str) -> TenantRow:
        """A tenant with its policy. Raises NotFound. Callers check that the caller is an admin."""
        async with self._store.read() as conn:
            row = await repo.get_tenant(conn, tenant_id)
        if row is None:
            raise NotFound(f"no tenant {tenant_id!r}")
        return row

    async def get_tenant_named(self, name: str) -> TenantRow:
        """Raises NotFound. For the offline CLI, which names tenants as `tenants create` did."""
        async with self._store.read() as conn:
            row = await repo.get_tenant_by_name(conn, name)
        if row is None:
            raise NotFound(f"no tenant named {name!r}; `outpost tenants create {name}` makes one")
        return row

    async def update_tenant_policy(
        self, tenant_id: str, update: TenantPolicyUpdate, *, origin: Origin = SYSTEM
    ) -> TenantRow:
        """Apply a policy update; queued dispatches see new egress hosts when they start, new caps apply
        to dispatches submitted from now on, a new budget to the next submit and, within
        `OUTPOST_LIMITS__SPEND_REFRESH_MS`, to the next model call of running ones. Raises NotFound.
        Callers check that the caller is an admin."""
        async with self._store.write() as conn:
            row = await repo.get_tenant(conn, tenant_id)
            if row is None:
                raise NotFound(f"no tenant {tenant_id!r}")
            before = row
            row = replace(
                row,
                limits=update.merged_limits(row.limits),
                egress_allow=update.merged_egress_allow(row.egress_allow),
                monthly_budget_micro_usd=update.merged_monthly_budget(row.monthly_budget_micro_usd),
                max_concurrent_dispatches=update.merged_concurrency_cap(row.max_concurrent_dispatches),
            )
            await repo.update_tenant_policy(conn, row)
            await self._audit.append(conn, audit_entries.tenant_policy_changed(before, row, origin))
        freed = _slots_freed(before.max_concurrent_dispatches, row.max_concurrent_dispatches)
        if self._queue is not None and freed != 0:
            await self._queue.release_held(tenant_id, freed)
        return row

    async def create_key(self, caller: Principal, request: KeyCreate) -> IssuedKey:
        """Raises PermissionDenied for admin-only options from a tenant key; NotFound for unknown tenants."""
        if (request.admin or request.tenant_id) and not caller.is_admin:
            raise PermissionDenied("only an admin key can create admin keys or keys of another tenant")
        tenant_id = request.tenant_id or caller.tenant_id
        expires_at = utc_now() + timedelta(seconds=request.expires_in_s) if request.expires_in_s else None
        issued = self._new_key(tenant_id, request.name, is_admin=request.admin, expires_at=expires_at)
        async with self._store.write() as conn:
            if await repo.get_tenant(conn, tenant_id) is None:
                raise NotFound(f"no tenant {tenant_id!r}")
            await repo.insert_key(conn, issued.row)
            await self._audit.append(conn, audit_entries.key_created(issued.row, caller.origin))
        return issued

    async def list_keys(self, caller: Principal) -> list[ApiKeyRow]:
        async with self._store.read() as conn:
            return await repo.list_keys(conn, caller.tenant_id)

    async def revoke_key(self, caller: Principal, key_id: str) -> ApiKeyRow:
        """Revoke one of the caller's tenant's keys (idempotent). Raises NotFound for any other id."""
        async with self._store.write() as conn:
            row = await repo.get_key(conn, caller.tenant_id, key_id)
            if row is None:
                raise NotFound(f"no key {key_id!r}")
            if row.revoked_at is None:
                row = replace(row, revoked_at=utc_now())
                await repo.revoke_key(conn, key_id, row.revoked_at)
                await self._audit.append(conn, audit_entries.key_revoked(row, caller.origin))
        self._cache = {digest: entry for digest, entry in self._cache.items() if entry[0].key_id != key_id}
        return row

    async def is_live(self, principal: Principal) -> bool:
        """Whether the key behind `principal` is still neither revoked nor expired, read from the store
        (a long-lived stream asks now and then: the key may have been revoked on another server)."""
        async with self._store.read() as conn:
            row = await repo.get_key(conn, principal.tenant_id, principal.key_id)
        return row is not None and row.revoked_at is None and not _expired(row.expires_at)

    async def authenticate(self, token: str, source_ip: str | None = None) -> Principal:
        """The principal of a valid key (`token`, empty when the request sent none), with the address the
        request came from. Raises AuthenticationFailed, with one message whatever was wrong; the audit
        log records each failure and why."""
        digest = _digest(token)
        cached = self._cache.get(digest)
        now = time.monotonic()
        if cached and now - cached[2] < self._cache_ttl_s and not _expired(cached[1]):
            return replace(cached[0], source_ip=source_ip) if source_ip else cached[0]
        try:
            principal, expires_at = await self._verify(token)
        except _KeyRefused as refused:
            failure = audit_entries.auth_failed(refused.reason, refused.prefix, source_ip)
            await self._audit.record(self._store, [failure])
            raise AuthenticationFailed(INVALID_KEY) from None
        if len(self._cache) >= _CACHE_MAX_ENTRIES:
            self._cache.clear()
        self._cache[digest] = (principal, expires_at, now)
        return replace(principal, source_ip=source_ip) if source_ip else principal

    async def _verify(self, token: str) -> tuple[Principal, datetime | None]:
        """Raises _KeyRefused saying why."""
        parts = _split_token(token)
        if parts is None:
            raise _KeyRefused("malformed" if token else "missing", None)
        async with self._store.read() as conn:
            row = await repo.find_key_by_prefix(conn, parts[0])
        if row is None:
            raise _KeyRefused("unknown", parts[0])
        if not hmac.compare_digest(row.secret_sha256, _digest(parts[1])):
            raise _KeyRefused("wrong_secret", parts[0])
        if row.revoked_at is not None or _expired(row.expires_at):
            raise _KeyRefused("revoked" if row.revoked_at is not None else "expired", parts[0])
        return Principal(tenant_id=row.tenant_id, key_id=row.id, is_admin=row.is_admin), row.expires_at

    @staticmethod
    def _new_key(tenant_id: str, name: str, *, is_admin: bool, expires_at: datetime | None) -> IssuedKey:
        prefix = "".join(secrets.choice(_PREFIX_ALPHABET) for _ in range(_PREFIX_LEN))
        secret = secrets.token_urlsafe(32)
        row = ApiKeyRow(
            id=new_ulid(),
            tenant_id=tenant_id,
            prefix=prefix,
            secret_sha256=_digest(secret),
            name=name,
            is_admin=is_admin,
            created_at=utc_now(),
            expires_at=expires_at,
            revoked_at=None,
        )
        return IssuedKey(row=row, token=f"{KEY_SCHEME}_{prefix}_{secret}")


class _KeyRefused(Exception):
    """Why a key was refused, for the audit log only: the caller is told the same whatever it was."""

    def __init__(self, reason: str, prefix: str | None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.prefix = prefix


def _expired(expires_at: datetime | None) -> bool:
    return expires_at is not None and expires_at <= utc_now()


def _slots_freed(cap_before: int | None, cap_after: int | None) -> int | None:
    """How many more dispatches a cap change lets the tenant run at once (None: any number)."""
    if cap_before is None:
        return 0  # nothing was held back by a cap
    if cap_after is None:
        return None
    return max(0, cap_after - cap_before)
