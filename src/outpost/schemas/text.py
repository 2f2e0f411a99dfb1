"""String rules that every text field from outside follows."""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator


def check_storable_text(value: str) -> str:
    """Refuse text the store cannot keep intact: NUL bytes (PostgreSQL rejects them) and lone surrogates."""
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("must be valid Unicode (no unpaired surrogates)") from None
    return value


StorableText = Annotated[str, AfterValidator(check_storable_text)]
