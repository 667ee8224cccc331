"""A deployment on a real anvil, one terminal and funded payers: for service tests."""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric import rsa
from web3 import Web3

from posaudit.audit import AuditClient
from posaudit.chain.deploy import Deployment, connect, deploy
from posaudit.chain.devnet import Devnet
from posaudit.ledger import LedgerClient
from posaudit.records import Domain, SettlementRecord, SignedRecord, encode_record
from posaudit.signing import sign

MERCHANT = "0x" + "3e" * 20
PAYERS = ["0x" + f"{0xA0 + i:02x}" * 20 for i in range(4)]
DEPOSIT = 100_000


@dataclass
class World:
    w3: Web3
    deployment: Deployment
    ledger: LedgerClient
    audit: AuditClient
    key: rsa.RSAPrivateKey
    sequences: Iterator[int]

    def record(self, amount: int, payer: str = PAYERS[0]) -> SignedRecord:
        now = int(self.w3.eth.get_block("latest")["timestamp"])
        record = SettlementRecord(
            domain=Domain(self.deployment.chain_id, self.deployment.ledger),
            record_id=os.urandom(16),
            terminal_id="TERM0001",
            sequence=next(self.sequences),
            payer=payer,
            merchant=MERCHANT,
            amount=amount,
            currency="EUR",
            timestamp=now,
            valid_until=now + 3_600,
        )
        return SignedRecord(record, sign(self.key, encode_record(record)))

    def credit(self) -> int:
        ledger = self.ledger.ledger.functions
        return int(ledger.creditOf(Web3.to_checksum_address(MERCHANT)).call())


@contextmanager
def running_world(terminal_key: rsa.RSAPrivateKey) -> Iterator[World]:
    """Start anvil, deploy, register ``TERM0001`` and fund the payers."""
    with Devnet() as devnet:
        w3 = connect(devnet.rpc_url)
        admin, bookkeeper = w3.eth.accounts[:2]
        deployment = deploy(w3, admin, bookkeeper)
        ledger = LedgerClient(w3, deployment, admin, bookkeeper)
        ledger.register_terminal("TERM0001", MERCHANT, terminal_key.public_key())
        for payer in PAYERS:
            ledger.open_account(payer, 50_000, 1990_01_01)
            ledger.deposit(payer, DEPOSIT)
        audit = AuditClient(w3, deployment, admin)
        yield World(w3, deployment, ledger, audit, terminal_key, itertools.count(1))
