"""Signed download URLs work for their path until they expire, and for nothing else."""

from __future__ import annotations

from urllib.parse import parse_qsl

import pytest

from outpost.errors import InvalidInput, PermissionDenied
from outpost.storage.signing import CLOCK_SKEW_S, SignatureInvalid, UrlSigner

KEY = b"k" * 32
NOW = 1_700_000_000
PATH = "/v1/dispatches/d1/artifacts/out/report.md"


class FakeClock:
    def __init__(self) -> None:
        self.now = float(NOW)

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def signer(clock: FakeClock) -> UrlSigner:
    return UrlSigner(KEY, ttl_s=3600, clock=clock)


def _params(query: str) -> dict[str, str]:
    return dict(parse_qsl(query, keep_blank_values=True))


def test_a_signed_path_verifies_until_it_expires(signer: UrlSigner, clock: FakeClock) -> None:
    query = signer.sign(PATH)
    params = _params(query)
    assert params["expires"] == str(NOW + 3600)
    assert len(params["signature"]) == 43
    signer.verify(PATH, params)
    clock.now = NOW + 3599.5
    signer.verify(PATH, params)
    clock.now = NOW + 3600
    with pytest.raises(SignatureInvalid, match="expired"):
        signer.verify(PATH, params)


def test_signature_errors_are_permission_denied(signer: UrlSigner) -> None:
    assert issubclass(SignatureInvalid, PermissionDenied)  # HTTP 403 through the problems table
    with pytest.raises(PermissionDenied):
        signer.verify(PATH, {})


def test_an_explicit_expiry_is_signed(signer: UrlSigner) -> None:
    params = _params(signer.sign(PATH, expires_at=NOW + 60))
    assert params["expires"] == str(NOW + 60)
    signer.verify(PATH, params)


def test_other_query_parameters_are_ignored(signer: UrlSigner) -> None:
    signer.verify(PATH, {**_params(signer.sign(PATH)), "download": "1"})


@pytest.mark.parametrize(
    "other_path",
    [
        "/v1/dispatches/d1/artifacts/out/other.md",
        "/v1/dispatches/d2/artifacts/out/report.md",
        PATH + "/",
        PATH.upper(),
        PATH + "\n",
        "/v1/dispatches/d1/artifacts/out/../../d2/artifacts/out/report.md",
    ],
)
def test_a_signature_is_only_good_for_its_path(signer: UrlSigner, other_path: str) -> None:
    params = _params(signer.sign(PATH))
    with pytest.raises(SignatureInvalid, match="does not match"):
        signer.verify(other_path, params)


def test_a_tampered_signature_is_refused(signer: UrlSigner) -> None:
    params = _params(signer.sign(PATH))
    signature = params["signature"]
    flipped = ("A" if signature[0] != "A" else "B") + signature[1:]
    with pytest.raises(SignatureInvalid, match="does not match"):
        signer.verify(PATH, {**params, "signature": flipped})


def test_a_tampered_expiry_is_refused(signer: UrlSigner, clock: FakeClock) -> None:
    params = _params(signer.sign(PATH))
    clock.now = NOW + 4000
    with pytest.raises(SignatureInvalid, match="does not match"):
        signer.verify(PATH, {**params, "expires": str(NOW + 5000)})


def test_another_key_does_not_verify(signer: UrlSigner, clock: FakeClock) -> None:
    other = UrlSigner(b"o" * 32, clock=clock)
    with pytest.raises(SignatureInvalid, match="does not match"):
        other.verify(PATH, _params(signer.sign(PATH)))


@pytest.mark.parametrize("missing", ["expires", "signature"])
def test_missing_parameters_are_refused(signer: UrlSigner, missing: str) -> None:
    params = _params(signer.sign(PATH))
    del params[missing]
    with pytest.raises(SignatureInvalid, match="not signed"):
        signer.verify(PATH, params)


@pytest.mark.parametrize(
    ("expires", "signature"),
    [
        ("soon", None),
        ("", None),
        ("-1", None),
        ("+1700003600", None),
        (" 1700003600", None),
        ("1700003600 ", None),
        ("1_700_003_600", None),
        ("1.7e9", None),
        ("١٧٠٠٠٠٣٦٠٠", None),  # digits of another script, which int() would take
        ("9" * 13, None),
        (None, ""),
        (None, "short"),
        (None, "A" * 44),
        (None, "A" * 42 + "+"),  # standard base64, not base64url
        (None, "A" * 42 + "="),
        (None, "é" * 43),  # not ASCII: compare_digest would raise on it
    ],
)
def test_malformed_parameters_are_refused(
    signer: UrlSigner, expires: str | None, signature: str | None
) -> None:
    params = _params(signer.sign(PATH))
    if expires is not None:
        params["expires"] = expires
    if signature is not None:
        params["signature"] = signature
    with pytest.raises(SignatureInvalid, match="malformed"):
        signer.verify(PATH, params)


def test_an_expiry_too_far_ahead_is_refused_even_when_signed(signer: UrlSigner, clock: FakeClock) -> None:
    generous = UrlSigner(KEY, ttl_s=3600, clock=clock, max_ttl_s=10 * 365 * 24 * 3600)
    params = _params(generous.sign(PATH, expires_at=NOW + 365 * 24 * 3600))
    generous.verify(PATH, params)
    with pytest.raises(SignatureInvalid, match="further ahead"):
        signer.verify(PATH, params)


def test_clocks_of_servers_may_differ_a_little(signer: UrlSigner, clock: FakeClock) -> None:
    params = _params(signer.sign(PATH))
    clock.now = NOW - CLOCK_SKEW_S  # the verifying server's clock is behind the signing one's
    signer.verify(PATH, params)
    clock.now = NOW - CLOCK_SKEW_S - 1
    with pytest.raises(SignatureInvalid, match="further ahead"):
        signer.verify(PATH, params)


def test_signing_past_the_longest_life_is_refused(signer: UrlSigner) -> None:
    with pytest.raises(InvalidInput, match="at most 3600 seconds"):
        signer.sign(PATH, expires_at=NOW + 3601)


@pytest.mark.parametrize("path", ["/v1/a/résumé ☃.txt", "/v1/a/\udcff", "/v1/a?b=c&d", ""])
def test_any_path_string_round_trips(signer: UrlSigner, path: str) -> None:
    signer.verify(path, _params(signer.sign(path)))


def test_short_keys_and_lifetimes_are_refused() -> None:
    with pytest.raises(InvalidInput, match="at least 32 bytes"):
        UrlSigner(b"k" * 31)
    with pytest.raises(InvalidInput, match="at least 1 second"):
        UrlSigner(KEY, ttl_s=0)
