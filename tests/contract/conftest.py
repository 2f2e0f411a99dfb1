"""Fixtures of the contract suites: a real S3 server for the S3 object store."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.requirements import require
from tests.s3_server import moto_problem, running_moto


@pytest.fixture(scope="session")
def s3_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The endpoint URL of a moto S3 server shared by the session (tests use buckets of their own)."""
    require(moto_problem())
    with running_moto(tmp_path_factory.mktemp("moto") / "moto.log") as endpoint:
        yield endpoint
