"""Letting model calls through against a limit (a tenant's budget, a dispatch's `max_cost_usd`) while other
calls against it are still in flight. Pure: no I/O (decision 0014).

Each call let through holds a reservation: the most it can cost, bounded from its request before it is
sent. A call may start when what is spent plus what is held plus its own bound fits under the limit, or
when no other call holds anything (a call alone may then go over, by at most its own cost). Otherwise it
waits for calls in flight to end. So spending past the limit is only ever done by one call at a time,
and nothing is let through once the limit is reached.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Verdict(enum.Enum):
    GO = "go"
    """Let the call through, holding its bound until its cost is known."""
    WAIT = "wait"
    """Other calls in flight may use up what is left: ask again when one of them ends."""
    SPENT = "spent"
    """The limit is reached: refuse the call."""


@dataclass(frozen=True, slots=True)
class Pot:
    """One limit as a call finds it, in micro-USD."""

    limit: int | None
    """None: no limit."""
    spent: int
    held: int = 0
    """The bounds of the calls in flight."""
    calls_in_flight: int = 0

    def verdict(self, bound: int) -> Verdict:
        if self.limit is None:
            return Verdict.GO
        if self.spent >= self.limit:
            return Verdict.SPENT
        if self.calls_in_flight == 0 or self.spent + self.held + bound <= self.limit:
            return Verdict.GO
        return Verdict.WAIT
