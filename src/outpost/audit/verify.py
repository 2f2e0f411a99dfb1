"""Walking the chain: each row in seq order must carry the MAC of its contents and link to the row before.

The walk is one pass over a stream of raw rows (see `chain.RAW_COLUMNS`), in constant memory. Its fast
path MACs the stored text as it is (see `outpost.audit.chain` for why that is the canonical text); a row
whose MAC does not match that way is re-encoded from its parsed values before it is called edited.

Retention deletes the oldest rows, after recording the cut in an `audit.pruned` row (see `Checkpoint`),
so a log may start past seq 1: its first row must then be covered by such a record.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from outpost.audit.chain import GENESIS_HASH, AuditHead, ChainKey, canonical_detail, mac_of, stored_time_text
from outpost.errors import OutpostError, Unavailable

PRUNED = "audit.pruned"
"""The action of the row that records a retention cut."""
REORDER_WINDOW = 20_000
"""How far from its place a row that does not verify is looked for (a reordered row names where it came
from); farther moves are reported as edits."""


class ChainBroken(OutpostError):
    """The audit log does not verify: a row was edited, deleted or reordered, or the head disagrees or
    is not sealed."""

    def __init__(self, seq: int, reason: str) -> None:
        super().__init__(f"the audit log does not verify at seq {seq}: {reason}")
        self.seq = seq
        self.reason = reason


class AuditKeyMismatch(Unavailable):
    """The audit log was written under another master key than the one given."""


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """An `audit.pruned` row: retention deleted the rows up to `through_seq`, the last of which had
    `hash`. The record is itself a row of the chain (at `seq`), so it cannot be forged."""

    seq: int
    through_seq: int
    hash: str


@dataclass(frozen=True, slots=True)
class Start:
    """Where a walk begins: the first seq present and the hash it must link to (None: cannot be known,
    retention stopped part-way), and hashes that rows at given seqs must have (from pruning records)."""

    seq: int
    prev_hash: str | None
    anchors: Mapping[int, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class WalkResult:
    rows: int
    last_seq: int
    last_hash: str


def start_of(first_seq: int, checkpoints: Iterable[Checkpoint]) -> Start:
    """The start of a log whose lowest seq is `first_seq`. Raises ChainBroken when rows before it are
    missing and no pruning record covers them."""
    if first_seq == 1:
        return Start(1, GENESIS_HASH)
    covering = [point for point in checkpoints if first_seq - 1 <= point.through_seq < point.seq]
    if not covering:
        raise ChainBroken(
            1, f"seq 1 to {first_seq - 1} are missing and no pruning record covers them: rows were deleted"
        )
    exact = [point.hash for point in covering if point.through_seq == first_seq - 1]
    anchors = {point.through_seq: point.hash for point in covering if point.through_seq >= first_seq}
    return Start(first_seq, exact[0] if exact else None, anchors)


def checkpoint_of(seq: int, detail: object) -> Checkpoint | None:
    """The checkpoint an `audit.pruned` row's detail records; None when it is malformed (the walk then
    finds that row edited)."""
    if not isinstance(detail, Mapping):
        return None
    through, cut_hash = detail.get("through_seq"), detail.get("hash")
    if isinstance(through, int) and isinstance(cut_hash, str):
        return Checkpoint(seq, through, cut_hash)
    return None


def walk(rows: Iterable[Sequence[Any]], keys: Sequence[ChainKey], start: Start) -> WalkResult:
    """Verify `rows` (raw, in seq order) from `start`, each under one of `keys` (the chain keys of the
    current master key and the previous ones: rows written before a master key rotation carry the old
    key's MACs). Raises ChainBroken at the first row that does not verify, naming it and why."""
    expected_seq, expected_prev, anchors = start.seq, start.prev_hash, start.anchors
    key, count, last_hash = keys[0], 0, start.prev_hash or ""
    mac = key.mac
    for row in rows:
        seq, created, tenant_id, actor, action, target, source_ip, detail, prev_hash, stored = row
        if seq != expected_seq:
            raise _gap(expected_seq, seq)
        # The fast path: stored text is canonical for the rows written here (see the module docstring).
        if type(created) is not str or type(detail) is not str:
            created, detail = _as_text(seq, created, detail)
        try:
            fresh = (
                mac(prev_hash, seq, created, tenant_id, actor, action, target, source_ip, detail) == stored
            )
        except TypeError:  # a column made to hold a number or bytes
            fresh = False
        if not fresh:
            key = _key_of(keys, key, row)  # the row's own key from now on: rotations are rare
            mac = key.mac
        if expected_prev is not None and prev_hash != expected_prev:
            raise ChainBroken(
                seq, f"it does not follow seq {seq - 1} (its prev_hash is not that row's hash): rows "
                "before it were deleted or replaced",
            )  # fmt: skip
        if anchors and anchors.get(seq, stored) != stored:
            raise ChainBroken(seq, "its hash is not the one the pruning record kept for it")
        expected_prev = last_hash = stored
        expected_seq += 1
        count += 1
    return WalkResult(count, expected_seq - 1, last_hash)


def check_head(result: WalkResult, head_seq: int, head_hash: str) -> None:
    """Raises ChainBroken when the walk did not end where the head says the chain ends."""
    if result.last_seq < head_seq:
        raise ChainBroken(
            result.last_seq + 1,
            f"the head is at seq {head_seq} but the last row is seq {result.last_seq}: "
            "rows were deleted from the end",
        )
    if result.last_seq > head_seq:
        raise ChainBroken(
            head_seq + 1,
            f"rows run past the head (seq {head_seq}) to seq {result.last_seq}: the head was edited",
        )
    if result.last_hash != head_hash:
        raise ChainBroken(head_seq, "its hash is not the one the head holds: the head or the row was edited")


def check_head_seal(head: AuditHead, keys: Sequence[ChainKey]) -> None:
    """Raises ChainBroken when no key of `keys` seals the head. Like rows, a head keeps the MAC of the key
    current when it last moved: one sealed before a master key rotation verifies under the previous key."""
    if any(key.seals(head) for key in keys):
        return
    why = (
        "its mac is empty: it was reset, or no server has started since the upgrade that seals heads"
        if head.mac is None
        else "it was edited or moved back (or sealed under a previous master key not given in "
        "OUTPOST_SECRETS__PREVIOUS_MASTER_KEYS)"
    )
    raise ChainBroken(
        head.seq, f"the head at seq {head.seq} is not sealed by the audit key: {why}; rows after seq "
        f"{head.seq} may have been cut off",
    )  # fmt: skip


def verifying_key(keys: Sequence[ChainKey], row: Sequence[Any]) -> ChainKey | None:
    """The key under which a raw row carries the MAC of its contents, re-encoded from its values; None
    when there is none (its link to the row before is not checked)."""
    for key in keys:
        try:
            if mac_of(key, row) == row[9]:
                return key
        except (ValueError, TypeError):  # a time or detail that does not even parse
            return None
    return None


def _key_of(keys: Sequence[ChainKey], tried: ChainKey, row: Sequence[Any]) -> ChainKey:
    """The key the row verifies under. Raises ChainBroken, telling an edit from a move, when none."""
    key = verifying_key([tried, *(other for other in keys if other is not tried)], row)
    if key is not None:
        return key
    seq = row[0]
    moved_from = _written_as(keys, row)
    if moved_from is not None:
        raise ChainBroken(
            seq, f"it holds the row written as seq {moved_from}: rows were reordered or renumbered"
        )
    raise ChainBroken(
        seq, "it was edited: its MAC does not match its contents (or it was sealed under a previous master "
        "key not given in OUTPOST_SECRETS__PREVIOUS_MASTER_KEYS)",
    )  # fmt: skip


def _as_text(seq: int, created: object, detail: object) -> tuple[str, str]:
    """A row's time and detail in the chain's text. Raises ChainBroken for values that are neither (on
    SQLite a column can be made to hold anything)."""
    try:
        return stored_time_text(created), detail if isinstance(detail, str) else canonical_detail(detail)
    except (ValueError, TypeError):
        raise ChainBroken(seq, "it was edited: its time or detail is not one the log writes") from None


def _written_as(keys: Sequence[ChainKey], row: Sequence[Any]) -> int | None:
    """The seq near the row's own under which its contents verify, if any."""
    seq, created, tenant_id, actor, action, target, source_ip, detail, prev_hash, stored = row
    try:
        when = stored_time_text(created)
        detail_text = canonical_detail(json.loads(detail) if isinstance(detail, str) else detail)
    except (ValueError, TypeError):
        return None
    try:
        for key in keys:
            for candidate in range(max(1, seq - REORDER_WINDOW), seq + REORDER_WINDOW + 1):
                mac = key.mac(
                    prev_hash, candidate, when, tenant_id, actor, action, target, source_ip, detail_text
                )
                if candidate != seq and mac == stored:
                    return candidate
    except TypeError:  # a column that is not text: an edit, not a move
        return None
    return None


def _gap(expected_seq: int, seq: int) -> ChainBroken:
    """Rows come in ascending seq order (the primary key), so a seq other than the expected one is past it
    (or, on SQLite, not a number at all)."""
    if not isinstance(seq, int):
        return ChainBroken(
            expected_seq, f"the row after seq {expected_seq - 1} has the seq {seq!r}: it was edited"
        )
    if seq == expected_seq + 1:
        return ChainBroken(expected_seq, f"seq {expected_seq} is missing: a row was deleted")
    return ChainBroken(expected_seq, f"seq {expected_seq} to {seq - 1} are missing: rows were deleted")
