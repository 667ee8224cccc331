"""``posaudit simulate``: a simulated business day, its verdict, receipts and report.

The day, the verdict and the report live in :mod:`posaudit.simulation`,
:mod:`posaudit.simulate` and :mod:`posaudit.report`; this face parses options, shows
progress and prints the summary. Exit codes: 0 every record matched its ground
truth, 1 differences (listed), 2 the day could not run.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
from rich.console import Console, Group
from rich.live import Live
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
from rich.table import Table
from rich.text import Text

from posaudit.exceptions import PosauditError
from posaudit.simulate import RunProgress, SimulationResult
from posaudit.simulation import Scenario

DEFAULT = Scenario()

_PHASES = {
    "set-up": "planning the day, signing records, opening accounts",
    "day": "the business day",
    "settling": "settling the last records",
    "verdict": "reading every outcome from the chain",
    "receipts": "writing the last receipts",
}


def scenario_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """The options that shape a day: seed, duration, records, output folder."""
    options = (
        click.option(
            "--seed", type=int, default=DEFAULT.seed, show_default=True, help="Seed."
        ),
        click.option(
            "--duration",
            type=click.FloatRange(min=5),
            default=DEFAULT.duration,
            show_default=True,
            help="Seconds the business day 08:00-20:00 is compressed into.",
        ),
        click.option(
            "--records",
            type=click.IntRange(min=50),
            default=DEFAULT.records,
            show_default=True,
            help="Submissions of the day, good and bad.",
        ),
        click.option(
            "--out",
            type=click.Path(path_type=Path, file_okay=False),
            default=Path("out"),
            show_default=True,
            help="Folder for the report, receipts, store, deployment and chain "
            "(replaced).",
        ),
        click.option(
            "--rpc", "rpc_url", help="Node with unlocked accounts; anvil if omitted."
        ),
    )
    for option in reversed(options):
        command = option(command)

    return command


class _Display:
    """Progress bars for records submitted, appended, settled and receipts, and a
    live line with the network state and the latest block sizes."""

    def __init__(self, console: Console) -> None:
        self.progress = Progress(
            TextColumn("{task.description:>10}"),
            BarColumn(),
            MofNCompleteColumn(),
            console=console,
        )
        self.tasks = {
            name: self.progress.add_task(name, total=None)
            for name in ("submitted", "appended", "settled", "receipts")
        }
        self.line = Text()
        self.live = Live(
            Group(self.progress, self.line), console=console, refresh_per_second=8
        )

    def update(self, status: RunProgress) -> None:
        totals = {
            "submitted": status.submissions,
            "appended": status.expected_on_chain,
            "settled": status.expected_on_chain,
            "receipts": status.expected_on_chain,
        }
        done = {
            "submitted": status.submitted,
            "appended": status.appended,
            "settled": status.settled,
            "receipts": status.receipts,
        }
        for name, task in self.tasks.items():
            self.progress.update(task, total=totals[name] or None, completed=done[name])

        phase = _PHASES.get(status.phase, status.phase)
        if status.phase not in ("day", "settling"):
            self.line.plain = phase
            return

        sizes = " ".join(str(size) for size in status.recent_blocks) or "-"
        state = status.state.upper() if status.state == "congested" else status.state
        self.line.plain = (
            f"{phase} | {status.clock} | network {state} | "
            f"{status.block_rate:.2f} blocks/s | busiest link "
            f"{status.link_rate / 1000:,.0f} kB/s | last blocks: {sizes}"
        )


def run_day(
    console: Console, scenario: Scenario, out: Path, rpc_url: str | None
) -> int:
    """Run the day with progress on ``console``, write the report, print the
    summary; returns the exit code."""
    from posaudit.report import write_report
    from posaudit.simulate import run_simulation

    display = _Display(console)
    try:
        with display.live:
            result = run_simulation(scenario, out, display.update, rpc_url)
            display.line.plain = "writing the report"
            json_path, html_path = write_report(result, out)
            display.line.plain = "done"
    except PosauditError as err:
        console.print(f"\n[red]The simulated day could not run:[/] {err}")
        return 2

    console.print()

    print_summary(console, result)
    console.print(
        f"Report: [bold]{html_path}[/] (open it in a browser), figures in "
        f"{json_path}, receipts in {out / 'receipts'}/; the chain stays in "
        f"{out / 'devnet-state.json'} for 'posaudit audit' and 'posaudit verify'."
    )
    return 0 if result.ok else 1


def print_summary(console: Console, result: SimulationResult) -> None:
    """The verdict and its figures, as tables."""
    summary = result.summary()
    outcomes = Table(title="Records by outcome")
    for column in ("outcome", "expected", "on chain or gateway"):
        outcomes.add_column(column, justify="left" if column == "outcome" else "right")

    names = sorted(set(summary["expected_outcomes"]) | set(summary["actual_outcomes"]))
    for name in names:
        expected = summary["expected_outcomes"].get(name, 0)
        actual = summary["actual_outcomes"].get(name, 0)
        style = "" if expected == actual else "red"
        outcomes.add_row(name, f"{expected:,}", f"{actual:,}", style=style)

    console.print(outcomes)
    blocks, gas = summary["blocks"], summary["gas"]
    figures = Table(title="The day in figures")
    figures.add_column("figure")
    figures.add_column("value", justify="right")
    for mode in ("normal", "aggregate"):
        entry = blocks[mode]
        figures.add_row(
            f"{mode} blocks",
            f"{entry['blocks']:,} blocks, {entry['records']:,} records, "
            f"{entry['gas_per_record']:,.0f} gas/record",
        )

    network = summary["network_seconds"]
    figures.add_row(
        "network state",
        f"normal {network.get('normal', 0):.1f} s, congested "
        f"{network.get('congested', 0):.1f} s ({summary['state_changes']} changes, "
        f"{summary['state_changes_on_chain']} recorded on chain)",
    )
    figures.add_row(
        "gas (append + audit)",
        f"{gas['total']:,} for {gas['records_on_chain']:,} records, "
        f"{gas['per_record']:,.0f}/record",
    )
    baseline = gas["one_block_per_record_total"]
    if baseline:
        figures.add_row(
            "one block per record",
            f"{baseline:,} ({gas['one_block_per_record_gas_per_record']:,.0f}/record,"
            f" measured at n = 1): {gas['saving_factor']:.1f} x more",
        )

    settlement = summary["settlement"]
    figures.add_row(
        "settlement",
        f"{settlement['blocks_complete']} blocks with SettlementComplete, "
        f"{settlement['settled']:,} settled, {settlement['rejected_by_rules']:,} "
        f"rejected by the rules, {settlement['held_after_audit']:,} left held",
    )
    latency = summary["latency_seconds"]
    if latency:
        figures.add_row(
            "audit latency",
            f"p50 {latency['p50']:.1f} s, p99 {latency['p99']:.1f} s, "
            f"max {latency['max']:.1f} s (accepted -> settled)",
        )

    phases = ", ".join(f"{k} {v:.0f} s" for k, v in summary["phases_seconds"].items())
    figures.add_row("run time", phases)
    console.print(figures)
    if result.differences:
        differences = Table(title=f"{len(result.differences)} differences", style="red")
        for column in ("record", "kind", "expected", "actual"):
            differences.add_column(column)

        for item in result.differences[:30]:
            differences.add_row(item.subject, item.kind, item.expected, item.actual)

        console.print(differences)

    records = summary["records"]
    if result.ok:
        console.print(
            f"[green]Verdict: all {records:,} submissions matched their expected "
            "outcome; every balance and credit matches the rules model; every block "
            "completed its settlement.[/]"
        )
    else:
        console.print(
            f"[red]Verdict: {len(result.differences)} differences from the ground "
            f"truth, {result.held:,} left held, {result.blocks_complete} of "
            f"{len(result.blocks)} blocks complete.[/]"
        )


@click.command("simulate")
@scenario_options
def simulate(
    seed: int, duration: float, records: int, out: Path, rpc_url: str | None
) -> None:
    """Simulate a business day end to end and judge every record's outcome."""
    console = Console()
    scenario = dataclasses.replace(
        DEFAULT, seed=seed, duration=duration, records=records
    )
    sys.exit(run_day(console, scenario, out, rpc_url))
