"""Servers whose sandbox a test wraps, to see or change what their worker starts."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

import outpost.app
from outpost.sandbox.base import Gate, Sandbox, SandboxRun, SandboxSpec
from outpost.settings import Settings


class WrappedSandbox:
    """A server's own sandbox; subclasses change `start`, everything else goes to `inner`."""

    def __init__(self, inner: Sandbox) -> None:
        self.inner = inner

    async def start(self, spec: SandboxSpec, gate: Gate | None = None) -> SandboxRun:
        return await self.inner.start(spec, gate)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def wrap_server_sandboxes(monkeypatch: pytest.MonkeyPatch, wrap: Callable[[Sandbox], WrappedSandbox]) -> None:
    """Servers this test starts from now on run their dispatches on `wrap(their own sandbox)`."""
    build = outpost.app.build_sandbox

    def wrapped(settings: Settings) -> Sandbox:
        return wrap(build(settings))  # type: ignore[return-value]

    monkeypatch.setattr(outpost.app, "build_sandbox", wrapped)
