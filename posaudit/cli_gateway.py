"""``posaudit serve``: run the gateway, the data upload endpoint of terminals.

The app is built by :func:`posaudit.gateway.create_chain_app` and served by
:func:`posaudit.gateway.serve`; this face only finds the deployment and the chain.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import click
from web3 import Web3

from posaudit.chain.deploy import Deployment, open_chain
from posaudit.exceptions import PosauditError
from posaudit.gateway import create_chain_app, serve

DEFAULT_DB = Path("out/posaudit.db")
DEFAULT_DEPLOYMENT = Path("out/deployment.json")
DEFAULT_DEVNET_STATE = Path("out/devnet-state.json")


@contextmanager
def chain(rpc_url: str | None, devnet_state: Path) -> Iterator[Web3]:
    """A connection to ``rpc_url``, or to the local devnet kept in ``devnet_state``.

    Raises:
        click.ClickException: Neither a node nor a devnet state is there.
    """
    if rpc_url is None and not devnet_state.exists():
        raise click.ClickException(
            f"No chain: pass --rpc URL, or run 'posaudit demo' first, which leaves "
            f"the devnet's chain in {devnet_state}."
        )

    with open_chain(rpc_url, state=None if rpc_url else devnet_state) as w3:
        yield w3


def _endpoint(w3: Web3) -> str:
    return str(getattr(w3.provider, "endpoint_uri", "unknown"))


@contextmanager
def reporting() -> Iterator[None]:
    """Report a posaudit error as one message and exit code 1."""
    try:
        yield
    except PosauditError as err:
        raise click.ClickException(str(err)) from err


def deployment_option(command: click.Command) -> click.Command:
    """``--deployment``: the file written by ``ape run deploy deploy`` or the demo."""
    return click.option(
        "--deployment",
        "deployment_path",
        type=click.Path(path_type=Path, dir_okay=False),
        default=DEFAULT_DEPLOYMENT,
        show_default=True,
        help="Deployment file (chain id and contract addresses).",
    )(command)


def chain_options(command: click.Command) -> click.Command:
    """``--rpc`` and ``--devnet-state``: which node to talk to."""
    command = click.option(
        "--devnet-state",
        type=click.Path(path_type=Path, dir_okay=False),
        default=DEFAULT_DEVNET_STATE,
        show_default=True,
        help="Without --rpc: the devnet chain to load (and save on exit).",
    )(command)
    return click.option(
        "--rpc",
        "rpc_url",
        help="Node of the deployment's chain; default: the local devnet.",
    )(command)


@click.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind.")
@click.option(
    "--port",
    type=click.IntRange(0, 65_535),
    default=8000,
    show_default=True,
    help="Port to bind.",
)
@click.option(
    "--db",
    type=click.Path(path_type=Path, dir_okay=False),
    default=DEFAULT_DB,
    show_default=True,
    help="The store whose outbox the gateway fills.",
)
@deployment_option
@chain_options
def serve_command(
    host: str,
    port: int,
    db: Path,
    deployment_path: Path,
    rpc_url: str | None,
    devnet_state: Path,
) -> None:
    """Run the gateway: terminals upload signed records to it."""
    with reporting():
        deployment = Deployment.load(deployment_path)
        with chain(rpc_url, devnet_state) as w3:
            app = create_chain_app(db, w3, deployment)
            click.echo(
                f"Gateway for Ledger {deployment.ledger} on chain {deployment.chain_id}"
                f" (node {_endpoint(w3)}) at http://{host}:{port}, store {db}; API at"
                " /openapi.json."
            )
            serve(app, host, port)
