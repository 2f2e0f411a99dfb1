"""The disk guard keeps a reserve of free space on the data dir's file system: the larger of an absolute
and a relative figure. statvfs is injected, so no test has to fill a disk."""

from __future__ import annotations

import os
from pathlib import Path

import orjson
import pytest
from pydantic import ValidationError

from outpost.api.problems import outpost_error_response
from outpost.errors import InsufficientStorage, Unavailable
from outpost.services.retention_settings import RetentionSettings
from outpost.settings import Settings
from outpost.storage.disk_guard import DiskGuard, format_bytes, measure_usage

MIB = 1024**2
GIB = 1024**3
BLOCK = 4096


def fake_statvfs(total_bytes: int, free_bytes: int) -> os.statvfs_result:
    blocks, available = total_bytes // BLOCK, free_bytes // BLOCK
    # bfree (root's view) is larger than bavail: the guard must use bavail, what the server may take.
    return os.statvfs_result((BLOCK, BLOCK, blocks, available + 100, available, 0, 0, 0, 0, 255))


def guard(total_bytes: int, free_bytes: int, **retention: float) -> DiskGuard:
    settings = RetentionSettings(**retention)  # type: ignore[arg-type]
    found = fake_statvfs(total_bytes, free_bytes)
    return DiskGuard(Path("data"), settings, statvfs=lambda _path: found)


def test_the_absolute_reserve_applies_when_it_is_larger_than_the_percentage() -> None:
    state = guard(10 * GIB, 5 * GIB, min_free_bytes=GIB, min_free_percent=5).state()
    assert (state.total_bytes, state.free_bytes, state.reserve_bytes) == (10 * GIB, 5 * GIB, GIB)
    assert not state.low


def test_the_percentage_applies_when_it_is_larger_than_the_absolute_reserve() -> None:
    state = guard(100 * GIB, 50 * GIB, min_free_bytes=GIB, min_free_percent=5).state()
    assert state.reserve_bytes == 5 * GIB


def test_a_percentage_of_an_odd_size_rounds_the_reserve_up() -> None:
    state = guard(1000 * BLOCK, 500 * BLOCK, min_free_bytes=0, min_free_percent=0.1).state()
    assert state.reserve_bytes == 4096  # 0.1 % of 4,096,000 bytes
    assert guard(3 * BLOCK, 0, min_free_bytes=0, min_free_percent=50).state().reserve_bytes == 6144


def test_free_space_below_the_reserve_is_low() -> None:
    assert guard(10 * GIB, GIB - BLOCK, min_free_bytes=GIB, min_free_percent=0).state().low
    assert not guard(10 * GIB, GIB, min_free_bytes=GIB, min_free_percent=0).state().low


def test_a_write_that_leaves_exactly_the_reserve_is_allowed() -> None:
    guard(10 * GIB, 2 * GIB, min_free_bytes=GIB, min_free_percent=0).check(GIB)


def test_a_write_that_would_eat_into_the_reserve_is_refused_with_the_figures() -> None:
    with pytest.raises(InsufficientStorage) as raised:
        guard(10 * GIB, 2 * GIB, min_free_bytes=GIB, min_free_percent=0).check(GIB + 1)
    assert "2.0 GiB free" in raised.value.detail
    assert "1.0 GiB in reserve" in raised.value.detail


def test_a_disk_already_below_the_reserve_refuses_even_an_empty_write() -> None:
    with pytest.raises(InsufficientStorage):
        guard(100 * GIB, 4 * GIB, min_free_bytes=0, min_free_percent=5).check(0)


def test_insufficient_storage_is_http_507() -> None:
    response = outpost_error_response(InsufficientStorage("full"))
    assert response.status_code == 507
    assert orjson.loads(bytes(response.body))["type"] == "urn:outpost:problem:insufficient-storage"


def test_a_file_system_that_cannot_be_queried_is_unavailable(tmp_path: Path) -> None:
    missing = DiskGuard(tmp_path / "missing", RetentionSettings())
    with pytest.raises(Unavailable, match="cannot read the free space"):
        missing.check(1)


def test_the_real_statvfs_describes_the_data_dirs_file_system(tmp_path: Path) -> None:
    state = DiskGuard(tmp_path, RetentionSettings(min_free_bytes=0, min_free_percent=0)).state()
    assert 0 < state.free_bytes <= state.total_bytes
    assert (state.reserve_bytes, state.low) == (0, False)


def test_retention_settings_nest_under_outpost_retention(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OUTPOST_RETENTION__DISK_CAP_BYTES", str(10 * GIB))
    monkeypatch.setenv("OUTPOST_RETENTION__MIN_FREE_PERCENT", "2.5")
    retention = Settings().retention
    assert (retention.disk_cap_bytes, retention.min_free_percent) == (10 * GIB, 2.5)
    assert (retention.artifact_days, retention.event_days, retention.min_free_bytes) == (30, 30, GIB)


@pytest.mark.parametrize(
    "bad",
    [
        {"artifact_days": 0}, {"event_days": -1}, {"disk_cap_bytes": 1024}, {"min_free_bytes": -1},
        {"min_free_percent": 100.5}, {"sweep_interval_s": 0},
    ],
)  # fmt: skip
def test_retention_settings_out_of_range_are_refused(bad: dict[str, float]) -> None:
    with pytest.raises(ValidationError):
        RetentionSettings(**bad)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("count", "text"),
    [
        (0, "0 bytes"),
        (1023, "1023 bytes"),
        (1536, "1.5 KiB"),
        (5 * GIB, "5.0 GiB"),
        (3 * 1024**5, "3.0 PiB"),
        (2 * 1024**6, "2048.0 PiB"),
    ],
)
def test_sizes_read_as_an_operator_expects(count: int, text: str) -> None:
    assert format_bytes(count) == text


def test_usage_counts_a_hard_linked_file_once_and_follows_no_symlink(tmp_path: Path) -> None:
    root = tmp_path / "data"
    root.mkdir()
    empty = measure_usage(root)
    (root / "a").write_bytes(b"x" * MIB)
    with_file = measure_usage(root)
    assert with_file - empty >= MIB
    os.link(root / "a", root / "b")
    outside = tmp_path / "outside"
    outside.write_bytes(b"y" * 4 * MIB)
    (root / "c").symlink_to(outside)
    assert measure_usage(root) - with_file < 64 * 1024  # a link's own entry at most, never its target
