"""Checking an untrusted repository URL against the git policy, and its one normalized spelling.

Pure: no I/O (whether a host resolves to public addresses is checked at fetch time, see `remote_hosts`).
Only `https://` is accepted by default; `http://` and local repositories (`file://`, absolute paths)
when the settings allow them. Everything git would read as something else is refused before git sees
it: `<transport>::` addresses (`ext::` runs a command), leading dashes (read as options, such as
`--upload-pack=`), whitespace and control characters, credentials in the URL, ssh and `git://` (not
supported yet), and scp-like `host:path` (ssh). The normalized URL is what git is given and what names
the repository's mirror, so one repository spelled two ways shares a mirror.
"""

from __future__ import annotations

import ipaddress
import posixpath
import re
import unicodedata
from dataclasses import dataclass
from typing import Literal
from urllib.parse import quote

from outpost.errors import InvalidInput
from outpost.sandbox.egress_policy import normalize_host
from outpost.workspaces.settings import GitSettings

Scheme = Literal["https", "http", "file"]
MAX_URL_CHARS = 2048
DEFAULT_PORTS = {"https": 443, "http": 80}
FIELD = "repo.url"
# git hands `<helper>::<address>` to `git-remote-<helper>` whatever comes after it (git's transport.c
# accepts these characters in a helper name).
_TRANSPORT = re.compile(r"[A-Za-z0-9][A-Za-z0-9+.-]*::")
_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*)://(.*)", re.DOTALL)
_PORT = re.compile(r"[0-9]{1,5}")
_PERCENT = re.compile(r"%([0-9A-Fa-f]{2})?")
# Characters a URL path may carry as they are (RFC 3986 pchar plus `/`); quote() escapes the others.
_PATH_SAFE = "/:@!$&'()*+,;=-._~%"
_SSH_SCHEMES = {"ssh", "git", "git+ssh", "ssh+git"}


@dataclass(frozen=True, slots=True)
class RepoUrl:
    """A repository URL the policy accepts. `url` is its normalized spelling; `host` and `port` are
    empty and 0 for local repositories; `ip_literal` says the host is an address, not a name."""

    url: str
    scheme: Scheme
    host: str = ""
    port: int = 0
    ip_literal: bool = False

    def __str__(self) -> str:
        return self.url


def parse_repo_url(raw: str, settings: GitSettings) -> RepoUrl:
    """The normalized form of `raw`. Raises InvalidInput (field `repo.url`), saying why and what to do."""
    _check_characters(raw)
    scheme_match = _SCHEME.fullmatch(raw)
    if scheme_match is None:
        return _parse_scheme_less(raw, settings)
    scheme, rest = scheme_match.group(1).lower(), scheme_match.group(2)
    if scheme == "https":
        return _parse_http("https", rest, raw, settings)
    if scheme == "http" and settings.allow_http:
        return _parse_http("http", rest, raw, settings)
    if scheme == "file" and settings.allow_local:
        return _local(_file_url_path(rest, raw), raw)
    raise _refused(raw, _scheme_problem(scheme))


def _check_characters(raw: str) -> None:
    if not raw:
        raise InvalidInput("the repository URL is empty: give an https:// URL", field=FIELD)
    if len(raw) > MAX_URL_CHARS:
        raise _refused(raw, f"longer than {MAX_URL_CHARS} characters")
    if raw.startswith("-"):
        raise _refused(raw, "it starts with '-', which git would read as an option")
    if _TRANSPORT.match(raw):
        raise _refused(
            raw, "`<transport>::` addresses are refused (`ext::` runs commands); give an https:// URL"
        )
    if any(_is_unsafe_char(char) for char in raw):
        raise _refused(raw, "it contains whitespace or control characters")
    if "\\" in raw:
        raise _refused(raw, "it contains a backslash")


def _is_unsafe_char(char: str) -> bool:
    # Cc: controls (NUL, newline); Cf: invisible formatting (bidi overrides, zero-width); Z*: separators.
    return char.isspace() or unicodedata.category(char) in {"Cc", "Cf", "Zs", "Zl", "Zp", "Co", "Cs"}


def _scheme_problem(scheme: str) -> str:
    if scheme in _SSH_SCHEMES:
        return f"{scheme}:// URLs are not supported yet; give the repository's https:// URL"
    if scheme == "http":
        return "http:// is refused (plain text); give the https:// URL"
    if scheme == "file":
        return "local repositories are refused on this server; give an https:// URL"
    return f"the URL scheme {scheme!r} is not supported; give an https:// URL"


def _parse_scheme_less(raw: str, settings: GitSettings) -> RepoUrl:
    if raw.startswith("/"):
        if not settings.allow_local:
            raise _refused(raw, "local paths are refused on this server; give an https:// URL")
        return _local(raw, raw)
    if ":" in raw.split("/", 1)[0]:
        raise _refused(raw, "scp-like ssh addresses (host:path) are not supported yet; give the https:// URL")
    raise _refused(raw, "not a repository URL; give one like https://host/owner/repo")


def _parse_http(scheme: Scheme, rest: str, raw: str, settings: GitSettings) -> RepoUrl:
    if "?" in rest or "#" in rest:
        raise _refused(raw, "query strings and fragments are not supported")
    authority, slash, path = rest.partition("/")
    if "@" in authority:
        raise _refused(raw, "credentials in the URL are refused; store them as the repository's credential")
    host, ip_literal, port = _parse_authority(authority, scheme, raw, settings)
    shown_port = "" if port == DEFAULT_PORTS[scheme] else f":{port}"
    normalized = f"{scheme}://{host}{shown_port}{_normalized_path(slash + path, raw)}"
    return RepoUrl(normalized, scheme, host.strip("[]"), port, ip_literal)


def _parse_authority(authority: str, scheme: str, raw: str, settings: GitSettings) -> tuple[str, bool, int]:
    """`(host as written in the URL, whether it is an IP literal, port)`."""
    if authority.startswith("["):
        literal, bracket, port_text = authority[1:].partition("]")
        if not bracket or (port_text and not port_text.startswith(":")):
            raise _refused(raw, "malformed IPv6 address")
        host, port_text = literal, port_text[1:]
    else:
        host, colon, port_text = authority.partition(":")
        if colon and not port_text:
            raise _refused(raw, "empty port")
    port = _parse_port(port_text, scheme, raw)
    address = _ip_literal(host)
    if address is not None:
        if not settings.allow_private_network or settings.allowed_hosts:
            raise _refused(raw, "IP addresses are refused; give the host's name")
        return (f"[{address}]" if address.version == 6 else str(address)), True, port
    return _checked_name(host, raw, settings), False, port


def _parse_port(text: str, scheme: str, raw: str) -> int:
    if not text:
        return DEFAULT_PORTS[scheme]
    if not _PORT.fullmatch(text) or not 0 < int(text) < 65536:
        raise _refused(raw, "the port must be a number from 1 to 65535")
    return int(text)


def _ip_literal(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def _checked_name(host: str, raw: str, settings: GitSettings) -> str:
    try:
        name = normalize_host(host)
    except ValueError as exc:
        raise _refused(raw, str(exc)) from None
    if settings.allowed_hosts and name not in settings.allowed_hosts:
        raise _refused(raw, f"{name} is not among the git hosts this server allows")
    return name


def _normalized_path(path: str, raw: str) -> str:
    """The path with trailing slashes dropped, percent escapes in upper case and other characters
    that are not allowed in a URL path escaped."""
    stripped = path.rstrip("/")
    if not stripped:
        raise _refused(raw, "it names no repository path")
    if any(segment in {".", ".."} for segment in stripped.split("/")):
        raise _refused(raw, "'.' and '..' path segments are refused")
    for escape in _PERCENT.finditer(stripped):
        if escape.group(1) is None:
            raise _refused(raw, "a '%' that does not start a percent escape")
    upper = _PERCENT.sub(lambda escape: escape.group(0).upper(), stripped)
    return quote(upper, safe=_PATH_SAFE)


def _file_url_path(rest: str, raw: str) -> str:
    authority, slash, path = rest.partition("/")
    if authority.lower() not in {"", "localhost"}:
        raise _refused(raw, "file:// URLs must not name another host")
    return slash + path


def _local(path: str, raw: str) -> RepoUrl:
    if any(char in path for char in "%?#"):
        raise _refused(raw, "'%', '?' and '#' are not supported in local paths")
    if not path.startswith("/"):
        raise _refused(raw, "local paths must be absolute")
    normalized = posixpath.normpath(path)
    if normalized.startswith("//"):  # POSIX keeps a leading double slash; it is the same directory
        normalized = "/" + normalized.lstrip("/")
    if normalized == "/":
        raise _refused(raw, "it names no repository path")
    return RepoUrl(f"file://{normalized}", "file")


_USERINFO = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*://)[^/?#]*@")


def _refused(raw: str, reason: str) -> InvalidInput:
    return InvalidInput(f"repository URL {_shown(raw)} refused: {reason}", field=FIELD)


def _shown(raw: str, limit: int = 100) -> str:
    """`raw` quoted for a message: control and non-ASCII characters escaped, length capped, and what
    may be a credential (`user:password@` after the scheme) masked, since messages reach logs."""
    masked = _USERINFO.sub(r"\1***@", raw)
    shown = masked[:limit].encode("unicode_escape").decode("ascii").replace("'", "\\'")
    return f"'{shown}...'" if len(raw) > limit else f"'{shown}'"
