"""Settings of the object store and of signed download links (`OUTPOST_STORAGE__*` once wired in)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field, SecretStr, field_validator, model_validator

from outpost.errors import InvalidInput
from outpost.storage.keys import validate_store_prefix
from outpost.storage.signing import MIN_KEY_BYTES


class S3Settings(BaseModel):
    """The bucket of the `s3` backend and how to reach it."""

    bucket: str = ""
    """Name of an existing bucket (Outpost does not create it); required with the `s3` backend."""
    endpoint_url: str | None = None
    """URL of an S3-compatible service (MinIO, Ceph, R2, ...); unset: AWS S3."""
    region: str | None = None
    """The bucket's region, e.g. `eu-west-1`; unset: boto3's default (`AWS_REGION`, shared config)."""
    access_key_id: SecretStr | None = None
    """Access key id; unset (with the secret): boto3's usual chain (environment, shared files, role)."""
    secret_access_key: SecretStr | None = None
    """Secret access key; set together with `access_key_id`."""
    prefix: str = ""
    """Folder in the bucket under which Outpost keeps everything (e.g. `outpost/`), so that a bucket can
    be shared; at most 200 bytes."""

    @field_validator("prefix")
    @classmethod
    def prefix_is_usable(cls, prefix: str) -> str:
        try:
            return validate_store_prefix(prefix)
        except InvalidInput as exc:
            raise ValueError(exc.detail) from None

    @model_validator(mode="after")
    def keys_come_in_pairs(self) -> S3Settings:
        if (self.access_key_id is None) != (self.secret_access_key is None):
            raise ValueError("set both access_key_id and secret_access_key, or neither")
        return self


class StorageSettings(BaseModel):
    """Where artifacts (diffs, logs, files a run produced) are kept, and how download links work."""

    backend: Literal["filesystem", "s3"] = "filesystem"
    """`filesystem`: files under `artifacts/` in the data dir (servers that share it share the store).
    `s3`: a bucket of AWS S3 or an S3-compatible service, configured in `s3`."""
    url_ttl_s: int = Field(default=3600, ge=60, le=7 * 24 * 3600)
    """How long a signed download link works."""
    url_signing_key: SecretStr | None = None
    """Key of the HMAC that signs download links, at least 32 bytes. Unset: a key derived from the master
    key (`secrets.master_key`), which servers sharing a database already share."""
    s3: S3Settings = Field(default_factory=S3Settings)

    @field_validator("url_signing_key")
    @classmethod
    def signing_key_is_long_enough(cls, key: SecretStr | None) -> SecretStr | None:
        if key is not None and len(key.get_secret_value().encode()) < MIN_KEY_BYTES:
            raise ValueError(f"the URL signing key must be at least {MIN_KEY_BYTES} bytes")
        return key

    @model_validator(mode="after")
    def s3_needs_a_bucket(self) -> StorageSettings:
        if self.backend == "s3" and not self.s3.bucket:
            raise ValueError("the s3 backend needs a bucket: set storage.s3.bucket")
        return self
