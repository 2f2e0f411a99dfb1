"""The CLI's client of the Outpost REST API: builds requests, sends them, and translates every failure.

Commands never see an httpx or pydantic error. Everything that goes wrong becomes an `OutpostError`
(`raise ... from exc`), so `outpost.cli.main` can print one line and pick the exit code:

- an RFC 9457 problem response → the error class of its HTTP status (`STATUS_ERRORS`), with the
  problem's `detail` as the message;
- a server that cannot be reached or does not answer in time → `Unavailable`;
- a request this CLI cannot build from its options → `InvalidInput`, before anything is sent.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date
from types import TracebackType
from typing import Any, TypeVar
from urllib.parse import quote

import httpx
from pydantic import BaseModel, TypeAdapter, ValidationError

from outpost import __version__
from outpost.errors import (
    AuthenticationFailed,
    Conflict,
    InvalidInput,
    NotFound,
    OutpostError,
    PayloadTooLarge,
    PermissionDenied,
    RateLimited,
    Unavailable,
)
from outpost.schemas.artifacts import ArtifactList, ArtifactRead, WorkspacePage
from outpost.schemas.audit import AuditPage
from outpost.schemas.dispatches import DispatchCreate, DispatchPage, DispatchRead, EventPage
from outpost.schemas.git_credentials import GitCredentialList, GitCredentialRead, GitCredentialSet
from outpost.schemas.keys import KeyCreate, KeyIssued, KeyRead
from outpost.schemas.providers import ProviderRead, ProviderUpdate
from outpost.schemas.secret_versions import SecretVersionList, SecretVersionRead
from outpost.schemas.usage import UsageReport

ModelT = TypeVar("ModelT", bound=BaseModel)
ResponseT = TypeVar("ResponseT")

# Statuses >= 500 not listed here become Unavailable; other unlisted ones the plain OutpostError.
STATUS_ERRORS: dict[int, type[OutpostError]] = {
    400: InvalidInput,
    401: AuthenticationFailed,
    403: PermissionDenied,
    404: NotFound,
    409: Conflict,
    413: PayloadTooLarge,
    422: InvalidInput,
    503: Unavailable,
}
DEFAULT_URL = "http://127.0.0.1:8080"
# A cancel may wait for the worker to stop the run, so reads get far longer than connects.
TIMEOUT = httpx.Timeout(60.0, connect=5.0)
NO_KEY = (
    "no API key: set OUTPOST_API_KEY to a key from `outpost tenants create NAME` or `outpost keys create`"
)


@dataclass(frozen=True, slots=True)
class ClientSettings:
    """Where the CLI finds the server and which key it sends."""

    url: str = DEFAULT_URL
    """Base URL of the Outpost server, without a trailing slash."""
    api_key: str = field(default="", repr=False)
    """The key sent as `Authorization: Bearer <key>`; empty when none is set."""

    @classmethod
    def from_environment(cls, environ: Mapping[str, str]) -> ClientSettings:
        """Read OUTPOST_URL and OUTPOST_API_KEY. Raises InvalidInput when either cannot be right."""
        url = environ.get("OUTPOST_URL", "").strip() or DEFAULT_URL
        if not url.startswith(("http://", "https://")):
            raise InvalidInput(f"invalid OUTPOST_URL {url!r}: it must start with http:// or https://")
        api_key = environ.get("OUTPOST_API_KEY", "").strip()
        # httpx sends only ASCII headers; a key with anything else was mangled when it was copied.
        if not api_key.isascii():
            raise InvalidInput("invalid OUTPOST_API_KEY: an Outpost key has only ASCII characters")
        return cls(url=url.rstrip("/"), api_key=api_key)


def build_request(shape: type[ModelT], /, **fields: Any) -> ModelT:
    """Validate a request body locally. Raises InvalidInput naming the first bad field (`env.NAME`)."""
    try:
        return shape(**fields)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"] if part != "[key]")
        message = str(first["msg"]).removeprefix("Value error, ")
        raise InvalidInput(f"{where}: {message}" if where else message, field=where or None) from exc


def error_from_response(response: httpx.Response) -> OutpostError:
    """The OutpostError of an error response: its class from the status, its message from the problem."""
    detail = _problem_detail(response)
    status = response.status_code
    if status == 429:
        retry_after = response.headers.get("Retry-After", "1")
        return RateLimited(detail, float(retry_after) if retry_after.isdigit() else 1.0)
    error_type = STATUS_ERRORS.get(status, Unavailable if status >= 500 else OutpostError)
    return error_type(detail)


def _problem_detail(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("detail"), str) and body["detail"]:
        return str(body["detail"])
    answer, request = f"{response.status_code} {response.reason_phrase}", response.request
    return f"the server answered {answer} to {request.method} {request.url}"


def _segment(value: str) -> str:
    """One path segment: ids typed by the user must not be able to reach another route."""
    return quote(value, safe="")


class ApiClient:
    """Sends requests to one Outpost server with one API key; use it as a context manager.

    Every method raises OutpostError subclasses only (see the module docstring).
    """

    def __init__(self, settings: ClientSettings, transport: httpx.BaseTransport | None = None) -> None:
        """`transport` replaces the network, for tests (`httpx.MockTransport`)."""
        self._url = settings.url
        self._key = settings.api_key
        self._http = httpx.Client(
            base_url=settings.url,
            timeout=TIMEOUT,
            headers={"User-Agent": f"outpost-cli/{__version__}", "Accept": "application/json"},
            transport=transport,
        )

    @classmethod
    def from_environment(cls) -> ApiClient:
        """A client configured by OUTPOST_URL and OUTPOST_API_KEY (see ClientSettings)."""
        return cls(ClientSettings.from_environment(os.environ))

    def __enter__(self) -> ApiClient:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._http.close()

    def submit_dispatch(self, request: DispatchCreate, idempotency_key: str | None) -> DispatchRead:
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        body = request.model_dump(mode="json", exclude_none=True)
        return self._call("POST", "/v1/dispatches", DispatchRead, json=body, headers=headers)

    def get_dispatch(self, dispatch_id: str) -> DispatchRead:
        return self._call("GET", f"/v1/dispatches/{_segment(dispatch_id)}", DispatchRead)

    def list_dispatches(self, **filters: str | int | None) -> DispatchPage:
        """One page, newest first; `filters` are the query parameters (status, agent, limit, cursor)."""
        params = {name: value for name, value in filters.items() if value is not None}
        return self._call("GET", "/v1/dispatches", DispatchPage, params=params)

    def cancel_dispatch(self, dispatch_id: str) -> DispatchRead:
        return self._call("POST", f"/v1/dispatches/{_segment(dispatch_id)}/cancel", DispatchRead)

    def list_events(self, dispatch_id: str, after_seq: int, limit: int = 1000) -> EventPage:
        path = f"/v1/dispatches/{_segment(dispatch_id)}/logs"
        return self._call("GET", path, EventPage, params={"after": after_seq, "limit": limit})

    @contextmanager
    def open_event_stream(self, dispatch_id: str, after_seq: int) -> Iterator[Iterator[bytes]]:
        """The dispatch's live `text/event-stream` after event `after_seq`, in chunks as they arrive.
        Reading it raises OutpostError subclasses too: a connection lost midway is Unavailable."""
        if not self._key:
            raise AuthenticationFailed(NO_KEY)
        headers = {"Authorization": f"Bearer {self._key}", "Accept": "text/event-stream"}
        if after_seq:
            headers["Last-Event-ID"] = str(after_seq)
        path = f"/v1/dispatches/{_segment(dispatch_id)}/events"
        with self._translated_transport_errors(), self._http.stream("GET", path, headers=headers) as response:
            if response.is_error:
                response.read()
                raise error_from_response(response)
            if not response.headers.get("content-type", "").startswith("text/event-stream"):
                raise OutpostError(
                    f"the server at {self._url} sent no event stream for GET {path}; "
                    "is it an Outpost server of the same version as this CLI?"
                )
            yield response.iter_bytes()

    def create_key(self, request: KeyCreate) -> KeyIssued:
        body = request.model_dump(mode="json", exclude_none=True)
        return self._call("POST", "/v1/keys", KeyIssued, json=body)

    def list_keys(self) -> list[KeyRead]:
        return self._call("GET", "/v1/keys", list[KeyRead])

    def revoke_key(self, key_id: str) -> KeyRead:
        return self._call("DELETE", f"/v1/keys/{_segment(key_id)}", KeyRead)

    def list_providers(self) -> list[ProviderRead]:
        return self._call("GET", "/v1/providers", list[ProviderRead])

    def update_provider(self, name: str, update: ProviderUpdate) -> ProviderRead:
        # Only the fields the user gave: a field left out is left alone, `null` removes it.
        body = update.model_dump(mode="json", exclude_unset=True)
        if update.api_key is not None:
            body["api_key"] = update.api_key.get_secret_value()
        return self._call("PATCH", f"/v1/providers/{_segment(name)}", ProviderRead, json=body)

    def reset_provider(self, name: str) -> None:
        response = self._send("DELETE", f"/v1/providers/{_segment(name)}")
        if response.is_error:
            raise error_from_response(response)

    def list_key_versions(self, name: str) -> list[SecretVersionRead]:
        return self._call("GET", f"/v1/providers/{_segment(name)}/key-versions", SecretVersionList).items

    def retire_key_version(self, name: str, version: int) -> None:
        response = self._send("DELETE", f"/v1/providers/{_segment(name)}/key-versions/{version}")
        if response.is_error:
            raise error_from_response(response)

    def list_git_credentials(self) -> list[GitCredentialRead]:
        return self._call("GET", "/v1/git-credentials", GitCredentialList).items

    def set_git_credential(self, host: str, body: GitCredentialSet) -> GitCredentialRead:
        sent = {
            "username": body.username, "token": body.token.get_secret_value(),
            "retire_previous": body.retire_previous,
        }  # fmt: skip
        return self._call("PUT", f"/v1/git-credentials/{_segment(host)}", GitCredentialRead, json=sent)

    def delete_git_credential(self, host: str) -> None:
        response = self._send("DELETE", f"/v1/git-credentials/{_segment(host)}")
        if response.is_error:
            raise error_from_response(response)

    def list_git_credential_versions(self, host: str) -> list[SecretVersionRead]:
        path = f"/v1/git-credentials/{_segment(host)}/versions"
        return self._call("GET", path, SecretVersionList).items

    def retire_git_credential_version(self, host: str, version: int) -> None:
        response = self._send("DELETE", f"/v1/git-credentials/{_segment(host)}/versions/{version}")
        if response.is_error:
            raise error_from_response(response)

    def list_artifacts(self, dispatch_id: str) -> list[ArtifactRead]:
        path = f"/v1/dispatches/{_segment(dispatch_id)}/artifacts"
        return self._call("GET", path, ArtifactList).items

    @contextmanager
    def open_download(self, url: str) -> Iterator[Iterator[bytes]]:
        """The body of a signed artifact link, in chunks. The signature is the authorization, so the API
        key is not sent: the link may be handed to (or point at) anything, and the key must not go with it.
        """
        stream = self._http.stream("GET", url, headers={"Accept": "*/*"})
        with self._translated_transport_errors(), stream as response:
            if response.is_error:
                response.read()
                raise error_from_response(response)
            yield response.iter_bytes()

    def list_workspaces(self) -> WorkspacePage:
        return self._call("GET", "/v1/workspaces", WorkspacePage)

    def list_audit(self, after: int, limit: int, tenant: str | None = None) -> AuditPage:
        params = {"after": after, "limit": limit, **({"tenant": tenant} if tenant else {})}
        return self._call("GET", "/v1/audit", AuditPage, params=params)

    def get_usage(self, group_by: str, since: date | None, until: date | None) -> UsageReport:
        params = {"group_by": group_by, "since": since, "until": until}
        sent = {name: str(value) for name, value in params.items() if value is not None}
        return self._call("GET", "/v1/usage", UsageReport, params=sent)

    def delete_workspace(self, workspace_id: str) -> None:
        response = self._send("DELETE", f"/v1/workspaces/{_segment(workspace_id)}")
        if response.is_error:
            raise error_from_response(response)

    def _call(self, method: str, path: str, shape: type[ResponseT], **options: Any) -> ResponseT:
        response = self._send(method, path, **options)
        if response.is_error:
            raise error_from_response(response)
        try:
            return TypeAdapter(shape).validate_json(response.content)
        except ValidationError as exc:
            raise OutpostError(
                f"the server at {self._url} sent an unexpected answer to {method} {path}; "
                "is it an Outpost server of the same version as this CLI?"
            ) from exc

    def _send(self, method: str, path: str, **options: Any) -> httpx.Response:
        if not self._key:
            raise AuthenticationFailed(NO_KEY)
        headers = {"Authorization": f"Bearer {self._key}", **options.pop("headers", {})}
        with self._translated_transport_errors():
            return self._http.request(method, path, headers=headers, **options)

    @contextmanager
    def _translated_transport_errors(self) -> Iterator[None]:
        try:
            yield
        except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
            raise Unavailable(
                f"cannot reach the Outpost server at {self._url}: {exc}; is `outpost serve` running?"
            ) from exc
        except httpx.TimeoutException as exc:
            raise Unavailable(f"the Outpost server at {self._url} did not answer in time") from exc
        except httpx.TransportError as exc:
            raise Unavailable(f"lost the connection to the Outpost server at {self._url}: {exc}") from exc
