"""The fake provider's script: which turn a request is on, and what the scripted model answers.

Two turns cover every agent CLI: a call to a write tool while no tool result exists yet, then
final text. The write tool is picked from the ones the request offers, because each CLI names
(and shapes) its file-writing tool differently.
"""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass
from typing import Any

FILE_CONTENT = "hello from fake llm\n"
FINAL_TEXT = "DONE: wrote the file."
DEFAULT_PATH = "/tmp/fake-llm-hello.txt"

# Dedicated write tools first: they write exactly the content; shell tools are the fallback.
_WRITE_TOOLS = ("Write", "write_file", "write", "create_file", "apply_patch", "Edit")
_SHELL_TOOLS = ("bash", "Bash", "run_shell_command", "shell", "exec_command")
# Stops at a backslash too: the prompt is searched inside JSON text, where quotes are escaped.
_FILE_RE = re.compile(r"FILE=(/[^\s\"'\\]+)")


@dataclass(frozen=True)
class ToolCall:
    """A scripted call: `arguments` is a dict, except for freeform (custom) tools, where it is text."""

    name: str
    arguments: dict[str, Any] | str
    custom: bool = False

    def arguments_json(self) -> str:
        return self.arguments if isinstance(self.arguments, str) else json.dumps(self.arguments)


@dataclass(frozen=True)
class OfferedTool:
    name: str
    custom: bool = False


def target_path(body: object) -> str:
    """The absolute path after `FILE=` anywhere in the request (prompt, system or history)."""
    match = _FILE_RE.search(json.dumps(body))
    return match.group(1) if match else DEFAULT_PATH


def _patch(path: str) -> str:
    added = "".join(f"+{line}\n" for line in FILE_CONTENT.splitlines())
    return f"*** Begin Patch\n*** Add File: {path}\n{added}*** End Patch\n"


def _shell_command(path: str) -> str:
    return f"printf '%s' {shlex.quote(FILE_CONTENT)} > {shlex.quote(path)}"


def _code_mode_script(path: str) -> str:
    """Codex "code mode" (GPT-6 models): the model writes JavaScript that calls nested tools."""
    call = f"const r = await tools.apply_patch({json.dumps(_patch(path))});"
    return f"{call}\ntext(typeof r === 'string' ? r : JSON.stringify(r));\n"


def _write_arguments(name: str, path: str) -> dict[str, Any]:
    by_name: dict[str, dict[str, Any]] = {
        "Write": {"file_path": path, "content": FILE_CONTENT},
        "write_file": {"file_path": path, "content": FILE_CONTENT},
        "write": {"filePath": path, "content": FILE_CONTENT},
        "create_file": {"path": path, "content": FILE_CONTENT},
        "apply_patch": {"input": _patch(path)},
        "Edit": {"file_path": path, "old_string": "", "new_string": FILE_CONTENT, "replace_all": False},
    }
    return by_name[name]


def _shell_arguments(name: str, path: str) -> dict[str, Any]:
    command = _shell_command(path)
    if name == "exec_command":
        return {"cmd": command}
    if name == "shell":
        return {"command": ["bash", "-lc", command]}
    return {"command": command}


def choose_tool_call(offered: list[OfferedTool], path: str) -> ToolCall | None:
    """The write (or shell) call to make with the offered tools; None when none of them fits."""
    by_name = {tool.name: tool for tool in offered}
    for name in _WRITE_TOOLS:
        tool = by_name.get(name)
        if tool is None:
            continue
        if tool.custom and name == "apply_patch":
            # Codex declares apply_patch as a freeform tool: the input is the patch text itself.
            return ToolCall(name, _patch(path), custom=True)
        return ToolCall(name, _write_arguments(name, path))
    code_mode = by_name.get("exec")
    if code_mode is not None and code_mode.custom:
        return ToolCall("exec", _code_mode_script(path), custom=True)
    for name in _SHELL_TOOLS:
        if name in by_name:
            return ToolCall(name, _shell_arguments(name, path))
    return None


def next_tool_call(offered: list[OfferedTool], has_tool_result: bool, body: object) -> ToolCall | None:
    """The scripted decision: a tool call on the first turn, None (final text) afterwards."""
    if not offered or has_tool_result:
        return None
    return choose_tool_call(offered, target_path(body))
