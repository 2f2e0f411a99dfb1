"""HTTP/1.1 proxy request heads: parsing what a sandboxed client asks for, and the head sent upstream.

Pure functions over bytes; every malformed input ends in `Refused` with the status to answer.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_METHOD = re.compile(r"[A-Z]{1,20}")
_PORT = re.compile(r"[0-9]{1,5}")
_CONTROL = re.compile(r"[\x00-\x20\x7f]")
_CONTROL_BYTES = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")  # tab is allowed inside header values
# Hop-by-hop and proxy-only headers are not forwarded; Host and Connection are rewritten.
_DROPPED_HEADERS = frozenset(
    {b"host", b"connection", b"proxy-connection", b"keep-alive", b"proxy-authorization", b"upgrade"}
)


@dataclass(frozen=True, slots=True)
class ProxyRequest:
    method: str
    host: str
    port: int
    path: str = ""  # absolute-form requests only: the origin-form target to send upstream
    headers: tuple[bytes, ...] = ()


class Refused(Exception):
    """Ends a request: answered with `status` (nothing is sent when None: a tunnel is already open)."""

    def __init__(self, status: int | None, reason: str, request: ProxyRequest | None = None) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.request = request


def parse_request_head(head: bytes) -> ProxyRequest:
    """The request a head (ending in CRLF CRLF) asks for; raises Refused (400, 405)."""
    line, _, header_block = head[:-4].partition(b"\r\n")
    try:
        method, target, version = line.decode("utf-8").split(" ")
    except (UnicodeDecodeError, ValueError):
        raise Refused(400, "malformed request line") from None
    if not _METHOD.fullmatch(method) or version not in ("HTTP/1.1", "HTTP/1.0"):
        raise Refused(400, "malformed request line")
    if method == "CONNECT":
        host, port = split_authority(target, default_port=None)
        return ProxyRequest(method, host, port)
    if _CONTROL.search(target):  # a bare LF would start a new line in the head sent upstream
        raise Refused(400, "control characters in the request target")
    if target[:7].lower() != "http://":
        raise Refused(405, "only CONNECT host:port and absolute http:// requests are proxied")
    rest = target[7:]
    # The authority ends at the first of / ? # (`http://host?q=/x` has its query before any slash).
    end = min((i for i in map(rest.find, "/?#") if i >= 0), default=len(rest))
    authority, origin_form = rest[:end], rest[end:].partition("#")[0]
    if "@" in authority:
        raise Refused(400, "user info in the proxy target is not supported")
    host, port = split_authority(authority, default_port=80)
    if not origin_form.startswith("/"):
        origin_form = "/" + origin_form
    return ProxyRequest(method, host, port, origin_form, _forwarded_headers(header_block))


def split_authority(authority: str, default_port: int | None) -> tuple[str, int]:
    """`host[:port]` (`[v6]:port` too, for the policy to refuse); raises Refused(400)."""
    host, colon, port_text = authority.rpartition(":")
    if not colon or authority.endswith("]"):
        host, port_text = authority, ""
    if not port_text:
        if default_port is None:
            raise Refused(400, "CONNECT needs host:port")
        return host, default_port
    if not _PORT.fullmatch(port_text):
        raise Refused(400, "the port must be a number")
    return host, int(port_text)


def _forwarded_headers(header_block: bytes) -> tuple[bytes, ...]:
    kept = []
    for line in header_block.split(b"\r\n") if header_block else ():
        name, colon, _ = line.partition(b":")
        if not colon or not name or name != name.strip() or _CONTROL_BYTES.search(line):
            raise Refused(400, "malformed header line")  # also refuses obsolete line folding, bare LF
        if name.lower() not in _DROPPED_HEADERS:
            kept.append(line)
    return tuple(kept)


def upstream_head(request: ProxyRequest) -> bytes:
    host = request.host if request.port == 80 else f"{request.host}:{request.port}"
    lines = [f"{request.method} {request.path} HTTP/1.1".encode(), f"Host: {host}".encode()]
    return b"\r\n".join([*lines, *request.headers, b"Connection: close", b"", b""])
