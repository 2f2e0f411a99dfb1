"""A provider that quotes the key it was sent in its error: the run gets the error with the key masked,
and the failure the gateway reports (which becomes an event) does not hold it either. Real sockets."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import AsyncIterator, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest
from pydantic import SecretStr

from outpost.gateway.server import ModelGateway
from outpost.gateway.tokens import GatewayTokens, Grant
from outpost.gateway.upstream_errors import ProviderFailure
from outpost.gateway.upstreams import Upstream
from outpost.settings import GatewaySettings

REAL_KEY = "sk-real-key-the-provider-echoes-0a1b2c"
RUN = "01JECHO.1"


class _Echoing(BaseHTTPRequestHandler):
    """Refuses every call with 401, quoting the bearer key, in two chunks that split the key."""

    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", "0")))
        key = self.headers.get("Authorization", "").removeprefix("Bearer ")
        body = json.dumps({"error": {"message": f"Incorrect API key provided: {key}", "type": "invalid_key"}})
        half = len(body) - len(key) // 2 - 3
        self.send_response(401)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        for part in (body[:half], body[half:]):
            data = part.encode()
            self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
            self.wfile.flush()
        self.wfile.write(b"0\r\n\r\n")


@pytest.fixture
def provider() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Echoing)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture
async def gateway() -> AsyncIterator[tuple[ModelGateway, str]]:
    served_gateway = ModelGateway(GatewayTokens(), GatewaySettings(read_timeout_s=5, connect_timeout_s=5))
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    served = await served_gateway.serve(sock, RUN)
    yield served_gateway, f"http://127.0.0.1:{sock.getsockname()[1]}"
    await served.close()
    await served_gateway.close()


async def test_a_key_quoted_in_a_providers_error_reaches_neither_the_run_nor_its_events(
    gateway: tuple[ModelGateway, str], provider: str
) -> None:
    served_gateway, url = gateway
    failures: list[ProviderFailure] = []
    upstream = Upstream("openai", provider, SecretStr(REAL_KEY), "bearer")
    grant = Grant(
        run_id=RUN, tenant_id="t", upstreams={"openai": upstream},
        on_usage=lambda *_: None, on_failure=lambda _, failure: failures.append(failure),
    )  # fmt: skip
    token = served_gateway.tokens.issue(grant)
    async with httpx.AsyncClient(timeout=10) as client:
        response = await client.post(
            f"{url}/openai/v1/chat/completions",
            json={"model": "gpt-x", "messages": [{"role": "user", "content": "hi"}]},
            headers={"Authorization": f"Bearer {token}"},
        )
    assert response.status_code == 401
    assert REAL_KEY not in response.text
    assert response.json()["error"]["message"] == "Incorrect API key provided: " + "*" * len(REAL_KEY)
    assert [(failure.kind, failure.status) for failure in failures] == [("auth", 401)]
    assert REAL_KEY not in failures[0].message
    assert "Incorrect API key provided: ***" in failures[0].message
