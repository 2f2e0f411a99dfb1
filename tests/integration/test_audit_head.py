"""The audit log's sealed head through a server: rows cut off the end with the head moved back are found,
and stay found as the log grows; a head never sealed is sealed at start; rotations keep it verifying."""

from __future__ import annotations

import asyncio
import logging
import os
from datetime import timedelta

import pytest

from outpost.audit.chain import KEY_PURPOSE, AuditEntry, AuditHead, ChainKey, Origin
from outpost.audit.verify import ChainBroken
from outpost.db.repositories import audit as audit_repo
from outpost.db.types import utc_now
from outpost.secrets.box import SecretBox
from outpost.secrets.master_key import encode_master_key
from tests.conftest import MakeServer, Server
from tests.integration.audit_checks import tamper

CUT_TO_THREE = (
    "DELETE FROM audit_log WHERE seq > 3",
    "UPDATE audit_head SET seq = 3, hash = (SELECT hash FROM audit_log WHERE seq = 3) WHERE id = 1",
)


@pytest.fixture
async def quiet(make_server: MakeServer) -> Server:
    return await make_server(worker={"enabled": False}, limits={"requests_per_s": 0})


async def append(server: Server, count: int) -> None:
    entries = [AuditEntry("test.append", None, Origin("test"), detail={"n": n}) for n in range(count)]
    await server.container.audit.log.record(server.container.store, entries)


async def head_of(server: Server) -> AuditHead:
    async with server.container.store.read() as conn:
        return await audit_repo.read_head(conn)


def audit_logged(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [record.getMessage() for record in caplog.records if record.name == "outpost.services.audit"]


async def test_a_log_as_written_verifies_and_its_head_carries_the_seal_of_its_last_row(quiet: Server) -> None:
    await append(quiet, 5)
    report = await quiet.container.audit.verify()
    head = await head_of(quiet)
    assert (report.rows, report.last_seq, head.seq, head.hash) == (5, 5, 5, report.head_hash)
    assert head.mac == quiet.container.audit.log.key.head_mac(5, report.head_hash)


async def test_rows_cut_off_the_end_with_the_head_moved_back_are_named_by_verify(quiet: Server) -> None:
    await append(quiet, 5)
    for statement in CUT_TO_THREE:
        await tamper(quiet, statement)
    with pytest.raises(
        ChainBroken, match="the head at seq 3 is not sealed by the audit key: it was edited"
    ) as caught:
        await quiet.container.audit.verify()
    assert caught.value.seq == 3
    assert "rows after seq 3 may have been cut off" in caught.value.reason
    await append(quiet, 2)  # the log grows on: the head moves, but no append seals over the cut
    with pytest.raises(ChainBroken, match="the head at seq 5 is not sealed by the audit key"):
        await quiet.container.audit.verify()


async def test_rows_cut_off_with_the_head_moved_back_and_its_seal_cleared_are_named(quiet: Server) -> None:
    await append(quiet, 5)
    for statement in (*CUT_TO_THREE, "UPDATE audit_head SET mac = NULL"):
        await tamper(quiet, statement)
    with pytest.raises(ChainBroken, match=r"at seq 3: the head at seq 3 .*: its mac is empty"):
        await quiet.container.audit.verify()
    await append(quiet, 1)
    assert (await head_of(quiet)).mac is None  # an append never seals a head that was not sealed
    with pytest.raises(ChainBroken, match=r"the head at seq 4 .*: its mac is empty"):
        await quiet.container.audit.verify()


async def test_a_head_with_a_seal_copied_from_another_head_is_named(quiet: Server) -> None:
    await append(quiet, 3)
    earlier = await head_of(quiet)
    await append(quiet, 2)
    await tamper(quiet, "DELETE FROM audit_log WHERE seq > 3")
    await tamper(quiet, "UPDATE audit_head SET seq = 3, hash = :hash", hash=earlier.hash)
    assert earlier.mac is not None
    await tamper(quiet, "UPDATE audit_head SET mac = :mac", mac=earlier.mac[::-1])
    with pytest.raises(ChainBroken, match="the head at seq 3 is not sealed"):
        await quiet.container.audit.verify()


async def test_a_head_never_sealed_is_sealed_when_a_server_starts_with_a_warning(
    make_server: MakeServer, caplog: pytest.LogCaptureFixture
) -> None:
    first = await make_server(worker={"enabled": False})
    await append(first, 4)
    await tamper(first, "UPDATE audit_head SET mac = NULL")  # as a database from before heads were sealed
    with caplog.at_level(logging.WARNING, logger="outpost.services.audit"):
        second = await make_server(worker={"enabled": False})
    assert audit_logged(caplog) == [
        "sealed the audit log's head at seq 4, which was not sealed: trusting that no rows were cut off its "
        "end before now (expected once, after the upgrade that seals heads)"
    ]
    assert (await second.container.audit.verify()).rows == 4
    sealed = await head_of(second)
    with caplog.at_level(logging.WARNING, logger="outpost.services.audit"):
        await second.container.audit.seal_head()  # sealing again changes nothing and says nothing
    assert await head_of(second) == sealed
    assert len(audit_logged(caplog)) == 1


async def test_two_servers_sealing_a_head_at_once_agree(make_server: MakeServer) -> None:
    servers = [await make_server(worker={"enabled": False}) for _ in range(2)]
    await append(servers[0], 3)
    await tamper(servers[0], "UPDATE audit_head SET mac = NULL")
    await asyncio.gather(*(server.container.audit.seal_head() for server in servers))
    head = await head_of(servers[1])
    assert head.mac == servers[1].container.audit.log.key.head_mac(3, head.hash)
    assert (await servers[1].container.audit.verify()).rows == 3


async def test_an_empty_log_verifies_only_with_its_head_sealed(quiet: Server) -> None:
    assert (await quiet.container.audit.verify()).rows == 0  # sealed at start
    await tamper(quiet, "UPDATE audit_head SET mac = NULL")
    with pytest.raises(ChainBroken, match=r"at seq 0: the head at seq 0 .*: its mac is empty"):
        await quiet.container.audit.verify()


async def test_a_head_sealed_before_a_master_key_rotation_verifies_after_it(make_server: MakeServer) -> None:
    old_key, new_key = os.urandom(32), os.urandom(32)
    old, new = (ChainKey(SecretBox(key).derive(KEY_PURPOSE)) for key in (old_key, new_key))
    before = await make_server(worker={"enabled": False}, secrets={"master_key": encode_master_key(old_key)})
    await append(before, 3)
    keys = {"master_key": encode_master_key(new_key), "previous_master_keys": [encode_master_key(old_key)]}
    after = await make_server(worker={"enabled": False}, secrets=keys)
    head = await head_of(after)
    assert old.seals(head)  # the start left a sealed head as it was
    assert (await after.container.audit.verify()).rows == 3
    await append(after, 1)
    assert new.seals(await head_of(after))  # the first append after the rotation seals under the new key
    assert (await after.container.audit.verify()).rows == 4


async def test_retention_keeps_the_head_sealed_and_the_log_verifying(quiet: Server) -> None:
    await append(quiet, 4)
    assert (await quiet.container.janitor.sweep(utc_now() + timedelta(days=366))).audit_rows_deleted == 4
    report = await quiet.container.audit.verify()
    assert (report.first_seq, report.rows) == (5, 1)
    assert quiet.container.audit.log.seals(await head_of(quiet))
