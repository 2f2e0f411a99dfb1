"""A dispatch tail holds the newest frames within its byte budget and says when a cursor fell out of it."""

from __future__ import annotations

from outpost.events.tails import DispatchTail, Frame


def _frame(seq: int, size: int = 100, terminal: bool = False) -> Frame:
    return Frame(seq, b"x" * size, terminal)


def test_a_new_tail_holds_nothing_and_serves_cursors_from_its_start() -> None:
    tail = DispatchTail("t", "d", start_seq=5, max_bytes=1000)
    assert tail.frames_after(5) == []
    assert tail.frames_after(9) == []
    assert tail.frames_after(4) is None  # event 5 was never held: read it from the store


def test_frames_after_a_cursor_come_oldest_first() -> None:
    tail = DispatchTail("t", "d", start_seq=0, max_bytes=10_000)
    tail.append([_frame(1), _frame(2), _frame(3)])
    assert [frame.seq for frame in tail.frames_after(1) or []] == [2, 3]
    assert [frame.seq for frame in tail.frames_after(0) or []] == [1, 2, 3]
    assert tail.frames_after(3) == []


def test_past_its_budget_the_tail_drops_the_oldest_frames_and_raises_its_floor() -> None:
    tail = DispatchTail("t", "d", start_seq=0, max_bytes=350)
    tail.append([_frame(seq) for seq in range(1, 6)])
    assert [frame.seq for frame in tail.frames_after(2) or []] == [3, 4, 5]
    assert tail.floor == 2
    assert tail.frames_after(1) is None


def test_a_frame_larger_than_the_budget_is_still_held_alone() -> None:
    tail = DispatchTail("t", "d", start_seq=0, max_bytes=100)
    tail.append([_frame(1, 50), _frame(2, 5000)])
    assert [frame.seq for frame in tail.frames_after(1) or []] == [2]


def test_the_terminal_frame_ends_the_tail_and_every_change_replaces_the_news_event() -> None:
    tail = DispatchTail("t", "d", start_seq=0, max_bytes=1000)
    before = tail.news
    tail.append([_frame(1), _frame(2, terminal=True)])
    assert before.is_set()
    assert tail.news is not before
    assert not tail.news.is_set()
    assert tail.ended
    stopped = tail.news
    tail.stop(RuntimeError("store down"))
    assert stopped.is_set()
    assert isinstance(tail.failure, RuntimeError)
