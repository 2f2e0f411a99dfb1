"""Untrusted repository URLs and refs are refused unless the git policy allows them; accepted ones get one
normalized spelling; credentials never reach git's argv."""

from __future__ import annotations

from pathlib import Path

import pytest

from outpost.errors import InvalidInput
from outpost.workspaces.git import Git, HttpCredential, redact
from outpost.workspaces.raw_diff import ChangeKind, display_name, parse_raw
from outpost.workspaces.refs import check_ref, is_full_sha
from outpost.workspaces.repo_url import parse_repo_url
from outpost.workspaces.settings import GitSettings

STRICT = GitSettings()
LENIENT = GitSettings(allow_http=True, allow_local=True, allow_private_network=True)


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("ext::sh -c touch% /tmp/pwned", "transport"),
        ("ext::sh", "transport"),
        ("fd::17", "transport"),
        ("https::example.org/r", "transport"),
        ("--upload-pack=touch /tmp/x", "starts with '-'"),
        ("-oProxyCommand=touch /tmp/x", "starts with '-'"),
        ("file:///etc", "local repositories"),
        ("FILE:///etc", "local repositories"),
        ("/etc", "local paths"),
        ("ssh://git@example.org/r.git", "not supported yet"),
        ("git://example.org/r.git", "not supported yet"),
        ("git+ssh://example.org/r.git", "not supported yet"),
        ("git@example.org:owner/repo.git", "scp-like"),
        ("example.org:repo", "scp-like"),
        ("https://user:pw@example.org/r", "credentials"),
        ("https://token@example.org/r", "credentials"),
        ("https://example.org/r\nx", "whitespace or control"),
        ("https://example.org/r\0", "whitespace or control"),
        ("https://example.org/r x", "whitespace or control"),
        (" https://example.org/r", "whitespace or control"),
        ("https://example.org/\u202eevil", "whitespace or control"),
        ("https://example.org\\r", "backslash"),
        ("http://example.org/r", "plain text"),
        ("ftp://example.org/r", "not supported"),
        ("https://example.org", "no repository path"),
        ("https://example.org/", "no repository path"),
        ("https://example.org/r?x=1", "query"),
        ("https://example.org/r#frag", "query"),
        ("https://127.0.0.1/r", "IP addresses"),
        ("https://[::1]/r", "IP addresses"),
        ("https://127.1/r", "IP literal"),
        ("https://0x7f.1/r", "IP literal"),
        ("https://exa_mple.org/r", "bad label"),
        ("https://example.org:0/r", "port"),
        ("https://example.org:99999/r", "port"),
        ("https://example.org:/r", "empty port"),
        ("https://example.org/a/../b", "'..'"),
        ("https://example.org/a%zz", "percent escape"),
        ("owner/repo", "not a repository URL"),
        ("", "empty"),
        ("https://example.org/" + "a" * 3000, "longer than"),
    ],
)
def test_hostile_or_unsupported_urls_are_refused_with_the_reason(url: str, reason: str) -> None:
    with pytest.raises(InvalidInput) as refused:
        parse_repo_url(url, STRICT)
    assert reason in refused.value.detail
    assert refused.value.field == "repo.url"


@pytest.mark.parametrize(
    ("url", "normalized"),
    [
        ("https://github.com/owner/repo.git", "https://github.com/owner/repo.git"),
        ("HTTPS://GitHub.COM/Owner/Repo", "https://github.com/Owner/Repo"),
        ("https://github.com/owner/repo/", "https://github.com/owner/repo"),
        ("https://github.com:443/owner/repo", "https://github.com/owner/repo"),
        ("https://git.example.org:8443/a/b", "https://git.example.org:8443/a/b"),
        ("https://github.com./owner/repo", "https://github.com/owner/repo"),
        ("https://bücher.de/r", "https://xn--bcher-kva.de/r"),
        ("https://example.org/caf%c3%a9", "https://example.org/caf%C3%A9"),
        ("https://example.org/café", "https://example.org/caf%C3%A9"),
        ('https://example.org/a"b', "https://example.org/a%22b"),
    ],
)
def test_accepted_urls_get_one_spelling(url: str, normalized: str) -> None:
    repo = parse_repo_url(url, STRICT)
    assert repo.url == normalized
    assert repo.scheme == "https"


def test_local_repositories_need_allow_local_and_are_normalized() -> None:
    settings = GitSettings(allow_local=True)
    assert parse_repo_url("/srv/git/r.git/", settings).url == "file:///srv/git/r.git"
    assert parse_repo_url("file:///srv//git/./x/../r.git", settings).url == "file:///srv/git/r.git"
    assert parse_repo_url("file://localhost/srv/r", settings).url == "file:///srv/r"
    for refused in ("file://other-host/srv/r", "/", "file:///srv/a%20b", "--upload-pack=x"):
        with pytest.raises(InvalidInput):
            parse_repo_url(refused, settings)


def test_http_needs_allow_http() -> None:
    assert (
        parse_repo_url("http://example.org:80/r", GitSettings(allow_http=True)).url == "http://example.org/r"
    )
    with pytest.raises(InvalidInput, match="plain text"):
        parse_repo_url("http://example.org/r", STRICT)


def test_ip_literals_need_allow_private_network() -> None:
    repo = parse_repo_url("http://127.0.0.1:8080/r.git", LENIENT)
    assert (repo.url, repo.host, repo.port, repo.ip_literal) == (
        "http://127.0.0.1:8080/r.git",
        "127.0.0.1",
        8080,
        True,
    )
    assert parse_repo_url("https://[::1]/r", LENIENT).url == "https://[::1]/r"


def test_allowed_hosts_restrict_the_hosts() -> None:
    settings = GitSettings(allowed_hosts=["GitHub.com"], allow_private_network=True)
    assert settings.allowed_hosts == ["github.com"]
    assert parse_repo_url("https://github.com/o/r", settings).host == "github.com"
    for url in ("https://gitlab.com/o/r", "https://127.0.0.1/r", "https://evil.github.com/o/r"):
        with pytest.raises(InvalidInput):
            parse_repo_url(url, settings)


def test_the_ssh_refusal_says_it_is_not_supported_yet() -> None:
    with pytest.raises(
        InvalidInput, match=r"ssh:// URLs are not supported yet; give the repository's https://"
    ):
        parse_repo_url("ssh://example.org/r", LENIENT)


@pytest.mark.parametrize(
    "ref",
    ["-x", "--upload-pack=x", "main~1", "main^", ":/fix", "HEAD@{1}", "a..b", "a b", "a\nb", "refs/heads/.x",
     "x.lock", "x/", "", "*", "main:path", "a\\b", "x" * 300],
)  # fmt: skip
def test_refs_beyond_plain_names_and_commit_ids_are_refused(ref: str) -> None:
    with pytest.raises(InvalidInput) as refused:
        check_ref(ref)
    assert refused.value.field == "repo.ref"


@pytest.mark.parametrize("ref", ["main", "release/1.2", "v1.0.0", "refs/tags/v1", "deadbeef", "a" * 40])
def test_plain_refs_pass(ref: str) -> None:
    check_ref(ref)


def test_full_commit_ids_are_forty_lower_case_hex_digits() -> None:
    assert is_full_sha("0123456789abcdef0123456789abcdef01234567")
    assert not is_full_sha("0123456789ABCDEF0123456789ABCDEF01234567")
    assert not is_full_sha("0123456")


def test_a_credential_travels_in_the_environment_never_in_argv(tmp_path: Path) -> None:
    git = Git(STRICT, tmp_path / "home")
    credential = HttpCredential.parse("alice:s3cret-token")
    argv = git.command(["fetch", "https://example.org/r"], git_dir=tmp_path, config={"x.y": "z"})
    env = git.environment(credential=credential)
    assert not any(secret in arg for arg in argv for secret in (*credential.secrets, "s3cret"))
    assert env["GIT_CONFIG_KEY_0"] == "http.extraHeader"
    assert env["GIT_CONFIG_VALUE_0"] == credential.header
    assert "s3cret" not in repr(credential)
    assert (
        redact(f"fatal: {credential.header} s3cret-token", credential.secrets)
        == "fatal: Authorization: Basic *** ***"
    )


def test_a_bare_token_gets_a_default_username() -> None:
    assert HttpCredential.parse("ghp_abc") == HttpCredential("x-access-token", "ghp_abc")
    with pytest.raises(InvalidInput):
        HttpCredential.parse("user:pw\r\nX-Evil: 1")


def test_git_runs_with_the_hardened_configuration_and_nothing_inherited(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GIT_DIR", "/somewhere")
    monkeypatch.setenv("GIT_SSH_COMMAND", "touch /tmp/x")
    git = Git(GitSettings(allow_http=True), tmp_path / "home")
    argv = git.command(["status"])
    pairs = {argv[i + 1] for i, arg in enumerate(argv) if arg == "-c"}
    for expected in ("protocol.allow=never", "protocol.https.allow=always", "protocol.http.allow=always",
                     "protocol.file.allow=never", "core.hooksPath=/dev/null", "core.fsmonitor=false",
                     "credential.helper=", "http.followRedirects=false"):  # fmt: skip
        assert expected in pairs
    env = git.environment()
    assert "GIT_DIR" not in env
    assert "GIT_SSH_COMMAND" not in env
    assert env["GIT_CONFIG_GLOBAL"] == "/dev/null"
    assert env["GIT_TERMINAL_PROMPT"] == "0"
    assert env["HOME"] == str(tmp_path / "home")
    assert not any(arg.startswith("safe.directory") for arg in argv)


def test_raw_diff_names_survive_newlines_and_invalid_utf8() -> None:
    output = (
        b":000000 100644 " + b"0" * 40 + b" " + b"1" * 40 + b" A\0new\nline\xff\0"
        b":100644 100755 " + b"1" * 40 + b" " + b"1" * 40 + b" M\0run.sh\0"
        b":100644 100644 " + b"2" * 40 + b" " + b"2" * 40 + b" R100\0old name\0new name\0"
    )
    added, modified, renamed = parse_raw(output)
    assert added.kind == ChangeKind.ADDED
    assert added.path_bytes == b"new\nline\xff"
    assert added.display_path == "new\\nline\\xff"
    assert (modified.old_mode, modified.new_mode) == (0o100644, 0o100755)
    assert (renamed.kind, renamed.old_path, renamed.path) == (ChangeKind.RENAMED, "old name", "new name")
    assert display_name("a\\b\u202e") == "a\\\\b\\u202e"
    with pytest.raises(ValueError, match="unexpected"):
        parse_raw(b"garbage\0x\0")
