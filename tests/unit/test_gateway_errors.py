"""Provider error responses become a kind, the provider's own message and a retry time."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from outpost.agents.events import ErrorKind
from outpost.gateway.upstream_errors import ProviderFailure, classify_failure
from tests.fakes.provider_errors import Failure, Family, error_body, error_headers

NOW = datetime(2026, 5, 1, 12, 0, 0, tzinfo=UTC)
FAMILIES: list[Family] = ["anthropic", "openai", "gemini"]


def _classify(status: int, headers: dict[str, str] | None = None, body: Any = b"") -> ProviderFailure | None:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return classify_failure(status, headers or {}, raw, NOW)


def _message(status: int, body: Any) -> str:
    failure = _classify(status, {}, body)
    assert failure is not None
    return failure.message


def _retry_at(headers: dict[str, str], body: Any = b"", status: int = 429) -> datetime | None:
    failure = _classify(status, headers, body)
    assert failure is not None
    return failure.retry_at


def _gemini_retry(delay: object) -> dict[str, Any]:
    detail = {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": delay}
    return {"error": {"code": 429, "status": "RESOURCE_EXHAUSTED", "details": [{"@type": "x"}, detail]}}


# --- the fake provider's own error replies ------------------------------------------------------


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize(("status", "kind"), [(401, "auth"), (429, "quota"), (500, "provider_error")])
def test_each_family_error_shape_is_classified_with_its_message(
    family: Family, status: int, kind: ErrorKind
) -> None:
    failure = Failure(status)
    body = json.dumps(error_body(family, failure)).encode()
    result = classify_failure(status, error_headers(family, failure), body, NOW)
    retry_at = NOW + timedelta(seconds=1) if status == 429 else None
    assert result == ProviderFailure(kind, status, f"fake {status}", retry_at)


@pytest.mark.parametrize("family", FAMILIES)
def test_each_family_429_states_its_back_off(family: Family) -> None:
    failure = Failure(429, retry_after_s=30)
    body = json.dumps(error_body(family, failure)).encode()
    result = classify_failure(429, error_headers(family, failure), body, NOW)
    assert result is not None
    assert result.retry_at == NOW + timedelta(seconds=30)
    # Without headers, only Gemini's body still tells (its RetryInfo detail).
    bare = classify_failure(429, {}, body, NOW)
    assert bare is not None
    assert bare.retry_at == (NOW + timedelta(seconds=30) if family == "gemini" else None)


# --- kinds --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (400, "provider_error"),
        (401, "auth"),
        (402, "quota"),
        (403, "auth"),
        (404, "provider_error"),
        (408, "provider_error"),
        (413, "provider_error"),
        (422, "provider_error"),
        (429, "quota"),
        (500, "provider_error"),
        (529, "provider_error"),
        (599, "provider_error"),
    ],
)
def test_status_decides_the_kind(status: int, kind: ErrorKind) -> None:
    failure = _classify(status)
    assert failure is not None
    assert failure.kind == kind


@pytest.mark.parametrize("status", [100, 200, 204, 302, 399])
def test_non_errors_are_not_failures(status: int) -> None:
    assert _classify(status, {"retry-after": "5"}, {"error": {"message": "no"}}) is None


@pytest.mark.parametrize("status", [400, 403, 429])
def test_gemini_resource_exhausted_is_quota_whatever_the_status(status: int) -> None:
    body = {"error": {"code": status, "message": "Quota exceeded", "status": "RESOURCE_EXHAUSTED"}}
    assert _classify(status, {}, body) == ProviderFailure("quota", status, "Quota exceeded", None)


def test_gemini_permission_denied_stays_auth() -> None:
    body = {"error": {"code": 403, "message": "denied", "status": "PERMISSION_DENIED"}}
    assert _classify(403, {}, body) == ProviderFailure("auth", 403, "denied", None)


def test_retry_time_is_only_given_for_quota() -> None:
    assert _retry_at({"retry-after": "5"}, status=503) is None
    assert _retry_at({"retry-after": "5"}, status=402) == NOW + timedelta(seconds=5)


# --- messages -----------------------------------------------------------------------------------


def test_message_falls_back_to_the_reason_phrase() -> None:
    assert _message(429, b"") == "Too Many Requests"
    assert _message(503, {"error": {"message": "  \n "}}) == "Service Unavailable"
    assert _message(599, b"") == "HTTP 599"


def test_message_is_one_line_of_at_most_300_characters() -> None:
    text = "first line\r\nsecond\tline\x00 " + "z" * 1000
    failure = _classify(500, {}, {"error": {"message": text}})
    assert failure is not None
    assert failure.message.startswith("first line second line z")
    assert len(failure.message) == 300
    assert failure.message.endswith("z…")


@pytest.mark.parametrize(
    "body",
    [
        {"error": "plain string error"},
        [{"error": {"code": 500, "message": "plain string error", "status": "INTERNAL"}}],
    ],
)
def test_other_error_shapes_give_their_message(body: object) -> None:
    assert _message(500, body) == "plain string error"


@pytest.mark.parametrize(
    "body",
    [
        b"\x00\xff\xfe binary \x89PNG",
        b"<html><body>502 Bad Gateway</body></html>",
        b"[" * 500_000,
        b'{"error": {"message": ' + b"[" * 100_000 + b"}}",
        b'{"error": {"message": 42}}',
        b'{"error": ["message"]}',
        b"null",
    ],
)
def test_garbage_bodies_give_the_reason_phrase(body: bytes) -> None:
    assert _classify(502, {}, body) == ProviderFailure("provider_error", 502, "Bad Gateway", None)


def test_only_the_first_64_kib_of_the_body_is_read() -> None:
    padded = json.dumps({"pad": "p" * (64 << 10), "error": {"message": "late"}}).encode()
    assert _message(500, padded) == "Internal Server Error"
    huge_tail = json.dumps({"error": {"message": "early"}}).encode() + b" " * (50 << 20)
    assert _message(500, huge_tail) == "early"


# --- retry time from each hint ------------------------------------------------------------------


def test_retry_after_ms_comes_first() -> None:
    headers = {"retry-after-ms": "1500", "retry-after": "9"}
    assert _retry_at(headers, _gemini_retry("30s")) == NOW + timedelta(milliseconds=1500)


@pytest.mark.parametrize(
    ("value", "after"),
    [("20", timedelta(seconds=20)), ("0", timedelta(0)), ("2.5", timedelta(seconds=2.5))],
)
def test_retry_after_seconds(value: str, after: timedelta) -> None:
    assert _retry_at({"retry-after": value}) == NOW + after


def test_retry_after_http_date() -> None:
    assert _retry_at({"retry-after": "Fri, 01 May 2026 12:01:30 GMT"}) == NOW + timedelta(seconds=90)


@pytest.mark.parametrize("delay", ["30s", "1.5s", " 2s "])
def test_gemini_retry_info_in_the_body(delay: str) -> None:
    seconds = float(delay.strip().removesuffix("s"))
    assert _retry_at({}, _gemini_retry(delay)) == NOW + timedelta(seconds=seconds)


@pytest.mark.parametrize("delay", ["-1s", "30", "1m", "abc", 30, None, "999999999s"])
def test_gemini_retry_info_that_does_not_parse_is_ignored(delay: object) -> None:
    assert _retry_at({}, _gemini_retry(delay)) is None


def test_anthropic_reset_headers_take_the_latest_exhausted_limit() -> None:
    headers = {
        "anthropic-ratelimit-requests-remaining": "0",
        "anthropic-ratelimit-requests-reset": "2026-05-01T12:00:40Z",
        "anthropic-ratelimit-tokens-remaining": "0",
        "anthropic-ratelimit-tokens-reset": "2026-05-01T14:00:10+02:00",  # 12:00:10 UTC
        "anthropic-ratelimit-output-tokens-remaining": "1000",
        "anthropic-ratelimit-output-tokens-reset": "2026-05-01T12:59:00Z",  # not the exhausted one
    }
    assert _retry_at(headers) == NOW + timedelta(seconds=40)


def test_reset_headers_all_count_when_none_says_exhausted() -> None:
    headers = {
        "anthropic-ratelimit-requests-reset": "2026-05-01T12:00:40.5Z",
        "anthropic-ratelimit-input-tokens-reset": "2026-05-01T12:05:00Z",
        "anthropic-ratelimit-input-tokens-remaining": "17",
    }
    assert _retry_at(headers) == NOW + timedelta(minutes=5)


@pytest.mark.parametrize(
    ("value", "after"),
    [
        ("1s", timedelta(seconds=1)),
        ("6m0s", timedelta(minutes=6)),
        ("20ms", timedelta(milliseconds=20)),
        ("1h2m3.5s", timedelta(hours=1, minutes=2, seconds=3.5)),
        ("0", timedelta(0)),
        ("1500us", timedelta(microseconds=1500)),
    ],
)
def test_openai_reset_headers_read_go_durations(value: str, after: timedelta) -> None:
    assert _retry_at({"x-ratelimit-reset-tokens": value}) == NOW + after


def test_openai_reset_headers_prefer_the_exhausted_limit() -> None:
    headers = {
        "x-ratelimit-remaining-requests": "0",
        "x-ratelimit-reset-requests": "2s",
        "x-ratelimit-remaining-tokens": "40000",
        "x-ratelimit-reset-tokens": "6m0s",
    }
    assert _retry_at(headers) == NOW + timedelta(seconds=2)


@pytest.mark.parametrize(
    "headers",
    [
        {"retry-after-ms": "-5"},
        {"retry-after-ms": "nan"},
        {"retry-after": "-1"},
        {"retry-after": "soon"},
        {"retry-after": "604801"},  # a second over a week
        {"retry-after": "Thu, 30 Apr 2026 12:00:00 GMT"},  # already past
        {"retry-after": "Sat, 01 Jan 2099 00:00:00 GMT"},
        {"x-ratelimit-reset-requests": "-1s"},
        {"x-ratelimit-reset-requests": "200h"},
        {"x-ratelimit-reset-requests": "1d"},
        {"x-ratelimit-reset-requests": "1s" * 100},
        {"anthropic-ratelimit-requests-reset": "2026-13-01T00:00:00Z"},
        {"anthropic-ratelimit-requests-reset": "2026-05-01T12:00:40"},  # no offset: ambiguous
        {"anthropic-ratelimit-requests-reset": "2026-04-01T12:00:00Z"},
        {"anthropic-ratelimit-requests-reset": "1777636840"},
        {"x-ratelimit-reset": "5s"},
    ],
)
def test_unparseable_or_absurd_hints_are_ignored(headers: dict[str, str]) -> None:
    assert _retry_at(headers) is None


def test_an_ignored_hint_falls_through_to_the_next() -> None:
    headers = {"retry-after-ms": "garbage", "retry-after": "99999999", "x-ratelimit-reset-requests": "3s"}
    assert _retry_at(headers, _gemini_retry("bad")) == NOW + timedelta(seconds=3)


def test_retry_at_is_aware_utc_even_from_a_naive_or_offset_now() -> None:
    offset_now = NOW.astimezone(timezone(timedelta(hours=-7)))
    failure = classify_failure(429, {"retry-after": "10"}, b"", offset_now)
    assert failure is not None
    assert failure.retry_at == NOW + timedelta(seconds=10)
    assert failure.retry_at is not None
    assert failure.retry_at.tzinfo is UTC
    naive = classify_failure(429, {"retry-after": "10"}, b"", NOW.replace(tzinfo=None))
    assert naive is not None
    assert naive.retry_at == NOW + timedelta(seconds=10)
