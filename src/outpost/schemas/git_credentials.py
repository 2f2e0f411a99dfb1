"""A tenant's credential for one git host, sent by the worker (never the sandbox) to fetch and push."""

from __future__ import annotations

import ipaddress
import re
from datetime import datetime
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, SecretStr

from outpost.sandbox.egress_policy import normalize_host
from outpost.schemas.providers import MAX_API_KEY_CHARS, check_api_key
from outpost.schemas.secret_versions import RETIRE_PREVIOUS_DESCRIPTION
from outpost.workspaces.git import DEFAULT_USERNAME

MAX_TOKEN_CHARS = MAX_API_KEY_CHARS
MAX_USERNAME_CHARS = 255
# The secret's name, `git/<host>/credential`, has to fit the 200-character `secrets.name` column.
MAX_HOST_CHARS = 200 - len("git//credential")
HTTPS_PORT = 443
_PORT = re.compile(r"[0-9]{1,5}")


def check_host(value: str) -> str:
    """A host name (lower-cased) or IP address (IPv6 in brackets), with `:port` unless it is 443: a
    trailing `:443` is dropped, so `github.com` and `github.com:443` name one credential. Unicode names
    are refused: give their `xn--` form, the one a repository URL is normalized to."""
    if len(value) > MAX_HOST_CHARS or not value.isascii() or not value.isprintable():
        raise ValueError(
            f"must be an ASCII host name of at most {MAX_HOST_CHARS} characters (xn-- form for IDNA names)"
        )
    host, port = _split_port(value)
    name = _canonical_host(host)
    return name if port == HTTPS_PORT else f"{name}:{port}"


def _split_port(value: str) -> tuple[str, int]:
    if value.startswith("["):
        host, bracket, rest = value.partition("]")
        host += bracket
        if not bracket or (rest and not rest.startswith(":")):
            raise ValueError("must put an IPv6 address in brackets, as in [2001:db8::1]:8443")
        port_text = rest[1:] if rest else None
    else:
        host, colon, port_text = value.partition(":")
        port_text = port_text if colon else None
    if port_text is None:
        return host, HTTPS_PORT
    if not _PORT.fullmatch(port_text) or not 0 < int(port_text) < 65536:
        raise ValueError("must have a port from 1 to 65535 after the ':'")
    return host, int(port_text)


def _canonical_host(host: str) -> str:
    if host.startswith("["):
        try:
            address = ipaddress.IPv6Address(host[1:-1])
        except ValueError:
            address = None
        # A zone id (`%eth0`) names an interface of one machine: the worker's repository URLs never do.
        if address is None or address.scope_id is not None:
            raise ValueError("must hold a valid IPv6 address in its brackets, without a zone id")
        return f"[{address.compressed}]"
    try:
        return str(ipaddress.IPv4Address(host))
    except ValueError:
        pass  # not an address: it must be a name
    try:
        return normalize_host(host)
    except ValueError as exc:
        raise ValueError(f"must be a host name or IP address: {exc}") from None


def check_username(value: str) -> str:
    """Sent with the token as HTTP Basic `username:token`: a `:` would move where the token starts."""
    if not value or len(value) > MAX_USERNAME_CHARS:
        raise ValueError(f"must be 1 to {MAX_USERNAME_CHARS} characters")
    if not all(" " <= char <= "~" for char in value) or ":" in value:
        raise ValueError("must be printable ASCII without ':'")
    return value


GitHost = Annotated[str, AfterValidator(check_host)]
GitUsername = Annotated[str, AfterValidator(check_username)]
GitToken = Annotated[SecretStr, AfterValidator(check_api_key)]


class GitCredentialSet(BaseModel):
    """`PUT /v1/git-credentials/{host}`: replaces the tenant's credential for the host. Dispatches
    already running keep the credential they started with."""

    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)
    username: GitUsername = Field(
        default=DEFAULT_USERNAME,
        description="The default suits a GitHub or GitLab token (personal, fine-grained or app).",
    )
    token: GitToken = Field(description="A token or password. Never returned by the API.")
    retire_previous: bool = Field(default=True, description=RETIRE_PREVIOUS_DESCRIPTION)


class GitCredentialRead(BaseModel):
    host: str
    username: str
    updated_at: datetime


class GitCredentialList(BaseModel):
    items: list[GitCredentialRead]
