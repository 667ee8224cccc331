"""Audit client: the SettlementAudit contract of one deployment, over web3.py.

Settles blocks and records, rejects records whose proofs fail (claim 8), answers where
a record stands, and runs the on-chain dispute check of a terminal's signature.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Sequence
from dataclasses import dataclass

from eth_account.signers.local import LocalAccount
from web3 import Web3
from web3.contract import Contract

from posaudit.chain.deploy import Deployment, contract_at
from posaudit.chain.sender import Receipt, Sender
from posaudit.records import holds_digest, releases_digest

log = logging.getLogger(__name__)


class SettlementStatus(enum.IntEnum):
    """Where a record stands in the audit; mirrors ``ISettlementAudit.RecordStatus``."""

    UNKNOWN = 0
    REJECTED_BY_RULES = 1
    HELD = 2
    SETTLED = 3
    REJECTED_BY_AUDIT = 4


@dataclass(frozen=True)
class BlockAuditState:
    """How far a block's settlement has come."""

    settled: int
    rejected: int
    complete: bool


class AuditClient:
    """The audit module of one deployment.

    Args:
        w3: Connection to the node.
        deployment: Addresses of the contracts.
        sender: Account that pays for settlements (an unlocked address or a local
            account); it needs the auditor role only to reject records.
    """

    def __init__(
        self, w3: Web3, deployment: Deployment, sender: str | LocalAccount
    ) -> None:
        self.w3 = w3
        self.sender = Sender(w3, sender)
        self.audit: Contract = contract_at(w3, "SettlementAudit", deployment.audit)
        self.ledger: Contract = contract_at(w3, "Ledger", deployment.ledger)

    def audit_block(
        self,
        block_hash: bytes,
        leaf_hashes: Sequence[bytes],
        holds: bytes,
        releases: Sequence[tuple[str, int]],
        gas: int | None = None,
    ) -> Receipt:
        """Settle every open record of a block at once; returns the receipt.

        Args:
            block_hash: The block.
            leaf_hashes: Its audit tree's leaf hashes, in order.
            holds: Its holds, as the Ledger committed them; only their digest is
                sent.
            releases: What it holds for each merchant, as its ``HoldPlaced``
                events list them.
            gas: The gas limit; estimated when omitted.

        Raises:
            ChainError: The contract refused (the message names its error).
        """
        call = self.audit.functions.auditBlock(
            block_hash,
            list(leaf_hashes),
            holds_digest(holds),
            [(Web3.to_checksum_address(m), amount) for m, amount in releases],
        )
        return self.sender.transact(call, gas=gas)

    def settle_record(
        self, block_hash: bytes, index: int, leaf: bytes, proof: Sequence[bytes]
    ) -> Receipt:
        """Settle one record with its inclusion proof; returns the receipt."""
        call = self.audit.functions.settleRecord(block_hash, index, leaf, list(proof))
        return self.sender.transact(call)

    def reject_record(
        self,
        block_hash: bytes,
        index: int,
        leaf: bytes,
        proof: Sequence[bytes],
        holds: bytes,
        releases: Sequence[tuple[str, int]],
    ) -> Receipt:
        """Reject a record whose proof does not match (auditor role); returns the
        receipt. ``holds`` and ``releases`` are the block's, as in
        :meth:`audit_block`; only the releases' digest is sent."""
        call = self.audit.functions.rejectRecord(
            block_hash, index, leaf, list(proof), holds, releases_digest(releases)
        )
        return self.sender.transact(call)

    def status_of(self, block_hash: bytes, index: int) -> SettlementStatus:
        """Where record ``index`` of a block stands."""
        return SettlementStatus(self.audit.functions.statusOf(block_hash, index).call())

    def audit_of(self, block_hash: bytes) -> BlockAuditState:
        """Counts of settled and rejected records of a block, and whether it is done."""
        settled, rejected, complete = self.audit.functions.auditOf(block_hash).call()
        return BlockAuditState(int(settled), int(rejected), bool(complete))

    def verify_signature(self, encoding: bytes, signature: bytes) -> bool:
        """The on-chain dispute check: did the record's terminal sign it?"""
        return bool(self.audit.functions.verifySignature(encoding, signature).call())
