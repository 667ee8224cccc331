"""Auditor queries over the network ape connects to: blocks, records, histories.

ape run audit records --terminal TERM0001 --network ethereum:local:foundry
"""

from pathlib import Path
from typing import Any

import click
from ape import chain
from ape.cli import ConnectedProviderCommand

from posaudit.auditor import Auditor
from posaudit.chain.deploy import Deployment
from posaudit.cli_audit import (
    block_range_options,
    print_blocks,
    print_history,
    print_records,
    query_options,
    record_filter_options,
    reporting,
)


def _auditor(deployment_path: Path, confirmations: int, page_size: int) -> Auditor:
    return Auditor(
        chain.provider.web3,
        Deployment.load(deployment_path),
        confirmations=confirmations,
        page_size=page_size,
    )


@click.group()
def cli() -> None:
    """posaudit auditor queries over the connected network."""


@cli.command(cls=ConnectedProviderCommand)
@query_options
@block_range_options
def blocks(
    deployment_path: Path,
    confirmations: int,
    page_size: int,
    as_json: bool,
    from_block: int | None,
    to_block: int | None,
) -> None:
    """Settlement blocks with their audit state."""
    with reporting():
        rows = _auditor(deployment_path, confirmations, page_size).blocks(
            from_block, to_block
        )

    print_blocks(rows, as_json)


@cli.command(cls=ConnectedProviderCommand)
@query_options
@record_filter_options
def records(
    deployment_path: Path,
    confirmations: int,
    page_size: int,
    as_json: bool,
    **filters: Any,
) -> None:
    """Record outcomes, filtered by terminal, merchant, payer, code and time."""
    with reporting():
        rows = _auditor(deployment_path, confirmations, page_size).records(**filters)

    print_records(rows, as_json)


@cli.command(cls=ConnectedProviderCommand)
@query_options
@click.argument("terminal")
@click.argument("sequence", type=click.IntRange(min=1))
def history(
    deployment_path: Path,
    confirmations: int,
    page_size: int,
    as_json: bool,
    terminal: str,
    sequence: int,
) -> None:
    """The story of record TERMINAL #SEQUENCE: appended, settled or rejected."""
    with reporting():
        story = _auditor(deployment_path, confirmations, page_size).history(
            terminal, sequence
        )

    print_history(story, as_json)
