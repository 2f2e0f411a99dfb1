"""SQLite write transactions inline on the event loop (decision record 0007), against a real database file."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import sqlite3
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import text

from outpost.db import sqlite_writer
from outpost.db.store import Store
from outpost.errors import StoreUnavailable


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    store = Store(f"sqlite:///{tmp_path / 'test.db'}")
    async with store.write() as conn:
        await conn.execute(text("CREATE TABLE items (n INTEGER)"))
    yield store
    await store.dispose()


def _other_process_lock(store: Store) -> sqlite3.Connection:
    """Another connection (as the offline CLI would have) holding the write lock."""
    holder = sqlite3.connect(store.url.split("///", 1)[1], isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    return holder


async def _count(store: Store) -> int:
    async with store.read() as conn:
        return int((await conn.execute(text("SELECT count(*) FROM items"))).scalar_one())


async def _longest_stall(until: asyncio.Future[None]) -> float:
    """The longest time the loop did not run a 1 ms ticker, until `until` is done."""
    longest, last = 0.0, time.perf_counter()
    while not until.done():
        await asyncio.sleep(0.001)
        now = time.perf_counter()
        longest, last = max(longest, now - last), now
    return longest


async def _insert(store: Store, n: int) -> None:
    async with store.write() as conn:
        await conn.execute(text("INSERT INTO items VALUES (:n)"), {"n": n})


async def test_a_write_waits_for_another_processes_lock_without_stalling_the_loop(store: Store) -> None:
    holder = _other_process_lock(store)
    started = time.perf_counter()
    write = asyncio.ensure_future(_insert(store, 1))
    asyncio.get_running_loop().call_later(0.3, holder.commit)
    stall = await _longest_stall(write)
    await write
    waited = time.perf_counter() - started
    holder.close()
    assert await _count(store) == 1
    assert waited >= 0.3  # it did wait for the lock ...
    assert stall < 0.05  # ... and the loop kept running meanwhile


async def test_a_write_gives_up_on_a_lock_held_too_long_and_writes_nothing(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sqlite_writer, "LOCK_WAIT_S", 0.2)
    holder = _other_process_lock(store)
    with pytest.raises(StoreUnavailable, match="write lock is held elsewhere"):
        await _insert(store, 1)
    holder.rollback()
    holder.close()
    await _insert(store, 2)  # the writer is usable again
    assert await _count(store) == 1


async def test_a_failed_transaction_leaves_nothing_and_the_next_one_commits(store: Store) -> None:
    async def fail_half_way() -> None:
        async with store.write() as conn:
            await conn.execute(text("INSERT INTO items VALUES (1)"))
            raise RuntimeError("the service failed half-way")

    with pytest.raises(RuntimeError):
        await fail_half_way()
    await _insert(store, 2)
    assert await _count(store) == 1


async def test_concurrent_writers_take_turns(store: Store) -> None:
    async def read_modify_write() -> None:
        async with store.write() as conn:
            count = (await conn.execute(text("SELECT count(*) FROM items"))).scalar_one()
            await asyncio.sleep(0)  # a turn for the others, inside the transaction
            await conn.execute(text("INSERT INTO items VALUES (:n)"), {"n": count})

    await asyncio.gather(*(read_modify_write() for _ in range(50)))
    async with store.read() as conn:
        values = sorted((await conn.execute(text("SELECT n FROM items"))).scalars())
    assert values == list(range(50))  # each saw all the writes before it: serialized


def _rows_in_main_file(store: Store, tmp_path: Path) -> int:
    """Rows a copy of the database file alone holds: what checkpoints have moved out of the WAL."""
    copy = tmp_path / "main-file-only.db"
    shutil.copyfile(store.url.split("///", 1)[1], copy)
    with contextlib.closing(sqlite3.connect(copy)) as probe:
        if not probe.execute("SELECT 1 FROM sqlite_master WHERE name = 'items'").fetchone():
            return 0  # not even the table's creation reached the file
        return int(probe.execute("SELECT count(*) FROM items").fetchone()[0])


async def test_the_wal_is_checkpointed_in_the_background_not_on_commit(store: Store, tmp_path: Path) -> None:
    for n in range(sqlite_writer.CHECKPOINT_EVERY - 1):
        await _insert(store, n)
    assert _rows_in_main_file(store, tmp_path) == 0  # no automatic checkpoint on the loop
    await _insert(store, sqlite_writer.CHECKPOINT_EVERY)
    writer = store._inline_writer
    assert writer is not None
    assert writer._checkpoint is not None
    await writer._checkpoint
    assert _rows_in_main_file(store, tmp_path) == sqlite_writer.CHECKPOINT_EVERY
