"""Which hosts a sandbox may reach through the egress proxy, and which addresses they may resolve to.

Pure: no I/O. An allowlist entry is `host` (that name only) or `*.suffix` (strict subdomains of `suffix`,
never `suffix` itself), optionally followed by `:port`; an entry without a port allows port 443. Entries
naming the same host merge their ports, so `example.org` plus `example.org:80` allows 443 and 80.

Hosts and entries go through one normaliser (lower case, one trailing dot dropped, IDNA 2003 via Python's
`idna` codec, LDH labels of 1 to 63 characters, at most 253 characters in all), so a request and the rule
it is compared with always have the same spelling. Anything that could be read as an IP address, in any
notation a resolver or URL parser accepts, is refused: the allowlist is about names, and the addresses a
name resolves to are checked separately by `check_addresses`. `check_server_name` holds a TLS tunnel to
the name it was opened for (its ClientHello parser takes hostile bytes and bounds-checks every read).
"""

from __future__ import annotations

import contextlib
import ipaddress
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from outpost.errors import InvalidInput

DEFAULT_PORTS = frozenset({443})
MAX_HOST_CHARS = 253
MAX_LABEL_CHARS = 63
# Raw input longer than this is refused before the IDNA codec sees it (its cost grows with the input).
MAX_RAW_HOST_CHARS = 1024
_LDH_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]*[a-z0-9])?")
# A last label that is a decimal, octal or 0x-hex number makes resolvers and URL parsers read the whole
# name as IPv4 (`127.1`, `0x7f.1`, `0177.0.0.1`, `2130706433`); no real top-level domain looks like that.
_NUMERIC_LABEL = re.compile(r"[0-9]+|0x[0-9a-f]*")
_PORT = re.compile(r"[0-9]{1,5}")

# Refused even where Python's `is_global` says otherwise (3.11 calls multicast, v4-mapped, NAT64, 6to4
# and site-local addresses global), or where a later Python might change its mind.
_BLOCKED_NETWORKS = tuple(
    ipaddress.ip_network(cidr)
    for cidr in (
        "0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16", "172.16.0.0/12",
        "192.0.0.0/24", "192.0.2.0/24", "192.88.99.0/24", "192.168.0.0/16", "198.18.0.0/15",
        "198.51.100.0/24", "203.0.113.0/24", "224.0.0.0/4", "240.0.0.0/4",
        "::/127", "::ffff:0:0/96", "64:ff9b:1::/48", "100::/64", "2001::/23", "2001:db8::/32",
        "2002::/16", "fc00::/7", "fe80::/10", "fec0::/10", "ff00::/8",
    )
)  # fmt: skip
# NAT64 addresses carry an IPv4 address in their last 32 bits; the gateway would connect to that one.
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
TLS_CLIENT_HELLO = 1  # handshake message type (RFC 8446 4)
TLS_SERVER_NAME_EXTENSION = 0  # extension type (RFC 6066 3)


@dataclass(frozen=True, slots=True)
class Decision:
    """A verdict. `host` is the normalised name when there is one, else the input as given."""

    allowed: bool
    reason: str
    host: str


@dataclass(frozen=True, slots=True)
class AllowRule:
    """One allowlist name with its ports; `wildcard` rules match strict subdomains of `host` only."""

    host: str
    wildcard: bool
    ports: frozenset[int]

    def matches(self, host: str) -> bool:
        return host.endswith("." + self.host) if self.wildcard else host == self.host

    def __str__(self) -> str:
        name = f"*.{self.host}" if self.wildcard else self.host
        return f"{name}:{','.join(str(p) for p in sorted(self.ports))}"


class EgressPolicy:
    """An allowlist of host names and ports.

    Raises InvalidInput when an entry is malformed, an IP address, or a bare `*`.
    """

    def __init__(self, allowed: Iterable[str]) -> None:
        ports: dict[tuple[str, bool], set[int]] = {}
        for entry in allowed:
            host, wildcard, entry_ports = parse_entry(entry)
            ports.setdefault((host, wildcard), set()).update(entry_ports)
        self.rules = tuple(AllowRule(h, w, frozenset(p)) for (h, w), p in sorted(ports.items()))

    def check_host(self, host: str, port: int) -> Decision:
        """Whether a request for `host:port` is allowed by name, before any resolution."""
        try:
            name = normalize_host(host)
        except ValueError as exc:
            return Decision(False, str(exc), _escaped(host))
        if not 0 < port < 65536:
            return Decision(False, f"invalid port {port}", name)
        matching = [rule for rule in self.rules if rule.matches(name)]
        for rule in matching:
            if port in rule.ports:
                return Decision(True, f"allowed by {rule}", name)
        if matching:
            allowed_ports = sorted({p for rule in matching for p in rule.ports})
            return Decision(False, f"port {port} is not allowed for {name} (allowed: {allowed_ports})", name)
        return Decision(False, f"{name} is not in the egress allowlist", name)

    def check_addresses(self, addresses: Sequence[str], host: str = "") -> Decision:
        """Whether every address `host` resolved to may be dialled; one non-public address refuses all
        (a name that mixes public and private answers is a rebinding or SSRF attempt)."""
        if not addresses:
            return Decision(False, "resolves to no address", host)
        for address in addresses:
            problem = address_problem(address)
            if problem is not None:
                return Decision(False, f"resolves to non-public address {address} ({problem})", host)
        return Decision(True, f"resolves to public {', '.join(addresses)}", host)


def compose_policy(*entry_lists: Iterable[str]) -> EgressPolicy:
    """One policy from several allowlists, e.g. the global one, the tenant's and the dispatch's additions.

    Additions only widen the policy; nothing in a later list can remove a host. Raises InvalidInput.
    """
    return EgressPolicy(entry for entries in entry_lists for entry in entries)


def parse_entry(entry: str) -> tuple[str, bool, frozenset[int]]:
    """`(host, wildcard, ports)` of one allowlist entry. Raises InvalidInput."""
    name, colon, port_text = entry.strip().rpartition(":")
    ports = DEFAULT_PORTS
    if not colon:
        name = port_text
    elif _PORT.fullmatch(port_text) and 0 < int(port_text) < 65536:
        ports = frozenset({int(port_text)})
    else:
        raise InvalidInput(f"egress entry {entry!r}: the port must be a number from 1 to 65535")
    wildcard = name.startswith("*.")
    try:
        host = normalize_host(name.removeprefix("*."))
    except ValueError as exc:
        raise InvalidInput(f"egress entry {entry!r}: {exc} (write `host`, `*.suffix`, `host:port`)") from exc
    return host, wildcard, ports


def normalize_host(raw: str) -> str:
    """The canonical ASCII spelling of a host name. Raises ValueError, whose message is the reason, for
    empty, overlong or malformed names and for IP literals in any notation."""
    if len(raw) > MAX_RAW_HOST_CHARS:
        raise ValueError("host name too long")
    if ":" in raw or raw.startswith("["):  # IPv6, bracketed or bare, with or without a zone id
        raise ValueError(f"IP literal {_printable(raw)} refused: ask for a host name")
    if not raw:
        raise ValueError("empty host name")
    try:
        # The codec also maps full-width digits and ideographic dots to ASCII, so the checks below look
        # at its output: full-width `127` and U+3002 dots encode to `127.0.0.1`.
        host = raw.lower().encode("idna").decode("ascii").lower()
    except UnicodeError as exc:
        raise ValueError(f"invalid host name {_printable(raw)}: not a valid IDNA name") from exc
    return _checked_ascii_host(host.removesuffix("."), raw)


def _checked_ascii_host(host: str, raw: str) -> str:
    labels = host.split(".")
    if _NUMERIC_LABEL.fullmatch(labels[-1]):
        raise ValueError(f"IP literal {_printable(raw)} refused: ask for a host name")
    if len(host) > MAX_HOST_CHARS:
        raise ValueError(f"host name longer than {MAX_HOST_CHARS} characters")
    for label in labels:
        if len(label) > MAX_LABEL_CHARS or not _LDH_LABEL.fullmatch(label):
            raise ValueError(f"invalid host name {_printable(raw)}: bad label {_printable(label)}")
    return host


def address_problem(address: str) -> str | None:
    """Why `address` (as resolvers print it) must not be dialled, or None when it is a public address."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return "not an IP address"
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return f"IPv4-mapped {ip.ipv4_mapped}"
        if ip in _NAT64:
            target = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
            inner = address_problem(str(target))
            return None if inner is None else f"NAT64 to {target}, {inner}"
    for network in _BLOCKED_NETWORKS:
        if ip.version == network.version and ip in network:
            return f"in {network}"
    if not ip.is_global or ip.is_multicast or ip.is_reserved:
        return "not globally routable"
    return None


def _printable(text: str) -> str:
    """`text` quoted for a log line or a response body."""
    return f"'{_escaped(text)}'"


def _escaped(text: str, limit: int = 80) -> str:
    """`text` with control and non-ASCII characters escaped and its length capped."""
    shown = text[:limit].encode("unicode_escape").decode("ascii")
    return shown + "..." if len(text) > limit else shown


def check_server_name(handshake: bytes, host: str) -> Decision:
    """Whether a TLS ClientHello (one complete handshake message) names `host`, a normalised host, as its
    server. Refused when the hello is malformed, has no server name, or names another host."""
    try:
        server_name = server_name_from_client_hello(handshake)
    except ValueError as exc:
        return Decision(False, f"malformed TLS ClientHello: {exc}", host)
    if server_name is None:
        return Decision(False, "TLS ClientHello without a server name (SNI)", host)
    with contextlib.suppress(ValueError):
        if normalize_host(server_name) == host:
            return Decision(True, f"TLS server name is {host}", host)
    return Decision(False, f"TLS server name {_printable(server_name)} does not match {host}", host)


class _Cursor:
    """Big-endian reads from untrusted bytes; any read past the end raises ValueError."""

    def __init__(self, data: bytes) -> None:
        self._data = data
        self._at = 0

    @property
    def done(self) -> bool:
        return self._at == len(self._data)

    def take(self, count: int) -> bytes:
        end = self._at + count
        if end > len(self._data):
            raise ValueError("truncated")
        chunk, self._at = self._data[self._at : end], end
        return chunk

    def rest(self) -> bytes:
        return self.take(len(self._data) - self._at)

    def number(self, width: int) -> int:
        return int.from_bytes(self.take(width), "big")

    def vector(self, length_width: int) -> _Cursor:
        return _Cursor(self.take(self.number(length_width)))


def server_name_from_client_hello(handshake: bytes) -> str | None:
    """The host name in a ClientHello's server_name extension (RFC 6066), or None when it has none.

    `handshake` is one complete handshake message: type, 24-bit length, body. Raises ValueError when it is
    not a well-formed ClientHello: another message type, a length running past its data, bytes left over,
    a repeated extension, an unknown or repeated name type, or a name that is not ASCII.
    """
    message = _Cursor(handshake)
    if message.number(1) != TLS_CLIENT_HELLO:
        raise ValueError("not a ClientHello")
    hello = message.vector(3)
    if not message.done:
        raise ValueError("bytes after the ClientHello")
    hello.take(2 + 32)  # legacy_version, random
    for length_width in (1, 2, 1):  # session id, cipher suites, compression methods
        hello.vector(length_width)
    if hello.done:
        return None  # a hello without extensions
    extensions = hello.vector(2)
    if not hello.done:
        raise ValueError("bytes after the extensions")
    seen: set[int] = set()
    server_name = None
    while not extensions.done:
        kind, data = extensions.number(2), extensions.vector(2)
        if kind in seen:
            raise ValueError(f"extension {kind} repeated")
        seen.add(kind)
        if kind == TLS_SERVER_NAME_EXTENSION:
            server_name = _host_name(data)
    return server_name


def _host_name(extension: _Cursor) -> str:
    names = extension.vector(2)
    if not extension.done:
        raise ValueError("bytes after the server name list")
    found = None
    while not names.done:
        if names.number(1) != 0 or found is not None:  # 0 = host_name, the only type defined
            raise ValueError("unknown or repeated server name type")
        found = names.vector(2).rest()
    if found is None:
        raise ValueError("empty server name list")
    return found.decode("ascii")
