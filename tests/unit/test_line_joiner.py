"""Cut lines are read whole again by the parser; lines never cut pass straight through."""

from __future__ import annotations

from outpost.sandbox.base import OutputBatch
from outpost.worker.line_joiner import LineJoiner


def test_lines_never_cut_pass_through_unchanged() -> None:
    assert list(LineJoiner().lines(OutputBatch("stdout", ["a", "b"]))) == ["a", "b"]


def test_a_cut_line_is_joined_across_batches_and_streams_stay_apart() -> None:
    joiner = LineJoiner()
    first = list(joiner.lines(OutputBatch("stdout", ["x", '{"a": "12'], frozenset({1}))))
    other = list(joiner.lines(OutputBatch("stderr", ["warning"])))
    rest = list(joiner.lines(OutputBatch("stdout", ['34"}', "y"])))
    assert (first, other, rest) == (["x"], ["warning"], ['{"a": "1234"}', "y"])


def test_a_line_over_the_join_limit_goes_out_in_its_pieces() -> None:
    joiner = LineJoiner(max_chars=10)
    out = list(joiner.lines(OutputBatch("stdout", ["aaaaaa", "bbbbbb", "c"], frozenset({0, 1}))))
    assert out == ["aaaaaa", "bbbbbb", "c"]


def test_a_line_the_run_never_ended_comes_out_at_finish() -> None:
    joiner = LineJoiner()
    assert list(joiner.lines(OutputBatch("stdout", ["abc"], frozenset({0})))) == []
    assert list(joiner.finish()) == [("stdout", "abc")]
    assert list(joiner.finish()) == []
