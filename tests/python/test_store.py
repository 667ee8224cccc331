"""The store: outbox, blocks and proofs in one SQLite file."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from posaudit.audittree import AuditTree, leaf_hash, root_from_inclusion_proof
from posaudit.exceptions import RecordConflictError, RecordNotFoundError, StoreError
from posaudit.records import Domain, SettlementRecord, SignedRecord, encode_record
from posaudit.rules import StatusCode
from posaudit.signing import sign
from posaudit.store import Store, StoredBlock

DOMAIN = Domain(31337, "0x" + "1e" * 20)


def signed(key: rsa.RSAPrivateKey, sequence: int, **overrides: object) -> SignedRecord:
    fields: dict[str, object] = {
        "domain": DOMAIN,
        "record_id": os.urandom(16),
        "terminal_id": "TERM0001",
        "sequence": sequence,
        "payer": "0x" + "a1" * 20,
        "merchant": "0x" + "b2" * 20,
        "amount": 1_000,
        "currency": "EUR",
        "timestamp": 1_900_000_000,
        "valid_until": 1_900_003_600,
    }
    fields.update(overrides)
    record = SettlementRecord(**fields)  # type: ignore[arg-type]
    return SignedRecord(record, sign(key, encode_record(record)))


def block_of(records: list[SignedRecord], height: int = 1) -> StoredBlock:
    tree = AuditTree.from_leaves(r.leaf for r in records)
    return StoredBlock(
        block_hash=bytes([height]) * 32,
        height=height,
        records_root=tree.root,
        record_count=tree.size,
        chain_block=10 + height,
        transaction_hash=bytes([0xAA, height]) * 16,
        timestamp=1_900_000_000 + height,
        audit_transaction=None,
    )


@pytest.fixture
def store(tmp_path: Path) -> Store:
    with Store(tmp_path / "db" / "posaudit.db") as store:
        yield store


class TestOutbox:
    def test_added_record_reads_back_byte_for_byte(self, store, terminal_key):
        record = signed(terminal_key, 1)

        stored, created = store.add(record)

        assert created
        assert stored.signed == record
        assert stored.signed.signature == record.signature
        assert stored.block_hash is None
        assert store.record(record.record.record_id).signed.encoding == record.encoding

    def test_repeated_submission_returns_the_first(self, store, terminal_key):
        record = signed(terminal_key, 1)
        first, _ = store.add(record)

        again, created = store.add(record)

        assert not created
        assert again.received_at == first.received_at
        assert len(store.pending(10)) == 1

    def test_same_terminal_and_sequence_with_other_content_conflicts(
        self, store, terminal_key
    ):
        store.add(signed(terminal_key, 7, amount=100))

        with pytest.raises(RecordConflictError, match="sequence 7"):
            store.add(signed(terminal_key, 7, amount=200))

        assert [s.signed.record.amount for s in store.pending(10)] == [100]

    def test_same_record_id_with_other_content_conflicts(self, store, terminal_key):
        first = signed(terminal_key, 1)
        store.add(first)

        with pytest.raises(RecordConflictError):
            store.add(signed(terminal_key, 2, record_id=first.record.record_id))

    def test_add_many_stores_new_reports_duplicates_and_conflicts(
        self, store, terminal_key
    ):
        first, second = signed(terminal_key, 1), signed(terminal_key, 2)
        store.add(first)
        clash = signed(terminal_key, 2, amount=999)

        outcomes = store.add_many([first, second, clash, second])

        assert outcomes[0][1] is False
        assert outcomes[1][1] is True
        assert isinstance(outcomes[2], RecordConflictError)
        assert outcomes[3][1] is False
        assert [s.signed.record.amount for s in store.pending(10)] == [1_000, 1_000]

    def test_pending_is_in_arrival_order_and_limited(self, store, terminal_key):
        records = [signed(terminal_key, sequence) for sequence in (5, 3, 9, 1)]
        for record in records:
            store.add(record)

        pending = store.pending(3)

        assert [s.signed.record.sequence for s in pending] == [5, 3, 9]

    def test_largest_sequence_is_kept_exactly(self, store, terminal_key):
        """2**64 - 1 is beyond SQLite's signed integers; it must survive."""
        record = signed(terminal_key, 2**64 - 1)

        store.add(record)

        assert store.pending(1)[0].signed.record.sequence == 2**64 - 1

    def test_unknown_record_is_named(self, store):
        with pytest.raises(RecordNotFoundError, match="00ff"):
            store.record(bytes.fromhex("00ff" * 8))


class TestBlocks:
    def test_saved_block_gives_every_record_its_place_and_proof(
        self, store, terminal_key
    ):
        records = [signed(terminal_key, sequence) for sequence in range(1, 6)]
        for record in records[:3]:
            store.add(record)
        block = block_of(records)
        codes = [StatusCode.APPROVED] * 4 + [StatusCode.EXPIRED]
        tree = AuditTree.from_leaves(r.leaf for r in records)

        store.save_block(block, records, tree, codes)

        assert store.pending(10) == []
        stored = store.block_records(block.block_hash)
        assert [s.leaf_index for s in stored] == [0, 1, 2, 3, 4]
        assert stored[4].code == StatusCode.EXPIRED
        for s in stored:
            computed = root_from_inclusion_proof(
                s.leaf_index, 5, leaf_hash(s.signed.leaf), s.proof
            )
            assert computed == block.records_root
        assert store.block(block.block_hash) == block

    def test_replayed_record_keeps_its_first_place_and_joins_the_later_block(
        self, store, terminal_key
    ):
        first = [signed(terminal_key, 1), signed(terminal_key, 2)]
        store.save_block(block_of(first, 1), first, _tree(first), [0, 0])
        later = [signed(terminal_key, 3), first[1]]
        codes = [StatusCode.APPROVED, StatusCode.SEQUENCE_NOT_ABOVE]

        store.save_block(block_of(later, 2), later, _tree(later), codes)

        original = store.record(first[1].record.record_id)
        assert (original.block_hash, original.leaf_index) == (bytes([1]) * 32, 1)
        assert original.code == StatusCode.APPROVED
        again = store.block_records(bytes([2]) * 32)
        assert [s.signed.leaf for s in again] == [r.leaf for r in later]
        assert [(s.leaf_index, s.code) for s in again] == [(0, codes[0]), (1, codes[1])]
        assert store.return_to_outbox(bytes([2]) * 32) == 1
        assert store.block_records(bytes([2]) * 32) == []

    def test_other_content_under_a_placed_id_is_refused(self, store, terminal_key):
        first = [signed(terminal_key, 1)]
        store.save_block(block_of(first, 1), first, _tree(first), [0])
        impostor = [signed(terminal_key, 2, record_id=first[0].record.record_id)]

        with pytest.raises(RecordConflictError):
            store.save_block(block_of(impostor, 2), impostor, _tree(impostor), [0])

        assert [b.height for b in store.unaudited_blocks()] == [1]

    def test_audit_transaction_closes_the_block(self, store, terminal_key):
        records = [signed(terminal_key, 1)]
        first, second = block_of(records, 1), block_of([signed(terminal_key, 2)], 2)
        store.save_block(first, records, AuditTree.from_leaves([records[0].leaf]), [0])
        store.save_block(
            second,
            [signed(terminal_key, 3)],
            AuditTree.from_leaves([signed(terminal_key, 4).leaf]),
            [0],
        )

        store.save_audit(first.block_hash, b"\x01" * 32)

        assert [b.height for b in store.unaudited_blocks()] == [2]
        assert store.block(first.block_hash).audit_transaction == b"\x01" * 32

    def test_mismatched_tree_changes_nothing(self, store, terminal_key):
        records = [signed(terminal_key, 1), signed(terminal_key, 2)]

        with pytest.raises(StoreError, match="2 records"):
            store.save_block(
                block_of(records),
                records,
                AuditTree.from_leaves([records[0].leaf]),
                [0, 0],
            )

        assert store.pending(10) == []
        assert store.unaudited_blocks() == []

    def test_failed_block_write_rolls_back_entirely(self, store, terminal_key):
        """A block whose hash is already stored adds none of its records."""
        records = [signed(terminal_key, 1)]
        block = block_of(records)
        tree = AuditTree.from_leaves([records[0].leaf])
        store.save_block(block, records, tree, [0])
        later = [signed(terminal_key, 2)]

        with pytest.raises(sqlite3.IntegrityError):
            store.save_block(block, later, AuditTree.from_leaves([later[0].leaf]), [0])

        with pytest.raises(RecordNotFoundError):
            store.record(later[0].record.record_id)


def test_store_survives_reopening(tmp_path, terminal_key):
    """What one process wrote, the next one reads: WAL with synchronous=FULL."""
    path = tmp_path / "posaudit.db"
    record = signed(terminal_key, 1)
    with Store(path) as store:
        store.add(record)

    with Store(path) as store:
        assert store.pending(5)[0].signed == record
        mode = store._db.execute("PRAGMA journal_mode").fetchone()[0]
        assert mode == "wal"


def test_file_that_is_no_database_is_named(tmp_path):
    path = tmp_path / "junk.db"
    path.write_bytes(b"not a database at all" * 100)

    with pytest.raises(StoreError, match=r"junk\.db"):
        Store(path)


def _tree(records: list[SignedRecord]) -> AuditTree:
    return AuditTree.from_leaves(r.leaf for r in records)


def test_store_of_an_older_version_gains_the_appended_at_column(tmp_path):
    path = tmp_path / "old.db"
    db = sqlite3.connect(path)
    db.execute(
        "CREATE TABLE blocks (block_hash BLOB PRIMARY KEY, height INTEGER NOT NULL"
        " UNIQUE, records_root BLOB NOT NULL, record_count INTEGER NOT NULL,"
        " chain_block INTEGER NOT NULL, transaction_hash BLOB NOT NULL, timestamp"
        " INTEGER NOT NULL, audit_transaction BLOB)"
    )
    db.execute(
        "INSERT INTO blocks VALUES (?, 1, ?, 1, 5, ?, 7, NULL)", (b"\1" * 32,) * 3
    )
    db.commit()
    db.close()

    with Store(path) as store:
        (block,) = store.blocks()

    assert block.height == 1
    assert block.appended_at is None
