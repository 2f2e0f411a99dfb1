"""Building the object store and the URL signer from settings (called once by the composition root)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from pydantic import SecretStr

from outpost.storage.base import ObjectStore
from outpost.storage.filesystem import FilesystemObjectStore
from outpost.storage.settings import StorageSettings
from outpost.storage.signing import MIN_KEY_BYTES, UrlSigner


def build_object_store(settings: StorageSettings, data_dir: Path) -> ObjectStore:
    """The configured backend; the S3 one (and boto3) is imported only when chosen."""
    if settings.backend == "s3":
        from outpost.storage.s3 import S3ObjectStore  # noqa: PLC0415 - boto3 loads only when chosen

        s3 = settings.s3
        return S3ObjectStore(
            bucket=s3.bucket,
            endpoint_url=s3.endpoint_url,
            region=s3.region,
            access_key_id=_reveal(s3.access_key_id),
            secret_access_key=_reveal(s3.secret_access_key),
            prefix=s3.prefix,
        )
    return FilesystemObjectStore(data_dir / "artifacts")


def build_url_signer(
    settings: StorageSettings, derived_key: bytes, previous_keys: Sequence[bytes] = ()
) -> UrlSigner:
    """The signer of download links: the configured key, else `derived_key` (derived from the master
    key, so every server sharing the master key accepts the others' links, and links survive restarts).
    `previous_keys` (derived from previous master keys) still verify links signed before a rotation."""
    configured = _reveal(settings.url_signing_key)
    if configured:
        return UrlSigner(_long_enough(configured.encode()), ttl_s=settings.url_ttl_s)
    return UrlSigner(_long_enough(derived_key), ttl_s=settings.url_ttl_s, previous_keys=previous_keys)


def _long_enough(key: bytes) -> bytes:
    if len(key) < MIN_KEY_BYTES:
        raise ValueError(f"a URL signing key is at least {MIN_KEY_BYTES} bytes")
    return key


def _reveal(secret: SecretStr | None) -> str | None:
    return None if secret is None else secret.get_secret_value()
