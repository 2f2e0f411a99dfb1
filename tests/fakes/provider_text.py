"""The plain text of a request's conversation in each wire API: system prompt, user and assistant turns.

Tool-less clients (aider) carry their instructions and their edits in text rather than in tool
blocks, so the script reads text. Each API nests it differently (strings, content blocks, Gemini
parts, a separate system field); these functions flatten it all to strings.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

Json = dict[str, Any]
_SYSTEM_ROLES = ("system", "developer")


@dataclass(frozen=True)
class Conversation:
    """The text of one request; `user[-1]` is the current prompt."""

    system: str = ""
    user: tuple[str, ...] = ()
    assistant: tuple[str, ...] = ()


def text_of(content: object) -> str:
    """Text from a string, a block or part with `text`, or a list of them (every API's content shape)."""
    if isinstance(content, str):
        return content
    if isinstance(content, dict):
        value = content.get("text")
        return value if isinstance(value, str) else ""
    if isinstance(content, list):
        return "\n".join(text for text in map(text_of, content) if text)
    return ""


def _dicts(value: object) -> list[Json]:
    return [item for item in value if isinstance(item, dict)] if isinstance(value, list) else []


def _collect(
    messages: Iterable[Json], content_key: str, assistant_role: str, system: list[str]
) -> Conversation:
    """Sorts role-tagged messages; system-role messages join the API's own system field."""
    user: list[str] = []
    assistant: list[str] = []
    for message in messages:
        role = message.get("role")
        text = text_of(message.get(content_key))
        if role in _SYSTEM_ROLES:
            system.append(text)
        elif role == assistant_role:
            assistant.append(text)
        elif role == "user":
            user.append(text)
    return Conversation("\n".join(text for text in system if text), tuple(user), tuple(assistant))


def anthropic_conversation(body: Json) -> Conversation:
    # litellm moves every system message (aider's prompt and its trailing reminder) into `system`.
    return _collect(_dicts(body.get("messages")), "content", "assistant", [text_of(body.get("system"))])


def chat_conversation(body: Json) -> Conversation:
    return _collect(_dicts(body.get("messages")), "content", "assistant", [])


def responses_conversation(body: Json) -> Conversation:
    items = body.get("input")
    if isinstance(items, str):  # the Responses API also takes a bare prompt string
        items = [{"role": "user", "content": items}]
    messages = (item for item in _dicts(items) if item.get("type", "message") == "message")
    return _collect(messages, "content", "assistant", [text_of(body.get("instructions"))])


def gemini_conversation(body: Json) -> Conversation:
    # The REST API takes either spelling; litellm sends `system_instruction`.
    instruction = body.get("systemInstruction") or body.get("system_instruction")
    system = text_of(instruction.get("parts")) if isinstance(instruction, dict) else text_of(instruction)
    return _collect(_dicts(body.get("contents")), "parts", "model", [system])
