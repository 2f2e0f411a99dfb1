"""A tenant's own settings for a model provider: its key, and (admin keys only) its upstream URL."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, SecretStr, model_validator

from outpost.schemas.secret_versions import RETIRE_PREVIOUS_DESCRIPTION

MAX_BASE_URL_CHARS = 2048
MAX_API_KEY_CHARS = 4096


def check_api_key(value: SecretStr) -> SecretStr:
    """A key travels in an HTTP header: printable ASCII without spaces, so it cannot add a header."""
    key = value.get_secret_value()
    if not key or len(key) > MAX_API_KEY_CHARS:
        raise ValueError(f"must be 1 to {MAX_API_KEY_CHARS} characters")
    if not all("!" <= char <= "~" for char in key):
        raise ValueError("must be printable ASCII without spaces")
    return value


def check_base_url(value: str) -> str:
    """An absolute http(s) URL with a host and nothing that would change where the gateway sends."""
    if len(value) > MAX_BASE_URL_CHARS or not value.isascii() or not value.isprintable() or " " in value:
        raise ValueError(f"must be a printable ASCII URL of at most {MAX_BASE_URL_CHARS} characters")
    try:
        parts = urlsplit(value)
        port = parts.port  # parses the port: a bad one raises here
    except ValueError:
        raise ValueError("is not a valid URL") from None
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        raise ValueError("must be an absolute http:// or https:// URL")
    if parts.username is not None or parts.password is not None:
        raise ValueError("must not hold credentials; set api_key instead")
    if parts.query or parts.fragment or "?" in value or "#" in value:
        raise ValueError("must not have a query or fragment")
    if port == 0:
        raise ValueError("must not use port 0")
    return value.rstrip("/")


ApiKey = Annotated[SecretStr, AfterValidator(check_api_key)]
BaseUrl = Annotated[str, AfterValidator(check_base_url)]


class ProviderUpdate(BaseModel):
    """`PATCH /v1/providers/{name}`: a merge patch. A field left out is left alone; `null` removes the
    tenant's own value, so the server's applies again. Setting `api_key` replaces the tenant's key:
    dispatches already running keep the key they started with."""

    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)
    api_key: ApiKey | None = Field(default=None, description="Never returned by the API.")
    base_url: BaseUrl | None = Field(
        default=None, description="Admin keys only: where the gateway sends this tenant's calls."
    )
    retire_previous: bool = Field(default=True, description=RETIRE_PREVIOUS_DESCRIPTION)

    @model_validator(mode="after")
    def retire_previous_goes_with_a_key(self) -> ProviderUpdate:
        if "retire_previous" in self.model_fields_set and self.api_key is None:
            raise ValueError("retire_previous applies only when api_key sets a new key")
        return self


class ProviderRead(BaseModel):
    name: str
    base_url: str | None
    base_url_source: Literal["tenant", "server"]
    api_key_source: Literal["tenant", "server"] | None = Field(
        description="Whose key the gateway sends; null: none is configured, calls go without a key."
    )
    api_key_version: int | None = Field(description="Version of the tenant's own key, if it has one.")
    updated_at: datetime | None
