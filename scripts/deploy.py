"""Deploy the TerminalRegistry, the Ledger and the SettlementAudit to a network.

ape run deploy --network ethereum:local:foundry
"""

from pathlib import Path

import click
from ape import convert, project
from ape.cli import ConnectedProviderCommand, account_option
from ape.types import AddressType

from posaudit.chain.deploy import EASIEST_TARGET, Deployment


@click.group()
def cli() -> None:
    """posaudit deployment."""


@cli.command(cls=ConnectedProviderCommand)
@account_option()
@click.option(
    "--bookkeeper", help="Address given the bookkeeper role (default: the deployer)."
)
@click.option(
    "--auditor", help="Address given the auditor role (default: the deployer)."
)
@click.option("--currency", default="EUR", show_default=True, help="ISO 4217 code.")
@click.option("--target", type=int, default=EASIEST_TARGET, help="Difficulty target.")
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    default=Path("out/deployment.json"),
    show_default=True,
    help="Where to save the addresses.",
)
def deploy(account, network, bookkeeper, auditor, currency, target, out):
    """Deploy the contracts, grant the roles and save the addresses."""
    if not network.is_local:
        click.confirm(f"Deploy to {network.choice} from {account.address}?", abort=True)

    registry = project.TerminalRegistry.deploy(account, sender=account)
    ledger = project.Ledger.deploy(
        account, registry, currency.encode("ascii"), target, sender=account
    )
    keeper = convert(bookkeeper, AddressType) if bookkeeper else account.address
    ledger.grantRole(ledger.BOOKKEEPER_ROLE(), keeper, sender=account)
    audit = project.SettlementAudit.deploy(account, ledger, registry, sender=account)
    ledger.grantRole(ledger.AUDIT_ROLE(), audit, sender=account)
    if auditor:
        audit.grantRole(
            audit.AUDITOR_ROLE(), convert(auditor, AddressType), sender=account
        )

    deployment = Deployment(
        network.chain_id, registry.address, ledger.address, audit.address, currency
    )
    deployment.save(out)
    click.echo(
        f"Deployed: registry {registry.address}, ledger {ledger.address}, "
        f"audit {audit.address} -> {out}"
    )
