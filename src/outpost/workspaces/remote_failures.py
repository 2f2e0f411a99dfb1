"""Why a fetch failed, told from git's stderr (git runs under `LC_ALL=C`), as an Outpost error.

The choice of class follows who can fix it. The dispatch's author: the repository does not exist, is
private and needs a credential, refused the credential, redirects elsewhere, or has an untrusted
certificate (InvalidInput, 422). Nobody right now: the server cannot be reached or answered with an
error of its own (Unavailable, 503: try again later). A repository over the fetch size limit is
PayloadTooLarge. A git credential is not an Outpost API key, so it is never AuthenticationFailed (401
tells API clients their own key is bad).
"""

from __future__ import annotations

import re

from outpost.errors import InvalidInput, OutpostError, PayloadTooLarge, Unavailable
from outpost.workspaces.git import GitResult

FIELD = "repo.url"
MAX_DETAIL_CHARS = 300
_HTTP_ERROR = re.compile(r"returned error: (\d{3})")
_AUTH = ("could not read username", "could not read password", "authentication failed")
_MISSING = ("not found", "does not appear to be a git repository")
_CERTIFICATE = ("certificate", "ssl peer", "unable to get local issuer")
_SIGXFSZ = 25


def fetch_failure(result: GitResult, url: str, max_fetch_bytes: int) -> OutpostError:
    """The error for a failed fetch of `url` (its stderr is already redacted)."""
    text = result.stderr.lower()
    if result.returncode == -_SIGXFSZ or f"signal {_SIGXFSZ}" in text:
        return PayloadTooLarge(f"{url} is larger than this server's fetch limit ({max_fetch_bytes} bytes)")
    problem = _client_problem(text, url, result)
    if problem is not None:
        return InvalidInput(problem, field=FIELD)
    return Unavailable(f"cannot fetch {url}: {last_words(result)}; try again later")


def _client_problem(text: str, url: str, result: GitResult) -> str | None:
    """What the dispatch's author must fix, or None when the failure is the remote's or the network's."""
    status = _http_status(text)
    if status == 401 or any(marker in text for marker in _AUTH):
        return f"{url} refused the credential, or needs one: check the repository's git credential"
    if status == 403:
        return f"{url} denied access (HTTP 403): the credential cannot read it"
    if status in {404, 410} or any(marker in text for marker in _MISSING):
        return f"no repository at {url} (if it is private, give a credential)"
    if status is not None and 300 <= status < 400:
        return f"{url} redirects elsewhere (HTTP {status}); give the final URL: redirects are not followed"
    if any(marker in text for marker in _CERTIFICATE):
        return f"the TLS certificate of {url} could not be verified: {last_words(result)}"
    return None


def last_words(result: GitResult) -> str:
    """git's last line of stderr, without its `fatal:`/`error:` prefix, printable and capped."""
    lines = [line.strip() for line in result.stderr.splitlines() if line.strip()]
    if not lines:
        return f"git exited with status {result.returncode}"
    line = re.sub(r"^(fatal|error|warning): ", "", lines[-1])
    printable = "".join(char if char.isprintable() else "?" for char in line)
    return printable[:MAX_DETAIL_CHARS] + ("..." if len(printable) > MAX_DETAIL_CHARS else "")


def _http_status(text: str) -> int | None:
    match = _HTTP_ERROR.search(text)
    return int(match.group(1)) if match else None
