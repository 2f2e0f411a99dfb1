"""The lifecycle rules of ARCHITECTURE.md."""

from __future__ import annotations

import pytest

from outpost.domain.dispatch import TERMINAL_STATUSES, DispatchStatus, can_transition
from outpost.domain.ids import is_ulid, new_ulid

S = DispatchStatus


@pytest.mark.parametrize("terminal", sorted(TERMINAL_STATUSES))
def test_nothing_leaves_a_terminal_state(terminal: DispatchStatus) -> None:
    assert not any(can_transition(terminal, target) for target in S)


@pytest.mark.parametrize(
    ("source", "target"),
    [(S.QUEUED, S.PROVISIONING), (S.PROVISIONING, S.RUNNING), (S.RUNNING, S.SUCCEEDED),
     (S.RUNNING, S.TIMED_OUT), (S.QUEUED, S.CANCELLED), (S.RUNNING, S.CANCELLED), (S.RUNNING, S.QUEUED),
     (S.PROVISIONING, S.FAILED)],
)  # fmt: skip
def test_the_lifecycle_allows_its_transitions(source: DispatchStatus, target: DispatchStatus) -> None:
    assert can_transition(source, target)


@pytest.mark.parametrize(
    ("source", "target"),
    [(S.QUEUED, S.RUNNING), (S.QUEUED, S.SUCCEEDED), (S.QUEUED, S.TIMED_OUT), (S.PROVISIONING, S.SUCCEEDED),
     (S.RUNNING, S.PROVISIONING), (S.QUEUED, S.QUEUED)],
)  # fmt: skip
def test_the_lifecycle_refuses_skips_and_loops(source: DispatchStatus, target: DispatchStatus) -> None:
    assert not can_transition(source, target)


def test_ulids_are_time_ordered_and_recognized() -> None:
    first, second = new_ulid(), new_ulid()
    assert is_ulid(first)
    assert second > first
    assert not is_ulid(first.lower())
    assert not is_ulid(first[:-1])
    assert not is_ulid("8" + first[1:])  # beyond the largest timestamp a ULID can hold


def test_ulids_made_in_a_burst_are_strictly_increasing() -> None:
    burst = [new_ulid() for _ in range(10_000)]
    assert burst == sorted(set(burst))
    assert all(is_ulid(value) for value in burst[:100])
