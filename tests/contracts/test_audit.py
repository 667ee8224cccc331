"""The audit module on a real EVM: settlement, claim-8 rejections, the dispute view."""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Sequence
from typing import Any

import ape
import pytest

from posaudit.audittree import AuditTree, leaf_hash
from posaudit.records import (
    SignedRecord,
    encode_hold,
    encode_record,
    holds_digest,
    releases_digest,
    settlement_digest,
)
from posaudit.rules import StatusCode
from posaudit.signing import generate_key, public_numbers

Status = {"unknown": 0, "rules": 1, "held": 2, "settled": 3, "audit": 4}


@dataclasses.dataclass
class Block:
    """A block on chain with what its bookkeeper keeps: the tree, the holds of its
    approved records and its releases (what it holds for each merchant)."""

    block_hash: bytes
    records: list[SignedRecord]
    tree: AuditTree
    holds: bytes
    releases: list[tuple[str, int]]
    receipt: Any

    def proof(self, index: int) -> list[bytes]:
        return self.tree.inclusion_proof(index)

    def audit_args(self, releases: list[tuple[str, int]] | None = None) -> tuple:
        """``auditBlock``'s arguments: leaf hashes, holds digest and releases."""
        given = self.releases if releases is None else releases
        return (self.block_hash, self.tree.leaf_hashes, holds_digest(self.holds), given)

    @property
    def releases_digest(self) -> bytes:
        return releases_digest(self.releases)


@pytest.fixture
def settle_block(append: Any, audit: Any, ledger: Any) -> Any:
    """Factory: append records as one block, returning what the audit needs."""

    def factory(records: Sequence[SignedRecord], **kwargs: Any) -> Block:
        appended = append(records, **kwargs)
        tree = AuditTree.from_leaves(record.leaf for record in records)
        holds = b"".join(
            encode_hold(record.record)
            for record, code in zip(records, appended.codes, strict=True)
            if code == StatusCode.APPROVED
        )
        releases = [
            (event.merchant, int(event.amount))
            for event in appended.receipt.events.filter(ledger.HoldPlaced)
        ]
        return Block(
            appended.header.block_hash,
            list(records),
            tree,
            holds,
            releases,
            appended.receipt,
        )

    return factory


def money(ledger: Any, payers: list[str], merchants: Sequence[Any]) -> tuple[Any, ...]:
    """Every balance, hold and credit: what a refused audit must leave unchanged."""
    return (
        tuple(int(ledger.accountOf(payer).balance) for payer in payers),
        tuple(int(ledger.heldFor(merchant)) for merchant in merchants),
        tuple(int(ledger.creditOf(merchant)) for merchant in merchants),
    )


def total(ledger: Any, payers: list[str], merchants: Sequence[Any]) -> int:
    balances, held, credit = money(ledger, payers, merchants)
    return sum(balances) + sum(held) + sum(credit)


class TestBlockAudit:
    def test_stored_settlement_digest_is_the_python_one(
        self, ledger, settle_block, make_record, payers
    ):
        """The digest the Ledger stores is rebuilt off chain from the holds of the
        approved records and the releases of the HoldPlaced events."""
        block = settle_block(
            [make_record(amount=5, payer=payers[0]), make_record(amount=999_999)]
        )

        stored = ledger.blockOf(block.block_hash).settlementDigest

        merchant = block.records[0].record.merchant
        assert [(shop.lower(), amount) for shop, amount in block.releases] == [
            (merchant, 5)
        ]
        assert bytes(stored) == settlement_digest(
            holds_digest(block.holds), releases_digest(block.releases)
        )

    def test_audit_moves_exactly_the_held_amounts_to_merchants(
        self, audit, ledger, settle_block, make_record, payers, merchant, other_merchant
    ):
        """Each merchant's hold becomes its credit; payers' balances do not move."""
        records = [
            make_record(amount=1_000, payer=payers[0]),
            make_record(amount=250, payer=payers[1]),
            make_record(
                terminal_id="TERM0002", merchant=other_merchant.address, amount=75
            ),
        ]
        block = settle_block(records)
        before = money(ledger, payers, [merchant, other_merchant])

        receipt = audit.auditBlock(*block.audit_args(), sender=merchant)

        after = money(ledger, payers, [merchant, other_merchant])
        assert after[0] == before[0]
        assert after[1] == (0, 0)
        assert after[2] == (1_250, 75)
        complete = receipt.events.filter(audit.SettlementComplete)
        assert [(bytes(e.blockHash), e.settled, e.rejected) for e in complete] == [
            (block.block_hash, 3, 0)
        ]
        assert audit.auditOf(block.block_hash).complete

    def test_audit_settles_only_records_the_rules_approved(
        self, audit, ledger, settle_block, make_record, payers, merchant
    ):
        records = [
            make_record(amount=400),
            make_record(amount=999_999),  # insufficient balance
            make_record(amount=600),
        ]
        block = settle_block(records)

        receipt = audit.auditBlock(*block.audit_args(), sender=merchant)

        assert ledger.creditOf(merchant) == 1_000
        assert ledger.heldFor(merchant) == 0
        assert receipt.events.filter(audit.SettlementComplete)[0].settled == 2
        statuses = [audit.statusOf(block.block_hash, i) for i in range(3)]
        assert statuses == [Status["settled"], Status["rules"], Status["settled"]]

    def test_block_with_every_record_rejected_completes_with_nothing_settled(
        self, audit, ledger, settle_block, make_record, merchant
    ):
        block = settle_block([make_record(amount=999_999)])

        receipt = audit.auditBlock(*block.audit_args(), sender=merchant)

        event = receipt.events.filter(audit.SettlementComplete)[0]
        assert (event.settled, event.rejected) == (0, 0)
        assert ledger.creditOf(merchant) == 0

    def test_second_audit_of_a_block_changes_nothing(
        self, audit, ledger, settle_block, make_record, payers, merchant
    ):
        block = settle_block([make_record(amount=300), make_record(amount=200)])
        audit.auditBlock(*block.audit_args(), sender=merchant)
        before = money(ledger, payers, [merchant])

        receipt = audit.auditBlock(*block.audit_args(), sender=merchant)

        assert money(ledger, payers, [merchant]) == before
        assert ledger.creditOf(merchant) == 500
        assert not list(receipt.events.filter(audit.SettlementComplete))
        assert not list(receipt.events.filter(ledger.HoldReleased))

    def test_audit_of_a_1024_record_block_settles_every_word(
        self, audit, ledger, settle_block, make_record, payers, merchant
    ):
        """Records beyond the first 256-bit word are settled as well."""
        records = [make_record(amount=1, payer=payers[i % 8]) for i in range(300)]
        block = settle_block(records)

        audit.auditBlock(*block.audit_args(), sender=merchant)

        assert ledger.creditOf(merchant) == 300
        assert audit.statusOf(block.block_hash, 299) == Status["settled"]
        assert audit.statusOf(block.block_hash, 300) == Status["unknown"]

    def test_merchants_interleaved_beyond_the_lookback_are_all_paid(
        self, audit, ledger, settle_block, make_record, registry, owner
    ):
        """Ten merchants taking turns: each still gets exactly its own amounts."""
        shops = [f"0x{0xB0B000 + i:040x}" for i in range(10)]
        ids = [f"SHOP{i:04d}" for i in range(10)]
        records = []
        for round_ in range(3):
            for shop, terminal_id in zip(shops, ids, strict=True):
                records.append(
                    make_record(
                        terminal_id=terminal_id, merchant=shop, amount=10 + round_
                    )
                )
        _register(registry, owner, ids, shops)
        block = settle_block(records)

        audit.auditBlock(*block.audit_args(), sender=owner)

        assert [ledger.creditOf(shop) for shop in shops] == [33] * 10
        assert [ledger.heldFor(shop) for shop in shops] == [0] * 10


def _register(registry: Any, owner: Any, ids: list[str], shops: list[Any]) -> None:
    numbers = public_numbers(generate_key().public_key())
    for terminal_id, shop in zip(ids, shops, strict=True):
        registry.registerTerminal(
            terminal_id.encode(), shop, numbers.modulus, numbers.exponent, sender=owner
        )


class TestBlockAuditRefusals:
    """A block audit that does not reproduce the Ledger's commitments moves nothing."""

    @pytest.fixture
    def block(self, settle_block, make_record, payers):
        return settle_block(
            [make_record(amount=100 * (i + 1), payer=payers[i]) for i in range(5)]
        )

    def test_tampered_leaf_hash_is_a_root_mismatch(
        self, audit, ledger, block, payers, merchant, outsider
    ):
        block_hash, hashes, digest, releases = block.audit_args()
        hashes[3] = bytes([hashes[3][0] ^ 1]) + hashes[3][1:]
        before = money(ledger, payers, [merchant])

        with ape.reverts(audit.AuditRootMismatch):
            audit.auditBlock(block_hash, hashes, digest, releases, sender=outsider)

        assert money(ledger, payers, [merchant]) == before

    def test_leaf_hashes_of_another_count_are_refused(self, audit, block, outsider):
        block_hash, hashes, digest, releases = block.audit_args()

        with ape.reverts(audit.AuditLeafCount):
            audit.auditBlock(block_hash, hashes[:4], digest, releases, sender=outsider)

    @pytest.mark.parametrize(
        ("field", "change"),
        [("merchant", "0x" + "66" * 20), ("amount", 1)],
        ids=["another-merchant", "amount-plus-one"],
    )
    def test_altered_releases_are_refused(
        self, audit, ledger, block, payers, merchant, outsider, field, change
    ):
        """Paying another merchant, or more, no longer reproduces the digest."""
        (shop, amount), *rest = block.releases
        altered = (change, amount) if field == "merchant" else (shop, amount + change)
        before = money(ledger, payers, [merchant])

        with ape.reverts(audit.AuditHoldsMismatch):
            audit.auditBlock(*block.audit_args([altered, *rest]), sender=outsider)

        assert money(ledger, payers, [merchant]) == before

    def test_releases_cut_short_or_repeated_are_refused(self, audit, block, outsider):
        for releases in ([], [*block.releases, *block.releases]):
            with ape.reverts(audit.AuditHoldsMismatch):
                audit.auditBlock(*block.audit_args(releases), sender=outsider)

    @pytest.mark.parametrize("offset", [0, 8, 16, 24, 44, 63], ids=lambda o: f"byte{o}")
    def test_another_holds_digest_is_refused(
        self, audit, ledger, block, payers, merchant, outsider, offset
    ):
        """The holds digest binds every field of every hold (terminal, sequence,
        amount, merchant, payer), so one changed hold gives another digest."""
        holds = bytearray(block.holds)
        holds[64 + offset] ^= 0x01
        block_hash, hashes, _, releases = block.audit_args()

        with ape.reverts(audit.AuditHoldsMismatch):
            audit.auditBlock(
                block_hash,
                hashes,
                holds_digest(bytes(holds)),
                releases,
                sender=outsider,
            )

        assert audit.auditOf(block.block_hash).settled == 0

    def test_unknown_block_is_refused(self, audit, block, outsider):
        _, hashes, digest, releases = block.audit_args()

        with ape.reverts(audit.AuditUnknownBlock):
            audit.auditBlock(bytes(32), hashes, digest, releases, sender=outsider)


class TestSettleRecord:
    @pytest.fixture
    def block(self, settle_block, make_record, payers):
        return settle_block(
            [make_record(amount=100 * (i + 1), payer=payers[i]) for i in range(5)]
        )

    def test_anyone_with_a_valid_proof_settles_one_record(
        self, audit, ledger, block, merchant, outsider
    ):
        receipt = audit.settleRecord(
            block.block_hash, 2, block.records[2].leaf, block.proof(2), sender=outsider
        )

        assert ledger.creditOf(merchant) == 300
        assert ledger.heldFor(merchant) == 1_500 - 300
        settled = receipt.events.filter(audit.RecordSettled)[0]
        assert (settled.index, settled.amount) == (2, 300)
        assert audit.statusOf(block.block_hash, 2) == Status["settled"]
        assert audit.statusOf(block.block_hash, 1) == Status["held"]
        assert not list(receipt.events.filter(audit.SettlementComplete))

    def test_second_settlement_of_a_record_changes_nothing(
        self, audit, ledger, block, payers, merchant, outsider
    ):
        args = (block.block_hash, 2, block.records[2].leaf, block.proof(2))
        audit.settleRecord(*args, sender=outsider)
        before = money(ledger, payers, [merchant])

        receipt = audit.settleRecord(*args, sender=outsider)

        assert money(ledger, payers, [merchant]) == before
        assert not list(receipt.events.filter(audit.RecordSettled))
        assert audit.auditOf(block.block_hash).settled == 1

    def test_block_audit_after_a_single_settlement_pays_the_rest_once(
        self, audit, ledger, block, merchant, outsider
    ):
        audit.settleRecord(
            block.block_hash, 0, block.records[0].leaf, block.proof(0), sender=outsider
        )

        receipt = audit.auditBlock(*block.audit_args(), sender=outsider)

        assert ledger.creditOf(merchant) == 1_500
        assert ledger.heldFor(merchant) == 0
        assert receipt.events.filter(audit.SettlementComplete)[0].settled == 5

    def test_last_single_settlement_completes_the_block(
        self, audit, settle_block, make_record, outsider
    ):
        record = make_record(amount=10)
        block = settle_block([record])

        receipt = audit.settleRecord(
            block.block_hash, 0, record.leaf, block.proof(0), sender=outsider
        )

        assert receipt.events.filter(audit.SettlementComplete)[0].settled == 1


class TestSettleRecordRefusals:
    """Proofs that fail move nothing, whoever sends them."""

    @pytest.fixture
    def block(self, settle_block, make_record, payers):
        return settle_block(
            [make_record(amount=100 * (i + 1), payer=payers[i]) for i in range(6)]
        )

    def refused(self, audit, ledger, payers, merchant, error, *args, sender):
        before = money(ledger, payers, [merchant])
        with ape.reverts(error):
            audit.settleRecord(*args, sender=sender)
        assert money(ledger, payers, [merchant]) == before

    def test_garbage_proof_from_an_outsider(
        self, audit, ledger, block, payers, merchant, outsider
    ):
        proof = [bytes([i]) * 32 for i in range(len(block.proof(1)))]

        self.refused(
            audit,
            ledger,
            payers,
            merchant,
            audit.AuditProofMismatch,
            block.block_hash,
            1,
            block.records[1].leaf,
            proof,
            sender=outsider,
        )

    def test_garbage_proof_from_the_auditor_also_reverts(
        self, audit, ledger, block, payers, merchant, owner
    ):
        proof = [bytes(32)] * len(block.proof(1))

        self.refused(
            audit,
            ledger,
            payers,
            merchant,
            audit.AuditProofMismatch,
            block.block_hash,
            1,
            block.records[1].leaf,
            proof,
            sender=owner,
        )

    def test_proof_of_index_i_presented_for_index_j(
        self, audit, ledger, block, payers, merchant, outsider
    ):
        self.refused(
            audit,
            ledger,
            payers,
            merchant,
            audit.AuditProofMismatch,
            block.block_hash,
            2,
            block.records[3].leaf,
            block.proof(3),
            sender=outsider,
        )

    def test_proof_against_the_wrong_block(
        self,
        audit,
        ledger,
        block,
        settle_block,
        make_record,
        payers,
        merchant,
        outsider,
    ):
        other = settle_block([make_record(amount=5) for _ in range(6)])

        self.refused(
            audit,
            ledger,
            payers,
            merchant,
            audit.AuditProofMismatch,
            other.block_hash,
            1,
            block.records[1].leaf,
            block.proof(1),
            sender=outsider,
        )

    def test_inner_node_presented_as_a_leaf(
        self, audit, ledger, block, payers, merchant, outsider
    ):
        """The 64 bytes under an inner node never pass for a 165-byte leaf."""
        left, right = (leaf_hash(block.records[i].leaf) for i in (0, 1))

        self.refused(
            audit,
            ledger,
            payers,
            merchant,
            audit.AuditMalformedLeaf,
            block.block_hash,
            0,
            left + right,
            block.proof(0)[1:],
            sender=outsider,
        )

    @pytest.mark.parametrize("index", [0, 5], ids=["first", "last"])
    def test_tampered_leaf(
        self, audit, ledger, block, payers, merchant, outsider, index
    ):
        leaf = bytearray(block.records[index].leaf)
        leaf[100 + 7] ^= 0x01  # the amount's lowest byte

        self.refused(
            audit,
            ledger,
            payers,
            merchant,
            audit.AuditProofMismatch,
            block.block_hash,
            index,
            bytes(leaf),
            block.proof(index),
            sender=outsider,
        )

    def test_proof_of_the_wrong_length(
        self, audit, ledger, block, payers, merchant, outsider
    ):
        self.refused(
            audit,
            ledger,
            payers,
            merchant,
            audit.AuditTreeProofLength,
            block.block_hash,
            1,
            block.records[1].leaf,
            block.proof(1)[:-1],
            sender=outsider,
        )

    def test_record_rejected_by_the_rules_holds_nothing_to_settle(
        self, audit, settle_block, make_record, outsider
    ):
        record = make_record(amount=999_999)
        block = settle_block([make_record(amount=1), record])

        with ape.reverts(audit.AuditNotApproved):
            audit.settleRecord(
                block.block_hash, 1, record.leaf, block.proof(1), sender=outsider
            )


class TestRejectRecord:
    """Claim 8: the auditor rejects a record whose bookkeeper proof does not match."""

    @pytest.fixture
    def block(self, settle_block, make_record, payers):
        return settle_block(
            [make_record(amount=100 * (i + 1), payer=payers[i]) for i in range(3)]
        )

    def bad_proof(self, block, index):
        return [bytes(32)] * len(block.proof(index))

    def test_mismatching_proof_returns_the_hold_to_the_payer(
        self, audit, ledger, block, payers, merchant, owner
    ):
        before = total(ledger, payers, [merchant])

        receipt = audit.rejectRecord(
            block.block_hash,
            1,
            block.records[1].leaf,
            self.bad_proof(block, 1),
            block.holds,
            block.releases_digest,
            sender=owner,
        )

        assert ledger.accountOf(payers[1]).balance == 100_000
        assert ledger.heldFor(merchant) == 100 + 300
        assert total(ledger, payers, [merchant]) == before
        event = receipt.events.filter(audit.TransactionRejected)[0]
        assert event.code == StatusCode.PROOF_MISMATCH
        assert (event.payer.lower(), event.index, event.amount) == (payers[1], 1, 200)
        assert bytes(event.terminalId) == b"TERM0001"
        assert audit.statusOf(block.block_hash, 1) == Status["audit"]

    def test_refund_follows_the_ledger_not_the_mismatching_leaf(
        self, audit, ledger, block, payers, merchant, owner, make_record
    ):
        """A leaf naming another payer and amount cannot redirect the refund."""
        forged = make_record(amount=5_000, payer=payers[7]).leaf

        audit.rejectRecord(
            block.block_hash,
            1,
            forged,
            block.proof(1),
            block.holds,
            block.releases_digest,
            sender=owner,
        )

        assert ledger.accountOf(payers[1]).balance == 100_000
        assert ledger.accountOf(payers[7]).balance == 100_000

    def test_refund_after_a_rule_rejection_finds_its_own_hold(
        self, audit, ledger, settle_block, make_record, payers, owner
    ):
        """Holds list approved records only; the refund skips the rejected one."""
        records = [
            make_record(amount=100, payer=payers[0]),
            make_record(amount=999_999, payer=payers[1]),  # insufficient balance
            make_record(amount=300, payer=payers[2]),
        ]
        block = settle_block(records)

        audit.rejectRecord(
            block.block_hash,
            2,
            records[2].leaf,
            self.bad_proof(block, 2),
            block.holds,
            block.releases_digest,
            sender=owner,
        )

        assert ledger.accountOf(payers[2]).balance == 100_000
        assert ledger.accountOf(payers[0]).balance == 100_000 - 100

    def test_block_completes_with_settled_and_rejected_counts(
        self, audit, block, owner
    ):
        audit.rejectRecord(
            block.block_hash,
            0,
            block.records[0].leaf,
            self.bad_proof(block, 0),
            block.holds,
            block.releases_digest,
            sender=owner,
        )

        receipt = audit.auditBlock(*block.audit_args(), sender=owner)

        event = receipt.events.filter(audit.SettlementComplete)[0]
        assert (event.settled, event.rejected) == (2, 1)

    def test_outsider_cannot_reject(
        self, audit, ledger, block, payers, merchant, outsider
    ):
        before = money(ledger, payers, [merchant])

        with ape.reverts(audit.AccessControlUnauthorizedAccount):
            audit.rejectRecord(
                block.block_hash,
                0,
                block.records[0].leaf,
                self.bad_proof(block, 0),
                block.holds,
                block.releases_digest,
                sender=outsider,
            )

        assert money(ledger, payers, [merchant]) == before

    def test_matching_proof_cannot_be_rejected(self, audit, block, owner):
        with ape.reverts(audit.AuditProofMatches):
            audit.rejectRecord(
                block.block_hash,
                0,
                block.records[0].leaf,
                block.proof(0),
                block.holds,
                block.releases_digest,
                sender=owner,
            )

    def test_settled_record_cannot_be_rejected(self, audit, block, owner, outsider):
        audit.settleRecord(
            block.block_hash, 0, block.records[0].leaf, block.proof(0), sender=outsider
        )

        with ape.reverts(audit.AuditAlreadyResolved):
            audit.rejectRecord(
                block.block_hash,
                0,
                block.records[0].leaf,
                self.bad_proof(block, 0),
                block.holds,
                block.releases_digest,
                sender=owner,
            )

    def test_rejection_with_altered_holds_is_refused(self, audit, block, owner):
        holds = bytearray(block.holds)
        holds[64 + 44] ^= 0x01  # the payer of record 1

        with ape.reverts(audit.AuditHoldsMismatch):
            audit.rejectRecord(
                block.block_hash,
                1,
                block.records[1].leaf,
                self.bad_proof(block, 1),
                bytes(holds),
                block.releases_digest,
                sender=owner,
            )

    def test_rejection_with_another_releases_digest_is_refused(
        self, audit, block, owner
    ):
        with ape.reverts(audit.AuditHoldsMismatch):
            audit.rejectRecord(
                block.block_hash,
                1,
                block.records[1].leaf,
                self.bad_proof(block, 1),
                block.holds,
                bytes(32),
                sender=owner,
            )


class TestLedgerAuditRole:
    def test_only_the_audit_role_releases(self, ledger, merchant, outsider):
        with ape.reverts(ledger.AccessControlUnauthorizedAccount):
            ledger.release([(merchant, 1)], sender=outsider)

    def test_only_the_audit_role_refunds(self, ledger, payers, merchant, outsider):
        with ape.reverts(ledger.AccessControlUnauthorizedAccount):
            ledger.refund(payers[0], merchant, 1, sender=outsider)

    def test_release_beyond_the_hold_is_refused(self, ledger, owner, merchant):
        ledger.grantRole(ledger.AUDIT_ROLE(), owner, sender=owner)

        with ape.reverts(ledger.LedgerHoldTooSmall):
            ledger.release([(merchant, 1)], sender=owner)


class TestDisputeView:
    """`verifySignature`: anyone proves on chain whether a terminal signed a record."""

    def test_genuine_signature_verifies(self, audit, make_record):
        record = make_record()

        assert audit.verifySignature(record.encoding, record.signature)

    def test_flipped_bit_fails(self, audit, make_record):
        record = make_record()
        signature = bytearray(record.signature)
        signature[-1] ^= 0x01

        assert not audit.verifySignature(record.encoding, bytes(signature))

    def test_signature_of_another_terminal_fails(self, audit, make_record):
        ours = make_record(terminal_id="TERM0001")
        theirs = make_record(terminal_id="TERM0002")

        assert not audit.verifySignature(ours.encoding, theirs.signature)

    def test_signature_over_another_record_fails(self, audit, make_record):
        first, second = make_record(amount=1), make_record(amount=2)

        assert not audit.verifySignature(second.encoding, first.signature)

    def test_unknown_terminal_is_named(self, audit, make_record):
        record = make_record(terminal_id="NOSUCH01")

        with ape.reverts(audit.AuditUnknownTerminal):
            audit.verifySignature(record.encoding, record.signature)

    def test_record_of_the_wrong_length_is_refused(self, audit, make_record):
        record = make_record()

        with ape.reverts(audit.AuditMalformedRecord):
            audit.verifySignature(record.encoding + b"\x00", record.signature)

    def test_leaf_commits_to_the_signature_the_view_accepts(self, audit, make_record):
        record = make_record()

        assert record.leaf[-32:] == hashlib.sha256(record.signature).digest()
        assert record.leaf[:133] == encode_record(record.record)


class TestNetworkState:
    def test_bookkeeper_records_a_state_change_for_auditors(self, ledger, bookkeeper):
        receipt = ledger.recordNetworkState(True, 5_200, 88_000, sender=bookkeeper)

        event = receipt.events.filter(ledger.NetworkStateChanged)[0]
        assert (event.congested, event.blockRate, event.linkRate) == (
            True,
            5_200,
            88_000,
        )

    def test_others_cannot_record_a_state(self, ledger, outsider):
        with ape.reverts(ledger.AccessControlUnauthorizedAccount):
            ledger.recordNetworkState(True, 1, 1, sender=outsider)
