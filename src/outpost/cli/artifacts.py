"""`outpost artifacts ID [--json | --download DIR]`: what a dispatch's run left behind, and saving it.

A download is written as the server's names say, but the names are checked as if the server were hostile:
only plain file names are saved, each through a temporary file in DIR that is renamed over the target
once its SHA-256 matches. The target itself is never opened, so a symlink planted there is replaced
rather than followed, and a file that fails its check never appears under its name.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path
from typing import BinaryIO

import click

from outpost.cli import display
from outpost.cli.client import ApiClient
from outpost.cli.errors import DownloadFailed
from outpost.schemas.artifacts import ArtifactList, ArtifactRead

MAX_NAME_BYTES = 255
# A leading dot keeps temporary files out of sight and out of the names `check_file_name` accepts.
TEMP_PREFIX = ".outpost-download-"


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
    # Every name is checked before anything is written: a bad one leaves DIR as it was.
    for artifact in found:
        check_file_name(artifact.name)
    _make_directory(directory)
    for artifact in found:
        saved = save_artifact(api, artifact, directory)
        click.echo(f"{saved}  {display.size(artifact.size_bytes)}")


def check_file_name(name: str) -> str:
    """`name` if it is a plain file name that stays inside the directory it is saved in.

    Raises DownloadFailed for anything else: separators, `..`, NUL and other control characters, a
    leading dot (hidden files, `.`, `..`), an empty or over-long name.
    """
    unsafe = (
        not name
        or len(name.encode()) > MAX_NAME_BYTES
        or name.startswith(".")
        or ".." in name
        or any(char in "/\\" or ord(char) < 0x20 or ord(char) == 0x7F for char in name)
    )
    if unsafe:
        raise DownloadFailed(f"refusing to save an artifact named {name!r}: it is not a plain file name")
    return name


def save_artifact(api: ApiClient, artifact: ArtifactRead, directory: Path) -> Path:
    """Download `artifact` into `directory` under its (checked) name; returns the path it was saved at.

    Raises DownloadFailed when the name is unsafe, the bytes do not match the size and SHA-256 the server
    listed, or the file cannot be written; nothing is left behind then. Raises the client's errors when
    the download itself fails (PermissionDenied for an expired or altered link, Unavailable).
    """
    target = directory / check_file_name(artifact.name)
    try:
        return _save_through_temp_file(api, artifact, target)
    except OSError as exc:
        raise DownloadFailed(f"cannot save {artifact.name} in {directory}: {exc.strerror}") from exc


def _save_through_temp_file(api: ApiClient, artifact: ArtifactRead, target: Path) -> Path:
    descriptor, temp_name = tempfile.mkstemp(dir=target.parent, prefix=TEMP_PREFIX)
    try:
        with os.fdopen(descriptor, "wb") as out:
            _write_checked(api, artifact, out)
        # rename(2) replaces whatever is at the target, a symlink included, without following it.
        os.replace(temp_name, target)
    except BaseException:
        Path(temp_name).unlink(missing_ok=True)  # nothing unchecked or half-written stays behind
        raise
    return target


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
