"""A simulated business day end to end, as ``posaudit simulate`` runs it.

ape run simulate day --records 300 --duration 20
ape run simulate day --network ethereum:local:foundry

On a network whose node ape reaches over HTTP (foundry's anvil), the day runs there
with the node's unlocked accounts; on ape's in-process test network it starts an
anvil of its own, as ``posaudit simulate`` does.
"""

import sys
from dataclasses import replace
from pathlib import Path

import click
from ape.cli import ConnectedProviderCommand
from rich.console import Console

from posaudit.cli_simulate import DEFAULT, run_day, scenario_options


@click.group()
def cli() -> None:
    """posaudit simulated business day."""


@cli.command(cls=ConnectedProviderCommand)
@scenario_options
def day(
    provider,
    seed: int,
    duration: float,
    records: int,
    out: Path,
    rpc_url: str | None,
) -> None:
    """Simulate a business day end to end and judge every record's outcome."""
    node = rpc_url or getattr(provider, "http_uri", None)
    scenario = replace(DEFAULT, seed=seed, duration=duration, records=records)
    sys.exit(run_day(Console(), scenario, out, node))
