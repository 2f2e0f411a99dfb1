"""The filesystem object store never follows a symlink (or opens a FIFO) planted below its root: reads,
writes, listings and deletions stay inside it, whatever stands in the way."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from outpost.errors import Conflict, Unavailable
from outpost.storage.base import ObjectNotFound
from outpost.storage.filesystem import FilesystemObjectStore


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A folder outside the store, with a file an attacker would like to read or overwrite."""
    folder = tmp_path / "outside"
    folder.mkdir()
    (folder / "secret").write_bytes(b"host secret")
    return folder


@pytest.fixture
async def store(tmp_path: Path) -> FilesystemObjectStore:
    store = FilesystemObjectStore(tmp_path / "store")
    await store.put("t/seed", b"x")  # creates the layout
    return store


def _objects(tmp_path: Path) -> Path:
    return tmp_path / "store" / "objects"


def _names(folder: Path) -> list[str]:
    return sorted(os.listdir(folder))


async def _read(store: FilesystemObjectStore, key: str) -> bytes:
    return b"".join([chunk async for chunk in store.read(key)])


async def test_a_symlinked_object_is_not_read_and_is_replaced_not_written_through(
    store: FilesystemObjectStore, tmp_path: Path, outside: Path
) -> None:
    (_objects(tmp_path) / "t" / "link").symlink_to(outside / "secret")
    with pytest.raises(ObjectNotFound):
        await store.stat("t/link")
    with pytest.raises(ObjectNotFound):
        await _read(store, "t/link")
    assert [info.key for info in await store.list("t/")] == ["t/seed"]
    await store.put("t/link", b"ours")  # the rename replaces the link itself
    assert (outside / "secret").read_bytes() == b"host secret"
    assert not (_objects(tmp_path) / "t" / "link").is_symlink()
    assert await _read(store, "t/link") == b"ours"


async def test_a_symlinked_folder_is_never_entered(
    store: FilesystemObjectStore, tmp_path: Path, outside: Path
) -> None:
    (_objects(tmp_path) / "t" / "dir").symlink_to(outside)
    with pytest.raises(ObjectNotFound):
        await _read(store, "t/dir/secret")
    with pytest.raises(Conflict, match="a link"):
        await store.put("t/dir/planted", b"x")
    with pytest.raises(Conflict):
        await store.put("t/dir/secret", b"overwritten")
    assert await store.list("t/dir") == []
    await store.delete("t/dir/secret")
    assert await store.delete_prefix("t/dir/") == 0
    assert _names(outside) == ["secret"]
    assert (outside / "secret").read_bytes() == b"host secret"


async def test_deleting_a_prefix_with_a_link_in_it_removes_the_link_not_its_target(
    store: FilesystemObjectStore, tmp_path: Path, outside: Path
) -> None:
    (_objects(tmp_path) / "t" / "dirlink").symlink_to(outside)
    (_objects(tmp_path) / "t" / "filelink").symlink_to(outside / "secret")
    await store.delete_prefix("t/")
    assert (outside / "secret").read_bytes() == b"host secret"
    assert not (_objects(tmp_path) / "t").exists()


async def test_a_symlinked_uploads_folder_is_not_written_through(tmp_path: Path, outside: Path) -> None:
    root = tmp_path / "store"
    root.mkdir()
    (root / "uploads").symlink_to(outside)
    store = FilesystemObjectStore(root)
    with pytest.raises(Unavailable, match="filesystem object store failed"):
        await store.put("k", b"x")
    assert _names(outside) == ["secret"]


async def test_a_fifo_in_the_store_does_not_hang_a_read(store: FilesystemObjectStore, tmp_path: Path) -> None:
    os.mkfifo(_objects(tmp_path) / "t" / "fifo")
    async with asyncio.timeout(5):
        with pytest.raises(ObjectNotFound):
            await store.stat("t/fifo")
        assert [info.key for info in await store.list("t/")] == ["t/seed"]
