"""A provider's error body that quotes the provider key reaches the run with the key masked."""

from __future__ import annotations

import pytest
from pydantic import SecretStr

from outpost.gateway.key_echo import ErrorBody

KEY = "sk-real-provider-key-0123456789"
BODY = f'{{"error": {{"message": "Incorrect API key provided: {KEY}. Or was it {KEY}?"}}}}'.encode()
MASKED = BODY.replace(KEY.encode(), b"*" * len(KEY))


def relay(body: ErrorBody, chunks: list[bytes]) -> bytes:
    return b"".join([*(body.feed(chunk) for chunk in chunks), body.finish()])


@pytest.mark.parametrize("cut", range(1, len(BODY)))
def test_the_key_is_masked_wherever_the_chunks_split_it(cut: int) -> None:
    assert relay(ErrorBody(SecretStr(KEY), 64), [BODY[:cut], BODY[cut:]]) == MASKED


def test_a_body_sent_byte_by_byte_keeps_its_length_and_loses_the_key() -> None:
    body = ErrorBody(SecretStr(KEY), 1024)
    relayed = relay(body, [bytes([byte]) for byte in BODY])
    assert (relayed, len(relayed)) == (MASKED, len(BODY))
    assert bytes(body.sample) == MASKED


def test_the_sample_for_classifying_is_capped_and_masked() -> None:
    body = ErrorBody(SecretStr(KEY), 80)
    relay(body, [BODY])
    assert bytes(body.sample) == MASKED[:80]


def test_without_a_key_the_body_passes_unchanged() -> None:
    body = ErrorBody(None, 10)
    assert [body.feed(b"abc"), body.feed(b"defghijkl"), body.finish()] == [b"abc", b"defghijkl", b""]
    assert bytes(body.sample) == b"abcdefghij"
