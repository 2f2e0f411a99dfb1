"""Object keys: names from an agent become keys strictly under their prefix, or are refused."""

from __future__ import annotations

import pytest

from outpost.errors import InvalidInput
from outpost.storage.keys import (
    MAX_KEY_BYTES,
    MAX_SEGMENT_BYTES,
    MAX_STORE_PREFIX_BYTES,
    join_key,
    validate_key,
    validate_prefix,
    validate_store_prefix,
)

PREFIX = "tenants/t1/dispatches/d1/artifacts"


@pytest.mark.parametrize(
    ("name", "key"),
    [
        ("report.md", "report.md"),
        ("out/report.md", "out/report.md"),
        ("./out//report.md", "out/report.md"),  # `.` and empty segments are dropped
        ("out/./x/", "out/x"),
        (b"out/report.md", "out/report.md"),  # bytes are decoded as UTF-8
        ("résumé ☃.txt", "résumé ☃.txt"),
        ("...hidden/.x/x.", "...hidden/.x/x."),  # dots inside a name are fine
        ("C:/x", "C:/x"),  # a drive letter is just a segment here
        ("a" * MAX_SEGMENT_BYTES, "a" * MAX_SEGMENT_BYTES),
        ("é" * (MAX_SEGMENT_BYTES // 2), "é" * (MAX_SEGMENT_BYTES // 2)),
    ],
)
def test_valid_names_join_under_the_prefix(name: str | bytes, key: str) -> None:
    joined = join_key(PREFIX, name)
    assert joined == f"{PREFIX}/{key}"
    assert validate_key(joined) == joined


HOSTILE_NAMES: list[tuple[str | bytes, str]] = [
    ("..", "dots only"),
    ("../x", "dots only"),
    ("a/../../x", "dots only"),
    ("a/..", "dots only"),
    ("...", "dots only"),  # Windows trims trailing dots, so such names turn into others there
    ("/etc/passwd", "relative path"),
    ("//server/share", "relative path"),
    (b"/etc/passwd", "relative path"),
    ("..\\..\\windows", "backslash"),
    ("a\\b", "backslash"),
    ("x\x00y", "U\\+0000"),
    ("x\ny", "U\\+000A"),
    ("x\ry", "U\\+000D"),
    ("x\ty", "U\\+0009"),
    ("x\x1b[31m", "U\\+001B"),  # terminal escapes
    ("x\x7f", "U\\+007F"),
    ("x\x85", "U\\+0085"),  # C1 next line
    ("x\u2028y", "U\\+2028"),  # line separator
    ("report\u202egnp.exe", "U\\+202E"),  # right-to-left override
    ("x\udcff", "not valid UTF-8"),  # a surrogate escape of the byte 0xff
    (b"x\xff", "not valid UTF-8"),
    (b"\xc0\xaf", "not valid UTF-8"),  # an overlong `/`
    ("", "empty"),
    (".", "empty"),
    ("./", "empty"),
    ("//", "relative path"),
    ("a" * (MAX_SEGMENT_BYTES + 1), "segment is longer"),
    ("é" * (MAX_SEGMENT_BYTES // 2 + 1), "segment is longer"),  # bytes are counted, not characters
    ("a/" * MAX_KEY_BYTES, "longer than"),
    ("x" * 100_000, "longer than"),
]


@pytest.mark.parametrize(("name", "problem"), HOSTILE_NAMES)
def test_hostile_names_are_refused_with_a_reason(name: str | bytes, problem: str) -> None:
    with pytest.raises(InvalidInput, match=problem):
        join_key(PREFIX, name)


@pytest.mark.parametrize(
    "name",
    ["../x", "../../tenants/t2/secret", "a/../../b", "/x", "\\x", "x/\x00/y", ".", "..", "./..", "...."],
)
@pytest.mark.parametrize("prefix", [PREFIX, f"{PREFIX}/"])
def test_no_name_escapes_the_prefix(prefix: str, name: str) -> None:
    try:
        key = join_key(prefix, name)
    except InvalidInput:
        return
    assert key.startswith(f"{PREFIX}/")
    assert ".." not in key.split("/")


def test_the_whole_key_is_limited_in_bytes() -> None:
    room = MAX_KEY_BYTES - len(PREFIX) - 1
    name = "/".join(["s" * 99] * (room // 100)) + "/" + "t" * (room % 100 - 1)
    assert len(join_key(PREFIX, name).encode()) == MAX_KEY_BYTES - 1
    with pytest.raises(InvalidInput, match=f"longer than {MAX_KEY_BYTES} bytes"):
        join_key(PREFIX, name + "tt")


@pytest.mark.parametrize("prefix", ["", "/abs", "a//b", "a/../b", "a\\b"])
def test_a_bad_trusted_prefix_is_refused_too(prefix: str) -> None:
    with pytest.raises(InvalidInput):
        join_key(prefix, "x")


@pytest.mark.parametrize("key", ["a", "a/b", "tenants/t1/x.tar.gz", ".hidden", "a b/c+d", "日本/語"])
def test_valid_keys_pass_unchanged(key: str) -> None:
    assert validate_key(key) == key


@pytest.mark.parametrize("key", ["", "/a", "a/", "a//b", "./a", "a/.", "..", "a\\b", "a\x00", "\udc80"])
def test_keys_are_never_normalized_silently(key: str) -> None:
    with pytest.raises(InvalidInput):
        validate_key(key)


@pytest.mark.parametrize("prefix", ["", "a", "a/", "a/b", "a/b/", "a/b/c.t", "a/."])
def test_prefixes_may_end_anywhere(prefix: str) -> None:
    assert validate_prefix(prefix) == prefix


@pytest.mark.parametrize("prefix", ["/", "/a", "a//", "../", "a/../b", "a\\", "\n"])
def test_prefixes_cannot_walk_or_hide(prefix: str) -> None:
    with pytest.raises(InvalidInput):
        validate_prefix(prefix)


@pytest.mark.parametrize(("given", "used"), [("", ""), ("outpost", "outpost/"), ("a/b/", "a/b/")])
def test_store_prefixes_end_in_a_slash(given: str, used: str) -> None:
    assert validate_store_prefix(given) == used


@pytest.mark.parametrize("given", ["/abs", "a//b", "../x", "x" * MAX_STORE_PREFIX_BYTES])
def test_unusable_store_prefixes_are_refused(given: str) -> None:
    with pytest.raises(InvalidInput):
        validate_store_prefix(given)
