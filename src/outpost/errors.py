"""Outpost's error tree. Every error the project raises on purpose derives from `OutpostError`.

    OutpostError
    ├── InvalidInput            bad input that passed schema validation (422)
    ├── AuthenticationFailed    missing, malformed, unknown, expired or revoked key (401)
    ├── PermissionDenied        authenticated, but not allowed (403)
    │   └── SignatureInvalid    a signed download URL was tampered with or expired (storage.signing)
    ├── NotFound                no such resource for this tenant (404)
    │   └── ObjectNotFound      no object under a key in the object store (storage.base)
    ├── Conflict                the request clashes with current state (409)
    │   └── StaleVersion        an optimistic-lock update lost the race
    ├── PayloadTooLarge         request body over the limit (413)
    ├── BudgetExceeded          the tenant's monthly budget does not cover the request (402)
    ├── RateLimited             too many requests for this key (429)
    ├── Unavailable             a dependency is down or not ready (503)
    │   ├── StoreUnavailable    the database cannot be reached
    │   ├── InsufficientStorage a write would eat into the data dir's free-space reserve (507)
    │   ├── SecretUnreadable    a stored secret does not decrypt under this master key (secrets.box)
    │   ├── MasterKeyError      the master key is missing, malformed or stored unsafely
    │   └── AuditKeyMismatch    the audit log was written under another master key (audit.verify)
    ├── ChainBroken             the audit log does not verify: a row edited, deleted or moved (audit.verify)
    └── SandboxError            a sandbox could not start or be controlled

Errors are mapped to HTTP in `outpost.api.problems` and to CLI exit codes in `outpost.cli.main`,
each in one table. Messages say what went wrong and, where it helps, what to do.
"""

from __future__ import annotations


class OutpostError(Exception):
    """Root of every error Outpost raises on purpose."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class InvalidInput(OutpostError):
    def __init__(self, detail: str, field: str | None = None) -> None:
        super().__init__(detail)
        self.field = field


class AuthenticationFailed(OutpostError):
    pass


class PermissionDenied(OutpostError):
    pass


class NotFound(OutpostError):
    pass


class Conflict(OutpostError):
    pass


class StaleVersion(Conflict):
    pass


class PayloadTooLarge(OutpostError):
    pass


class BudgetExceeded(OutpostError):
    """The tenant's monthly budget is spent, or what remains of it is less than a dispatch's
    `max_cost_usd`. Amounts in micro-USD."""

    def __init__(self, detail: str, remaining_micro_usd: int, budget_micro_usd: int) -> None:
        super().__init__(detail)
        self.remaining_micro_usd = remaining_micro_usd
        self.budget_micro_usd = budget_micro_usd


class RateLimited(OutpostError):
    def __init__(self, detail: str, retry_after_s: float) -> None:
        super().__init__(detail)
        self.retry_after_s = retry_after_s


class Unavailable(OutpostError):
    pass


class StoreUnavailable(Unavailable):
    pass


class InsufficientStorage(Unavailable):
    """Writing would leave less free space on the data dir's file system than the configured reserve."""


class SandboxError(OutpostError):
    pass
