"""Showing the live versions of a provider key or git credential (`outpost providers versions`,
`outpost git-credentials versions`): numbers and dates only, never a value."""

from __future__ import annotations

from collections.abc import Sequence

import click
from rich import box
from rich.table import Table
from rich.text import Text

from outpost.cli import display
from outpost.schemas.secret_versions import SecretVersionList, SecretVersionRead


def show_versions(found: Sequence[SecretVersionRead], *, as_json: bool) -> None:
    if as_json:
        click.echo(SecretVersionList(items=list(found)).model_dump_json())
        return
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
    for header in ("VERSION", "SET", "IN FORCE"):
        table.add_column(header, no_wrap=True)
    for row in found:
        table.add_row(
            Text(str(row.version)), Text(display.when(row.created_at)), Text("yes" if row.in_force else "")
        )
    display.show(table)
