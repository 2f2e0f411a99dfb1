"""`outpost artifacts ID [--json | --download DIR]`: what a dispatch's run left behind, and saving it.

A download is written as the server's names say, but the names are checked as if the server were hostile:
each `/`-separated segment must be a plain file name (`outputs/report/summary.md` is saved as
`DIR/outputs/report/summary.md`). Folders are made and entered one at a time, relative to the one above,
never through a symlink: a symlink planted in DIR where a folder belongs is refused before anything is
written. Each file goes through a temporary file in its folder that is renamed over the target once its
SHA-256 matches. The target itself is never opened, so a symlink planted there is replaced rather than
followed, and a file that fails its check never appears under its name.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import secrets
from pathlib import Path
from typing import BinaryIO

import click

from outpost.cli import display
from outpost.cli.client import ApiClient
from outpost.cli.errors import DownloadFailed
from outpost.schemas.artifacts import ArtifactList, ArtifactRead

MAX_NAME_BYTES = 255
MAX_PATH_BYTES = 1024
# A leading dot keeps temporary files out of sight and out of the names `check_file_name` accepts.
TEMP_PREFIX = ".outpost-download-"
_FOLDER_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_TEMP_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


@click.command()
@click.argument("dispatch_id", metavar="ID")
@click.option("--json", "as_json", is_flag=True, help="Print the list as JSON.")
@click.option(
    "--download",
    "download_dir",
    type=click.Path(file_okay=False, path_type=Path),
    metavar="DIR",
    help="Save every artifact in DIR (created if missing), each checked against its SHA-256.",
)
def artifacts(dispatch_id: str, as_json: bool, download_dir: Path | None) -> None:
    """List the artifacts of dispatch ID (its patch, changed files, final message, events) or save them."""
    if as_json and download_dir is not None:
        raise click.UsageError("give --json or --download, not both")
    with ApiClient.from_environment() as api:
        found = api.list_artifacts(dispatch_id)
        if download_dir is not None:
            _download_all(api, found, download_dir)
            return
    if as_json:
        click.echo(ArtifactList(items=found).model_dump_json(indent=2))
    elif found:
        display.show(display.artifact_table(found))
    else:
        display.note(f"dispatch {dispatch_id} has no artifacts (yet, or any more)")


def _download_all(api: ApiClient, found: list[ArtifactRead], directory: Path) -> None:
    # Every name, and every folder already in DIR, is checked before anything is written: a bad one
    # leaves DIR as it was.
    for artifact in found:
        check_artifact_path(artifact.name)
    _make_directory(directory)
    for artifact in found:
        _close_folder(_open_folders(directory, check_artifact_path(artifact.name)[:-1], create=False))
    for artifact in found:
        saved = save_artifact(api, artifact, directory)
        click.echo(f"{saved}  {display.size(artifact.size_bytes)}")


def check_artifact_path(name: str) -> tuple[str, ...]:
    """The segments of `name` if each is a plain file name (see `check_file_name`): `outputs/a/b.txt` is
    `("outputs", "a", "b.txt")`. Raises DownloadFailed otherwise (an absolute name, an empty segment,
    `..`, a backslash, NUL, an over-long name)."""
    if len(name.encode()) > MAX_PATH_BYTES:
        raise DownloadFailed(f"refusing to save an artifact named {name[:80]!r}...: the name is too long")
    try:
        return tuple(check_file_name(segment) for segment in name.split("/"))
    except DownloadFailed:
        raise DownloadFailed(
            f"refusing to save an artifact named {name!r}: it is not a relative path of plain file names"
        ) from None


def check_file_name(name: str) -> str:
    """`name` if it is a plain file name that stays inside the directory it is saved in.

    Raises DownloadFailed for anything else: separators, `..`, NUL and other unprintable characters, a
    leading dot (hidden files, `.`, `..`), an empty or over-long name.
    """
    unsafe = (
        not name
        or len(name.encode()) > MAX_NAME_BYTES
        or name.startswith(".")
        or ".." in name
        or not name.isprintable()  # controls, line separators, bidirectional overrides
        or any(char in "/\\" for char in name)
    )
    if unsafe:
        raise DownloadFailed(f"refusing to save an artifact named {name!r}: it is not a plain file name")
    return name


def save_artifact(api: ApiClient, artifact: ArtifactRead, directory: Path) -> Path:
    """Download `artifact` into `directory` under its (checked) name, making its folders; returns the
    path it was saved at.

    Raises DownloadFailed when the name is unsafe, a folder on its way is a symlink or not a folder,
    the bytes do not match the size and SHA-256 the server listed, or the file cannot be written;
    nothing is left behind then. Raises the client's errors when the download itself fails
    (PermissionDenied for an expired or altered link, Unavailable).
    """
    parts = check_artifact_path(artifact.name)
    folder = _open_folders(directory, parts[:-1], create=True)
    if folder is None:
        raise DownloadFailed(f"cannot save {artifact.name}: {directory} went away while it was filled")
    try:
        _save_through_temp_file(api, artifact, folder, parts[-1])
    except OSError as exc:
        where = directory.joinpath(*parts[:-1])
        raise DownloadFailed(f"cannot save {artifact.name} in {where}: {exc.strerror}") from exc
    finally:
        os.close(folder)
    return directory.joinpath(*parts)


def _open_folders(directory: Path, parts: tuple[str, ...], *, create: bool) -> int | None:
    """The folder `directory/parts...`, opened one segment at a time below `directory` (the user's own
    choice, followed if it is a link) without following a link; None when one is missing and not
    `create`d. Raises DownloadFailed for a segment that is a symlink or not a folder."""
    try:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as exc:
        raise DownloadFailed(f"cannot open {directory}: {exc.strerror}") from exc
    for depth, part in enumerate(parts):
        try:
            if create:
                _make_folder(fd, part)
            child = os.open(part, _FOLDER_FLAGS, dir_fd=fd)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise _folder_refused(directory.joinpath(*parts[: depth + 1]), exc) from None
        finally:
            os.close(fd)  # the parent: done with it either way
        fd = child
    return fd


def _make_folder(parent: int, name: str) -> None:
    # A folder already there is used; anything else there is refused when it is entered. The umask
    # applies, as for any folder the user makes.
    with contextlib.suppress(FileExistsError):
        os.mkdir(name, 0o777, dir_fd=parent)


def _folder_refused(path: Path, exc: OSError) -> DownloadFailed:
    if exc.errno in {errno.ELOOP, errno.ENOTDIR}:
        what = "a symlink" if path.is_symlink() else "not a folder"
        return DownloadFailed(f"refusing to save into {path}: it is {what}; remove it or choose another DIR")
    return DownloadFailed(f"cannot open {path}: {exc.strerror}")


def _close_folder(fd: int | None) -> None:
    if fd is not None:
        os.close(fd)


def _save_through_temp_file(api: ApiClient, artifact: ArtifactRead, folder: int, name: str) -> None:
    temp_name = f"{TEMP_PREFIX}{secrets.token_hex(8)}"
    descriptor = os.open(temp_name, _TEMP_FLAGS, 0o600, dir_fd=folder)
    try:
        with os.fdopen(descriptor, "wb") as out:
            _write_checked(api, artifact, out)
        # rename(2) replaces whatever is at the target, a symlink included, without following it.
        os.replace(temp_name, name, src_dir_fd=folder, dst_dir_fd=folder)
    except BaseException:
        os.unlink(temp_name, dir_fd=folder)  # nothing unchecked or half-written stays behind
        raise


def _write_checked(api: ApiClient, artifact: ArtifactRead, out: BinaryIO) -> None:
    """Stream the artifact into `out`, then check it. Reading stops one byte past the listed size, so a
    body that does not end cannot fill the disk."""
    digest, written = hashlib.sha256(), 0
    with api.open_download(artifact.download_url) as chunks:
        for chunk in chunks:
            written += len(chunk)
            if written > artifact.size_bytes:
                break
            digest.update(chunk)
            out.write(chunk)
    if written != artifact.size_bytes:
        raise DownloadFailed(
            f"{artifact.name}: the server sent {'more' if written > artifact.size_bytes else 'fewer'} "
            f"than the {artifact.size_bytes} bytes it listed, so it was not kept (try again)"
        )
    if digest.hexdigest() != artifact.sha256.lower():
        raise DownloadFailed(
            f"{artifact.name}: its SHA-256 is {digest.hexdigest()}, not {artifact.sha256} as listed; "
            "it was damaged or changed on the way, so it was not kept (try again)"
        )
    out.flush()
    os.fsync(out.fileno())


def _make_directory(directory: Path) -> None:
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DownloadFailed(f"cannot create {directory}: {exc.strerror}") from exc
