"""The store: the outbox of signed records and what became of each, in one SQLite file.

The gateway adds records to the outbox; the bookkeeper takes them out in order, puts
them on chain and writes back, in one transaction per block, the block, every record's
place in it and every record's inclusion proof. Receipts and the audit read the proofs
from here long after the block.

Before the bookkeeper sends a block it writes a submission (the header and the record
ids), and after sending, the transaction hash: whatever point a crash interrupts, the
next start finds out from the chain whether the block landed.

Durability: WAL journal with ``synchronous=FULL``, so a record the store has accepted,
and a submission before its block is sent, survive a crash of the process or of the
machine. Writes that the chain can tell again (a block saved, its audit noted, the
network state) commit without waiting for the disk: in WAL mode a crash of the
process keeps them, a crash of the machine may lose the last of them but never
breaks the file, and the next durable commit makes them durable too.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from posaudit.audittree import HASH_SIZE, AuditTree
from posaudit.blocks import BlockHeader
from posaudit.exceptions import (
    MonitorError,
    RecordConflictError,
    RecordNotFoundError,
    StoreError,
)
from posaudit.records import SignedRecord
from posaudit.rules import StatusCode

_SCHEMA = """
CREATE TABLE IF NOT EXISTS blocks (
    block_hash BLOB PRIMARY KEY,
    height INTEGER NOT NULL UNIQUE,
    records_root BLOB NOT NULL,
    record_count INTEGER NOT NULL,
    chain_block INTEGER NOT NULL,
    transaction_hash BLOB NOT NULL,
    timestamp INTEGER NOT NULL,
    audit_transaction BLOB,
    appended_at REAL
);
CREATE TABLE IF NOT EXISTS records (
    id INTEGER PRIMARY KEY,
    record_id BLOB NOT NULL UNIQUE,
    terminal_id TEXT NOT NULL,
    sequence BLOB NOT NULL,
    encoding BLOB NOT NULL,
    signature BLOB NOT NULL,
    received_at REAL NOT NULL,
    block_hash BLOB REFERENCES blocks (block_hash),
    leaf_index INTEGER,
    proof BLOB,
    code INTEGER,
    UNIQUE (terminal_id, sequence)
);
CREATE TABLE IF NOT EXISTS submissions (
    block_hash BLOB PRIMARY KEY,
    header BLOB NOT NULL,
    record_ids BLOB NOT NULL,
    from_chain_block INTEGER NOT NULL,
    transaction_hash BLOB
);
-- A record the bookkeeper put in a block although it was in an earlier one already (an
-- exact replay, which the Ledger rejects): the record keeps its first place, and the
-- later block finds its leaf here.
CREATE TABLE IF NOT EXISTS repeats (
    block_hash BLOB NOT NULL REFERENCES blocks (block_hash),
    leaf_index INTEGER NOT NULL,
    record_id BLOB NOT NULL REFERENCES records (record_id),
    proof BLOB NOT NULL,
    code INTEGER NOT NULL,
    PRIMARY KEY (block_hash, leaf_index)
);
-- The network monitor's last snapshot, written by the bookkeeper's process for the
-- gateway's GET /v1/network.
CREATE TABLE IF NOT EXISTS network (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    snapshot TEXT NOT NULL,
    written_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS records_in_outbox ON records (id) WHERE block_hash IS NULL;
CREATE INDEX IF NOT EXISTS records_by_block ON records (block_hash, leaf_index);
"""

# The outbox in arrival order. Left to itself, SQLite reads it through the index by
# block and sorts it, all of it, on every query: 10 ms with 20,000 records waiting.
_OUTBOX = "INDEXED BY records_in_outbox WHERE block_hash IS NULL"

# Host parameters in one IN (...) list: SQLite allows 32,766 since 3.32, 999 before.
_IDS_PER_QUERY = 500

_RECORD_COLUMNS = (
    "encoding, signature, received_at, block_hash, leaf_index, proof, code"
)


@dataclass(frozen=True)
class StoredBlock:
    """A settlement block as the bookkeeper put it on chain."""

    block_hash: bytes
    height: int
    records_root: bytes
    record_count: int
    chain_block: int
    transaction_hash: bytes
    timestamp: int
    audit_transaction: bytes | None
    appended_at: float | None = None
    """Unix time the bookkeeper read the append receipt (or found the block on
    chain at a restart); None in stores written before it was kept."""


@dataclass(frozen=True)
class StoredRecord:
    """A signed record and, once it is in a block, its place, proof and status code."""

    signed: SignedRecord
    received_at: float
    block_hash: bytes | None = None
    leaf_index: int | None = None
    proof: tuple[bytes, ...] | None = None
    code: StatusCode | None = None


@dataclass(frozen=True)
class StoredLeaf:
    """A record of a block as its audit needs it: its leaf, place, proof and code."""

    leaf_index: int
    leaf: bytes
    proof: tuple[bytes, ...]
    code: StatusCode


@dataclass(frozen=True)
class Submission:
    """A block the bookkeeper has built and may have sent, not yet known to be on
    chain."""

    header: BlockHeader
    record_ids: tuple[bytes, ...]
    from_chain_block: int
    transaction_hash: bytes | None


class Store:
    """The outbox and archive of one gateway and its bookkeeper.

    Args:
        path: The SQLite file; created with its folder when missing.

    Raises:
        StoreError: The file cannot be opened as a database.
    """

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._db = sqlite3.connect(self.path, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute("PRAGMA foreign_keys=ON")
            self._db.executescript(_SCHEMA)
            self._add_missing_columns()
        except sqlite3.DatabaseError as err:
            raise StoreError(f"Cannot open the store {self.path}: {err}.") from err

    def _add_missing_columns(self) -> None:
        """Bring a store written by an older version up to the schema."""
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(blocks)")}
        if "appended_at" not in columns:
            self._db.execute("ALTER TABLE blocks ADD COLUMN appended_at REAL")

    def close(self) -> None:
        """Close the database."""
        self._db.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @contextmanager
    def _transaction(self, durable: bool = True) -> Iterator[sqlite3.Connection]:
        """One write transaction; ``durable=False`` for writes the bookkeeper can
        rebuild from the chain (see the module docs)."""
        if not durable:
            self._db.execute("PRAGMA synchronous=NORMAL")
        self._begin()
        try:
            yield self._db
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        else:
            self._db.execute("COMMIT")
        finally:
            if not durable:
                self._db.execute("PRAGMA synchronous=FULL")

    def _begin(self) -> None:
        """Take the write lock, asking again every ``_LOCK_POLL`` seconds while
        another connection holds it.

        SQLite's own busy handler sleeps ever longer between tries, up to 100 ms at a
        time: measured here while the gateway stored batches, it kept the bookkeeper
        waiting 1.3 s of a 4 s run, though the lock was free half of the time.

        Raises:
            StoreError: The lock stayed taken for ``_LOCK_TIMEOUT`` seconds.
        """
        self._db.execute("PRAGMA busy_timeout=0")
        deadline = time.monotonic() + _LOCK_TIMEOUT
        try:
            while True:
                try:
                    self._db.execute("BEGIN IMMEDIATE")
                    return
                except sqlite3.OperationalError as err:
                    if not _is_locked(err):
                        raise
                    if time.monotonic() > deadline:
                        raise StoreError(
                            f"The store {self.path} stayed locked by another writer"
                            f" for {_LOCK_TIMEOUT:g} s."
                        ) from err

                time.sleep(_LOCK_POLL)
        finally:
            self._db.execute(f"PRAGMA busy_timeout={_BUSY_TIMEOUT_MS}")

    def add(self, signed: SignedRecord) -> tuple[StoredRecord, bool]:
        """Put a record in the outbox, once.

        Returns:
            The stored record, and whether this call added it (False when the same
            record was already there: a repeated submission).

        Raises:
            RecordConflictError: Another record already holds this record id or this
                terminal id and sequence number.
        """
        (outcome,) = self.add_many([signed])
        if isinstance(outcome, RecordConflictError):
            raise outcome

        return outcome

    def add_many(
        self, records: Sequence[SignedRecord]
    ) -> list[tuple[StoredRecord, bool] | RecordConflictError]:
        """Put records in the outbox in one transaction (one disk sync for all).

        Returns:
            For each record, in order: the stored record and whether this call added
            it, or the conflict that kept it out. Conflicts do not stop the others.
        """
        outcomes = self._look_up(records)
        new = [
            signed
            for signed, outcome in zip(records, outcomes, strict=True)
            if outcome is None
        ]
        now = time.time()
        statements = _insert_statements(new, now)
        try:
            with self._transaction() as db:
                for statement, values in statements:
                    db.execute(statement, values)
        except sqlite3.IntegrityError:
            # Another writer stored one of them since the look-up, or the batch holds
            # a record twice: sort it out again, under the lock this time.
            return self._add_each(records, now)

        added = iter(new)
        return [
            (StoredRecord(signed=next(added), received_at=now), True)
            if outcome is None
            else outcome
            for outcome in outcomes
        ]

    def _look_up(
        self, records: Sequence[SignedRecord]
    ) -> list[tuple[StoredRecord, bool] | RecordConflictError | None]:
        """Each record's repeat or conflict in the store, None for a new one.

        Read before the write lock is taken: in WAL mode reads never wait, and the
        gateway then holds the lock, which the bookkeeper waits for, only while it
        inserts (measured here: 5 ms instead of 9 ms for 1,000 records). The store
        is asked once per ``_IDS_PER_QUERY`` records, not once per record.
        """
        found: dict[object, list[StoredRecord]] = {}
        for start in range(0, len(records), _IDS_PER_QUERY):
            for stored in self._stored_like(records[start : start + _IDS_PER_QUERY]):
                record = stored.signed.record
                for key in (record.record_id, record.key):
                    found.setdefault(key, []).append(stored)

        outcomes: list[tuple[StoredRecord, bool] | RecordConflictError | None] = []
        for signed in records:
            record = signed.record
            same = found.get(record.record_id, []) + found.get(record.key, [])
            try:
                existing = _same_record(signed, same)
            except RecordConflictError as err:
                outcomes.append(err)
                continue

            outcomes.append(None if existing is None else (existing, False))

        return outcomes

    def _stored_like(self, records: Sequence[SignedRecord]) -> list[StoredRecord]:
        """The stored records that share an id, or a terminal and sequence, with one
        of ``records``."""
        ids = [signed.record.record_id for signed in records]
        keys = [
            value
            for signed in records
            for value in (
                signed.record.terminal_id,
                _sequence_key(signed.record.sequence),
            )
        ]
        # A join with the wanted pairs, which SQLite looks up in the unique index
        # of (terminal_id, sequence); "IN (VALUES ...)" would scan the table.
        columns = ", ".join(f"r.{name}" for name in _RECORD_COLUMNS.split(", "))
        rows = self._db.execute(
            f"WITH wanted (terminal_id, sequence) AS"
            f" (VALUES {', '.join(['(?, ?)'] * len(records))})"
            f" SELECT {columns} FROM wanted CROSS JOIN records AS r"
            " ON r.terminal_id = wanted.terminal_id AND r.sequence = wanted.sequence"
            f" UNION SELECT {_RECORD_COLUMNS} FROM records WHERE record_id IN"
            f" ({', '.join('?' * len(ids))})",
            [*keys, *ids],
        ).fetchall()
        return [_stored_record(row) for row in rows]

    def _add_each(
        self, records: Sequence[SignedRecord], now: float
    ) -> list[tuple[StoredRecord, bool] | RecordConflictError]:
        outcomes: list[tuple[StoredRecord, bool] | RecordConflictError] = []
        with self._transaction() as db:
            for signed in records:
                try:
                    existing = self._find_same(db, signed)
                except RecordConflictError as err:
                    outcomes.append(err)
                    continue

                if existing is not None:
                    outcomes.append((existing, False))
                    continue

                self._insert(db, signed, now)
                outcomes.append((StoredRecord(signed=signed, received_at=now), True))

        return outcomes

    def _insert(self, db: sqlite3.Connection, signed: SignedRecord, now: float) -> None:
        db.execute(
            f"{_INSERT_RECORD} VALUES (?, ?, ?, ?, ?, ?)", _record_row(signed, now)
        )

    def _find_same(
        self, db: sqlite3.Connection, signed: SignedRecord
    ) -> StoredRecord | None:
        record = signed.record
        rows = db.execute(
            f"SELECT {_RECORD_COLUMNS} FROM records"
            " WHERE record_id = ? OR (terminal_id = ? AND sequence = ?)",
            (record.record_id, record.terminal_id, _sequence_key(record.sequence)),
        ).fetchall()
        return _same_record(signed, [_stored_record(row) for row in rows])

    def pending(self, limit: int, skip: int = 0) -> list[StoredRecord]:
        """The oldest ``limit`` records of the outbox, after its first ``skip``."""
        rows = self._db.execute(
            f"SELECT {_RECORD_COLUMNS} FROM records {_OUTBOX} ORDER BY id"
            " LIMIT ? OFFSET ?",
            (limit, skip),
        ).fetchall()
        return [_stored_record(row) for row in rows]

    def save_block(
        self,
        block: StoredBlock,
        records: Sequence[SignedRecord],
        tree: AuditTree,
        codes: Sequence[StatusCode],
    ) -> None:
        """Record a block the Ledger accepted, with each record's place and proof.

        Records not yet in the outbox are added, and the block's submission is closed.
        All of it is one transaction.

        Raises:
            StoreError: The tree or the codes do not match the records.
            RecordConflictError: A record's id is stored with other content.
        """
        if tree.size != len(records) or len(codes) != len(records):
            raise StoreError(
                f"A block of {len(records)} records needs as many leaves and codes;"
                f" got a tree of {tree.size} and {len(codes)} codes."
            )

        proofs = tree.inclusion_proofs()
        # Not durable: if lost, the submission it deletes comes back with it, and
        # the reconciliation finds the block on chain again.
        with self._transaction(durable=False) as db:
            db.execute(
                "DELETE FROM submissions WHERE block_hash = ?", (block.block_hash,)
            )
            db.execute(
                "INSERT INTO blocks VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    block.block_hash,
                    block.height,
                    block.records_root,
                    block.record_count,
                    block.chain_block,
                    block.transaction_hash,
                    block.timestamp,
                    block.audit_transaction,
                    block.appended_at,
                ),
            )
            self._add_missing(db, records)
            rows = [
                (
                    block.block_hash,
                    index,
                    b"".join(proofs[index]),
                    int(codes[index]),
                    signed.record.record_id,
                    signed.encoding,
                )
                for index, signed in enumerate(records)
            ]
            placed = db.executemany(
                "UPDATE records SET block_hash = ?, leaf_index = ?, proof = ?,"
                " code = ? WHERE record_id = ? AND encoding = ? AND block_hash IS NULL",
                rows,
            ).rowcount
            if placed != len(records):
                self._place_repeats(db, block.block_hash, rows)

    def _place_repeats(
        self, db: sqlite3.Connection, block_hash: bytes, rows: list[tuple[Any, ...]]
    ) -> None:
        """Note the records of a block that an earlier block holds already."""
        for row in rows:
            _, index, proof, code, record_id, encoding = row
            placed = db.execute(
                "SELECT block_hash, leaf_index, encoding FROM records"
                " WHERE record_id = ?",
                (record_id,),
            ).fetchone()
            if (placed[0], placed[1]) == (block_hash, index):
                continue

            if placed[2] != encoding:
                raise RecordConflictError(
                    f"Record {record_id.hex()} at index {index} of block"
                    f" 0x{block_hash.hex()} is stored with other content."
                )

            db.execute(
                "INSERT INTO repeats VALUES (?, ?, ?, ?, ?)",
                (block_hash, index, record_id, proof, code),
            )

    def _add_missing(
        self, db: sqlite3.Connection, records: Sequence[SignedRecord]
    ) -> None:
        """Add the records that are not in the store (a block built from records
        handed over directly rather than from the outbox)."""
        ids = [signed.record.record_id for signed in records]
        known: set[bytes] = set()
        for start in range(0, len(ids), _IDS_PER_QUERY):
            chunk = ids[start : start + _IDS_PER_QUERY]
            marks = ", ".join("?" * len(chunk))
            rows = db.execute(
                f"SELECT record_id FROM records WHERE record_id IN ({marks})", chunk
            )
            known.update(row[0] for row in rows)

        now = time.time()
        for signed in records:
            if signed.record.record_id in known:
                continue

            if self._find_same(db, signed) is None:
                self._insert(db, signed, now)

    def outbox_size(self, limit: int | None = None) -> int:
        """Number of records waiting for a block; counting stops at ``limit``."""
        row = self._db.execute(
            f"SELECT COUNT(*) FROM (SELECT 1 FROM records {_OUTBOX} LIMIT ?)",
            (-1 if limit is None else limit,),
        ).fetchone()
        return int(row[0])

    def oldest_waiting_since(self, skip: int = 0) -> float | None:
        """When the first record of the outbox, after its first ``skip``, arrived
        (Unix time); None if there is none."""
        row = self._db.execute(
            f"SELECT received_at FROM records {_OUTBOX} ORDER BY id LIMIT 1 OFFSET ?",
            (skip,),
        ).fetchone()
        return None if row is None else float(row[0])

    def records_by_id(self, record_ids: Sequence[bytes]) -> list[StoredRecord]:
        """The records with these ids, in the order given.

        Raises:
            RecordNotFoundError: One of them is not in the store.
        """
        return [self.record(record_id) for record_id in record_ids]

    def begin_submission(
        self, header: BlockHeader, record_ids: Sequence[bytes], from_chain_block: int
    ) -> None:
        """Note a block about to be sent, with the chain block to search it from."""
        with self._transaction() as db:
            db.execute(
                "INSERT INTO submissions VALUES (?, ?, ?, ?, NULL)",
                (
                    header.block_hash,
                    header.encode(),
                    b"".join(record_ids),
                    from_chain_block,
                ),
            )

    def note_transaction(self, block_hash: bytes, transaction_hash: bytes) -> None:
        """Note the transaction that carries a submitted block."""
        with self._transaction() as db:
            db.execute(
                "UPDATE submissions SET transaction_hash = ? WHERE block_hash = ?",
                (transaction_hash, block_hash),
            )

    def submissions(self) -> list[Submission]:
        """Blocks built and perhaps sent, whose fate is not yet in the store."""
        rows = self._db.execute(
            "SELECT header, record_ids, from_chain_block, transaction_hash"
            " FROM submissions ORDER BY rowid"
        ).fetchall()
        return [
            Submission(
                header=BlockHeader.decode(header),
                record_ids=tuple(ids[i : i + 16] for i in range(0, len(ids), 16)),
                from_chain_block=from_chain_block,
                transaction_hash=transaction_hash,
            )
            for header, ids, from_chain_block, transaction_hash in rows
        ]

    def drop_submission(self, block_hash: bytes) -> None:
        """Forget a submission that never reached the chain: its records stay in the
        outbox for the next block."""
        with self._transaction() as db:
            db.execute("DELETE FROM submissions WHERE block_hash = ?", (block_hash,))

    def return_to_outbox(self, block_hash: bytes) -> int:
        """Undo a block the chain no longer has: its records wait for a new block.

        Returns:
            The number of records returned to the outbox.
        """
        with self._transaction() as db:
            returned = db.execute(
                "UPDATE records SET block_hash = NULL, leaf_index = NULL,"
                " proof = NULL, code = NULL WHERE block_hash = ?",
                (block_hash,),
            ).rowcount
            db.execute("DELETE FROM repeats WHERE block_hash = ?", (block_hash,))
            db.execute("DELETE FROM blocks WHERE block_hash = ?", (block_hash,))

        return int(returned)

    def blocks(self) -> list[StoredBlock]:
        """Every stored block, oldest first."""
        rows = self._db.execute("SELECT * FROM blocks ORDER BY height").fetchall()
        return [StoredBlock(*row) for row in rows]

    def save_audit(self, block_hash: bytes, transaction_hash: bytes) -> None:
        """Note the transaction that completed a block's settlement."""
        # Not durable: if lost, the next start audits the block again, which the
        # audit module answers with no change.
        with self._transaction(durable=False) as db:
            db.execute(
                "UPDATE blocks SET audit_transaction = ? WHERE block_hash = ?",
                (transaction_hash, block_hash),
            )

    def record(self, record_id: bytes) -> StoredRecord:
        """The record with this 16-byte id.

        Raises:
            RecordNotFoundError: No such record.
        """
        row = self._db.execute(
            f"SELECT {_RECORD_COLUMNS} FROM records WHERE record_id = ?", (record_id,)
        ).fetchone()
        if row is None:
            raise RecordNotFoundError(f"No record {record_id.hex()} in {self.path}.")

        return _stored_record(row)

    def block(self, block_hash: bytes) -> StoredBlock:
        """The block with this hash.

        Raises:
            RecordNotFoundError: No such block.
        """
        row = self._db.execute(
            "SELECT * FROM blocks WHERE block_hash = ?", (block_hash,)
        ).fetchone()
        if row is None:
            raise RecordNotFoundError(f"No block 0x{block_hash.hex()} in {self.path}.")

        return StoredBlock(*row)

    def block_records(self, block_hash: bytes) -> list[StoredRecord]:
        """The records of a block, in leaf order (a repeat of a record placed in an
        earlier block with its place in this one)."""
        rows = self._db.execute(
            f"SELECT {_RECORD_COLUMNS} FROM records WHERE block_hash = ?"
            " UNION ALL SELECT r.encoding, r.signature, r.received_at, p.block_hash,"
            " p.leaf_index, p.proof, p.code FROM repeats AS p JOIN records AS r"
            " USING (record_id) WHERE p.block_hash = ? ORDER BY 5",
            (block_hash, block_hash),
        ).fetchall()
        return [_stored_record(row) for row in rows]

    def block_leaves(self, block_hash: bytes) -> list[StoredLeaf]:
        """The leaves of a block, in leaf order, read without decoding the records:
        what an audit checks against the chain."""
        rows = self._db.execute(
            "SELECT encoding, signature, leaf_index, proof, code FROM records"
            " WHERE block_hash = ? UNION ALL SELECT r.encoding, r.signature,"
            " p.leaf_index, p.proof, p.code FROM repeats AS p JOIN records AS r"
            " USING (record_id) WHERE p.block_hash = ? ORDER BY 3",
            (block_hash, block_hash),
        ).fetchall()
        return [
            StoredLeaf(
                leaf_index=index,
                leaf=encoding + hashlib.sha256(signature).digest(),
                proof=_split_proof(proof),
                code=StatusCode(code),
            )
            for encoding, signature, index, proof, code in rows
        ]

    def save_network(self, snapshot: Mapping[str, Any]) -> None:
        """Keep the network monitor's snapshot, replacing the one before."""
        with self._transaction(durable=False) as db:
            db.execute(
                "INSERT OR REPLACE INTO network VALUES (1, ?, ?)",
                (json.dumps(snapshot), time.time()),
            )

    def unaudited_blocks(self) -> list[StoredBlock]:
        """Blocks whose settlement is not yet complete, oldest first."""
        rows = self._db.execute(
            "SELECT * FROM blocks WHERE audit_transaction IS NULL ORDER BY height"
        ).fetchall()
        return [StoredBlock(*row) for row in rows]


# Seconds between two tries for the write lock, and before giving up; milliseconds
# other statements wait for a lock (SQLite's own handler; reads in WAL mode rarely do).
_LOCK_POLL = 0.0005
_LOCK_TIMEOUT = 30.0
_BUSY_TIMEOUT_MS = 5_000

_INSERT_RECORD = (
    "INSERT INTO records (record_id, terminal_id, sequence, encoding, signature,"
    " received_at)"
)
# Records in one INSERT statement: 6 values each, under SQLite's 32,766 parameters.
_ROWS_PER_INSERT = 500


def _record_row(signed: SignedRecord, now: float) -> tuple[Any, ...]:
    record = signed.record
    return (
        record.record_id,
        record.terminal_id,
        _sequence_key(record.sequence),
        signed.encoding,
        signed.signature,
        now,
    )


def _insert_statements(
    records: Sequence[SignedRecord], now: float
) -> list[tuple[str, list[Any]]]:
    """INSERT statements of up to ``_ROWS_PER_INSERT`` records each, with their values.

    One statement of many rows rather than one execution per row: sqlite3 gives up
    the GIL around every execution, and in a busy gateway each one waited to get it
    back, which kept the store locked for 23 ms per 1,000 records instead of 5.
    """
    statements = []
    for start in range(0, len(records), _ROWS_PER_INSERT):
        chunk = records[start : start + _ROWS_PER_INSERT]
        values = [value for signed in chunk for value in _record_row(signed, now)]
        rows = ", ".join(["(?, ?, ?, ?, ?, ?)"] * len(chunk))
        statements.append((f"{_INSERT_RECORD} VALUES {rows}", values))

    return statements


def _same_record(
    signed: SignedRecord, stored: Sequence[StoredRecord]
) -> StoredRecord | None:
    """The stored copy of ``signed`` among records sharing its id or its terminal
    and sequence, or None when there are none.

    Raises:
        RecordConflictError: One of them has other content.
    """
    for candidate in stored:
        if candidate.signed.encoding != signed.encoding:
            record, other = signed.record, candidate.signed.record
            raise RecordConflictError(
                f"Record {record.record_id.hex()} (terminal {record.terminal_id},"
                f" sequence {record.sequence}) conflicts with stored record"
                f" {other.record_id.hex()} (terminal {other.terminal_id},"
                f" sequence {other.sequence}), whose content differs."
            )

    return stored[0] if stored else None


def _is_locked(err: sqlite3.OperationalError) -> bool:
    return getattr(err, "sqlite_errorcode", None) == sqlite3.SQLITE_BUSY or (
        "locked" in str(err)
    )


def read_network(path: Path | str) -> dict[str, Any]:
    """The network monitor's last snapshot in the store at ``path`` (read-only).

    Raises:
        MonitorError: The store holds none yet.
    """
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            row = db.execute("SELECT snapshot FROM network WHERE id = 1").fetchone()
        finally:
            db.close()
    except sqlite3.Error as err:
        raise MonitorError(
            f"Cannot read the network state from {path}: {err}."
        ) from err

    if row is None:
        raise MonitorError(f"The network monitor has not reported to {path} yet.")

    return dict(json.loads(row[0]))


def _sequence_key(sequence: int) -> bytes:
    # Sequences reach 2**64 - 1, past SQLite's signed integers; 8 big-endian bytes
    # keep them exact and in order.
    return sequence.to_bytes(8, "big")


def _stored_record(row: tuple[Any, ...]) -> StoredRecord:
    encoding, signature, received_at, block_hash, leaf_index, proof, code = row
    return StoredRecord(
        signed=SignedRecord.from_encoding(encoding, signature),
        received_at=received_at,
        block_hash=block_hash,
        leaf_index=leaf_index,
        proof=None if proof is None else _split_proof(proof),
        code=None if code is None else StatusCode(code),
    )


def _split_proof(proof: bytes) -> tuple[bytes, ...]:
    return tuple(proof[i : i + HASH_SIZE] for i in range(0, len(proof), HASH_SIZE))
