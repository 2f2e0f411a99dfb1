"""A run printing a gigabyte, or millions of one-character lines, in the bwrap sandbox: the dispatch
finishes, its log is cut at the budget with one notice, and the flood is read and dropped in bulk."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest

from outpost.worker.recorder import EVENT_OVERHEAD_BYTES
from tests.conftest import MakeServer, Server
from tests.integration.helpers import TERMINAL, all_events, submit, wait_for_status
from tests.sandboxes import require_bwrap

pytestmark = pytest.mark.slow

MAX_LOG_BYTES = 2**20
MAX_LINE_BYTES = 16 * 1024  # the default: an endless line reaches the log in pieces this long
GIGABYTE_OF_LONG_LINES = 'yes "$(head -c 999 /dev/zero | tr "\\0" x)" | head -c 1000000000; echo done'
MILLIONS_OF_TINY_LINES = "yes | head -c 8000000; echo done"  # four million lines of "y"


@pytest.fixture
async def flooded(make_server: MakeServer, tmp_path: Path) -> Server:
    require_bwrap()
    uid_first = 500_000 + random.randrange(1000) * 64
    sandbox = {"backend": "bwrap", "uid_first": uid_first, "uid_count": 64}
    limits = {"requests_per_s": 0, "max_log_bytes": MAX_LOG_BYTES}
    return await make_server(data_dir=tmp_path / "data", sandbox=sandbox, limits=limits)


async def _flood(server: Server, script: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    headers = await server.new_tenant()
    created = await submit(server.client, headers, script, timeout_s=110)
    done = await wait_for_status(server.client, headers, created["id"], TERMINAL, timeout_s=115)
    return done, await all_events(server.client, headers, created["id"])


def _assert_cut_once(events: list[dict[str, Any]], slack_bytes: int = 2048) -> None:
    """Kept output fills the budget to within `slack_bytes` (at most one line that did not fit)."""
    logs = [event for event in events if event["kind"] == "log"]
    kept = sum(len(event["data"]["line"].encode()) + EVENT_OVERHEAD_BYTES for event in logs)
    assert MAX_LOG_BYTES - slack_bytes <= kept <= MAX_LOG_BYTES
    notices = [i for i, event in enumerate(events) if event["kind"] == "notice"]
    assert len(notices) == 1
    assert "output limit reached" in events[notices[0]]["data"]["message"]
    assert all(event["kind"] not in ("log", "agent") for event in events[notices[0] :])


async def test_a_gigabyte_of_output_is_capped_and_the_dispatch_still_succeeds(flooded: Server) -> None:
    done, events = await _flood(flooded, GIGABYTE_OF_LONG_LINES)
    assert done["status"] == "succeeded", done
    assert done["result"].endswith("done")  # the tail is still read to the end, past the cap
    _assert_cut_once(events)


async def test_millions_of_one_character_lines_cost_rows_against_the_budget(flooded: Server) -> None:
    done, events = await _flood(flooded, MILLIONS_OF_TINY_LINES)
    assert done["status"] == "succeeded", done
    assert done["result"].endswith("y\ndone")
    _assert_cut_once(events)
    assert len(events) < MAX_LOG_BYTES // EVENT_OVERHEAD_BYTES + 20


async def test_one_endless_line_without_a_newline_is_capped_and_its_end_is_the_result(
    flooded: Server,
) -> None:
    # 50 MB with no newline at all: the sandbox cuts it into pieces, the worker rejoins at most 8 MiB of
    # them for the parser, and the log keeps its budget's worth.
    done, events = await _flood(flooded, "head -c 50000000 /dev/zero | tr '\\0' x; printf END")
    assert done["status"] == "succeeded", done
    assert done["result"].endswith("xEND")
    _assert_cut_once(events, slack_bytes=MAX_LINE_BYTES + EVENT_OVERHEAD_BYTES)
