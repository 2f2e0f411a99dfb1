"""The bwrap command line, and how the sandbox sees the host's file system. Pure: no I/O but stat."""

from __future__ import annotations

import os
from pathlib import Path

from outpost.sandbox.base import SandboxSpec
from outpost.sandbox.bwrap_fs import HOME, JobPaths
from outpost.sandbox.netns import PROXY_PORT

SANDBOX_PATH = "/usr/local/bin:/usr/bin:/bin"
WORKSPACE = "/workspace"
# Host files a command may need to read (TLS roots, the loader cache, name service switch, time zone).
ETC_READ_ONLY = (
    "ssl/certs", "ca-certificates", "alternatives", "ld.so.cache", "ld.so.conf", "ld.so.conf.d",
    "nsswitch.conf", "localtime", "mime.types", "protocols", "services", "gitconfig",
)  # fmt: skip


PROXY_URL = f"http://127.0.0.1:{PROXY_PORT}"
# The only way out: the egress proxy's listener inside the sandbox's network namespace. Set last, so a
# dispatch's env cannot point its tools elsewhere (there is nowhere else to go anyway).
PROXY_ENV = {
    **{name: PROXY_URL for name in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy")},
    **{name: PROXY_URL for name in ("npm_config_proxy", "npm_config_https_proxy")},
    "NO_PROXY": "localhost,127.0.0.1,::1",
    "no_proxy": "localhost,127.0.0.1,::1",
}


def bwrap_argv(spec: SandboxSpec, paths: JobPaths, info_fd: int, block_fd: int, seccomp_fd: int) -> list[str]:
    """The bwrap command line for `spec`, binding the files staged at `paths`. bwrap reports the
    sandbox's pid 1 on `info_fd`, then waits for a byte on `block_fd` before it starts the command, so
    the server can confine the sandbox first; the command runs under the seccomp program read from
    `seccomp_fd`."""
    argv = [
        "bwrap", "--unshare-user", "--disable-userns", "--unshare-pid", "--unshare-ipc", "--unshare-uts",
        "--unshare-net", "--unshare-cgroup-try", "--hostname", "sandbox", "--die-with-parent",
        "--new-session", "--clearenv",
    ]  # fmt: skip
    environment = {"PATH": SANDBOX_PATH, "HOME": HOME, "USER": "agent", "LANG": "C.UTF-8", "TMPDIR": "/tmp"}
    for name, value in {**environment, "TERM": "dumb", **spec.env, **PROXY_ENV}.items():
        argv += ["--setenv", name, value]
    argv += ["--ro-bind", "/usr", "/usr"]
    for link in ("bin", "sbin", "lib", "lib64"):
        argv += ["--symlink", f"usr/{link}", f"/{link}"]
    for name in ETC_READ_ONLY:
        argv += ["--ro-bind-try", f"/etc/{name}", f"/etc/{name}"]
    for name in ("passwd", "group", "hosts", "resolv.conf"):
        argv += ["--ro-bind", str(paths.etc / name), f"/etc/{name}"]
    argv += ["--proc", "/proc", "--dev", "/dev"]
    for source, inside in (("tmp", "/tmp"), ("home", HOME), ("shm", "/dev/shm")):
        argv += ["--bind", str(paths.scratch / source), inside]
    for index, host_dir in enumerate(spec.read_only):
        argv += ["--ro-bind", str(paths.read_only(index)), str(host_dir)]
    argv += ["--bind", str(paths.workspace), WORKSPACE, "--chdir", WORKSPACE, "--remount-ro", "/"]
    argv += ["--info-fd", str(info_fd), "--block-fd", str(block_fd), "--seccomp", str(seccomp_fd)]
    return [*argv, "--", *spec.argv]


def as_user(uid: int, argv: list[str]) -> list[str]:
    """`argv` run as `uid` (real, effective and saved uid and gid; no supplementary groups, hence no
    capabilities), switched by util-linux's setpriv right before it execs `argv`."""
    return ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "--", *argv]


def host_path_of_program(program: str, workdir: Path, read_only: tuple[Path, ...] = ()) -> Path | None:
    """Where the sandbox's `program` lives on the host (its /usr is the host's, /bin and friends link into
    it, /workspace is the workdir, read-only binds keep their host path), or None when there is no such
    executable."""
    candidates = [program] if "/" in program else [f"{d}/{program}" for d in SANDBOX_PATH.split(":")]
    for candidate in candidates:
        inside = Path(candidate)
        if any(inside.is_relative_to(directory) for directory in read_only):
            host = inside
        elif inside.is_relative_to(WORKSPACE):
            host = workdir / inside.relative_to(WORKSPACE)
        elif inside.parts[1:2] in (("bin",), ("sbin",), ("lib",), ("lib64",)):
            host = Path("/usr") / inside.relative_to("/")
        elif inside.is_relative_to("/usr"):
            host = inside
        else:
            continue
        if host.is_file() and os.access(host, os.X_OK):
            return host
    return None
