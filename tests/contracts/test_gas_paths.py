"""The edges of the Ledger's and the audit's gas-saving paths.

The Ledger keeps a block's terminals in a direct-mapped memory table (registry answer,
last sequence, amount held) and writes each payer's packed account once per record; a
whole-block audit pays the block's releases (one per terminal, summed by the Ledger)
and writes no resolution bits. These tests drive each of those paths where it could go
wrong: terminals evicting one another from a table slot, more terminals than slots,
account fields an approval must keep, releases after records settled one by one, and
the state a complete block must report without its bits.
"""

from __future__ import annotations

from typing import Any, ClassVar

import pytest

from posaudit.audittree import AuditTree
from posaudit.records import encode_hold, holds_digest, releases_digest
from posaudit.rules import LedgerModel, PayerAccount, StatusCode, TerminalEntry
from posaudit.signing import generate_key, public_numbers

from .conftest import DAY, NOON

S = StatusCode
SETTLED = 3
REJECTED_BY_RULES = 1

# The Ledger's terminal table: 64 slots picked by Fibonacci hashing of the 8-byte id.
TERMINAL_HASH = 0x9E3779B97F4A7C15
TERMINAL_SLOT_BITS = 6
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


def placed(ledger: Any, receipt: Any) -> list[tuple[str, int]]:
    """A block's releases, from its append receipt's ``HoldPlaced`` events."""
    return [
        (log.merchant, int(log.amount))
        for log in receipt.events.filter(ledger.HoldPlaced)
    ]


def released(ledger: Any, receipt: Any) -> list[tuple[str, int]]:
    """What an audit paid, from its receipt's ``HoldReleased`` events."""
    return [
        (log.merchant.lower(), int(log.amount))
        for log in receipt.events.filter(ledger.HoldReleased)
    ]


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
    def audited(self, append, audit, ledger, make_record, payers, owner):
        """Three approved records and one the rules rejected, audited as a block."""
        records = [make_record(amount=100 * (i + 1), payer=payers[i]) for i in range(3)]
        records.append(make_record(currency="USD"))
        appended = append(records)
        tree = AuditTree.from_leaves(record.leaf for record in records)
        holds = b"".join(encode_hold(record.record) for record in records[:3])
        releases = placed(ledger, appended.receipt)
        audit.auditBlock(
            appended.header.block_hash,
            tree.leaf_hashes,
            holds_digest(holds),
            releases,
            sender=owner,
        )
        return appended.header.block_hash, records, tree, holds, releases

    def test_every_record_reports_its_final_status(self, audit, audited):
        block_hash, *_ = audited

        statuses = [audit.statusOf(block_hash, index) for index in range(4)]

        assert statuses == [SETTLED] * 3 + [REJECTED_BY_RULES]
        assert audit.auditOf(block_hash).complete

    def test_a_receipt_settles_nothing_more(
        self, audit, ledger, audited, merchant, outsider
    ):
        block_hash, records, tree, *_ = audited
        credit = ledger.creditOf(merchant)

        receipt = audit.settleRecord(
            block_hash, 1, records[1].leaf, tree.inclusion_proof(1), sender=outsider
        )

        assert not list(receipt.events.filter(audit.RecordSettled))
        assert ledger.creditOf(merchant) == credit == 600
        assert audit.auditOf(block_hash).settled == 3

    def test_a_settled_record_cannot_be_rejected(self, audit, audited, owner):
        block_hash, records, tree, holds, releases = audited
        bad_proof = [bytes(32)] * len(tree.inclusion_proof(1))

        # pytest.raises, not ape.reverts: the Ledger's own revert must not pass for it.
        with pytest.raises(audit.AuditAlreadyResolved):
            audit.rejectRecord(
                block_hash,
                1,
                records[1].leaf,
                bad_proof,
                holds,
                releases_digest(releases),
                sender=owner,
            )


class TestReleases:
    """The Ledger sums a block's holds per terminal; the audit pays those releases,
    less what records settled one by one took."""

    SHOPS: ClassVar[list[str]] = [f"0x{0xB0B100 + i:040x}" for i in range(10)]
    # Which shop takes each record: runs, returns, shops seen once.
    PATTERN: ClassVar[list[int]] = [0, 0, 1, 1, 1, 2, 0, 0, 3, 4, 5, 6, 7, 8, 9, 9, 0]

    @pytest.fixture
    def block(self, append, ledger, make_record, registry, owner, payers):
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
        return appended.header.block_hash, records, tree, holds, appended.receipt

    def totals(self, records: list[Any], skip: tuple[int, ...] = ()) -> dict[str, int]:
        sums: dict[str, int] = {}
        for index, signed in enumerate(records):
            if index not in skip:
                shop = signed.record.merchant
                sums[shop] = sums.get(shop, 0) + signed.record.amount
        return sums

    def test_ledger_places_one_release_per_terminal(self, ledger, block):
        _, records, _, _, receipt = block

        releases = placed(ledger, receipt)

        assert {shop.lower(): amount for shop, amount in releases} == self.totals(
            records
        )
        assert len(releases) == len(self.SHOPS)

    def test_fresh_block_pays_its_releases(self, audit, ledger, block, outsider):
        block_hash, _, tree, holds, appended = block
        releases = placed(ledger, appended)

        receipt = audit.auditBlock(
            block_hash, tree.leaf_hashes, holds_digest(holds), releases, sender=outsider
        )

        assert released(ledger, receipt) == [(s.lower(), a) for s, a in releases]
        assert [ledger.heldFor(shop) for shop in self.SHOPS] == [0] * 10

    def test_block_settled_in_part_pays_the_rest_once(
        self, audit, ledger, block, outsider
    ):
        block_hash, records, tree, holds, appended = block
        settled_alone = (1, 7, 15)
        for index in settled_alone:
            audit.settleRecord(
                block_hash,
                index,
                records[index].leaf,
                tree.inclusion_proof(index),
                sender=outsider,
            )

        receipt = audit.auditBlock(
            block_hash,
            tree.leaf_hashes,
            holds_digest(holds),
            placed(ledger, appended),
            sender=outsider,
        )

        rest = self.totals(records, settled_alone)
        assert dict(released(ledger, receipt)) == {shop: rest[shop] for shop in rest}
        assert [ledger.heldFor(shop) for shop in self.SHOPS] == [0] * 10
        assert [ledger.creditOf(shop) for shop in self.SHOPS] == [
            self.totals(records)[shop] for shop in self.SHOPS
        ]
        assert audit.auditOf(block_hash).settled == len(records)

    def test_merchant_of_two_terminals_is_paid_once_what_is_left(
        self, audit, ledger, append, make_record, registry, owner, payers, outsider
    ):
        """What a record settled alone took comes off the merchant's releases in
        turn, however many terminals of the merchant the block has."""
        shop = f"0x{0xB0B200:040x}"
        register(registry, owner, {"TWIN0001": shop, "TWIN0002": shop})
        records = [
            make_record(terminal_id="TWIN0001", merchant=shop, amount=10),
            make_record(terminal_id="TWIN0002", merchant=shop, amount=20),
        ]
        appended = append(records)
        block_hash = appended.header.block_hash
        tree = AuditTree.from_leaves(record.leaf for record in records)
        audit.settleRecord(
            block_hash, 1, records[1].leaf, tree.inclusion_proof(1), sender=outsider
        )
        holds = b"".join(encode_hold(record.record) for record in records)

        receipt = audit.auditBlock(
            block_hash,
            tree.leaf_hashes,
            holds_digest(holds),
            placed(ledger, appended.receipt),
            sender=outsider,
        )

        assert released(ledger, receipt) == [(shop, 10)]  # one payment for both
        assert (ledger.creditOf(shop), ledger.heldFor(shop)) == (30, 0)
