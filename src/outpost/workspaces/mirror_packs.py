"""Keeping a mirror fast to check out from: its packs uncompressed, few, and never short of an object a
workspace may still read.

A checkout reads every blob of a tree. From packs compressed with zlib, as servers send them, that is
mostly inflating (measured on a 20,000-file tree: about 70% of the checkout); from an uncompressed pack
it is a copy. git recompresses a pack only while recomputing its deltas (`repack -F`), which takes
seconds to minutes, so it runs after a fetch, in the background, and only when much of the mirror
arrived since the last recompression. It holds a lock of its own, not the fetch lock: a pack fetched
meanwhile is not part of the repack, and `repack -d` deletes only the packs it read.

After each successful fetch:
- recompress (`repack -a -d -F` at level 0, the result marked `.keep`) when the packs fetched since
  (those without `.keep`) hold more than a quarter of the kept packs' bytes, or nothing is kept yet;
- otherwise, once more than 16 fetched packs piled up, consolidate them (`repack -a -d` leaves kept packs
  alone, and reuses the others' compressed data, which is cheap).
Both keep objects nothing references any more (`--keep-unreachable`): a workspace checked out from a
commit that a force push has since orphaned reads it through its alternates for as long as it runs. A
mirror thus never shrinks; delete it to start afresh.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from outpost.workspaces.file_lock import try_file_lock
from outpost.workspaces.git import Git
from outpost.workspaces.remote_failures import last_words

log = logging.getLogger(__name__)

RECOMPRESS_SHARE = 0.25
MAX_FETCHED_PACKS = 16
Step = Literal["recompress", "consolidate"]
UNCOMPRESSED = {"pack.compression": "0", "core.compression": "0", "core.looseCompression": "0"}
_REPACK_CONFIG = {"repack.writeBitmaps": "false", "pack.writeBitmapHashCache": "false"}


@dataclass(frozen=True, slots=True)
class PackStats:
    kept_bytes: int
    fetched_bytes: int
    fetched_packs: int


def pack_stats(mirror: Path) -> PackStats:
    """Bytes in kept (recompressed) packs, and bytes and count of the packs fetched since."""
    kept = fetched = count = 0
    for pack in (mirror / "objects" / "pack").glob("pack-*.pack"):
        size = pack.stat().st_size
        if pack.with_suffix(".keep").exists():
            kept += size
        else:
            fetched, count = fetched + size, count + 1
    return PackStats(kept, fetched, count)


def plan(stats: PackStats, uncompressed: bool) -> Step | None:
    """What the mirror needs now, if anything (see the module docstring)."""
    if (
        uncompressed
        and stats.fetched_bytes
        and (not stats.kept_bytes or stats.fetched_bytes > stats.kept_bytes * RECOMPRESS_SHARE)
    ):
        return "recompress"
    return "consolidate" if stats.fetched_packs > MAX_FETCHED_PACKS else None


async def compact_mirror(git: Git, mirror: Path, lock: Path) -> Step | None:
    """Recompress or consolidate `mirror` when it needs it, unless another process is at it (holding
    `lock`). Returns what it did. Never raises for git's failures (it logs them: a mirror that stays
    compressed still works); raises OSError when the lock file cannot be opened."""
    with try_file_lock(lock) as held:
        if not held:
            return None
        step = plan(await asyncio.to_thread(pack_stats, mirror), git.settings.uncompressed_mirrors)
        if step is None:
            return None
        if step == "recompress":
            await asyncio.to_thread(_set_kept, mirror, kept=False)  # so that the repack reads them all
        args = ["repack", "-a", "-d", "-q", "--keep-unreachable", *(["-F"] if step == "recompress" else [])]
        config = {**_REPACK_CONFIG, **(UNCOMPRESSED if step == "recompress" else {})}
        try:
            result = await git.run(
                args, git_dir=mirror, config=config, timeout_s=git.settings.fetch_timeout_s
            )
        except TimeoutError:
            log.warning("%s of mirror %s stopped: it took too long", step, mirror.name)
            return None
        if not result.ok:
            log.warning("%s of mirror %s failed: %s", step, mirror.name, last_words(result))
            return None
        if step == "recompress":
            await asyncio.to_thread(_set_kept, mirror, kept=True)
        return step


def _set_kept(mirror: Path, *, kept: bool) -> None:
    """Mark every pack as recompressed, or none. A pack fetched while a recompression ran is marked
    too; the next recompression includes it."""
    for pack in (mirror / "objects" / "pack").glob("pack-*.pack"):
        keep = pack.with_suffix(".keep")
        if kept:
            keep.touch()
            keep.chmod(0o444)  # as git makes pack files, whatever the umask
        else:
            keep.unlink(missing_ok=True)
