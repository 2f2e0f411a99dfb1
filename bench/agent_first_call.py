"""Time from `POST /v1/dispatches` to the agent's first model request, per agent CLI.

A real `outpost serve` (bwrap sandbox, SQLite) runs each pinned CLI through its model gateway against the
fake provider. The clock starts before the POST and stops when the fake provider has received the
CLI's first request (polled every 0.5 ms), so the figure holds queueing, the sandbox start, the CLI's own
start-up and the gateway hop; the rest of the run is not timed. Runs alternate between agents.

    .venv/bin/python bench/agent_first_call.py --runs 10
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common import BenchServer, publish, summarize, table, wait_for_status
from tests.fakes.provider import FakeProvider

AGENTS = ("claude", "codex", "gemini", "aider", "grok")
PROVIDERS = ("anthropic", "openai", "gemini", "xai", "deepseek")
INSTALL_DIR = Path(__file__).resolve().parents[1] / ".tools" / "agents"
TASK = "Create the file FILE=/workspace/hello.txt"


def _first_request_after(fake: FakeProvider, seen: int, started: float, limit_s: float = 60) -> float:
    while len(fake.requests) <= seen:
        if time.perf_counter() - started > limit_s:
            raise RuntimeError("no request reached the provider")
        time.sleep(0.0005)
    return time.perf_counter() - started


def measure(runs: int) -> dict[str, Any]:
    samples: dict[str, list[float]] = {agent: [] for agent in AGENTS}
    with FakeProvider() as fake:
        env = {f"OUTPOST_PROVIDERS__{name.upper()}__BASE_URL": fake.base_url for name in PROVIDERS}
        env |= {f"OUTPOST_PROVIDERS__{name.upper()}__API_KEY": "sk-bench" for name in PROVIDERS}
        env["OUTPOST_AGENTS__INSTALL_DIR"] = str(INSTALL_DIR)
        with BenchServer(env) as server:
            server.prepare()
            tenant = server.create_tenant("bench")
            server.start()
            with server.client(tenant) as client:
                for _ in range(runs):
                    for agent in AGENTS:
                        seen = len(fake.requests)
                        started = time.perf_counter()
                        response = client.post("/v1/dispatches", json={"agent": agent, "task": TASK})
                        response.raise_for_status()
                        samples[agent].append(_first_request_after(fake, seen, started) * 1000)
                        wait_for_status(client, [response.json()["id"]], {"succeeded", "failed"}, 120)
    return {agent: summarize(values) for agent, values in samples.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args()
    results = measure(args.runs)
    rows = [[agent, f"{r['p50']:.0f}", f"{r['p90']:.0f}", f"{r['max']:.0f}"] for agent, r in results.items()]
    text = table(["agent", "p50 ms", "p90 ms", "max ms"], rows)
    publish("agent_first_call", {"runs": args.runs, **results}, text)


if __name__ == "__main__":
    main()
