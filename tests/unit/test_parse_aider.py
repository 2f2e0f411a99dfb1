"""The Aider parser against a captured `aider --message` run, the error lines aider documents, and hostile
lines."""

from __future__ import annotations

from typing import TypeVar

import pytest

from outpost.agents.events import (
    AgentError,
    AgentEvent,
    FileChange,
    FinalResult,
    RawText,
    Stream,
    Text,
    Usage,
    UsageReport,
)
from outpost.agents.parsers.aider import AiderOutputParser
from tests.unit.agent_outputs import FIXTURES

T = TypeVar("T")
BANNER = ["Aider v0.86.2", "Main model: anthropic/claude-sonnet-5-5 with diff edit format", "Git repo: none"]
BANNER += [""]
# The first line is str(exc) as aider prints it; the second is aider's description for the class.
AUTH_ERROR = [
    "litellm.AuthenticationError: AuthenticationError: OpenAIException - Incorrect API key provided",
    "The API provider is not able to authenticate you. Check your API key.",
]
RATE_LIMIT = [
    "litellm.RateLimitError: RateLimitError: OpenAIException - Rate limit reached for requests",
    "The API provider has rate limited you. Try again later or check your quotas.",
    "Retrying in 0.2 seconds...",
]
REPLY = ["Done.", "", "Tokens: 1.1k sent, 22 received. Cost: $0.0012 message, $0.0012 session."]


def parse(lines: list[str], stream: Stream = "stdout") -> list[AgentEvent]:
    parser = AiderOutputParser()
    events = [event for line in lines for event in parser.feed(stream, line)]
    return events + parser.finish()


def final(events: list[AgentEvent]) -> FinalResult:
    assert isinstance(events[-1], FinalResult)
    assert not any(isinstance(event, FinalResult) for event in events[:-1])
    return events[-1]


def of_type(events: list[AgentEvent], kind: type[T]) -> list[T]:
    return [event for event in events if isinstance(event, kind)]


def test_the_captured_run_yields_its_edit_usage_cost_and_reply() -> None:
    events = parse((FIXTURES / "aider-stdout.txt").read_text().splitlines())
    usage = Usage(input_tokens=2300, output_tokens=26)
    assert of_type(events, FileChange) == [FileChange("hello.txt", "update")]
    assert of_type(events, UsageReport) == [UsageReport(usage, model="openai/gpt-4.1")]
    assert of_type(events, AgentError) == []
    result = final(events)
    assert result.text == (
        "I will create the file.\n\nhello.txt\n```\n<<<<<<< SEARCH\n=======\nhello from fake llm\n"
        ">>>>>>> REPLACE\n```"
    )
    assert (result.is_error, result.usage, result.cost_usd, result.session_id) == (False, usage, 0.0049, None)


def test_the_banner_is_raw_text_and_the_reply_is_text() -> None:
    events = parse((FIXTURES / "aider-stdout.txt").read_text().splitlines())
    raw = [event.line for event in of_type(events, RawText)]
    assert {"Aider v0.86.2", "Weak model: openai/gpt-4.1-mini", "Repo-map: disabled"} <= set(raw)
    assert "Analytics have been permanently disabled." in raw
    texts = [event.text for event in of_type(events, Text)]
    assert texts[0] == "I will create the file."
    assert not any(text.startswith(("Aider v", "Main model", "Git repo")) for text in texts)


def test_every_line_yields_at_least_one_event() -> None:
    lines = (FIXTURES / "aider-stdout.txt").read_text().splitlines()
    parser = AiderOutputParser()
    assert all(parser.feed("stdout", line) for line in lines)


def test_cache_numbers_are_taken_out_of_sent_and_a_cost_line_of_its_own_is_read() -> None:
    events = parse(
        [
            *BANNER,
            "Done.",
            "Tokens: 12k sent, 1.5k cache write, 8.2k cache hit, 1.2k received.",
            "Cost: $0.05 message, $0.12 session.",
        ]
    )
    usage = Usage(input_tokens=2300, output_tokens=1200, cache_read_tokens=8200, cache_write_tokens=1500)
    assert of_type(events, UsageReport) == [UsageReport(usage, model="anthropic/claude-sonnet-5-5")]
    assert RawText("stdout", "Cost: $0.05 message, $0.12 session.") in events
    assert (final(events).usage, final(events).cost_usd) == (usage, 0.12)


def test_replies_sum_their_usage_and_the_final_text_is_the_last_reply() -> None:
    events = parse(
        [
            *BANNER,
            "First try.",
            "Tokens: 2.3k sent, 26 received. Cost: $0.0049 message, $0.0049 session.",
            "Applied edit to a.py",
            "Second try.",
            "",
            "Tokens: 15k sent, 1M received. Cost: $0.02 message, $0.0249 session.",
            "Applied edit to b.py",
        ]
    )
    result = final(events)
    assert result.text == "Second try."
    assert result.usage == Usage(input_tokens=17_300, output_tokens=1_000_026)
    assert result.cost_usd == 0.0249
    assert of_type(events, FileChange) == [FileChange("a.py"), FileChange("b.py")]


def test_a_model_without_a_price_reports_tokens_and_no_cost() -> None:
    result = final(parse([*BANNER, "Hi.", "Tokens: 900 sent, 5 received."]))
    assert (result.usage, result.cost_usd, result.is_error) == (Usage(900, 5), None, False)


def test_a_file_aider_creates_from_the_command_line_is_an_add() -> None:
    events = parse(["Creating empty file new.py", *BANNER, *REPLY])
    assert of_type(events, FileChange) == [FileChange("new.py", "add")]


def test_an_authentication_error_fails_the_run_with_kind_auth() -> None:
    events = parse([*BANNER, *AUTH_ERROR])
    assert of_type(events, AgentError) == [AgentError(AUTH_ERROR[0], kind="auth")]
    assert RawText("stdout", AUTH_ERROR[1]) in events
    result = final(events)
    assert (result.is_error, result.text, result.usage) == (True, None, None)


def test_a_rate_limit_that_is_not_retried_away_fails_the_run_with_kind_quota() -> None:
    events = parse([*BANNER, *RATE_LIMIT])
    assert of_type(events, AgentError) == [AgentError(RATE_LIMIT[0], kind="quota")]
    assert final(events).is_error


def test_a_rate_limit_followed_by_a_completed_reply_is_reported_but_does_not_fail_the_run() -> None:
    events = parse([*BANNER, *RATE_LIMIT, *REPLY])
    assert [error.kind for error in of_type(events, AgentError)] == ["quota"]
    result = final(events)
    assert (result.is_error, result.text) == (False, "Done.")


def test_an_error_after_a_completed_reply_fails_the_run_but_keeps_that_reply() -> None:
    events = parse([*BANNER, *REPLY, "litellm.APIConnectionError: Connection refused"])
    result = final(events)
    assert (result.is_error, result.text) == (True, "Done.")
    assert of_type(events, AgentError)[0].kind == "provider_error"


@pytest.mark.parametrize(
    ("line", "kind"),
    [
        ("litellm.BadRequestError: OpenAIException - fake 401", "provider_error"),
        ("litellm.InternalServerError: OpenAIException - boom", "provider_error"),
        ("litellm.PermissionDeniedError: no access", "auth"),
        ("litellm.Timeout: Connection timed out after 600.0 seconds.", "provider_error"),
        ('litellm.APIError: APIError: OpenrouterException - {"code":402, "insufficient credits"}', "quota"),
    ],
)
def test_litellm_error_classes_map_to_kinds(line: str, kind: str) -> None:
    assert of_type(parse([line]), AgentError) == [AgentError(line, kind=kind)]


def test_stderr_is_raw_text_and_an_error_there_is_also_an_agent_error() -> None:
    events = parse(["DeprecationWarning: x", AUTH_ERROR[0]], stream="stderr")
    assert events[:3] == [
        RawText("stderr", "DeprecationWarning: x"),
        RawText("stderr", AUTH_ERROR[0]),
        AgentError(AUTH_ERROR[0], kind="auth"),
    ]
    assert final(events).is_error


def test_a_run_without_any_completed_reply_is_an_error() -> None:
    assert final(parse([])) == FinalResult(None, is_error=True)
    assert final(parse([*BANNER, "partial repl"])).is_error


@pytest.mark.parametrize(
    "line",
    [
        "Tokens: ",
        "Tokens: 1e999 sent, 1 received.",
        "Tokens: " + "9" * 5000 + " sent, 1 received.",
        "Tokens: -5 sent, 1 received.",
        "Tokens: 2.3k sent, 26 received. Cost: $abc message, $1 session.",
        "Tokens: 2.3k sent, 26 received. Cost: $" + "9" * 400 + " message, $1 session.",
        "Cost: $-1 message, $nan session.",
        "Cost: $" + "1" * 5000 + " message, $1 session.",
    ],
)
def test_malformed_usage_lines_are_raw_text_and_report_nothing(line: str) -> None:
    events = parse([*BANNER, line])
    assert events[len(BANNER)] == RawText("stdout", line)
    assert (final(events).usage, final(events).cost_usd) == (None, None)


def test_the_largest_counts_aider_could_print_are_read_exactly() -> None:
    result = final(parse(["Tokens: 999999999999999.999999M sent, 0 received."]))
    assert result.usage == Usage(input_tokens=999_999_999_999_999_999_999)


@pytest.mark.parametrize("line", ["\x00\ufffd", "litellm.", "Applied edit to ", "   ", "x" * 100_000])
def test_hostile_lines_never_raise(line: str) -> None:
    for stream in ("stdout", "stderr"):
        events = parse([*BANNER, line, line], stream=stream)
        assert isinstance(events[-1], FinalResult)
