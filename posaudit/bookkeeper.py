"""The bookkeeper: puts records on chain as settlement blocks and audits each block.

For every block it appends, the bookkeeper keeps the audit tree's inclusion proofs in
the store beside the records, then hands them to the audit module (claim 7): it checks
each proof against the root the Ledger stored; when all match, one whole-block call
settles the block; a record whose proof does not match is rejected and its hold goes
back to the payer (claim 8), and the others are settled one by one.

Crash safety: before a block is sent, its header and record ids are written to the store
as a submission, and the transaction hash right after sending. :meth:`Bookkeeper.
reconcile`, run at every start, asks the chain what became of each submission, returns
to the outbox the records of blocks the node no longer has, and audits what is left
unaudited, so that no acknowledged record is lost and none is settled twice.

Gas: a block is sized by the gas it needs, measured by the chain, not assumed. Its
transaction gets a bound from its record count, never more than half the chain's block
gas limit, instead of an estimate (which costs the node several executions of the
block). A block that needs more runs out of gas, changes nothing, and goes again with
half the records.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

from web3.exceptions import TimeExhausted, TransactionNotFound

from posaudit.audit import AuditClient
from posaudit.audittree import AuditTree, leaf_hash, root_from_inclusion_proof
from posaudit.blocks import BlockHeader
from posaudit.exceptions import (
    AuditError,
    AuditTreeError,
    BlockOutOfGasError,
    ChainError,
    OutOfGasError,
)
from posaudit.ledger import AppendResult, LedgerClient, Tip
from posaudit.records import SignedRecord
from posaudit.rules import StatusCode
from posaudit.store import Store, StoredBlock, StoredLeaf, Submission

log = logging.getLogger(__name__)

# Gas bounds of one block, above what tests/python/test_block_gas.py measures on anvil
# for the costliest records: terminals and merchants new to the Ledger, each writing
# a first sequence number and a first hold (an append), or a first credit (an audit).
# A bound is only a limit: a transaction pays for the gas it uses.
APPEND_GAS_PER_RECORD = 80_000
APPEND_GAS_PER_BLOCK = 250_000
AUDIT_GAS_PER_RECORD = 40_000
AUDIT_GAS_PER_BLOCK = 150_000
# Seconds the bookkeeper goes on the chain's time as last read, moved on by its own
# clock, before it asks the node again.
CHAIN_TIME_TTL = 1.0


@dataclass(frozen=True)
class AuditResult:
    """What the audit of one block did."""

    block_hash: bytes
    settled: int
    rejected: tuple[int, ...]
    transactions: tuple[bytes, ...]
    gas_used: int


@dataclass(frozen=True)
class BatchPolicy:
    """How many records go into the next block (claim 7).

    Attributes:
        aggregate_size: n, the records of an aggregate block when congested.
        flush_timeout: Seconds the oldest waiting record may wait for n records to
            gather before a smaller aggregate block goes out anyway, so that a quiet
            terminal never stalls.
        max_block_records: Upper bound on any block, to stay well under the chain's
            block gas limit.
    """

    aggregate_size: int = 64
    flush_timeout: float = 2.0
    max_block_records: int = 512

    def records_to_take(self, waiting: int, oldest_age: float, congested: bool) -> int:
        """Size of the next block, or 0 to wait.

        Args:
            waiting: Records in the outbox.
            oldest_age: Seconds the oldest of them has waited.
            congested: The network monitor's verdict.
        """
        if waiting == 0:
            return 0

        if not congested:
            return 1

        size = min(self.aggregate_size, self.max_block_records)
        if waiting >= size:
            return size

        return waiting if oldest_age >= self.flush_timeout else 0

    def due_in(self, waiting: int, oldest_age: float, congested: bool) -> float:
        """Seconds until :meth:`records_to_take` could say otherwise without another
        record arriving: until the oldest record's flush timeout, or forever."""
        if self.records_to_take(waiting, oldest_age, congested):
            return 0.0

        if waiting and congested:
            return max(0.0, self.flush_timeout - oldest_age)

        return float("inf")


class Committed(NamedTuple):
    """What the Ledger committed a block's money to: the approved records' holds and
    the block's releases (see :class:`posaudit.ledger.AppendResult`)."""

    holds: bytes
    releases: tuple[tuple[str, int], ...]


@dataclass(frozen=True)
class PreparedBlock:
    """A block built from the outbox and noted as a submission, not yet sent."""

    header: BlockHeader
    records: tuple[SignedRecord, ...]


@dataclass(frozen=True)
class SentBlock(PreparedBlock):
    """A block whose append transaction is sent."""

    transaction_hash: bytes


@dataclass(frozen=True)
class Reconciliation:
    """What a start-up reconciliation found and did."""

    returned_to_outbox: int
    submissions_landed: int
    submissions_dropped: int
    blocks_audited: int


class Bookkeeper:
    """Appends blocks, keeps their proofs and audits them.

    Args:
        store: Where records, blocks and proofs are kept.
        ledger: The Ledger client, with the bookkeeper account.
        audit: The audit client; its account needs the auditor role to reject.
    """

    def __init__(self, store: Store, ledger: LedgerClient, audit: AuditClient) -> None:
        self.store = store
        self.ledger = ledger
        self.audit_client = audit
        self._gas_cap: int | None = None
        # Lowered when a block runs out of gas, lifted again by a block that fits.
        self._size_cap: int | None = None
        # The head after this bookkeeper's last block: the next one links to it
        # without asking the Ledger. Forgotten on any failure.
        self._tip: Tip | None = None
        # The chain block that last block landed in, and the chain's time as last
        # read (time.monotonic() then): see _chain_now.
        self._landed_in: int | None = None
        self._chain_time: tuple[int, float] | None = None

    @property
    def gas_cap(self) -> int:
        """The most gas one transaction of the bookkeeper may take: half the chain's
        block gas limit, read once."""
        if self._gas_cap is None:
            limit = int(self.ledger.w3.eth.get_block("latest")["gasLimit"])
            self._gas_cap = limit // 2

        return self._gas_cap

    def append_gas(self, records: int) -> int:
        """The gas limit of an append of ``records`` records."""
        bound = APPEND_GAS_PER_BLOCK + APPEND_GAS_PER_RECORD * records
        return min(bound, self.gas_cap)

    def audit_gas(self, records: int) -> int:
        """The gas limit of a whole-block audit of ``records`` records."""
        bound = AUDIT_GAS_PER_BLOCK + AUDIT_GAS_PER_RECORD * records
        return min(bound, self.gas_cap)

    def append(self, records: Sequence[SignedRecord]) -> AppendResult:
        """Put ``records`` on chain as one block and store its proofs.

        Raises:
            ChainError: The Ledger refused the block.
        """
        result = self.ledger.append(records)
        self._save(result, records)
        return result

    def step(self, count: int) -> tuple[AppendResult, AuditResult] | None:
        """Put the oldest ``count`` records of the outbox on chain and audit the block.

        Returns:
            None when the outbox is empty.

        Raises:
            ChainError: The node or the Ledger refused; the submission stays in the
                store for :meth:`reconcile`.
        """
        appended = self.append_next(count)
        if appended is None:
            return None

        return appended, self.audit(appended.block_hash, appended)

    def append_next(self, count: int) -> AppendResult | None:
        """Put the oldest ``count`` records of the outbox on chain as one block and
        store it with its proofs; the audit is left to the caller.

        Returns:
            None when the outbox is empty.

        Raises:
            ChainError: The node or the Ledger refused; the records stay in the
                outbox.
        """
        prepared = self.prepare(count)
        if prepared is None:
            return None

        return self.finish(self.send(prepared))

    def prepare(
        self, count: int, after: SentBlock | None = None
    ) -> PreparedBlock | None:
        """Build the next block from the outbox and note it as a submission.

        Args:
            count: Records to take, the oldest first.
            after: A block sent and not yet mined: the new one takes the records
                after its own and links to it, so that it is ready to go as soon as
                that one is on chain.

        Returns:
            None when no record waits.
        """
        skip = 0 if after is None else len(after.records)
        pending = self.store.pending(min(count, self._size_cap or count), skip)
        if not pending:
            return None

        records = tuple(stored.signed for stored in pending)
        from_block, now = self._chain_now()
        tip = self._tip if after is None else Tip.after(after.header)
        header = self.ledger.build_block(records, tip, now)
        ids = [signed.record.record_id for signed in records]
        self.store.begin_submission(header, ids, from_block)
        return PreparedBlock(header, records)

    def send(self, prepared: PreparedBlock) -> SentBlock:
        """Send a prepared block's append transaction, without waiting for it.

        Raises:
            ChainError: The node refused it; the submission is dropped.
        """
        header, records = prepared.header, prepared.records
        try:
            gas = self.append_gas(len(records))
            transaction_hash = self.ledger.send_block(header, records, gas)
        except ChainError:
            self.discard(prepared)
            raise

        self.store.note_transaction(header.block_hash, transaction_hash)
        return SentBlock(header, records, transaction_hash)

    def finish(self, sent: SentBlock) -> AppendResult:
        """Wait for a sent block, then store it with every record's outcome and
        proof.

        Raises:
            ChainError: It reverted; the submission is dropped and the records wait
                for the next block (after an out-of-gas, a block of half the size).
        """
        appended = self.confirm(sent)
        self.keep(appended, sent)
        return appended

    def confirm(self, sent: SentBlock) -> AppendResult:
        """Wait for a sent block and read its outcome; :meth:`keep` stores it.

        Once it returns, the block is the head and the next block may be sent; its
        submission stays in the store until :meth:`keep`, so a crash in between is
        put right by :meth:`reconcile`.

        Raises:
            ChainError: It reverted; the submission is dropped and the records wait
                for the next block (after an out-of-gas, a block of half the size).
        """
        self._tip = None
        try:
            appended = self.ledger.block_result(
                sent.header, sent.records, sent.transaction_hash
            )
        except ChainError as err:
            self.discard(sent)
            if isinstance(err, BlockOutOfGasError):
                self._shrink(len(sent.records))
            raise

        self._size_cap = None
        self._tip = Tip.after(sent.header)
        self._landed_in = appended.block_number
        return appended

    def keep(self, appended: AppendResult, sent: SentBlock) -> None:
        """Store a confirmed block with every record's outcome and proof, and close
        its submission."""
        self._save(appended, sent.records)

    def discard(self, block: PreparedBlock) -> None:
        """Forget a block that will never be on chain; its records stay in the
        outbox."""
        self.store.drop_submission(block.header.block_hash)

    def _chain_now(self) -> tuple[int, int]:
        """A chain block to search the next block from, and the chain's time now.

        The block is the one this bookkeeper's last block landed in, which no later
        block can precede. The time is read from the node at most once a
        ``CHAIN_TIME_TTL`` and moved on by the local clock in between: asking before
        every block cost the bookkeeper a request on its critical path, and a
        header only needs a time between its parent's and the chain's plus 300 s.
        """
        moment = time.monotonic()
        read = self._chain_time
        if read is None or moment - read[1] > CHAIN_TIME_TTL or self._landed_in is None:
            number, timestamp = self.ledger.chain_head()
            self._chain_time = (timestamp, moment)
            from_block = number if self._landed_in is None else self._landed_in
            return from_block, timestamp

        return self._landed_in, read[0] + int(moment - read[1])

    def _shrink(self, size: int) -> None:
        if size == 1:
            return

        self._size_cap = size // 2
        log.warning(
            "block ran out of gas; the next one takes half the records",
            extra={"records": size, "next_records": self._size_cap},
        )

    def reconcile(self, receipt_timeout: float = 30.0) -> Reconciliation:
        """Bring the store in line with the chain after a start or a crash.

        Blocks the node no longer has go back to the outbox; each submission is
        either found on chain and saved, or dropped with its records left in the
        outbox; every block not yet audited is audited, and so is every block whose
        settlement the node no longer has although it kept the block.
        """
        self._tip = None
        self._landed_in = None
        self._chain_time = None
        self.ledger.sender.resync()
        self.audit_client.sender.resync()
        returned = self._return_lost_blocks()
        landed = dropped = 0
        for submission in self.store.submissions():
            appended = self._find_submission(submission, receipt_timeout)
            if appended is None:
                self.store.drop_submission(submission.header.block_hash)
                dropped += 1
                continue

            records = self.store.records_by_id(submission.record_ids)
            self._save(appended, [stored.signed for stored in records])
            landed += 1

        unaudited = {block.height: block for block in self.store.unaudited_blocks()}
        unaudited.update((block.height, block) for block in self._lost_settlements())
        for height in sorted(unaudited):
            self.audit(unaudited[height].block_hash)

        result = Reconciliation(returned, landed, dropped, len(unaudited))
        log.info("store reconciled with the chain", extra=result.__dict__)
        return result

    def _return_lost_blocks(self) -> int:
        # The chain is linear: once a stored block is found on chain, so are all the
        # older ones, so the walk stops there.
        returned = 0
        for block in reversed(self.store.blocks()):
            if self.ledger.block_of(block.block_hash).record_count:
                break

            log.warning(
                "the node no longer has a block; its records wait again",
                extra={"block_hash": block.block_hash.hex(), "height": block.height},
            )
            returned += self.store.return_to_outbox(block.block_hash)

        return returned

    def _lost_settlements(self) -> list[StoredBlock]:
        """Blocks the store holds as audited that are not settled on chain: the node
        kept the block but lost the audit's transaction.

        Blocks are settled in order, each once the one before is (the audit worker
        waits for every audit, and for the reconciliation after a failure), so once
        a block is found settled on chain, so are all the older ones, and the walk
        stops there.
        """
        lost: list[StoredBlock] = []
        for block in reversed(self.store.blocks()):
            if self.audit_client.audit_of(block.block_hash).complete:
                break

            if block.audit_transaction is not None:
                log.warning(
                    "the node no longer has a block's settlement; auditing it again",
                    extra={
                        "block_hash": block.block_hash.hex(),
                        "height": block.height,
                    },
                )
                lost.append(block)

        return lost

    def _find_submission(
        self, submission: Submission, receipt_timeout: float
    ) -> AppendResult | None:
        header, start = submission.header, submission.from_chain_block
        appended = self.ledger.find_block_result(header, start)
        if appended is not None or submission.transaction_hash is None:
            return appended

        w3 = self.ledger.w3
        try:
            w3.eth.get_transaction(submission.transaction_hash)
            w3.eth.wait_for_transaction_receipt(
                submission.transaction_hash, timeout=receipt_timeout
            )
        except (TransactionNotFound, TimeExhausted):
            return None

        return self.ledger.find_block_result(header, start)

    def _save(self, appended: AppendResult, records: Sequence[SignedRecord]) -> None:
        tree = AuditTree.from_leaves(signed.leaf for signed in records)
        block = StoredBlock(
            block_hash=appended.block_hash,
            height=appended.height,
            records_root=appended.header.records_root,
            record_count=appended.header.record_count,
            chain_block=appended.block_number,
            transaction_hash=appended.transaction_hash,
            timestamp=appended.header.timestamp,
            audit_transaction=None,
            appended_at=time.time(),
        )
        codes = [outcome.code for outcome in appended.outcomes]
        self.store.save_block(block, records, tree, codes)

    def settle(
        self, records: Sequence[SignedRecord]
    ) -> tuple[AppendResult, AuditResult]:
        """Append ``records`` as one block, then audit it."""
        appended = self.append(records)
        return appended, self.audit(appended.block_hash)

    def audit(
        self, block_hash: bytes, appended: AppendResult | None = None
    ) -> AuditResult:
        """Check the stored proofs of a block against the chain and settle it.

        Args:
            block_hash: The block.
            appended: What its append receipt said, when the caller has just read
                it: the chain's ``BlockValidated`` for the header's hash fixes its
                root and size, and its events the holds and releases. Read from the
                chain again when omitted.

        Raises:
            RecordNotFoundError: The block is not in the store.
            ChainError: A settlement transaction failed.
        """
        block = self.store.block(block_hash)
        leaves = self.store.block_leaves(block_hash)
        if appended is not None and appended.block_hash == block_hash:
            size, root = appended.header.record_count, appended.header.records_root
            committed = Committed(appended.holds, appended.releases)
        else:
            on_chain = self.ledger.block_of(block_hash)
            size, root = on_chain.record_count, on_chain.records_root
            committed = Committed(
                *self.ledger.settlement_from_chain(block.transaction_hash)
            )
        mismatched = {
            stored.leaf_index
            for stored in leaves
            if not _proof_matches(stored, size, root)
        }
        if mismatched:
            result = self._audit_one_by_one(block_hash, leaves, mismatched, committed)
        else:
            try:
                result = self._audit_whole(block_hash, leaves, committed)
            except OutOfGasError as err:
                # Paying many merchants for the first time can cost more than one
                # transaction may take; one record at a time always fits.
                log.warning(
                    "block audit ran out of gas; settling its records one by one",
                    extra={"block_hash": block_hash.hex(), "error": str(err)},
                )
                result = self._audit_one_by_one(block_hash, leaves, set(), committed)

        self.store.save_audit(block_hash, result.transactions[-1])
        log.info(
            "block audited",
            extra={
                "block_hash": block_hash.hex(),
                "settled": result.settled,
                "rejected": len(result.rejected),
                "gas_used": result.gas_used,
            },
        )
        return result

    def _audit_whole(
        self, block_hash: bytes, leaves: list[StoredLeaf], committed: Committed
    ) -> AuditResult:
        leaf_hashes = [leaf_hash(stored.leaf) for stored in leaves]
        gas = self.audit_gas(len(leaves))
        receipt = self.audit_client.audit_block(
            block_hash, leaf_hashes, committed.holds, committed.releases, gas
        )
        settled = sum(stored.code == StatusCode.APPROVED for stored in leaves)
        return AuditResult(
            block_hash, settled, (), (receipt.transaction_hash,), receipt.gas_used
        )

    def _audit_one_by_one(
        self,
        block_hash: bytes,
        leaves: list[StoredLeaf],
        mismatched: set[int],
        committed: Committed,
    ) -> AuditResult:
        receipts, rejected = [], []
        for stored in leaves:
            if stored.code != StatusCode.APPROVED:
                continue

            index, proof, leaf = stored.leaf_index, stored.proof, stored.leaf
            if index in mismatched:
                log.warning(
                    "proof does not match the chain; rejecting the record",
                    extra={"block_hash": block_hash.hex(), "index": index},
                )
                receipts.append(
                    self.audit_client.reject_record(
                        block_hash, index, leaf, proof, *committed
                    )
                )
                rejected.append(index)
            else:
                receipts.append(
                    self.audit_client.settle_record(block_hash, index, leaf, proof)
                )

        if not receipts:
            raise AuditError(
                f"Block 0x{block_hash.hex()} has no approved record to settle, and its"
                " stored leaves do not rebuild the root on chain: the store is damaged."
            )

        return AuditResult(
            block_hash,
            len(receipts) - len(rejected),
            tuple(rejected),
            tuple(receipt.transaction_hash for receipt in receipts),
            sum(receipt.gas_used for receipt in receipts),
        )


def _proof_matches(stored: StoredLeaf, size: int, root: bytes) -> bool:
    try:
        computed = root_from_inclusion_proof(
            stored.leaf_index, size, leaf_hash(stored.leaf), stored.proof
        )
    except AuditTreeError:
        return False

    return computed == root
