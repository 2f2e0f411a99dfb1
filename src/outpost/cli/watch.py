"""Watching a dispatch: polling it until it ends, and paging (or following) its events.

Both poll the REST API with a short backoff: most shell dispatches end within milliseconds, so the first
polls come quickly; a long quiet run costs a few requests a second.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from outpost.cli.client import ApiClient
from outpost.cli.display import outcome
from outpost.cli.errors import DispatchUnsuccessful
from outpost.domain.dispatch import TERMINAL_STATUSES, DispatchStatus
from outpost.schemas.dispatches import DispatchRead, EventRead

FIRST_DELAY_S = 0.02
MAX_DELAY_S = 0.5
GROWTH = 1.5


def raise_unless_succeeded(dispatch: DispatchRead) -> None:
    """Raises DispatchUnsuccessful for every terminal status except succeeded."""
    if dispatch.status != DispatchStatus.SUCCEEDED:
        raise DispatchUnsuccessful(outcome(dispatch), dispatch.status)


class Backoff:
    """Delays between polls: FIRST_DELAY_S, growing by GROWTH up to MAX_DELAY_S; `reset` starts over."""

    def __init__(self) -> None:
        self.delay_s = FIRST_DELAY_S

    def sleep(self) -> None:
        time.sleep(self.delay_s)
        self.delay_s = min(self.delay_s * GROWTH, MAX_DELAY_S)

    @property
    def is_slow(self) -> bool:
        """True once the delay has reached its cap: nothing has changed for a while."""
        return self.delay_s >= MAX_DELAY_S

    def reset(self) -> None:
        self.delay_s = FIRST_DELAY_S


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


def page_events(
    api: ApiClient, dispatch_id: str, after_seq: int, handle: Callable[[EventRead], None], *, follow: bool
) -> None:
    """Hand each event after `after_seq` to `handle`, in sequence order.

    Without `follow`, stop at the last event stored now. With `follow`, keep polling for new events until
    the dispatch has ended and every event up to its terminal one has been handled.
    """
    backoff = Backoff()
    while True:
        page = api.list_events(dispatch_id, after_seq)
        for event in page.items:
            handle(event)
            after_seq = event.seq
            if follow and _is_terminal(event):
                return
        if page.next_after is not None:
            backoff.reset()
            continue
        if not follow:
            return
        if backoff.is_slow and _has_ended(api, dispatch_id):
            # An ended dispatch writes no more events; one last page catches any written meanwhile.
            page_events(api, dispatch_id, after_seq, handle, follow=False)
            return
        backoff.sleep()


def _is_terminal(event: EventRead) -> bool:
    return event.kind == "status" and event.data.get("status") in TERMINAL_STATUSES


def _has_ended(api: ApiClient, dispatch_id: str) -> bool:
    # Following from past the terminal event (`logs --after`) would wait forever for it otherwise.
    return api.get_dispatch(dispatch_id).status.is_terminal
