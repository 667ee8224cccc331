"""The edges of the Ledger's and the audit's gas-saving paths.

The Ledger keeps a block's terminals in a direct-mapped memory table (registry answer,
last sequence, amount held) and writes each payer's packed account once per record; a
whole-block audit sums runs of holds per merchant and writes no resolution bits. These
tests drive each of those paths where it could go wrong: terminals evicting one another
from a table slot, more terminals than slots, account fields an approval must keep, and
the state a complete block must report without its bits.
"""

from __future__ import annotations

from typing import Any, ClassVar

import pytest

from posaudit.audittree import AuditTree
from posaudit.records import encode_hold
from posaudit.rules import LedgerModel, PayerAccount, StatusCode, TerminalEntry
from posaudit.signing import generate_key, public_numbers

from .conftest import DAY, NOON

S = StatusCode
SETTLED = 3
REJECTED_BY_RULES = 1

# The Ledger's terminal table: 64 slots picked by Fibonacci hashing of the 8-byte id.
TERMINAL_HASH = 0x9E3779B97F4A7C15
TERMINAL_SLOT_BITS = 6
# MERCHANT_LOOKBACK of SettlementAudit.
MERCHANT_LOOKBACK = 8
MAX_AMOUNT = 2**63 - 1


def cache_slot(terminal_id: str) -> int:
    """The slot of the Ledger's terminal table that ``terminal_id`` maps to."""
    product = int.from_bytes(terminal_id.encode(), "big") * TERMINAL_HASH % 2**64
    return product >> (64 - TERMINAL_SLOT_BITS)


def sharing_slot_with(terminal_id: str, count: int) -> list[str]:
    """``count`` ids of the form SLOTnnnn that share ``terminal_id``'s slot."""
    slot = cache_slot(terminal_id)
    ids = (f"SLOT{i:04d}" for i in range(10_000))
    found = [candidate for candidate in ids if cache_slot(candidate) == slot]
    return found[:count]


def register(registry: Any, owner: Any, terminals: dict[str, str]) -> None:
    numbers = public_numbers(generate_key().public_key())
    for terminal_id, shop in terminals.items():
        registry.registerTerminal(
            terminal_id.encode(), shop, numbers.modulus, numbers.exponent, sender=owner
        )


def model_of(domain: Any, payers: list[str], terminals: dict[str, str]) -> LedgerModel:
    model = LedgerModel(domain, "EUR")
    for terminal_id, shop in terminals.items():
        model.terminals[terminal_id] = TerminalEntry(shop.lower())
    for payer in payers:
        model.accounts[payer] = PayerAccount(
            balance=100_000, daily_limit=50_000, birth_date=1990_05_17, kyc=True
        )
    return model


def expected_releases(holds: list[tuple[str, int]]) -> list[tuple[str, int]]:
    """The (merchant, amount) entries of a block audit, one hold at a time."""
    entries: list[list[Any]] = []
    for shop, amount in holds:
        first = max(len(entries) - MERCHANT_LOOKBACK, 0)
        for entry in reversed(entries[first:]):
            if entry[0] == shop:
                entry[1] += amount
                break
        else:
            entries.append([shop, amount])
    return [(shop, amount) for shop, amount in entries]


@pytest.fixture
def terminals(merchant: Any, other_merchant: Any) -> dict[str, str]:
    """The terminals of the session registry, by merchant address."""
    return {"TERM0001": merchant.address, "TERM0002": other_merchant.address}


class TestTerminalTable:
    def test_ids_used_here_share_a_slot(self):
        """Guards the tests below: their ids must collide in the table."""
        ids = sharing_slot_with("TERM0001", 5)

        assert len({cache_slot(terminal_id) for terminal_id in ids}) == 1
        assert cache_slot(ids[0]) == cache_slot("TERM0001")
        assert cache_slot("TERM0002") != cache_slot("TERM0001")

    def test_terminals_evicting_each_other_keep_their_own_sequences_and_holds(
        self, ledger, registry, owner, append, make_record, domain, payers, terminals
    ):
        """Replays after an eviction are caught; every hold reaches its merchant."""
        third = f"0x{0xC0FFEE:040x}"
        first, second, third_id = sharing_slot_with("TERM0001", 3)
        extra = {first: terminals["TERM0001"], second: terminals["TERM0002"]}
        extra[third_id] = third
        register(registry, owner, extra)
        everyone = {**terminals, **extra}
        model = model_of(domain, payers, everyone)
        plan = [
            ("TERM0001", 1),
            (first, 1),
            ("TERM0001", 2),
            (second, 5),
            ("TERM0001", 2),
            (first, 1),
            (third_id, 3),
            (first, 2),
            ("TERM0002", 1),
            (second, 4),
            ("TERM0001", 3),
            (second, 6),
        ]
        records = [
            make_record(
                terminal_id=terminal_id,
                sequence=sequence,
                merchant=everyone[terminal_id],
                payer=payers[index % len(payers)],
                amount=100 * (index + 1),
            )
            for index, (terminal_id, sequence) in enumerate(plan)
        ]

        block = append(records)

        assert block.codes == [model.decide(r.record, NOON) for r in records]
        assert S.SEQUENCE_NOT_ABOVE in block.codes
        for terminal_id in everyone:
            stored = ledger.lastSequenceOf(terminal_id.encode())
            assert stored == model.last_sequence.get(terminal_id, 0)
        for shop in {*everyone.values()}:
            assert ledger.heldFor(shop) == model.held.get(shop.lower(), 0)

    def test_sequences_written_back_hold_in_the_next_block(
        self, ledger, registry, owner, append, make_record, terminals
    ):
        (other,) = sharing_slot_with("TERM0001", 1)
        register(registry, owner, {other: terminals["TERM0001"]})
        append(
            [
                make_record(terminal_id="TERM0001", sequence=7),
                make_record(terminal_id=other, sequence=9),
            ]
        )

        block = append(
            [
                make_record(terminal_id="TERM0001", sequence=7),
                make_record(terminal_id=other, sequence=9),
                make_record(terminal_id=other, sequence=10),
                make_record(terminal_id="TERM0001", sequence=8),
            ]
        )

        assert block.codes == [
            S.SEQUENCE_NOT_ABOVE,
            S.SEQUENCE_NOT_ABOVE,
            S.APPROVED,
            S.APPROVED,
        ]
        assert ledger.lastSequenceOf(b"TERM0001") == 8
        assert ledger.lastSequenceOf(other.encode()) == 10

    def test_unknown_and_inactive_terminals_in_a_shared_slot_change_nothing(
        self, ledger, registry, owner, append, make_record, merchant, terminals
    ):
        unknown, inactive = sharing_slot_with("TERM0001", 2)
        register(registry, owner, {inactive: terminals["TERM0001"]})
        registry.deactivateTerminal(inactive.encode(), sender=owner)

        block = append(
            [
                make_record(terminal_id="TERM0001", sequence=1, amount=10),
                make_record(terminal_id=unknown, sequence=5, amount=20),
                make_record(terminal_id="TERM0001", sequence=2, amount=30),
                make_record(terminal_id=inactive, sequence=5, amount=40),
                make_record(terminal_id="TERM0001", sequence=2, amount=50),
                make_record(terminal_id="TERM0001", sequence=3, amount=60),
            ]
        )

        assert block.codes == [
            S.APPROVED,
            S.UNKNOWN_TERMINAL,
            S.APPROVED,
            S.TERMINAL_INACTIVE,
            S.SEQUENCE_NOT_ABOVE,
            S.APPROVED,
        ]
        assert ledger.lastSequenceOf(b"TERM0001") == 3
        assert ledger.lastSequenceOf(unknown.encode()) == 0
        assert ledger.lastSequenceOf(inactive.encode()) == 0
        assert ledger.heldFor(merchant) == 100

    def test_more_terminals_than_slots(
        self, ledger, registry, owner, append, make_record, domain, payers, terminals
    ):
        """70 terminals of two merchants, twice round: the table must overflow."""
        shops = [terminals["TERM0001"], terminals["TERM0002"]]
        extra = {f"MANY{i:04d}": shops[i % 2] for i in range(70)}
        register(registry, owner, extra)
        model = model_of(domain, payers, {**terminals, **extra})
        records = [
            make_record(
                terminal_id=terminal_id,
                sequence=round_ + 1,
                merchant=shop,
                payer=payers[index % len(payers)],
                amount=1 + index,
            )
            for round_ in range(2)
            for index, (terminal_id, shop) in enumerate(extra.items())
        ]

        block = append(records)

        assert block.codes == [model.decide(r.record, NOON) for r in records]
        assert set(block.codes) == {S.APPROVED}
        assert all(ledger.lastSequenceOf(t.encode()) == 2 for t in extra)
        for shop in shops:
            assert ledger.heldFor(shop) == model.held[shop.lower()]


class TestPackedAccount:
    PAYER = f"0x{0xACC0:040x}"

    @pytest.fixture
    def rich_payer(self, ledger, owner):
        ledger.openAccount(self.PAYER, 2**64 - 1, 2001_12_31, True, sender=owner)
        ledger.deposit(self.PAYER, 2**64 - 1, sender=owner)
        return self.PAYER

    def test_fields_at_their_widest_survive_an_approval(
        self, ledger, append, make_record, rich_payer
    ):
        block = append([make_record(payer=rich_payer, amount=MAX_AMOUNT)])

        assert block.codes == [S.APPROVED]
        account = ledger.accountOf(rich_payer)
        assert account.balance == 2**63
        assert account.spentToday == MAX_AMOUNT
        assert account.spentDay == NOON // DAY
        assert account.dailyLimit == 2**64 - 1
        assert account.birthDate == 2001_12_31
        assert account.flags == 1 | 2

    def test_updates_and_deposits_keep_the_days_spending(
        self, ledger, owner, append, make_record, rich_payer
    ):
        append([make_record(payer=rich_payer, amount=700)])

        ledger.updateAccount(rich_payer, 1_000, True, False, sender=owner)
        block = append([make_record(payer=rich_payer, amount=301)], at=NOON + 60)
        same_day = append([make_record(payer=rich_payer, amount=300)], at=NOON + 120)
        tomorrow = make_record(
            payer=rich_payer, amount=1_000, valid_until=NOON + 2 * DAY
        )
        next_day = append([tomorrow], at=NOON + DAY)

        assert block.codes == [S.DAILY_LIMIT_EXCEEDED]
        assert same_day.codes == [S.APPROVED]
        assert next_day.codes == [S.APPROVED]
        account = ledger.accountOf(rich_payer)
        assert (account.spentToday, account.spentDay) == (1_000, NOON // DAY + 1)
        assert account.balance == 2**64 - 1 - 2_000
        assert (account.dailyLimit, account.birthDate, account.flags) == (
            1_000,
            2001_12_31,
            1 | 2,
        )

    def test_deposit_keeps_the_days_spending(
        self, ledger, owner, append, make_record, payers
    ):
        append([make_record(payer=payers[0], amount=40_000)])

        ledger.deposit(payers[0], 5, sender=owner)
        block = append([make_record(payer=payers[0], amount=10_001)], at=NOON + 60)

        assert block.codes == [S.DAILY_LIMIT_EXCEEDED]
        account = ledger.accountOf(payers[0])
        assert (account.balance, account.spentToday) == (60_005, 40_000)


class TestWholeBlockAudit:
    @pytest.fixture
    def audited(self, append, audit, make_record, payers, owner):
        """Three approved records and one the rules rejected, audited as a block."""
        records = [make_record(amount=100 * (i + 1), payer=payers[i]) for i in range(3)]
        records.append(make_record(currency="USD"))
        appended = append(records)
        tree = AuditTree.from_leaves(record.leaf for record in records)
        holds = b"".join(encode_hold(record.record) for record in records[:3])
        audit.auditBlock(
            appended.header.block_hash, tree.leaf_hashes, holds, sender=owner
        )
        return appended.header.block_hash, records, tree, holds

    def test_every_record_reports_its_final_status(self, audit, audited):
        block_hash, _, _, _ = audited

        statuses = [audit.statusOf(block_hash, index) for index in range(4)]

        assert statuses == [SETTLED] * 3 + [REJECTED_BY_RULES]
        assert audit.auditOf(block_hash).complete

    def test_a_receipt_settles_nothing_more(
        self, audit, ledger, audited, merchant, outsider
    ):
        block_hash, records, tree, _ = audited
        credit = ledger.creditOf(merchant)

        receipt = audit.settleRecord(
            block_hash, 1, records[1].leaf, tree.inclusion_proof(1), sender=outsider
        )

        assert not list(receipt.events.filter(audit.RecordSettled))
        assert ledger.creditOf(merchant) == credit == 600
        assert audit.auditOf(block_hash).settled == 3

    def test_a_settled_record_cannot_be_rejected(self, audit, audited, owner):
        block_hash, records, tree, holds = audited
        bad_proof = [bytes(32)] * len(tree.inclusion_proof(1))

        # pytest.raises, not ape.reverts: the Ledger's own revert must not pass for it.
        with pytest.raises(audit.AuditAlreadyResolved):
            audit.rejectRecord(
                block_hash, 1, records[1].leaf, bad_proof, holds, sender=owner
            )


class TestReleaseRuns:
    """A block audit sums runs of one merchant's holds and pays entries as before."""

    SHOPS: ClassVar[list[str]] = [f"0x{0xB0B100 + i:040x}" for i in range(10)]
    # Runs, returns within the lookback, and returns after it has moved on.
    PATTERN: ClassVar[list[int]] = [0, 0, 1, 1, 1, 2, 0, 0, 3, 4, 5, 6, 7, 8, 9, 9, 0]

    @pytest.fixture
    def block(self, append, make_record, registry, owner, payers):
        ids = {f"RUNS{i:04d}": shop for i, shop in enumerate(self.SHOPS)}
        register(registry, owner, ids)
        terminal_of = {shop: terminal_id for terminal_id, shop in ids.items()}
        records = [
            make_record(
                terminal_id=terminal_of[self.SHOPS[shop]],
                merchant=self.SHOPS[shop],
                payer=payers[index % len(payers)],
                amount=10 + index,
            )
            for index, shop in enumerate(self.PATTERN)
        ]
        appended = append(records)
        assert set(appended.codes) == {S.APPROVED}
        tree = AuditTree.from_leaves(record.leaf for record in records)
        holds = b"".join(encode_hold(record.record) for record in records)
        return appended.header.block_hash, records, tree, holds

    def released(self, ledger: Any, receipt: Any) -> list[tuple[str, int]]:
        return [
            (log.merchant.lower(), log.amount)
            for log in receipt.events.filter(ledger.HoldReleased)
        ]

    def test_fresh_block_pays_the_entries_of_one_hold_at_a_time(
        self, audit, ledger, block, outsider
    ):
        block_hash, records, tree, holds = block

        receipt = audit.auditBlock(block_hash, tree.leaf_hashes, holds, sender=outsider)

        holds_list = [(r.record.merchant, r.record.amount) for r in records]
        assert self.released(ledger, receipt) == expected_releases(holds_list)
        assert [ledger.heldFor(shop) for shop in self.SHOPS] == [0] * 10

    def test_block_settled_in_part_pays_the_rest_as_before(
        self, audit, ledger, block, outsider
    ):
        block_hash, records, tree, holds = block
        for index in (1, 7, 15):
            audit.settleRecord(
                block_hash,
                index,
                records[index].leaf,
                tree.inclusion_proof(index),
                sender=outsider,
            )

        receipt = audit.auditBlock(block_hash, tree.leaf_hashes, holds, sender=outsider)

        rest = [
            (r.record.merchant, r.record.amount)
            for index, r in enumerate(records)
            if index not in (1, 7, 15)
        ]
        assert self.released(ledger, receipt) == expected_releases(rest)
        assert [ledger.heldFor(shop) for shop in self.SHOPS] == [0] * 10
        assert audit.auditOf(block_hash).settled == len(records)
