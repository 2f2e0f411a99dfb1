"""`outpost dispatch --follow` and `outpost logs --follow` over the live event stream: real `outpost`
processes against a real `outpost serve`, through connections that drop and servers that restart."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.integration.processes import OUTPOST, ServerProcess, free_port, serving
from tests.integration.test_cli import (
    EXIT_DISPATCH_UNSUCCESSFUL,
    EXIT_USER_ERROR,
    Cli,
    make_admin_key,
    new_tenant_cli,
    served_cli_fixtures,
)

pytestmark = pytest.mark.slow

LINES = 20
# About a second of output, a line every 50 ms: followers see it arrive in many pieces.
TICKING = f"for i in $(seq 1 {LINES}); do echo line $i; sleep 0.05; done"
EXPECTED_OUTPUT = "".join(f"line {i}\n" for i in range(1, LINES + 1))


server, admin_key, cli = served_cli_fixtures("cli-follow")


def json_lines(stdout: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stdout.splitlines()]


def assert_whole(events: list[dict[str, Any]], status: str = "succeeded") -> None:
    """Every event from the first, once, in order, ending with the terminal one."""
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    assert (events[-1]["kind"], events[-1]["data"]["status"]) == ("status", status)


def output_of(events: list[dict[str, Any]]) -> list[str]:
    return [e["data"]["line"] for e in events if e["kind"] == "log" and e["data"]["stream"] == "stdout"]


def test_dispatch_follow_prints_every_line_once_in_order_and_how_it_ended(cli: Cli) -> None:
    result = cli("dispatch", "--agent", "shell", "--follow", f"{TICKING}; echo done >&2")
    assert result.code == 0, result
    assert result.stdout == EXPECTED_OUTPUT
    lines = result.stderr.splitlines()
    assert lines.index("-- running") < lines.index("done") < lines.index("-- succeeded")
    assert "0 files changed" in result.stderr  # the artifacts event
    assert lines[-1].endswith(" s")
    assert "succeeded in" in lines[-1]


def test_dispatch_follow_json_prints_each_event_once_and_exits_as_the_dispatch_ended(cli: Cli) -> None:
    result = cli("dispatch", "--agent", "shell", "--follow", "--json", TICKING)
    assert result.code == 0, result
    events = json_lines(result.stdout)
    assert_whole(events)
    assert output_of(events) == EXPECTED_OUTPUT.splitlines()
    assert result.stderr.startswith("dispatch ")  # the id, for the script to ask about it later

    failed = cli("dispatch", "--agent", "shell", "--follow", "--json", "echo before; exit 3")
    assert failed.code == EXIT_DISPATCH_UNSUCCESSFUL, failed
    events = json_lines(failed.stdout)
    assert_whole(events, "failed")
    assert events[-1]["data"]["exit_code"] == 3
    assert failed.stderr.splitlines()[-1].startswith("outpost: dispatch ")


def test_logs_follow_json_prints_the_same_events_as_the_logs_pages(cli: Cli) -> None:
    with cli.api() as api:
        dispatch_id = api.post("/v1/dispatches", json={"agent": "shell", "task": TICKING}).json()["id"]
        followed = cli("logs", dispatch_id, "--follow", "--json")
        assert followed.code == 0, followed
        stored = api.get(f"/v1/dispatches/{dispatch_id}/logs", params={"limit": 1000}).json()["items"]
    assert json_lines(followed.stdout) == stored
    assert_whole(stored)
    rest = cli("logs", dispatch_id, "--follow", "--json", "--after", "5")
    assert json_lines(rest.stdout) == stored[5:]


def test_following_an_unknown_dispatch_is_a_one_line_error(cli: Cli) -> None:
    for extra in ([], ["--json"]):
        result = cli("logs", "01HZZZZZZZZZZZZZZZZZZZZZZZ", "--follow", *extra)
        result.assert_one_line_error(EXIT_USER_ERROR, "no dispatch")
        assert result.stdout == ""


class DroppingProxy:
    """A TCP proxy to the server that cuts the first event stream through it once `cut_after` has gone
    by (client and server both see the connection drop); it notes the resume point of each stream."""

    def __init__(self, upstream_port: int, cut_after: bytes) -> None:
        self.port = free_port()
        self.resume_points: list[str | None] = []
        self._upstream_port = upstream_port
        self._cut_after = cut_after
        self._cut = threading.Event()
        self._listener = socket.create_server(("127.0.0.1", self.port))
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def close(self) -> None:
        self._listener.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self._upstream_port))
            streaming = threading.Event()
            threading.Thread(target=self._requests, args=(client, upstream, streaming), daemon=True).start()
            threading.Thread(target=self._responses, args=(upstream, client, streaming), daemon=True).start()

    def _requests(self, client: socket.socket, upstream: socket.socket, streaming: threading.Event) -> None:
        with contextlib.suppress(OSError):  # either end may be gone: the proxy just stops
            for chunk in _chunks(client):
                if b"/events HTTP/1.1" in chunk:
                    streaming.set()
                    headers = chunk.decode(errors="replace").lower().splitlines()
                    ids = [h.split(":", 1)[1].strip() for h in headers if h.startswith("last-event-id:")]
                    self.resume_points.append(ids[0] if ids else None)
                upstream.sendall(chunk)
        _hang_up(upstream)

    def _responses(self, upstream: socket.socket, client: socket.socket, streaming: threading.Event) -> None:
        seen = b""
        with contextlib.suppress(OSError):
            for chunk in _chunks(upstream):
                client.sendall(chunk)
                seen = (seen + chunk)[-4096:]
                if streaming.is_set() and not self._cut.is_set() and self._cut_after in seen:
                    self._cut.set()
                    break
        _hang_up(client)
        _hang_up(upstream)


def _hang_up(end: socket.socket) -> None:
    with contextlib.suppress(OSError):
        end.shutdown(socket.SHUT_RDWR)
    end.close()


def _chunks(sock: socket.socket) -> Iterator[bytes]:
    while True:
        try:
            chunk = sock.recv(65536)
        except OSError:
            return
        if not chunk:
            return
        yield chunk


@contextmanager
def proxy_to(server: ServerProcess, cut_after: bytes) -> Iterator[DroppingProxy]:
    proxy = DroppingProxy(server.port, cut_after)
    try:
        yield proxy
    finally:
        proxy.close()


def test_a_dropped_connection_is_resumed_without_a_duplicate_or_a_gap(
    cli: Cli, server: ServerProcess
) -> None:
    with proxy_to(server, cut_after=b'"line 5"') as proxy:
        through_proxy = Cli(proxy.url, cli.key)
        result = through_proxy("dispatch", "--agent", "shell", "--follow", "--json", TICKING)
    assert result.code == 0, result
    events = json_lines(result.stdout)
    assert_whole(events)
    assert output_of(events) == EXPECTED_OUTPUT.splitlines()
    first, resumed = proxy.resume_points
    assert first is None
    assert resumed is not None
    assert int(resumed) >= next(e["seq"] for e in events if e["data"].get("line") == "line 5")


def test_following_goes_on_across_a_server_crash_and_restart(tmp_path: Path, database_url: str) -> None:
    env = {"OUTPOST_WORKER__SLOTS": "2", "OUTPOST_DATABASE_URL": database_url}
    with serving(tmp_path / "data", env=env) as restarting:
        cli = new_tenant_cli(restarting, make_admin_key(restarting))
        follower = subprocess.Popen(
            [OUTPOST, "dispatch", "--agent", "shell", "--follow", "--json", TICKING],
            env={**os.environ, "OUTPOST_URL": cli.url, "OUTPOST_API_KEY": cli.key},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert follower.stdout is not None
        before = _read_until_line(follower.stdout, "line 3")
        restarting.kill_hard()
        restarting.start()  # same data dir, same port: the follower reconnects to it
        rest, errors = follower.communicate(timeout=60)
    assert follower.returncode == 0, errors
    events = json_lines(before + rest)
    assert_whole(events)
    notes = [e["data"].get("note", "") for e in events if e["kind"] == "status"]
    assert any("worker lost" in note for note in notes), notes  # the run went on after the restart
    assert output_of(events)[-LINES:] == EXPECTED_OUTPUT.splitlines()


def _read_until_line(stdout: Any, line: str) -> str:
    """What the follower printed up to (and with) the event of output `line`."""
    read = ""
    for text in stdout:
        read += text
        if json.loads(text)["data"].get("line") == line:
            return read
    raise AssertionError(f"the follower ended before {line!r}: {read}")
