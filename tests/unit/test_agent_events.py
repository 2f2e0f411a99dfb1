"""The helpers every output parser shares."""

from __future__ import annotations

import pytest

from outpost.agents.events import as_int, json_object, status_error_kind


@pytest.mark.parametrize(
    ("status", "kind"),
    [(401, "auth"), (403, "auth"), (402, "quota"), (429, "quota"), (500, "provider_error"),
     (503, "provider_error"), (400, None), (404, None), (200, None), (600, None), (-1, None)],
)  # fmt: skip
def test_a_providers_http_status_means_the_same_for_every_cli(status: int, kind: str | None) -> None:
    assert status_error_kind(status) == kind


@pytest.mark.parametrize(
    "line", ["", "not json", "[1, 2]", '"text"', "{", '{"a": 1', "[" * 100_000, "{" * 100_000]
)
def test_a_line_that_is_not_one_json_object_is_none(line: str) -> None:
    assert json_object(line) is None


@pytest.mark.parametrize(
    ("value", "count"), [(7, 7), (0, 0), (-3, 0), (True, 0), ("12", 0), (1.5, 0), (None, 0)]
)
def test_token_counts_from_untrusted_output_are_non_negative_ints(value: object, count: int) -> None:
    assert as_int(value) == count
