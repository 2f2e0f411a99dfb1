"""The host-side git runner stops what runs too long or prints too much, with its whole process group."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from outpost.errors import PayloadTooLarge
from outpost.workspaces.git import Git
from outpost.workspaces.settings import GitSettings
from tests.git_repos import git


def _repo(tmp_path: Path) -> Path:
    repo = tmp_path / "repo"
    git(tmp_path, "init", "-q", "--bare", str(repo))
    return repo


async def test_a_command_over_its_time_limit_is_killed_with_its_process_group(tmp_path: Path) -> None:
    repo = _repo(tmp_path)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)  # opening it blocks until a writer comes, which never does
    runner = Git(GitSettings(), tmp_path / "home")
    started = time.monotonic()
    with pytest.raises(TimeoutError, match=r"longer than 0\.5 s"):
        await runner.run(["hash-object", str(fifo)], git_dir=repo, timeout_s=0.5)
    assert time.monotonic() - started < 5
    assert not _git_processes_reading(fifo)


async def test_output_over_the_limit_stops_the_command(tmp_path: Path) -> None:
    repo = _repo(tmp_path)
    big = tmp_path / "big"
    big.write_bytes(os.urandom(300_000))
    runner = Git(GitSettings(), tmp_path / "home")
    blob = (
        (await runner.run(["hash-object", "-w", str(big)], git_dir=repo, timeout_s=10))
        .stdout.decode()
        .strip()
    )
    with pytest.raises(PayloadTooLarge):
        await runner.run(["cat-file", "blob", blob], git_dir=repo, timeout_s=10, max_stdout_bytes=100_000)
    with pytest.raises(PayloadTooLarge):
        await runner.run(["cat-file", "blob", blob], git_dir=repo, timeout_s=10, stdout_file=tmp_path / "out",
                         max_stdout_bytes=100_000)  # fmt: skip
    copied = await runner.run(
        ["cat-file", "blob", blob], git_dir=repo, timeout_s=10, stdout_file=tmp_path / "out"
    )
    assert copied.ok
    assert copied.stdout_bytes == 300_000
    assert (tmp_path / "out").read_bytes() == big.read_bytes()


async def test_a_file_size_limit_stops_a_command_writing_too_much(tmp_path: Path) -> None:
    repo = _repo(tmp_path)
    big = tmp_path / "big"
    big.write_bytes(os.urandom(2_000_000))
    runner = Git(GitSettings(), tmp_path / "home")
    result = await runner.run(["-c", "core.looseCompression=0", "hash-object", "-w", str(big)], git_dir=repo,
                              timeout_s=10, max_file_bytes=1_000_000)  # fmt: skip
    assert result.returncode == -25  # SIGXFSZ


def _git_processes_reading(path: Path) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and str(path) in (entry / "cmdline").read_bytes().decode(
                errors="replace"
            ):
                found.append(int(entry.name))
        except OSError:
            continue
    return found
