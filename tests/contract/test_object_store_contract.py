"""The contract every object store backend keeps. Add each new backend to BACKENDS.

The S3 backend runs against a real moto server process (see tests/contract/conftest.py), with a bucket
of its own per test.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import tracemalloc
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from outpost.errors import InvalidInput
from outpost.storage.base import ObjectInfo, ObjectNotFound, ObjectStore
from outpost.storage.filesystem import FilesystemObjectStore
from outpost.storage.s3 import PART_BYTES, S3ObjectStore
from tests.s3_server import ACCESS_KEY_ID, REGION, SECRET_ACCESS_KEY, new_bucket, s3_client

MIB = 1024 * 1024


@dataclass
class Backend:
    store: ObjectStore
    leftovers: Callable[[], list[str]]
    """What an unfinished put could have left behind: temporary files, uploads. Must stay empty."""


def _filesystem(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    uploads = tmp_path / "store" / "uploads"

    def leftovers() -> list[str]:
        return sorted(os.listdir(uploads)) if uploads.is_dir() else []

    return Backend(FilesystemObjectStore(tmp_path / "store"), leftovers)


def _s3(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    endpoint: str = request.getfixturevalue("s3_endpoint")
    bucket = new_bucket(endpoint)
    client = s3_client(endpoint)
    store = S3ObjectStore(bucket, endpoint, REGION, ACCESS_KEY_ID, SECRET_ACCESS_KEY, prefix="outpost")

    def leftovers() -> list[str]:
        uploads = client.list_multipart_uploads(Bucket=bucket).get("Uploads", [])
        temporary = client.list_objects_v2(Bucket=bucket, Prefix="outpost/uploads/").get("Contents", [])
        return [f"upload {item['Key']}" for item in uploads] + [item["Key"] for item in temporary]

    return Backend(store, leftovers)


BACKENDS: dict[str, Callable[[pytest.FixtureRequest, Path], Backend]] = {
    "filesystem": _filesystem,
    "s3": _s3,
}


@pytest.fixture(params=sorted(BACKENDS))
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Backend]:
    made = BACKENDS[request.param](request, tmp_path)
    yield made
    await made.store.close()


@pytest.fixture
def store(backend: Backend) -> ObjectStore:
    return backend.store


async def _read(store: ObjectStore, key: str, start: int = 0, end: int | None = None) -> bytes:
    return b"".join([chunk async for chunk in store.read(key, start, end)])


async def _chunks(*pieces: bytes) -> AsyncIterator[bytes]:
    for piece in pieces:
        yield piece


def _block(number: int) -> bytes:
    """1 MiB of content that differs from block to block (so that a misplaced block is noticed)."""
    return hashlib.sha256(number.to_bytes(4, "big")).digest() * (MIB // 32)


async def _blocks(count: int) -> AsyncIterator[bytes]:
    for number in range(count):
        yield _block(number)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


async def test_a_put_object_reads_back_with_its_info(store: ObjectStore) -> None:
    data = b"diff --git a/x b/x\n" * 100
    info = await store.put("t/d1/diff.patch", data, "text/x-diff")
    assert info.key == "t/d1/diff.patch"
    assert (info.size_bytes, info.content_type, info.sha256) == (len(data), "text/x-diff", _sha256(data))
    assert abs(info.modified_at - datetime.now(UTC)) < timedelta(minutes=1)
    assert await store.stat("t/d1/diff.patch") == info
    assert await _read(store, "t/d1/diff.patch") == data


async def test_bytes_and_async_chunks_store_the_same_object(store: ObjectStore) -> None:
    whole = await store.put("a/whole", b"hello, world")
    chunked = await store.put("a/chunked", _chunks(b"hel", b"", b"lo, ", b"world"))
    assert (chunked.size_bytes, chunked.sha256) == (whole.size_bytes, whole.sha256)
    assert await _read(store, "a/chunked") == b"hello, world"
    assert chunked.content_type == "application/octet-stream"


async def test_a_put_replaces_the_object_under_its_key(store: ObjectStore) -> None:
    await store.put("k", b"one", "text/plain")
    info = await store.put("k", b"two, longer", "application/json")
    assert await store.stat("k") == info
    assert (info.size_bytes, info.content_type) == (11, "application/json")
    assert await _read(store, "k") == b"two, longer"


async def test_an_empty_object_round_trips(store: ObjectStore) -> None:
    info = await store.put("empty", b"")
    assert (info.size_bytes, info.sha256) == (0, _sha256(b""))
    assert [chunk async for chunk in store.read("empty")] == []
    assert await _read(store, "empty", 0, 10) == b""


async def test_a_put_whose_data_fails_leaves_nothing_and_keeps_the_old_object(backend: Backend) -> None:
    store = backend.store
    await store.put("k", b"old")

    async def failing() -> AsyncIterator[bytes]:
        yield b"x" * (PART_BYTES + MIB)  # past one part: the S3 backend is in a multipart upload
        raise RuntimeError("the agent's file vanished")

    with pytest.raises(RuntimeError, match="vanished"):
        await store.put("k", failing())
    with pytest.raises(RuntimeError, match="vanished"):
        await store.put("new", failing())
    assert await _read(store, "k") == b"old"
    assert [info.key for info in await store.list("")] == ["k"]
    assert backend.leftovers() == []


async def test_a_put_in_progress_is_invisible_and_a_cancelled_one_leaves_nothing(backend: Backend) -> None:
    store = backend.store
    halfway, go_on = asyncio.Event(), asyncio.Event()

    async def paused() -> AsyncIterator[bytes]:
        yield b"y" * (PART_BYTES + MIB)
        halfway.set()
        await go_on.wait()
        yield b"z"

    finished = asyncio.create_task(store.put("slow/one", paused()))
    await halfway.wait()
    with pytest.raises(ObjectNotFound):
        await store.stat("slow/one")
    assert await store.list("slow/") == []
    go_on.set()
    assert (await finished).size_bytes == PART_BYTES + MIB + 1

    halfway.clear()
    go_on.clear()
    cancelled = asyncio.create_task(store.put("slow/two", paused()))
    await halfway.wait()
    cancelled.cancel()
    with pytest.raises(asyncio.CancelledError):
        await cancelled
    assert [info.key for info in await store.list("slow/")] == ["slow/one"]
    assert backend.leftovers() == []


DATA = bytes(range(100))


@pytest.mark.parametrize(
    ("start", "end", "expected"),
    [
        (0, None, DATA),
        (0, 1, DATA[:1]),  # the first byte
        (99, None, DATA[99:]),  # the last byte
        (99, 100, DATA[99:]),
        (10, 20, DATA[10:20]),  # the middle; `end` is excluded
        (50, None, DATA[50:]),  # open-ended
        (90, 1000, DATA[90:]),  # `end` past the size stops at the size
        (5, 5, b""),  # an empty range
        (100, None, b""),  # `start` at the size
        (150, None, b""),  # `start` past the size
        (150, 200, b""),
    ],
)
async def test_reads_return_the_range_like_a_slice(
    store: ObjectStore, start: int, end: int | None, expected: bytes
) -> None:
    await store.put("ranged", DATA)
    assert await _read(store, "ranged", start, end) == expected


@pytest.mark.parametrize(("start", "end"), [(-1, None), (5, 4), (0, -1)])
async def test_invalid_ranges_raise_invalid_input(store: ObjectStore, start: int, end: int | None) -> None:
    await store.put("ranged", DATA)
    with pytest.raises(InvalidInput, match="range"):
        await _read(store, "ranged", start, end)


async def test_a_large_object_streams_through_in_bounded_memory(store: ObjectStore) -> None:
    blocks = 64
    expected = hashlib.sha256()
    for number in range(blocks):
        expected.update(_block(number))
    tracemalloc.start()
    try:
        info = await store.put("big", _blocks(blocks))
        streamed = hashlib.sha256()
        async for chunk in store.read("big"):
            streamed.update(chunk)
        _, peak_bytes = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert (info.size_bytes, info.sha256) == (blocks * MIB, expected.hexdigest())
    assert streamed.hexdigest() == expected.hexdigest()
    # Bounded by a few parts (S3: the part being filled, the one being sent, the HTTP layer's copy).
    assert peak_bytes < blocks * MIB // 2, f"peak {peak_bytes / MIB:.1f} MiB: the object was held whole"
    across = await _read(store, "big", 17 * MIB - 10, 17 * MIB + 10)
    assert across == _block(16)[-10:] + _block(17)[:10]


async def test_a_stopped_read_can_be_closed_early(store: ObjectStore) -> None:
    await store.put("big", _blocks(3))
    chunks = store.read("big")
    first = await anext(chunks)
    await chunks.aclose()  # type: ignore[attr-defined]  # read() is an async generator
    assert first == _block(0)[: len(first)]


async def test_listing_is_sorted_and_limited_to_the_prefix(store: ObjectStore) -> None:
    for key in ["d/b", "d/ab", "e", "d/c/x", "d2/z", "d/a"]:
        await store.put(key, key.encode())

    async def keys(prefix: str) -> list[str]:
        return [info.key for info in await store.list(prefix)]

    assert await keys("d/") == ["d/a", "d/ab", "d/b", "d/c/x"]
    assert await keys("d/a") == ["d/a", "d/ab"]
    assert await keys("d") == ["d/a", "d/ab", "d/b", "d/c/x", "d2/z"]
    assert await keys("") == ["d/a", "d/ab", "d/b", "d/c/x", "d2/z", "e"]
    assert await keys("nothing/") == []
    listed = await store.list("d/c/")
    assert listed == [await store.stat("d/c/x")]


async def test_delete_is_idempotent(store: ObjectStore) -> None:
    await store.delete("never/stored")
    await store.put("gone/soon", b"x")
    await store.delete("gone/soon")
    await store.delete("gone/soon")
    with pytest.raises(ObjectNotFound):
        await store.stat("gone/soon")
    await store.put("gone/soon", b"back")  # a deleted key (and its folder) can be used again
    assert await _read(store, "gone/soon") == b"back"


async def test_delete_prefix_removes_exactly_the_matching_objects(store: ObjectStore) -> None:
    for key in ["t/1/a", "t/1/b/c", "t/10/x", "t/2/a"]:
        await store.put(key, b"x")
    assert await store.delete_prefix("t/1/") == 2
    assert [info.key for info in await store.list("")] == ["t/10/x", "t/2/a"]
    assert await store.delete_prefix("t/1") == 1
    assert await store.delete_prefix("t/1") == 0
    assert [info.key for info in await store.list("")] == ["t/2/a"]
    await store.put("t/1/b/c", b"again")
    assert await _read(store, "t/1/b/c") == b"again"


async def test_emptying_the_whole_store_is_refused(store: ObjectStore) -> None:
    await store.put("keep", b"x")
    with pytest.raises(InvalidInput, match="prefix is empty"):
        await store.delete_prefix("")
    assert await _read(store, "keep") == b"x"


async def test_total_bytes_sums_the_sizes_under_a_prefix(store: ObjectStore) -> None:
    await store.put("q/a", b"12345")
    await store.put("q/b/c", b"123")
    await store.put("r", b"1")
    assert await store.total_bytes("q/") == 8
    assert await store.total_bytes("") == 9
    assert await store.total_bytes("none/") == 0


async def test_missing_objects_raise_object_not_found(store: ObjectStore) -> None:
    await store.put("present/a", b"x")
    with pytest.raises(ObjectNotFound) as raised:
        await store.stat("present/b")
    assert raised.value.key == "present/b"
    with pytest.raises(ObjectNotFound):
        await _read(store, "missing")
    with pytest.raises(ObjectNotFound):
        await _read(store, "missing", 3, 3)  # an empty range of a missing object is still missing
    with pytest.raises(ObjectNotFound):
        await store.stat("present")  # a folder of keys is not an object


@pytest.mark.parametrize(
    "key", ["résumé/naïve ☃.txt", "日本語/ファイル.md", "🙂/a b+c=d&e?f#g%20h", "ascii/~.!*'()"]
)
async def test_keys_with_unicode_and_punctuation_round_trip(store: ObjectStore, key: str) -> None:
    info = await store.put(key, key.encode())
    assert await _read(store, key) == key.encode()
    assert await store.list(key.split("/", maxsplit=1)[0] + "/") == [info]
    await store.delete(key)
    assert await store.list("") == []


BAD_KEYS = ["", "/abs", "a//b", "a/../b", "..", "a/./b", "a/", "a\\b", "x\x00y", "line\nbreak", "\udcff"]


@pytest.mark.parametrize("key", BAD_KEYS)
async def test_invalid_keys_are_refused_by_every_method(store: ObjectStore, key: str) -> None:
    with pytest.raises(InvalidInput):
        await store.put(key, b"x")
    with pytest.raises(InvalidInput):
        await store.stat(key)
    with pytest.raises(InvalidInput):
        await _read(store, key)
    with pytest.raises(InvalidInput):
        await store.delete(key)
    assert await store.list("") == []


@pytest.mark.parametrize("prefix", ["/abs", "a//", "../", "a\\", "x\x00"])
async def test_invalid_prefixes_are_refused(store: ObjectStore, prefix: str) -> None:
    with pytest.raises(InvalidInput):
        await store.list(prefix)
    with pytest.raises(InvalidInput):
        await store.delete_prefix(prefix)


@pytest.mark.parametrize("content_type", ["", "text/plain\r\nX-Injected: 1", "tëxt/plain", "a" * 256, " x"])
async def test_unusable_content_types_are_refused(store: ObjectStore, content_type: str) -> None:
    with pytest.raises(InvalidInput, match="content type"):
        await store.put("k", b"x", content_type)
    assert await store.list("") == []


async def test_close_is_idempotent(store: ObjectStore) -> None:
    await store.close()
    await store.close()


def test_object_info_is_frozen() -> None:
    info = ObjectInfo("k", 1, "text/plain", _sha256(b"x"), datetime.now(UTC))
    with pytest.raises(AttributeError):
        info.key = "other"  # type: ignore[misc]
