"""Real TLS ClientHello bytes, made by Python's ssl module without any network."""

from __future__ import annotations

import contextlib
import ssl

RECORD_HEADER_BYTES = 5


def client_hello_records(server_hostname: str | None) -> bytes:
    """The records a TLS client sends first; `server_hostname=None` sends no server name (SNI)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    client = context.wrap_bio(incoming, outgoing, server_hostname=server_hostname)
    # The hello is written, then the client waits for the server's answer: SSLWantReadError.
    with contextlib.suppress(ssl.SSLWantReadError):
        client.do_handshake()
    return outgoing.read()


def client_hello_message(server_hostname: str | None) -> bytes:
    """The ClientHello handshake message alone (OpenSSL sends it in a single record)."""
    return client_hello_records(server_hostname)[RECORD_HEADER_BYTES:]
