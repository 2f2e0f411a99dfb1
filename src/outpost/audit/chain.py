"""How an audit row is encoded and sealed, and what links it to the row before it.

A row's `hash` is HMAC-SHA256, under a key derived from the master key for this purpose alone, of the
row's canonical encoding: the previous row's hash, its seq, time, tenant, actor, action, target, source
address and detail. Whoever can write the database but lacks the master key can neither make a row that
verifies nor re-link the rows after one they changed or removed.

The encoding (`encode_row`) is the fields separated by U+001F and followed by their lengths, led by a
format tag. The detail in it is a JSON text (`json.dumps` with its default separators, ASCII only)
whose object keys come in the order PostgreSQL's jsonb keeps them: shorter keys first, then by their
bytes. That is byte for byte how SQLite stores the detail of a row written here, and, for ASCII details
without exponents, how PostgreSQL prints it back (`detail::text`): a verifier MACs the stored text as it
is, and re-encodes only the rare row that does not match that way. Times are UTC with microseconds,
`YYYY-MM-DD HH:MM:SS.ffffff`: how SQLite stores them, and what verification asks PostgreSQL for.

Values are made storable before they are sealed, so that what the database gives back encodes the same:
NUL characters and unpaired surrogates (PostgreSQL refuses both) are replaced, strings are cut to their
column's width, and a float with an integral value is written as an integer (PostgreSQL's jsonb would give
`1e+20` back as `100000000000000000000`).

The head (the chain's last seq and hash) is sealed too, under the same key: its MAC (`ChainKey.head_mac`)
covers another encoding (`encode_head`), led by its own tag, so a head's MAC is never a row's and a row's
never a head's. Without the key, the head cannot be moved back to match rows cut off the end.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

GENESIS_HASH = "0" * 64
"""The `prev_hash` of the first row: nothing comes before it."""
KEY_PURPOSE = b"outpost audit log v1"
"""What the chain's key is derived from the master key for (HKDF info): no other use shares it."""
_FORMAT = "outpost.audit.v1"
_HEAD_FORMAT = "outpost.audit.head.v1"
_TIME_TEXT_LEN = 26
_WIDTHS = {"tenant_id": 26, "actor": 64, "action": 40, "target": 255, "source_ip": 64}


@dataclass(frozen=True, slots=True)
class Origin:
    """Who did something, and from which address."""

    actor: str | None
    """`key:<id>` for an API key, `prefix:op_<prefix>` for a key that failed to authenticate, `worker`,
    `retention`, `cli:<user>` for the offline admin commands, `system` otherwise."""
    source_ip: str | None = None


SYSTEM = Origin("system")
WORKER = Origin("worker")
RETENTION = Origin("retention")


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """What an action records. `detail` holds JSON values and never a secret's value."""

    action: str
    tenant_id: str | None
    origin: Origin
    target: str | None = None
    detail: Mapping[str, object] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class AuditRecord:
    """A row of the audit log."""

    seq: int
    created_at: datetime
    tenant_id: str | None
    actor: str | None
    action: str
    target: str | None
    detail: dict[str, Any]
    source_ip: str | None
    prev_hash: str
    hash: str


@dataclass(frozen=True, slots=True)
class AuditHead:
    """The chain's last link: its seq and hash (seq 0 and `GENESIS_HASH` before any row), and the head's
    MAC over both (None until the head is first sealed)."""

    seq: int
    hash: str
    mac: str | None


class ChainKey:
    """The chain's MAC key (derived from the master key with `KEY_PURPOSE`).

    HMAC-SHA256 (RFC 2104) with its two padded-key hash states computed once: each MAC copies them,
    which costs half of what an `hmac.HMAC` copy does (verification MACs a million rows in seconds). A
    unit test holds it to `hmac.new`.
    """

    def __init__(self, key: bytes) -> None:
        block = hashlib.sha256().block_size
        padded = (hashlib.sha256(key).digest() if len(key) > block else key).ljust(block, b"\0")
        self._inner = hashlib.sha256(bytes(byte ^ 0x36 for byte in padded))
        self._outer = hashlib.sha256(bytes(byte ^ 0x5C for byte in padded))

    def mac(
        self,
        prev_hash: str,
        seq: int,
        time_text: str,
        tenant_id: str | None,
        actor: str | None,
        action: str,
        target: str | None,
        source_ip: str | None,
        detail_text: str,
    ) -> str:
        """The hex MAC of one row's canonical encoding (`time_text` as `time_text()` writes it,
        `detail_text` as `detail_json()` does). Raises TypeError when a value is not text (a column
        changed in the database to hold something else)."""
        return self._hex_mac(
            encode_row(prev_hash, seq, time_text, tenant_id, actor, action, target, source_ip, detail_text)
        )

    def head_mac(self, seq: int, head_hash: str) -> str:
        """The hex MAC of a head at `seq` whose last row's hash is `head_hash` (see `encode_head`)."""
        return self._hex_mac(encode_head(seq, head_hash))

    def _hex_mac(self, message: bytes) -> str:
        inner = self._inner.copy()
        inner.update(message)
        outer = self._outer.copy()
        outer.update(inner.digest())
        return outer.hexdigest()

    def seals(self, head: AuditHead) -> bool:
        """Whether `head`'s MAC is the one this key makes for its seq and hash."""
        if head.mac is None:
            return False
        # As bytes: compare_digest refuses text that is not ASCII, which an edited column may hold.
        return hmac.compare_digest(head.mac.encode(), self.head_mac(head.seq, head.hash).encode())


def encode_row(
    prev_hash: str,
    seq: int,
    time_text: str,
    tenant_id: str | None,
    actor: str | None,
    action: str,
    target: str | None,
    source_ip: str | None,
    detail_text: str,
) -> bytes:
    """A row's canonical encoding: the format tag, the fields (None as empty) separated by U+001F, then
    every field's length (-1 for None). The lengths alone decide where each field ends, so no two rows
    encode alike whatever their text holds. Raises TypeError when a value is not text."""
    number = str(seq)
    return (
        f"{_FORMAT}\x1e{prev_hash}\x1f{number}\x1f{time_text}\x1f{tenant_id or ''}\x1f{actor or ''}"
        f"\x1f{action}\x1f{target or ''}\x1f{source_ip or ''}\x1f{detail_text}"
        f"\x1e{len(prev_hash)},{len(number)},{len(time_text)},{-1 if tenant_id is None else len(tenant_id)},"
        f"{-1 if actor is None else len(actor)},{len(action)},{-1 if target is None else len(target)},"
        f"{-1 if source_ip is None else len(source_ip)},{len(detail_text)}"
    ).encode("utf-8", "surrogatepass")


def encode_head(seq: int, head_hash: str) -> bytes:
    """A head's encoding: its own format tag (a row's encoding starts with another, so no head encodes
    as a row does), the seq and the hash separated by U+001F, then their lengths."""
    number = str(seq)
    return f"{_HEAD_FORMAT}\x1e{number}\x1f{head_hash}\x1e{len(number)},{len(head_hash)}".encode()


def seal(key: ChainKey, entry: AuditEntry, *, seq: int, prev_hash: str, created_at: datetime) -> AuditRecord:
    """The row `entry` becomes at `seq`, after the row whose hash is `prev_hash`. Raises TypeError or
    ValueError when the detail holds something that is not JSON (a bug, never input)."""
    created = created_at.astimezone(UTC)
    tenant_id, actor, action, target, source_ip = (
        _column(entry.tenant_id, "tenant_id"), _column(entry.origin.actor, "actor"),
        _column(entry.action, "action") or "", _column(entry.target, "target"),
        _column(entry.origin.source_ip, "source_ip"),
    )  # fmt: skip
    detail_text = detail_json(entry.detail)
    digest = key.mac(
        prev_hash, seq, time_text(created), tenant_id, actor, action, target, source_ip, detail_text
    )
    # Parsed back from the sorted text: stored with SQLAlchemy's json.dumps, it is that text again.
    detail = json.loads(detail_text)
    return AuditRecord(seq, created, tenant_id, actor, action, target, detail, source_ip, prev_hash, digest)


def mac_of(key: ChainKey, record: Sequence[Any]) -> str:
    """The MAC a stored row should carry, from its columns as the database gives them back (see
    `RAW_COLUMNS`), whatever their representation: time as text or datetime, detail as text or parsed."""
    seq, created, tenant_id, actor, action, target, source_ip, detail, prev_hash, _hash = record
    detail_text = canonical_detail(json.loads(detail) if isinstance(detail, str) else detail)
    return key.mac(
        prev_hash, seq, stored_time_text(created), tenant_id, actor, action, target, source_ip, detail_text
    )


RAW_COLUMNS = (
    "seq", "created_at", "tenant_id", "actor", "action", "target", "source_ip", "detail", "prev_hash", "hash",
)  # fmt: skip
"""The order of columns in the raw rows verification reads."""


def time_text(value: datetime) -> str:
    """A time as the chain encodes it: UTC, `YYYY-MM-DD HH:MM:SS.ffffff`."""
    return value.astimezone(UTC).replace(tzinfo=None).isoformat(sep=" ", timespec="microseconds")


def stored_time_text(value: object) -> str:
    """`time_text` of a time read back: a datetime (naive ones are UTC), or SQLite's text of one. Raises
    ValueError for text that is not a time."""
    if isinstance(value, datetime):
        return time_text(value if value.tzinfo else value.replace(tzinfo=UTC))
    if isinstance(value, str):
        if len(value) == _TIME_TEXT_LEN and value[10] == " ":
            return value
        return stored_time_text(datetime.fromisoformat(value))
    raise ValueError(f"not a time: {value!r}")


def detail_json(detail: Mapping[str, object]) -> str:
    """The canonical text of a detail about to be sealed, made storable first (see the module docstring).
    Raises TypeError for values that are not JSON, ValueError for NaN or infinities."""
    return canonical_detail(_storable(detail))


def canonical_detail(value: object) -> str:
    """The canonical text of a detail as the database gives it back (parsed). Raises TypeError or
    ValueError for values JSON cannot hold."""
    return json.dumps(_in_key_order(value), allow_nan=False)


def _in_key_order(value: object) -> object:
    """`value` with every object's keys in jsonb's order: shorter first, then by their bytes."""
    if isinstance(value, dict):
        ordered = sorted(value.items(), key=lambda item: (len(item[0].encode()), item[0].encode()))
        return {name: _in_key_order(item) for name, item in ordered}
    if isinstance(value, list):
        return [_in_key_order(item) for item in value]
    return value


def _storable(value: object) -> object:
    if value is None or isinstance(value, bool | int):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError("the audit log records finite numbers only")
        return int(value) if value.is_integer() else value
    if isinstance(value, str):
        return _clean(value)
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat()
    if isinstance(value, Mapping):
        if not all(isinstance(name, str) for name in value):
            raise TypeError("audit detail keys must be strings")
        return {_clean(name): _storable(item) for name, item in value.items()}
    if isinstance(value, list | tuple):
        return [_storable(item) for item in value]
    raise TypeError(f"the audit log cannot record a {type(value).__name__}")


def _clean(text: str) -> str:
    return text.replace("\x00", "\ufffd").encode("utf-8", "replace").decode("utf-8")


def _column(value: str | None, name: str) -> str | None:
    return None if value is None else _clean(value)[: _WIDTHS[name]]
