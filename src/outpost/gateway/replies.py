"""The gateway's own error replies, in the calling provider's JSON shape: a CLI reads a refused token as
an authentication error only when the body looks like its provider's."""

from __future__ import annotations

import json
from http import HTTPStatus

_ANTHROPIC_TYPES = {401: "authentication_error", 402: "billing_error", 403: "permission_error",
                    404: "not_found_error", 413: "request_too_large", 429: "rate_limit_error"}  # fmt: skip
_GEMINI_STATUS = {400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED", 404: "NOT_FOUND",
                  504: "DEADLINE_EXCEEDED"}  # fmt: skip


def error_body(provider: str | None, status: int, message: str) -> bytes:
    if provider == "anthropic":
        kind = _ANTHROPIC_TYPES.get(status, "api_error")
        body: object = {"type": "error", "error": {"type": kind, "message": message}}
    elif provider == "gemini":
        state = _GEMINI_STATUS.get(status, "INTERNAL" if status >= 500 else "FAILED_PRECONDITION")
        body = {"error": {"code": status, "message": message, "status": state}}
    else:
        code = "invalid_api_key" if status == 401 else None
        kind = "invalid_request_error" if status < 500 else "server_error"
        body = {"error": {"message": message, "type": kind, "param": None, "code": code}}
    return json.dumps(body).encode()


def reason_phrase(status: int) -> bytes:
    try:
        return HTTPStatus(status).phrase.encode()
    except ValueError:
        return b""
