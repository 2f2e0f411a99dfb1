"""`outpost usage`: what your tenant (with an admin key: every tenant) used and paid, from the ledger."""

from __future__ import annotations

from datetime import datetime

import click
from rich import box
from rich.table import Table
from rich.text import Text

from outpost.cli import display
from outpost.cli.client import ApiClient
from outpost.schemas.usage import UsageAmounts, UsageGroup, UsageReport

GROUPINGS = ("agent", "model", "day", "tenant")
HEADERS = ("TOKENS IN", "OUT", "CACHE READ", "CACHE WRITE", "VCPU-S", "GB-S", "STORAGE GB-H",
           "TOKENS $", "COMPUTE $", "STORAGE $", "TOTAL $")  # fmt: skip
NO_KEY = {"agent": "(storage)", "model": "(compute, storage)", "day": "", "tenant": ""}
"""How a group without a key is shown: the rows that have none (storage has no agent; compute and storage
no model)."""


@click.command("usage")
@click.option(
    "--group-by", type=click.Choice(GROUPINGS), default="agent", show_default=True,
    help="Sum by agent, model, UTC day, or tenant (tenant needs an admin key).",
)  # fmt: skip
@click.option("--since", type=click.DateTime(["%Y-%m-%d"]), help="First UTC day counted (YYYY-MM-DD).")
@click.option("--until", type=click.DateTime(["%Y-%m-%d"]), help="Last UTC day counted (YYYY-MM-DD).")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def usage(group_by: str, since: datetime | None, until: datetime | None, as_json: bool) -> None:
    """Tokens, compute, storage and dollars, per group and in total."""
    with ApiClient.from_environment() as api:
        report = api.get_usage(group_by, since.date() if since else None, until.date() if until else None)
    if as_json:
        display.print_json(report)
        return
    display.show(usage_table(report))
    display.note(f"prices {report.prices}; dollars are sums of ledger rows, each rounded to $0.000001")


def usage_table(report: UsageReport) -> Table:
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, show_footer=True)
    table.add_column(report.group_by.upper(), footer="TOTAL", no_wrap=True)
    for header, footer in zip(HEADERS, _cells(report.total), strict=True):
        table.add_column(header, footer=footer, justify="right", no_wrap=True)
    for group in report.groups:
        table.add_row(Text(_label(report, group)), *(Text(cell) for cell in _cells(group)))
    return table


def _label(report: UsageReport, group: UsageGroup) -> str:
    if group.key is None:
        return NO_KEY[report.group_by]
    return f"{group.name} ({group.key})" if group.name else group.key


def _cells(amounts: UsageAmounts) -> list[str]:
    return [
        f"{amounts.input_tokens:,}", f"{amounts.output_tokens:,}",
        f"{amounts.cache_read_tokens:,}", f"{amounts.cache_write_tokens:,}",
        f"{amounts.vcpu_seconds:,.1f}", f"{amounts.memory_gb_seconds:,.1f}",
        f"{amounts.storage_gb_hours:,.2f}",
        f"{amounts.tokens_usd:,.6f}", f"{amounts.compute_usd:,.6f}", f"{amounts.storage_usd:,.6f}",
        f"{amounts.cost_usd:,.6f}",
    ]  # fmt: skip
