"""Structured JSON logs on stderr, one object per line, with every secret the process knows cut out.

Redaction works on two kinds of secret. Values the process holds (the master keys, keys from the
settings, tenants' secrets once decrypted or stored) are registered with `remember_secret` and replaced
wherever they appear. Credentials Outpost issues (gateway tokens, API keys) are recognized by their
shape, since the process keeps only their digests. The filter runs on the message after formatting,
on the exception text and on the stack, so a secret passed as an argument or carried in an exception
message is cut as well. Values shorter than `MIN_SECRET_CHARS` are not registered: cutting them would
mangle ordinary words, and a secret that short is no secret.
"""

from __future__ import annotations

import logging
import re
import sys
import threading
from collections.abc import Iterable
from datetime import UTC, datetime

import orjson
from pydantic import BaseModel, SecretStr

REDACTED = "[redacted]"
MIN_SECRET_CHARS = 8
MAX_REMEMBERED = 4096
"""Values kept; past this the least recently remembered are dropped (each use remembers one again)."""
_SCAN_LIMIT = 64  # up to this many values, `in` per value; past it, an index of 8-character prefixes
# Gateway tokens (`opgw_` + 43 base64url characters) and API keys (`op_` + 12-character prefix + `_` +
# a base64url secret), as `gateway.tokens` and `services.keys` issue them; a test pins both formats. An
# API key keeps its prefix, which names the key in listings and is no secret.
ISSUED_CREDENTIALS = re.compile(r"opgw_[A-Za-z0-9_-]{16,}|(op_[a-z0-9]{12}_)[A-Za-z0-9_-]{16,}")


class SecretRegistry:
    """Secret values to cut from text. Thread-safe: logging happens on every thread."""

    def __init__(self, max_values: int = MAX_REMEMBERED) -> None:
        self._max_values = max_values
        self._values: dict[str, None] = {}  # insertion order is recency
        self._by_prefix: dict[str, list[str]] = {}
        self._lock = threading.Lock()

    def add(self, value: str) -> None:
        """Remember `value` (ignored when shorter than MIN_SECRET_CHARS)."""
        if len(value) < MIN_SECRET_CHARS:
            return
        with self._lock:
            if value in self._values:
                self._values[value] = self._values.pop(value)  # most recent again
                return
            self._values[value] = None
            self._by_prefix.setdefault(value[:MIN_SECRET_CHARS], []).append(value)
            while len(self._values) > self._max_values:
                self._forget(next(iter(self._values)))

    def redact(self, text: str) -> str:
        """`text` with every remembered value and issued credential replaced by REDACTED."""
        for value in sorted(self._present(text), key=len, reverse=True):  # longest first: no part survives
            text = text.replace(value, REDACTED)
        if "op" in text:
            text = ISSUED_CREDENTIALS.sub(_keep_prefix, text)
        return text

    def _present(self, text: str) -> list[str]:
        with self._lock:
            if len(self._values) <= _SCAN_LIMIT:
                return [value for value in self._values if value in text]
            width = MIN_SECRET_CHARS
            grams = {text[at : at + width] for at in range(len(text) - width + 1)}
            candidates = [v for prefix in grams & self._by_prefix.keys() for v in self._by_prefix[prefix]]
        return [value for value in candidates if value in text]

    def _forget(self, value: str) -> None:
        del self._values[value]
        same_prefix = self._by_prefix[value[:MIN_SECRET_CHARS]]
        same_prefix.remove(value)
        if not same_prefix:
            del self._by_prefix[value[:MIN_SECRET_CHARS]]


def _keep_prefix(match: re.Match[str]) -> str:
    return (match.group(1) or "") + REDACTED


KNOWN_SECRETS = SecretRegistry()
"""The process's registry: logging is process-wide, and so are the secrets it must not print."""


def remember_secret(value: str | SecretStr | None) -> None:
    """Cut `value` from every log line from now on."""
    if value is not None:
        KNOWN_SECRETS.add(value.get_secret_value() if isinstance(value, SecretStr) else value)


def remember_secrets_in(settings: BaseModel) -> None:
    """Remember every SecretStr in `settings`, nested models, lists and dicts included."""
    for value in _secret_values(settings):
        remember_secret(value)


def _secret_values(value: object) -> Iterable[SecretStr]:
    if isinstance(value, SecretStr):
        yield value
    elif isinstance(value, BaseModel):
        for name in type(value).model_fields:
            yield from _secret_values(getattr(value, name))
    elif isinstance(value, dict):
        for item in value.values():
            yield from _secret_values(item)
    elif isinstance(value, list | tuple):
        for item in value:
            yield from _secret_values(item)


class RedactingFilter(logging.Filter):
    """Replaces the message, arguments, exception and stack text of each record with redacted text.
    Installed on a handler, it changes the record for every handler after it too (they see less)."""

    def __init__(self, registry: SecretRegistry = KNOWN_SECRETS) -> None:
        super().__init__()
        self._registry = registry

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg, record.args = self._registry.redact(_message(record)), None
        if record.exc_info:
            # Formatted once, here; without exc_info no formatter can print the raw text again.
            record.exc_text = logging.Formatter().formatException(record.exc_info)
            record.exc_info = None
        if record.exc_text:
            record.exc_text = self._registry.redact(record.exc_text)
        if record.stack_info:
            record.stack_info = self._registry.redact(record.stack_info)
        return True


def _message(record: logging.LogRecord) -> str:
    try:
        return record.getMessage()
    except Exception:  # arguments that do not fit the message must not stop the log line
        return f"{record.msg} (its arguments did not fit the message and were dropped)"


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            entry["exception"] = record.exc_text
        if record.stack_info:
            entry["stack"] = record.stack_info
        return orjson.dumps(entry).decode()


def configure_logging(level: str) -> None:
    """JSON lines on stderr at `level`, through a RedactingFilter on the process's registry."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(RedactingFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
