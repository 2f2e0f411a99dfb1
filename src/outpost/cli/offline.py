"""What the offline admin commands share: the server's settings, read from the environment, and the audit
log under the server's master keys. Kept light to import: `outpost audit verify` is timed as a whole."""

from __future__ import annotations

from pydantic import ValidationError
from pydantic_settings import SettingsError

from outpost.audit.chain import KEY_PURPOSE
from outpost.audit.log import AuditLog
from outpost.errors import InvalidInput
from outpost.secrets.master_key import load_keyring
from outpost.settings import Settings


def load_settings() -> Settings:
    """The server's settings. Raises InvalidInput naming the first bad OUTPOST_* variable."""
    try:
        return Settings()
    except SettingsError as exc:  # a value that is not even parseable, e.g. malformed JSON
        raise InvalidInput(f"invalid setting: {exc}; check the OUTPOST_* variables") from exc
    except ValidationError as exc:
        first = exc.errors()[0]
        field = "__".join(str(part) for part in first["loc"]).upper()
        raise InvalidInput(f"invalid setting OUTPOST_{field}: {first['msg']}") from exc


def offline_audit_log(settings: Settings) -> AuditLog:
    """The audit log under the configured master keys (current, then previous ones); a missing key file
    is an error here, never a new key. Raises MasterKeyError."""
    secrets = settings.secrets
    keyring = load_keyring(
        secrets.master_key, secrets.previous_master_keys, settings.resolved_master_key_file, create=False
    )
    return AuditLog.from_master_keys(keyring.derive_all(KEY_PURPOSE))
