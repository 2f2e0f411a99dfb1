"""Signed, expiring download URLs: a link that works without an API key, for one path, until a time.

A signed URL carries `expires=<unix seconds>&signature=<base64url, unpadded, HMAC-SHA256>`. The MAC
covers a versioned canonical string, `outpost-url-v1`, the expiry and the path, one per line (the path
last, so that no path can pass for another expiry). The path is the URL path exactly as the route
sees it, without the query string; sign and verify must be given the same form.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import time
from collections.abc import Callable, Mapping, Sequence

from outpost.errors import InvalidInput, PermissionDenied

MIN_KEY_BYTES = 32
CLOCK_SKEW_S = 60
"""Servers sharing a key may disagree on the time by this much."""
_DIGITS = re.compile(r"[0-9]{1,12}")  # ASCII only: int() would also take " 1", "1_0" and other scripts
_SIGNATURE = re.compile(r"[A-Za-z0-9_-]{43}")  # 32 bytes, base64url without padding


class SignatureInvalid(PermissionDenied):
    """A signed URL that is missing its signature, tampered with, or expired (HTTP 403)."""


class UrlSigner:
    """Signs and verifies download URLs with `key`; links live `ttl_s` seconds by default.

    `max_ttl_s` (default `ttl_s`) is the longest life a link may have: `verify` refuses links that
    expire later than that from now, which also retires longer-lived links at once when an operator
    shortens the lifetime. `clock` returns Unix seconds (tests pass a fake one). `previous_keys` verify
    but never sign: links signed before a key rotation keep working until they expire.
    """

    def __init__(
        self,
        key: bytes,
        ttl_s: int = 3600,
        clock: Callable[[], float] = time.time,
        max_ttl_s: int | None = None,
        previous_keys: Sequence[bytes] = (),
    ) -> None:
        if any(len(each) < MIN_KEY_BYTES for each in (key, *previous_keys)):
            raise InvalidInput(f"the URL signing key must be at least {MIN_KEY_BYTES} bytes")
        if ttl_s < 1:
            raise InvalidInput("the signed URL lifetime must be at least 1 second")
        self._key = key
        self._keys = (key, *previous_keys)
        self._ttl_s = ttl_s
        self._max_ttl_s = max(ttl_s, max_ttl_s or ttl_s)
        self._clock = clock

    @property
    def ttl_s(self) -> int:
        """How long links live by default."""
        return self._ttl_s

    def expiry(self) -> int:
        """When a link signed now with the default lifetime expires (Unix seconds)."""
        return int(self._clock()) + self._ttl_s

    def sign(self, path: str, expires_at: int | None = None) -> str:
        """The query string that makes `path` downloadable until `expires_at` (Unix seconds; default
        `ttl_s` from now). Raises InvalidInput for an expiry past `max_ttl_s` from now."""
        now = int(self._clock())
        expires = now + self._ttl_s if expires_at is None else expires_at
        if expires > now + self._max_ttl_s:
            raise InvalidInput(f"a signed URL may live at most {self._max_ttl_s} seconds")
        return f"expires={expires}&signature={self._signature(path, expires, self._key)}"

    def verify(self, path: str, query_params: Mapping[str, str]) -> None:
        """Return when `query_params` (the request's query) validly sign `path` and have not expired;
        raise SignatureInvalid otherwise. Other query parameters are ignored."""
        expires_text = query_params.get("expires")
        signature = query_params.get("signature")
        if expires_text is None or signature is None:
            raise SignatureInvalid("the link is not signed: it needs `expires` and `signature`")
        if not _DIGITS.fullmatch(expires_text) or not _SIGNATURE.fullmatch(signature):
            raise SignatureInvalid("the link's signature is malformed")
        expires = int(expires_text)
        # The signature is checked first, so an unsigned request learns nothing about expiry rules.
        # Every key is tried, so the time taken does not tell which one matched.
        matches = [
            hmac.compare_digest(self._signature(path, expires, key).encode(), signature.encode())
            for key in self._keys
        ]
        if not any(matches):
            raise SignatureInvalid("the link's signature does not match; it was altered or is not ours")
        now = self._clock()
        if expires <= now:
            raise SignatureInvalid("the link has expired; ask for a new one")
        if expires > now + self._max_ttl_s + CLOCK_SKEW_S:
            raise SignatureInvalid("the link expires further ahead than links may live")

    def _signature(self, path: str, expires: int, key: bytes) -> str:
        # surrogatepass: any str has one encoding, so a path with a lone surrogate cannot crash this.
        message = f"outpost-url-v1\n{expires}\n{path}".encode("utf-8", "surrogatepass")
        mac = hmac.new(key, message, hashlib.sha256).digest()
        return base64.urlsafe_b64encode(mac).rstrip(b"=").decode()
