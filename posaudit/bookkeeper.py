"""The bookkeeper: puts records on chain as settlement blocks and audits each block.

For every block it appends, the bookkeeper keeps the audit tree's inclusion proofs in
the store beside the records, then hands them to the audit module (claim 7): it checks
each proof against the root the Ledger stored; when all match, one whole-block call
settles the block; a record whose proof does not match is rejected and its hold goes
back to the payer (claim 8), and the others are settled one by one.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

from posaudit.audit import AuditClient
from posaudit.audittree import AuditTree, leaf_hash, root_from_inclusion_proof
from posaudit.exceptions import AuditError, AuditTreeError
from posaudit.ledger import AppendResult, LedgerClient
from posaudit.records import SignedRecord
from posaudit.rules import StatusCode
from posaudit.store import Store, StoredBlock, StoredRecord

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AuditResult:
    """What the audit of one block did."""

    block_hash: bytes
    settled: int
    rejected: tuple[int, ...]
    transactions: tuple[bytes, ...]
    gas_used: int


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

    def append(self, records: Sequence[SignedRecord]) -> AppendResult:
        """Put ``records`` on chain as one block and store its proofs.

        Raises:
            ChainError: The Ledger refused the block.
        """
        result = self.ledger.append(records)
        tree = AuditTree.from_leaves(signed.leaf for signed in records)
        block = StoredBlock(
            block_hash=result.block_hash,
            height=result.height,
            records_root=result.header.records_root,
            record_count=result.header.record_count,
            chain_block=result.block_number,
            transaction_hash=result.transaction_hash,
            timestamp=result.header.timestamp,
            audit_transaction=None,
        )
        codes = [outcome.code for outcome in result.outcomes]
        self.store.save_block(block, records, tree, codes)
        return result

    def settle(
        self, records: Sequence[SignedRecord]
    ) -> tuple[AppendResult, AuditResult]:
        """Append ``records`` as one block, then audit it."""
        appended = self.append(records)
        return appended, self.audit(appended.block_hash)

    def audit(self, block_hash: bytes) -> AuditResult:
        """Check the stored proofs of a block against the chain and settle it.

        Raises:
            RecordNotFoundError: The block is not in the store.
            ChainError: A settlement transaction failed.
        """
        block = self.store.block(block_hash)
        records = self.store.block_records(block_hash)
        on_chain = self.ledger.block_of(block_hash)
        mismatched = {
            stored.leaf_index
            for stored in records
            if not _proof_matches(stored, on_chain.record_count, on_chain.records_root)
        }
        holds = self.audit_client.holds_from_chain(block.transaction_hash)
        if mismatched:
            result = self._audit_one_by_one(block_hash, records, mismatched, holds)
        else:
            result = self._audit_whole(block_hash, records, holds)

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
        self, block_hash: bytes, records: list[StoredRecord], holds: bytes
    ) -> AuditResult:
        leaf_hashes = [leaf_hash(stored.signed.leaf) for stored in records]
        receipt = self.audit_client.audit_block(block_hash, leaf_hashes, holds)
        settled = sum(stored.code == StatusCode.APPROVED for stored in records)
        return AuditResult(
            block_hash,
            settled,
            (),
            (bytes(receipt["transactionHash"]),),
            int(receipt["gasUsed"]),
        )

    def _audit_one_by_one(
        self,
        block_hash: bytes,
        records: list[StoredRecord],
        mismatched: set[int | None],
        holds: bytes,
    ) -> AuditResult:
        receipts, rejected = [], []
        for stored in records:
            if stored.code != StatusCode.APPROVED:
                continue

            index, proof = stored.leaf_index, stored.proof or ()
            leaf = stored.signed.leaf
            if index in mismatched:
                log.warning(
                    "proof does not match the chain; rejecting the record",
                    extra={"block_hash": block_hash.hex(), "index": index},
                )
                client = self.audit_client
                receipts.append(
                    client.reject_record(block_hash, index, leaf, proof, holds)
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
            tuple(index for index in rejected if index is not None),
            tuple(bytes(receipt["transactionHash"]) for receipt in receipts),
            sum(int(receipt["gasUsed"]) for receipt in receipts),
        )


def _proof_matches(stored: StoredRecord, size: int, root: bytes) -> bool:
    if stored.leaf_index is None or stored.proof is None:
        return False

    try:
        computed = root_from_inclusion_proof(
            stored.leaf_index, size, leaf_hash(stored.signed.leaf), stored.proof
        )
    except AuditTreeError:
        return False

    return computed == root
