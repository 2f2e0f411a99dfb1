"""Log redaction: every secret the process knows, and every credential Outpost issues, leaves no log line."""

from __future__ import annotations

import json
import logging
import os
import secrets
from collections.abc import Iterator

import pytest
from pydantic import SecretStr

from outpost.gateway.tokens import GatewayTokens, Grant
from outpost.logs import (
    MIN_SECRET_CHARS,
    REDACTED,
    JsonFormatter,
    RedactingFilter,
    SecretRegistry,
    configure_logging,
    remember_secret,
    remember_secrets_in,
)
from outpost.secrets.master_key import encode_master_key
from outpost.services.keys import KeyService
from outpost.settings import Settings

PROVIDER_KEY = "sk-provider-0123456789abcdef"


@pytest.fixture
def registry() -> SecretRegistry:
    known = SecretRegistry()
    known.add(PROVIDER_KEY)
    return known


@pytest.fixture
def logger(caplog: pytest.LogCaptureFixture, registry: SecretRegistry) -> Iterator[logging.Logger]:
    """A logger whose records pass through a RedactingFilter on the capturing handler, as they would
    through the one `configure_logging` installs on stderr."""
    redacting = RedactingFilter(registry)
    caplog.handler.addFilter(redacting)
    caplog.set_level(logging.DEBUG)
    try:
        yield logging.getLogger("outpost.test.redaction")
    finally:
        caplog.handler.removeFilter(redacting)


def test_a_known_value_is_cut_from_the_message_and_its_arguments(
    logger: logging.Logger, caplog: pytest.LogCaptureFixture
) -> None:
    logger.warning("calling with %s", PROVIDER_KEY)
    logger.warning(f"inline {PROVIDER_KEY}!")
    assert caplog.messages == [f"calling with {REDACTED}", f"inline {REDACTED}!"]
    assert PROVIDER_KEY not in caplog.text


def test_exception_text_and_stacks_are_cut_too(
    logger: logging.Logger, caplog: pytest.LogCaptureFixture
) -> None:
    try:
        raise RuntimeError(f"upstream refused key {PROVIDER_KEY}")
    except RuntimeError:
        logger.exception("call failed")
    logger.info("where %s", "here", stack_info=True, extra={"unused": PROVIDER_KEY})
    record = caplog.records[0]
    assert record.exc_text is not None
    assert f"upstream refused key {REDACTED}" in record.exc_text
    assert PROVIDER_KEY not in caplog.text
    assert PROVIDER_KEY not in JsonFormatter().format(record)


def test_arguments_that_do_not_fit_the_message_do_not_stop_the_line(
    logger: logging.Logger, caplog: pytest.LogCaptureFixture
) -> None:
    logger.warning("two %s %s", PROVIDER_KEY)  # noqa: PLE1206 - the mistake under test
    assert caplog.messages == ["two %s %s (its arguments did not fit the message and were dropped)"]


def test_issued_credentials_are_recognized_by_their_shape(registry: SecretRegistry) -> None:
    issued = KeyService._new_key("tenant", "ci", is_admin=False, expires_at=None)
    grant = Grant(
        run_id="r", tenant_id="t", upstreams={}, on_usage=lambda *_: None, on_failure=lambda *_: None
    )
    token = GatewayTokens().issue(grant)
    text = registry.redact(f"auth failed for {issued.token}; run used {token}.")
    # The key's prefix names it in listings and is no secret: it stays.
    assert text == f"auth failed for op_{issued.row.prefix}_{REDACTED}; run used {REDACTED}."


def test_values_too_short_to_be_secrets_are_not_remembered() -> None:
    known = SecretRegistry()
    known.add("x" * (MIN_SECRET_CHARS - 1))
    assert known.redact("x" * (MIN_SECRET_CHARS - 1)) == "x" * (MIN_SECRET_CHARS - 1)


def test_a_longer_value_containing_a_shorter_one_leaves_nothing_behind() -> None:
    known = SecretRegistry()
    known.add("token-abcdefgh")
    known.add("user:token-abcdefgh")
    assert known.redact("sent user:token-abcdefgh and token-abcdefgh") == f"sent {REDACTED} and {REDACTED}"


def test_many_values_are_found_through_the_prefix_index_as_through_a_scan() -> None:
    known = SecretRegistry()
    values = [secrets.token_urlsafe(24) for _ in range(500)]
    for value in values:
        known.add(value)
    line = f"a {values[0]} b {values[250]}{values[499]} c"
    assert known.redact(line) == f"a {REDACTED} b {REDACTED}{REDACTED} c"


def test_past_the_cap_the_least_recently_remembered_value_is_dropped() -> None:
    known = SecretRegistry(max_values=2)
    known.add("first-secret")
    known.add("second-secret")
    known.add("first-secret")  # used again: now the most recent
    known.add("third-secret")
    assert known.redact("first-secret second-secret third-secret") == f"{REDACTED} second-secret {REDACTED}"


def test_every_secret_in_the_settings_is_remembered() -> None:
    master = encode_master_key(os.urandom(32))
    settings = Settings(
        providers={"openai": {"api_key": "sk-settings-openai-key"}, "xai": {"api_key": "xai-settings-key-1"}},
        secrets={"master_key": master, "previous_master_keys": [encode_master_key(os.urandom(32))]},
        storage={"url_signing_key": "u" * 40},
    )  # type: ignore[arg-type]
    known = SecretRegistry()
    for value in _secret_values(settings):
        known.add(value)
    line = f"{master} sk-settings-openai-key xai-settings-key-1 {'u' * 40}"
    assert known.redact(line) == " ".join([REDACTED] * 4)


def test_remembering_the_settings_fills_the_process_registry() -> None:
    value = f"sk-process-{secrets.token_hex(8)}"
    remember_secrets_in(Settings(providers={"openai": {"api_key": value}}))  # type: ignore[arg-type]
    caught = logging.LogRecord("x", logging.INFO, __file__, 1, "key %s", (value,), None)
    RedactingFilter().filter(caught)
    assert caught.getMessage() == f"key {REDACTED}"


def _secret_values(settings: Settings) -> list[str]:
    from outpost.logs import _secret_values as walk  # noqa: PLC0415 - the walker under test

    return [secret.get_secret_value() for secret in walk(settings) if isinstance(secret, SecretStr)]


def test_the_logging_setup_puts_the_filter_on_stderr(capsys: pytest.CaptureFixture[str]) -> None:
    value = f"sk-stderr-{secrets.token_hex(8)}"
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        configure_logging("info")
        remember_secret(value)
        logging.getLogger("outpost.test.setup").warning("the key is %s", value)
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
    printed = capsys.readouterr().err
    assert json.loads(printed)["message"] == f"the key is {REDACTED}"
