"""Audit client: the SettlementAudit contract of one deployment, over web3.py.

Settles blocks and records, rejects records whose proofs fail (claim 8), answers where
a record stands, and runs the on-chain dispute check of a terminal's signature.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from eth_account.signers.local import LocalAccount
from web3 import Web3
from web3.contract import Contract
from web3.exceptions import TransactionNotFound
from web3.logs import DISCARD

from posaudit.chain.deploy import Deployment, contract_at
from posaudit.chain.sender import Sender
from posaudit.exceptions import AuditError

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
        self, block_hash: bytes, leaf_hashes: Sequence[bytes], holds: bytes
    ) -> Any:
        """Settle every open record of a block at once; returns the receipt.

        Raises:
            ChainError: The contract refused (the message names its error).
        """
        call = self.audit.functions.auditBlock(block_hash, list(leaf_hashes), holds)
        return self.sender.transact(call)

    def settle_record(
        self, block_hash: bytes, index: int, leaf: bytes, proof: Sequence[bytes]
    ) -> Any:
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
    ) -> Any:
        """Reject a record whose proof does not match (auditor role); returns the
        receipt."""
        call = self.audit.functions.rejectRecord(
            block_hash, index, leaf, list(proof), holds
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

    def holds_from_chain(self, append_transaction: bytes) -> bytes:
        """Rebuild a block's holds from its ``TransactionApproved`` events.

        They come from the chain alone, so a claim-8 rejection works even when the
        bookkeeper's own copy of a record is what went wrong.

        Raises:
            AuditError: The transaction has no receipt.
        """
        try:
            receipt = self.w3.eth.get_transaction_receipt(append_transaction)
        except TransactionNotFound as err:
            raise AuditError(
                f"No receipt for the append transaction 0x{append_transaction.hex()}:"
                f" {err}."
            ) from err

        events = self.ledger.events.TransactionApproved().process_receipt(
            receipt, errors=DISCARD
        )
        approved = sorted((event["args"] for event in events), key=_by_index)
        return b"".join(_hold_of(args) for args in approved)


def _by_index(args: Any) -> int:
    return int(args["index"])


def _hold_of(args: Any) -> bytes:
    return (
        bytes(args["terminalId"])
        + int(args["sequence"]).to_bytes(8, "big")
        + int(args["amount"]).to_bytes(8, "big")
        + bytes.fromhex(args["merchant"][2:])
        + bytes.fromhex(args["payer"][2:])
    )
