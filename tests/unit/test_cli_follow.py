"""Following a dispatch's event stream: reconnects, resumes, dedupes and gives up, against scripted answers
(an `httpx.MockTransport`) framed by the server's own SSE code; and showing events without crashing."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime

import httpx
import pytest

from outpost.cli.client import ApiClient, ClientSettings
from outpost.cli.event_printer import EventPrinter, JsonEventPrinter
from outpost.cli.sse import SseEvent
from outpost.cli.watch import RECONNECT_GIVE_UP_S, RECONNECT_MAX_DELAY_S, Reconnects, follow_events
from outpost.errors import NotFound, Unavailable
from outpost.events.sse import event_frame
from outpost.schemas.dispatches import EventRead

DISPATCH_ID = "01JD3Q6Z5W8X9Y0ABCDEFGHJKM"
STAMP = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)


def event(seq: int, kind: str = "log", /, **data: object) -> EventRead:
    return EventRead(
        seq=seq, created_at=STAMP, kind=kind, data=data or {"stream": "stdout", "line": f"line {seq}"}
    )


def frame(shown: EventRead) -> bytes:
    return event_frame(str(shown.seq), shown.kind, shown.model_dump(mode="json"))


def terminal(seq: int, status: str = "succeeded") -> EventRead:
    return event(seq, "status", status=status, attempt=1)


class Dropped(httpx.SyncByteStream):
    """A body that sends its chunks, then loses the connection."""

    def __init__(self, chunks: list[bytes]) -> None:
        self._chunks = chunks

    def __iter__(self) -> Iterator[bytes]:
        yield from self._chunks
        raise httpx.ReadError("connection reset by peer")


Answer = Callable[[httpx.Request], httpx.Response]


def stream(*frames: bytes, drop: bool = False) -> Answer:
    chunks = list(frames)
    headers = {"content-type": "text/event-stream"}
    if drop:
        return lambda request: httpx.Response(200, headers=headers, stream=Dropped(chunks))
    return lambda request: httpx.Response(200, headers=headers, content=b"".join(chunks))


def refused(request: httpx.Request) -> httpx.Response:
    raise httpx.ConnectError("connection refused", request=request)


def dispatch_body(status: str) -> Answer:
    body = {
        "id": DISPATCH_ID, "status": status, "agent": "shell", "task": "t", "model": None, "tier": "balanced",
        "attempt": 1, "timeout_s": 60, "labels": {}, "created_at": STAMP.isoformat(), "started_at": None,
        "finished_at": None, "exit_code": None, "result": None, "failure": None, "usage": {}, "cost_usd": 0,
        "cli_cost_usd": None, "max_cost_usd": None, "limits": None, "egress_allow": [],
    }  # fmt: skip
    return lambda request: httpx.Response(200, json=body)


@dataclass
class Server:
    """Answers stream requests in the order given (the last one again once they run out), and status reads
    with `status`; remembers every request."""

    streams: list[Answer]
    status: str = "running"
    requests: list[httpx.Request] = field(default_factory=list)

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if request.url.path.endswith("/events"):
            answer = self.streams.pop(0) if len(self.streams) > 1 else self.streams[0]
            return answer(request)
        return dispatch_body(self.status)(request)

    def resume_points(self) -> list[str | None]:
        return [r.headers.get("Last-Event-ID") for r in self.requests if r.url.path.endswith("/events")]


@dataclass
class Collected:
    events: list[EventRead] = field(default_factory=list)
    unreadable: list[SseEvent] = field(default_factory=list)

    def show(self, shown: EventRead) -> None:
        self.events.append(shown)

    def show_unreadable(self, sse: SseEvent) -> None:
        self.unreadable.append(sse)

    @property
    def seqs(self) -> list[int]:
        return [shown.seq for shown in self.events]


@dataclass
class FakeTime:
    now: float = 0.0
    sleeps: list[float] = field(default_factory=list)

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def follow(server: Server, after_seq: int = 0, clock: FakeTime | None = None) -> Collected:
    clock = clock or FakeTime()
    collected = Collected()
    settings = ClientSettings(url="http://outpost.test", api_key="op_test")
    with ApiClient(settings, transport=httpx.MockTransport(server)) as api:
        follow_events(api, DISPATCH_ID, after_seq, collected, Reconnects(lambda: clock.now, clock.sleep))
    return collected


def test_a_dropped_connection_is_resumed_after_the_last_event_shown_without_repeating_it() -> None:
    server = Server([
        stream(frame(event(1)), frame(event(2)), frame(event(3))[:-5], drop=True),  # 3 never completed
        stream(frame(event(2)), frame(event(3)), frame(event(4)), frame(terminal(5))),  # 2 sent again
    ])  # fmt: skip
    collected = follow(server)
    assert collected.seqs == [1, 2, 3, 4, 5]
    assert server.resume_points() == [None, "2"]


def test_following_from_a_seq_sends_it_as_last_event_id() -> None:
    server = Server([stream(frame(event(8)), frame(terminal(9)))])
    assert follow(server, after_seq=7).seqs == [8, 9]
    assert server.resume_points() == ["7"]


def test_a_resume_event_reopens_the_stream_at_once_after_the_last_event_shown() -> None:
    resume = event_frame(None, "resume", {"last_event_id": 2})
    server = Server([stream(frame(event(1)), frame(event(2)), resume), stream(frame(terminal(3)))])
    clock = FakeTime()
    assert follow(server, clock=clock).seqs == [1, 2, 3]
    assert server.resume_points() == [None, "2"]
    assert clock.sleeps == []


def test_a_stream_closed_early_while_the_dispatch_runs_is_reopened_after_a_pause() -> None:
    server = Server([stream(frame(event(1))), stream(frame(terminal(2)))])
    clock = FakeTime()
    assert follow(server, clock=clock).seqs == [1, 2]
    assert server.resume_points() == [None, "1"]
    assert len(clock.sleeps) == 1


def test_a_dispatch_that_ended_before_its_stream_opened_ends_the_following_when_the_stream_closes() -> None:
    server = Server([stream()], status="succeeded")
    collected = follow(server, after_seq=5)
    assert collected.events == []
    assert server.resume_points() == ["5", "5"]  # the second stream was opened knowing the dispatch ended


def test_refused_connections_are_retried_with_growing_bounded_delays_until_the_server_is_back() -> None:
    server = Server([stream(frame(event(1)), drop=True), *[refused] * 8, stream(frame(terminal(2)))])
    clock = FakeTime()
    assert follow(server, clock=clock).seqs == [1, 2]
    assert clock.sleeps == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.6, 2.0, 2.0, 2.0, 2.0])


def test_server_errors_are_retried_like_lost_connections() -> None:
    server = Server(
        [lambda request: httpx.Response(503, json={"detail": "stopping"}), stream(frame(terminal(1)))]
    )
    assert follow(server).seqs == [1]


def test_following_gives_up_with_unavailable_after_failing_to_reconnect_for_the_limit() -> None:
    server = Server([stream(frame(event(1)), drop=True), refused])
    clock = FakeTime()
    with pytest.raises(Unavailable, match=r"gave up .* 30 s .*connection refused"):
        follow(server, clock=clock)
    assert clock.now == pytest.approx(RECONNECT_GIVE_UP_S)
    assert max(clock.sleeps) == RECONNECT_MAX_DELAY_S


def test_a_missing_dispatch_is_not_retried() -> None:
    server = Server([lambda request: httpx.Response(404, json={"detail": "no dispatch 'x'"})])
    with pytest.raises(NotFound, match="no dispatch"):
        follow(server)
    assert len(server.requests) == 1


def test_unreadable_events_are_handed_over_and_still_count_as_seen() -> None:
    garbage = b"id: 2\nevent: log\ndata: {not json\n\n"
    no_id = b"event: hello\ndata: {}\n\n"
    server = Server([stream(frame(event(1)), garbage, no_id, drop=True), stream(frame(terminal(3)))])
    collected = follow(server)
    assert collected.seqs == [1, 3]
    assert [sse.data for sse in collected.unreadable] == ["{not json", "{}"]
    assert server.resume_points() == [None, "2"]


def test_a_hostile_status_value_is_shown_not_a_crash() -> None:
    server = Server([stream(frame(event(1, "status", status=["x"])), frame(terminal(2)))])
    assert follow(server).seqs == [1, 2]


ODD_EVENTS = [
    event(1, "brand_new_kind", anything=[1, 2]),
    event(2, "log", line=None, stream="stdout"),
    event(3, "status", status=7),
    event(4, "agent", type="tool_call", name=None, input={}),
    event(5, "agent", type="from_the_future"),
    event(6, "usage", total="lots", total_cost_usd=True),
    event(7, "artifacts", names="x", warnings=3),
    event(8, "artifacts", names=[], push=[1]),
    event(9, "egress", host=None),
    event(10, "agent", type="file_change", path=["a"], kind="update"),
    event(11, "compute", cpu_usec=-1, memory_byte_s=5, memory_peak_bytes=5),
    event(12, "compute", cpu_usec=1),
]


@pytest.mark.parametrize("odd", ODD_EVENTS, ids=lambda odd: f"{odd.kind}-{odd.seq}")
def test_an_unknown_kind_or_data_of_the_wrong_shape_is_printed_raw(
    odd: EventRead, capsys: pytest.CaptureFixture[str]
) -> None:
    EventPrinter("claude").show(odd)
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith(f"[{odd.seq} {odd.kind}] ")


def test_each_event_kind_reads_as_one_short_line(capsys: pytest.CaptureFixture[str]) -> None:
    printer = EventPrinter("claude")
    for shown in [
        event(1, "log", stream="stdout", line='{"type":"assistant"}'),  # claude's JSON: shown parsed instead
        event(2, "log", stream="stdout", line="plain output"),
        event(3, "log", stream="stderr", line="warning: x"),
        event(4, "agent", type="text", text="I will fix it."),
        event(5, "agent", type="tool_call", name="Bash", input={"command": "pytest -q", "timeout": 5}),
        event(6, "agent", type="tool_call", name="mcp__x__y", input={"a": 1}),
        event(6, "agent", type="tool_call", name="odd", input="not a dict"),
        event(7, "agent", type="file_change", path="src/a.py", kind="add"),
        event(8, "agent", type="cli_usage", usage={"input_tokens": 3}),
        event(9, "usage", total={"input_tokens": 1200, "output_tokens": 30, "cache_read_tokens": 5},
              total_cost_usd=0.01234),
        event(10, "provider_error", provider="anthropic", status=429, kind="quota", message="slow down"),
        event(11, "egress", method="CONNECT", host="evil.example", port=443, allowed=False,
              reason="not listed"),
        event(12, "artifacts", names=["changes.patch", "events.jsonl"], files_changed=1, patch_bytes=2048,
              warnings=["the persistent workspace keeps its earlier state"]),
        event(13, "notice", message="output limit reached"),
        event(14, "status", status="failed", attempt=1, reason="agent_error", detail="exited with status 3",
              exit_code=3),
    ]:  # fmt: skip
        printer.show(shown)
    out, err = capsys.readouterr()
    assert out == "plain output\nI will fix it.\n"
    assert err.splitlines() == [
        "warning: x",
        "-> Bash pytest -q",
        '-> mcp__x__y {"a": 1}',
        '-> odd "not a dict"',
        "   + src/a.py",
        "   tokens so far: 1200 in, 30 out (cache: 5 read, 0 written); $0.0123",
        "!! anthropic answered 429 (quota): slow down",
        "!! egress refused: CONNECT evil.example:443: not listed",
        "-- 1 file changed, patch 2.0 KiB, 2 artifacts kept",
        "!! the persistent workspace keeps its earlier state",
        "-- output limit reached",
        "-- failed (agent_error): exited with status 3, exit code 3",
    ]


def test_json_lines_carry_the_fields_of_a_logs_item_and_nothing_unreadable(
    capsys: pytest.CaptureFixture[str],
) -> None:
    printer = JsonEventPrinter()
    printer.show(event(1))
    printer.show_unreadable(SseEvent("log", "{broken", "2"))
    out, err = capsys.readouterr()
    assert [json.loads(line) for line in out.splitlines()] == [
        {
            "seq": 1,
            "created_at": "2025-01-02T03:04:05Z",
            "kind": "log",
            "data": {"stream": "stdout", "line": "line 1"},
        }
    ]
    assert "{broken" in err


def test_the_compute_event_reads_as_vcpu_and_gb_seconds(capsys: pytest.CaptureFixture[str]) -> None:
    shown = event(5, "compute", cpu_usec=1_250_000, memory_byte_s=3 * 2**29, memory_peak_bytes=96 * 2**20)
    EventPrinter("shell").show(shown)
    out, err = capsys.readouterr()
    assert out == ""
    assert err == "   compute: 1.25 vCPU-s, 1.50 GB-s of memory (peak 96.0 MiB)\n"


def test_a_compute_sample_reads_as_compute_so_far(capsys: pytest.CaptureFixture[str]) -> None:
    sample = event(4, "compute", attempt=1, final=False, cpu_usec=500_000, memory_byte_s=2**29,
                   memory_peak_bytes=2**20)  # fmt: skip
    EventPrinter("shell").show(sample)
    assert capsys.readouterr().err == "   compute so far: 0.50 vCPU-s, 0.50 GB-s of memory (peak 1.0 MiB)\n"
