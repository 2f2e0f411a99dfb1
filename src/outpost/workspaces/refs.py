"""Which refs a dispatch may ask for: branch and tag names, and commit ids. Pure: no I/O.

A ref is handed to `git rev-parse`, whose revision syntax goes far beyond names (`main~3`,
`:/message` searches every commit message, `@{yesterday}` reads reflogs); only plain names and hex ids
pass, so a ref means one thing and costs one lookup.
"""

from __future__ import annotations

import re

from outpost.errors import InvalidInput

FIELD = "repo.ref"
MAX_REF_CHARS = 255
_FULL_SHA = re.compile(r"[0-9a-f]{40}")
# Printable ASCII without the characters `git check-ref-format` forbids (space ~ ^ : ? * [ \ and DEL).
_REF_CHARS = re.compile(r"[!-~]+")
_FORBIDDEN = set("~^:?*[\\")


def is_full_sha(ref: str) -> bool:
    """Whether `ref` is a full 40-digit lower-case commit id (SHA-1)."""
    return _FULL_SHA.fullmatch(ref) is not None


def check_ref(ref: str) -> None:
    """Raises InvalidInput (field `repo.ref`) unless `ref` is a plain branch or tag name (`main`,
    `release/1.2`, `refs/tags/v1`) or a full or abbreviated commit id."""
    problem = ref_problem(ref)
    if problem is not None:
        raise InvalidInput(f"ref {ref[:MAX_REF_CHARS]!r} refused: {problem}", field=FIELD)


def ref_problem(ref: str) -> str | None:
    """Why `ref` is refused, or None."""
    checks = (
        (not ref, "it is empty"),
        (len(ref) > MAX_REF_CHARS, f"longer than {MAX_REF_CHARS} characters"),
        (ref.startswith("-"), "it starts with '-', which git would read as an option"),
        (
            not _REF_CHARS.fullmatch(ref) or bool(_FORBIDDEN & set(ref)),
            "give a branch name, a tag name or a commit id (no spaces, control characters or ~^:?*[\\)",
        ),
        (
            ".." in ref or "@{" in ref or "//" in ref or ref == "@",
            "'..', '@{' and '//' are not allowed in a ref",
        ),
        (
            ref.endswith(("/", ".", ".lock")) or any(part.startswith(".") for part in ref.split("/")),
            "a ref must not end with '/', '.' or '.lock', nor have a part starting with '.'",
        ),
    )
    return next((problem for refused, problem in checks if refused), None)
