"""The Ledger on a real EVM: headers, rules, holds and events."""

from __future__ import annotations

import dataclasses
from typing import Any

import ape
import pytest

from posaudit.blocks import mine
from posaudit.records import Domain
from posaudit.rules import StatusCode

from .conftest import DAY, NOON

S = StatusCode


def balance(ledger: Any, payer: str) -> int:
    return int(ledger.accountOf(payer).balance)


def snapshot(ledger: Any, payers: list[str], merchant: Any) -> tuple[Any, ...]:
    """Everything an append may change, to prove that a refused one changed nothing."""
    return (
        tuple(ledger.head()),
        tuple(balance(ledger, payer) for payer in payers),
        int(ledger.heldFor(merchant)),
        int(ledger.lastSequenceOf(b"TERM0001")),
    )


class TestApproval:
    def test_approved_record_moves_amount_to_merchant_hold(
        self, ledger, append, make_record, payers, merchant
    ):
        """Approval debits the payer and holds the amount for the merchant."""
        record = make_record(amount=1_234)

        block = append([record])

        assert block.codes == [S.APPROVED]
        assert balance(ledger, payers[0]) == 100_000 - 1_234
        assert ledger.heldFor(merchant) == 1_234
        assert ledger.lastSequenceOf(b"TERM0001") == record.record.sequence
        assert ledger.isApproved(block.header.block_hash, 0)

    def test_block_validated_and_approved_events_carry_indexed_fields(
        self, ledger, append, make_record, payers, merchant
    ):
        block = append([make_record(amount=500)])

        validated = block.receipt.events.filter(ledger.BlockValidated)[0]
        approved = block.approved[0]
        assert bytes(validated.blockHash) == block.header.block_hash
        assert validated.height == 1
        assert bytes(validated.recordsRoot) == block.header.records_root
        assert validated.recordCount == 1
        assert bytes(approved.terminalId) == b"TERM0001"
        assert approved.payer == ape.convert(payers[0], ape.types.AddressType)
        assert approved.merchant == merchant.address
        assert approved.amount == 500
        assert bytes(approved.blockHash) == block.header.block_hash

    def test_aggregate_block_decides_each_record(
        self, ledger, append, make_record, payers, merchant
    ):
        """One block, many records: rejected ones do not revert the others."""
        records = [
            make_record(payer=payers[1], amount=300),
            make_record(payer=payers[1], amount=200_000),
            make_record(
                payer=payers[2],
                amount=700,
                terminal_id="TERM0002",
                merchant=merchant.address,
            ),
            make_record(payer=payers[3], amount=50),
        ]

        block = append(records)

        assert block.codes == [
            S.APPROVED,
            S.INSUFFICIENT_BALANCE,
            S.MERCHANT_MISMATCH,
            S.APPROVED,
        ]
        assert ledger.heldFor(merchant) == 350
        assert balance(ledger, payers[1]) == 100_000 - 300
        assert balance(ledger, payers[2]) == 100_000
        assert [
            bool(ledger.isApproved(block.header.block_hash, i)) for i in range(4)
        ] == [True, False, False, True]

    def test_blocks_chain_to_the_head(self, ledger, append, make_record):
        first = append([make_record()])

        second = append([make_record()], at=NOON + 10)

        assert second.header.prev_hash == first.header.block_hash
        assert bytes(ledger.head()[0]) == second.header.block_hash
        assert ledger.head()[1] == 2
        stored = ledger.blockOf(second.header.block_hash)
        assert bytes(stored.recordsRoot) == second.header.records_root
        assert stored.recordCount == 1


class TestRules:
    def test_exact_balance_is_approved_and_one_more_is_not(
        self, ledger, owner, append, make_record, payers
    ):
        ledger.updateAccount(payers[0], 10**9, True, False, sender=owner)

        block = append([make_record(amount=100_001), make_record(amount=100_000)])

        assert block.codes == [S.INSUFFICIENT_BALANCE, S.APPROVED]
        assert balance(ledger, payers[0]) == 0

    def test_daily_limit_reached_exactly_is_approved_then_exceeded(
        self, append, make_record
    ):
        block = append(
            [
                make_record(amount=30_000),
                make_record(amount=20_000),
                make_record(amount=1),
            ]
        )

        assert block.codes == [S.APPROVED, S.APPROVED, S.DAILY_LIMIT_EXCEEDED]

    def test_daily_limit_resets_exactly_at_utc_midnight(self, append, make_record):
        """The last second of a UTC day counts for that day; the next starts afresh."""
        midnight = NOON - NOON % DAY + DAY
        spend_all = make_record(amount=50_000, valid_until=midnight + 10)
        last_second = make_record(amount=1, valid_until=midnight + 10)
        next_day = make_record(amount=1, valid_until=midnight + 10)

        first = append([spend_all, last_second], at=midnight - 1)
        second = append([next_day], at=midnight)

        assert first.codes == [S.APPROVED, S.DAILY_LIMIT_EXCEEDED]
        assert second.codes == [S.APPROVED]

    def test_valid_until_equal_to_block_time_is_approved(self, append, make_record):
        block = append(
            [make_record(valid_until=NOON), make_record(valid_until=NOON - 1)]
        )

        assert block.codes == [S.APPROVED, S.EXPIRED]

    def test_timestamp_beyond_clock_skew_is_rejected(self, append, make_record):
        block = append(
            [
                make_record(timestamp=NOON + 300, valid_until=NOON + 900),
                make_record(timestamp=NOON + 301, valid_until=NOON + 900),
            ]
        )

        assert block.codes == [S.APPROVED, S.TIMESTAMP_IN_FUTURE]

    @pytest.mark.parametrize(
        ("birth_date", "expected"),
        [(2012_03_04, S.APPROVED), (2012_03_05, S.UNDER_AGE), (0, S.UNDER_AGE)],
        ids=["eighteenth-birthday-today", "one-day-short", "birth-date-unknown"],
    )
    def test_minimum_age_is_exact_to_the_day(
        self, ledger, owner, append, make_record, birth_date, expected
    ):
        young = "0x" + "0d" * 20
        ledger.setMinimumAge(7, 18, sender=owner)
        ledger.openAccount(young, 10**6, birth_date, True, sender=owner)
        ledger.deposit(young, 10**6, sender=owner)

        block = append([make_record(payer=young, goods_category=7)])

        assert block.codes == [expected]

    def test_unrestricted_category_ignores_age(
        self, ledger, owner, append, make_record
    ):
        young = "0x" + "0e" * 20
        ledger.openAccount(young, 10**6, 2015_01_01, True, sender=owner)
        ledger.deposit(young, 10**6, sender=owner)

        assert append([make_record(payer=young, goods_category=2)]).codes == [
            S.APPROVED
        ]

    def test_payer_flags_are_enforced(self, ledger, owner, append, make_record, payers):
        ledger.updateAccount(payers[1], 50_000, True, True, sender=owner)
        ledger.updateAccount(payers[2], 50_000, False, False, sender=owner)

        block = append(
            [
                make_record(payer=payers[1]),
                make_record(payer=payers[2]),
                make_record(payer="0x" + "99" * 20),
            ]
        )

        assert block.codes == [S.PAYER_FROZEN, S.PAYER_NOT_KYC, S.UNKNOWN_PAYER]
        assert balance(ledger, payers[1]) == 100_000

    def test_terminal_checks(
        self, registry, owner, append, make_record, other_merchant
    ):
        registry.deactivateTerminal(b"TERM0002", sender=owner)

        block = append(
            [
                make_record(terminal_id="TERMXXXX"),
                make_record(terminal_id="TERM0002", merchant=other_merchant.address),
                make_record(merchant=other_merchant.address),
            ]
        )

        assert block.codes == [
            S.UNKNOWN_TERMINAL,
            S.TERMINAL_INACTIVE,
            S.MERCHANT_MISMATCH,
        ]

    def test_wrong_currency_is_rejected(self, append, make_record):
        assert append([make_record(currency="USD")]).codes == [S.WRONG_CURRENCY]

    @pytest.mark.parametrize(
        "amount", [0, 2**63, 2**64 - 1], ids=["zero", "2^63", "2^64-1"]
    )
    def test_amount_outside_range_is_rejected(
        self, append, make_record, ledger, payers, amount
    ):
        """Amounts the encoder refuses, forged into the leaf bytes."""
        record = make_record()
        leaf = bytearray(record.leaf)
        leaf[100:108] = amount.to_bytes(8, "big")
        forged = dataclasses.replace(record)
        object.__setattr__(forged, "encoding", bytes(leaf[:133]))

        block = append([forged])

        assert block.codes == [S.AMOUNT_OUT_OF_RANGE]
        assert balance(ledger, payers[0]) == 100_000


class TestReplay:
    def test_replayed_record_is_rejected_and_changes_nothing(
        self, ledger, append, make_record, payers, merchant
    ):
        record = make_record()
        append([record])
        before = snapshot(ledger, payers, merchant)

        block = append([record], at=NOON + 10)

        assert block.codes == [S.SEQUENCE_NOT_ABOVE]
        assert snapshot(ledger, payers, merchant)[1:] == before[1:]

    def test_out_of_order_sequence_is_rejected(self, append, make_record):
        early, late = make_record(), make_record()

        block = append([late, early])

        assert block.codes == [S.APPROVED, S.SEQUENCE_NOT_ABOVE]

    def test_rejected_record_consumes_its_sequence(self, append, make_record):
        """A record rejected by a payment rule cannot be replayed once funds arrive."""
        record = make_record(amount=10**6)

        first = append([record])
        second = append([record], at=NOON + 10)

        assert first.codes == [S.INSUFFICIENT_BALANCE]
        assert second.codes == [S.SEQUENCE_NOT_ABOVE]

    @pytest.mark.parametrize("field", ["chain_id", "ledger"])
    def test_record_for_another_domain_is_rejected_and_keeps_sequence(
        self, ledger, append, make_record, domain, payers, merchant, field
    ):
        foreign = (
            Domain(domain.chain_id + 1, domain.ledger)
            if field == "chain_id"
            else Domain(domain.chain_id, "0x" + "ee" * 20)
        )
        before = snapshot(ledger, payers, merchant)

        block = append([make_record(domain=foreign, sequence=5)])

        assert block.codes == [S.WRONG_DOMAIN]
        assert snapshot(ledger, payers, merchant)[1:] == before[1:]


class TestMalformedBlocks:
    def test_tampered_record_breaks_the_root(
        self, ledger, append, make_record, payers, merchant
    ):
        record = make_record(amount=10)
        header = append.next_header([record.leaf], NOON)
        tampered = bytearray(record.leaf)
        tampered[107] = 0xFF
        before = snapshot(ledger, payers, merchant)

        with ape.reverts(ledger.LedgerRootMismatch):
            append([record], header=header, leaves=bytes(tampered))

        assert snapshot(ledger, payers, merchant) == before

    def test_tampered_signature_hash_breaks_the_root(self, ledger, append, make_record):
        record = make_record()
        header = append.next_header([record.leaf], NOON)
        tampered = record.leaf[:-1] + bytes([record.leaf[-1] ^ 1])

        with ape.reverts(ledger.LedgerRootMismatch):
            append([record], header=header, leaves=tampered)

    def test_block_not_linked_to_head_is_refused(self, ledger, append, make_record):
        append([make_record()])
        record = make_record()
        header = dataclasses.replace(
            append.next_header([record.leaf], NOON), prev_hash=b"\x00" * 32
        )

        with ape.reverts(ledger.LedgerBlockNotLinked):
            append([record], header=header)

        assert ledger.head()[1] == 1

    def test_hash_above_target_is_refused(self, ledger, owner, append, make_record):
        ledger.setTarget(2**248, sender=owner)
        record = make_record()
        header = append.next_header([record.leaf], NOON)
        while int.from_bytes(header.block_hash, "big") <= 2**248:
            header = dataclasses.replace(header, nonce=header.nonce + 1)

        with ape.reverts(ledger.LedgerHashAboveTarget):
            append([record], header=header)

    def test_mined_header_meets_a_raised_target(
        self, ledger, owner, append, make_record
    ):
        ledger.setTarget(2**252, sender=owner)
        record = make_record()
        header = mine(append.next_header([record.leaf], NOON))

        block = append([record], header=header)

        assert int.from_bytes(header.block_hash, "big") <= 2**252
        assert block.codes == [S.APPROVED]

    def test_header_with_other_target_is_refused(
        self, ledger, owner, append, make_record
    ):
        record = make_record()
        header = dataclasses.replace(append.next_header([record.leaf], NOON), target=1)

        with ape.reverts(ledger.LedgerTargetMismatch):
            append([record], header=header)

    def test_record_count_must_match_the_leaves(self, ledger, append, make_record):
        record = make_record()
        header = dataclasses.replace(
            append.next_header([record.leaf], NOON), record_count=2
        )

        with ape.reverts(ledger.LedgerRecordCountMismatch):
            append([record], header=header)

    def test_partial_leaf_is_refused(self, ledger, append, make_record):
        record = make_record()
        header = append.next_header([record.leaf], NOON)

        with ape.reverts(ledger.LedgerMalformedLeaves):
            append([record], header=header, leaves=record.leaf[:-1])

    def test_empty_block_is_refused(self, ledger, append, make_record):
        record = make_record()
        header = dataclasses.replace(
            append.next_header([record.leaf], NOON), record_count=0
        )

        with ape.reverts(ledger.LedgerRecordCount):
            append([], header=header, leaves=b"")

    def test_append_by_non_bookkeeper_is_refused(
        self, ledger, append, make_record, outsider, payers, merchant
    ):
        before = snapshot(ledger, payers, merchant)

        with ape.reverts(ledger.AccessControlUnauthorizedAccount):
            append([make_record()], sender=outsider)

        assert snapshot(ledger, payers, merchant) == before

    def test_paused_ledger_refuses_blocks(self, ledger, owner, append, make_record):
        ledger.pause(sender=owner)

        with ape.reverts(ledger.EnforcedPause):
            append([make_record()])


class TestAccounts:
    def test_deposit_overflow_is_refused(self, ledger, owner, payers):
        with ape.reverts(ledger.LedgerBalanceOverflow):
            ledger.deposit(payers[0], 2**64 - 1, sender=owner)

    def test_account_cannot_be_opened_twice(self, ledger, owner, payers):
        with ape.reverts(ledger.LedgerPayerExists):
            ledger.openAccount(payers[0], 1, 0, True, sender=owner)

    def test_deposit_to_unknown_payer_is_refused(self, ledger, owner):
        with ape.reverts(ledger.LedgerUnknownPayer):
            ledger.deposit("0x" + "77" * 20, 5, sender=owner)

    def test_outsider_cannot_deposit(self, ledger, outsider, payers):
        with ape.reverts(ledger.AccessControlUnauthorizedAccount):
            ledger.deposit(payers[0], 5, sender=outsider)
