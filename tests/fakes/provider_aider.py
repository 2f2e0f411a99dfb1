"""Aider's turn of the script: aider offers no tools and parses edits out of the reply's text.

Aider's system prompt spells out the edit format it will parse, so the fake detects the format from
phrases quoted from aider-chat 0.86.2's prompts (`aider/coders/*_prompts.py`) and writes the scripted
file in that format. The system reminder holding most of these phrases is always appended to aider's
main system prompt (`base_coder.format_chat_chunks`).
"""

from __future__ import annotations

import posixpath
import re
from typing import Literal

from tests.fakes.provider_script import DEFAULT_PATH, FILE_CONTENT
from tests.fakes.provider_text import Conversation

EditFormat = Literal["diff", "whole", "udiff"]
PROSE = "I will create the file."
# Aider runs with cwd = the workspace, which the sandbox mounts here; aider wants paths relative to it.
WORKSPACE = "/workspace"

# Checked in this order, the first format with a marker present wins. Each marker occurs only in its
# own format's prompts (diff-fenced and udiff-simple share them, and parse our replies the same way).
MARKERS: tuple[tuple[EditFormat, tuple[str, ...]], ...] = (
    # editblock_prompts.py: "*SEARCH/REPLACE block* Rules", "3. The start of search block: <<<<<<< SEARCH".
    ("diff", ("<<<<<<< SEARCH", "SEARCH/REPLACE")),
    # udiff_prompts.py: "similar to a unified diff like `diff -U0` would produce",
    # "To make a new file, show a diff from `--- /dev/null` to `+++ path/to/new/file.ext`".
    ("udiff", ("diff -U0", "--- /dev/null")),
    # wholefile_prompts.py: "You MUST use this *file listing* format",
    # "To suggest changes to a file you MUST return the entire content of the updated file."
    ("whole", ("*file listing*", "entire content of the updated file")),
)
# Relative paths too: aider names files relative to its cwd. Backticks and quotes end a path in prose.
_FILE_RE = re.compile(r"FILE=([^\s\"'`\\]+)")
_TRAILING = ".,;:!?)]}"


def detect_format(conversation: Conversation) -> EditFormat | None:
    """The edit format aider's prompt asks for, or None when the request is not aider's."""
    # Models with `use_system_prompt: false` get aider's system prompt as the first user message.
    for text in (conversation.system, "\n".join(conversation.user)):
        for edit_format, markers in MARKERS:
            if any(marker in text for marker in markers):
                return edit_format
    return None


def aider_path(conversation: Conversation) -> str:
    """The `FILE=` path from the latest user message that has one, as aider (cwd = workspace) names it."""
    for text in reversed(conversation.user):
        match = _FILE_RE.search(text)
        if match:
            return _relative(match.group(1).rstrip(_TRAILING))
    return posixpath.basename(DEFAULT_PATH)


def _relative(path: str) -> str:
    # Aider would also take the absolute path, but real models name files as the chat shows them.
    if path.startswith(f"{WORKSPACE}/"):
        return posixpath.relpath(path, WORKSPACE)
    return path


def edit_text(edit_format: EditFormat, path: str) -> str:
    """Aider's prose, then the new file in `edit_format`; the reply ends with the edit."""
    if edit_format == "diff":
        # An empty SEARCH section creates the file (or appends to the empty file aider made for it).
        edit = f"{path}\n```\n<<<<<<< SEARCH\n=======\n{FILE_CONTENT}>>>>>>> REPLACE\n```\n"
    elif edit_format == "whole":
        edit = f"{path}\n```\n{FILE_CONTENT}```\n"
    else:
        # Aider's udiff parser only reads ```diff fences; `--- /dev/null` marks a new file.
        added = "".join(f"+{line}\n" for line in FILE_CONTENT.splitlines())
        edit = f"```diff\n--- /dev/null\n+++ {path}\n@@ ... @@\n{added}```\n"
    return f"{PROSE}\n\n{edit}"


def has_scripted_edit(conversation: Conversation) -> bool:
    """Whether an earlier assistant turn carried our edit, i.e. this is aider's follow-up (reflection).

    Aider's few-shot examples are assistant turns holding edits too, so only our own content counts.
    """
    content = FILE_CONTENT.strip()
    return any(content in text for text in conversation.assistant)


def aider_reply(conversation: Conversation) -> str | None:
    """The first-turn edit text for an aider request; None for a later turn or a request not from aider."""
    if has_scripted_edit(conversation):
        return None
    edit_format = detect_format(conversation)
    return None if edit_format is None else edit_text(edit_format, aider_path(conversation))
