"""Tool errors as RFC 9457 problems: the bodies the REST API would have answered with.

A failed tool call is an MCP tool result with `isError` set, its problem as the structured content (and
as text, for clients that read only text). The problems come from the REST API's own table
(`outpost.api.problems`), so a refused argument or an unknown dispatch reads the same over REST and MCP.
"""

from __future__ import annotations

from typing import Any

import orjson
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError
from starlette.responses import Response

from outpost.api.problems import outpost_error_response, problem, validation_response
from outpost.errors import OutpostError


class ToolFailed(Exception):
    """A tool call that ends in `problem`, already shaped (for failures that are not one OutpostError)."""

    def __init__(self, problem: dict[str, Any]) -> None:
        super().__init__(problem.get("detail", ""))
        self.problem = problem


def problem_of_error(exc: OutpostError) -> dict[str, Any]:
    """The problem the REST API answers `exc` with: type, title, status, detail (and `errors`)."""
    return _body(outpost_error_response(exc))


def problem_of_arguments(exc: ValidationError) -> dict[str, Any]:
    """422 naming each bad argument as REST names a bad field (`task`, `repo.url`); values not echoed."""
    return _body(validation_response(RequestValidationError(exc.errors())))


def internal_problem() -> dict[str, Any]:
    return _body(problem(500, "internal", "internal server error; the server log has the details"))


def _body(response: Response) -> dict[str, Any]:
    body: dict[str, Any] = orjson.loads(bytes(response.body))
    return body
