"""Where git may connect for an http(s) remote: the host's addresses, checked, then pinned for git.

A repository URL is untrusted, and git runs on the worker's host: without this check a dispatch could
make the worker fetch from its own network (cloud metadata, internal services). The host is resolved
here, every address must be public (unless the settings allow private networks), and git gets exactly
those addresses through `http.curloptResolve`, so a name cannot answer one address to the check and
another to git (DNS rebinding). Redirects are refused (see `git`), so git reaches no other host.
"""

from __future__ import annotations

import asyncio
import socket

from outpost.errors import InvalidInput, Unavailable
from outpost.sandbox.egress_policy import address_problem
from outpost.workspaces.repo_url import FIELD, RepoUrl
from outpost.workspaces.settings import GitSettings

RESOLVE_TIMEOUT_S = 10.0
_NO_SUCH_NAME = {socket.EAI_NONAME, getattr(socket, "EAI_NODATA", socket.EAI_NONAME)}


async def pinned_config(repo: RepoUrl, settings: GitSettings) -> dict[str, str]:
    """The `-c` options that pin git to the checked addresses of `repo`'s host (none for local
    repositories and IP literals, which the URL policy already judged).

    Raises InvalidInput when the host does not resolve or resolves to a non-public address, and
    Unavailable when resolving fails otherwise (no answer in time, resolver down).
    """
    if repo.scheme == "file" or repo.ip_literal:
        return {}
    addresses = await _resolve(repo.host, repo.port)
    if not settings.allow_private_network:
        for address in addresses:
            problem = address_problem(address)
            if problem is not None:
                raise InvalidInput(f"{repo.host} resolves to the non-public address {address} ({problem}); "
                                   "git remotes must be public hosts", field=FIELD)  # fmt: skip
    pinned = ",".join(f"[{address}]" if ":" in address else address for address in addresses)
    return {"http.curloptResolve": f"{repo.host}:{repo.port}:{pinned}"}


async def _resolve(host: str, port: int) -> list[str]:
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(RESOLVE_TIMEOUT_S):
            answers = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except TimeoutError:
        raise Unavailable(
            f"resolving {host} took longer than {RESOLVE_TIMEOUT_S:g} s; try again later"
        ) from None
    except socket.gaierror as exc:
        if exc.errno in _NO_SUCH_NAME:
            raise InvalidInput(
                f"the git host {host} does not exist (its name does not resolve)", field=FIELD
            ) from exc
        raise Unavailable(f"cannot resolve {host}: {exc.strerror}; try again later") from exc
    addresses = [str(answer[4][0]) for answer in answers]
    return list(dict.fromkeys(addresses))  # unique, in the resolver's order
