"""Storage settings refuse what cannot work, and the factory builds what they describe."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from outpost.storage.factory import build_object_store, build_url_signer
from outpost.storage.filesystem import FilesystemObjectStore
from outpost.storage.settings import StorageSettings
from outpost.storage.signing import SignatureInvalid


def test_the_default_is_the_filesystem_store_under_the_data_dir(tmp_path: Path) -> None:
    settings = StorageSettings()
    assert (settings.backend, settings.url_ttl_s) == ("filesystem", 3600)
    assert isinstance(build_object_store(settings, tmp_path), FilesystemObjectStore)


@pytest.mark.parametrize(
    ("fields", "problem"),
    [
        ({"backend": "s3"}, "needs a bucket"),
        ({"backend": "s3", "s3": {"bucket": "b", "access_key_id": "id"}}, "both"),
        ({"s3": {"prefix": "/abs"}}, "empty path segments"),
        ({"s3": {"prefix": "a/../b"}}, "dots only"),
        ({"url_signing_key": "short"}, "at least 32 bytes"),
        ({"url_ttl_s": 0}, "greater than or equal"),
        ({"backend": "ftp"}, "'filesystem' or 's3'"),
    ],
)
def test_unworkable_settings_are_refused(fields: dict[str, object], problem: str) -> None:
    with pytest.raises(ValidationError, match=problem):
        StorageSettings.model_validate(fields)


def test_the_s3_prefix_is_used_as_a_folder() -> None:
    settings = StorageSettings.model_validate({"backend": "s3", "s3": {"bucket": "b", "prefix": "outpost"}})
    assert settings.s3.prefix == "outpost/"


def test_secrets_are_not_shown_in_the_settings_repr() -> None:
    settings = StorageSettings.model_validate(
        {"s3": {"access_key_id": "AKIDSECRET", "secret_access_key": "hunter2"}, "url_signing_key": "k" * 32}
    )
    assert "AKIDSECRET" not in repr(settings)
    assert "hunter2" not in repr(settings)
    assert "k" * 32 not in repr(settings)


def test_signers_share_links_only_when_they_share_a_key() -> None:
    shared = StorageSettings.model_validate({"url_signing_key": "s" * 32})
    query = build_url_signer(shared, b"d" * 32).sign("/a")
    params = dict(pair.split("=", 1) for pair in query.split("&"))
    build_url_signer(shared, b"e" * 32).verify("/a", params)  # the configured key wins
    with pytest.raises(SignatureInvalid, match="does not match"):
        build_url_signer(StorageSettings(), b"d" * 32).verify("/a", params)
    derived = build_url_signer(StorageSettings(), b"d" * 32).sign("/a")
    build_url_signer(StorageSettings(), b"d" * 32).verify(
        "/a", dict(p.split("=", 1) for p in derived.split("&"))
    )


def test_a_derived_key_that_is_too_short_is_refused() -> None:
    with pytest.raises(ValueError, match="at least 32 bytes"):
        build_url_signer(StorageSettings(), b"short")
