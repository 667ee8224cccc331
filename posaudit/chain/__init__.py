"""The one room that talks to a node: devnet lifecycle, artifacts, deployment."""

from posaudit.chain.artifacts import load_contract_type
from posaudit.chain.deploy import Deployment, connect, deploy
from posaudit.chain.devnet import Devnet

__all__ = ["Deployment", "Devnet", "connect", "deploy", "load_contract_type"]
