"""What a provider's error response means: its kind, its own message, and when to retry (no I/O).

Every input is the upstream's and untrusted: the body may be huge, binary or hostile JSON, and the
headers may hold anything. Nothing here raises on them; what cannot be read is ignored.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from http import HTTPStatus
from typing import Any

import orjson

from outpost.agents.events import ErrorKind

_BODY_PEEK = 64 * 1024  # an error's JSON is small; past this is garbage or a body we must not parse
_MAX_MESSAGE = 300
_MAX_WAIT = timedelta(days=7)  # a back-off further away than this is a broken clock or a hostile upstream
_SECONDS = re.compile(r"\d{1,12}(?:\.\d{1,9})?")
_PROTO_DURATION = re.compile(r"(\d{1,12}(?:\.\d{1,9})?)s")  # google.protobuf.Duration in JSON: "1.5s"
_RFC3339 = re.compile(r"\d{4}-\d\d-\d\d[Tt ]\d\d:\d\d:\d\d(?:\.\d{1,9})?(?:[Zz]|[+-]\d\d:\d\d)")
# Go writes microseconds with the micro sign or the Greek mu; both are accepted.
_GO_UNITS = {
    "ns": 1e-9,
    "us": 1e-6,
    "\u00b5s": 1e-6,
    "\u03bcs": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
}
_GO_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|\u00b5s|\u03bcs|ms|s|m|h)")
_GO_DURATION = re.compile(rf"(?:{_GO_PART.pattern})+")
_ANTHROPIC_RESET = re.compile(r"anthropic-ratelimit-(.+)-reset")
_OPENAI_RESET = re.compile(r"x-ratelimit-reset-(requests|tokens)")


@dataclass(frozen=True, slots=True)
class ProviderFailure:
    """A provider's refusal: what kind it is, its HTTP status and message, and when a retry may succeed."""

    kind: ErrorKind
    status: int
    message: str
    retry_at: datetime | None


def classify_failure(
    status: int, headers: Mapping[str, str], body: bytes, now: datetime
) -> ProviderFailure | None:
    """The failure an upstream response states, or None when `status` is not an error.

    `headers` have lower-case names. `retry_at` is set for quota failures only, as an aware UTC time.
    """
    if status < 400:
        return None
    error = _error_object(body[:_BODY_PEEK])
    kind = _kind(status, error)
    retry_at = _retry_at(headers, error, _utc(now)) if kind == "quota" else None
    return ProviderFailure(kind, status, _message(error, status), retry_at)


# --- kind and message ---------------------------------------------------------------------------


def _error_object(body: bytes) -> dict[str, Any]:
    """The body's `error` object (Anthropic, OpenAI and Gemini all nest it so), or {}."""
    try:
        parsed = orjson.loads(body)
    except (ValueError, RecursionError):  # garbage, a cut-off body, hostile nesting
        return {}
    if isinstance(parsed, list) and parsed:
        parsed = parsed[0]  # Gemini's non-SSE stream endpoints wrap the error in an array
    error = parsed.get("error") if isinstance(parsed, dict) else None
    if isinstance(error, str):
        return {"message": error}  # some OpenAI-compatible servers send the message alone
    return error if isinstance(error, dict) else {}


def _kind(status: int, error: Mapping[str, Any]) -> ErrorKind:
    # Gemini states exhausted quota on 400 and 403 too; its status word is what its own client reads.
    if status in (400, 403, 429) and error.get("status") == "RESOURCE_EXHAUSTED":
        return "quota"
    if status in (401, 403):
        return "auth"
    if status in (402, 429):
        return "quota"
    return "provider_error"


def _message(error: Mapping[str, Any], status: int) -> str:
    """The provider's own message on one line, else the status's reason phrase."""
    raw = error.get("message")
    raw = raw[: _MAX_MESSAGE * 4] if isinstance(raw, str) else ""  # enough to fill one line once squeezed
    text = " ".join("".join(ch if ch.isprintable() else " " for ch in raw).split())
    if not text:
        try:
            text = HTTPStatus(status).phrase
        except ValueError:
            text = f"HTTP {status}"
    return text if len(text) <= _MAX_MESSAGE else text[: _MAX_MESSAGE - 1] + "…"


# --- retry time ---------------------------------------------------------------------------------


def _utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _within(at: datetime, now: datetime) -> datetime | None:
    """`at` if it is neither past nor absurdly far away."""
    return at if timedelta(0) <= at - now <= _MAX_WAIT else None


def _after(seconds: float, now: datetime) -> datetime | None:
    if not math.isfinite(seconds) or not 0 <= seconds <= _MAX_WAIT.total_seconds():
        return None
    return now + timedelta(seconds=seconds)


def _retry_at(headers: Mapping[str, str], error: Mapping[str, Any], now: datetime) -> datetime | None:
    """The first back-off hint that parses, in the order providers mean them to be read."""
    readers: tuple[Callable[[], datetime | None], ...] = (
        lambda: _retry_after_ms(headers.get("retry-after-ms"), now),
        lambda: _retry_after(headers.get("retry-after"), now),
        lambda: _retry_info(error, now),
        lambda: _latest_reset(headers, now),
    )
    for read in readers:
        found = read()
        if found is not None:
            return found
    return None


def _retry_after_ms(value: str | None, now: datetime) -> datetime | None:
    if value is None or not _SECONDS.fullmatch(value.strip()):
        return None
    return _after(float(value) / 1000, now)


def _retry_after(value: str | None, now: datetime) -> datetime | None:
    """`Retry-After`: delay seconds or an HTTP date."""
    if value is None:
        return None
    value = value.strip()
    if _SECONDS.fullmatch(value):
        return _after(float(value), now)
    try:
        at = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    return _within(_utc(at), now)


def _retry_info(error: Mapping[str, Any], now: datetime) -> datetime | None:
    """Gemini's `google.rpc.RetryInfo` detail, e.g. `{"retryDelay": "30s"}`."""
    details = error.get("details")
    for detail in details if isinstance(details, list) else []:
        if not isinstance(detail, dict) or not str(detail.get("@type", "")).endswith("google.rpc.RetryInfo"):
            continue
        delay = detail.get("retryDelay")
        match = _PROTO_DURATION.fullmatch(delay.strip()) if isinstance(delay, str) else None
        if match:
            return _after(float(match.group(1)), now)
    return None


def _go_seconds(value: str) -> float | None:
    """A Go duration (`1s`, `6m0s`, `20ms`, `1h2m3.5s`) in seconds, as OpenAI's reset headers give them."""
    if value == "0":
        return 0.0
    if len(value) > 64 or not _GO_DURATION.fullmatch(value):
        return None
    return sum(float(number) * _GO_UNITS[unit] for number, unit in _GO_PART.findall(value))


def _rfc3339(value: str) -> datetime | None:
    if not _RFC3339.fullmatch(value):
        return None
    try:
        return _utc(datetime.fromisoformat(value.upper()))  # 3.11 reads "Z" but not "z" or "t"
    except ValueError:  # well-shaped but impossible, such as month 13
        return None


def _reset_at(name: str, value: str, now: datetime) -> tuple[str, datetime] | None:
    """For a rate-limit reset header that parses: its `remaining` header's name and the time it states."""
    value = value.strip()
    at: datetime | None = None
    if match := _ANTHROPIC_RESET.fullmatch(name):
        remaining, stated = f"anthropic-ratelimit-{match.group(1)}-remaining", _rfc3339(value)
        at = None if stated is None else _within(stated, now)
    elif match := _OPENAI_RESET.fullmatch(name):
        remaining, seconds = f"x-ratelimit-remaining-{match.group(1)}", _go_seconds(value)
        at = None if seconds is None else _after(seconds, now)
    return None if at is None else (remaining, at)


def _latest_reset(headers: Mapping[str, str], now: datetime) -> datetime | None:
    """The latest reset among exhausted limits (remaining "0"), or among all when none says so."""
    exhausted: list[datetime] = []
    every: list[datetime] = []
    for name, value in headers.items():
        found = _reset_at(name, value, now)
        if found is None:
            continue
        remaining, at = found
        every.append(at)
        if headers.get(remaining, "").strip() == "0":
            exhausted.append(at)
    chosen = exhausted or every
    return max(chosen) if chosen else None
