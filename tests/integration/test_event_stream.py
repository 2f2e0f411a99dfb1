"""Live event streams over real connections: a dispatch's events and a tenant's feed, as SSE."""

from __future__ import annotations

import asyncio
import signal
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import uvicorn

from outpost.app import Container
from tests.conftest import MakeServer, Server
from tests.integration.helpers import TERMINAL, all_events, submit, wait_for_status
from tests.integration.processes import serving
from tests.integration.sse_client import SseComment, SseEvent, read_events, sse_items

TICKING = "for i in $(seq 1 20); do echo tick $i; sleep 0.02; done"


@dataclass
class LiveServer:
    """An in-process server listening on a real socket, and a client that talks to it over TCP."""

    server: Server
    http: httpx.AsyncClient

    async def new_tenant(self) -> dict[str, str]:
        return await self.server.new_tenant()


ServeLive = Callable[..., Awaitable[LiveServer]]


@pytest.fixture
async def serve_live(make_server: MakeServer) -> AsyncIterator[ServeLive]:
    running: list[tuple[uvicorn.Server, asyncio.Task[None], LiveServer]] = []

    async def factory(**overrides: object) -> LiveServer:
        server = await make_server(limits={"requests_per_s": 0}, **overrides)
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        sock.listen(128)  # connections wait in the backlog until uvicorn serves: no need to poll for it
        config = uvicorn.Config(server.app, lifespan="off", log_level="warning", access_log=False)
        front = uvicorn.Server(config)
        task = asyncio.create_task(front.serve(sockets=[sock]))
        url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        live = LiveServer(server, httpx.AsyncClient(base_url=url, timeout=20))
        running.append((front, task, live))
        return live

    yield factory
    for front, task, live in reversed(running):
        await live.http.aclose()
        await live.server.container.end_streams()
        front.should_exit = True
        await task


async def _stream(
    live: LiveServer, path: str, headers: dict[str, str], limit: int | None = None, **extra: str
) -> list[SseEvent]:
    async with live.http.stream("GET", path, headers={**headers, **extra}) as response:
        assert response.status_code == 200, await response.aread()
        assert response.headers["content-type"].startswith("text/event-stream")
        return await read_events(response, limit)


async def _until_released(container: Container, subscriptions: int) -> None:
    """Wait (bounded) until the server holds `subscriptions` bus subscriptions and no dispatch tail: the
    cleanup of a closed connection runs when the server notices the disconnect."""
    deadline = asyncio.get_running_loop().time() + 5
    while container.bus.subscription_count != subscriptions or container.event_streams.tails.active:
        assert asyncio.get_running_loop().time() < deadline, "the stream's subscriptions were left behind"
        await asyncio.sleep(0.01)
    assert not [task for task in asyncio.all_tasks() if task.get_name().startswith("event tail")]


async def test_a_stream_sends_every_event_as_the_logs_show_it_and_ends_after_the_terminal_one(
    serve_live: ServeLive,
) -> None:
    live = await serve_live()
    headers = await live.new_tenant()
    created = await submit(live.server.client, headers, f"{TICKING}; echo '\"quoted\" <tag>'")
    events = await _stream(live, f"/v1/dispatches/{created['id']}/events", headers)
    logged = await all_events(live.server.client, headers, created["id"])
    assert [event.json() for event in events] == logged
    assert [event.id for event in events] == [str(item["seq"]) for item in logged]
    assert [event.event for event in events] == [item["kind"] for item in logged]
    assert [event.event for event in events][-2:] == ["artifacts", "status"]
    assert events[-1].json()["data"]["status"] == "succeeded"
    ticks = [e.json()["data"]["line"] for e in events if e.event == "log"]
    assert ticks == [f"tick {i}" for i in range(1, 21)] + ['"quoted" <tag>']


async def test_a_stream_of_a_dispatch_that_has_ended_sends_what_is_left_and_closes(
    serve_live: ServeLive,
) -> None:
    live = await serve_live()
    headers = await live.new_tenant()
    created = await submit(live.server.client, headers, TICKING)
    await wait_for_status(live.server.client, headers, created["id"], TERMINAL)
    logged = await all_events(live.server.client, headers, created["id"])
    whole = await _stream(live, f"/v1/dispatches/{created['id']}/events", headers)
    assert [event.json() for event in whole] == logged
    rest = await _stream(live, f"/v1/dispatches/{created['id']}/events", headers, **{"Last-Event-ID": "10"})
    assert [event.json() for event in rest] == logged[10:]
    at_end = await _stream(
        live, f"/v1/dispatches/{created['id']}/events", headers, **{"Last-Event-ID": str(len(logged))}
    )
    assert at_end == []


async def test_resuming_a_live_stream_after_its_last_event_id_has_no_gap_and_no_duplicate(
    serve_live: ServeLive,
) -> None:
    live = await serve_live()
    headers = await live.new_tenant()
    created = await submit(live.server.client, headers, TICKING)
    path = f"/v1/dispatches/{created['id']}/events"
    received: list[SseEvent] = []
    while not received or received[-1].json()["data"].get("status") not in TERMINAL:
        resume = {"Last-Event-ID": received[-1].id or ""} if received else {}
        received += await _stream(live, path, headers, limit=3, **resume)  # disconnects after 3 events
    logged = await all_events(live.server.client, headers, created["id"])
    assert [event.json() for event in received] == logged


async def test_after_in_the_query_resumes_too_but_the_header_wins(serve_live: ServeLive) -> None:
    live = await serve_live()
    headers = await live.new_tenant()
    created = await submit(live.server.client, headers, "echo one; echo two")
    await wait_for_status(live.server.client, headers, created["id"], TERMINAL)
    path = f"/v1/dispatches/{created['id']}/events"
    by_query = await _stream(live, f"{path}?after=3", headers)
    assert by_query[0].id == "4"
    by_header = await _stream(live, f"{path}?after=3", headers, **{"Last-Event-ID": "5"})
    assert by_header[0].id == "6"


async def test_a_quiet_stream_sends_keep_alive_comments(serve_live: ServeLive) -> None:
    live = await serve_live(events={"keepalive_s": 0.1})
    headers = await live.new_tenant()
    created = await submit(live.server.client, headers, "sleep 0.6; echo done")
    items: list[SseEvent | SseComment] = []
    async with live.http.stream("GET", f"/v1/dispatches/{created['id']}/events", headers=headers) as response:
        async for item in sse_items(response):
            items.append(item)
    comments = [item for item in items if isinstance(item, SseComment)]
    assert comments
    assert {comment.text for comment in comments} == {"keep-alive"}
    last = items[-1]
    assert isinstance(last, SseEvent)
    assert last.json()["data"]["status"] == "succeeded"


@pytest.mark.parametrize("path", ["dispatch", "/v1/events"])
async def test_a_stream_ends_soon_after_its_key_is_revoked(serve_live: ServeLive, path: str) -> None:
    live = await serve_live(events={"keepalive_s": 0.05, "key_recheck_s": 0.1}, worker={"enabled": False})
    owner = await live.new_tenant()
    issued = (await live.server.client.post("/v1/keys", json={"name": "watcher"}, headers=owner)).json()
    watcher = {"authorization": f"Bearer {issued['key']}"}
    created = await submit(live.server.client, owner, "echo never runs")
    url = f"/v1/dispatches/{created['id']}/events" if path == "dispatch" else path
    items: list[SseEvent | SseComment] = []
    async with live.http.stream("GET", url, headers=watcher) as response:
        async for item in sse_items(response):
            items.append(item)
            if len(items) == 3:  # the stream is open and checked its key: revoke it
                revoked = await live.server.client.delete(f"/v1/keys/{issued['id']}", headers=owner)
                assert revoked.status_code == 200
                revoked_at = time.monotonic()
    assert time.monotonic() - revoked_at < 2
    last = items[-1]
    assert isinstance(last, SseEvent)
    assert (last.event, last.json()) == (
        "error",
        {"detail": "the API key of this stream was revoked or has expired"},
    )
    again = await live.http.get(url, headers=watcher)
    assert again.status_code == 401


async def test_unknown_and_foreign_dispatches_are_404_alike(serve_live: ServeLive) -> None:
    live = await serve_live(worker={"enabled": False})
    mine, theirs = await live.new_tenant(), await live.new_tenant()
    created = await submit(live.server.client, theirs, "echo secret")
    foreign = await live.http.get(f"/v1/dispatches/{created['id']}/events", headers=mine)
    unknown = await live.http.get("/v1/dispatches/01JD3Q6Z5W8X9Y0ABCDEFGHJKM/events", headers=mine)
    malformed = await live.http.get("/v1/dispatches/nope/events", headers=mine)
    for response in (foreign, unknown, malformed):
        assert response.status_code == 404
        assert response.headers["content-type"] == "application/problem+json"
    assert foreign.json()["type"] == unknown.json()["type"] == "urn:outpost:problem:not-found"
    anonymous = await live.http.get(f"/v1/dispatches/{created['id']}/events")
    assert anonymous.status_code == 401


async def test_the_streams_are_described_in_the_openapi_schema(serve_live: ServeLive) -> None:
    live = await serve_live(worker={"enabled": False})
    paths = (await live.http.get("/openapi.json")).json()["paths"]
    for path in ("/v1/dispatches/{dispatch_id}/events", "/v1/events"):
        assert "text/event-stream" in paths[path]["get"]["responses"]["200"]["content"]


@pytest.mark.parametrize("bad", ["abc", "-1", "1.5", "", "99999999999999999999", "3 4"])
async def test_a_resume_point_that_is_not_an_event_id_is_400(serve_live: ServeLive, bad: str) -> None:
    live = await serve_live(worker={"enabled": False})
    headers = await live.new_tenant()
    created = await submit(live.server.client, headers, "echo one")
    path = f"/v1/dispatches/{created['id']}/events"
    for response, field in (
        (await live.http.get(path, headers={**headers, "Last-Event-ID": bad}), "Last-Event-ID"),
        (await live.http.get(path, params={"after": bad}, headers=headers), "after"),
    ):
        assert response.status_code == 400
        assert response.headers["content-type"] == "application/problem+json"
        assert response.json()["errors"] == [{"field": field, "message": response.json()["detail"]}]


async def test_a_resume_point_past_the_last_event_is_400_and_says_so(serve_live: ServeLive) -> None:
    live = await serve_live(worker={"enabled": False})
    headers = await live.new_tenant()
    created = await submit(live.server.client, headers, "echo one")  # queued: one event so far
    path = f"/v1/dispatches/{created['id']}/events"
    response = await live.http.get(path, headers={**headers, "Last-Event-ID": "2"})
    assert response.status_code == 400
    assert "past the last event of this dispatch (1)" in response.json()["detail"]


async def test_a_client_that_disconnects_mid_stream_leaves_no_subscription_or_task(
    serve_live: ServeLive,
) -> None:
    live = await serve_live()
    container = live.server.container
    baseline = container.bus.subscription_count
    headers = await live.new_tenant()
    created = await submit(live.server.client, headers, "while true; do echo spam; sleep 0.01; done")
    path = f"/v1/dispatches/{created['id']}/events"
    for _ in range(3):
        events = await _stream(live, path, headers, limit=8)  # leaves while events keep coming
        assert len(events) == 8
        await _until_released(container, baseline)
    feed = await _stream(live, "/v1/events", headers, limit=2)  # the tenant feed lets go as well
    assert len(feed) == 2
    await _until_released(container, baseline)
    await live.server.client.post(f"/v1/dispatches/{created['id']}/cancel", headers=headers)


async def test_streams_of_one_dispatch_share_one_tail_and_one_subscription(serve_live: ServeLive) -> None:
    live = await serve_live()
    container = live.server.container
    headers = await live.new_tenant()
    created = await submit(live.server.client, headers, "sleep 0.5; " + TICKING)
    path = f"/v1/dispatches/{created['id']}/events"
    results = await asyncio.gather(*(_stream(live, path, headers) for _ in range(10)))
    logged = await all_events(live.server.client, headers, created["id"])
    for events in results:
        assert [event.json() for event in events] == logged
    await _until_released(container, 0)


async def _feed_until(live: LiveServer, headers: dict[str, str], query: str, last_id: str) -> list[SseEvent]:
    """Feed events up to the terminal event of dispatch `last_id` (the feed never ends by itself)."""
    found: list[SseEvent] = []
    async with live.http.stream("GET", f"/v1/events{query}", headers=headers) as response:
        assert response.status_code == 200, await response.aread()
        async for item in sse_items(response):
            if isinstance(item, SseEvent):
                found.append(item)
                event = item.json()
                if event["dispatch_id"] == last_id and event["data"].get("status") in TERMINAL:
                    return found
    raise AssertionError("the feed ended")


async def test_the_tenant_feed_carries_all_its_dispatches_events_live_and_resumes_exactly(
    serve_live: ServeLive,
) -> None:
    live = await serve_live()
    mine, theirs = await live.new_tenant(), await live.new_tenant()
    received: list[SseEvent] = []
    async with live.http.stream("GET", "/v1/events", headers=mine) as response:
        assert response.status_code == 200
        first = await submit(live.server.client, mine, TICKING)
        second = await submit(live.server.client, mine, "echo second")
        await submit(live.server.client, theirs, "echo theirs")
        ended: set[str] = set()
        async for item in sse_items(response):
            if isinstance(item, SseEvent):
                received.append(item)
                if item.json()["data"].get("status") in TERMINAL:
                    ended.add(item.json()["dispatch_id"])
            if ended == {first["id"], second["id"]}:
                break
    for created in (first, second):
        logged = await all_events(live.server.client, mine, created["id"])
        of_it = [event.json() for event in received if event.json()["dispatch_id"] == created["id"]]
        assert of_it == [{"dispatch_id": created["id"], **item} for item in logged]
    assert len(received) == len({event.id for event in received})
    middle = len(received) // 2
    async with live.http.stream(
        "GET", "/v1/events", headers={**mine, "Last-Event-ID": received[middle].id or ""}
    ) as response:
        resumed = await read_events(response, limit=len(received) - middle - 1)
    assert [(e.id, e.data) for e in resumed] == [(e.id, e.data) for e in received[middle + 1 :]]


async def test_the_tenant_feed_filters_by_dispatch_and_status(serve_live: ServeLive) -> None:
    live = await serve_live()
    headers = await live.new_tenant()
    first = await submit(live.server.client, headers, "echo first")
    second = await submit(live.server.client, headers, "exit 3")
    for created in (first, second):
        await wait_for_status(live.server.client, headers, created["id"], TERMINAL)
    # Submitted once the others have ended: its terminal event is the last one of every feed below.
    last = (await submit(live.server.client, headers, "true"))["id"]

    async def feed(query: str) -> list[tuple[str, str, object]]:
        events = await _feed_until(live, headers, f"?after=0{query}", last)
        return [(e.json()["dispatch_id"], e.event, e.json()["data"].get("status")) for e in events]

    everything = await feed("")
    for created in (first, second):
        logged = await all_events(live.server.client, headers, created["id"])
        assert [(k, kind) for k, kind, _ in everything if k == created["id"]] == [
            (created["id"], item["kind"]) for item in logged
        ]
    mine = {first["id"], last}
    assert await feed(f"&dispatch={first['id']}&dispatch={last}") == [e for e in everything if e[0] in mine]
    endings = await feed("&status=succeeded&status=failed")
    assert sorted(endings[:2]) == sorted(
        [(first["id"], "status", "succeeded"), (second["id"], "status", "failed")]
    )
    assert endings[2:] == [(last, "status", "succeeded")]
    assert await feed(f"&status=running&status=succeeded&dispatch={second['id']}&dispatch={last}") == [
        (second["id"], "status", "running"), (last, "status", "running"), (last, "status", "succeeded"),
    ]  # fmt: skip


async def test_bad_tenant_feed_requests_are_refused_before_the_stream_starts(serve_live: ServeLive) -> None:
    live = await serve_live(worker={"enabled": False})
    headers = await live.new_tenant()
    for query, extra, status, field in (
        ("?dispatch=nope", {}, 422, "dispatch"),
        ("?status=sleeping", {}, 422, "status.0"),
        ("", {"Last-Event-ID": "12-nope-3"}, 400, "Last-Event-ID"),
        ("?after=abc", {}, 400, "after"),
        ("", {"Last-Event-ID": "999999999999"}, 400, "Last-Event-ID"),
    ):
        response = await live.http.get(f"/v1/events{query}", headers={**headers, **extra})
        assert response.status_code == status, (query, extra, response.text)
        assert response.headers["content-type"] == "application/problem+json"
        assert [error["field"] for error in response.json()["errors"]] == [field]
    future = await live.http.get("/v1/events", headers={**headers, "Last-Event-ID": "999999999999"})
    assert "past the end of this feed" in future.json()["detail"]


async def test_a_client_too_slow_for_the_tail_is_told_to_resume_and_resumes_without_a_gap(
    serve_live: ServeLive,
) -> None:
    live = await serve_live(events={"recent_bytes": 4096})
    headers = await live.new_tenant()
    created = await submit(live.server.client, headers, "seq 1 60000")
    path = f"/v1/dispatches/{created['id']}/events"
    body = await _read_slowly(live, path, headers, created["id"])
    events = _parse_sse(_dechunk(body))
    assert events[-1].event == "resume"
    resume_from = events[-1].json()["last_event_id"]
    assert str(resume_from) == events[-2].id
    rest = await _stream(live, path, headers, **{"Last-Event-ID": str(resume_from)})
    logged = await all_events(live.server.client, headers, created["id"])
    assert [event.json() for event in events[:-1] + rest] == logged


async def _read_slowly(live: LiveServer, path: str, headers: dict[str, str], dispatch_id: str) -> bytes:
    """Open the stream over a socket with a tiny receive buffer and read nothing until the dispatch has
    ended; then read the whole response."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    url = httpx.URL(str(live.http.base_url))
    await asyncio.get_running_loop().sock_connect(sock, (url.host, url.port))
    reader, writer = await asyncio.open_connection(sock=sock, limit=4096)
    request = f"GET {path} HTTP/1.1\r\nHost: {url.host}\r\nConnection: close\r\n"
    request += "".join(f"{name}: {value}\r\n" for name, value in headers.items()) + "\r\n"
    writer.write(request.encode())
    await writer.drain()
    await wait_for_status(live.server.client, headers, dispatch_id, TERMINAL, timeout_s=60)
    response = await reader.read()
    writer.close()
    head, _, body = response.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    return body


def _dechunk(body: bytes) -> bytes:
    out, rest = b"", body
    while True:
        size_line, _, rest = rest.partition(b"\r\n")
        size = int(size_line, 16)
        if size == 0:
            return out
        out, rest = out + rest[:size], rest[size + 2 :]


def _parse_sse(text: bytes) -> list[SseEvent]:
    events = []
    for block in text.decode().split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.split("\n") if line and not line.startswith(":"))
        if "data" in fields:
            events.append(SseEvent(fields.get("id"), fields["event"], fields["data"]))
    return events


@pytest.mark.parametrize(
    "database_url", [pytest.param("postgresql", marks=pytest.mark.postgres)], indirect=True
)
async def test_a_server_streams_events_a_worker_elsewhere_writes_woken_through_notify(
    serve_live: ServeLive, make_server: MakeServer
) -> None:
    worker_side = await make_server(limits={"requests_per_s": 0})
    # Without a wake-up this server would read the store again only after a minute.
    api_side = await serve_live(worker={"enabled": False}, events={"poll_interval_s": 60})
    assert api_side.server.container.bus.name == worker_side.container.bus.name == "postgres"
    headers = await worker_side.new_tenant()
    created = await submit(worker_side.client, headers, TICKING)
    path = f"/v1/dispatches/{created['id']}/events"
    events = await asyncio.wait_for(_stream(api_side, path, headers), 20)
    logged = await all_events(worker_side.client, headers, created["id"])
    assert [event.json() for event in events] == logged
    feed = await _feed_until(api_side, headers, "?after=0", created["id"])
    assert [event.json()["seq"] for event in feed] == [item["seq"] for item in logged]


@pytest.mark.slow
def test_outpost_serve_ends_open_streams_and_stops_promptly_on_sigterm(tmp_path: Path) -> None:
    with serving(tmp_path / "data") as process:
        auth = {"Authorization": f"Bearer {process.create_tenant('streams')}"}
        with httpx.Client(base_url=process.url, headers=auth, timeout=20) as client:
            created = client.post("/v1/dispatches", json={"agent": "shell", "task": "sleep 60"}).json()
            with (
                client.stream("GET", "/v1/events") as feed,
                client.stream("GET", f"/v1/dispatches/{created['id']}/events") as stream,
            ):
                assert feed.status_code == stream.status_code == 200
                assert process.process is not None
                asked = time.monotonic()
                process.process.terminate()
                assert all(True for _ in stream.iter_bytes())  # the server ends the streams...
                assert all(True for _ in feed.iter_bytes())
                # ...and exits (uvicorn raises the SIGTERM again once its graceful shutdown is done)
                assert process.process.wait(15) in (0, -signal.SIGTERM)
        assert time.monotonic() - asked < 10
