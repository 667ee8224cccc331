"""The ``posaudit`` command: parses arguments and prints; the work lives below."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from posaudit.cli_audit import audit
from posaudit.cli_gateway import serve_command
from posaudit.cli_receipts import receipt, verify
from posaudit.cli_simulate import DEFAULT, run_day, simulate
from posaudit.cli_terminal import terminal

if TYPE_CHECKING:
    from posaudit.demo import DemoResult

console = Console()


@click.group()
@click.option("-v", "--verbose", is_flag=True, help="Log what the services do.")
def cli(verbose: bool) -> None:
    """Auditable POS settlement on an EVM chain."""
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING)


cli.add_command(audit)
cli.add_command(receipt)
cli.add_command(verify)
cli.add_command(serve_command)
cli.add_command(terminal)
cli.add_command(simulate)


@cli.command()
@click.option("--rpc", "rpc_url", help="Node with unlocked accounts; anvil if omitted.")
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    default=Path("out"),
    show_default=True,
    help="Folder for the report, receipts, store, deployment and chain (replaced).",
)
@click.option(
    "--small",
    is_flag=True,
    help="The 37-record tour of every rejection kind, as a table, instead of a day.",
)
def demo(rpc_url: str | None, out: Path, small: bool) -> None:
    """A simulated business day (as 'posaudit simulate'), or the small tour."""
    if not small:
        sys.exit(run_day(console, DEFAULT, out, rpc_url))

    from posaudit.demo import run_demo

    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("appending and auditing blocks", total=None)
        result = run_demo(rpc_url, out, progress=lambda n: progress.advance(task, n))

    console.print(_records_table(result))
    console.print(_balances_table(result))
    mismatches = sum(not record.matches for record in result.records)
    console.print(
        f"{len(result.records)} records, {result.blocks} blocks "
        f"({result.blocks_complete} with SettlementComplete), "
        f"append {result.gas_used:,} gas, audit {result.audit_gas_used:,} gas; "
        + (
            "[green]every outcome and settlement matches the rules model[/]"
            if result.ok
            else f"[red]{mismatches} records differ from the rules model[/]"
        )
    )
    console.print(
        f"Store {out / 'posaudit.db'}, deployment {out / 'deployment.json'}, chain "
        f"{out / 'devnet-state.json'}: try 'posaudit audit blocks' next."
    )
    sys.exit(0 if result.ok else 1)


def _records_table(result: object) -> Table:
    table = Table(title="Settlement records")
    for column in (
        "record",
        "terminal",
        "seq",
        "payer",
        "amount",
        "block",
        "expected",
        "on chain",
        "settlement",
        "",
    ):
        table.add_column(column)

    for item in result.records:  # type: ignore[attr-defined]
        record = item.signed.record
        block = (
            f"#{item.block_height} ({item.block_size})" if item.block_height else "-"
        )
        expected = item.expected.name if item.expected is not None else "-"
        actual = (
            item.actual.name
            if item.actual is not None
            else (f"refused: {item.refused}")
        )
        table.add_row(
            item.label,
            record.terminal_id,
            str(record.sequence),
            item.payer,
            f"{record.amount:,}",
            block,
            expected,
            actual,
            item.settlement.name if item.settlement is not None else "-",
            "[green]ok[/]" if item.matches else "[red]DIFF[/]",
        )
    return table


def _balances_table(result: DemoResult) -> Table:
    table = Table(title="Balances (minor units)")
    for column in ("account", "on chain", "rules model"):
        table.add_column(column)

    for name, (chain, model) in result.balances.items():
        table.add_row(f"payer {name}", f"{chain:,}", f"{model:,}")
    for merchant, (chain, model) in result.credits.items():
        table.add_row(f"settled to {merchant[:10]}…", f"{chain:,}", f"{model:,}")
    table.add_row("still held", f"{result.held:,}", "0")
    return table


@cli.command()
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    default=Path("out/bench.json"),
    show_default=True,
    help="Where to write the figures.",
)
def bench(out: Path) -> None:
    """Measure every figure of the brief beside its baseline: gas from real receipts
    on anvil, the audit tree and RSA checks, end-to-end settlement."""
    from posaudit.bench import run_bench
    from posaudit.bench_report import format_value, markdown, rows

    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("benchmarking", total=None)
        figures = run_bench(progress=lambda: progress.advance(task))

    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(figures, indent=2) + "\n")
    report = out.with_suffix(".md")
    report.write_text(markdown(figures))
    every = Table(title=f"Figures ({out})")
    every.add_column("figure")
    every.add_column("value", justify="right")
    for name, value in figures.items():
        every.add_row(name, format_value(value))
    wide = Console(width=max(console.width, 150))
    wide.print(every)
    verdict = Table(title=f"Against the brief's targets ({report})")
    for column in ("figure", "value", "baseline (same run)", "ratio", "target", "met"):
        verdict.add_column(column)
    for row in rows(figures):
        verdict.add_row(*row)
    wide.print(verdict)
