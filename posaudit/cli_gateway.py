"""``posaudit serve``: run the service (gateway, bookkeeper loop, network monitor).

The work is :class:`posaudit.service.Service`; this face reads the configuration and
finds the chain.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import click
from web3 import Web3

from posaudit.chain.deploy import open_chain
from posaudit.chain.devnet import Devnet
from posaudit.config import Config, load_config
from posaudit.exceptions import PosauditError
from posaudit.service import Service

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
@click.option(
    "--config",
    "config_path",
    type=click.Path(path_type=Path, dir_okay=False, exists=True),
    help="TOML configuration; POSAUDIT_<SECTION>_<KEY> variables override it.",
)
@click.option("--host", help="Address to bind (default 127.0.0.1).")
@click.option("--port", type=click.IntRange(0, 65_535), help="Port (default 8000).")
@click.option(
    "--db",
    type=click.Path(path_type=Path, dir_okay=False),
    help=f"The store (default {DEFAULT_DB}).",
)
@click.option(
    "--deployment",
    "deployment_path",
    type=click.Path(path_type=Path, dir_okay=False),
    help=f"Deployment file (default {DEFAULT_DEPLOYMENT}).",
)
@click.option("--rpc", "rpc_url", help="Node; default: the local devnet.")
def serve_command(
    config_path: Path | None,
    host: str | None,
    port: int | None,
    db: Path | None,
    deployment_path: Path | None,
    rpc_url: str | None,
) -> None:
    """Run the service: the gateway, the bookkeeper loop and the network monitor."""
    with reporting():
        config = _with_overrides(
            load_config(config_path), host, port, db, deployment_path, rpc_url
        )
        with node_url(config) as url:
            service = Service(config, url)
            click.echo(
                f"Gateway for Ledger {service.deployment.ledger} on chain"
                f" {service.deployment.chain_id} (node {url}) at"
                f" http://{config.gateway.host}:{config.gateway.port}, store"
                f" {config.store.path}; API at /openapi.json."
            )
            service.serve()


def _with_overrides(
    config: Config,
    host: str | None,
    port: int | None,
    db: Path | None,
    deployment_path: Path | None,
    rpc_url: str | None,
) -> Config:
    gateway = dataclasses.replace(
        config.gateway,
        host=host or config.gateway.host,
        port=config.gateway.port if port is None else port,
    )
    chain = dataclasses.replace(
        config.chain,
        rpc_url=rpc_url or config.chain.rpc_url,
        deployment=deployment_path or config.chain.deployment,
    )
    store = dataclasses.replace(config.store, path=db or config.store.path)
    return dataclasses.replace(config, gateway=gateway, chain=chain, store=store)


@contextmanager
def node_url(config: Config) -> Iterator[str]:
    """The configured node, or the local devnet started from its state file.

    Raises:
        click.ClickException: Neither a node nor a devnet state is there.
    """
    if config.chain.rpc_url:
        yield config.chain.rpc_url
        return

    state = config.chain.devnet_state
    if not state.exists():
        raise click.ClickException(
            f"No chain: pass --rpc URL, or run 'posaudit demo' first, which leaves "
            f"the devnet's chain in {state}."
        )

    with Devnet(state=state) as devnet:
        yield devnet.rpc_url
