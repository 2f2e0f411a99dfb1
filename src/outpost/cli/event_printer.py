"""How the CLI shows a dispatch's events: to people (`EventPrinter`) and to scripts (`JsonEventPrinter`).

People get the run's output lines as the run wrote them, each on the stream it came from, and one short
line on stderr for everything else: status changes, what the agent did (tool calls, file changes) and
said (its text goes to stdout, with the output), usage and cost so far, provider errors, egress
decisions, the artifacts kept and the end. A kind this CLI does not know, or data not shaped as
expected, is printed raw and dim: never dropped, and never a crash (newer servers may add kinds).

Every text here comes from the server or from an agent: it is never read as Rich markup, and on a
terminal its control characters are shown escaped (`\\x1b`), so output cannot drive the terminal.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import click
from rich.text import Text

from outpost.agents.events import json_object
from outpost.cli import display
from outpost.cli.sse import SseEvent
from outpost.domain.dispatch import AgentName
from outpost.schemas.dispatches import EventRead

JSON_OUTPUT_AGENTS = frozenset({AgentName.CLAUDE, AgentName.CODEX, AgentName.GEMINI, AgentName.GROK})
"""Agents whose stdout is a stream of JSON events: those lines are shown through the `agent` events the
server parsed from them, not as they are."""
ARGS_PREVIEW_CHARS = 100
TEXT_PREVIEW_CHARS = 200
RAW_PREVIEW_CHARS = 1000
COMMIT_PREFIX_CHARS = 12
# The argument of a tool call that says most about it, for the tools agents use most.
_TELLING_ARGS = ("command", "cmd", "file_path", "path", "pattern", "url", "query")
_ESCAPED = {code: f"\\x{code:02x}" for code in (*range(0x20), *range(0x7F, 0xA0)) if chr(code) not in "\t\n"}
_STATUS_STYLES = {
    "succeeded": "bold green", "failed": "bold red", "timed_out": "bold red", "cancelled": "bold yellow",
}  # fmt: skip
_CHANGE_MARKS = {"add": ("+", "green"), "update": ("~", "yellow"), "delete": ("-", "red")}


class _Unexpected(Exception):
    """The event's data is not what its kind should hold."""


@dataclass(frozen=True, slots=True)
class _Line:
    text: str
    style: str = ""
    to_stdout: bool = False


Data = Mapping[str, object]


class EventPrinter:
    """Shows events for people (see the module docstring)."""

    def __init__(self, agent: str | None = None) -> None:
        """`agent`: the dispatch's agent; the stdout JSON lines of JSON_OUTPUT_AGENTS are left out."""
        self._out = display.console()
        self._err = display.console(stderr=True)
        self._fold_json_stdout = agent in JSON_OUTPUT_AGENTS
        self._renderers: dict[str, Callable[[Data], list[_Line]]] = {
            "log": self._log, "status": _status, "notice": _notice, "agent": _agent, "usage": _usage,
            "provider_error": _provider_error, "egress": _egress, "artifacts": _artifacts,
            "compute": _compute,
        }  # fmt: skip

    def show(self, event: EventRead) -> None:
        render = self._renderers.get(event.kind)
        try:
            lines = render(event.data) if render is not None else None
        except _Unexpected:
            lines = None
        if lines is None:
            data = json.dumps(event.data, ensure_ascii=False, default=str)
            lines = [_raw(f"{event.seq} {event.kind}", data)]
        for line in lines:
            self._print(line)

    def show_unreadable(self, event: SseEvent) -> None:
        label = f"{event.id or '-'} {event.event}{' (cut short)' if event.truncated else ''}"
        self._print(_raw(label, event.data))

    def _print(self, line: _Line) -> None:
        console = self._out if line.to_stdout else self._err
        if not console.is_terminal:  # pipes and files get the text as it came (and no styles)
            click.echo(line.text, err=not line.to_stdout)
            return
        console.print(Text(line.text.translate(_ESCAPED), style=line.style), soft_wrap=True)

    def _log(self, data: Data) -> list[_Line]:
        text, stream = _text(data, "line"), data.get("stream")
        if stream not in ("stdout", "stderr"):
            raise _Unexpected
        if stream == "stdout" and self._fold_json_stdout and json_object(text) is not None:
            return []
        return [_Line(text, "red" if stream == "stderr" else "", to_stdout=stream == "stdout")]


class JsonEventPrinter:
    """Shows each event as one line of JSON with the fields of a `/logs` item, for scripts."""

    def show(self, event: EventRead) -> None:
        click.echo(event.model_dump_json())

    def show_unreadable(self, event: SseEvent) -> None:
        # stdout stays JSON lines only: scripts read it; people read stderr.
        preview = _preview(event.data, RAW_PREVIEW_CHARS)
        display.note(f"outpost: left out an event this CLI cannot read: {preview}")


def _status(data: Data) -> list[_Line]:
    status = _text(data, "status")
    text = status
    reason, detail, note = _maybe_text(data, "reason"), _maybe_text(data, "detail"), _maybe_text(data, "note")
    exit_code = _maybe_count(data, "exit_code", signed=True)
    if reason:
        text += f" ({reason})"
    if detail:
        text += f": {detail}"
    if note:
        text += f" [{note}]"
    if exit_code:  # 0 goes without saying once it succeeded
        text += f", exit code {exit_code}"
    return [_Line(f"-- {text}", _STATUS_STYLES.get(status, "bold cyan"))]


def _notice(data: Data) -> list[_Line]:
    return [_Line(f"-- {_text(data, 'message')}", "yellow")]


def _agent(data: Data) -> list[_Line]:
    """What the agent's output meant, as the server parsed it (see `outpost.agents.events`)."""
    kind = data.get("type")
    if kind == "text":
        return [_Line(_text(data, "text"), to_stdout=True)]
    if kind == "tool_call":
        return [_Line(f"-> {_text(data, 'name')} {_tool_args(data.get('input'))}".rstrip(), "cyan")]
    if kind == "file_change":
        mark, style = _CHANGE_MARKS.get(str(data.get("kind")), ("?", "yellow"))
        return [_Line(f"   {mark} {_text(data, 'path')}", style)]
    if kind == "error":
        error_kind = _maybe_text(data, "kind")
        label = f"agent error ({error_kind})" if error_kind else "agent error"
        return [_Line(f"!! {label}: {_text(data, 'message')}", "red")]
    if kind == "final":
        return _final(data)
    if kind == "cli_usage":
        return []  # the agent's own count; the gateway's metering (`usage` events) is what is billed
    raise _Unexpected


def _final(data: Data) -> list[_Line]:
    if data.get("is_error") is not True:
        return []  # its text is the result, already shown as the agent's text
    text = _maybe_text(data, "text")
    said = f": {_preview(text, TEXT_PREVIEW_CHARS)}" if text else ""
    return [_Line(f"!! the agent reported a failure{said}", "red")]


def _tool_args(value: object) -> str:
    """A tool call's arguments on one short line: the telling one when there is one, else all as JSON."""
    if value is None or value == {}:
        return ""
    if not isinstance(value, Mapping):
        return _preview(json.dumps(value, ensure_ascii=False, default=str), ARGS_PREVIEW_CHARS)
    for name in _TELLING_ARGS:
        telling = value.get(name)
        if isinstance(telling, str):
            return _preview(telling, ARGS_PREVIEW_CHARS)
        if isinstance(telling, list) and all(isinstance(part, str) for part in telling):
            return _preview(" ".join(telling), ARGS_PREVIEW_CHARS)
    return _preview(json.dumps(value, ensure_ascii=False, default=str), ARGS_PREVIEW_CHARS)


def _usage(data: Data) -> list[_Line]:
    """The run's model usage so far, as the gateway metered it."""
    total = data.get("total")
    cost = data.get("total_cost_usd")
    if not isinstance(total, Mapping) or not isinstance(cost, int | float) or isinstance(cost, bool):
        raise _Unexpected
    names = ("input", "output", "cache_read", "cache_write")
    counts = {name: _maybe_count(total, f"{name}_tokens") or 0 for name in names}
    tokens = f"{counts['input']} in, {counts['output']} out"
    if counts["cache_read"] or counts["cache_write"]:
        tokens += f" (cache: {counts['cache_read']} read, {counts['cache_write']} written)"
    return [_Line(f"   tokens so far: {tokens}; ${cost:.4f}", "dim")]


def _compute(data: Data) -> list[_Line]:
    """What the run's sandbox used, as the ledger charges it: so far (a sample), or in the end."""
    cpu_usec, memory_byte_s = _maybe_count(data, "cpu_usec"), _maybe_count(data, "memory_byte_s")
    peak = _maybe_count(data, "memory_peak_bytes")
    if cpu_usec is None or memory_byte_s is None or peak is None:
        raise _Unexpected
    used = f"{cpu_usec / 1e6:.2f} vCPU-s, {memory_byte_s / 2**30:.2f} GB-s of memory"
    label = "compute so far" if data.get("final") is False else "compute"
    return [_Line(f"   {label}: {used} (peak {display.size(peak)})", "dim")]


def _provider_error(data: Data) -> list[_Line]:
    text = f"!! {_text(data, 'provider')} answered {data.get('status')}"
    kind, retry_at = _maybe_text(data, "kind"), _maybe_text(data, "retry_at")
    text += f" ({kind})" if kind else ""
    text += f": {_text(data, 'message')}"
    text += f"; retry after {retry_at}" if retry_at else ""
    return [_Line(text, "yellow")]


def _egress(data: Data) -> list[_Line]:
    target = f"{_maybe_text(data, 'method') or ''} {_text(data, 'host')}:{data.get('port')}".strip()
    if data.get("allowed") is True:
        return [_Line(f"   egress {target} allowed", "dim")]
    return [_Line(f"!! egress refused: {target}: {_maybe_text(data, 'reason') or 'not allowed'}", "yellow")]


def _artifacts(data: Data) -> list[_Line]:
    """What the run left: files changed, patch size, artifacts kept, the push, warnings."""
    names = data.get("names")
    if not isinstance(names, list):
        raise _Unexpected
    parts = []
    files_changed, patch_bytes = _maybe_count(data, "files_changed"), _maybe_count(data, "patch_bytes")
    if files_changed is not None:
        parts.append(f"{files_changed} file{'' if files_changed == 1 else 's'} changed")
    if patch_bytes is not None:
        parts.append(f"patch {display.size(patch_bytes)}")
    parts.append(f"{len(names)} artifact{'' if len(names) == 1 else 's'} kept")
    lines = [_Line(f"-- {', '.join(parts)}", "bold")]
    lines.extend(_push(data.get("push")))
    warnings = data.get("warnings", [])
    if not isinstance(warnings, list):
        raise _Unexpected
    lines.extend(_Line(f"!! {warning}", "yellow") for warning in warnings)
    return lines


def _push(push: object) -> list[_Line]:
    if push is None:
        return []
    if not isinstance(push, Mapping):
        raise _Unexpected
    if push.get("pushed") is True:
        commit = (_maybe_text(push, "commit") or "")[:COMMIT_PREFIX_CHARS]
        return [_Line(f"-- pushed to {_text(push, 'branch')}{f' ({commit})' if commit else ''}", "bold")]
    return [_Line(f"!! {_maybe_text(push, 'detail') or 'not pushed'}", "yellow")]


def _raw(label: str, data: str) -> _Line:
    return _Line(f"[{label}] {_preview(data, RAW_PREVIEW_CHARS)}", "dim")


def _preview(text: str, limit: int) -> str:
    line = " ".join(text.split())
    return line if len(line) <= limit else f"{line[: limit - 1]}…"


def _text(data: Data, key: str) -> str:
    value = data.get(key)
    if not isinstance(value, str):
        raise _Unexpected
    return value


def _maybe_text(data: Data, key: str) -> str | None:
    value = data.get(key)
    if value is not None and not isinstance(value, str):
        raise _Unexpected
    return value


def _maybe_count(data: Data, key: str, *, signed: bool = False) -> int | None:
    value = data.get(key)
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or (value < 0 and not signed):
        raise _Unexpected
    return value
