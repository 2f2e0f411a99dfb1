"""Settings of the host-side git layer: which repositories a dispatch may name, and how git runs."""

from __future__ import annotations

from pydantic import BaseModel, Field, field_validator

from outpost.sandbox.egress_policy import normalize_host

DEFAULT_PROTECTED_BRANCHES = ("main", "master", "trunk", "develop", "production", "release/*", "releases/*")


class GitSettings(BaseModel):
    """How the worker fetches repositories into its mirror cache and prepares workspaces from them."""

    allow_http: bool = False
    """Accept `http://` repository URLs (plain text: a network attacker can change what is fetched)."""
    allow_local: bool = False
    """Accept `file://` URLs and absolute paths on the worker's host (tests and on-premises setups only:
    any tenant could then read any repository the worker can read)."""
    allow_private_network: bool = False
    """Accept hosts that are IP literals or resolve to loopback, private or otherwise non-public
    addresses (on-premises git servers). Off, a repository URL cannot reach the worker's own network."""
    allowed_hosts: list[str] = Field(default_factory=list)
    """Host names repository URLs may name (exact names, any port); empty: any public host."""
    fetch_timeout_s: float = Field(default=900.0, gt=0)
    """Longest a fetch into the mirror cache may take (a first fetch downloads the whole history)."""
    local_timeout_s: float = Field(default=300.0, gt=0)
    """Longest one local git command may take (checking a workspace out, capturing its changes)."""
    max_fetch_bytes: int = Field(default=8 * 1024**3, ge=1024 * 1024)
    """Largest file one fetch may write (in practice: the pack it receives); past it the fetch fails."""
    max_patch_bytes: int = Field(default=512 * 1024**2, ge=1024)
    """Largest patch captured from a workspace; a run that changed more gets an error instead."""
    checkout_workers: int = Field(default=1, ge=0, le=64)
    """Processes git uses to write a checkout (`checkout.workers`; 0: one per CPU). One is fastest from
    an uncompressed mirror (see `uncompressed_mirrors`); more help when inflating objects dominates."""
    uncompressed_mirrors: bool = True
    """Keep mirrors' packs uncompressed (a background repack after fetches that brought much new data):
    checkouts then copy objects instead of inflating them, several times faster, for somewhat more disk
    (deltas are kept, so history stays small)."""
    protected_branches: list[str] = Field(default_factory=lambda: list(DEFAULT_PROTECTED_BRANCHES))
    """Branches a run may never push to (fnmatch globs, matched ignoring case)."""
    push_author_name: str = Field(default="Outpost", min_length=1)
    """Author and committer name of the commits a run pushes."""
    push_author_email: str = Field(default="outpost@localhost", min_length=1)
    """Author and committer email of the commits a run pushes."""

    @field_validator("allowed_hosts")
    @classmethod
    def hosts_are_names(cls, hosts: list[str]) -> list[str]:
        normalized = []
        for host in hosts:
            try:
                normalized.append(normalize_host(host))
            except ValueError as exc:
                raise ValueError(f"allowed_hosts entry {host!r}: {exc}") from None
        return normalized


class WorkspaceSettings(BaseModel):
    """Persistent workspaces (`OUTPOST_WORKSPACES__*`)."""

    quota_bytes: int = Field(default=10 * 1024**3, ge=1024 * 1024)
    """What one tenant's persistent workspaces may take on disk together. A run in one is capped at
    what the others leave (and at its disk limit)."""
