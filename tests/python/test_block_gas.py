"""Block sizes against the chain's gas: measured on anvil, not assumed.

The costliest records an append can carry are ones from terminals and merchants new
to the Ledger: each writes a terminal's first sequence number and a merchant's first
hold, storage slots that go from zero to a value. A block of 512 of them needs about
twice what the bookkeeper may give one transaction (half the block gas limit): it
runs out of gas, changes nothing, and the records go again in smaller blocks. Every
block that lands stays under half the block gas limit and under the bookkeeper's own
bound for its size, the bound it sends with instead of an estimate.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from web3 import Web3

from posaudit.audit import AuditClient
from posaudit.bookkeeper import (
    APPEND_GAS_PER_BLOCK,
    APPEND_GAS_PER_RECORD,
    AUDIT_GAS_PER_BLOCK,
    AUDIT_GAS_PER_RECORD,
    Bookkeeper,
)
from posaudit.chain.deploy import Deployment, connect, deploy
from posaudit.chain.devnet import Devnet
from posaudit.exceptions import BlockOutOfGasError
from posaudit.ledger import LedgerClient, terminal_bytes
from posaudit.records import Domain, SettlementRecord, SignedRecord, encode_record
from posaudit.rules import StatusCode
from posaudit.signing import public_numbers, sign
from posaudit.store import Store

RECORDS = 512
WARM_TERMINALS = 8
BALANCE = 10**12


@dataclass
class Chain:
    w3: Web3
    deployment: Deployment
    ledger: LedgerClient
    audit: AuditClient

    @property
    def half_block_gas_limit(self) -> int:
        return int(self.w3.eth.get_block("latest")["gasLimit"]) // 2


@pytest.fixture
def chain() -> Iterator[Chain]:
    with Devnet() as devnet:
        w3 = connect(devnet.rpc_url)
        operator, bookkeeper = w3.eth.accounts[:2]
        deployment = deploy(w3, operator, bookkeeper)
        yield Chain(
            w3,
            deployment,
            LedgerClient(w3, deployment, operator, bookkeeper),
            AuditClient(w3, deployment, operator),
        )


def address(kind: str, index: int) -> str:
    return "0x" + Web3.keccak(text=f"{kind} {index}")[:20].hex()


def send_all(chain: Chain, calls: Iterable[Any]) -> None:
    """Send set-up calls without waiting for each, then wait for them all."""
    operator = chain.ledger.operator
    hashes = [call.transact({"from": operator, "gas": 500_000}) for call in calls]
    for transaction_hash in hashes:
        assert chain.w3.eth.wait_for_transaction_receipt(transaction_hash)["status"]


def set_up(chain: Chain, key: rsa.RSAPrivateKey, terminals: int) -> None:
    numbers = public_numbers(key.public_key())
    registry = chain.ledger.registry.functions
    ledger = chain.ledger.ledger.functions
    send_all(
        chain,
        (
            registry.registerTerminal(
                terminal_bytes(f"GAS{i:05d}"),
                Web3.to_checksum_address(address("merchant", i % terminals)),
                numbers.modulus,
                numbers.exponent,
            )
            for i in range(terminals)
        ),
    )
    payers = [Web3.to_checksum_address(address("payer", i)) for i in range(RECORDS)]
    send_all(chain, (ledger.openAccount(p, BALANCE, 1980_01_01, True) for p in payers))
    send_all(chain, (ledger.deposit(p, BALANCE) for p in payers))


def records(
    chain: Chain, key: rsa.RSAPrivateKey, terminals: int, first_sequence: int = 1
) -> list[SignedRecord]:
    domain = Domain(chain.deployment.chain_id, chain.deployment.ledger)
    now = int(chain.w3.eth.get_block("latest")["timestamp"])
    signed = []
    for index in range(RECORDS):
        terminal = index % terminals
        record = SettlementRecord(
            domain=domain,
            record_id=os.urandom(16),
            terminal_id=f"GAS{terminal:05d}",
            sequence=first_sequence + index // terminals,
            payer=address("payer", index),
            merchant=address("merchant", terminal),
            amount=1_000 + index,
            currency="EUR",
            timestamp=now,
            valid_until=now + 86_400,
        )
        signed.append(SignedRecord(record, sign(key, encode_record(record))))
    return signed


def settle_all(
    chain: Chain, path: Path, batch: list[SignedRecord]
) -> list[tuple[int, int, int, int]]:
    """Put ``batch`` on chain through the bookkeeper; per block: its records, append
    gas, audit gas and the bookkeeper's bound for an append of its size."""
    blocks = []
    with Store(path) as store:
        store.add_many(batch)
        bookkeeper = Bookkeeper(store, chain.ledger, chain.audit)
        while store.outbox_size():
            try:
                done = bookkeeper.step(RECORDS)
            except BlockOutOfGasError:
                continue  # nothing changed; the records go again, fewer at a time

            assert done is not None
            appended, audited = done
            assert {o.code for o in appended.outcomes} == {StatusCode.APPROVED}
            size = appended.header.record_count
            bound = bookkeeper.append_gas(size)
            blocks.append((size, appended.gas_used, audited.gas_used, bound))
    return blocks


def test_largest_blocks_of_new_terminals_stay_under_half_the_block_gas_limit(
    chain, terminal_key, tmp_path
):
    """512 terminals and merchants new to the Ledger: the costliest records."""
    set_up(chain, terminal_key, RECORDS)
    batch = records(chain, terminal_key, RECORDS)

    blocks = settle_all(chain, tmp_path / "posaudit.db", batch)

    sizes = [size for size, *_ in blocks]
    assert sum(sizes) == RECORDS
    assert max(sizes) < RECORDS  # 512 of them did not fit
    half = chain.half_block_gas_limit
    for size, append_gas, audit_gas, bound in blocks:
        assert append_gas <= bound <= half
        assert append_gas <= APPEND_GAS_PER_BLOCK + APPEND_GAS_PER_RECORD * size
        assert audit_gas <= AUDIT_GAS_PER_BLOCK + AUDIT_GAS_PER_RECORD * size
    print(f"new terminals: blocks {sizes}, gas {[g for _, g, _, _ in blocks]}")


def test_largest_block_of_known_terminals_fits_in_one(chain, terminal_key, tmp_path):
    """The bookkeeper's largest block from terminals the Ledger knows: one block."""
    set_up(chain, terminal_key, WARM_TERMINALS)
    settle_all(chain, tmp_path / "warm.db", records(chain, terminal_key, 8)[:8])
    batch = records(chain, terminal_key, WARM_TERMINALS, first_sequence=2)

    blocks = settle_all(chain, tmp_path / "posaudit.db", batch)

    ((size, append_gas, audit_gas, bound),) = blocks
    assert size == RECORDS
    assert append_gas <= bound <= chain.half_block_gas_limit
    assert append_gas + audit_gas < chain.half_block_gas_limit
    print(f"known terminals: 512 records, append {append_gas:,}, audit {audit_gas:,}")


def test_audit_that_runs_out_of_gas_settles_its_records_one_by_one(
    chain, terminal_key, tmp_path, monkeypatch
):
    set_up(chain, terminal_key, WARM_TERMINALS)
    batch = records(chain, terminal_key, WARM_TERMINALS)[:4]
    with Store(tmp_path / "posaudit.db") as store:
        store.add_many(batch)
        bookkeeper = Bookkeeper(store, chain.ledger, chain.audit)
        monkeypatch.setattr(bookkeeper, "audit_gas", lambda records: 60_000)

        appended, audited = bookkeeper.step(4)

    assert audited.settled == 4
    assert len(audited.transactions) == 4
    assert chain.audit.audit_of(appended.block_hash).complete
