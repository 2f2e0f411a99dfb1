"""What only the S3 object store does: its layout and metadata in the bucket, and its translation of
S3's failures. Runs against the moto server of tests/contract/conftest.py."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest

from outpost.errors import Unavailable
from outpost.storage.base import ObjectNotFound
from outpost.storage.factory import build_object_store
from outpost.storage.s3 import PART_BYTES, S3ObjectStore
from outpost.storage.settings import StorageSettings
from tests.integration.processes import free_port
from tests.s3_server import ACCESS_KEY_ID, REGION, SECRET_ACCESS_KEY, new_bucket, s3_client


def _store(endpoint: str, bucket: str, prefix: str = "outpost") -> S3ObjectStore:
    return S3ObjectStore(bucket, endpoint, REGION, ACCESS_KEY_ID, SECRET_ACCESS_KEY, prefix=prefix)


@pytest.fixture
def bucket(s3_endpoint: str) -> str:
    return new_bucket(s3_endpoint)


@pytest.fixture
def client(s3_endpoint: str) -> Any:
    return s3_client(s3_endpoint)


@pytest.mark.parametrize("size_bytes", [10, PART_BYTES + 1])
async def test_objects_live_under_the_prefix_with_their_sha256_in_metadata(
    s3_endpoint: str, bucket: str, client: Any, size_bytes: int
) -> None:
    data = b"a" * size_bytes
    await _store(s3_endpoint, bucket).put("t/d/file.bin", data, "application/x-thing")
    head = client.head_object(Bucket=bucket, Key="outpost/objects/t/d/file.bin")
    assert head["Metadata"] == {"sha256": hashlib.sha256(data).hexdigest()}
    assert head["ContentType"] == "application/x-thing"
    listed = client.list_objects_v2(Bucket=bucket)["Contents"]
    assert [item["Key"] for item in listed] == ["outpost/objects/t/d/file.bin"]


async def test_stores_with_other_prefixes_share_a_bucket_without_seeing_each_other(
    s3_endpoint: str, bucket: str
) -> None:
    one, two = _store(s3_endpoint, bucket, "one"), _store(s3_endpoint, bucket, "two/")
    await one.put("k", b"1")
    await two.put("k", b"2")
    assert [info.size_bytes for info in await one.list("")] == [1]
    with pytest.raises(ObjectNotFound):
        await _store(s3_endpoint, bucket, "three").stat("k")


async def test_an_object_stored_by_another_tool_is_reported_and_left_out(
    s3_endpoint: str, bucket: str, client: Any
) -> None:
    store = _store(s3_endpoint, bucket)
    await store.put("t/good", b"x")
    client.put_object(Bucket=bucket, Key="outpost/objects/t/foreign", Body=b"y")
    with pytest.raises(Unavailable, match="not stored by Outpost"):
        await store.stat("t/foreign")
    assert [info.key for info in await store.list("t/")] == ["t/good"]


async def test_a_missing_bucket_is_unavailable_with_a_hint(s3_endpoint: str) -> None:
    store = _store(s3_endpoint, "no-such-bucket-here")
    with pytest.raises(Unavailable, match="does not exist"):
        await store.put("k", b"x")
    with pytest.raises(Unavailable, match="does not exist"):
        await store.list("")


async def test_an_unreachable_endpoint_is_unavailable() -> None:
    store = _store(f"http://127.0.0.1:{free_port()}", "bucket")
    with pytest.raises(Unavailable, match="cannot be reached"):
        await store.stat("k")
    with pytest.raises(Unavailable, match="cannot be reached"):
        await store.put("k", b"x")
    await store.close()


async def test_the_factory_builds_the_s3_store_from_settings(
    s3_endpoint: str, bucket: str, tmp_path: Path
) -> None:
    settings = StorageSettings.model_validate(
        {
            "backend": "s3",
            "s3": {
                "bucket": bucket, "endpoint_url": s3_endpoint, "region": REGION,
                "access_key_id": ACCESS_KEY_ID, "secret_access_key": SECRET_ACCESS_KEY, "prefix": "p",
            },
        }
    )  # fmt: skip
    store = build_object_store(settings, tmp_path)
    await store.put("k", b"via settings")
    assert (await store.stat("k")).size_bytes == 12
    await store.close()
