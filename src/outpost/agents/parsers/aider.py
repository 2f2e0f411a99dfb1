"""Aider's output (`aider --message`, plain prose on stdout) as typed events.

Aider has no JSON mode. Its own status lines, the assistant's streamed reply and litellm's errors all reach
stdout as plain lines, and aider exits 0 even when the API call failed. So the only lines read for meaning
are those whose format aider's source fixes (`aider/coders/base_coder.py`, `aider/exceptions.py`):

* `Tokens: 2.3k sent[, 1.5k cache write][, 8.2k cache hit], 26 received.` with ` Cost: $X message,
  $Y session.` on the same line, or on the next when both cache numbers are shown → `UsageReport`.
  There is one such line per model reply, so the run's usage is their sum and its cost the last `$Y`.
* `Applied edit to <path>` → `FileChange` update. Under `--yes-always` aider does not say whether it created
  the file, so only `Creating empty file <path>` (a file named on the command line) counts as an add.
* `litellm.<Name>Error: …` (and `litellm.Timeout`) → `AgentError`, kind from the exception class.
* The startup banner (`Aider v…`, `Main model: …`, `Git repo: …`, …) and aider's other status lines →
  `RawText`: they are aider talking, not the model.

Every other line is the assistant's prose (`Text`, one per line, blank lines included). A reply ends at its
`Tokens:` line, and the final text is the prose of the last such reply.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from decimal import Decimal
from typing import Literal

from outpost.agents.events import (
    AgentError,
    AgentEvent,
    ErrorKind,
    FileChange,
    FinalResult,
    RawText,
    Stream,
    Text,
    Usage,
    UsageReport,
)

# Bounded digit runs keep Decimal, int and float conversions cheap and finite on hostile input.
_COUNT = r"\d{1,15}(?:\.\d{1,6})?[kKmM]?"
_DOLLARS = r"\d{1,15}(?:\.\d{1,30})?"
_COST_TEXT = rf"Cost: \$(?P<message>{_DOLLARS}) message, \$(?P<session>{_DOLLARS}) session\."
_TOKENS = re.compile(
    rf"Tokens: (?P<sent>{_COUNT}) sent(?:, (?P<write>{_COUNT}) cache write)?"
    rf"(?:, (?P<hit>{_COUNT}) cache hit)?, (?P<received>{_COUNT}) received\.(?: {_COST_TEXT})?"
)
_COST = re.compile(_COST_TEXT)
_ERROR = re.compile(r"litellm\.(?P<name>\w*(?:Error|Timeout|Exception))\b")
_MODEL = re.compile(r"(?:Main model|Model): (?P<model>\S+) with ")
_VERSION = re.compile(r"Aider v\d")
_BANNER = re.compile(
    r"Aider v\d|(?:Main model|Editor model|Weak model|Model): |Git repo: |Repo-map: |Added .+ to the chat"
    r"|Restored previous conversation|Multiline mode: |Warning|See: https?://|Analytics have been"
    r"|Use /help|You can skip this check"
)
# Aider's own messages around a reply: retries, the friendly text after a litellm error, commits, skips.
_STATUS = re.compile(
    r"Retrying in [\d.]+ seconds|Did not apply edit to |Committing .+ before applying edits"
    r"|Commit [0-9a-f]{7,} |Skipping edits to |Only \d+ reflections allowed|The API provider "
    r"|Permission was denied|Insufficient credits|OpenRouter or the upstream API provider"
    r"|https://aider\.chat/docs/"
)
_ERROR_KINDS: dict[str, ErrorKind] = {
    "AuthenticationError": "auth",
    "PermissionDeniedError": "auth",
    "RateLimitError": "quota",
    "RouterRateLimitError": "quota",
    "BudgetExceededError": "quota",
}
_FILE_LINES: tuple[tuple[str, Literal["add", "update"]], ...] = (
    ("Applied edit to ", "update"),
    ("Creating empty file ", "add"),
)
_SCALE = {"": 1, "k": 1_000, "m": 1_000_000}


def _count(text: str | None) -> int:
    """A token count as `format_tokens` prints it (`26`, `2.3k`, `15k`), back to an int (rounded by aider)."""
    if not text:
        return 0
    suffix = text[-1].lower() if text[-1].isalpha() else ""
    return int(Decimal(text[: len(text) - len(suffix)]) * _SCALE[suffix])


def _usage(match: re.Match[str]) -> Usage:
    """The tokens of one reply. Aider's `sent` includes cached input (litellm folds cache reads and writes
    into `prompt_tokens`), while `Usage.input_tokens` excludes it, so the cache numbers are taken out."""
    write, hit = _count(match["write"]), _count(match["hit"])
    sent = _count(match["sent"])
    return Usage(max(sent - write - hit, 0), _count(match["received"]), hit, write)


def _error_kind(name: str, line: str) -> ErrorKind:
    """auth / quota by litellm exception class (aider's own special case: APIError for no credits)."""
    if "insufficient credits" in line.lower():
        return "quota"
    return _ERROR_KINDS.get(name, "provider_error")


def _join(lines: list[str]) -> str | None:
    """Prose lines as one text, without the blank lines aider puts around a reply."""
    text = "\n".join(lines).strip("\n")
    return text if text.strip() else None


class AiderOutputParser:
    """Parses one `aider --message` run. Pure: state is only what the lines said so far."""

    def __init__(self) -> None:
        self._in_banner = True
        self._model: str | None = None
        self._prose: list[str] = []
        self._reply: list[str] | None = None
        self._usage: Usage | None = None
        self._cost_usd: float | None = None
        self._error_pending = False
        self._handlers: tuple[Callable[[str], list[AgentEvent] | None], ...] = (
            self._tokens_line,
            self._cost_line,
            self._error_line,
            self._file_line,
            self._status_line,
            self._banner_line,
        )

    def feed(self, stream: Stream, line: str) -> list[AgentEvent]:
        if stream == "stderr":
            return [RawText("stderr", line), *(self._error_line(line) or [])]
        for handler in self._handlers:
            events = handler(line)
            if events is not None:
                return events
        self._in_banner = False
        self._prose.append(line)
        return [Text(line)]

    def finish(self) -> list[AgentEvent]:
        """The run failed when an error was not followed by a completed reply, or no reply completed at all
        (aider's exit code is 0 either way)."""
        lines = self._reply if self._reply is not None else self._prose
        is_error = self._error_pending or self._reply is None
        result = FinalResult(_join(lines), is_error=is_error, usage=self._usage, cost_usd=self._cost_usd)
        return [result]

    def _tokens_line(self, text: str) -> list[AgentEvent] | None:
        """A reply is complete: its prose becomes the last reply, and an earlier error was recovered from."""
        if not text.startswith("Tokens: "):
            return None
        match = _TOKENS.fullmatch(text)
        if match is None:
            return [RawText("stdout", text)]
        usage = _usage(match)
        self._add_usage(usage)
        if match["session"]:
            self._cost_usd = float(match["session"])
        self._reply, self._prose = self._prose, []
        self._error_pending = self._in_banner = False
        return [UsageReport(usage, model=self._model)]

    def _cost_line(self, text: str) -> list[AgentEvent] | None:
        """`Cost:` on a line of its own (when both cache numbers were shown): no event type carries a cost
        before the end, so the line stays RawText and the cost goes to the final result."""
        if not text.startswith("Cost: "):
            return None
        match = _COST.fullmatch(text)
        if match is not None:
            self._cost_usd = float(match["session"])
        return [RawText("stdout", text)]

    def _error_line(self, text: str) -> list[AgentEvent] | None:
        match = _ERROR.match(text)
        if match is None:
            return None
        self._error_pending = True
        self._prose = []
        return [AgentError(text, kind=_error_kind(match["name"], text))]

    def _file_line(self, text: str) -> list[AgentEvent] | None:
        for prefix, kind in _FILE_LINES:
            path = text.removeprefix(prefix)
            if path != text and path.strip():
                self._prose = []
                return [FileChange(path, kind)]
        return None

    def _status_line(self, text: str) -> list[AgentEvent] | None:
        if _STATUS.match(text) is None:
            return None
        self._prose = []
        return [RawText("stdout", text)]

    def _banner_line(self, text: str) -> list[AgentEvent] | None:
        """Banner lines until the first line that is not one. The version line starts the banner over:
        nothing printed before it can be the model's reply."""
        if _VERSION.match(text):
            self._in_banner, self._prose = True, []
        if not self._in_banner or (text.strip() and _BANNER.match(text) is None):
            return None
        model = _MODEL.match(text)
        if model is not None:
            self._model = model["model"]
        return [RawText("stdout", text)]

    def _add_usage(self, usage: Usage) -> None:
        total = self._usage or Usage()
        self._usage = Usage(
            total.input_tokens + usage.input_tokens,
            total.output_tokens + usage.output_tokens,
            total.cache_read_tokens + usage.cache_read_tokens,
            total.cache_write_tokens + usage.cache_write_tokens,
        )
