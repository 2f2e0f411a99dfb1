"""A provider's error body on its way back to the run, with the provider key masked if it echoes it.

The key never enters a sandbox in a request, but a provider may quote the key it was sent in an error
("invalid key sk-…"), and the run would print it into its events. The gateway relays error bodies
through an `ErrorBody`: every occurrence of the key becomes as many `*`, so the length (and any
Content-Length) stays right, including an occurrence split across two chunks. Successful answers are
not touched: holding back the end of each chunk would delay streamed tokens, and a model never sees the
key to repeat it.
"""

from __future__ import annotations

from pydantic import SecretStr


class ErrorBody:
    """Masks `key` in a body fed chunk by chunk, and keeps its first `sample_bytes` (masked) for
    classifying the failure."""

    def __init__(self, key: SecretStr | None, sample_bytes: int) -> None:
        self._key = key.get_secret_value().encode() if key is not None else b""
        self._held = b""
        self._sample_bytes = sample_bytes
        self.sample = bytearray()

    def feed(self, chunk: bytes) -> bytes:
        """What can be sent now: `chunk`, masked, less the few last bytes that could start the key."""
        if not self._key:
            return self._sampled(chunk)
        data = (self._held + chunk).replace(self._key, b"*" * len(self._key))
        # An occurrence that ends in the next chunk starts in the last len(key) - 1 bytes: hold them.
        cut = max(0, len(data) - (len(self._key) - 1))
        self._held = data[cut:]
        return self._sampled(data[:cut])

    def finish(self) -> bytes:
        """The bytes still held back, at the end of the body."""
        rest, self._held = self._held, b""
        return self._sampled(rest)

    def _sampled(self, data: bytes) -> bytes:
        if len(self.sample) < self._sample_bytes:
            self.sample += data[: self._sample_bytes - len(self.sample)]
        return data
