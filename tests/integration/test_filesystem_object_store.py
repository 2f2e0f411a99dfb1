"""What only the filesystem object store does: its layout on disk, folders that clash with keys,
damaged files, and the sweep of uploads a crashed server left behind."""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

import pytest

from outpost.errors import Conflict, Unavailable
from outpost.storage.base import ObjectNotFound
from outpost.storage.factory import build_object_store
from outpost.storage.filesystem import STALE_UPLOAD_S, FilesystemObjectStore
from outpost.storage.settings import StorageSettings


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "store"


@pytest.fixture
def store(root: Path) -> FilesystemObjectStore:
    return FilesystemObjectStore(root)


async def test_an_object_is_one_private_file_that_starts_with_its_content(
    store: FilesystemObjectStore, root: Path
) -> None:
    await store.put("t/d/diff.patch", b"content")
    path = root / "objects" / "t" / "d" / "diff.patch"
    assert path.read_bytes().startswith(b"content")
    assert path.stat().st_mode & 0o777 == 0o600
    assert (root / "objects" / "t").stat().st_mode & 0o777 == 0o700
    assert os.listdir(root / "uploads") == []


async def test_a_key_cannot_also_be_a_folder_of_keys(store: FilesystemObjectStore) -> None:
    await store.put("a/b", b"x")
    with pytest.raises(Conflict, match="one of its folders is an object"):
        await store.put("a/b/c", b"y")
    with pytest.raises(Conflict, match="keys under it exist"):
        await store.put("a", b"y")
    with pytest.raises(ObjectNotFound):
        await store.stat("a")
    await store.delete("a")  # a folder is not an object: nothing to delete
    assert [info.key for info in await store.list("")] == ["a/b"]


async def test_a_damaged_file_is_reported_and_left_out_of_listings(
    store: FilesystemObjectStore, root: Path
) -> None:
    await store.put("t/good", b"x")
    (root / "objects" / "t" / "bad").write_bytes(b"not written by the store")
    with pytest.raises(Unavailable, match="damaged"):
        await store.stat("t/bad")
    assert [info.key for info in await store.list("t/")] == ["t/good"]
    await store.delete("t/bad")
    with pytest.raises(ObjectNotFound):
        await store.stat("t/bad")


async def test_files_whose_names_no_key_can_have_are_ignored(
    store: FilesystemObjectStore, root: Path
) -> None:
    await store.put("t/good", b"x")
    os.close(os.open(os.fsencode(root / "objects" / "t") + b"/\xff", os.O_CREAT | os.O_WRONLY, 0o600))
    assert [info.key for info in await store.list("t/")] == ["t/good"]


async def test_deleting_prunes_emptied_folders(store: FilesystemObjectStore, root: Path) -> None:
    await store.put("t/d1/a/b", b"x")
    await store.put("t/d2/c", b"x")
    await store.delete("t/d1/a/b")
    assert not (root / "objects" / "t" / "d1").exists()
    assert await store.delete_prefix("t/d2/") == 1
    assert not (root / "objects" / "t").exists()


async def test_the_first_put_sweeps_uploads_a_crash_left_behind(root: Path) -> None:
    uploads = root / "uploads"
    uploads.mkdir(parents=True)
    (uploads / "stale.part").write_bytes(b"x")
    (uploads / "live.part").write_bytes(b"y")
    old = time.time() - STALE_UPLOAD_S - 60
    os.utime(uploads / "stale.part", (old, old))
    await FilesystemObjectStore(root).put("k", b"z")
    assert os.listdir(uploads) == ["live.part"]


async def test_the_factory_builds_the_filesystem_store_under_the_data_dir(tmp_path: Path) -> None:
    store = build_object_store(StorageSettings(), tmp_path)
    info = await store.put("k", b"data")
    assert info.sha256 == hashlib.sha256(b"data").hexdigest()
    assert (tmp_path / "artifacts" / "objects" / "k").is_file()
    await store.close()
