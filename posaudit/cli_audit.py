"""``posaudit audit``: the auditor's queries of settlement blocks and records.

The queries live in :mod:`posaudit.auditor`; this face parses options and prints a
table, or JSON with ``--json``. The ape script ``scripts/audit.py`` shares its options
and printers. Exit codes: 0 done, 1 no such record, 2 the query could not run.
"""

from __future__ import annotations

import datetime as dt
import json
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import click
from rich.console import Console
from rich.table import Table

from posaudit.auditor import (
    DEFAULT_CONFIRMATIONS,
    DEFAULT_PAGE_SIZE,
    Auditor,
    BlockRow,
    RecordHistory,
    RecordRow,
)
from posaudit.chain.deploy import Deployment
from posaudit.exceptions import PosauditError
from posaudit.rules import StatusCode

DEFAULT_RPC = "http://127.0.0.1:8545"
DEFAULT_DEPLOYMENT = Path("out/deployment.json")

Command = TypeVar("Command", bound=Callable[..., Any])


class QueryFailedError(click.ClickException):
    """A query could not run; click prints the message on stderr."""

    exit_code = 2


class StatusCodeType(click.ParamType):
    """A status code given as its number or its name (``INSUFFICIENT_BALANCE``)."""

    name = "code"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> StatusCode:
        if isinstance(value, StatusCode):
            return value

        text = str(value).strip()
        try:
            if text.isdigit():
                return StatusCode(int(text))

            return StatusCode[text.upper().replace("-", "_")]
        except (KeyError, ValueError):
            self.fail(
                f"{value!r} is not a status code; give a number from 0 to "
                f"{max(StatusCode)} or a name such as INSUFFICIENT_BALANCE.",
                param,
                ctx,
            )


class MomentType(click.ParamType):
    """A point in time as ISO-8601 (UTC when no zone is given) or Unix seconds."""

    name = "time"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> int:
        if isinstance(value, int):
            return value

        text = str(value).strip()
        if text.isdigit():
            return int(text)

        try:
            moment = dt.datetime.fromisoformat(text)
        except ValueError:
            self.fail(
                f"{value!r} is neither ISO-8601 nor Unix seconds; give e.g. "
                "2030-03-04T12:00:00Z or 1898856000.",
                param,
                ctx,
            )

        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=dt.UTC)

        return int(moment.timestamp())


def _apply(
    command: Command, options: Sequence[Callable[[Command], Command]]
) -> Command:
    for option in reversed(options):
        command = option(command)

    return command


def query_options(command: Command) -> Command:
    """Options of every query: deployment file, finality, paging, output."""
    return _apply(
        command,
        [
            click.option(
                "--deployment",
                "deployment_path",
                type=click.Path(path_type=Path, dir_okay=False),
                default=DEFAULT_DEPLOYMENT,
                show_default=True,
                help="Deployment file written by 'ape run deploy deploy'.",
            ),
            click.option(
                "--confirmations",
                type=click.IntRange(min=0),
                default=DEFAULT_CONFIRMATIONS,
                show_default=True,
                help="Blocks mined on top of an event before rows on it are final.",
            ),
            click.option(
                "--page-size",
                type=click.IntRange(min=1),
                default=DEFAULT_PAGE_SIZE,
                show_default=True,
                help="Chain blocks per eth_getLogs request.",
            ),
            click.option(
                "--json", "as_json", is_flag=True, help="Print JSON, not a table."
            ),
        ],
    )


def block_range_options(command: Command) -> Command:
    """``--from-block`` and ``--to-block``: chain blocks, inclusive."""
    return _apply(
        command,
        [
            click.option(
                "--from-block",
                type=click.IntRange(min=0),
                help="First chain block (default: the deployment's).",
            ),
            click.option(
                "--to-block",
                type=click.IntRange(min=0),
                help="Last chain block (default: the head).",
            ),
        ],
    )


def record_filter_options(command: Command) -> Command:
    """The filters of ``records``; every one given must match."""
    return _apply(
        command,
        [
            click.option("--terminal", help="Terminal id, e.g. TERM0001."),
            click.option("--merchant", help="Merchant address."),
            click.option("--payer", help="Payer address."),
            click.option(
                "--code",
                type=StatusCodeType(),
                help="Status code, number or name (PROOF_MISMATCH: audit rejections).",
            ),
            click.option(
                "--since",
                type=MomentType(),
                help="Earliest time, inclusive: ISO-8601 or Unix seconds.",
            ),
            click.option(
                "--until",
                type=MomentType(),
                help="Latest time, exclusive: ISO-8601 or Unix seconds.",
            ),
        ],
    )


@contextmanager
def reporting() -> Iterator[None]:
    """Report a posaudit error as one message and exit code 2."""
    try:
        yield
    except PosauditError as err:
        raise QueryFailedError(str(err)) from err


def _short(value: bytes) -> str:
    return f"0x{value.hex()[:8]}…"


def _account(address: str | None) -> str:
    return "-" if address is None else f"{address[:8]}…{address[-4:]}"


def _time(timestamp: int) -> str:
    return dt.datetime.fromtimestamp(timestamp, dt.UTC).strftime("%Y-%m-%d %H:%M:%S")


def _final(final: bool) -> str:
    return "yes" if final else "[yellow]not yet[/]"


def _print_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2))


def print_blocks(rows: Sequence[BlockRow], as_json: bool) -> None:
    """Print settlement blocks as a table, or as JSON."""
    if as_json:
        _print_json([row.as_dict() for row in rows])
        return

    table = Table(title="Settlement blocks")
    for column in (
        "height",
        "hash",
        "records",
        "root",
        "chain block",
        "time",
        "tx",
        "audit",
        "final",
    ):
        table.add_column(column)

    for row in rows:
        audit = str(row.audit)
        if row.settled or row.rejected:
            audit += f" ({row.settled} settled, {row.rejected} rejected)"

        table.add_row(
            str(row.height),
            _short(row.block_hash),
            str(row.record_count),
            _short(row.records_root),
            str(row.block_number),
            _time(row.timestamp),
            _short(row.tx_hash),
            audit,
            _final(row.final),
        )

    Console().print(table)


def print_records(rows: Sequence[RecordRow], as_json: bool) -> None:
    """Print record outcomes as a table, or as JSON."""
    if as_json:
        _print_json([row.as_dict() for row in rows])
        return

    table = Table(title=f"Record outcomes ({len(rows)})")
    for column in (
        "terminal",
        "seq",
        "payer",
        "merchant",
        "amount",
        "code",
        "status",
        "block",
        "index",
        "tx",
        "time",
        "final",
    ):
        table.add_column(column, justify="right" if column == "amount" else "left")

    for row in rows:
        table.add_row(
            row.terminal_id,
            str(row.sequence),
            _account(row.payer),
            _account(row.merchant),
            f"{row.amount:,}",
            row.code.name,
            row.status.name.lower().replace("_", " "),
            _short(row.block_hash),
            str(row.index),
            _short(row.tx_hash),
            _time(row.timestamp),
            _final(row.final),
        )

    Console().print(table)


def print_history(history: RecordHistory, as_json: bool) -> None:
    """Print the steps of a record as a table, or as JSON; exit 1 without steps."""
    if as_json:
        _print_json(history.as_dict())
    elif history.steps:
        Console().print(_history_table(history))

    if not history.steps:
        click.echo(
            f"No record {history.terminal_id} #{history.sequence} on chain.", err=True
        )
        sys.exit(1)


def _history_table(history: RecordHistory) -> Table:
    table = Table(title=f"Record {history.terminal_id} #{history.sequence}")
    for column in (
        "step",
        "code",
        "block",
        "index",
        "payer",
        "merchant",
        "amount",
        "tx",
        "chain block",
        "time",
        "final",
    ):
        table.add_column(column, justify="right" if column == "amount" else "left")

    for step in history.steps:
        table.add_row(
            str(step.step),
            step.code.name,
            _short(step.block_hash),
            str(step.index),
            _account(step.payer),
            _account(step.merchant),
            f"{step.amount:,}",
            _short(step.tx_hash),
            str(step.block_number),
            _time(step.timestamp),
            _final(step.final),
        )

    return table


def _connect(
    rpc_url: str, deployment_path: Path, confirmations: int, page_size: int
) -> Auditor:
    return Auditor.connect(
        rpc_url,
        Deployment.load(deployment_path),
        confirmations=confirmations,
        page_size=page_size,
    )


rpc_option = click.option(
    "--rpc",
    "rpc_url",
    default=DEFAULT_RPC,
    show_default=True,
    help="JSON-RPC URL of a node of the deployment's chain.",
)


@click.group()
def audit() -> None:
    """Query settlement blocks and records from contract events, as an auditor."""


@audit.command()
@rpc_option
@query_options
@block_range_options
def blocks(
    rpc_url: str,
    deployment_path: Path,
    confirmations: int,
    page_size: int,
    as_json: bool,
    from_block: int | None,
    to_block: int | None,
) -> None:
    """Settlement blocks: height, hash, records, root, append tx, audit state."""
    with reporting():
        auditor = _connect(rpc_url, deployment_path, confirmations, page_size)
        rows = auditor.blocks(from_block, to_block)

    print_blocks(rows, as_json)


@audit.command()
@rpc_option
@query_options
@record_filter_options
def records(
    rpc_url: str,
    deployment_path: Path,
    confirmations: int,
    page_size: int,
    as_json: bool,
    **filters: Any,
) -> None:
    """Record outcomes (approved, rejected by rules, rejected by audit), filtered."""
    with reporting():
        auditor = _connect(rpc_url, deployment_path, confirmations, page_size)
        rows = auditor.records(**filters)

    print_records(rows, as_json)


@audit.command()
@rpc_option
@query_options
@click.argument("terminal")
@click.argument("sequence", type=click.IntRange(min=1))
def history(
    rpc_url: str,
    deployment_path: Path,
    confirmations: int,
    page_size: int,
    as_json: bool,
    terminal: str,
    sequence: int,
) -> None:
    """The story of record TERMINAL #SEQUENCE: appended, settled or rejected."""
    with reporting():
        auditor = _connect(rpc_url, deployment_path, confirmations, page_size)
        story = auditor.history(terminal, sequence)

    print_history(story, as_json)
