"""What a model call may cost at most, read from its request before it is sent (decision 0014).

A call's input is its request body: every token of it is at least one byte of the body, so the body's
size bounds the input tokens (plus the few the provider adds around tools and system text). Its output
is bounded by the limit the request sets, in whichever field its wire API names it; a request without
one is bounded by a server-wide cap. Reasoning tokens are output tokens, within the same limit.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

PROVIDER_ADDED_TOKENS = 4096
"""Input tokens a provider may add to a request (its tool-use and system preambles)."""
_OUTPUT_LIMIT_FIELDS = ("max_tokens", "max_completion_tokens", "max_output_tokens")
"""Anthropic Messages and Chat Completions; Chat Completions' newer name; OpenAI Responses."""


@dataclass(frozen=True, slots=True)
class PlannedCall:
    """What the gateway knows of a call before forwarding it."""

    model: str | None
    """The model the request names (None when it names none the gateway can read)."""
    input_tokens_bound: int
    output_tokens_bound: int | None
    """The request's own output limit; None when it sets none."""


def plan_call(model: str | None, body: bytes, parsed: dict[str, Any] | None) -> PlannedCall:
    return PlannedCall(model, len(body) + PROVIDER_ADDED_TOKENS, _output_limit(parsed or {}))


def _output_limit(body: dict[str, Any]) -> int | None:
    found = [body.get(name) for name in _OUTPUT_LIMIT_FIELDS]
    config = body.get("generationConfig")  # Gemini
    if isinstance(config, dict):
        found.append(config.get("maxOutputTokens"))
    limits = [
        value for value in found if isinstance(value, int) and not isinstance(value, bool) and value > 0
    ]
    return max(limits) if limits else None  # the larger, should a provider honour that one
