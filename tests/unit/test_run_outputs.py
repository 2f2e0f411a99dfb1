"""The outputs reader on a real directory: what a run leaves in `.outpost/outputs` and what is kept of it."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from outpost.errors import InvalidInput, SandboxError
from outpost.worker.run_outputs import (
    MAX_WARNINGS,
    OutputFile,
    OutputLimits,
    OutputsListing,
    RunOutputs,
    capped_warnings,
    content_type_of,
    reset_outputs_dir,
)

PREFIX = "tenants/t1/dispatches/d1/"


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    workdir = tmp_path / "workspace"
    workdir.mkdir()
    reset_outputs_dir(workdir)
    return workdir


def outputs_of(workdir: Path) -> Path:
    return workdir / ".outpost" / "outputs"


def write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


@pytest.fixture
def opened(workdir: Path) -> Iterator[RunOutputs]:
    outputs = RunOutputs.open(workdir)
    assert outputs is not None
    yield outputs
    outputs.close()


def listing_of(workdir: Path, limits: OutputLimits | None = None) -> OutputsListing:
    outputs = RunOutputs.open(workdir)
    assert outputs is not None
    try:
        return outputs.listing(limits or OutputLimits(), PREFIX)
    finally:
        outputs.close()


async def read_all(outputs: RunOutputs, file: OutputFile) -> bytes:
    return b"".join([chunk async for chunk in outputs.chunks(file)])


async def test_regular_files_are_listed_in_name_order_and_read_back_exactly(workdir: Path) -> None:
    out = outputs_of(workdir)
    write(out / "sub" / "r.txt", b"hi\n")
    write(out / "a.bin", bytes(range(256)) * 5000)
    write(out / "empty", b"")
    os.link(out / "a.bin", out / "hardlink.bin")  # a hardlink inside is just another file
    outputs = RunOutputs.open(workdir)
    assert outputs is not None
    try:
        listing = outputs.listing(OutputLimits(), PREFIX)
        assert [f.name for f in listing.files] == [
            "outputs/a.bin", "outputs/empty", "outputs/hardlink.bin", "outputs/sub/r.txt",
        ]  # fmt: skip
        assert listing.warnings == []
        contents = {f.name: await read_all(outputs, f) for f in listing.files}
    finally:
        outputs.close()
    assert contents["outputs/sub/r.txt"] == b"hi\n"
    assert contents["outputs/a.bin"] == contents["outputs/hardlink.bin"] == bytes(range(256)) * 5000
    assert contents["outputs/empty"] == b""


def test_symlinks_are_never_followed_and_each_is_reported(workdir: Path, tmp_path: Path) -> None:
    out = outputs_of(workdir)
    secret_dir = write(tmp_path / "host" / "secret.txt", b"host secret").parent
    (out / "passwd").symlink_to("/etc/passwd")
    (out / "host").symlink_to(secret_dir)
    (out / "dangling").symlink_to(tmp_path / "missing")
    write(out / "kept.txt", b"k")
    listing = listing_of(workdir)
    assert [f.name for f in listing.files] == ["outputs/kept.txt"]
    assert sorted(listing.warnings) == [
        "outputs/dangling: a symlink, not a regular file; left out",
        "outputs/host: a symlink, not followed; left out",
        "outputs/passwd: a symlink, not a regular file; left out",
    ]


@pytest.mark.parametrize("planted", [".outpost", ".outpost/outputs"])
def test_a_symlink_in_place_of_the_outputs_directory_yields_nothing(
    workdir: Path, tmp_path: Path, planted: str
) -> None:
    host = tmp_path / "host-data"
    write(host / "outputs" / "secret.txt", b"host secret")
    write(host / "secret.txt", b"host secret")
    target = workdir / planted
    os.rename(target, tmp_path / "moved-away")
    target.symlink_to(host)
    with pytest.raises(InvalidInput, match="not a directory"):
        RunOutputs.open(workdir)


def test_a_removed_outputs_directory_is_no_outputs_and_no_warning(workdir: Path) -> None:
    outputs_of(workdir).rmdir()
    assert RunOutputs.open(workdir) is None


def test_fifos_sockets_and_devices_are_left_out_without_blocking(workdir: Path) -> None:
    out = outputs_of(workdir)
    os.mkfifo(out / "fifo")
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(str(out / "sock"))
    try:
        os.mknod(out / "null", 0o600 | 0o020000, os.makedev(1, 3))
        listing = listing_of(workdir)
    finally:
        listener.close()
    assert listing.files == []
    assert sorted(listing.warnings) == [
        "outputs/fifo: a FIFO, not a regular file; left out",
        "outputs/null: a device, not a regular file; left out",
        "outputs/sock: a socket, not a regular file; left out",
    ]


def test_names_that_cannot_be_keys_are_left_out_and_shown_escaped(workdir: Path) -> None:
    out = os.fsencode(outputs_of(workdir))
    names = (
        b"new\nline.txt",
        b"bad-\xff.txt",
        b"...",
        b"back\\slash",
        b'q"uo;te.txt',
        b"..x",
        "é.md".encode(),
    )
    for name in names:
        with open(os.path.join(out, name), "wb") as file:
            file.write(b"x")
    listing = listing_of(workdir)
    assert [f.name for f in listing.files] == ["outputs/..x", 'outputs/q"uo;te.txt', "outputs/é.md"]
    shown = sorted(listing.warnings)
    assert len(shown) == 4
    assert "outputs/...: a name that is not allowed" in shown[0]
    assert shown[1].startswith("outputs/back\\\\slash: a name that is not allowed")
    assert shown[2] == "outputs/bad-\\xff.txt: a name that is not UTF-8; left out"
    assert shown[3].startswith("outputs/new\\nline.txt: a name that is not allowed")
    assert all("\n" not in warning for warning in shown)


def test_files_over_the_caps_are_left_out_each_with_a_warning(workdir: Path) -> None:
    out = outputs_of(workdir)
    write(out / "a-small", b"a" * 10)
    write(out / "b-big", b"b" * 101)
    write(out / "c-fits", b"c" * 60)
    write(out / "d-past-total", b"d" * 40)
    write(out / "e-small", b"e" * 20)
    limits = OutputLimits(max_files=10, max_file_bytes=100, max_total_bytes=100)
    listing = listing_of(workdir, limits)
    assert [f.name for f in listing.files] == ["outputs/a-small", "outputs/c-fits", "outputs/e-small"]
    assert listing.warnings == [
        "outputs/b-big: larger than the 100 bytes a file may have; left out",
        "outputs/d-past-total: past the 100 bytes all files together may take; left out",
    ]


def test_past_the_file_count_the_walk_stops_with_one_warning(workdir: Path) -> None:
    for index in range(30):
        write(outputs_of(workdir) / f"f{index:02}", b"x")
    listing = listing_of(workdir, OutputLimits(max_files=5))
    assert [f.name for f in listing.files] == [f"outputs/f{index:02}" for index in range(5)]
    assert listing.warnings == ["outputs/: over 5 files; the rest were left out"]


def test_warnings_are_capped_with_a_count(workdir: Path) -> None:
    for index in range(MAX_WARNINGS + 7):
        os.mkfifo(outputs_of(workdir) / f"p{index:02}")
    listing = listing_of(workdir)
    assert (len(listing.warnings), listing.more_warnings) == (MAX_WARNINGS, 7)
    capped = capped_warnings([*listing.warnings, "stored: failed"], listing.more_warnings)
    assert capped[-1] == "... and 8 more"
    assert len(capped) == MAX_WARNINGS + 1


def test_folders_too_deep_for_a_name_are_not_walked(workdir: Path) -> None:
    deep = outputs_of(workdir)
    for _ in range(130):  # 130 levels of `d/` make names longer than the 255 characters a name may have
        deep = deep / "d"
    write(deep / "f", b"x")
    write(outputs_of(workdir) / "d" / "shallow", b"y")
    listing = listing_of(workdir)
    assert [f.name for f in listing.files] == ["outputs/d/shallow"]
    assert len(listing.warnings) == 1
    assert "names would be longer than 255" in listing.warnings[0]


async def test_a_file_replaced_after_it_was_listed_is_not_read(workdir: Path, opened: RunOutputs) -> None:
    path = write(outputs_of(workdir) / "swap.txt", b"listed")
    [file] = opened.listing(OutputLimits(), PREFIX).files
    path.rename(path.with_name("aside"))  # still there: its inode cannot be reused
    path.symlink_to("/etc/passwd")
    with pytest.raises(InvalidInput, match="cannot be read"):
        await read_all(opened, file)
    path.unlink()
    write(path, b"listed")  # same name, size and content: another file
    with pytest.raises(InvalidInput, match="replaced"):
        await read_all(opened, file)


def test_reset_empties_the_directory_and_removes_planted_links_without_following_them(
    workdir: Path, tmp_path: Path
) -> None:
    host = tmp_path / "host"
    write(host / "keep.txt", b"keep")
    write(outputs_of(workdir) / "old" / "report.txt", b"run 1")
    reset_outputs_dir(workdir)
    assert list(outputs_of(workdir).iterdir()) == []

    outputs_of(workdir).rmdir()
    outputs_of(workdir).symlink_to(host)
    reset_outputs_dir(workdir)
    assert outputs_of(workdir).is_dir()
    assert not outputs_of(workdir).is_symlink()

    write(workdir / ".outpost" / "other", b"kept beside outputs")
    reset_outputs_dir(workdir)
    assert (workdir / ".outpost" / "other").read_bytes() == b"kept beside outputs"

    os.rename(workdir / ".outpost", tmp_path / "aside")
    (workdir / ".outpost").symlink_to(host)
    reset_outputs_dir(workdir)
    assert (workdir / ".outpost").is_dir()
    assert not (workdir / ".outpost").is_symlink()
    assert sorted(p.name for p in host.iterdir()) == ["keep.txt"]


def test_reset_in_a_missing_workspace_is_a_sandbox_error(tmp_path: Path) -> None:
    with pytest.raises(SandboxError, match="outputs directory"):
        reset_outputs_dir(tmp_path / "missing")


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("outputs/report.json", "application/json"),
        ("outputs/page.html", "text/html"),
        ("outputs/data.tar.gz", "application/octet-stream"),
        ("outputs/no-extension", "application/octet-stream"),
        ("outputs/x.unknownext", "application/octet-stream"),
    ],
)
def test_content_types_come_from_the_extension(name: str, expected: str) -> None:
    assert content_type_of(name) == expected
