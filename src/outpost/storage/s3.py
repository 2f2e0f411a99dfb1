"""The S3 object store: AWS S3 or any S3-compatible service (MinIO, Ceph, R2, ...), through boto3.

Layout in the bucket, under the configured prefix:

    <prefix>objects/<key>     the objects, each with its SHA-256 in the metadata field `sha256`
    <prefix>uploads/<random>  large puts in progress; removed when the put ends (a lifecycle rule that
                              expires this folder after a day cleans up after a crashed server)

S3 metadata can only be set when an object is created, and a large put's SHA-256 is known only at its
end. So a put larger than one part is a multipart upload to `uploads/`, then a server-side copy to its
key with the metadata (atomic for readers), then removal of the upload; smaller puts are one PUT.
boto3 is blocking: every call runs in a worker thread. This module is imported only when chosen.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import uuid
from collections.abc import AsyncGenerator, AsyncIterable, AsyncIterator, Iterator
from datetime import UTC
from typing import Any

import boto3  # type: ignore[import-untyped]
from botocore.config import Config  # type: ignore[import-untyped]
from botocore.exceptions import BotoCoreError, ClientError  # type: ignore[import-untyped]

from outpost.errors import InvalidInput, OutpostError, PayloadTooLarge, Unavailable
from outpost.storage.base import (
    DEFAULT_CONTENT_TYPE,
    ObjectInfo,
    ObjectNotFound,
    validate_content_type,
    validate_range,
)
from outpost.storage.blocking import run_blocking
from outpost.storage.keys import is_valid_key, validate_key, validate_prefix, validate_store_prefix
from outpost.storage.streams import MIB, rechunk

log = logging.getLogger(__name__)

PART_BYTES = 8 * MIB
READ_CHUNK_BYTES = MIB
MAX_OBJECT_BYTES = 5 * 1024 * MIB
"""The largest object S3 copies in one request (see the module docstring for why puts copy)."""
_DELETE_BATCH = 1000  # the most keys one DeleteObjects request takes
_HEAD_CONCURRENCY = 8
_NOT_FOUND = frozenset({"NoSuchKey", "NotFound", "404"})
_ACCESS_DENIED = frozenset({"AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "403"})


class S3ObjectStore:
    """An `ObjectStore` in an existing S3 bucket. Credentials left None come from boto3's usual chain
    (environment, shared files, instance role); `endpoint_url` selects an S3-compatible service."""

    def __init__(
        self,
        bucket: str,
        endpoint_url: str | None = None,
        region: str | None = None,
        access_key_id: str | None = None,
        secret_access_key: str | None = None,
        prefix: str = "",
    ) -> None:
        self._bucket = bucket
        self._prefix = validate_store_prefix(prefix)
        config = Config(
            retries={"mode": "standard", "max_attempts": 3},
            connect_timeout=10,
            read_timeout=60,
            max_pool_connections=_HEAD_CONCURRENCY * 2,
            # S3-compatible services generally want path-style URLs; AWS picks its own.
            s3={"addressing_style": "path" if endpoint_url else "auto"},
            # Recent boto3 adds checksum headers that several S3-compatible services reject.
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        )
        # Built once by the composition root; it reads boto3's service model from disk (briefly blocks).
        self._client: Any = boto3.session.Session().client(
            "s3",
            endpoint_url=endpoint_url,
            region_name=region,
            aws_access_key_id=access_key_id,
            aws_secret_access_key=secret_access_key,
            config=config,
        )

    async def put(
        self, key: str, data: AsyncIterable[bytes] | bytes, content_type: str = DEFAULT_CONTENT_TYPE
    ) -> ObjectInfo:
        validate_key(key)
        validate_content_type(content_type)
        async with contextlib.aclosing(rechunk(data, PART_BYTES)) as parts:
            # A list, not a variable, so that the first part is dropped once uploaded (memory stays bounded).
            pending = [await anext(parts, b"")]
            if len(pending[0]) < PART_BYTES:  # the whole object: one PUT
                digest = await run_blocking(_sha256_hex, pending[0])
                await self._call(
                    key, "put_object", Key=self._object_key(key), Body=pending[0],
                    ContentType=content_type, Metadata={"sha256": digest},
                )  # fmt: skip
            else:
                await self._put_large(key, _drain(pending, parts), content_type)
        return await self.stat(key)

    async def stat(self, key: str) -> ObjectInfo:
        validate_key(key)
        response = await self._call(key, "head_object", Key=self._object_key(key))
        info = _info(key, response)
        if info is None:
            raise Unavailable(f"the object under {key!r} was not stored by Outpost (no sha256 metadata)")
        return info

    async def read(self, key: str, start: int = 0, end: int | None = None) -> AsyncIterator[bytes]:
        validate_key(key)
        validate_range(start, end)
        if end is not None and end <= start:
            await self.stat(key)  # nothing to read, but a missing key is still an error
            return
        body = await self._open_body(key, start, end)
        if body is None:
            return
        try:
            while chunk := await self._read_body(key, body):
                yield chunk
        finally:
            body.close()

    async def delete(self, key: str) -> None:
        validate_key(key)
        await self._call(key, "delete_object", Key=self._object_key(key))

    async def list(self, prefix: str) -> list[ObjectInfo]:
        validate_prefix(prefix)
        keys = [key async for key, _size in self._listed(prefix)]
        limit = asyncio.Semaphore(_HEAD_CONCURRENCY)
        try:
            async with asyncio.TaskGroup() as group:
                tasks = [group.create_task(self._head_listed(key, limit)) for key in keys]
        except ExceptionGroup as failed:  # callers expect one of our errors, not a group of them
            first = failed.exceptions[0]
            raise first from first.__cause__
        found = [info for task in tasks if (info := task.result()) is not None]
        return sorted(found, key=lambda info: info.key)

    async def delete_prefix(self, prefix: str) -> int:
        if not validate_prefix(prefix):
            raise InvalidInput("refusing to delete every object: the prefix is empty")
        keys = [key async for key, _size in self._listed(prefix)]
        for offset in range(0, len(keys), _DELETE_BATCH):
            batch = [{"Key": self._object_key(key)} for key in keys[offset : offset + _DELETE_BATCH]]
            response = await self._call(None, "delete_objects", Delete={"Objects": batch, "Quiet": True})
            if errors := response.get("Errors"):
                raise Unavailable(f"S3 could not delete {len(errors)} objects: {errors[0].get('Code')}")
        return len(keys)

    async def total_bytes(self, prefix: str) -> int:
        validate_prefix(prefix)
        return sum([size async for _key, size in self._listed(prefix)])

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await run_blocking(self._client.close)

    async def _put_large(self, key: str, parts: AsyncIterator[bytes], content_type: str) -> None:
        upload_key = f"{self._prefix}uploads/{uuid.uuid4().hex}"
        created = await self._call(key, "create_multipart_upload", Key=upload_key, ContentType=content_type)
        upload_id = created["UploadId"]
        try:
            digest = await self._upload_parts(key, upload_key, upload_id, parts)
        except BaseException:  # also a cancellation: an incomplete upload is stored (and billed) forever
            await self._quietly("abort_multipart_upload", Key=upload_key, UploadId=upload_id)
            raise
        try:
            await self._call(
                key, "copy_object", Key=self._object_key(key),
                CopySource={"Bucket": self._bucket, "Key": upload_key},
                MetadataDirective="REPLACE", ContentType=content_type, Metadata={"sha256": digest},
            )  # fmt: skip
        finally:
            await self._quietly("delete_object", Key=upload_key)

    async def _upload_parts(
        self, key: str, upload_key: str, upload_id: str, parts: AsyncIterator[bytes]
    ) -> str:
        """Upload every part and complete the upload; the content's SHA-256 hex."""
        sha256, size_bytes = hashlib.sha256(), 0
        done: list[dict[str, Any]] = []
        async for part in parts:
            size_bytes += len(part)
            if size_bytes > MAX_OBJECT_BYTES:
                raise PayloadTooLarge(f"objects in S3 are limited to {MAX_OBJECT_BYTES} bytes")
            await run_blocking(sha256.update, part)
            number = len(done) + 1
            uploaded = await self._call(
                key, "upload_part", Key=upload_key, UploadId=upload_id, PartNumber=number, Body=part
            )
            done.append({"ETag": uploaded["ETag"], "PartNumber": number})
            del part  # not held while the next part fills
        await self._call(
            key, "complete_multipart_upload", Key=upload_key, UploadId=upload_id,
            MultipartUpload={"Parts": done},
        )  # fmt: skip
        return sha256.hexdigest()

    async def _open_body(self, key: str, start: int, end: int | None) -> Any | None:
        """The streaming body of the range, or None when `start` is at or past the object's end."""
        last = "" if end is None else str(end - 1)
        ranged = {} if start == 0 and end is None else {"Range": f"bytes={start}-{last}"}
        try:
            response = await self._call(key, "get_object", Key=self._object_key(key), **ranged)
        except Unavailable as exc:
            if _error_code(exc.__cause__) == "InvalidRange":  # S3 answers 416 for a range past the end
                return None
            raise
        return response["Body"]

    async def _read_body(self, key: str, body: Any) -> bytes:
        with _translated(key, self._bucket):
            chunk: bytes = await run_blocking(body.read, READ_CHUNK_BYTES)
        return chunk

    async def _listed(self, prefix: str) -> AsyncGenerator[tuple[str, int], None]:
        """`(key, size)` of the stored objects whose keys start with `prefix`, page by page."""
        full_prefix = self._object_key(prefix)
        pages: dict[str, Any] = {"Prefix": full_prefix}
        while True:
            page = await self._call(None, "list_objects_v2", **pages)
            for item in page.get("Contents", []):
                key = item["Key"].removeprefix(self._object_key(""))
                if is_valid_key(key):  # skips what no put could have stored (written by other tools)
                    yield key, item["Size"]
            if not page.get("IsTruncated"):
                return
            pages["ContinuationToken"] = page["NextContinuationToken"]

    async def _head_listed(self, key: str, limit: asyncio.Semaphore) -> ObjectInfo | None:
        async with limit:
            try:
                response = await self._call(key, "head_object", Key=self._object_key(key))
            except ObjectNotFound:
                return None  # deleted since it was listed
        info = _info(key, response)
        if info is None:
            log.warning("skipping the object under %r: not stored by Outpost (no sha256 metadata)", key)
        return info

    def _object_key(self, key: str) -> str:
        return f"{self._prefix}objects/{key}"

    async def _call(self, key: str | None, operation: str, **kwargs: Any) -> dict[str, Any]:
        """One S3 request in a thread, with errors translated (`key` names the object it is about)."""
        with _translated(key, self._bucket):
            response: dict[str, Any] = await run_blocking(
                getattr(self._client, operation), Bucket=self._bucket, **kwargs
            )
        return response

    async def _quietly(self, operation: str, **kwargs: Any) -> None:
        """A clean-up request whose failure must not hide the error being handled; it is logged."""
        try:
            await self._call(None, operation, **kwargs)
        except OutpostError as exc:
            log.warning("S3 clean-up %s of %s failed: %s", operation, kwargs.get("Key"), exc.detail)


@contextlib.contextmanager
def _translated(key: str | None, bucket: str) -> Iterator[None]:
    """Translate boto3's errors into Outpost's: the one place this backend does it."""
    try:
        yield
    except ClientError as exc:
        raise _from_client_error(exc, key, bucket) from exc
    except BotoCoreError as exc:
        raise Unavailable(f"S3 cannot be reached: {exc}") from exc


def _from_client_error(exc: ClientError, key: str | None, bucket: str) -> OutpostError:
    code = _error_code(exc)
    if code in _NOT_FOUND and key is not None:
        return ObjectNotFound(key)
    if code == "NoSuchBucket":
        return Unavailable(f"the S3 bucket {bucket!r} does not exist; create it or fix the storage settings")
    if code in _ACCESS_DENIED:
        return Unavailable(f"S3 refused access ({code}); check the storage credentials and bucket policy")
    if code == "EntityTooLarge":
        return PayloadTooLarge("the object is larger than S3 accepts")
    message = exc.response.get("Error", {}).get("Message", "")
    return Unavailable(f"S3 failed: {code} {message}".strip())


def _error_code(exc: BaseException | None) -> str:
    if not isinstance(exc, ClientError):
        return ""
    return str(exc.response.get("Error", {}).get("Code", ""))


def _info(key: str, response: dict[str, Any]) -> ObjectInfo | None:
    """The info in a HEAD response, or None for an object without our metadata."""
    sha256 = response.get("Metadata", {}).get("sha256")
    if not sha256:
        return None
    return ObjectInfo(
        key=key,
        size_bytes=int(response["ContentLength"]),
        content_type=str(response.get("ContentType") or DEFAULT_CONTENT_TYPE),
        sha256=sha256,
        modified_at=response["LastModified"].astimezone(UTC),
    )


def _sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


async def _drain(pending: list[bytes], rest: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """The items of `pending` (removed as they are yielded), then those of `rest`."""
    while pending:
        yield pending.pop(0)
    async for item in rest:
        yield item
        del item  # not held while the next one fills
