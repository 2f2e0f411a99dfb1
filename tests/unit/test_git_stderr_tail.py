"""git's stderr is kept from its end and its credential masked, also where the cut would split it."""

from __future__ import annotations

import pytest

from outpost.workspaces.git import HttpCredential, redact_tail

TOKEN = "ghp_0123456789abcdefABCDEF"
SECRETS = HttpCredential("bot", TOKEN).secrets


def test_a_credential_anywhere_in_the_tail_is_masked() -> None:
    raw = f"remote: token {TOKEN} refused\nfatal: Authentication failed for bot:{TOKEN}\n".encode()
    text = redact_tail(raw, SECRETS, 1024)
    assert TOKEN not in text
    assert text == "remote: token *** refused\nfatal: Authentication failed for ***\n"


@pytest.mark.parametrize("kept_of_token", range(1, len(TOKEN)))
def test_a_credential_split_by_the_cut_leaves_none_of_it(kept_of_token: int) -> None:
    limit = 40
    after = "x" * (limit - kept_of_token)  # the tail starts `kept_of_token` characters into the token
    raw = f"{'p' * 100}{TOKEN}{after}".encode()[-(limit + len(TOKEN)) :]
    text = redact_tail(raw, SECRETS, limit)
    assert text == f"***{after}"
    assert TOKEN[-kept_of_token:] not in text.replace("***", "")


def test_without_a_credential_the_tail_is_the_last_bytes_decoded() -> None:
    assert redact_tail("héllo wörld".encode(), (), 6) == "wörld"
    assert redact_tail(b"short", (), 100) == "short"


def test_a_secret_inside_a_longer_one_leaves_nothing_behind() -> None:
    text = redact_tail(f"a {TOKEN}{TOKEN} b bot:{TOKEN}".encode(), SECRETS, 1000)
    assert text == "a ****** b ***"
