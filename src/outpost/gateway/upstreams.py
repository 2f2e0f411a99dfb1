"""The real providers behind the gateway: base URL, key, and how each expects its key."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal, Protocol

from pydantic import SecretStr

from outpost.domain.quotas import SERVER_ACCOUNT
from outpost.settings import ProviderSettings

KeyStyle = Literal["x-api-key", "bearer", "x-goog-api-key"]

# Provider roots: a run's path after `/<provider>` is appended as is (e.g. `/v1/messages`).
DEFAULT_BASE_URLS = {
    "anthropic": "https://api.anthropic.com",
    "openai": "https://api.openai.com",
    "gemini": "https://generativelanguage.googleapis.com",
    "xai": "https://api.x.ai",
    "deepseek": "https://api.deepseek.com",
}
KEY_STYLES: dict[str, KeyStyle] = {"anthropic": "x-api-key", "gemini": "x-goog-api-key"}
# Where a client may put its key (here: its gateway token); all are removed before forwarding.
CREDENTIAL_HEADERS = ("x-api-key", "authorization", "x-goog-api-key", "api-key")


@dataclass(frozen=True, slots=True)
class Upstream:
    name: str
    base_url: str
    api_key: SecretStr | None
    key_style: KeyStyle
    account: str = SERVER_ACCOUNT
    """Whose provider account the calls count against: the server's, or a tenant's (its id) when the
    tenant's own key or base URL is in force (quotas are recorded per account)."""

    def url(self, path: str, query: str) -> str:
        return f"{self.base_url.rstrip('/')}{path}{'?' + query if query else ''}"

    def credential_headers(self) -> list[tuple[bytes, bytes]]:
        if self.api_key is None:
            return []
        key = self.api_key.get_secret_value().encode()
        if self.key_style == "bearer":
            return [(b"authorization", b"Bearer " + key)]
        return [(self.key_style.encode(), key)]


class UpstreamResolver(Protocol):
    async def upstream_for(
        self, tenant_id: str, name: str, *, run_id: str | None = None, server_account: bool = False
    ) -> Upstream | None:
        """The upstream a run of this tenant calls for provider `name` (with the key to send); None when
        Outpost knows no such provider. A tenant's key decrypted for it is audited for `run_id`. With
        `server_account`, the server's own, whatever the tenant set (its dispatch failed over to it)."""
        ...


def upstreams_from_settings(providers: Mapping[str, ProviderSettings]) -> dict[str, Upstream]:
    """Every known provider, with the configured base URL and key where set (names are lower-cased)."""
    configured = {name.lower(): value for name, value in providers.items()}
    upstreams = {}
    for name in sorted({*DEFAULT_BASE_URLS, *configured}):
        settings = configured.get(name, ProviderSettings())
        base_url = settings.base_url or DEFAULT_BASE_URLS.get(name)
        if base_url is None:
            continue  # a provider Outpost knows no address for, and none was given
        upstreams[name] = Upstream(name, base_url, settings.api_key, KEY_STYLES.get(name, "bearer"))
    return upstreams
