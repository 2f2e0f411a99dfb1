"""Aider against the fake provider: no tools, the edit written in the reply's text, in the edit format
aider's system prompt asks for, over each API aider reaches through litellm (Chat Completions,
Anthropic Messages, Gemini), streamed or not.

The prompts here are short excerpts of aider-chat 0.86.2's (`aider/coders/*_prompts.py`), holding the
phrases the fake detects; the request shapes are those litellm was seen to send for aider.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.fakes.provider import FakeProvider
from tests.fakes.provider_client import ANTHROPIC, CHAT, GEMINI_JSON, GEMINI_SSE, post, sse_json
from tests.fakes.provider_script import FINAL_TEXT

# editblock_prompts.py (main system prompt and system reminder).
DIFF_PROMPT = """Act as an expert software developer.
All changes to files must use this *SEARCH/REPLACE block* format.
ONLY EVER RETURN CODE IN A *SEARCH/REPLACE BLOCK*!
# *SEARCH/REPLACE block* Rules:
Every *SEARCH/REPLACE block* must use this format:
3. The start of search block: <<<<<<< SEARCH
"""
# wholefile_prompts.py (system reminder).
WHOLE_PROMPT = """Act as an expert software developer.
To suggest changes to a file you MUST return the entire content of the updated file.
You MUST use this *file listing* format:
"""
# udiff_prompts.py; "*entire* code block" must not read as the whole format.
UDIFF_PROMPT = """Act as an expert software developer.
For each file that needs to be changed, write out the changes similar to a unified diff like `diff -U0` would produce.
When editing a function, method, loop, etc use a hunk to replace the *entire* code block.
To make a new file, show a diff from `--- /dev/null` to `+++ path/to/new/file.ext`.
"""  # noqa: E501
PROMPTS = {"diff": DIFF_PROMPT, "whole": WHOLE_PROMPT, "udiff": UDIFF_PROMPT}
EXPECTED = {
    "diff": (
        "I will create the file.\n\n"
        "hello.txt\n```\n<<<<<<< SEARCH\n=======\nhello from fake llm\n>>>>>>> REPLACE\n```\n"
    ),
    "whole": "I will create the file.\n\nhello.txt\n```\nhello from fake llm\n```\n",
    "udiff": (
        "I will create the file.\n\n"
        "```diff\n--- /dev/null\n+++ hello.txt\n@@ ... @@\n+hello from fake llm\n```\n"
    ),
}
TASK = "Create the file FILE=/workspace/hello.txt please"
# Aider's few-shot example: an assistant turn holding an edit, which is not our edit.
EXAMPLE = [
    ("user", "Put hello() in its own file."),
    ("assistant", "hello.py\n```python\n<<<<<<< SEARCH\n=======\ndef hello(): ...\n>>>>>>> REPLACE\n```"),
    ("user", "I switched to a new code base. Please don't consider the above files or try to edit them."),
    ("assistant", "Ok."),
]


@pytest.fixture(scope="module")
def shared() -> Iterator[FakeProvider]:
    with FakeProvider() as fake:
        yield fake


@pytest.fixture
def client(shared: FakeProvider) -> Iterator[httpx.Client]:
    shared.reset()
    with httpx.Client(base_url=shared.base_url, timeout=5) as http:
        yield http


def turns(*later: tuple[str, str], task: str = TASK) -> list[tuple[str, str]]:
    """Aider's conversation after its system prompt: the example, the task, then `later` turns."""
    return [*EXAMPLE, ("user", task), *later]


def chat_request(system: str, conversation: list[tuple[str, str]], stream: bool) -> dict[str, Any]:
    # Aider's reminder comes again as a trailing system message (`reminder: sys` models).
    messages = [{"role": "system", "content": system}]
    messages += [{"role": role, "content": text} for role, text in conversation]
    messages.append({"role": "system", "content": system})
    return {"model": "gpt-4.1", "messages": messages, "stream": stream, "temperature": 0}


def anthropic_request(system: str, conversation: list[tuple[str, str]], stream: bool) -> dict[str, Any]:
    messages = [{"role": role, "content": [{"type": "text", "text": text}]} for role, text in conversation]
    system_blocks = [{"type": "text", "text": system}]
    return {"model": "claude-sonnet-4-5", "system": system_blocks, "messages": messages, "stream": stream}


def gemini_request(system: str, conversation: list[tuple[str, str]]) -> dict[str, Any]:
    contents = [
        {"role": "model" if role == "assistant" else "user", "parts": [{"text": text}]}
        for role, text in conversation
    ]
    return {"contents": contents, "system_instruction": {"parts": [{"text": system}]}}


def chat_reply(client: httpx.Client, body: dict[str, Any]) -> str:
    response = post(client, CHAT, body)
    if not body["stream"]:
        return str(response.json()["choices"][0]["message"]["content"])
    return "".join(chunk["choices"][0]["delta"].get("content") or "" for chunk in sse_json(response.text))


def anthropic_reply(client: httpx.Client, body: dict[str, Any]) -> str:
    response = post(client, ANTHROPIC, body)
    if not body["stream"]:
        return "".join(block["text"] for block in response.json()["content"] if block["type"] == "text")
    deltas = (event.get("delta", {}) for event in sse_json(response.text))
    return "".join(delta["text"] for delta in deltas if delta.get("type") == "text_delta")


def gemini_reply(client: httpx.Client, body: dict[str, Any], stream: bool) -> str:
    response = post(client, GEMINI_SSE if stream else GEMINI_JSON, body)
    chunks = sse_json(response.text) if stream else [response.json()]
    parts = (part for chunk in chunks for part in chunk["candidates"][0]["content"]["parts"])
    return "".join(part.get("text", "") for part in parts)


def reply(
    client: httpx.Client, api: str, system: str, conversation: list[tuple[str, str]], stream: bool
) -> str:
    """The text of the fake's answer to aider's request in `api`'s shape."""
    if api == "chat":
        return chat_reply(client, chat_request(system, conversation, stream))
    if api == "anthropic":
        return anthropic_reply(client, anthropic_request(system, conversation, stream))
    return gemini_reply(client, gemini_request(system, conversation), stream)


APIS = ["chat", "anthropic", "gemini"]


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
@pytest.mark.parametrize("api", APIS)
@pytest.mark.parametrize("edit_format", list(PROMPTS))
def test_first_turn_writes_the_edit_in_the_format_asked(
    client: httpx.Client, edit_format: str, api: str, stream: bool
) -> None:
    assert reply(client, api, PROMPTS[edit_format], turns(), stream) == EXPECTED[edit_format]


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
@pytest.mark.parametrize("api", APIS)
def test_follow_up_turn_gets_the_final_text(client: httpx.Client, api: str, stream: bool) -> None:
    """After our edit, aider may reflect (lint errors, "I updated the files."): that turn ends the script."""
    later = [("assistant", EXPECTED["diff"]), ("user", "# Fix any errors below, if possible.")]
    assert reply(client, api, DIFF_PROMPT, turns(*later), stream) == FINAL_TEXT


@pytest.mark.parametrize(
    ("task", "path"),
    [
        ("Create FILE=/workspace/hello.txt please", "hello.txt"),
        ("Create FILE=/workspace/src/app.py.", "src/app.py"),  # aider's root is the workspace
        ("Create `FILE=notes.md`", "notes.md"),
        ("Create FILE=/srv/out.txt", "/srv/out.txt"),  # outside the workspace: aider takes it as is
        ("Create a file", "fake-llm-hello.txt"),
    ],
)
def test_edit_names_the_file_as_aider_sees_it(client: httpx.Client, task: str, path: str) -> None:
    text = reply(client, "chat", WHOLE_PROMPT, turns(task=task), stream=False)
    assert text == f"I will create the file.\n\n{path}\n```\nhello from fake llm\n```\n"


def test_system_prompt_sent_as_a_user_message(client: httpx.Client) -> None:
    """Models without system prompts (`use_system_prompt: false`) get aider's prompt as a user turn."""
    conversation = [("user", UDIFF_PROMPT), ("assistant", "Ok."), *turns()]
    body = {"model": "o1-mini", "messages": [{"role": r, "content": t} for r, t in conversation]}
    assert post(client, CHAT, body).json()["choices"][0]["message"]["content"] == EXPECTED["udiff"]


def test_offered_tools_win_over_aider_prompts(client: httpx.Client) -> None:
    body = chat_request(DIFF_PROMPT, turns(), stream=False)
    body["tools"] = [{"type": "function", "function": {"name": "write_file"}}]
    call = post(client, CHAT, body).json()["choices"][0]["message"]["tool_calls"][0]
    assert call["function"]["name"] == "write_file"
