"""The bookkeeper on a real anvil: blocks appended, proofs kept, every block audited.

The claim-8 cases damage the bookkeeper's own store (a proof, a record's bytes) after
the block is on chain, as a failing disk or a tampering operator would: the audit must
notice, reject exactly that record with its hold returned to the payer the chain saw,
and still settle the rest of the block.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from web3.logs import DISCARD

from posaudit.audit import SettlementStatus
from posaudit.bookkeeper import Bookkeeper
from posaudit.chain.deploy import contract_at
from posaudit.records import SettlementRecord, encode_record
from posaudit.rules import StatusCode
from posaudit.signing import sign
from posaudit.store import Store

from .world import PAYERS, World


@pytest.fixture
def bookkeeper(world: World, tmp_path: Path) -> Iterator[Bookkeeper]:
    with Store(tmp_path / "posaudit.db") as store:
        yield Bookkeeper(store, world.ledger, world.audit)


def events(world: World, receipt_hash: bytes, name: str) -> list[Any]:
    receipt = world.w3.eth.get_transaction_receipt(receipt_hash)
    event = getattr(world.audit.audit.events, name)()
    return [entry["args"] for entry in event.process_receipt(receipt, errors=DISCARD)]


def test_settled_block_pays_the_merchant_and_completes(world, bookkeeper):
    records = [world.record(100 * (i + 1), PAYERS[i % 4]) for i in range(4)]
    records.append(world.record(999_999))  # insufficient balance
    credit = world.credit()

    appended, audited = bookkeeper.settle(records)

    assert [o.code for o in appended.outcomes] == [StatusCode.APPROVED] * 4 + [
        StatusCode.INSUFFICIENT_BALANCE
    ]
    assert world.credit() - credit == 1_000
    assert audited.settled == 4
    assert audited.rejected == ()
    complete = events(world, audited.transactions[0], "SettlementComplete")
    assert [(c["settled"], c["rejected"]) for c in complete] == [(4, 0)]
    statuses = [world.audit.status_of(appended.block_hash, i) for i in range(5)]
    assert statuses == [SettlementStatus.SETTLED] * 4 + [
        SettlementStatus.REJECTED_BY_RULES
    ]
    block = bookkeeper.store.block(appended.block_hash)
    assert block.audit_transaction == audited.transactions[0]


def test_damaged_proof_rejects_that_record_and_settles_the_others(world, bookkeeper):
    """Claim 8: the proof the bookkeeper kept no longer matches the chain."""
    records = [world.record(10 * (i + 1), PAYERS[i]) for i in range(4)]
    appended = bookkeeper.append(records)
    bookkeeper.store._db.execute(
        "UPDATE records SET proof = ? WHERE record_id = ?",
        (bytes(32) * 2, records[2].record.record_id),
    )
    balances = [world.ledger.balance_of(payer) for payer in PAYERS]
    credit = world.credit()

    audited = bookkeeper.audit(appended.block_hash)

    assert audited.rejected == (2,)
    assert audited.settled == 3
    assert world.ledger.balance_of(PAYERS[2]) == balances[2] + 30
    assert [world.ledger.balance_of(p) for p in PAYERS[:2]] == balances[:2]
    assert world.credit() - credit == 10 + 20 + 40
    assert world.audit.status_of(appended.block_hash, 2) == (
        SettlementStatus.REJECTED_BY_AUDIT
    )
    assert world.audit.audit_of(appended.block_hash).complete
    rejected = [
        args
        for tx in audited.transactions
        for args in events(world, tx, "TransactionRejected")
    ]
    assert [(r["index"], r["code"]) for r in rejected] == [
        (2, StatusCode.PROOF_MISMATCH)
    ]


def test_damaged_record_is_refunded_as_the_chain_saw_it(world, bookkeeper):
    """A stored record whose amount changed cannot redirect or resize the refund."""
    records = [world.record(40, PAYERS[0]), world.record(50, PAYERS[1])]
    appended = bookkeeper.append(records)
    damaged = SettlementRecord(
        **{**records[1].record.__dict__, "amount": 5_000, "payer": PAYERS[3]}
    )
    bookkeeper.store._db.execute(
        "UPDATE records SET encoding = ? WHERE record_id = ?",
        (encode_record(damaged), records[1].record.record_id),
    )
    balances = [world.ledger.balance_of(payer) for payer in PAYERS]

    audited = bookkeeper.audit(appended.block_hash)

    assert audited.rejected == (1,)
    assert world.ledger.balance_of(PAYERS[1]) == balances[1] + 50
    assert world.ledger.balance_of(PAYERS[3]) == balances[3]


def test_second_audit_of_a_block_moves_nothing(world, bookkeeper):
    records = [world.record(7)]
    appended, _ = bookkeeper.settle(records)
    credit = world.credit()

    again = bookkeeper.audit(appended.block_hash)

    assert world.credit() == credit
    assert events(world, again.transactions[0], "SettlementComplete") == []


def test_every_block_ends_complete_even_when_all_records_fail_the_rules(
    world, bookkeeper
):
    appended, audited = bookkeeper.settle([world.record(999_999)])

    complete = events(world, audited.transactions[0], "SettlementComplete")
    assert [(c["settled"], c["rejected"]) for c in complete] == [(0, 0)]
    assert world.audit.audit_of(appended.block_hash).complete


def test_dispute_view_answers_for_stored_records(world, bookkeeper, other_key):
    record = world.record(5)
    forged = sign(other_key, record.encoding)

    assert world.audit.verify_signature(record.encoding, record.signature)
    assert not world.audit.verify_signature(record.encoding, forged)


def test_contracts_are_wired(world):
    ledger = contract_at(world.w3, "Ledger", world.deployment.ledger)
    role = ledger.functions.AUDIT_ROLE().call()

    assert ledger.functions.hasRole(role, world.deployment.audit).call()
