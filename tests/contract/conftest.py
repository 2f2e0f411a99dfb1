"""Fixtures of the contract suites: each sandbox backend, and a real S3 server for the S3 object store."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from outpost.sandbox.base import RequestedLimits, Sandbox
from tests.contract.sandbox_backends import BACKENDS, close_bwrap_backends
from tests.requirements import require
from tests.s3_server import moto_problem, running_moto


@pytest.fixture(scope="session")
def s3_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The endpoint URL of a moto S3 server shared by the session (tests use buckets of their own)."""
    require(moto_problem())
    with running_moto(tmp_path_factory.mktemp("moto") / "moto.log") as endpoint:
        yield endpoint


@pytest.fixture(autouse=True)
async def _close_bwrap_backends() -> AsyncIterator[None]:
    yield
    await close_bwrap_backends()


@pytest.fixture(params=sorted(BACKENDS))
async def sandbox(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Sandbox]:
    backend = BACKENDS[request.param](tmp_path / "data")
    yield backend
    await backend.reap_leftovers()  # workspaces a failed test left mounted
    await backend.close()


@pytest.fixture
def host_dir(tmp_path: Path) -> Path:
    """A plain private directory on the host (bwrap binds it for its uid; it need not be reachable)."""
    path = tmp_path / "host-dir"
    path.mkdir(mode=0o700)
    return path


@pytest.fixture
async def workdir(sandbox: Sandbox) -> AsyncIterator[Path]:
    path = await sandbox.create_workspace("d", RequestedLimits())
    yield path
    await sandbox.remove_workspace(path)
