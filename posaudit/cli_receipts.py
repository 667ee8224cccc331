"""``posaudit receipt`` and ``posaudit verify``: write a record's receipt, check one.

The work lives in :mod:`posaudit.receipts`; this face parses options and prints.

``receipt`` exits 0 when it wrote the receipt, 1 when the record has none (not in the
store, in no block yet, its terminal has no registered key, or the stored copy fails
the receipt's own offline checks), 2 when it could not run (files, node). ``verify``
exits 0 when every check it ran passed, 1 when a check failed or the document is not
a receipt, 2 when a check could not be done.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table
from web3 import Web3

from posaudit.chain.deploy import Deployment, open_chain, rpc_session
from posaudit.exceptions import (
    MalformedReceiptError,
    PosauditError,
    ReceiptError,
    RecordNotFoundError,
)
from posaudit.receipts import (
    Check,
    Receipt,
    Verdict,
    build_receipt,
    verdict_of,
    verify_receipt,
)
from posaudit.store import Store

DEFAULT_DB = Path("out/posaudit.db")
DEFAULT_DEPLOYMENT = Path("out/deployment.json")
DEFAULT_STATE = Path("out/devnet-state.json")
DEFAULT_RECEIPTS = Path("out/receipts")
DEFAULT_TIMEOUT = 10.0

EXIT_CODES = {Verdict.PASSED: 0, Verdict.FAILED: 1, Verdict.COULD_NOT_CHECK: 2}

_COLOURS = {
    Verdict.PASSED: "green",
    Verdict.FAILED: "red",
    Verdict.NOT_CHECKED: "dim",
    Verdict.COULD_NOT_CHECK: "yellow",
}


class CannotRunError(click.ClickException):
    """The command could not run; click prints the message on stderr."""

    exit_code = 2


def _parse_record_id(ctx: click.Context, param: click.Parameter, value: str) -> bytes:
    text = value[2:] if value.lower().startswith("0x") else value
    try:
        record_id = bytes.fromhex(text)
    except ValueError:
        record_id = b""

    if len(record_id) != 16:
        raise click.BadParameter(
            f"{value!r} is not a record id; give its 16 bytes as 32 hex digits.",
            ctx,
            param,
        )

    return record_id


@click.command()
@click.argument("record_id", callback=_parse_record_id)
@click.option(
    "--db",
    "db_path",
    type=click.Path(path_type=Path, dir_okay=False),
    default=DEFAULT_DB,
    show_default=True,
    help="The store the bookkeeper wrote.",
)
@click.option(
    "--deployment",
    "deployment_path",
    type=click.Path(path_type=Path, dir_okay=False),
    default=DEFAULT_DEPLOYMENT,
    show_default=True,
    help="Deployment file of the contracts the record was settled with.",
)
@click.option("--rpc", "rpc_url", help="JSON-RPC URL of a node of the chain.")
@click.option(
    "--state",
    type=click.Path(path_type=Path, dir_okay=False),
    default=DEFAULT_STATE,
    show_default=True,
    help="Devnet state file, used when --rpc is not given.",
)
@click.option(
    "--out",
    "out_path",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Where to write the receipt [default: out/receipts/<record_id>.json].",
)
def receipt(
    record_id: bytes,
    db_path: Path,
    deployment_path: Path,
    rpc_url: str | None,
    state: Path,
    out_path: Path | None,
) -> None:
    """Write the receipt of record RECORD_ID (32 hex digits) for its merchant."""
    if not db_path.is_file():
        raise CannotRunError(
            f"No store at {db_path}; pass --db or run `make demo` first."
        )

    if rpc_url is None and not state.is_file():
        raise CannotRunError(
            f"No devnet state at {state}: pass --rpc URL of a node of the "
            "deployment's chain, or run `make demo` first."
        )

    try:
        deployment = Deployment.load(deployment_path)
        with (
            Store(db_path) as store,
            open_chain(rpc_url, None if rpc_url else state) as w3,
        ):
            written = build_receipt(store, record_id, w3, deployment)
    except (RecordNotFoundError, ReceiptError) as err:
        click.echo(str(err), err=True)
        sys.exit(1)
    except PosauditError as err:
        raise CannotRunError(str(err)) from err

    failed = [
        check for check in verify_receipt(written) if check.verdict is Verdict.FAILED
    ]
    if failed:
        for check in failed:
            click.echo(f"FAILED {check.name}: {check.message}", err=True)

        click.echo(
            "The store's copy of the record does not verify; no receipt written.",
            err=True,
        )
        sys.exit(1)

    path = out_path or DEFAULT_RECEIPTS / f"{record_id.hex()}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(written.to_json())
    click.echo(
        f"Receipt of record 0x{record_id.hex()} ({written.code.name}, "
        f"{written.settlement.name}) written to {path}"
    )


@click.command()
@click.argument(
    "receipt_path",
    metavar="RECEIPT",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
)
@click.option("--rpc", "rpc_url", help="JSON-RPC URL of a node of the receipt's chain.")
@click.option(
    "--state",
    type=click.Path(path_type=Path, dir_okay=False),
    help=f"Devnet state file to start a local node from [default: {DEFAULT_STATE}].",
)
@click.option(
    "--offline",
    is_flag=True,
    help="Check only what the receipt alone allows; ask no node.",
)
@click.option(
    "--deployment",
    "trusted_path",
    type=click.Path(exists=True, path_type=Path, dir_okay=False),
    help="A deployment file you trust: the receipt's chain and addresses must match.",
)
@click.option(
    "--timeout",
    type=click.FloatRange(min=0.1),
    default=DEFAULT_TIMEOUT,
    show_default=True,
    help="Seconds to wait for each answer of the node.",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON, not a table.")
def verify(
    receipt_path: Path,
    rpc_url: str | None,
    state: Path | None,
    offline: bool,
    trusted_path: Path | None,
    timeout: float,
    as_json: bool,
) -> None:
    """Check the receipt RECEIPT: exit 0 all passed, 1 failed, 2 could not check."""
    if rpc_url is not None and state is not None:
        raise click.UsageError("Pass --rpc or --state, not both.")

    if offline and (rpc_url is not None or state is not None):
        raise click.UsageError("--offline asks no node; drop --rpc and --state.")

    try:
        parsed = Receipt.from_json(receipt_path.read_bytes())
    except MalformedReceiptError as err:
        _report(receipt_path, [Check("format", Verdict.FAILED, str(err))], as_json)
        sys.exit(1)

    try:
        trusted = Deployment.load(trusted_path) if trusted_path else None
    except PosauditError as err:
        raise CannotRunError(str(err)) from err

    if offline:
        checks = verify_receipt(parsed, None, trusted)
    elif rpc_url is not None:
        provider = Web3.HTTPProvider(
            rpc_url,
            request_kwargs={"timeout": timeout},
            session=rpc_session(rpc_url),
            exception_retry_configuration=None,
        )
        checks = verify_receipt(parsed, Web3(provider), trusted)
    else:
        checks = _verify_on_devnet(parsed, state or DEFAULT_STATE, trusted)

    _report(receipt_path, checks, as_json)
    if offline and not as_json:
        click.echo("Offline: the root and the key were not checked against the chain.")

    sys.exit(EXIT_CODES[verdict_of(checks)])


def _verify_on_devnet(
    parsed: Receipt, state: Path, trusted: Deployment | None
) -> list[Check]:
    if not state.is_file():
        raise CannotRunError(
            f"No devnet state at {state}: pass --rpc URL of a node of the receipt's "
            "chain, --state PATH, or --offline."
        )

    try:
        with open_chain(None, state) as w3:
            return verify_receipt(parsed, w3, trusted)
    except PosauditError as err:
        raise CannotRunError(f"Cannot start a devnet from {state}: {err}") from err


def _report(path: Path, checks: list[Check], as_json: bool) -> None:
    verdict = verdict_of(checks)
    if as_json:
        document = {
            "receipt": str(path),
            "verdict": str(verdict),
            "exit_code": EXIT_CODES[verdict],
            "checks": [check.as_dict() for check in checks],
        }
        click.echo(json.dumps(document, indent=2))
        return

    table = Table(title=f"Receipt {path}")
    table.add_column("check")
    table.add_column("verdict")
    table.add_column("detail")
    for check in checks:
        colour = _COLOURS[check.verdict]
        table.add_row(check.name, f"[{colour}]{check.verdict}[/]", check.message)

    Console().print(table)
    # One unreachable node leaves every chain check with the same message: say it once.
    unchecked: dict[str, list[str]] = {}
    for check in checks:
        if check.verdict is Verdict.FAILED:
            click.echo(f"FAILED {check.name}: {check.message}")
        elif check.verdict is Verdict.COULD_NOT_CHECK:
            unchecked.setdefault(check.message, []).append(check.name)

    for message, names in unchecked.items():
        click.echo(f"COULD NOT CHECK {', '.join(names)}: {message}")

    if verdict is Verdict.PASSED:
        click.echo("Every check that was run passed.")
