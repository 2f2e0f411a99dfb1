"""What the model gateway adds to a model call, side by side in one run.

Each round makes the same call twice, in alternating order: straight to the fake provider, and through a
gateway listener (token check, key swap, forwarding over a pooled connection, metering). Two kinds of
call: a JSON (non-streamed) Anthropic Messages call, timed to its last byte, and a streamed one, timed to
its first body byte (TTFB) and to its last. The client keeps its connections alive, as agent CLIs do.

    .venv/bin/python bench/gateway_overhead.py --rounds 500 --warmup 50
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common import publish, summarize, table
from pydantic import SecretStr
from tests.fakes.provider import FakeProvider

from outpost.gateway.server import ModelGateway
from outpost.gateway.tokens import GatewayTokens, Grant
from outpost.gateway.upstreams import Upstream
from outpost.settings import GatewaySettings

RUN = "bench.1"
BODY = {"model": "claude-sonnet-5-5", "max_tokens": 64, "messages": [{"role": "user", "content": "hi"}]}


async def _timed(client: Any, url: str, headers: dict[str, str], stream: bool) -> tuple[float, float]:
    """(seconds to the first body byte, seconds to the last)."""
    started = time.perf_counter()
    first = None
    async with client.stream("POST", url, json={**BODY, "stream": stream}, headers=headers) as response:
        async for chunk in response.aiter_raw():
            if first is None and chunk:
                first = time.perf_counter() - started
        if response.status_code != 200:
            raise RuntimeError(f"{url} answered {response.status_code}")
    return first or 0.0, time.perf_counter() - started


async def measure(rounds: int, warmup: int) -> dict[str, Any]:
    import httpx  # noqa: PLC0415

    with FakeProvider() as fake:
        tokens = GatewayTokens()
        gateway = ModelGateway(tokens, GatewaySettings())
        upstream = Upstream("anthropic", fake.base_url, SecretStr("sk-bench"), "x-api-key")
        token = tokens.issue(
            Grant(RUN, "t", {"anthropic": upstream}, on_usage=lambda *_: None, on_failure=lambda *_: None)
        )
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        served = await gateway.serve(sock, RUN)
        via = f"http://127.0.0.1:{sock.getsockname()[1]}/anthropic/v1/messages"
        direct = f"{fake.base_url}/v1/messages"
        samples: dict[str, list[float]] = {key: [] for key in
                                           ("direct_json", "gateway_json", "direct_ttfb", "gateway_ttfb",
                                            "direct_stream", "gateway_stream")}  # fmt: skip
        async with httpx.AsyncClient(timeout=30) as client:
            for index in range(warmup + rounds):
                order = [("direct", direct, {"x-api-key": "x"}), ("gateway", via, {"x-api-key": token})]
                for name, url, headers in order if index % 2 else reversed(order):
                    _, total = await _timed(client, url, headers, stream=False)
                    ttfb, streamed = await _timed(client, url, headers, stream=True)
                    if index >= warmup:
                        samples[f"{name}_json"].append(total)
                        samples[f"{name}_ttfb"].append(ttfb)
                        samples[f"{name}_stream"].append(streamed)
        await served.close()
        await gateway.close()
    return {key: summarize([value * 1000 for value in values]) for key, values in samples.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=500)
    parser.add_argument("--warmup", type=int, default=50)
    args = parser.parse_args()
    results = asyncio.run(measure(args.rounds, args.warmup))
    rows = []
    for kind, label in (("json", "JSON call, last byte"), ("ttfb", "streamed, first byte"),
                        ("stream", "streamed, last byte")):  # fmt: skip
        direct, via = results[f"direct_{kind}"], results[f"gateway_{kind}"]
        rows.append([label, f"{direct['p50']:.2f}", f"{via['p50']:.2f}", f"{via['p50'] - direct['p50']:+.2f}",
                     f"{direct['p99']:.2f}", f"{via['p99']:.2f}"])  # fmt: skip
    text = table(["call (ms)", "direct p50", "gateway p50", "added p50", "direct p99", "gateway p99"], rows)
    publish("gateway_overhead", {"rounds": args.rounds, **results}, text)


if __name__ == "__main__":
    main()
