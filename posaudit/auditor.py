"""The auditor's queries: settlement blocks, record outcomes, the story of one record.

Everything is read from contract events, the record an auditor can check without
trusting the bookkeeper: the Ledger's ``BlockValidated``, ``TransactionApproved`` and
``TransactionRejected``; the audit module's ``RecordSettled``, ``SettlementComplete``
and ``TransactionRejected`` (always ``PROOF_MISMATCH``); the registry's
``TerminalRegistered``, which names the merchant of a record the rules rejected.

Filters go to the node as log topics wherever the event indexes the field, and logs
are read with ``eth_getLogs`` in pages of ``page_size`` chain blocks, so that a long
history never asks a node for more than it answers in one request. A time range is
turned into a chain block range by binary search on block timestamps.

Each query reads up to one head block, fixed when it starts, so its rows agree with
each other. A row is *final* once every event it rests on has at least
``confirmations`` blocks mined on top of it; newer rows are shown, marked not final,
because a reorganisation may still change them.

NOTE: Settlement states are those at the query's head, whatever the time range: a
record appended last year and still held today shows as held.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from eth_abi import encode as abi_encode
from eth_utils import event_abi_to_log_topic
from web3 import Web3
from web3.contract.contract import ContractEvent
from web3.exceptions import ProviderConnectionError, Web3Exception

from posaudit.audit import SettlementStatus
from posaudit.chain.deploy import Deployment, contract_at, rpc_session
from posaudit.exceptions import (
    DeploymentMismatchError,
    FieldRangeError,
    NodeUnreachableError,
)
from posaudit.rules import StatusCode

log = logging.getLogger(__name__)

DEFAULT_CONFIRMATIONS = 2
DEFAULT_PAGE_SIZE = 2_000
# Nodes and hosted providers cap the size of one filter: beyond this many block
# hashes, the audit events of every block are read instead.
HASHES_PER_FILTER = 200

_TERMINAL_ID = re.compile(r"^[\x21-\x7e]{8}$")
_ADDRESS = re.compile(r"^0x[0-9a-fA-F]{40}$")

_Topic = str | list[str] | None


class AuditState(StrEnum):
    """How far the audit of a settlement block has come."""

    NOT_AUDITED = "not audited"
    PARTIAL = "partial"
    COMPLETE = "complete"


class Step(StrEnum):
    """One step in the story of a record."""

    APPROVED = "approved"
    REJECTED_BY_RULES = "rejected by rules"
    SETTLED = "settled"
    SETTLED_WITH_BLOCK = "settled with its block"
    REJECTED_BY_AUDIT = "rejected by audit"


def _hex(value: bytes) -> str:
    return "0x" + value.hex()


@dataclass(frozen=True)
class BlockRow:
    """A settlement block on chain and how far its audit has come.

    Attributes:
        height: Height of the block in the Ledger's chain of settlement blocks.
        block_hash: Double SHA-256 of the block header.
        prev_hash: Hash of the block it links to.
        records_root: Root of the block's audit tree.
        record_count: Records in the block, approved or not.
        block_number: Chain block holding the transaction that appended it.
        timestamp: Time of that chain block, Unix seconds.
        tx_hash: The transaction that appended it.
        audit: Not audited, partial or complete.
        settled: Records the audit has settled.
        rejected: Records the audit has rejected for a mismatching proof.
        final: Whether the append and the audit events are all final.
    """

    height: int
    block_hash: bytes
    prev_hash: bytes
    records_root: bytes
    record_count: int
    block_number: int
    timestamp: int
    tx_hash: bytes
    audit: AuditState
    settled: int
    rejected: int
    final: bool

    def as_dict(self) -> dict[str, Any]:
        """The row as JSON-ready values, hashes as 0x-prefixed hex."""
        return {
            "height": self.height,
            "block_hash": _hex(self.block_hash),
            "prev_hash": _hex(self.prev_hash),
            "records_root": _hex(self.records_root),
            "record_count": self.record_count,
            "block_number": self.block_number,
            "timestamp": self.timestamp,
            "tx_hash": _hex(self.tx_hash),
            "audit": str(self.audit),
            "settled": self.settled,
            "rejected": self.rejected,
            "final": self.final,
        }


@dataclass(frozen=True)
class RecordRow:
    """One outcome of a record: approved or rejected when appended, or rejected by
    the audit (a record rejected by the audit also has the row of its approval).

    Attributes:
        terminal_id: The terminal that took the payment.
        sequence: The terminal's sequence number of the record.
        payer: The payer account (checksummed).
        merchant: The merchant paid; for a rejected record the terminal's registered
            merchant, None when the terminal was not registered then.
        amount: Minor units.
        code: The status code of this outcome.
        status: Where the record stands at the query's head.
        block_hash: The settlement block of the record.
        index: Position of the record in that block.
        tx_hash: The transaction of this outcome.
        block_number: Chain block of that transaction.
        timestamp: Time of that chain block, Unix seconds.
        settlement_tx: The transaction that settled or rejected an approved record.
        final: Whether this outcome and the settlement are final.
    """

    terminal_id: str
    sequence: int
    payer: str
    merchant: str | None
    amount: int
    code: StatusCode
    status: SettlementStatus
    block_hash: bytes
    index: int
    tx_hash: bytes
    block_number: int
    timestamp: int
    settlement_tx: bytes | None
    final: bool

    def as_dict(self) -> dict[str, Any]:
        """The row as JSON-ready values, hashes as 0x-prefixed hex."""
        return {
            "terminal_id": self.terminal_id,
            "sequence": self.sequence,
            "payer": self.payer,
            "merchant": self.merchant,
            "amount": self.amount,
            "code": int(self.code),
            "code_name": self.code.name,
            "status": self.status.name,
            "block_hash": _hex(self.block_hash),
            "index": self.index,
            "tx_hash": _hex(self.tx_hash),
            "block_number": self.block_number,
            "timestamp": self.timestamp,
            "settlement_tx": _hex(self.settlement_tx) if self.settlement_tx else None,
            "final": self.final,
        }


@dataclass(frozen=True)
class HistoryStep:
    """One event in the story of a record.

    Attributes:
        step: What happened.
        code: The record's status code after this step.
        block_hash: The settlement block of the record.
        index: Position of the record in that block.
        payer: The payer account (checksummed).
        merchant: The merchant, None when no registered terminal names one.
        amount: Minor units.
        tx_hash: The transaction of this step.
        block_number: Chain block of that transaction.
        timestamp: Time of that chain block, Unix seconds.
        final: Whether the step's event is final.
    """

    step: Step
    code: StatusCode
    block_hash: bytes
    index: int
    payer: str
    merchant: str | None
    amount: int
    tx_hash: bytes
    block_number: int
    timestamp: int
    final: bool

    def as_dict(self) -> dict[str, Any]:
        """The step as JSON-ready values, hashes as 0x-prefixed hex."""
        return {
            "step": str(self.step),
            "code": int(self.code),
            "code_name": self.code.name,
            "block_hash": _hex(self.block_hash),
            "index": self.index,
            "payer": self.payer,
            "merchant": self.merchant,
            "amount": self.amount,
            "tx_hash": _hex(self.tx_hash),
            "block_number": self.block_number,
            "timestamp": self.timestamp,
            "final": self.final,
        }


@dataclass(frozen=True)
class RecordHistory:
    """Every step of one record, in chain order; no steps when the chain has none.

    A record submitted twice has the steps of both submissions: the second is
    rejected with ``SEQUENCE_NOT_ABOVE``.
    """

    terminal_id: str
    sequence: int
    steps: tuple[HistoryStep, ...]

    def as_dict(self) -> dict[str, Any]:
        """The history as JSON-ready values."""
        return {
            "terminal_id": self.terminal_id,
            "sequence": self.sequence,
            "steps": [step.as_dict() for step in self.steps],
        }


@dataclass(frozen=True)
class _Event:
    """One decoded log."""

    name: str
    address: str
    args: Mapping[str, Any]
    block_number: int
    log_index: int
    tx_hash: bytes

    @property
    def position(self) -> tuple[int, int]:
        """Where the log stands in chain order."""
        return (self.block_number, self.log_index)

    @property
    def record_key(self) -> tuple[bytes, int]:
        """Settlement block hash and index of the record the event is about."""
        return (bytes(self.args["blockHash"]), int(self.args["index"]))


@dataclass(frozen=True)
class _Registration:
    merchant: str
    block_number: int


@dataclass
class _AuditTrail:
    """The audit module's events about a set of settlement blocks."""

    complete: dict[bytes, _Event] = field(default_factory=dict)
    settled: dict[bytes, dict[int, _Event]] = field(default_factory=dict)
    rejected: dict[bytes, dict[int, _Event]] = field(default_factory=dict)

    def add(self, event: _Event) -> None:
        block_hash = bytes(event.args["blockHash"])
        if event.name == "SettlementComplete":
            self.complete[block_hash] = event
        elif event.name == "RecordSettled":
            self.settled.setdefault(block_hash, {})[int(event.args["index"])] = event
        else:
            self.rejected.setdefault(block_hash, {})[int(event.args["index"])] = event

    def settlement_of(
        self, block_hash: bytes, index: int
    ) -> tuple[SettlementStatus, _Event | None]:
        """Status of an approved record and the event that resolved it, if any.

        A whole-block audit settles every open record without a per-record event, so
        a complete block settled whatever no earlier event resolved.
        """
        rejection = self.rejected.get(block_hash, {}).get(index)
        if rejection is not None:
            return SettlementStatus.REJECTED_BY_AUDIT, rejection

        settlement = self.settled.get(block_hash, {}).get(index)
        if settlement is not None:
            return SettlementStatus.SETTLED, settlement

        complete = self.complete.get(block_hash)
        if complete is not None:
            return SettlementStatus.SETTLED, complete

        return SettlementStatus.HELD, None


class _Snapshot:
    """The head one query reads up to, and the block times it has looked up."""

    def __init__(self, w3: Web3, head: int) -> None:
        self.w3 = w3
        self.head = head
        self.requests = 0
        self._times: dict[int, int] = {}

    def time(self, number: int) -> int:
        """Timestamp of chain block ``number``, Unix seconds."""
        if number not in self._times:
            self._times[number] = int(self.w3.eth.get_block(number)["timestamp"])
            self.requests += 1

        return self._times[number]


def terminal_topic(terminal_id: str) -> str:
    """A terminal id as the topic of an indexed ``bytes8``.

    Raises:
        FieldRangeError: The id is not 8 printable ASCII characters.
    """
    if not _TERMINAL_ID.match(terminal_id):
        raise FieldRangeError(
            "terminal_id", terminal_id, "8 printable ASCII characters"
        )

    return Web3.to_hex(abi_encode(["bytes8"], [terminal_id.encode("ascii")]))


def address_topic(name: str, address: str) -> str:
    """An address as the topic of an indexed ``address``.

    Raises:
        FieldRangeError: ``address`` is not 20 bytes of 0x-prefixed hex.
    """
    if not _ADDRESS.match(address):
        raise FieldRangeError(name, address, "a 20-byte hex address such as 0x00…00")

    checksummed = Web3.to_checksum_address(address.lower())
    return Web3.to_hex(abi_encode(["address"], [checksummed]))


def _code_topic(code: StatusCode) -> str:
    return Web3.to_hex(abi_encode(["uint8"], [int(code)]))


def _terminal_text(raw: bytes) -> str:
    # Terminals the registry never saw can carry any bytes; show them, never fail.
    return raw.decode("ascii", errors="backslashreplace")


class Auditor:
    """Event queries over one posaudit deployment, for an auditor.

    Args:
        w3: Connection to the node.
        deployment: Addresses of the contracts.
        confirmations: Blocks that must be mined on top of an event before a row
            resting on it is final; 0 makes every row final.
        page_size: Chain blocks per ``eth_getLogs`` request, at least 1.
        start_block: First chain block to read. By default the block in which the
            registry was created, found by binary search on its code; 0 when the
            node keeps no historical state.

    Raises:
        NodeUnreachableError: The node does not answer.
        DeploymentMismatchError: The node's chain id is not the deployment's, or a
            deployment address holds no contract code.
        ValueError: ``confirmations`` < 0 or ``page_size`` < 1.
    """

    def __init__(
        self,
        w3: Web3,
        deployment: Deployment,
        confirmations: int = DEFAULT_CONFIRMATIONS,
        page_size: int = DEFAULT_PAGE_SIZE,
        start_block: int | None = None,
    ) -> None:
        if confirmations < 0:
            raise ValueError(f"confirmations is {confirmations}; want 0 or more.")

        if page_size < 1:
            raise ValueError(f"page_size is {page_size}; want 1 or more.")

        self.w3 = w3
        self.deployment = deployment
        self.confirmations = confirmations
        self.page_size = page_size
        self._start_block = start_block
        self.registry = contract_at(w3, "TerminalRegistry", deployment.registry)
        self.ledger = contract_at(w3, "Ledger", deployment.ledger)
        self.audit = contract_at(w3, "SettlementAudit", deployment.audit)
        self._decoders: dict[tuple[str, bytes], ContractEvent] = {}
        self._topics: dict[str, str] = {}
        for contract, names in (
            (self.registry, ("TerminalRegistered",)),
            (
                self.ledger,
                ("BlockValidated", "TransactionApproved", "TransactionRejected"),
            ),
            (
                self.audit,
                ("RecordSettled", "SettlementComplete", "TransactionRejected"),
            ),
        ):
            for name in names:
                event = contract.events[name]()
                topic = event_abi_to_log_topic(event.abi)
                self._decoders[(contract.address, topic)] = event
                self._topics[name] = Web3.to_hex(topic)

        with self._reaching_node():
            self._check_deployment()

    @classmethod
    def connect(
        cls,
        rpc_url: str,
        deployment: Deployment,
        confirmations: int = DEFAULT_CONFIRMATIONS,
        page_size: int = DEFAULT_PAGE_SIZE,
        start_block: int | None = None,
        timeout: float = 30.0,
    ) -> Auditor:
        """An auditor over HTTP JSON-RPC at ``rpc_url``; see the class for the rest.

        Raises:
            NodeUnreachableError: Nothing answers at ``rpc_url``.
            DeploymentMismatchError: The deployment is not on that chain.
        """
        provider = Web3.HTTPProvider(
            rpc_url, request_kwargs={"timeout": timeout}, session=rpc_session(rpc_url)
        )
        return cls(Web3(provider), deployment, confirmations, page_size, start_block)

    def blocks(
        self, from_block: int | None = None, to_block: int | None = None
    ) -> list[BlockRow]:
        """Settlement blocks appended in chain blocks ``from_block..to_block``.

        Args:
            from_block: First chain block, inclusive; the start block by default.
            to_block: Last chain block, inclusive; the head by default.

        Returns:
            The blocks in chain order, each with its audit state.

        Raises:
            NodeUnreachableError: The node stopped answering.
        """
        with self._reaching_node():
            snap = self._snapshot()
            first = self._first_block(snap) if from_block is None else from_block
            last = snap.head if to_block is None else min(to_block, snap.head)
            validated = self._logs(
                snap,
                [self.ledger.address],
                [self._topics["BlockValidated"]],
                first,
                last,
            )
            trail = self._audit_trail(snap, validated)
            rows = [self._block_row(snap, event, trail) for event in validated]

        log.info(
            "blocks queried",
            extra={
                "rows": len(rows),
                "from_block": first,
                "to_block": last,
                "head": snap.head,
                "requests": snap.requests,
            },
        )
        return rows

    def records(
        self,
        terminal: str | None = None,
        merchant: str | None = None,
        payer: str | None = None,
        code: StatusCode | None = None,
        since: int | None = None,
        until: int | None = None,
    ) -> list[RecordRow]:
        """Record outcomes matching every filter given, in chain order.

        Args:
            terminal: Terminal id.
            merchant: Merchant address; a rejected record matches through the
                terminal registered to the merchant.
            payer: Payer address.
            code: Status code of the outcome (``PROOF_MISMATCH`` for the audit's
                rejections, ``APPROVED`` for approvals).
            since: Earliest outcome time, inclusive, Unix seconds.
            until: Latest outcome time, exclusive, Unix seconds.

        Returns:
            One row per outcome: a record rejected by the audit has the row of its
            approval and the row of its rejection.

        Raises:
            FieldRangeError: A terminal id or an address is malformed.
            NodeUnreachableError: The node stopped answering.
        """
        terminals = None if terminal is None else [terminal_topic(terminal)]
        payers = None if payer is None else [address_topic("payer", payer)]
        merchants = None if merchant is None else [address_topic("merchant", merchant)]
        codes = None if code is None else [_code_topic(code)]
        with self._reaching_node():
            snap = self._snapshot()
            first, last = self._time_range(snap, since, until)
            # An approval names its merchant; only rejections need the registry.
            registrations = (
                {}
                if code == StatusCode.APPROVED
                else self._registrations(snap, terminals, merchants)
            )
            outcomes: list[_Event] = []
            if code in (None, StatusCode.APPROVED):
                outcomes += self._logs(
                    snap,
                    [self.ledger.address],
                    [self._topics["TransactionApproved"], terminals, payers, merchants],
                    first,
                    last,
                )

            if code != StatusCode.APPROVED:
                outcomes += self._rejections(
                    snap, registrations, terminals, payers, codes, merchant, first, last
                )

            approved = [e for e in outcomes if e.name == "TransactionApproved"]
            trail = self._audit_trail(snap, approved, terminals, payers)
            rows = [
                self._record_row(snap, event, trail, registrations)
                for event in sorted(outcomes, key=lambda event: event.position)
            ]

        log.info(
            "records queried",
            extra={
                "rows": len(rows),
                "from_block": first,
                "to_block": last,
                "head": snap.head,
                "requests": snap.requests,
            },
        )
        return rows

    def history(self, terminal_id: str, sequence: int) -> RecordHistory:
        """Every step of the record ``(terminal_id, sequence)``, in chain order.

        Raises:
            FieldRangeError: The terminal id is malformed.
            NodeUnreachableError: The node stopped answering.
        """
        terminals = [terminal_topic(terminal_id)]
        with self._reaching_node():
            snap = self._snapshot()
            first = self._first_block(snap)
            appended = [
                event
                for event in self._logs(
                    snap,
                    [self.ledger.address],
                    [
                        [
                            self._topics["TransactionApproved"],
                            self._topics["TransactionRejected"],
                        ],
                        terminals,
                    ],
                    first,
                    snap.head,
                )
                if int(event.args["sequence"]) == sequence
            ]
            approved = [e for e in appended if e.name == "TransactionApproved"]
            trail = self._audit_trail(snap, approved, terminals)
            registrations = self._registrations(snap, terminals, None)
            placed = [
                placed_step
                for event in appended
                for placed_step in self._steps(snap, event, trail, registrations)
            ]
            steps = [step for _, step in sorted(placed, key=lambda pair: pair[0])]

        log.info(
            "history queried",
            extra={
                "terminal_id": terminal_id,
                "sequence": sequence,
                "steps": len(steps),
                "head": snap.head,
                "requests": snap.requests,
            },
        )
        return RecordHistory(terminal_id, sequence, tuple(steps))

    @contextmanager
    def _reaching_node(self) -> Iterator[None]:
        """Turn the transport's errors into one that names the node."""
        try:
            yield
        except (OSError, ProviderConnectionError) as err:
            endpoint = getattr(self.w3.provider, "endpoint_uri", None)
            where = endpoint or type(self.w3.provider).__name__
            raise NodeUnreachableError(
                f"No Ethereum node answers at {where}: {err}. Check that the node "
                "runs and that the RPC URL is right."
            ) from err

    def _check_deployment(self) -> None:
        chain_id = int(self.w3.eth.chain_id)
        if chain_id != self.deployment.chain_id:
            raise DeploymentMismatchError(
                f"The node serves chain {chain_id}, but the deployment is on chain "
                f"{self.deployment.chain_id}. Connect to that chain or pass its "
                "deployment file."
            )

        for name, contract in (
            ("TerminalRegistry", self.registry),
            ("Ledger", self.ledger),
            ("SettlementAudit", self.audit),
        ):
            if not self.w3.eth.get_code(contract.address):
                raise DeploymentMismatchError(
                    f"No contract code at {contract.address} (the {name} of the "
                    f"deployment) on chain {chain_id}. The chain was reset or the "
                    "deployment file is from another network; deploy again or pass "
                    "the right file."
                )

    def _snapshot(self) -> _Snapshot:
        return _Snapshot(self.w3, int(self.w3.eth.block_number))

    def _first_block(self, snap: _Snapshot) -> int:
        if self._start_block is None:
            self._start_block = self._creation_block(snap)

        return self._start_block

    def _creation_block(self, snap: _Snapshot) -> int:
        """The first block in which the registry, deployed first, has code."""
        low, high = 0, snap.head
        try:
            while low < high:
                middle = (low + high) // 2
                snap.requests += 1
                if self.w3.eth.get_code(self.registry.address, middle):
                    high = middle
                else:
                    low = middle + 1
        except (Web3Exception, ValueError) as err:
            log.warning(
                "no historical state; reading logs from block 0",
                extra={"error": str(err)},
            )
            return 0

        return low

    def _time_range(
        self, snap: _Snapshot, since: int | None, until: int | None
    ) -> tuple[int, int]:
        """Chain blocks with ``since <= timestamp < until``, as first and last."""
        first, last = self._first_block(snap), snap.head
        if since is not None:
            first = self._block_at(snap, since, first, last)

        if until is not None:
            last = self._block_at(snap, until, first, last) - 1

        return first, last

    @staticmethod
    def _block_at(snap: _Snapshot, moment: int, low: int, high: int) -> int:
        """The first block in ``low..high`` at or after ``moment``; ``high + 1`` if
        none is. Block timestamps never decrease, so a binary search finds it."""
        high += 1
        while low < high:
            middle = (low + high) // 2
            if snap.time(middle) >= moment:
                high = middle
            else:
                low = middle + 1

        return low

    def _logs(
        self,
        snap: _Snapshot,
        addresses: Sequence[str],
        topics: Sequence[_Topic],
        first: int,
        last: int,
    ) -> list[_Event]:
        """Decoded logs matching ``topics`` in chain blocks ``first..last``."""
        # A node reads an empty list of alternatives as "any value"; here it means
        # that nothing can match.
        if any(isinstance(topic, list) and not topic for topic in topics):
            return []

        wanted = list(topics)
        while wanted and wanted[-1] is None:
            wanted.pop()

        events: list[_Event] = []
        for start in range(first, last + 1, self.page_size):
            entries = self.w3.eth.get_logs(
                {
                    "address": [Web3.to_checksum_address(a) for a in addresses],
                    "topics": wanted,
                    "fromBlock": start,
                    "toBlock": min(start + self.page_size - 1, last),
                }
            )
            snap.requests += 1
            events.extend(self._decode(entry) for entry in entries)

        return events

    def _decode(self, entry: Any) -> _Event:
        address = Web3.to_checksum_address(entry["address"])
        event = self._decoders[(address, bytes(entry["topics"][0]))]
        data = event.process_log(entry)
        return _Event(
            name=event.event_name,
            address=address,
            args=data["args"],
            block_number=int(entry["blockNumber"]),
            log_index=int(entry["logIndex"]),
            tx_hash=bytes(entry["transactionHash"]),
        )

    def _registrations(
        self, snap: _Snapshot, terminals: _Topic, merchants: _Topic
    ) -> dict[bytes, _Registration]:
        events = self._logs(
            snap,
            [self.registry.address],
            [self._topics["TerminalRegistered"], terminals, merchants],
            self._first_block(snap),
            snap.head,
        )
        return {
            bytes(event.args["terminalId"]): _Registration(
                event.args["merchant"], event.block_number
            )
            for event in events
        }

    def _rejections(
        self,
        snap: _Snapshot,
        registrations: dict[bytes, _Registration],
        terminals: _Topic,
        payers: _Topic,
        codes: _Topic,
        merchant: str | None,
        first: int,
        last: int,
    ) -> list[_Event]:
        """Rejections by the rules and by the audit, from one scan of both contracts
        (their ``TransactionRejected`` events are the same)."""
        if merchant is not None:
            # The event does not name the merchant: ask for its terminals instead.
            terminals = [
                Web3.to_hex(abi_encode(["bytes8"], [terminal_id]))
                for terminal_id in registrations
            ]

        events = self._logs(
            snap,
            [self.ledger.address, self.audit.address],
            [self._topics["TransactionRejected"], terminals, payers, codes],
            first,
            last,
        )
        if merchant is None:
            return events

        return [
            event
            for event in events
            if self._merchant(registrations, event) is not None
        ]

    def _audit_trail(
        self,
        snap: _Snapshot,
        appended: Iterable[_Event],
        terminals: _Topic = None,
        payers: _Topic = None,
    ) -> _AuditTrail:
        """The audit events about the settlement blocks of ``appended`` events, from
        the first of them to the head."""
        trail = _AuditTrail()
        hashes = sorted({bytes(event.args["blockHash"]) for event in appended})
        if not hashes:
            return trail

        first = min(event.block_number for event in appended)
        wanted = set(hashes)
        # Narrow by block hash while the list fits one filter; past that, read every
        # settlement event (about one per block) and keep the wanted ones.
        by_hash = (
            [_hex(block_hash) for block_hash in hashes]
            if len(hashes) <= HASHES_PER_FILTER
            else None
        )
        resolved = [self._topics["RecordSettled"], self._topics["SettlementComplete"]]
        settlements = self._logs(
            snap, [self.audit.address], [resolved, by_hash], first, snap.head
        )
        # Audit rejections do not index the block hash; they are rare, so reading
        # them all (narrowed by terminal and payer) costs little.
        rejections = self._logs(
            snap,
            [self.audit.address],
            [self._topics["TransactionRejected"], terminals, payers],
            first,
            snap.head,
        )
        for event in settlements + rejections:
            if bytes(event.args["blockHash"]) in wanted:
                trail.add(event)

        return trail

    def _merchant(
        self, registrations: dict[bytes, _Registration], event: _Event
    ) -> str | None:
        """The merchant a terminal was registered to when ``event`` happened."""
        registration = registrations.get(bytes(event.args["terminalId"]))
        if registration is None or registration.block_number > event.block_number:
            return None

        return registration.merchant

    def _final(self, snap: _Snapshot, *events: _Event) -> bool:
        return all(
            snap.head - event.block_number >= self.confirmations for event in events
        )

    def _block_row(
        self, snap: _Snapshot, event: _Event, trail: _AuditTrail
    ) -> BlockRow:
        block_hash = bytes(event.args["blockHash"])
        complete = trail.complete.get(block_hash)
        settled = list(trail.settled.get(block_hash, {}).values())
        rejected = list(trail.rejected.get(block_hash, {}).values())
        if complete is not None:
            audit = AuditState.COMPLETE
            counts = (int(complete.args["settled"]), int(complete.args["rejected"]))
            evidence = [complete]
        else:
            audit = (
                AuditState.PARTIAL if settled or rejected else AuditState.NOT_AUDITED
            )
            counts = (len(settled), len(rejected))
            evidence = settled + rejected

        return BlockRow(
            height=int(event.args["height"]),
            block_hash=block_hash,
            prev_hash=bytes(event.args["prevHash"]),
            records_root=bytes(event.args["recordsRoot"]),
            record_count=int(event.args["recordCount"]),
            block_number=event.block_number,
            timestamp=snap.time(event.block_number),
            tx_hash=event.tx_hash,
            audit=audit,
            settled=counts[0],
            rejected=counts[1],
            final=self._final(snap, event, *evidence),
        )

    def _record_row(
        self,
        snap: _Snapshot,
        event: _Event,
        trail: _AuditTrail,
        registrations: dict[bytes, _Registration],
    ) -> RecordRow:
        args = event.args
        block_hash, index = event.record_key
        settlement: _Event | None = None
        if event.name == "TransactionApproved":
            code = StatusCode.APPROVED
            merchant: str | None = args["merchant"]
            status, settlement = trail.settlement_of(block_hash, index)
        else:
            code = StatusCode(args["code"])
            merchant = self._merchant(registrations, event)
            if event.address == self.audit.address:
                status, settlement = SettlementStatus.REJECTED_BY_AUDIT, event
            else:
                status = SettlementStatus.REJECTED_BY_RULES

        evidence = [event] if settlement is None else [event, settlement]
        return RecordRow(
            terminal_id=_terminal_text(bytes(args["terminalId"])),
            sequence=int(args["sequence"]),
            payer=args["payer"],
            merchant=merchant,
            amount=int(args["amount"]),
            code=code,
            status=status,
            block_hash=block_hash,
            index=index,
            tx_hash=event.tx_hash,
            block_number=event.block_number,
            timestamp=snap.time(event.block_number),
            settlement_tx=None if settlement is None else settlement.tx_hash,
            final=self._final(snap, *evidence),
        )

    def _steps(
        self,
        snap: _Snapshot,
        event: _Event,
        trail: _AuditTrail,
        registrations: dict[bytes, _Registration],
    ) -> list[tuple[tuple[int, int], HistoryStep]]:
        """The append step of ``event`` and, for an approval, its settlement step,
        each with the chain position of its event."""
        args = event.args
        block_hash, index = event.record_key
        if event.name == "TransactionRejected":
            merchant = self._merchant(registrations, event)
            steps = [(Step.REJECTED_BY_RULES, StatusCode(args["code"]), event)]
        else:
            merchant = args["merchant"]
            steps = [(Step.APPROVED, StatusCode.APPROVED, event)]
            status, settlement = trail.settlement_of(block_hash, index)
            if status is SettlementStatus.REJECTED_BY_AUDIT and settlement is not None:
                steps.append(
                    (Step.REJECTED_BY_AUDIT, StatusCode.PROOF_MISMATCH, settlement)
                )
            elif settlement is not None:
                step = (
                    Step.SETTLED
                    if settlement.name == "RecordSettled"
                    else Step.SETTLED_WITH_BLOCK
                )
                steps.append((step, StatusCode.APPROVED, settlement))

        return [
            (
                source.position,
                HistoryStep(
                    step=step,
                    code=code,
                    block_hash=block_hash,
                    index=index,
                    payer=args["payer"],
                    merchant=merchant,
                    amount=int(args["amount"]),
                    tx_hash=source.tx_hash,
                    block_number=source.block_number,
                    timestamp=snap.time(source.block_number),
                    final=self._final(snap, source),
                ),
            )
            for step, code, source in steps
        ]
