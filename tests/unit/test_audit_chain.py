"""The audit chain: rows sealed and walked in memory, as SQLite and PostgreSQL give them back; every edit,
deletion, move and truncation is found and named."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from outpost.audit.chain import (
    GENESIS_HASH,
    RAW_COLUMNS,
    AuditEntry,
    AuditRecord,
    ChainKey,
    Origin,
    detail_json,
    encode_row,
    seal,
    time_text,
)
from outpost.audit.verify import (
    ChainBroken,
    Checkpoint,
    Start,
    check_head,
    start_of,
    walk,
)

KEY = ChainKey(os.urandom(32))
T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


def chain(count: int, key: ChainKey = KEY, *, after: AuditRecord | None = None) -> list[AuditRecord]:
    """`count` rows, each a different kind of action, chained after `after` (or from the start)."""
    records: list[AuditRecord] = []
    prev, seq = (after.hash, after.seq) if after else (GENESIS_HASH, 0)
    for number in range(count):
        seq += 1
        entry = AuditEntry(
            "dispatch.create" if number % 2 else "auth.failed",
            None if number % 3 == 0 else "01JTENANT0000000000000000A",
            Origin(f"key:{number}", "203.0.113.7" if number % 2 else None),
            target=f"target-{number}",
            detail={"n": number, "nested": {"b": [1, 2.5], "a": "ü"}},
        )
        records.append(seal(key, entry, seq=seq, prev_hash=prev, created_at=T0 + timedelta(seconds=seq)))
        prev = records[-1].hash
    return records


def sqlite_row(record: AuditRecord) -> list[Any]:
    """A row as SQLite gives it back raw: time and detail as text."""
    return [
        record.seq, time_text(record.created_at), record.tenant_id, record.actor, record.action,
        record.target, record.source_ip, json.dumps(record.detail), record.prev_hash, record.hash,
    ]  # fmt: skip


def postgres_row(record: AuditRecord) -> list[Any]:
    """A row as psycopg gives it back: an aware datetime (any zone), the detail parsed."""
    row = sqlite_row(record)
    row[1] = record.created_at.astimezone(datetime.now().astimezone().tzinfo)
    row[7] = json.loads(row[7])
    return row


def verify(
    rows: Sequence[Sequence[Any]], keys: Sequence[ChainKey] = (KEY,), start: Start | None = None
) -> int:
    result = walk(rows, keys, start or Start(1, GENESIS_HASH))
    check_head(result, rows[-1][0] if rows else 0, rows[-1][9] if rows else GENESIS_HASH)
    return result.rows


@pytest.mark.parametrize("shape", [sqlite_row, postgres_row])
def test_a_chain_as_written_verifies(shape: Any) -> None:
    assert verify([shape(record) for record in chain(50)]) == 50


def test_each_row_links_to_the_hash_of_the_one_before() -> None:
    records = chain(3)
    assert [record.prev_hash for record in records] == [GENESIS_HASH, records[0].hash, records[1].hash]


EDITS = {
    "created_at": "2025-03-01 12:00:09.000001",
    "tenant_id": "01JOTHERTENANT000000000000",
    "actor": "key:intruder",
    "action": "key.create",
    "target": "another-target",
    "source_ip": "198.51.100.1",
    "detail": json.dumps({"n": 0}),
    "prev_hash": "f" * 64,
    "hash": "e" * 64,
}
COLUMNS = list(RAW_COLUMNS)


@pytest.mark.parametrize("column", list(EDITS))
def test_any_single_field_edited_is_found_at_its_row(column: str) -> None:
    rows = [sqlite_row(record) for record in chain(10)]
    rows[6][COLUMNS.index(column)] = EDITS[column]
    with pytest.raises(ChainBroken, match="at seq 7: it was edited") as caught:
        verify(rows)
    assert caught.value.seq == 7


def test_a_null_column_filled_in_is_an_edit() -> None:
    rows = [sqlite_row(record) for record in chain(4)]
    assert rows[0][2] is None
    rows[0][2] = "01JTENANT0000000000000000A"
    with pytest.raises(ChainBroken, match="at seq 1: it was edited"):
        verify(rows)


def test_the_same_detail_stored_in_other_json_spelling_still_verifies() -> None:
    rows = [sqlite_row(record) for record in chain(3)]
    rows[1][7] = json.dumps(json.loads(rows[1][7]), indent=2, ensure_ascii=False)
    rows[2][1] = rows[2][1].replace(" ", "T") + "+00:00"
    assert verify(rows) == 3


def test_a_deleted_row_is_named_as_missing() -> None:
    rows = [sqlite_row(record) for record in chain(10)]
    del rows[4]
    with pytest.raises(ChainBroken, match="at seq 5: seq 5 is missing"):
        verify(rows)


def test_rows_deleted_from_the_start_without_a_pruning_record_are_found() -> None:
    rows = [sqlite_row(record) for record in chain(10)][3:]
    with pytest.raises(ChainBroken, match="at seq 1: seq 1 to 3 are missing and no pruning record"):
        start_of(4, [])
    with pytest.raises(ChainBroken, match="at seq 1: seq 1 to 3 are missing: rows were deleted"):
        verify(rows)


def test_two_swapped_rows_are_named_as_reordered() -> None:
    rows = [sqlite_row(record) for record in chain(10)]
    rows[2][0], rows[7][0] = rows[7][0], rows[2][0]
    rows.sort(key=lambda row: row[0])
    with pytest.raises(ChainBroken, match="at seq 3: it holds the row written as seq 8: rows were reordered"):
        verify(rows)


def test_a_deleted_row_with_the_rest_renumbered_is_found() -> None:
    rows = [sqlite_row(record) for record in chain(10)]
    del rows[4]
    for row in rows[4:]:
        row[0] -= 1
    with pytest.raises(ChainBroken, match="at seq 5: it holds the row written as seq 6"):
        verify(rows)


def test_rows_deleted_from_the_end_disagree_with_the_head() -> None:
    records = chain(10)
    result = walk([sqlite_row(record) for record in records[:7]], [KEY], Start(1, GENESIS_HASH))
    with pytest.raises(ChainBroken, match="at seq 8: the head is at seq 10 but the last row is seq 7"):
        check_head(result, 10, records[-1].hash)


def test_a_head_moved_back_is_found() -> None:
    records = chain(5)
    result = walk([sqlite_row(record) for record in records], [KEY], Start(1, GENESIS_HASH))
    with pytest.raises(ChainBroken, match="rows run past the head"):
        check_head(result, 4, records[3].hash)
    with pytest.raises(ChainBroken, match="not the one the head holds"):
        check_head(result, 5, "0" * 64)


def test_a_chain_resealed_under_another_key_does_not_verify() -> None:
    forged = [sqlite_row(record) for record in chain(5, ChainKey(os.urandom(32)))]
    with pytest.raises(ChainBroken, match="at seq 1: it was edited"):
        verify(forged)


def test_rows_sealed_before_a_master_key_rotation_verify_with_the_previous_key() -> None:
    old, new = ChainKey(os.urandom(32)), ChainKey(os.urandom(32))
    before = chain(4, old)
    rows = [sqlite_row(record) for record in [*before, *chain(4, new, after=before[-1])]]
    assert verify(rows, [new, old]) == 8
    with pytest.raises(ChainBroken, match=r"at seq 1: it was edited.*PREVIOUS_MASTER_KEYS"):
        verify(rows, [new])


def test_a_pruned_log_starts_at_its_checkpoint() -> None:
    records = chain(10)
    point = Checkpoint(seq=10, through_seq=4, hash=records[3].hash)
    start = start_of(5, [point])
    assert start == Start(5, records[3].hash, {})
    assert verify([sqlite_row(record) for record in records[4:]], start=start) == 6


def test_a_pruning_stopped_part_way_still_anchors_the_rows_left() -> None:
    records = chain(10)
    start = start_of(3, [Checkpoint(seq=10, through_seq=5, hash=records[4].hash)])
    assert start.prev_hash is None
    assert verify([sqlite_row(record) for record in records[2:]], start=start) == 8
    wrong = start_of(3, [Checkpoint(seq=10, through_seq=5, hash="a" * 64)])
    with pytest.raises(ChainBroken, match="at seq 5: its hash is not the one the pruning record kept"):
        verify([sqlite_row(record) for record in records[2:]], start=wrong)


def test_a_checkpoint_that_does_not_reach_the_first_row_covers_nothing() -> None:
    with pytest.raises(ChainBroken, match="seq 1 to 5 are missing"):
        start_of(6, [Checkpoint(seq=10, through_seq=3, hash="a" * 64)])


def test_details_are_made_storable_before_they_are_sealed() -> None:
    text = detail_json({"b": 2.0, "a": "x\x00y\ud800", "big": 1e20, "when": T0, "items": (1, 0.5)})
    assert json.loads(text) == {
        "a": "x\ufffdy?", "b": 2, "big": 10**20, "items": [1, 0.5], "when": "2025-03-01T12:00:00+00:00",
    }  # fmt: skip
    assert list(json.loads(text)) == ["a", "b", "big", "when", "items"]  # jsonb's order: length, then bytes
    assert text == json.dumps(json.loads(text))


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), object(), {1: "x"}])
def test_a_detail_that_is_not_json_is_refused(bad: object) -> None:
    with pytest.raises((TypeError, ValueError)):
        detail_json({"value": bad})


def test_long_and_nul_bearing_columns_are_cut_and_cleaned_before_sealing() -> None:
    entry = AuditEntry("x" * 50, "t" * 40, Origin("a\x00" * 40, "1" * 70), target="t" * 300)
    record = seal(KEY, entry, seq=1, prev_hash=GENESIS_HASH, created_at=T0)
    assert (len(record.action), len(record.tenant_id or ""), len(record.target or "")) == (40, 26, 255)
    assert (record.actor or "").count("\ufffd") == 32
    assert len(record.actor or "") == 64
    assert verify([sqlite_row(record)]) == 1


@pytest.mark.parametrize(
    ("column", "value"), [(1, 12345), (7, b"\x00blob"), (1, "not a time"), (7, "{"), (3, 42), (8, 7)]
)
def test_a_column_holding_what_the_log_never_writes_is_an_edit(column: int, value: object) -> None:
    rows = [sqlite_row(record) for record in chain(3)]
    rows[1][column] = value
    with pytest.raises(ChainBroken, match="at seq 2: it was edited"):
        verify(rows)


def test_a_row_whose_seq_is_not_a_number_is_named_as_edited() -> None:
    rows = [sqlite_row(record) for record in chain(3)]
    rows[2][0] = "3x"
    with pytest.raises(ChainBroken, match="at seq 3: the row after seq 2 has the seq '3x': it was edited"):
        verify(rows)


@pytest.mark.parametrize("key", [b"", b"k" * 32, os.urandom(64), os.urandom(100)])
def test_the_chain_key_computes_hmac_sha256_of_the_encoding(key: bytes) -> None:
    for fields in [
        ("0" * 64, 1, time_text(T0), None, "b", "a", None, None, "{}"),
        (
            "f" * 64,
            10**12,
            time_text(T0),
            "t" * 26,
            "ü" * 64,
            "x",
            "y" * 255,
            "::1",
            '{"a": ' + "1" * 5000 + "}",
        ),
    ]:
        expected = hmac.new(key, encode_row(*fields), hashlib.sha256).hexdigest()  # type: ignore[arg-type]
        assert ChainKey(key).mac(*fields) == expected  # type: ignore[arg-type]


def test_no_two_rows_encode_alike_when_text_moves_between_fields() -> None:
    base = ("h" * 64, 5, "2025-03-01 12:00:00.000000")
    variants = [
        (*base, "t", "ab", "c", None, None, "{}"),
        (*base, "t", "a", "bc", None, None, "{}"),
        (*base, "t", "a\x1fb", "c", None, None, "{}"),
        (*base, "t", "a", "\x1fbc", None, None, "{}"),
        (*base, None, "ab", "c", None, None, "{}"),
        (*base, "", "ab", "c", None, None, "{}"),
        (*base, "t", "ab", "c", "", None, "{}"),
        (*base, "t", "ab", "c", None, "", "{}"),
    ]
    encodings = {encode_row(*variant) for variant in variants}  # type: ignore[arg-type]
    assert len(encodings) == len(variants)
