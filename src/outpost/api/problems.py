"""RFC 9457 problem details: the one table that maps Outpost errors to HTTP."""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from outpost import errors

log = logging.getLogger(__name__)
PROBLEM_MEDIA_TYPE = "application/problem+json"

# Most specific first: the first class the error is an instance of wins.
ERROR_STATUS: list[tuple[type[errors.OutpostError], int, str]] = [
    (errors.StaleVersion, 409, "conflict"),
    (errors.StoreUnavailable, 503, "unavailable"),
    (errors.InsufficientStorage, 507, "insufficient-storage"),
    (errors.InvalidInput, 422, "invalid-input"),
    (errors.AuthenticationFailed, 401, "unauthorized"),
    (errors.PermissionDenied, 403, "forbidden"),
    (errors.NotFound, 404, "not-found"),
    (errors.Conflict, 409, "conflict"),
    (errors.PayloadTooLarge, 413, "payload-too-large"),
    (errors.BudgetExceeded, 402, "budget-exceeded"),
    (errors.RateLimited, 429, "rate-limited"),
    (errors.Unavailable, 503, "unavailable"),
    (errors.SandboxError, 500, "sandbox-error"),
]
# FastAPI's first location element of a validation error; clients name fields without it.
_LOCATIONS = frozenset({"body", "query", "header", "path", "cookie"})
# Dict keys chosen by the client show up in field paths; longer ones are clipped, not echoed whole.
_MAX_FIELD_PART_CHARS = 64
TITLES = {
    400: "Bad request", 401: "Unauthorized", 402: "Payment required", 403: "Forbidden", 404: "Not found",
    405: "Method not allowed", 409: "Conflict", 413: "Payload too large", 422: "Invalid input",
    429: "Too many requests", 500: "Internal server error", 503: "Service unavailable",
    507: "Insufficient storage",
}  # fmt: skip


def problem(
    status: int, slug: str, detail: str, headers: dict[str, str] | None = None, **extra: Any
) -> Response:
    body = {"type": f"urn:outpost:problem:{slug}", "title": TITLES.get(status, "Error"), "status": status}
    body.update(detail=detail, **extra)
    return Response(orjson.dumps(body), status_code=status, media_type=PROBLEM_MEDIA_TYPE, headers=headers)


def outpost_error_response(exc: errors.OutpostError) -> Response:
    for error_type, status, slug in ERROR_STATUS:
        if isinstance(exc, error_type):
            return problem(status, slug, exc.detail, headers=_headers_for(exc), **_extra_for(exc))
    return problem(500, "internal", "internal server error")


def _headers_for(exc: errors.OutpostError) -> dict[str, str] | None:
    if isinstance(exc, errors.AuthenticationFailed):
        return {"WWW-Authenticate": "Bearer"}
    if isinstance(exc, errors.RateLimited):
        # Whole seconds, rounded up: a client that waits as told finds a token.
        return {"Retry-After": str(max(1, math.ceil(exc.retry_after_s)))}
    return None


def _extra_for(exc: errors.OutpostError) -> dict[str, Any]:
    if isinstance(exc, errors.InvalidInput) and exc.field:
        return {"errors": [{"field": exc.field, "message": exc.detail}]}
    if isinstance(exc, errors.BudgetExceeded):
        return {"remaining_usd": exc.remaining_micro_usd / 1e6, "budget_usd": exc.budget_micro_usd / 1e6}
    return {}


def validation_response(exc: RequestValidationError) -> Response:
    """422 naming each bad field; 400 when the body is not JSON at all. Input values are never echoed."""
    found = [{"field": _field_name(error["loc"]), "message": error["msg"]} for error in exc.errors()]
    if any(error["type"] == "json_invalid" for error in exc.errors()):
        return problem(400, "malformed-json", "the request body is not valid JSON")
    first = found[0] if found else {"field": "request", "message": "invalid"}
    return problem(422, "invalid-input", f"{first['field']}: {first['message']}", errors=found)


def _field_name(loc: Sequence[int | str]) -> str:
    """The bad field as the client names it: `task`, `env.HOME`, `limit`, `Idempotency-Key`; `body` when
    the body as a whole is wrong. The same names the services give `InvalidInput.field`."""
    parts = [str(part) for part in loc]
    if len(parts) > 1 and parts[0] in _LOCATIONS:
        parts = parts[1:]
    return ".".join(
        part if len(part) <= _MAX_FIELD_PART_CHARS else f"{part[:_MAX_FIELD_PART_CHARS]}…" for part in parts
    )


def install_problem_handlers(app: FastAPI) -> None:
    @app.exception_handler(errors.OutpostError)
    async def on_outpost_error(_: Request, exc: errors.OutpostError) -> Response:
        return outpost_error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def on_validation_error(_: Request, exc: RequestValidationError) -> Response:
        return validation_response(exc)

    @app.exception_handler(StarletteHTTPException)
    async def on_http_error(_: Request, exc: StarletteHTTPException) -> Response:
        slug = "not-found" if exc.status_code == 404 else "http-error"
        return problem(exc.status_code, slug, str(exc.detail), headers=dict(exc.headers or {}))

    @app.exception_handler(Exception)
    async def on_unexpected(request: Request, exc: Exception) -> Response:
        log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
        return problem(500, "internal", "internal server error; the server log has the details")
