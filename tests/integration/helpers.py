"""Helpers for integration tests that drive the API."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx

TERMINAL = {"succeeded", "failed", "timed_out", "cancelled"}


async def wait_for_status(
    client: httpx.AsyncClient,
    headers: dict[str, str],
    dispatch_id: str,
    statuses: set[str],
    timeout_s: float = 20,
) -> dict[str, Any]:
    """Poll a dispatch until it reaches one of `statuses`; fails the test on timeout."""
    deadline = time.monotonic() + timeout_s
    while True:
        response = await client.get(f"/v1/dispatches/{dispatch_id}", headers=headers)
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        if body["status"] in statuses:
            return body
        if time.monotonic() > deadline:
            raise AssertionError(f"dispatch {dispatch_id} stayed {body['status']}, wanted one of {statuses}")
        await asyncio.sleep(0.02)


async def submit(
    client: httpx.AsyncClient, headers: dict[str, str], task: str, **fields: Any
) -> dict[str, Any]:
    response = await client.post(
        "/v1/dispatches", json={"agent": "shell", "task": task, **fields}, headers=headers
    )
    assert response.status_code == 202, response.text
    body: dict[str, Any] = response.json()
    return body


async def all_events(
    client: httpx.AsyncClient, headers: dict[str, str], dispatch_id: str
) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    after = 0
    while True:
        page = await client.get(
            f"/v1/dispatches/{dispatch_id}/logs?after={after}&limit=1000", headers=headers
        )
        assert page.status_code == 200, page.text
        body = page.json()
        events.extend(body["items"])
        if body["next_after"] is None:
            return events
        after = body["next_after"]


def compute_to_charge(events: list[dict[str, Any]]) -> tuple[int, int]:
    """CPU microseconds and memory byte-seconds a dispatch's events call for: `compute` events are
    cumulative for the attempt they name (samples, then the final one), so each attempt's last counts."""
    measured = [event["data"] for event in events if event["kind"] == "compute"]
    charged = {data["attempt"]: data for data in measured}.values()  # later ones replace earlier ones
    return sum(data["cpu_usec"] for data in charged), sum(data["memory_byte_s"] for data in charged)


def settled_cost_usd(events: list[dict[str, Any]]) -> float:
    """A dispatch's cost recomputed from its events: the metered calls, and its compute at the default
    $0.04/vCPU-hour and $0.004/GB-hour (the ledger rounds each row once: compare within a few µ$)."""
    tokens_usd = sum(event["data"]["cost_usd"] for event in events if event["kind"] == "usage")
    cpu_usec, memory_byte_s = compute_to_charge(events)
    return float(tokens_usd + cpu_usec / 1e6 / 3600 * 0.04 + memory_byte_s / 2**30 / 3600 * 0.004)
