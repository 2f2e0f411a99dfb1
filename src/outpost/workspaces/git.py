"""The one way Outpost runs git on the host: a fixed program, an argv list, an environment and
configuration built from scratch, a time limit, bounded output, and secrets kept out of argv and errors.

Nothing of the host's git setup applies: no system or global config (`GIT_CONFIG_NOSYSTEM`,
`GIT_CONFIG_GLOBAL=/dev/null`), an empty private `HOME`, no prompts, askpass programs, credential
helpers, hooks, fsmonitor, attribute or exclude files of the host. Every call carries the same `-c`
options: only https (plus http and file when the settings allow them) as transport, redirects refused
(a credential must not follow one to another host, and a redirect could lead to an address the host
check never saw). The only repository configs git reads are the ones Outpost created (mirrors and
private git dirs, always named with `--git-dir`, so git never discovers a repository by itself and its
ownership check does not come into play; `safe.directory` is never widened).

An HTTP credential travels as `http.extraHeader` through `GIT_CONFIG_COUNT`/`GIT_CONFIG_KEY_n`/
`GIT_CONFIG_VALUE_n` in the environment (readable only by the same user), never in argv, and its
spellings are replaced with `***` in the stderr handed back.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import resource
import shutil
import signal
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from outpost.errors import InvalidInput, PayloadTooLarge, Unavailable
from outpost.sandbox.child import Child
from outpost.workspaces.settings import GitSettings

MAX_CAPTURED_BYTES = 1024 * 1024
"""Most stdout `Git.run` keeps in memory; larger outputs go to a file (`stdout_file`)."""
MAX_STDERR_BYTES = 64 * 1024
"""Most stderr kept, from its end (git's last words are the ones that explain a failure)."""
DEFAULT_USERNAME = "x-access-token"
_CHUNK = 256 * 1024


@dataclass(frozen=True, slots=True)
class HttpCredential:
    """A username and password (or token) for an https remote. Its repr hides the password."""

    username: str
    password: str = field(repr=False)

    @classmethod
    def parse(cls, text: str) -> HttpCredential:
        """From `username:password`, or a bare token (sent with the username `x-access-token`, which
        GitHub and GitLab accept with a personal access token). Raises InvalidInput."""
        if not text or any(char in text for char in "\0\r\n"):
            raise InvalidInput("the git credential is empty or has line breaks", field="repo.credential")
        username, colon, password = text.partition(":")
        return cls(username, password) if colon and username else cls(DEFAULT_USERNAME, text)

    @property
    def header(self) -> str:
        return f"Authorization: Basic {self._token}"

    @property
    def secrets(self) -> tuple[str, ...]:
        """Every spelling of the secret that could show up in git's output."""
        return tuple(s for s in (self._token, f"{self.username}:{self.password}", self.password) if s)

    @property
    def _token(self) -> str:
        return base64.b64encode(f"{self.username}:{self.password}".encode()).decode("ascii")


@dataclass(frozen=True, slots=True)
class GitResult:
    """How a git command ended. `stderr` is decoded, redacted and at most MAX_STDERR_BYTES long;
    `stdout` is empty when it went to a file; `stdout_bytes` counts it either way."""

    returncode: int
    stdout: bytes
    stderr: str
    stdout_bytes: int

    @property
    def ok(self) -> bool:
        return self.returncode == 0


class Git:
    """Runs git for the worker. `home` is a private directory (created empty) used as `HOME`."""

    def __init__(self, settings: GitSettings, home: Path) -> None:
        self.settings = settings
        self._home = home
        self._program = shutil.which("git")
        self._config = _base_config(settings)

    def command(
        self,
        args: Sequence[str],
        *,
        git_dir: Path | None = None,
        work_tree: Path | None = None,
        config: Mapping[str, str] | None = None,
    ) -> list[str]:
        """The argv of `git <args>`: the hardened `-c` options, then `config`, then the repository."""
        argv = [self._program or "git"]
        for key, value in {**self._config, **(config or {})}.items():
            argv += ["-c", f"{key}={value}"]
        if git_dir is not None:
            argv.append(f"--git-dir={_absolute(git_dir)}")
        if work_tree is not None:
            argv.append(f"--work-tree={_absolute(work_tree)}")
        return [*argv, *args]

    def environment(
        self, *, credential: HttpCredential | None = None, index_file: Path | None = None
    ) -> dict[str, str]:
        """The whole environment of a git process (nothing is inherited from the worker's)."""
        program_dir = os.path.dirname(self._program) if self._program else ""
        env = {
            "PATH": os.pathsep.join(p for p in (program_dir, os.defpath) if p),
            "HOME": str(self._home),
            "XDG_CONFIG_HOME": str(self._home / ".config"),  # never created: nothing to read there
            "LC_ALL": "C",  # stable messages: failures are recognised by their text
            "GIT_CONFIG_NOSYSTEM": "1",
            "GIT_CONFIG_SYSTEM": "/dev/null",
            "GIT_CONFIG_GLOBAL": "/dev/null",
            "GIT_TERMINAL_PROMPT": "0",
            "GIT_PROTOCOL_FROM_USER": "0",
            "GIT_ATTR_NOSYSTEM": "1",
            "GIT_NO_REPLACE_OBJECTS": "1",
            "GIT_LITERAL_PATHSPECS": "1",  # paths handed to git are names, never patterns
        }
        if index_file is not None:
            env["GIT_INDEX_FILE"] = str(_absolute(index_file))
        if credential is not None:
            env |= {"GIT_CONFIG_COUNT": "1", "GIT_CONFIG_KEY_0": "http.extraHeader"}
            env["GIT_CONFIG_VALUE_0"] = credential.header
        return env

    async def run(
        self,
        args: Sequence[str],
        *,
        timeout_s: float,
        git_dir: Path | None = None,
        work_tree: Path | None = None,
        config: Mapping[str, str] | None = None,
        credential: HttpCredential | None = None,
        index_file: Path | None = None,
        stdout_file: Path | None = None,
        max_stdout_bytes: int = MAX_CAPTURED_BYTES,
        max_file_bytes: int | None = None,
    ) -> GitResult:
        """Run `git <args>` (see `command`); a non-zero exit is returned, not raised.

        `stdout_file` receives stdout (created or truncated) instead of memory. `max_file_bytes` caps
        every file the command and its children write (RLIMIT_FSIZE: past it they get SIGXFSZ).
        Raises TimeoutError after `timeout_s` (its whole process group is killed first),
        PayloadTooLarge when stdout exceeds `max_stdout_bytes` (killed too), and Unavailable when git
        cannot be started.
        """
        if self._program is None:
            raise Unavailable("git is not installed on this worker (install git and restart it)")
        self._home.mkdir(mode=0o700, parents=True, exist_ok=True)
        argv = self.command(args, git_dir=git_dir, work_tree=work_tree, config=config)
        env = self.environment(credential=credential, index_file=index_file)
        cwd = work_tree or git_dir or self._home
        try:
            child = await Child.spawn(argv, cwd=cwd, env=env, new_session=True)
        except OSError as exc:
            raise Unavailable(f"cannot start git: {exc}") from exc
        if max_file_bytes is not None:
            # Set once it runs: its first write comes after a round trip to the remote at the earliest,
            # and children it starts later inherit the limit.
            with contextlib.suppress(ProcessLookupError):
                resource.prlimit(child.pid, resource.RLIMIT_FSIZE, (max_file_bytes, max_file_bytes))
        secrets = credential.secrets if credential else ()
        return await _finish(child, timeout_s, stdout_file, max_stdout_bytes, secrets)


async def _finish(
    child: Child, timeout_s: float, stdout_file: Path | None, limit: int, secrets: tuple[str, ...]
) -> GitResult:
    if stdout_file is None:
        reader = asyncio.ensure_future(_read_capped(child.stdout, limit))
    else:
        reader = asyncio.ensure_future(_copy_capped(child.stdout, stdout_file, limit))
    # The longest secret's length more than is kept: a secret the cut would split is still seen whole.
    margin = max((len(secret.encode()) for secret in secrets), default=0)
    errors = asyncio.ensure_future(_read_tail(child.stderr, MAX_STDERR_BYTES + margin))
    finished = False
    try:
        async with asyncio.timeout(timeout_s):
            stdout, size = await reader
            code = await child.wait()
            stderr = await errors
        finished = True
    except TimeoutError:
        raise TimeoutError(f"git ran longer than {timeout_s:g} s and was stopped") from None
    finally:
        reader.cancel()
        errors.cancel()
        await _stop(child, kill=not finished)
    return GitResult(code, stdout, redact_tail(stderr, secrets, MAX_STDERR_BYTES), size)


async def _stop(child: Child, *, kill: bool) -> None:
    """Kill the process group unless it ended by itself, reap it and close its pipes."""
    if kill:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(child.pid, signal.SIGKILL)
    await child.wait()
    child.close_pipes()


async def _read_capped(stream: asyncio.StreamReader, limit: int) -> tuple[bytes, int]:
    data = await stream.read(limit + 1)
    while len(data) <= limit:
        chunk = await stream.read(limit + 1 - len(data))
        if not chunk:
            return data, len(data)
        data += chunk
    raise PayloadTooLarge(f"git printed more than {limit} bytes")


async def _copy_capped(stream: asyncio.StreamReader, path: Path, limit: int) -> tuple[bytes, int]:
    size = 0
    with path.open("wb") as sink:
        while chunk := await stream.read(_CHUNK):
            size += len(chunk)
            if size > limit:
                raise PayloadTooLarge(f"git wrote more than {limit} bytes")
            # On the loop on purpose: a page-cache write of one chunk costs less than a thread hop.
            sink.write(chunk)
    return b"", size


async def _read_tail(stream: asyncio.StreamReader, limit: int) -> bytes:
    tail = b""
    while chunk := await stream.read(_CHUNK):
        tail = (tail + chunk)[-limit:]
    return tail


def redact_tail(raw: bytes, secrets: Sequence[str], limit: int) -> str:
    """The last `limit` bytes of `raw`, decoded, with every secret in them replaced by `***`, including
    one cut by the start of that tail (`raw` must hold the longest secret's length more than `limit`,
    so that such a secret is there whole to be found)."""
    start = max(0, len(raw) - limit)
    found = [
        (at, at + len(encoded))
        for encoded in {secret.encode() for secret in secrets if secret}
        for at in _occurrences(raw, encoded)
    ]
    parts, at = [], start
    # In order; where two start together, the longer first, so that no part of it survives.
    for begin, end in sorted(found, key=lambda span: (span[0], -span[1])):
        if end > at:
            parts += [raw[at : max(begin, at)], b"***"]
            at = end
    parts.append(raw[at:])
    return b"".join(parts).decode("utf-8", "replace")


def _occurrences(raw: bytes, needle: bytes) -> list[int]:
    found, at = [], raw.find(needle)
    while at >= 0:
        found.append(at)
        at = raw.find(needle, at + 1)
    return found


def redact(text: str, secrets: Sequence[str]) -> str:
    """`text` with every secret replaced by `***` (longest first, so no part of one survives)."""
    for secret in sorted(secrets, key=len, reverse=True):
        text = text.replace(secret, "***")
    return text


def _absolute(path: Path) -> Path:
    if not path.is_absolute():
        raise ValueError(f"git is given absolute paths only, not {path}")
    return path


def _base_config(settings: GitSettings) -> dict[str, str]:
    allowed = {"https": True, "http": settings.allow_http, "file": settings.allow_local}
    return {
        "protocol.allow": "never",
        **{f"protocol.{name}.allow": "always" if on else "never" for name, on in allowed.items()},
        "http.followRedirects": "false",
        "http.sslVerify": "true",
        "credential.helper": "",
        "core.askPass": "",
        "core.sshCommand": "false",
        "core.hooksPath": "/dev/null",
        "core.fsmonitor": "false",
        "core.attributesFile": "/dev/null",
        "core.excludesFile": "/dev/null",
        "core.untrackedCache": "false",
        "core.splitIndex": "false",
        "core.symlinks": "true",
        "core.fileMode": "true",
        "core.autocrlf": "false",
        "core.trustctime": "true",
        "core.checkStat": "default",
        "core.ignoreStat": "false",
        "submodule.recurse": "false",
        "fetch.recurseSubmodules": "false",
        "gc.auto": "0",  # mirrors are compacted by Outpost itself, under its own lock (mirror_packs)
        "maintenance.auto": "false",
        "init.defaultBranch": "main",
        "advice.addEmbeddedRepo": "false",
        "color.ui": "never",
    }
