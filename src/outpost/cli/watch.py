"""Watching a dispatch: polling it until it ends, paging its stored events, and following them live.

Polls back off from a short first delay: most shell dispatches end within milliseconds, so the first
polls come quickly; a long quiet run costs a few requests a second. Following reads the dispatch's event
stream (server-sent events) and reopens it where it stopped when the connection drops or the server
restarts: each event is shown once, in order.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import Protocol

from pydantic import ValidationError
from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from outpost.cli.client import ApiClient
from outpost.cli.display import outcome
from outpost.cli.errors import DispatchUnsuccessful
from outpost.cli.sse import SseEvent, SseParser
from outpost.domain.dispatch import TERMINAL_STATUSES, DispatchStatus
from outpost.errors import OutpostError, RateLimited, Unavailable
from outpost.schemas.dispatches import DispatchRead, EventRead

FIRST_DELAY_S = 0.02
MAX_DELAY_S = 0.5
GROWTH = 1.5
RECONNECT_FIRST_DELAY_S = 0.1
RECONNECT_MAX_DELAY_S = 2.0
RECONNECT_GIVE_UP_S = 30.0
_SEQ = re.compile(r"[0-9]{1,18}")


def raise_unless_succeeded(dispatch: DispatchRead) -> None:
    """Raises DispatchUnsuccessful for every terminal status except succeeded."""
    if dispatch.status != DispatchStatus.SUCCEEDED:
        raise DispatchUnsuccessful(outcome(dispatch), dispatch.status)


class Backoff:
    """Delays between polls: FIRST_DELAY_S, growing by GROWTH up to MAX_DELAY_S."""

    def __init__(self) -> None:
        self.delay_s = FIRST_DELAY_S

    def sleep(self) -> None:
        time.sleep(self.delay_s)
        self.delay_s = min(self.delay_s * GROWTH, MAX_DELAY_S)


def wait_until_ended(api: ApiClient, dispatch: DispatchRead, progress_to: Console) -> DispatchRead:
    """Poll until the dispatch reaches a terminal status and return it as it ended.

    While waiting, a spinner with the status and the elapsed time runs on `progress_to`, if that is a
    terminal (a log file gets nothing); it is erased when the wait is over.
    """
    columns = (SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn())
    backoff = Backoff()
    with Progress(*columns, console=progress_to, transient=True, disable=not progress_to.is_terminal) as bar:
        task = bar.add_task(_waiting_text(dispatch))
        while not dispatch.status.is_terminal:
            backoff.sleep()
            dispatch = api.get_dispatch(dispatch.id)
            bar.update(task, description=_waiting_text(dispatch))
    return dispatch


def _waiting_text(dispatch: DispatchRead) -> str:
    return f"dispatch {dispatch.id} {dispatch.status}"


def page_events(api: ApiClient, dispatch_id: str, after_seq: int, sink: EventSink) -> None:
    """Hand each event stored now after `after_seq` to `sink`, in sequence order."""
    while True:
        page = api.list_events(dispatch_id, after_seq)
        for event in page.items:
            sink.show(event)
        if page.next_after is None or page.next_after <= after_seq:  # the last page (or a server gone wrong)
            return
        after_seq = page.next_after


class EventSink(Protocol):
    """Where followed events go (see `outpost.cli.event_printer`)."""

    def show(self, event: EventRead) -> None: ...

    def show_unreadable(self, event: SseEvent) -> None:
        """An event of the stream that is not an event of the dispatch as this CLI knows them."""


class Reconnects:
    """When to try a lost stream again: after RECONNECT_FIRST_DELAY_S, doubling up to RECONNECT_MAX_DELAY_S,
    until attempts have failed for RECONNECT_GIVE_UP_S in a row."""

    def __init__(
        self, clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep
    ) -> None:
        """`clock` and `sleep` replace the real ones, for tests."""
        self._clock = clock
        self._sleep = sleep
        self._delay_s = RECONNECT_FIRST_DELAY_S
        self._failing_since: float | None = None

    def connected(self) -> None:
        """A stream opened: a later failure starts a new count towards giving up."""
        self._failing_since = None

    def progressed(self) -> None:
        """Events came: the next failure is tried again quickly."""
        self._delay_s = RECONNECT_FIRST_DELAY_S

    def wait_after(self, error: OutpostError, not_before_s: float = 0.0) -> None:
        """Sleep before the next attempt. Raises Unavailable (saying what `error` was) once attempts have
        failed for RECONNECT_GIVE_UP_S."""
        now = self._clock()
        if self._failing_since is None:
            self._failing_since = now
        left_s = self._failing_since + RECONNECT_GIVE_UP_S - now
        if left_s <= 0:
            raise Unavailable(
                f"gave up following the events after {RECONNECT_GIVE_UP_S:.0f} s of failing to reconnect: "
                f"{error.detail}"
            ) from error
        self._sleep(min(max(self._delay_s, not_before_s), left_s))
        self._delay_s = min(self._delay_s * 2, RECONNECT_MAX_DELAY_S)


class _StreamEnd(Enum):
    TERMINAL = "the terminal event came"
    CLOSED = "the server closed the stream before it"
    RESUME = "the server asked to resume (this client fell behind)"


@dataclass
class _Cursor:
    seq: int
    """The last event shown: a stream resumes after it, and nothing up to it is shown again."""


def follow_events(
    api: ApiClient, dispatch_id: str, after_seq: int, sink: EventSink, reconnects: Reconnects | None = None
) -> None:
    """Hand each event after `after_seq` to `sink` as it happens, once each and in order, until the
    dispatch's terminal event; from its live event stream, reopened after `after_seq`'s successor
    (`Last-Event-ID`) whenever the connection is lost or the server restarts.

    Raises what opening the stream raises (NotFound, InvalidInput, AuthenticationFailed, …), except
    Unavailable and RateLimited, which are retried until `reconnects` gives up with Unavailable.
    """
    reconnects = reconnects or Reconnects()
    cursor = _Cursor(after_seq)
    ended_before_opening = False
    while True:
        try:
            end = _read_stream(api, dispatch_id, cursor, sink, reconnects)
            if end is _StreamEnd.TERMINAL or (end is _StreamEnd.CLOSED and ended_before_opening):
                return  # an ended dispatch's stream sends what is left of it, all of it, then closes
            if end is _StreamEnd.CLOSED:
                # A stream that was live closes early when the server stops; one of a dispatch that had
                # ended (the resume point past its terminal event) closes with nothing left to send.
                ended_before_opening = api.get_dispatch(dispatch_id).status.is_terminal
                if not ended_before_opening:
                    reconnects.wait_after(Unavailable(f"the server closed the stream: {end.value}"))
        except RateLimited as exc:
            reconnects.wait_after(exc, exc.retry_after_s)
        except Unavailable as exc:
            reconnects.wait_after(exc)


def _read_stream(
    api: ApiClient, dispatch_id: str, cursor: _Cursor, sink: EventSink, reconnects: Reconnects
) -> _StreamEnd:
    with api.open_event_stream(dispatch_id, cursor.seq) as chunks:
        reconnects.connected()
        parser = SseParser()
        for chunk in chunks:
            for event in parser.feed(chunk):
                end = _take(event, cursor, sink)
                if end is not None:
                    return end
                reconnects.progressed()
    return _StreamEnd.CLOSED


def _take(event: SseEvent, cursor: _Cursor, sink: EventSink) -> _StreamEnd | None:
    """Show `event` unless it was shown already; what it ends, if anything."""
    if event.event == "resume":
        return _StreamEnd.RESUME
    seq = _seq(event.id)
    if seq is None:  # not an event of the dispatch: nothing to resume after
        sink.show_unreadable(event)
        return None
    if seq <= cursor.seq:
        return None
    shown = _event_read(event)
    if shown is None:
        sink.show_unreadable(event)
    else:
        sink.show(shown)
    cursor.seq = seq
    return _StreamEnd.TERMINAL if shown is not None and _is_terminal(shown) else None


def _seq(event_id: str | None) -> int | None:
    return int(event_id) if event_id is not None and _SEQ.fullmatch(event_id) else None


def _event_read(event: SseEvent) -> EventRead | None:
    """The event's data as `/logs` shows events; None when it is not that (cut, or not such JSON)."""
    if event.truncated:
        return None
    try:
        return EventRead.model_validate_json(event.data)
    except ValidationError:
        return None


def _is_terminal(event: EventRead) -> bool:
    status = event.data.get("status")
    return event.kind == "status" and isinstance(status, str) and status in TERMINAL_STATUSES
