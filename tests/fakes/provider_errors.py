"""Error replies in each provider's own JSON shape and rate-limit headers.

Clients classify failures from these (Claude Code reads `error.type`, Codex the status, Gemini CLI
`error.status`), so a generic body would test the wrong code paths.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

Family = Literal["anthropic", "openai", "gemini"]

_ANTHROPIC_TYPES = {401: "authentication_error", 429: "rate_limit_error", 500: "api_error"}
_OPENAI_TYPES = {401: "invalid_request_error", 429: "requests", 500: "server_error"}
_OPENAI_CODES = {401: "invalid_api_key", 429: "rate_limit_exceeded", 500: None}
_GEMINI_STATUS = {401: "UNAUTHENTICATED", 429: "RESOURCE_EXHAUSTED", 500: "INTERNAL"}


@dataclass(frozen=True)
class Failure:
    status: int
    retry_after_s: float | None = None


def _message(status: int) -> str:
    return f"fake {status}"


def error_body(family: Family, failure: Failure) -> dict[str, Any]:
    status = failure.status
    if family == "anthropic":
        kind = _ANTHROPIC_TYPES.get(status, "api_error")
        return {"type": "error", "error": {"type": kind, "message": _message(status)}}
    if family == "openai":
        kind = _OPENAI_TYPES.get(status, "server_error")
        code = _OPENAI_CODES.get(status)
        return {"error": {"message": _message(status), "type": kind, "param": None, "code": code}}
    error: dict[str, Any] = {
        "code": status,
        "message": _message(status),
        "status": _GEMINI_STATUS.get(status, "INTERNAL"),
    }
    if status == 429:
        # Google states the back-off in a RetryInfo detail rather than in headers.
        delay = f"{failure.retry_after_s or 1:g}s"
        error["details"] = [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": delay}]
    return {"error": error}


def error_headers(family: Family, failure: Failure) -> dict[str, str]:
    if failure.status != 429 and failure.retry_after_s is None:
        return {}
    after = failure.retry_after_s if failure.retry_after_s is not None else 1.0
    headers = {"retry-after": str(max(0, round(after)))}
    if failure.status != 429:
        return headers
    if family == "anthropic":
        reset = datetime.now(UTC) + timedelta(seconds=after)
        headers |= {
            "anthropic-ratelimit-requests-limit": "50",
            "anthropic-ratelimit-requests-remaining": "0",
            "anthropic-ratelimit-requests-reset": reset.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "retry-after-ms": str(int(after * 1000)),
        }
    # Gemini: only `retry-after` here; its real back-off hint is the RetryInfo detail in the body.
    if family == "openai":
        headers |= {
            "x-ratelimit-limit-requests": "500",
            "x-ratelimit-remaining-requests": "0",
            "x-ratelimit-reset-requests": f"{after:g}s",
            "retry-after-ms": str(int(after * 1000)),
        }
    return headers
