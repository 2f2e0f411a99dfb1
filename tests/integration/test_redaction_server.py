"""A real `outpost serve` handling secrets (a provider key in its settings and one set by a tenant, a git
credential sent to a remote that echoes it back in every spelling, keys refused) writes none of them to
its log, its errors or a run's events."""

from __future__ import annotations

import base64
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from outpost.secrets.master_key import encode_master_key
from tests.integration.agent_servers import AgentServer
from tests.integration.processes import serving

pytestmark = pytest.mark.slow

MASTER_KEY = encode_master_key(os.urandom(32))
SERVER_KEY = "sk-server-settings-key-5f1e2d3c"
TENANT_KEY = "sk-tenant-own-key-8a9b0c1d2e"
GIT_TOKEN = "ghp_echoedBackToken4d5e6f7a"
BASIC = base64.b64encode(f"bot:{GIT_TOKEN}".encode()).decode()


class _EchoingRemote(BaseHTTPRequestHandler):
    """A git remote that refuses every fetch with a protocol error quoting the credential it was sent:
    the header, the decoded `user:token`, and the token alone."""

    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        header = self.headers.get("Authorization", "")
        pair = base64.b64decode(header.removeprefix("Basic ")).decode() if header else ""
        message = f"ERR denied: header {header} as {pair} token {pair.partition(':')[2]}".encode()
        packet = f"{len(message) + 4:04x}".encode() + message
        self.send_response(200)
        self.send_header("Content-Type", "application/x-git-upload-pack-advertisement")
        self.send_header("Content-Length", str(len(packet)))
        self.end_headers()
        self.wfile.write(packet)


@contextmanager
def echoing_remote() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _EchoingRemote)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def test_a_real_server_keeps_every_secret_out_of_its_log_its_errors_and_its_events(tmp_path: Path) -> None:
    env = {
        "OUTPOST_SECRETS__MASTER_KEY": MASTER_KEY, "OUTPOST_PROVIDERS__OPENAI__API_KEY": SERVER_KEY,
        "OUTPOST_LOG_LEVEL": "debug", "OUTPOST_GIT__ALLOW_HTTP": "true",
        "OUTPOST_GIT__ALLOW_PRIVATE_NETWORK": "true",
    }  # fmt: skip
    with echoing_remote() as host, serving(tmp_path / "data", env) as process:
        api_key = process.create_tenant("acme")
        with httpx.Client(
            base_url=process.url, headers={"Authorization": f"Bearer {api_key}"}, timeout=30
        ) as c:
            served = AgentServer(process, c)
            assert c.patch("/v1/providers/openai", json={"api_key": TENANT_KEY}).status_code == 200
            body = {"username": "bot", "token": GIT_TOKEN}
            assert c.put(f"/v1/git-credentials/{host}", json=body).status_code == 200

            fetch = served.submit("shell", "true", repo={"url": f"http://{host}/private.git", "ref": "main"})
            failed = served.finished(fetch)
            assert failed["status"] == "failed", failed
            detail = failed["failure"]["detail"]
            assert "remote error: denied: header Basic *** as *** token ***" in detail  # echoed, then masked

            printed = served.submit("shell", "env; echo done")  # a run's whole environment, as events
            assert served.finished(printed)["status"] == "succeeded"
            events = str(served.events(fetch)) + str(served.events(printed))
            assert "done" in events

            forged = f"{api_key[:-6]}AAAAAA"  # the right prefix, a wrong secret: refused and audited
            assert c.get("/v1/dispatches", headers={"Authorization": f"Bearer {forged}"}).status_code == 401
    log = process.log_path.read_text()
    assert '"level":"debug"' in log  # the log is as verbose as it gets
    secret_part = api_key.split("_", 2)[2]
    for secret in (
        MASTER_KEY,
        SERVER_KEY,
        TENANT_KEY,
        GIT_TOKEN,
        BASIC,
        secret_part,
        forged.split("_", 2)[2],
    ):
        assert secret not in log
        assert secret not in events
        assert secret not in detail
