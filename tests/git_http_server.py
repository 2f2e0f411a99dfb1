"""A git smart-HTTP server on 127.0.0.1 for tests: `git http-backend` run as a CGI per request, behind
optional Basic auth, with a few hostile behaviours on request (redirecting every request elsewhere)."""

from __future__ import annotations

import base64
import subprocess
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from urllib.parse import urlsplit

HTTP_BACKEND = Path(subprocess.run(["git", "--exec-path"], capture_output=True, text=True, check=True)
                    .stdout.strip()) / "git-http-backend"  # fmt: skip


@dataclass
class ServerState:
    root: Path
    credential: str | None = None
    """`user:password` every request must carry (None: no auth)."""
    redirect_to: str | None = None
    """When set, every request is answered with a 302 to this base URL instead."""
    authorizations: list[str | None] = field(default_factory=list)
    """The Authorization header of each request, in order."""


class GitHttpServer:
    """Serves the bare repositories under `root` at http://127.0.0.1:<port>/<name>. A context manager."""

    def __init__(self, root: Path, credential: str | None = None) -> None:
        self.state = ServerState(root, credential)
        state = self.state

        class Handler(_Handler):
            server_state = state

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self.base_url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def url(self, name: str) -> str:
        return f"{self.base_url}/{name}"

    def __enter__(self) -> GitHttpServer:
        self._thread.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


class _Handler(BaseHTTPRequestHandler):
    server_state: ServerState
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        self._handle()

    def do_POST(self) -> None:
        self._handle()

    def log_message(self, format: str, *args: object) -> None:
        pass  # quiet: pytest shows failures, not access logs

    def _handle(self) -> None:
        state = self.server_state
        given = self.headers.get("Authorization")
        state.authorizations.append(given)
        body = self._request_body()
        if state.redirect_to is not None:
            self._reply(302, b"", {"Location": state.redirect_to + self.path})
        elif state.credential is not None and given != _basic(state.credential):
            self._reply(401, b"", {"WWW-Authenticate": 'Basic realm="git"'})
        else:
            self._run_backend(body)

    def _request_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            parts = []
            while size := int(self.rfile.readline().split(b";")[0].strip() or b"0", 16):
                parts.append(self.rfile.read(size))
                self.rfile.readline()
            self.rfile.readline()
            return b"".join(parts)
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _run_backend(self, body: bytes) -> None:
        url = urlsplit(self.path)
        env = {
            "GIT_PROJECT_ROOT": str(self.server_state.root),
            "GIT_HTTP_EXPORT_ALL": "1",
            "REQUEST_METHOD": self.command,
            "PATH_INFO": url.path,
            "QUERY_STRING": url.query,
            "CONTENT_TYPE": self.headers.get("Content-Type", ""),
            "CONTENT_LENGTH": str(len(body)),
            "HTTP_CONTENT_ENCODING": self.headers.get("Content-Encoding", ""),
            "GIT_PROTOCOL": self.headers.get("Git-Protocol", ""),
            "REMOTE_ADDR": "127.0.0.1",
            "GIT_CONFIG_NOSYSTEM": "1",
            "GIT_CONFIG_GLOBAL": "/dev/null",
        }
        done = subprocess.run([str(HTTP_BACKEND)], input=body, env=env, capture_output=True, check=False)
        head, _, payload = done.stdout.partition(b"\r\n\r\n")
        status, headers = 200, {}
        for line in head.decode("latin-1").split("\r\n"):
            name, _, value = line.partition(":")
            if name.lower() == "status":
                status = int(value.split()[0])
            elif name:
                headers[name] = value.strip()
        self._reply(status, payload, headers)

    def _reply(self, status: int, payload: bytes, headers: dict[str, str]) -> None:
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)


def _basic(credential: str) -> str:
    return "Basic " + base64.b64encode(credential.encode()).decode("ascii")
