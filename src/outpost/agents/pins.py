"""The agent CLIs Outpost installs, each pinned to the version its adapter and parser were checked against
(see the agent CLI reference): `outpost agents install` installs exactly these."""

from __future__ import annotations

from outpost.agents.base import Install

CLAUDE_INSTALL = Install(
    registry="npm", package="@anthropic-ai/claude-code", version="2.1.330", command="claude"
)
CODEX_INSTALL = Install(registry="npm", package="@openai/codex", version="0.169.0", command="codex")
GEMINI_INSTALL = Install(registry="npm", package="@google/gemini-cli", version="0.61.0", command="gemini")
GROK_INSTALL = Install(registry="npm", package="@vibe-kit/grok-cli", version="0.0.34", command="grok")
AIDER_INSTALL = Install(registry="pypi", package="aider-chat", version="0.86.2", command="aider")

ALL_INSTALLS: dict[str, Install] = {
    "claude": CLAUDE_INSTALL,
    "codex": CODEX_INSTALL,
    "gemini": GEMINI_INSTALL,
    "grok": GROK_INSTALL,
    "aider": AIDER_INSTALL,
}
"""Every installable agent by name (the `shell` agent needs nothing installed)."""

NPM_INSTALL_SCRIPTS: frozenset[str] = frozenset({CLAUDE_INSTALL.package})
"""npm packages whose install script must run: Claude Code's postinstall puts its native binary (from an
optional platform package) in place of a stub. npm 11 is moving to running only approved scripts."""
