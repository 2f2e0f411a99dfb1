"""The download's `Content-Disposition`: whatever the artifact's name, one `attachment` and two parameters."""

from __future__ import annotations

import re
from urllib.parse import unquote

import pytest

from outpost.api.routes.artifacts import content_disposition

# RFC 6266: a quoted fallback without quotes or backslashes, then RFC 8187's ext-value (attr-chars and %XX).
HEADER = re.compile(
    r"""attachment; filename="([A-Za-z0-9._+-]+)"; """
    r"""filename\*=UTF-8''((?:[A-Za-z0-9!#$&+.^_`|~-]|%[0-9A-F]{2})+)"""
)


@pytest.mark.parametrize(
    ("name", "fallback", "exact"),
    [
        ("changes.patch", "changes.patch", "changes.patch"),
        ("outputs/sub/r.txt", "r.txt", "r.txt"),
        ('outputs/a"; filename="evil.exe', "a___filename__evil.exe", 'a"; filename="evil.exe'),
        ("outputs/é ü;x.txt", "____x.txt", "é ü;x.txt"),
        ("outputs/%41\u202egnp.exe", "_41_gnp.exe", "%41\u202egnp.exe"),
    ],
)
def test_a_hostile_name_cannot_add_or_end_a_parameter(name: str, fallback: str, exact: str) -> None:
    header = content_disposition(name)
    matched = HEADER.fullmatch(header)
    assert matched is not None, header
    assert matched.group(1) == fallback
    assert unquote(matched.group(2), errors="strict") == exact  # the last segment, exactly
