"""Deployment and record factories for the contract tests (eth-tester or anvil)."""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from posaudit.blocks import BlockHeader, build_header
from posaudit.records import Domain, SettlementRecord, SignedRecord, encode_record
from posaudit.signing import generate_key, public_numbers, sign

# 2030-03-04 12:00:00 UTC: every test starts its clock here, after the real time.
NOON = 1_898_856_000
DAY = 86_400
EASIEST_TARGET = 2**256 - 1
CURRENCY = "EUR"


@pytest.fixture(scope="session")
def owner(accounts: Any) -> Any:
    return accounts[0]


@pytest.fixture(scope="session")
def bookkeeper(accounts: Any) -> Any:
    return accounts[1]


@pytest.fixture(scope="session")
def outsider(accounts: Any) -> Any:
    return accounts[2]


@pytest.fixture(scope="session")
def merchant(accounts: Any) -> Any:
    return accounts[3]


@pytest.fixture(scope="session")
def other_merchant(accounts: Any) -> Any:
    return accounts[4]


@pytest.fixture(scope="session")
def payers() -> list[str]:
    return [f"0x{index:040x}" for index in range(0xA11CE, 0xA11CE + 8)]


@pytest.fixture(scope="session")
def terminal_keys() -> dict[str, rsa.RSAPrivateKey]:
    return {"TERM0001": generate_key(), "TERM0002": generate_key()}


@pytest.fixture(scope="session")
def registry(
    project: Any,
    owner: Any,
    merchant: Any,
    other_merchant: Any,
    terminal_keys: dict[str, rsa.RSAPrivateKey],
) -> Any:
    registry = project.TerminalRegistry.deploy(owner, sender=owner)
    for terminal_id, key in terminal_keys.items():
        numbers = public_numbers(key.public_key())
        shop = merchant if terminal_id == "TERM0001" else other_merchant
        registry.registerTerminal(
            terminal_id.encode(), shop, numbers.modulus, numbers.exponent, sender=owner
        )
    return registry


@pytest.fixture(scope="session")
def ledger(
    project: Any, owner: Any, bookkeeper: Any, registry: Any, payers: list[str]
) -> Any:
    ledger = project.Ledger.deploy(
        owner, registry, CURRENCY.encode(), EASIEST_TARGET, sender=owner
    )
    ledger.grantRole(ledger.BOOKKEEPER_ROLE(), bookkeeper, sender=owner)
    for payer in payers:
        ledger.openAccount(payer, 50_000, 1990_05_17, True, sender=owner)
        ledger.deposit(payer, 100_000, sender=owner)
    return ledger


@pytest.fixture(scope="session")
def audit(project: Any, owner: Any, ledger: Any, registry: Any) -> Any:
    """The audit module, holding the Ledger's audit role; ``owner`` is its auditor."""
    audit = project.SettlementAudit.deploy(owner, ledger, registry, sender=owner)
    ledger.grantRole(ledger.AUDIT_ROLE(), audit, sender=owner)
    return audit


@pytest.fixture(scope="session")
def domain(chain: Any, ledger: Any) -> Domain:
    return Domain(chain.chain_id, ledger.address)


@pytest.fixture
def make_record(
    domain: Domain,
    payers: list[str],
    merchant: Any,
    terminal_keys: dict[str, rsa.RSAPrivateKey],
) -> Callable[..., SignedRecord]:
    """Factory: a record signed by its terminal; sequence numbers count up per test."""
    sequences = {terminal_id: itertools.count(1) for terminal_id in terminal_keys}

    def factory(**overrides: Any) -> SignedRecord:
        terminal_id = overrides.get("terminal_id", "TERM0001")
        fields: dict[str, Any] = {
            "domain": domain,
            "record_id": os.urandom(16),
            "terminal_id": terminal_id,
            "sequence": next(sequences.setdefault(terminal_id, itertools.count(1))),
            "payer": payers[0],
            "merchant": merchant.address,
            "amount": 1_000,
            "currency": CURRENCY,
            "timestamp": NOON - 60,
            "valid_until": NOON + 3_600,
        }
        fields.update(overrides)
        record = SettlementRecord(**fields)
        key = terminal_keys.get(terminal_id) or terminal_keys["TERM0001"]
        return SignedRecord(record, sign(key, encode_record(record)))

    return factory


@dataclass
class Appended:
    """A block on chain and what the Ledger said about its records."""

    receipt: Any
    header: BlockHeader
    codes: list[int]
    approved: list[Any]
    rejected: list[Any]


@pytest.fixture
def append(chain: Any, ledger: Any, bookkeeper: Any) -> Callable[..., Appended]:
    """Factory: put leaves on chain as one block mined at chain time ``at``.

    ``at`` defaults to NOON, or one second after the head once the chain is past it.
    """

    def next_header(leaves: Sequence[bytes], at: int) -> BlockHeader:
        prev_hash = bytes(ledger.head()[0])
        return build_header(prev_hash, leaves, at, int(ledger.target()))

    def factory(
        records: Sequence[SignedRecord],
        at: int | None = None,
        header: BlockHeader | None = None,
        leaves: bytes | None = None,
        sender: Any = None,
    ) -> Appended:
        leaf_list = [record.leaf for record in records]
        if at is None:
            at = max(NOON, chain.blocks.head.timestamp + 1)

        header = header or next_header(leaf_list, at)
        chain.pending_timestamp = at
        receipt = ledger.appendBlock(
            header.as_tuple(),
            b"".join(leaf_list) if leaves is None else leaves,
            sender=sender or bookkeeper,
        )
        approved = list(receipt.events.filter(ledger.TransactionApproved))
        rejected = list(receipt.events.filter(ledger.TransactionRejected))
        codes = [0] * header.record_count
        for log in rejected:
            codes[log.index] = int(log.code)
        return Appended(receipt, header, codes, approved, rejected)

    factory.next_header = next_header  # type: ignore[attr-defined]
    return factory
