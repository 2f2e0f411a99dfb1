"""A run may push only to a branch name git accepts, given without `refs/`, that is not protected."""

from __future__ import annotations

import pytest

from outpost.errors import InvalidInput
from outpost.workspaces.push import check_push_branch
from outpost.workspaces.settings import GitSettings

SETTINGS = GitSettings()


@pytest.mark.parametrize("branch", ["outpost/fix-login", "feature", "a@b", "user/x.y", "release-notes"])
def test_ordinary_branch_names_are_accepted_as_they_are(branch: str) -> None:
    assert check_push_branch(branch, SETTINGS) == branch


@pytest.mark.parametrize(
    ("branch", "why"),
    [
        ("", "empty"),
        ("-x", "starts with '-'"),
        ("a..b", "'..'"),
        ("foo.lock", "'.lock'"),
        ("foo.lock/bar", "'.lock'"),
        ("refs/heads/x", "without 'refs/'"),
        ("HEAD", "not a branch name"),
        ("/x", "start with '/'"),
        ("x/", "end with '/'"),
        ("a//b", "'//'"),
        (".hidden", "starting with '.'"),
        ("a b", "no spaces"),
        ("a@{1}", "'@{'"),
        ("a~1", "~^:?*["),
        ("x" * 300, "longer than"),
    ],
)
def test_names_git_refuses_are_refused_with_the_reason(branch: str, why: str) -> None:
    with pytest.raises(InvalidInput, match=r"push branch .* refused") as refused:
        check_push_branch(branch, SETTINGS)
    assert why in refused.value.detail
    assert refused.value.field == "push.branch"


@pytest.mark.parametrize(
    "branch", ["main", "master", "trunk", "develop", "production", "release/1.0", "releases/2024", "Main"]
)
def test_protected_branches_are_refused_whatever_their_case(branch: str) -> None:
    with pytest.raises(InvalidInput, match="is protected") as refused:
        check_push_branch(branch, SETTINGS)
    assert refused.value.field == "push.branch"


def test_the_protected_list_comes_from_the_settings() -> None:
    settings = GitSettings(protected_branches=["prod-*"])
    assert check_push_branch("main", settings) == "main"
    with pytest.raises(InvalidInput, match="matches 'prod-\\*'"):
        check_push_branch("prod-eu", settings)
