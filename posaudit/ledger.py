"""Ledger client: operator actions and the bookkeeper's append, over web3.py."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.asymmetric import rsa
from eth_account.signers.local import LocalAccount
from web3 import Web3
from web3.contract import Contract

from posaudit.blocks import BlockHeader, build_header
from posaudit.chain.deploy import Deployment, contract_at, transact
from posaudit.chain.events import EventReader
from posaudit.chain.sender import Receipt, Sender
from posaudit.exceptions import AuditError, BlockOutOfGasError, BlockRejectedError
from posaudit.records import SignedRecord
from posaudit.rules import StatusCode
from posaudit.signing import public_numbers

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RecordOutcome:
    """What the Ledger decided for one record of a block."""

    index: int
    terminal_id: str
    sequence: int
    code: StatusCode


@dataclass(frozen=True)
class AppendResult:
    """A block accepted by the Ledger and the outcome of each of its records.

    Attributes:
        holds: What the Ledger committed to hold, 64 bytes per approved record in
            record order (see :func:`posaudit.records.encode_hold`), read from its
            ``TransactionApproved`` events: what rejecting one record moves.
        releases: What the block holds for each merchant, from its ``HoldPlaced``
            events in their order: what the whole-block audit moves.
    """

    header: BlockHeader
    block_hash: bytes
    height: int
    block_number: int
    gas_used: int
    transaction_hash: bytes
    outcomes: tuple[RecordOutcome, ...]
    holds: bytes
    releases: tuple[tuple[str, int], ...]


@dataclass(frozen=True)
class Tip:
    """What the next block's header takes from the head: its hash, the earliest
    timestamp it may carry, and the difficulty target."""

    block_hash: bytes
    timestamp: int
    target: int

    @classmethod
    def after(cls, header: BlockHeader) -> Tip:
        """The tip once the block of ``header`` is the head."""
        return cls(header.block_hash, header.timestamp, header.target)


@dataclass(frozen=True)
class ChainBlock:
    """What the Ledger keeps of a block: the facts an audit checks against."""

    records_root: bytes
    record_count: int
    approved_count: int
    height: int
    timestamp: int
    settlement_digest: bytes


def terminal_bytes(terminal_id: str) -> bytes:
    """A terminal id as the contracts' ``bytes8``."""
    return terminal_id.encode("ascii")


class LedgerClient:
    """The TerminalRegistry and Ledger of one deployment, seen through web3.py.

    Args:
        w3: Connection to the node.
        deployment: Addresses of the contracts.
        operator: Unlocked account with the operator role.
        bookkeeper: Account with the bookkeeper role: an address the node holds
            unlocked, or a local account that signs here.
    """

    def __init__(
        self,
        w3: Web3,
        deployment: Deployment,
        operator: str,
        bookkeeper: str | LocalAccount,
    ) -> None:
        self.w3 = w3
        self.deployment = deployment
        self.operator = operator
        self.bookkeeper = bookkeeper
        self.registry: Contract = contract_at(
            w3, "TerminalRegistry", deployment.registry
        )
        self.ledger: Contract = contract_at(w3, "Ledger", deployment.ledger)
        self.sender = Sender(w3, bookkeeper)
        self._events = {
            name: EventReader(self.ledger.abi, name)
            for name in (
                "BlockValidated",
                "TransactionApproved",
                "TransactionRejected",
                "HoldPlaced",
            )
        }

    def register_terminal(
        self, terminal_id: str, merchant: str, key: rsa.RSAPublicKey
    ) -> None:
        """Register a terminal with its merchant and RSA public key."""
        numbers = public_numbers(key)
        call = self.registry.functions.registerTerminal(
            terminal_bytes(terminal_id),
            Web3.to_checksum_address(merchant),
            numbers.modulus,
            numbers.exponent,
        )
        transact(self.w3, call, self.operator)

    def deactivate_terminal(self, terminal_id: str) -> None:
        """Deactivate a terminal; its later records are rejected."""
        call = self.registry.functions.deactivateTerminal(terminal_bytes(terminal_id))
        transact(self.w3, call, self.operator)

    def open_account(
        self, payer: str, daily_limit: int, birth_date: int = 0, kyc: bool = True
    ) -> None:
        """Open a payer account (``birth_date`` as yyyymmdd, 0 if unknown)."""
        call = self.ledger.functions.openAccount(
            Web3.to_checksum_address(payer), daily_limit, birth_date, kyc
        )
        transact(self.w3, call, self.operator)

    def update_account(
        self, payer: str, daily_limit: int, kyc: bool, frozen: bool
    ) -> None:
        """Change a payer's daily limit, KYC status and frozen flag."""
        call = self.ledger.functions.updateAccount(
            Web3.to_checksum_address(payer), daily_limit, kyc, frozen
        )
        transact(self.w3, call, self.operator)

    def deposit(self, payer: str, amount: int) -> None:
        """Credit ``amount`` minor units to a payer."""
        call = self.ledger.functions.deposit(Web3.to_checksum_address(payer), amount)
        transact(self.w3, call, self.operator)

    def set_minimum_age(self, goods_category: int, age: int) -> None:
        """Set the minimum payer age for a goods category."""
        transact(
            self.w3,
            self.ledger.functions.setMinimumAge(goods_category, age),
            self.operator,
        )

    def balance_of(self, payer: str) -> int:
        """A payer's balance in minor units."""
        account = self.ledger.functions.accountOf(
            Web3.to_checksum_address(payer)
        ).call()
        return int(account[0])

    def held_for(self, merchant: str) -> int:
        """The amount held for a merchant until the audit releases it."""
        return int(
            self.ledger.functions.heldFor(Web3.to_checksum_address(merchant)).call()
        )

    def credit_of(self, merchant: str) -> int:
        """The amount the audit has released to a merchant."""
        return int(
            self.ledger.functions.creditOf(Web3.to_checksum_address(merchant)).call()
        )

    def head(self) -> tuple[bytes, int]:
        """Hash and height of the newest block."""
        block_hash, height = self.ledger.functions.head().call()
        return bytes(block_hash), int(height)

    def block_of(self, block_hash: bytes) -> ChainBlock:
        """What the Ledger stored of a block (all zero for an unknown hash)."""
        stored = self.ledger.functions.blockOf(block_hash).call()
        return ChainBlock(
            records_root=bytes(stored[0]),
            record_count=int(stored[1]),
            approved_count=int(stored[2]),
            height=int(stored[3]),
            timestamp=int(stored[4]),
            settlement_digest=bytes(stored[5]),
        )

    def tip(self) -> Tip:
        """The current head of the Ledger, as the next block must link to it."""
        prev_hash, _ = self.head()
        parent = self.block_of(prev_hash)
        target = int(self.ledger.functions.target().call())
        return Tip(prev_hash, parent.timestamp, target)

    def chain_head(self) -> tuple[int, int]:
        """Number and time of the node's latest chain block."""
        block = self.w3.provider.make_request(  # type: ignore[arg-type]
            "eth_getBlockByNumber", ["latest", False]
        )["result"]
        return int(block["number"], 16), int(block["timestamp"], 16)

    def build_block(
        self,
        records: Sequence[SignedRecord],
        tip: Tip | None = None,
        now: int | None = None,
    ) -> BlockHeader:
        """The header of the next block for ``records``, its nonce searched.

        Args:
            records: The block's records, in leaf order.
            tip: The head it links to; read from the Ledger when omitted.
            now: The chain's latest block time; asked of the node when omitted.
        """
        tip = tip or self.tip()
        if now is None:
            _, now = self.chain_head()
        leaves = [signed.leaf for signed in records]
        return build_header(tip.block_hash, leaves, max(now, tip.timestamp), tip.target)

    def append_call(self, header: BlockHeader, records: Sequence[SignedRecord]) -> Any:
        """The ``appendBlock`` call of a block."""
        leaves = b"".join(signed.leaf for signed in records)
        return self.ledger.functions.appendBlock(header.as_tuple(), leaves)

    def send_block(
        self,
        header: BlockHeader,
        records: Sequence[SignedRecord],
        gas: int | None = None,
    ) -> bytes:
        """Send the append transaction without waiting; returns its hash.

        Args:
            header: The block's header.
            records: Its records, in leaf order.
            gas: The gas limit; estimated when omitted.

        Raises:
            ChainError: The node refused the transaction, or its gas estimate showed
                the Ledger would revert (the message names the custom error): either
                way nothing reached the chain.
        """
        return self.sender.send(self.append_call(header, records), gas)

    def block_result(
        self,
        header: BlockHeader,
        records: Sequence[SignedRecord],
        transaction_hash: bytes,
        timeout: float = 120.0,
    ) -> AppendResult:
        """Wait for an append transaction and read the outcome of every record.

        Raises:
            BlockOutOfGasError: The transaction ran out of gas.
            BlockRejectedError: The transaction reverted otherwise (the message names
                the custom error).
        """
        receipt = self.sender.wait(transaction_hash, timeout)
        if receipt.out_of_gas:
            raise BlockOutOfGasError(
                self.sender.failure(self.append_call(header, records), receipt)
            )

        if receipt.status != 1:
            raise BlockRejectedError(
                self.sender.failure(self.append_call(header, records), receipt)
            )

        return self._result(header, receipt)

    def record_network_state(
        self, congested: bool, block_rate: float, link_rate: float
    ) -> Any:
        """Put a change of the network monitor's state on chain, for auditors.

        Args:
            congested: The new state.
            block_rate: Settlement blocks per second measured.
            link_rate: Bytes per second on the busiest link measured.

        Returns:
            The transaction receipt.
        """
        call = self.ledger.functions.recordNetworkState(
            congested, round(block_rate * 1_000), round(link_rate)
        )
        return self.sender.transact(call)

    def find_block_result(
        self, header: BlockHeader, from_chain_block: int
    ) -> AppendResult | None:
        """The outcome of a block already on chain, read back from its events.

        Returns:
            None when the Ledger holds no block with the header's hash.
        """
        block_hash = header.block_hash
        if self.block_of(block_hash).record_count == 0:
            return None

        topic = self.ledger.events.BlockValidated().topic
        logs = self.w3.eth.get_logs(
            {
                "address": self.ledger.address,
                "fromBlock": from_chain_block,
                "toBlock": "latest",
                "topics": [topic, "0x" + block_hash.hex()],
            }
        )
        if not logs:
            return None

        receipt = self.sender.wait(bytes(logs[0]["transactionHash"]), timeout=5.0)
        return self._result(header, receipt)

    def settlement_from_chain(
        self, append_transaction: bytes
    ) -> tuple[bytes, tuple[tuple[str, int], ...]]:
        """A block's holds and releases, rebuilt from its append transaction's events.

        They come from the chain alone, so the audit works even when the
        bookkeeper's own copy of a record is what went wrong.

        Raises:
            AuditError: The transaction has no receipt.
        """
        found = self.w3.provider.make_request(  # type: ignore[arg-type]
            "eth_getTransactionReceipt", ["0x" + append_transaction.hex()]
        ).get("result")
        if not found:
            raise AuditError(
                f"No receipt for the append transaction 0x{append_transaction.hex()}."
            )

        address, logs = self.ledger.address, found["logs"]
        approved = self._events["TransactionApproved"].decode_all(logs, address)
        placed = self._events["HoldPlaced"].decode_all(logs, address)
        return _holds(approved), _releases(placed)

    def append(self, records: Sequence[SignedRecord]) -> AppendResult:
        """Put ``records`` on chain as one settlement block and read the outcomes.

        Raises:
            ChainError: The Ledger refused the block.
        """
        header = self.build_block(records)
        sent = self.send_block(header, records)
        result = self.block_result(header, records, sent)
        log.info(
            "block appended",
            extra={
                "block_hash": result.block_hash.hex(),
                "records": len(records),
                "gas_used": result.gas_used,
            },
        )
        return result

    def _result(self, header: BlockHeader, receipt: Receipt) -> AppendResult:
        address = self.ledger.address
        validated = self._events["BlockValidated"].decode_all(receipt.logs, address)
        approved = self._events["TransactionApproved"].decode_all(receipt.logs, address)
        rejected = self._events["TransactionRejected"].decode_all(receipt.logs, address)
        placed = self._events["HoldPlaced"].decode_all(receipt.logs, address)
        outcomes = [_outcome(fields, StatusCode.APPROVED) for fields in approved] + [
            _outcome(fields, StatusCode(fields["code"])) for fields in rejected
        ]
        return AppendResult(
            header=header,
            block_hash=validated[0]["blockHash"],
            height=validated[0]["height"],
            block_number=receipt.block_number,
            gas_used=receipt.gas_used,
            transaction_hash=receipt.transaction_hash,
            outcomes=tuple(sorted(outcomes, key=lambda outcome: outcome.index)),
            holds=_holds(approved),
            releases=_releases(placed),
        )


def _outcome(fields: dict[str, Any], code: StatusCode) -> RecordOutcome:
    return RecordOutcome(
        fields["index"], fields["terminalId"].decode("ascii"), fields["sequence"], code
    )


def _releases(placed: list[dict[str, Any]]) -> tuple[tuple[str, int], ...]:
    """The releases of ``HoldPlaced`` events, in their order."""
    return tuple((fields["merchant"], fields["amount"]) for fields in placed)


def _holds(approved: list[dict[str, Any]]) -> bytes:
    """The holds of ``TransactionApproved`` events, in record order."""
    ordered = sorted(approved, key=lambda fields: fields["index"])
    return b"".join(
        fields["terminalId"]
        + fields["sequence"].to_bytes(8, "big")
        + fields["amount"].to_bytes(8, "big")
        + bytes.fromhex(fields["merchant"][2:])
        + bytes.fromhex(fields["payer"][2:])
        for fields in ordered
    )
