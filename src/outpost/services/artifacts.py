"""Artifacts for API clients: a dispatch's list with signed download links, and the download itself."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import quote

from outpost.db.repositories import artifacts as artifact_repo
from outpost.db.repositories.artifacts import ArtifactRow
from outpost.db.store import Store
from outpost.db.types import utc_now
from outpost.domain.ids import is_ulid
from outpost.errors import NotFound
from outpost.services.dispatches import DispatchService
from outpost.services.keys import Principal
from outpost.storage.signing import UrlSigner

DOWNLOAD_PREFIX = "/v1/artifacts"


@dataclass(frozen=True, slots=True)
class SignedArtifact:
    row: ArtifactRow
    path_and_query: str
    url_expires_at: datetime


class ArtifactService:
    def __init__(self, store: Store, dispatches: DispatchService, signer: UrlSigner) -> None:
        self._store = store
        self._dispatches = dispatches
        self._signer = signer

    async def list_signed(self, caller: Principal, dispatch_id: str) -> list[SignedArtifact]:
        """The dispatch's unexpired artifacts with signed links. Raises NotFound for unknown dispatches
        and other tenants' alike."""
        _, stored = await self._dispatches.get_with_artifacts(caller, dispatch_id)
        return self.signed(stored)

    def signed(self, stored: list[ArtifactRow]) -> list[SignedArtifact]:
        """Fresh links for the artifacts that have not expired."""
        now = utc_now()
        return [self._signed(row) for row in stored if row.expires_at > now]

    def _signed(self, row: ArtifactRow) -> SignedArtifact:
        path = download_path(row.id, row.name)
        expires = self._signer.expiry()
        query = self._signer.sign(path, expires)
        return SignedArtifact(row, f"{path}?{query}", datetime.fromtimestamp(expires, UTC))

    async def for_download(self, artifact_id: str, name: str, query: Mapping[str, str]) -> ArtifactRow:
        """The artifact a signed link names. Raises SignatureInvalid (403) for a tampered or expired
        link, before anything is looked up, and NotFound once the artifact itself has expired."""
        self._signer.verify(download_path(artifact_id, name), query)
        async with self._store.read() as conn:
            row = await artifact_repo.get_by_id(conn, artifact_id) if is_ulid(artifact_id) else None
        if row is None or row.name != name or row.expires_at <= utc_now():
            raise NotFound("this artifact no longer exists (it expired or was deleted)")
        return row


def download_path(artifact_id: str, name: str) -> str:
    """The link's path, which its signature covers: the whole name, every character but `/` quoted (the
    route sees the name decoded, `%2F` or `/` alike, and signs it again in this one form). Names have no
    `.` or `..` segment (see `join_key`), so no client can shorten the path."""
    return f"{DOWNLOAD_PREFIX}/{artifact_id}/{quote(name, safe='/')}"
