"""Shared fixtures: stores on SQLite and PostgreSQL, and an in-process server with a tenant."""

from __future__ import annotations

import asyncio
import io
import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import psycopg
import pytest
from fastapi import FastAPI

from outpost.api.app import create_app
from outpost.app import Container, build_container
from outpost.domain.dispatch import AgentName
from outpost.sandbox import mounts
from outpost.settings import Settings, WorkerSettings
from tests.requirements import require
from tests.sandboxes import backend, bwrap_problems, sandbox_settings

PG_ADMIN_URL = os.environ.get("OUTPOST_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")


def _pg_reachable() -> str | None:
    try:
        with psycopg.connect(PG_ADMIN_URL, connect_timeout=3):
            return None
    except psycopg.Error as exc:
        return str(exc).strip()


@pytest.fixture(scope="session")
def pg_server() -> str:
    """The PostgreSQL admin URL. Under CI=true an unreachable server fails the test instead of skipping it."""
    problem = _pg_reachable()
    require(None if problem is None else f"PostgreSQL is not reachable at {PG_ADMIN_URL}: {problem}")
    return PG_ADMIN_URL


@pytest.fixture
def pg_database(pg_server: str) -> Iterator[str]:
    """A new, empty PostgreSQL database for one test (dropped afterwards); yields its SQLAlchemy URL."""
    name = f"outpost_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg_server, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base, _, _ = pg_server.rpartition("/")
    try:
        yield f"{base.replace('postgresql://', 'postgresql+psycopg://', 1)}/{name}"
    finally:
        with psycopg.connect(pg_server, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Runs the test once on SQLite and once on PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'outpost.db'}"
    url: str = request.getfixturevalue("pg_database")
    return url


@dataclass
class Server:
    """An in-process Outpost: the app, its container, and an HTTP client bound to it."""

    app: FastAPI
    container: Container
    client: httpx.AsyncClient

    async def new_tenant(self, name: str | None = None, *, admin: bool = False) -> dict[str, str]:
        """Create a tenant; returns the Authorization header of its first key."""
        _, issued = await self.container.keys.create_tenant(name or f"t{uuid.uuid4().hex[:10]}", admin=admin)
        return {"Authorization": f"Bearer {issued.token}"}


MakeServer = Callable[..., Awaitable[Server]]


@pytest.fixture
async def make_server(tmp_path: Path, database_url: str) -> AsyncIterator[MakeServer]:
    """Factory: start a server on this test's database, with optional settings overrides."""
    started: list[tuple[Server, object]] = []

    async def factory(**overrides: object) -> Server:
        worker = WorkerSettings(**{**_worker_defaults(database_url), **overrides.pop("worker", {})})  # type: ignore[dict-item]
        # One master key for every server of a test, as servers sharing a database must have.
        fields = {
            "data_dir": tmp_path / f"data{len(started)}", "database_url": database_url,
            "sandbox": sandbox_settings(), "secrets": {"master_key_file": tmp_path / "master.key"},
            **overrides,
        }  # fmt: skip
        settings = Settings(worker=worker, **fields)
        container = build_container(settings)
        app = create_app(container)
        lifespan = app.router.lifespan_context(app)
        await lifespan.__aenter__()
        client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://outpost.test")
        server = Server(app, container, client)
        started.append((server, lifespan))
        return server

    yield factory
    for server, lifespan in reversed(started):
        await server.client.aclose()
        await _bounded(lifespan.__aexit__(None, None, None), SHUTDOWN_LIMIT_S)  # type: ignore[attr-defined]


def _worker_defaults(database_url: str) -> dict[str, object]:
    """On PostgreSQL the queue is procrastinate and a server serves only the API unless told otherwise:
    a test server runs a fleet worker offering every agent, so that dispatches go through the queue a
    fleet uses and a dispatch of an agent not ready here fails as it does in the embedded system."""
    if not database_url.startswith("postgres"):
        return {"poll_interval_s": 0.2}
    # Stopped, it hands back what it runs at once, as the embedded worker does.
    every_agent = [agent.value for agent in AgentName]
    return {"poll_interval_s": 0.2, "enabled": True, "agents": every_agent, "drain_timeout_s": 0}


SHUTDOWN_LIMIT_S = 20


async def _bounded(shutdown: Awaitable[object], limit_s: float) -> None:
    """Await a server's shutdown; past the limit, fail with the stack of every pending task (not a hang)."""
    try:
        await asyncio.wait_for(shutdown, limit_s)
    except TimeoutError:
        stacks = io.StringIO()
        for task in asyncio.all_tasks():
            task.print_stack(file=stacks)
        pytest.fail(f"server shutdown took over {limit_s} s; pending tasks:\n{stacks.getvalue()}")


@pytest.fixture
async def server(make_server: MakeServer) -> Server:
    return await make_server(limits={"requests_per_s": 0})


def pytest_report_header() -> str:
    chosen = backend()
    why = f" (bwrap cannot run here: {'; '.join(bwrap_problems())})" if chosen == "process" else ""
    return f"test servers' sandbox backend: {chosen}{why}"


def pytest_sessionfinish(session: pytest.Session) -> None:
    """Unmount what a failed test left mounted under the temp dirs (a workspace's tmpfs), so that pytest
    can delete them; the failure itself is already reported."""
    base = session.config._tmp_path_factory.getbasetemp()  # type: ignore[attr-defined]
    mounts.unmount_all_under(base)
