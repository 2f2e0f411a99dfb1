"""How a list of master keys is spelled in one environment variable."""

from __future__ import annotations

import json
from typing import Annotated

from pydantic import BeforeValidator, SecretStr
from pydantic_settings import NoDecode


def split_keys(value: object) -> object:
    """`["k1", "k2"]` (JSON) or `k1,k2` (base64 never holds a comma) → a list; a list stays as it is.
    Raises ValueError for malformed JSON, without echoing it (it holds keys)."""
    if not isinstance(value, str):
        return value
    text = value.strip()
    if text.startswith("["):
        try:
            return json.loads(text)
        except ValueError:
            raise ValueError("is not a JSON list of base64 keys (nor keys separated by commas)") from None
    return [part.strip() for part in text.split(",") if part.strip()]


KeyList = Annotated[list[SecretStr], NoDecode, BeforeValidator(split_keys)]
"""Master keys in base64, as a JSON list or separated by commas; each is checked when the keys load."""
