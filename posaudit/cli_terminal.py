"""``posaudit terminal``: a terminal's key pair, its registration and its uploads.

``keygen`` writes the key pair (the private key encrypted with a passphrase from
``POSAUDIT_KEY_PASSPHRASE`` or a prompt); ``register`` puts the public key in the
registry on chain (operator); ``submit`` signs and uploads records through
:class:`posaudit.terminal.TerminalClient`, taking sequence numbers from the sequence
file beside the key unless they are given.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.table import Table
from web3 import Web3

from posaudit.chain.deploy import Deployment
from posaudit.cli_gateway import chain, chain_options, deployment_option, reporting
from posaudit.exceptions import FieldRangeError, UploadRejectedError
from posaudit.ledger import LedgerClient
from posaudit.records import Domain, SignedRecord
from posaudit.signing import (
    generate_key,
    load_private_key,
    load_public_key,
    save_key_pair,
)
from posaudit.terminal import (
    DEFAULT_TIMEOUT,
    DEFAULT_VALIDITY,
    SequenceFile,
    TerminalClient,
)
from posaudit.upload import MAX_BATCH_RECORDS

PASSPHRASE_VARIABLE = "POSAUDIT_KEY_PASSPHRASE"
DEFAULT_KEY_DIR = Path("keys")
DEFAULT_GATEWAY = "http://127.0.0.1:8000"

# Members a line of a --file may have; payer, merchant and amount are required.
LINE_FIELDS = frozenset(
    {
        "payer",
        "merchant",
        "amount",
        "currency",
        "sequence",
        "timestamp",
        "valid_until",
        "goods_category",
        "operator_id",
        "record_id",
    }
)

console = Console()


def _terminal_id(ctx: click.Context, param: click.Parameter, value: str) -> str:
    if len(value) != 8 or not all(0x21 <= ord(c) <= 0x7E for c in value):
        raise click.BadParameter(
            f"{value!r} is not 8 printable ASCII characters, such as TERM0001."
        )

    return value


def _passphrase(confirm: bool) -> bytes:
    value = os.environ.get(PASSPHRASE_VARIABLE)
    if value is None:
        value = click.prompt(
            "Key passphrase", hide_input=True, confirmation_prompt=confirm
        )

    if not value:
        raise click.ClickException(
            f"The key passphrase is empty; set {PASSPHRASE_VARIABLE} or type one."
        )

    return value.encode("utf-8")


def terminal_id_option(command: click.Command) -> click.Command:
    """``--terminal-id``: 8 printable ASCII characters."""
    return click.option(
        "--terminal-id",
        required=True,
        callback=_terminal_id,
        help="The terminal's id, 8 printable ASCII characters (e.g. TERM0001).",
    )(command)


def key_dir_option(command: click.Command) -> click.Command:
    """``--key-dir``: where ``<id>.key.pem``, ``<id>.pub.pem`` and the sequence are."""
    return click.option(
        "--key-dir",
        type=click.Path(path_type=Path, file_okay=False),
        default=DEFAULT_KEY_DIR,
        show_default=True,
        help="Folder of the terminal's key files and sequence file.",
    )(command)


@click.group()
def terminal() -> None:
    """A terminal's key pair, its registration and its uploads."""


@terminal.command()
@click.option(
    "--out",
    "out_dir",
    type=click.Path(path_type=Path, file_okay=False),
    required=True,
    help="Folder for <id>.key.pem (encrypted, mode 0600) and <id>.pub.pem.",
)
@terminal_id_option
def keygen(out_dir: Path, terminal_id: str) -> None:
    """Make a terminal's RSA-2048 key pair; the private key is encrypted."""
    private_path = out_dir / f"{terminal_id}.key.pem"
    if private_path.exists():
        raise click.ClickException(
            f"{private_path} exists; a terminal keeps its key. Remove it first to "
            "replace it (and register the new key)."
        )

    passphrase = _passphrase(confirm=True)
    private, public = save_key_pair(generate_key(), out_dir, terminal_id, passphrase)
    click.echo(f"Wrote {private} and {public}.")


@terminal.command()
@terminal_id_option
@key_dir_option
@click.option("--merchant", required=True, help="The merchant's account address.")
@click.option(
    "--operator",
    help="Unlocked account with the operator role; default: the node's first.",
)
@deployment_option
@chain_options
def register(
    terminal_id: str,
    key_dir: Path,
    merchant: str,
    operator: str | None,
    deployment_path: Path,
    rpc_url: str | None,
    devnet_state: Path,
) -> None:
    """Register a terminal's public key in the registry on chain (operator)."""
    public_path = key_dir / f"{terminal_id}.pub.pem"
    if not Web3.is_address(merchant):
        raise click.BadParameter(
            f"{merchant!r} is not an address.", param_hint="merchant"
        )

    with reporting():
        try:
            key = load_public_key(public_path.read_bytes())
        except OSError as err:
            raise click.ClickException(
                f"Cannot read {public_path}: {err}. Run 'posaudit terminal keygen'."
            ) from err

        deployment = Deployment.load(deployment_path)
        with chain(rpc_url, devnet_state) as w3:
            sender = operator or w3.eth.accounts[0]
            LedgerClient(w3, deployment, sender, sender).register_terminal(
                terminal_id, merchant, key
            )

    click.echo(
        f"Registered {terminal_id} for merchant {merchant} in {deployment.registry}."
    )


def read_lines(path: Path) -> list[dict[str, Any]]:
    """The records of a JSON lines file, one object per non-empty line.

    Raises:
        click.ClickException: A line is not an object of :data:`LINE_FIELDS`.
    """
    specs: list[dict[str, Any]] = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue

        try:
            spec = json.loads(line)
        except ValueError as err:
            raise click.ClickException(f"{path}:{number} is not JSON: {err}.") from err

        if not isinstance(spec, dict):
            raise click.ClickException(f"{path}:{number} is not a JSON object.")

        unknown = sorted(set(spec) - LINE_FIELDS)
        missing = sorted({"payer", "merchant", "amount"} - set(spec))
        if unknown or missing:
            raise click.ClickException(
                f"{path}:{number}: unknown fields {unknown}, missing fields {missing};"
                f" a line has {', '.join(sorted(LINE_FIELDS))}."
            )

        specs.append(spec)

    return specs


def _signed(
    client: TerminalClient,
    specs: Sequence[dict[str, Any]],
    sequences: SequenceFile,
    currency: str,
) -> list[SignedRecord]:
    needed = sum("sequence" not in spec for spec in specs)
    following = sequences.take(needed) if needed else 0
    records = []
    for spec in specs:
        fields = dict(spec)
        if "sequence" not in fields:
            fields["sequence"] = following
            following += 1

        if "record_id" in fields:
            fields["record_id"] = bytes.fromhex(str(fields["record_id"]))

        fields.setdefault("currency", currency)
        records.append(client.make_record(**fields))

    return records


@terminal.command()
@terminal_id_option
@key_dir_option
@click.option(
    "--gateway", default=DEFAULT_GATEWAY, show_default=True, help="The gateway's URL."
)
@deployment_option
@click.option("--payer", help="Payer address (one record).")
@click.option("--merchant", help="Merchant address (one record).")
@click.option("--amount", type=click.IntRange(min=1), help="Minor units (one record).")
@click.option("--currency", help="ISO 4217 code; default: the deployment's.")
@click.option("--goods-category", type=click.IntRange(0, 65_535), default=0)
@click.option("--operator-id", type=click.IntRange(0, 2**32 - 1), default=0)
@click.option(
    "--valid-for",
    type=click.IntRange(min=0),
    default=DEFAULT_VALIDITY,
    show_default=True,
    help="Seconds the record may settle after it was taken.",
)
@click.option(
    "--sequence",
    type=click.IntRange(min=1),
    help="Sequence number (one record); default: the sequence file's next.",
)
@click.option(
    "--file",
    "records_file",
    type=click.Path(path_type=Path, dir_okay=False, exists=True),
    help="JSON lines, one record per line: payer, merchant, amount and optionally "
    "currency, sequence, timestamp, valid_until, goods_category, operator_id, "
    "record_id.",
)
@click.option(
    "--batch/--one-by-one",
    default=True,
    show_default=True,
    help="With --file: batches of up to 1,000, or one request per record.",
)
@click.option(
    "--timeout", type=float, default=DEFAULT_TIMEOUT, show_default=True, help="Seconds."
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON, not a table.")
def submit(
    terminal_id: str,
    key_dir: Path,
    gateway: str,
    deployment_path: Path,
    payer: str | None,
    merchant: str | None,
    amount: int | None,
    currency: str | None,
    goods_category: int,
    operator_id: int,
    valid_for: int,
    sequence: int | None,
    records_file: Path | None,
    batch: bool,
    timeout: float,
    as_json: bool,
) -> None:
    """Sign records with the terminal's key and upload them to the gateway.

    Exit code 0 when every record is in the outbox, 1 when one was refused.
    """
    if records_file is None:
        if payer is None or merchant is None or amount is None:
            raise click.UsageError("Give --payer, --merchant and --amount, or --file.")

        specs: list[dict[str, Any]] = [
            {
                "payer": payer,
                "merchant": merchant,
                "amount": amount,
                "goods_category": goods_category,
                "operator_id": operator_id,
            }
        ]
        if sequence is not None:
            specs[0]["sequence"] = sequence
    else:
        specs = read_lines(records_file)

    with reporting():
        deployment = Deployment.load(deployment_path)
        key_path = key_dir / f"{terminal_id}.key.pem"
        try:
            pem = key_path.read_bytes()
        except OSError as err:
            raise click.ClickException(f"Cannot read {key_path}: {err}.") from err

        key = load_private_key(pem, _passphrase(confirm=False))
        domain = Domain(deployment.chain_id, deployment.ledger)
        sequences = SequenceFile.beside(key_path, terminal_id)
        with TerminalClient(gateway, terminal_id, key, domain, timeout) as client:
            now = int(time.time())
            for spec in specs:
                spec.setdefault("timestamp", now)
                if isinstance(spec["timestamp"], int):
                    spec.setdefault("valid_until", spec["timestamp"] + valid_for)

            try:
                records = _signed(
                    client, specs, sequences, currency or deployment.currency
                )
            except (FieldRangeError, ValueError, TypeError) as err:
                raise click.ClickException(f"Cannot build a record: {err}") from err

            rows = _upload(client, records, batch and records_file is not None)

    _print(rows, as_json)
    if any(row["outcome"] == "refused" for row in rows):
        raise SystemExit(1)


def _upload(
    client: TerminalClient, records: Sequence[SignedRecord], batch: bool
) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    if batch:
        for start in range(0, len(records), MAX_BATCH_RECORDS):
            chunk = records[start : start + MAX_BATCH_RECORDS]
            answer = client.submit_batch(chunk)
            for outcome in answer.outcomes:
                rows.append(_row(chunk[outcome.index], outcome.created, outcome.error))

        return rows

    for signed in records:
        try:
            rows.append(_row(signed, client.submit(signed).created, None))
        except UploadRejectedError as err:
            rows.append(_row(signed, None, err))

    return rows


def _row(
    signed: SignedRecord, created: bool | None, error: UploadRejectedError | None
) -> dict[str, Any]:
    record = signed.record
    row: dict[str, Any] = {
        "record_id": record.record_id.hex(),
        "sequence": record.sequence,
        "amount": record.amount,
    }
    if error is not None:
        row.update(outcome="refused", code=error.code, message=str(error))
    else:
        row.update(outcome="stored" if created else "repeat", code=None, message="")

    return row


def _print(rows: Sequence[dict[str, Any]], as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(list(rows), indent=2))
        return

    table = Table(title="Uploads")
    for column in ("record", "seq", "amount", "outcome", "code", "message"):
        table.add_column(column)

    for row in rows:
        outcome = row["outcome"]
        color = "red" if outcome == "refused" else "green"
        table.add_row(
            row["record_id"],
            str(row["sequence"]),
            f"{row['amount']:,}",
            f"[{color}]{outcome}[/]",
            row["code"] or "",
            row["message"],
        )

    console.print(table)
