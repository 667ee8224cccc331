"""Receipts: one settlement record with everything a third party needs to check it.

A merchant holds a receipt; anyone verifies it without trusting the gateway or the
bookkeeper that wrote it. It carries the record (its 133-byte encoding and the decoded
fields), the terminal's signature and public key, the settlement block the record sits
in (hash, header, records root, chain block, append transaction), the record's place
in the block's audit tree with its inclusion proof, the chain id and contract addresses,
and the record's status when the receipt was written.

Verification runs named checks. Offline, from the receipt alone: the fields are the
encoding's, the domain is the receipt's deployment, the signature verifies under the
receipt's key, the leaf and its proof lead to the records root, and the block header
with that root and record count hashes to the block hash. Online, against a node: the
contracts are wired together, the registry holds the receipt's key, the Ledger stored
that root and count for that block, the append transaction emitted the record's
outcome, the audit module's settlement status agrees, and its dispute view accepts the
signature.

The JSON document is one object, ``"receipt_version": 1``. Byte strings are 0x-prefixed
hex; integers are JSON numbers, except those whose range passes 2**53 (uint64 and
wider), which are decimal strings, so that no JSON parser rounds them.

NOTE: a receipt names its own contract addresses. The checks prove the record is in a
block of the Ledger at that address; that the address is the genuine deployment is
something the verifier must know, and ``trusted`` pins it.
"""

from __future__ import annotations

import hashlib
import json
import re
import struct
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, TypeVar

import requests
from cryptography.hazmat.primitives.asymmetric import rsa
from web3 import Web3
from web3.contract import Contract
from web3.exceptions import (
    BadFunctionCallOutput,
    ContractCustomError,
    ContractLogicError,
    ProviderConnectionError,
    TimeExhausted,
    TransactionNotFound,
    Web3Exception,
)
from web3.logs import DISCARD

from posaudit.audit import SettlementStatus
from posaudit.audittree import leaf_hash, root_from_inclusion_proof
from posaudit.blocks import BlockHeader
from posaudit.chain.deploy import Deployment, contract_at, decode_error
from posaudit.exceptions import (
    AuditTreeError,
    ChainError,
    FieldRangeError,
    MalformedReceiptError,
    ReceiptError,
    RecordError,
    RecordNotFoundError,
    RecordNotInBlockError,
    SignatureError,
)
from posaudit.records import (
    MAX_AMOUNT,
    MAX_UINT16,
    MAX_UINT32,
    MAX_UINT64,
    RECORD_LENGTH,
    Domain,
    SettlementRecord,
    decode_record,
)
from posaudit.rules import StatusCode
from posaudit.signing import load_public_key, public_key_pem, verify
from posaudit.store import Store

RECEIPT_VERSION = 1
HASH_LENGTH = 32

OFFLINE_CHECKS = ("fields", "domain", "signature", "leaf", "proof", "header")
"""Checks that need the receipt alone, in the order they are reported."""

DEPLOYMENT_CHECK = "deployment"
"""Compares the receipt's chain id and addresses with a trusted deployment."""

ONLINE_CHECKS = (
    "contracts",
    "registered key",
    "root on chain",
    "events",
    "settlement",
    "dispute view",
)
"""Checks that ask a node of the receipt's chain, in the order they are reported."""

_OFFLINE_MESSAGES = {
    "contracts": "Offline: the contracts' wiring was not checked against the chain.",
    "registered key": "Offline: the key was not checked against the chain's registry.",
    "root on chain": "Offline: the root was not checked against the chain's Ledger.",
    "events": "Offline: the append events were not checked against the chain.",
    "settlement": "Offline: the settlement status was not checked against the chain.",
    "dispute view": "Offline: the chain's dispute check was not run.",
}

_Status = TypeVar("_Status", StatusCode, SettlementStatus)

# Decimal strings stop at 78 digits (2**256 has 78), well inside int()'s limit.
_DECIMAL = re.compile(r"0|[1-9][0-9]{0,77}")
_HEX = re.compile(r"0x([0-9a-fA-F]{2})*")
_ERRNO = re.compile(r"(\[Errno -?\d+\] [^\"')]+)")
_RAW_FIELDS = struct.Struct(">Q20s16s8sQ20s20sQ3sQQHI")
_MAX_UINT256 = 2**256 - 1

# Errors that mean the node did not answer, as opposed to answering "no".
_UNREACHABLE: tuple[type[BaseException], ...] = (
    requests.exceptions.RequestException,
    ProviderConnectionError,
    TimeExhausted,
    OSError,
)


class Verdict(StrEnum):
    """The outcome of one check of a receipt."""

    PASSED = "passed"
    FAILED = "failed"
    NOT_CHECKED = "not checked"
    COULD_NOT_CHECK = "could not check"


@dataclass(frozen=True)
class Check:
    """One named check of a receipt and what it found.

    Attributes:
        name: The check, such as ``"proof"`` or ``"root on chain"``.
        verdict: Passed, failed, not checked (offline) or could not check (no node).
        message: What was compared; on failure, why, with the expected and the
            actual values.
    """

    name: str
    verdict: Verdict
    message: str

    def as_dict(self) -> dict[str, str]:
        """The check as JSON-ready values."""
        return {
            "name": self.name,
            "verdict": str(self.verdict),
            "message": self.message,
        }


@dataclass(frozen=True)
class HeaderFields:
    """The fields of a block header beside its records root and record count.

    With the receipt's records root and tree size they rebuild the header, whose
    double SHA-256 must be the block hash: that binds the root and the size to the
    block offline, since an inclusion proof alone does not bind the size.
    """

    version: int
    prev_hash: bytes
    timestamp: int
    target: int
    nonce: int


@dataclass(frozen=True)
class Receipt:
    """A settlement record with its signature, key, block, proof and status.

    Nothing is checked on construction: a receipt read from an untrusted document
    is what verification is for. :meth:`from_json` checks the document's shape.

    Attributes:
        encoding: The record's 133-byte encoding, what the terminal signed.
        record: The decoded fields, as written beside the encoding.
        signature: The terminal's RSA PKCS#1 v1.5 SHA-256 signature of the encoding.
        public_key: The terminal's public key, SubjectPublicKeyInfo PEM.
        block_hash: Hash of the settlement block holding the record.
        chain_block: Number of the chain block that holds the append transaction.
        height: Height of the settlement block in the Ledger's chain of blocks.
        transaction_hash: The transaction that appended the block.
        records_root: Root of the block's audit tree.
        header: The rest of the block's header.
        leaf_index: The record's position in the block; ``0 <= leaf_index``.
        tree_size: Number of records in the block.
        leaf_hash: ``SHA-256(0x00 || encoding || SHA-256(signature))``.
        proof: Sibling hashes from the leaf up to the root (RFC 6962 order).
        chain_id: EIP-155 chain id of the deployment.
        registry: Address of the TerminalRegistry.
        ledger: Address of the Ledger.
        audit: Address of the SettlementAudit.
        code: The Ledger's status code for the record.
        settlement: The audit module's status of the record when it was written.
    """

    encoding: bytes
    record: SettlementRecord
    signature: bytes
    public_key: str
    block_hash: bytes
    chain_block: int
    height: int
    transaction_hash: bytes
    records_root: bytes
    header: HeaderFields
    leaf_index: int
    tree_size: int
    leaf_hash: bytes
    proof: tuple[bytes, ...]
    chain_id: int
    registry: str
    ledger: str
    audit: str
    code: StatusCode
    settlement: SettlementStatus

    def to_document(self) -> dict[str, Any]:
        """The receipt as one JSON-ready object (see the module docs)."""
        record = self.record
        return {
            "receipt_version": RECEIPT_VERSION,
            "chain_id": str(self.chain_id),
            "contracts": {
                "registry": self.registry,
                "ledger": self.ledger,
                "audit": self.audit,
            },
            "record": {
                "encoding": _hex(self.encoding),
                "fields": {
                    "chain_id": str(record.domain.chain_id),
                    "ledger": record.domain.ledger,
                    "record_id": _hex(record.record_id),
                    "terminal_id": record.terminal_id,
                    "sequence": str(record.sequence),
                    "payer": record.payer,
                    "merchant": record.merchant,
                    "amount": str(record.amount),
                    "currency": record.currency,
                    "timestamp": str(record.timestamp),
                    "valid_until": str(record.valid_until),
                    "goods_category": record.goods_category,
                    "operator_id": record.operator_id,
                },
            },
            "signature": _hex(self.signature),
            "public_key": self.public_key,
            "block": {
                "hash": _hex(self.block_hash),
                "chain_block": str(self.chain_block),
                "height": str(self.height),
                "transaction_hash": _hex(self.transaction_hash),
                "records_root": _hex(self.records_root),
                "header": {
                    "version": self.header.version,
                    "prev_hash": _hex(self.header.prev_hash),
                    "timestamp": str(self.header.timestamp),
                    "target": str(self.header.target),
                    "nonce": str(self.header.nonce),
                },
            },
            "proof": {
                "leaf_index": self.leaf_index,
                "tree_size": self.tree_size,
                "leaf_hash": _hex(self.leaf_hash),
                "hashes": [_hex(digest) for digest in self.proof],
            },
            "status": {"code": self.code.name, "settlement": self.settlement.name},
        }

    def to_json(self) -> str:
        """The receipt as a JSON document, indented, with a final newline."""
        return json.dumps(self.to_document(), indent=2) + "\n"

    @classmethod
    def from_document(cls, document: object) -> Receipt:
        """Read a receipt from a parsed JSON document.

        Args:
            document: The parsed JSON value; it must be an object.

        Returns:
            The receipt, unverified.

        Raises:
            MalformedReceiptError: A field is missing, of the wrong type, not hex,
                of the wrong length or out of range; the error names it.
        """
        root = _Node(document, "")
        root.object()
        version = root.get("receipt_version").integer(0, MAX_UINT32)
        if version != RECEIPT_VERSION:
            raise MalformedReceiptError(
                "receipt_version",
                f"version {version} is not supported; this verifier reads version "
                f"{RECEIPT_VERSION}.",
            )

        contracts = root.get("contracts")
        record = root.get("record")
        block = root.get("block")
        header = block.get("header")
        proof = root.get("proof")
        status = root.get("status")
        public_key = root.get("public_key").text()
        try:
            key = load_public_key(public_key.encode("utf-8"))
        except (SignatureError, UnicodeEncodeError) as err:
            raise MalformedReceiptError("public_key", f"not an RSA key: {err}") from err

        signature = root.get("signature").hex(key.key_size // 8)
        return cls(
            encoding=record.get("encoding").hex(RECORD_LENGTH),
            record=_read_fields(record.get("fields")),
            signature=signature,
            public_key=public_key,
            block_hash=block.get("hash").hex(HASH_LENGTH),
            chain_block=block.get("chain_block").decimal(0, MAX_UINT64),
            height=block.get("height").decimal(1, MAX_UINT64),
            transaction_hash=block.get("transaction_hash").hex(HASH_LENGTH),
            records_root=block.get("records_root").hex(HASH_LENGTH),
            header=HeaderFields(
                version=header.get("version").integer(0, MAX_UINT32),
                prev_hash=header.get("prev_hash").hex(HASH_LENGTH),
                timestamp=header.get("timestamp").decimal(0, MAX_UINT64),
                target=header.get("target").decimal(0, _MAX_UINT256),
                nonce=header.get("nonce").decimal(0, MAX_UINT64),
            ),
            leaf_index=proof.get("leaf_index").integer(0, MAX_UINT32),
            tree_size=proof.get("tree_size").integer(1, MAX_UINT32),
            leaf_hash=proof.get("leaf_hash").hex(HASH_LENGTH),
            proof=tuple(item.hex(HASH_LENGTH) for item in proof.get("hashes").items()),
            chain_id=root.get("chain_id").decimal(1, MAX_UINT64),
            registry=contracts.get("registry").address(),
            ledger=contracts.get("ledger").address(),
            audit=contracts.get("audit").address(),
            code=status.get("code").member(StatusCode),
            settlement=status.get("settlement").member(SettlementStatus),
        )

    @classmethod
    def from_json(cls, text: str | bytes) -> Receipt:
        """Read a receipt from its JSON document.

        Raises:
            MalformedReceiptError: The text is not JSON, or a field is missing, of
                the wrong type, not hex, of the wrong length or out of range; the
                error names it.
        """
        try:
            document = json.loads(text)
        except (ValueError, UnicodeDecodeError) as err:
            raise MalformedReceiptError(
                "(document)", f"the receipt is not a JSON document: {err}."
            ) from err

        return cls.from_document(document)


def _hex(value: bytes) -> str:
    return "0x" + value.hex()


class _Node:
    """A value of a receipt document and its path, read with a typed accessor."""

    def __init__(self, value: object, path: str) -> None:
        self.value = value
        self.path = path

    def _fail(self, problem: str) -> MalformedReceiptError:
        return MalformedReceiptError(self.path or "(document)", problem)

    def _shown(self) -> str:
        kind = {
            bool: "boolean",
            int: "number",
            float: "number",
            str: "string",
            list: "array",
            dict: "object",
        }.get(type(self.value), type(self.value).__name__)
        if self.value is None:
            return "null"

        text = json.dumps(self.value) if kind != "object" else "{…}"
        return f"{kind} {text[:70]}"

    def object(self) -> Mapping[str, object]:
        if not isinstance(self.value, dict):
            raise self._fail(f"must be a JSON object, got {self._shown()}.")

        return self.value

    def get(self, key: str) -> _Node:
        members = self.object()
        path = f"{self.path}.{key}" if self.path else key
        if key not in members:
            raise MalformedReceiptError(path, "is missing.")

        return _Node(members[key], path)

    def items(self) -> list[_Node]:
        if not isinstance(self.value, list):
            raise self._fail(f"must be a JSON array, got {self._shown()}.")

        return [_Node(item, f"{self.path}[{i}]") for i, item in enumerate(self.value)]

    def text(self) -> str:
        if not isinstance(self.value, str):
            raise self._fail(f"must be a string, got {self._shown()}.")

        return self.value

    def integer(self, low: int, high: int) -> int:
        value = self.value
        if not isinstance(value, int) or isinstance(value, bool):
            raise self._fail(f"must be a JSON number (integer), got {self._shown()}.")

        if not low <= value <= high:
            raise self._fail(f"must be from {low} to {high}, got {value}.")

        return value

    def decimal(self, low: int, high: int) -> int:
        value = self.value
        if not isinstance(value, str) or not _DECIMAL.fullmatch(value):
            raise self._fail(
                f'must be a decimal string such as "42", got {self._shown()}.'
            )

        number = int(value)
        if not low <= number <= high:
            raise self._fail(f"must be from {low} to {high}, got {number}.")

        return number

    def hex(self, length: int | None = None) -> bytes:
        value = self.value
        if not isinstance(value, str) or not _HEX.fullmatch(value):
            raise self._fail(
                "must be 0x-prefixed hex with two digits per byte, got "
                f"{self._shown()}."
            )

        data = bytes.fromhex(value[2:])
        if length is not None and len(data) != length:
            raise self._fail(f"must be {length} bytes, got {len(data)}.")

        return data

    def address(self) -> str:
        return Web3.to_checksum_address(self.hex(20))

    def member(self, enum: type[_Status]) -> _Status:
        name = self.text()
        try:
            return enum[name]
        except KeyError:
            names = ", ".join(member.name for member in enum)
            raise self._fail(f"{name!r} is not one of {names}.") from None


def _read_fields(node: _Node) -> SettlementRecord:
    try:
        return SettlementRecord(
            domain=Domain(
                node.get("chain_id").decimal(1, MAX_UINT64),
                _address_text(node.get("ledger")),
            ),
            record_id=node.get("record_id").hex(16),
            terminal_id=node.get("terminal_id").text(),
            sequence=node.get("sequence").decimal(1, MAX_UINT64),
            payer=_address_text(node.get("payer")),
            merchant=_address_text(node.get("merchant")),
            amount=node.get("amount").decimal(1, MAX_AMOUNT),
            currency=node.get("currency").text(),
            timestamp=node.get("timestamp").decimal(0, MAX_UINT64),
            valid_until=node.get("valid_until").decimal(0, MAX_UINT64),
            goods_category=node.get("goods_category").integer(0, MAX_UINT16),
            operator_id=node.get("operator_id").integer(0, MAX_UINT32),
        )
    except FieldRangeError as err:
        raise MalformedReceiptError(
            f"{node.path}.{err.field}", f"{err.value!r} is out of range; {err.allowed}."
        ) from err


def _address_text(node: _Node) -> str:
    node.hex(20)
    return node.text()


def build_receipt(
    store: Store, record_id: bytes, w3: Web3, deployment: Deployment
) -> Receipt:
    """Write the receipt of a record from the store and the chain.

    The store gives the signed record, its block, place and proof; the chain gives
    the terminal's registered key, the block's header (from the append transaction)
    and the record's settlement status now.

    Args:
        store: The store the bookkeeper wrote the record's block to.
        record_id: The record's 16-byte id.
        w3: A connection to a node of the deployment's chain.
        deployment: The contracts the record was settled with.

    Returns:
        The receipt.

    Raises:
        RecordNotFoundError: The record is not in the store.
        RecordNotInBlockError: The record is in no settlement block yet.
        ReceiptError: The record's terminal has no registered key, or the store's
            block does not match its append transaction.
        ChainError: The node does not answer or a contract call failed.
    """
    try:
        stored = store.record(record_id)
    except RecordNotFoundError as err:
        raise RecordNotFoundError(
            f"No record 0x{record_id.hex()} in the store {store.path}; check the "
            "record id and the --db file."
        ) from err

    if stored.block_hash is None or stored.leaf_index is None or stored.code is None:
        raise RecordNotInBlockError(
            f"Record 0x{record_id.hex()} is in the outbox but in no settlement block "
            "yet, so it has no proof; write its receipt after the bookkeeper has "
            "put it on chain."
        )

    block = store.block(stored.block_hash)
    signed = stored.signed
    registry = contract_at(w3, "TerminalRegistry", deployment.registry)
    ledger = contract_at(w3, "Ledger", deployment.ledger)
    audit = contract_at(w3, "SettlementAudit", deployment.audit)
    try:
        terminal = signed.record.terminal_id.encode("ascii")
        modulus, exponent = registry.functions.publicKeyOf(terminal).call()
        status = audit.functions.statusOf(block.block_hash, stored.leaf_index).call()
        transaction = w3.eth.get_transaction(block.transaction_hash)
        function, arguments = ledger.decode_function_input(transaction["input"])
    except _UNREACHABLE as err:
        raise ChainError(
            f"The node does not answer: {_unreachable_reason(err)}."
        ) from err
    except ContractCustomError as err:
        reason = _revert_reason(err, (audit, ledger, registry))
        if reason.startswith("RegistryUnknownTerminal"):
            raise ReceiptError(
                f"Terminal {signed.record.terminal_id} has no registered key, so "
                f"record 0x{record_id.hex()} gets no receipt: nothing on chain can "
                f"attest its signature. The Ledger's code for it is {stored.code.name}."
            ) from err

        raise ChainError(
            f"Cannot read record 0x{record_id.hex()}'s key or status from the chain:"
            f" the call reverted with {reason}."
        ) from err
    except (Web3Exception, ValueError) as err:
        raise ChainError(
            f"Cannot read record 0x{record_id.hex()}'s key, status or block header "
            f"from the chain: {err}."
        ) from err

    header = _header_of(function, arguments)
    if header.block_hash != block.block_hash:
        raise ReceiptError(
            f"The append transaction 0x{block.transaction_hash.hex()} carries a header "
            f"of block 0x{header.block_hash.hex()}, but the store holds block "
            f"0x{block.block_hash.hex()}: the store does not match the chain."
        )

    key = rsa.RSAPublicNumbers(
        int.from_bytes(exponent, "big"), int.from_bytes(modulus, "big")
    ).public_key()
    return Receipt(
        encoding=signed.encoding,
        record=signed.record,
        signature=signed.signature,
        public_key=public_key_pem(key).decode("ascii"),
        block_hash=block.block_hash,
        chain_block=block.chain_block,
        height=block.height,
        transaction_hash=block.transaction_hash,
        records_root=block.records_root,
        header=HeaderFields(
            version=header.version,
            prev_hash=header.prev_hash,
            timestamp=header.timestamp,
            target=header.target,
            nonce=header.nonce,
        ),
        leaf_index=stored.leaf_index,
        tree_size=block.record_count,
        leaf_hash=leaf_hash(signed.leaf),
        proof=tuple(stored.proof or ()),
        chain_id=deployment.chain_id,
        registry=Web3.to_checksum_address(deployment.registry),
        ledger=Web3.to_checksum_address(deployment.ledger),
        audit=Web3.to_checksum_address(deployment.audit),
        code=stored.code,
        settlement=SettlementStatus(status),
    )


def _header_of(function: Any, arguments: Mapping[str, Any]) -> BlockHeader:
    if function.fn_name != "appendBlock":
        raise ReceiptError(
            f"The block's transaction calls {function.fn_name}, not appendBlock; "
            "it carries no block header."
        )

    fields = arguments["header"]
    return BlockHeader(
        prev_hash=bytes(fields["prevHash"]),
        records_root=bytes(fields["recordsRoot"]),
        record_count=int(fields["recordCount"]),
        timestamp=int(fields["timestamp"]),
        target=int(fields["target"]),
        nonce=int(fields["nonce"]),
        version=int(fields["version"]),
    )


def verify_receipt(
    receipt: Receipt, w3: Web3 | None = None, trusted: Deployment | None = None
) -> list[Check]:
    """Run every check of a receipt; those that need a node only with ``w3``.

    Args:
        receipt: The receipt to check.
        w3: A connection to a node of the receipt's chain; None checks offline, and
            the chain's checks are reported as not checked.
        trusted: The deployment the verifier trusts; None leaves the receipt's
            addresses unchecked against one.

    Returns:
        One check per name of ``OFFLINE_CHECKS``, ``DEPLOYMENT_CHECK`` and
        ``ONLINE_CHECKS``, in that order.
    """
    checks = _offline_checks(receipt)
    checks.append(_check_deployment(receipt, trusted))
    if w3 is None:
        checks.extend(
            Check(name, Verdict.NOT_CHECKED, _OFFLINE_MESSAGES[name])
            for name in ONLINE_CHECKS
        )
    else:
        checks.extend(_online_checks(receipt, w3))

    return checks


def verdict_of(checks: Sequence[Check]) -> Verdict:
    """The overall verdict of a receipt's checks.

    Returns:
        FAILED if any check failed, else COULD_NOT_CHECK if any could not be done,
        else PASSED: checks not run offline do not count.
    """
    verdicts = {check.verdict for check in checks}
    if Verdict.FAILED in verdicts:
        return Verdict.FAILED

    if Verdict.COULD_NOT_CHECK in verdicts:
        return Verdict.COULD_NOT_CHECK

    return Verdict.PASSED


def _offline_checks(receipt: Receipt) -> list[Check]:
    leaf = leaf_hash(receipt.encoding + hashlib.sha256(receipt.signature).digest())
    return [
        _check_fields(receipt),
        _check_domain(receipt),
        _check_signature(receipt),
        _check_leaf(receipt, leaf),
        _check_proof(receipt, leaf),
        _check_header(receipt),
    ]


def _passed(name: str, message: str) -> Check:
    return Check(name, Verdict.PASSED, message)


def _failed(name: str, message: str) -> Check:
    return Check(name, Verdict.FAILED, message)


def _short(value: bytes) -> str:
    return f"0x{value[:8].hex()}…"


def _check_fields(receipt: Receipt) -> Check:
    try:
        decoded = decode_record(receipt.encoding)
    except RecordError as err:
        return _failed("fields", f"The encoding does not decode to a record: {err}")

    written, actual = _field_values(receipt.record), _field_values(decoded)
    differences = [
        f"{name}: the receipt says {written[name]!r}, the encoding has {actual[name]!r}"
        for name in actual
        if written[name] != actual[name]
    ]
    if differences:
        return _failed(
            "fields",
            "The decoded fields differ from the encoding: " + "; ".join(differences),
        )

    return _passed("fields", "All 13 decoded fields equal those of the encoding.")


def _field_values(record: SettlementRecord) -> dict[str, object]:
    return {
        "chain_id": record.domain.chain_id,
        "ledger": record.domain.ledger.lower(),
        "record_id": _hex(record.record_id),
        "terminal_id": record.terminal_id,
        "sequence": record.sequence,
        "payer": record.payer.lower(),
        "merchant": record.merchant.lower(),
        "amount": record.amount,
        "currency": record.currency,
        "timestamp": record.timestamp,
        "valid_until": record.valid_until,
        "goods_category": record.goods_category,
        "operator_id": record.operator_id,
    }


def _check_domain(receipt: Receipt) -> Check:
    encoding = receipt.encoding
    if len(encoding) != RECORD_LENGTH:
        return _failed(
            "domain",
            f"The encoding is {len(encoding)} bytes, want {RECORD_LENGTH}; it has "
            "no domain to compare.",
        )

    chain_id = int.from_bytes(encoding[0:8], "big")
    ledger = _hex(encoding[8:28])
    problems = []
    if chain_id != receipt.chain_id:
        problems.append(
            f"The record is signed for chain {chain_id}, the receipt's chain is "
            f"{receipt.chain_id}"
        )

    if ledger != receipt.ledger.lower():
        problems.append(
            f"The record is signed for Ledger {Web3.to_checksum_address(ledger)}, "
            f"the receipt's Ledger is {receipt.ledger}"
        )

    # A record signed for another deployment still gets a receipt: one that proves
    # the Ledger rejected it for exactly that reason.
    if problems and receipt.code is StatusCode.WRONG_DOMAIN:
        return _passed(
            "domain",
            ". ".join(problems) + ": the Ledger rejected it as WRONG_DOMAIN, as the "
            "receipt says.",
        )

    if problems:
        return _failed("domain", ". ".join(problems) + ".")

    return _passed(
        "domain",
        f"The record is signed for chain {chain_id} and Ledger {receipt.ledger}.",
    )


def _check_signature(receipt: Receipt) -> Check:
    try:
        key = load_public_key(receipt.public_key.encode("utf-8"))
    except (SignatureError, UnicodeEncodeError) as err:
        return _failed("signature", f"The receipt's public key cannot be used: {err}")

    digest = hashlib.sha256(receipt.encoding).digest()
    fingerprint = _key_fingerprint(key)
    try:
        verify(key, receipt.encoding, receipt.signature)
    except SignatureError:
        return _failed(
            "signature",
            f"Signature {_short(receipt.signature)} does not verify over the record "
            f"(SHA-256 0x{digest.hex()}) under the receipt's public key "
            f"(modulus SHA-256 {fingerprint}).",
        )

    return _passed(
        "signature",
        f"RSA PKCS#1 v1.5 SHA-256 signature verifies under the receipt's key "
        f"(modulus SHA-256 {fingerprint}).",
    )


def _key_fingerprint(key: rsa.RSAPublicKey) -> str:
    modulus = key.public_numbers().n
    data = modulus.to_bytes((modulus.bit_length() + 7) // 8, "big")
    return _short(hashlib.sha256(data).digest())


def _check_leaf(receipt: Receipt, leaf: bytes) -> Check:
    if receipt.leaf_hash != leaf:
        return _failed(
            "leaf",
            f"The receipt's leaf hash is 0x{receipt.leaf_hash.hex()}, but "
            "SHA-256(0x00 || encoding || SHA-256(signature)) is "
            f"0x{leaf.hex()}.",
        )

    return _passed(
        "leaf", f"Leaf hash 0x{leaf.hex()} commits to the record and its signature."
    )


def _check_proof(receipt: Receipt, leaf: bytes) -> Check:
    try:
        root = root_from_inclusion_proof(
            receipt.leaf_index, receipt.tree_size, leaf, receipt.proof
        )
    except AuditTreeError as err:
        return _failed(
            "proof",
            f"The inclusion proof of leaf {receipt.leaf_index} in a tree of "
            f"{receipt.tree_size} is malformed: {err}",
        )

    if root != receipt.records_root:
        return _failed(
            "proof",
            f"The record's leaf at index {receipt.leaf_index} of {receipt.tree_size} "
            f"with its {len(receipt.proof)} proof hashes leads to root 0x{root.hex()}, "
            f"but the receipt's records root is 0x{receipt.records_root.hex()}.",
        )

    return _passed(
        "proof",
        f"The record's leaf at index {receipt.leaf_index} of {receipt.tree_size} "
        f"leads to records root 0x{root.hex()}.",
    )


def _check_header(receipt: Receipt) -> Check:
    fields = receipt.header
    try:
        header = BlockHeader(
            prev_hash=fields.prev_hash,
            records_root=receipt.records_root,
            record_count=receipt.tree_size,
            timestamp=fields.timestamp,
            target=fields.target,
            nonce=fields.nonce,
            version=fields.version,
        )
        block_hash = header.block_hash
    except (struct.error, OverflowError) as err:
        return _failed("header", f"The block header cannot be encoded: {err}.")

    if block_hash != receipt.block_hash:
        return _failed(
            "header",
            f"The header with records root {_short(receipt.records_root)} and "
            f"{receipt.tree_size} records hashes to block 0x{block_hash.hex()}, but "
            f"the receipt's block hash is 0x{receipt.block_hash.hex()}.",
        )

    return _passed(
        "header",
        f"The header with this records root and {receipt.tree_size} records hashes "
        f"to block 0x{block_hash.hex()}.",
    )


def _check_deployment(receipt: Receipt, trusted: Deployment | None) -> Check:
    if trusted is None:
        return Check(
            DEPLOYMENT_CHECK,
            Verdict.NOT_CHECKED,
            "The contract addresses are the receipt's own; pass a deployment you "
            "trust to pin them.",
        )

    pairs = (
        ("chain id", str(trusted.chain_id), str(receipt.chain_id)),
        ("registry", trusted.registry, receipt.registry),
        ("ledger", trusted.ledger, receipt.ledger),
        ("audit", trusted.audit, receipt.audit),
    )
    differences = [
        f"{name}: trusted {want}, receipt {got}"
        for name, want, got in pairs
        if want.lower() != got.lower()
    ]
    if differences:
        return _failed(
            DEPLOYMENT_CHECK,
            "The receipt is not for the trusted deployment: "
            + "; ".join(differences)
            + ".",
        )

    return _passed(
        DEPLOYMENT_CHECK, "Chain id and addresses equal the trusted deployment's."
    )


@dataclass(frozen=True)
class _Chain:
    """The receipt's contracts on the node that checks it."""

    w3: Web3
    url: str
    registry: Contract
    ledger: Contract
    audit: Contract


def _online_checks(receipt: Receipt, w3: Web3) -> list[Check]:
    url = str(getattr(w3.provider, "endpoint_uri", None) or "the node")

    def unchecked(message: str) -> list[Check]:
        return [Check(name, Verdict.COULD_NOT_CHECK, message) for name in ONLINE_CHECKS]

    try:
        chain_id = int(w3.eth.chain_id)
    except _UNREACHABLE as err:
        return unchecked(f"No node answers at {url}: {_unreachable_reason(err)}.")
    except Web3Exception as err:
        return unchecked(f"The node at {url} does not answer eth_chainId: {err}")

    if chain_id != receipt.chain_id:
        return unchecked(
            f"The node at {url} serves chain {chain_id}, the receipt is for chain "
            f"{receipt.chain_id}; connect to a node of that chain."
        )

    try:
        chain = _Chain(
            w3,
            url,
            contract_at(w3, "TerminalRegistry", receipt.registry),
            contract_at(w3, "Ledger", receipt.ledger),
            contract_at(w3, "SettlementAudit", receipt.audit),
        )
    except ChainError as err:
        return unchecked(f"The contracts' ABIs are not available: {err}")

    steps: tuple[tuple[str, Callable[[Receipt, _Chain], Check]], ...] = (
        ("contracts", _check_contracts),
        ("registered key", _check_registered_key),
        ("root on chain", _check_root_on_chain),
        ("events", _check_events),
        ("settlement", _check_settlement),
        ("dispute view", _check_dispute_view),
    )
    return [_run(name, step, receipt, chain) for name, step in steps]


def _run(
    name: str,
    step: Callable[[Receipt, _Chain], Check],
    receipt: Receipt,
    chain: _Chain,
) -> Check:
    try:
        return step(receipt, chain)
    except _UNREACHABLE as err:
        return Check(
            name,
            Verdict.COULD_NOT_CHECK,
            f"The node at {chain.url} did not answer: {_unreachable_reason(err)}.",
        )
    except ContractCustomError as err:
        reason = _revert_reason(err, (chain.audit, chain.ledger, chain.registry))
        return _failed(name, f"The contract call reverted: {reason}.")
    except (ContractLogicError, BadFunctionCallOutput) as err:
        return _failed(name, f"The contract call failed: {err}")
    except Web3Exception as err:
        return Check(
            name,
            Verdict.COULD_NOT_CHECK,
            f"The node at {chain.url} refused the request: {err}",
        )


def _unreachable_reason(err: BaseException) -> str:
    """The gist of a connection failure, without urllib3's nested reprs."""
    if isinstance(err, requests.exceptions.Timeout | TimeExhausted | TimeoutError):
        return "no answer within the timeout"

    found = _ERRNO.search(str(err))
    return found.group(1) if found else type(err).__name__


def _revert_reason(err: ContractCustomError, contracts: Sequence[Contract]) -> str:
    # A revert bubbles up from the contract that threw it, which may be another
    # than the one called: try each ABI.
    for contract in contracts:
        reason = decode_error(contract.abi, err.data)
        if not reason.startswith("unknown error"):
            return reason

    return str(err)


def _same_address(left: str, right: str) -> bool:
    return left.lower() == right.lower()


def _check_contracts(receipt: Receipt, chain: _Chain) -> Check:
    missing = [
        f"{name} {address}"
        for name, address in (
            ("registry", receipt.registry),
            ("ledger", receipt.ledger),
            ("audit", receipt.audit),
        )
        if not chain.w3.eth.get_code(Web3.to_checksum_address(address))
    ]
    if missing:
        return _failed(
            "contracts", f"No contract code at the receipt's {', '.join(missing)}."
        )

    links = (
        ("Ledger.registry()", chain.ledger.functions.registry(), receipt.registry),
        ("SettlementAudit.ledger()", chain.audit.functions.ledger(), receipt.ledger),
        (
            "SettlementAudit.registry()",
            chain.audit.functions.registry(),
            receipt.registry,
        ),
    )
    differences = []
    for name, call, expected in links:
        actual = call.call()
        if not _same_address(actual, expected):
            differences.append(f"{name} is {actual}, the receipt says {expected}")

    if differences:
        return _failed(
            "contracts",
            "The receipt's contracts are not wired together: "
            + "; ".join(differences)
            + ".",
        )

    return _passed(
        "contracts",
        "The registry, Ledger and audit module at the receipt's addresses are "
        "wired to each other.",
    )


def _check_registered_key(receipt: Receipt, chain: _Chain) -> Check:
    if len(receipt.encoding) != RECORD_LENGTH:
        return _failed(
            "registered key", "The encoding is malformed; it names no terminal."
        )

    terminal = receipt.encoding[44:52]
    try:
        key = load_public_key(receipt.public_key.encode("utf-8"))
    except (SignatureError, UnicodeEncodeError) as err:
        return _failed("registered key", f"The receipt's public key is unusable: {err}")

    modulus, exponent = chain.registry.functions.publicKeyOf(terminal).call()
    registered = (int.from_bytes(modulus, "big"), int.from_bytes(exponent, "big"))
    numbers = key.public_numbers()
    name = terminal.decode("ascii", errors="replace")
    if (numbers.n, numbers.e) != registered:
        return _failed(
            "registered key",
            f"Terminal {name}'s registered key (modulus SHA-256 "
            f"{_modulus_fingerprint(modulus)}, exponent {registered[1]}) is not the "
            f"receipt's key (modulus SHA-256 {_key_fingerprint(key)}, exponent "
            f"{numbers.e}).",
        )

    return _passed(
        "registered key",
        f"The registry at {receipt.registry} holds the receipt's key for terminal "
        f"{name}.",
    )


def _modulus_fingerprint(modulus: bytes) -> str:
    return _short(hashlib.sha256(modulus.lstrip(b"\x00")).digest())


def _check_root_on_chain(receipt: Receipt, chain: _Chain) -> Check:
    stored = chain.ledger.functions.blockOf(receipt.block_hash).call()
    root, count, height = bytes(stored[0]), int(stored[1]), int(stored[3])
    if count == 0:
        return _failed(
            "root on chain",
            f"The Ledger at {receipt.ledger} knows no block "
            f"0x{receipt.block_hash.hex()}.",
        )

    differences = []
    if root != receipt.records_root:
        differences.append(
            f"records root: chain 0x{root.hex()}, receipt "
            f"0x{receipt.records_root.hex()}"
        )

    if count != receipt.tree_size:
        differences.append(f"record count: chain {count}, receipt {receipt.tree_size}")

    if height != receipt.height:
        differences.append(f"height: chain {height}, receipt {receipt.height}")

    if differences:
        return _failed(
            "root on chain",
            f"The Ledger's block 0x{receipt.block_hash.hex()} differs from the "
            f"receipt: {'; '.join(differences)}.",
        )

    return _passed(
        "root on chain",
        f"The Ledger stored records root {_short(root)} and {count} records for "
        f"block #{height}.",
    )


def _check_events(receipt: Receipt, chain: _Chain) -> Check:
    encoding = receipt.encoding
    if len(encoding) != RECORD_LENGTH:
        return _failed(
            "events", "The encoding is malformed; there is nothing to match."
        )

    try:
        transaction = chain.w3.eth.get_transaction_receipt(receipt.transaction_hash)
    except TransactionNotFound:
        return _failed(
            "events",
            f"No append transaction 0x{receipt.transaction_hash.hex()} on chain.",
        )

    logs = [
        entry
        for entry in transaction["logs"]
        if _same_address(entry["address"], receipt.ledger)
    ]
    events = chain.ledger.events
    validated = [
        args
        for args in _event_args(events.BlockValidated(), logs)
        if bytes(args["blockHash"]) == receipt.block_hash
    ]
    outcomes = [
        (args, StatusCode.APPROVED)
        for args in _event_args(events.TransactionApproved(), logs)
    ] + [
        (args, StatusCode(args["code"]))
        for args in _event_args(events.TransactionRejected(), logs)
    ]
    mine = [
        (args, code)
        for args, code in outcomes
        if bytes(args["blockHash"]) == receipt.block_hash
        and int(args["index"]) == receipt.leaf_index
    ]
    problems = []
    if int(transaction["blockNumber"]) != receipt.chain_block:
        problems.append(
            f"the transaction is in chain block {transaction['blockNumber']}, the "
            f"receipt says {receipt.chain_block}"
        )

    if not validated:
        problems.append(
            f"it has no BlockValidated for block {_short(receipt.block_hash)}"
        )

    if len(mine) != 1:
        problems.append(
            f"it has {len(mine)} outcome events for record {receipt.leaf_index} of "
            "that block, want 1"
        )
    else:
        problems.extend(_event_differences(receipt, *mine[0]))

    tx = f"0x{receipt.transaction_hash.hex()}"
    if problems:
        return _failed(
            "events", f"Append transaction {tx}: " + "; ".join(problems) + "."
        )

    args, code = mine[0]
    outcome = "approved" if code is StatusCode.APPROVED else f"rejected ({code.name})"
    return _passed(
        "events",
        f"Transaction {tx} validated the block and {outcome} record "
        f"{receipt.leaf_index} ({bytes(args['terminalId']).decode('ascii')} "
        f"#{args['sequence']}, amount {args['amount']}).",
    )


def _event_args(event: Any, logs: list[Any]) -> list[Any]:
    processed = event.process_receipt({"logs": logs}, errors=DISCARD)
    return [entry["args"] for entry in processed]


def _event_differences(receipt: Receipt, args: Any, code: StatusCode) -> list[str]:
    (_, _, _, terminal, sequence, payer, _, amount, *_) = _RAW_FIELDS.unpack(
        receipt.encoding
    )
    pairs = (
        ("terminal id", bytes(args["terminalId"]), terminal),
        ("sequence", int(args["sequence"]), sequence),
        ("payer", str(args["payer"]).lower(), _hex(payer)),
        ("amount", int(args["amount"]), amount),
        ("code", code.name, receipt.code.name),
    )
    return [
        f"{name}: event {event!r}, receipt {written!r}"
        for name, event, written in pairs
        if event != written
    ]


# A status a record can reach from the one a receipt was written with.
_LATER_STATUSES = {
    SettlementStatus.HELD: {
        SettlementStatus.HELD,
        SettlementStatus.SETTLED,
        SettlementStatus.REJECTED_BY_AUDIT,
    },
    SettlementStatus.SETTLED: {SettlementStatus.SETTLED},
    SettlementStatus.REJECTED_BY_RULES: {SettlementStatus.REJECTED_BY_RULES},
    SettlementStatus.REJECTED_BY_AUDIT: {SettlementStatus.REJECTED_BY_AUDIT},
    SettlementStatus.UNKNOWN: set(),
}


def _check_settlement(receipt: Receipt, chain: _Chain) -> Check:
    call = chain.audit.functions.statusOf(receipt.block_hash, receipt.leaf_index)
    now = SettlementStatus(call.call())
    written = receipt.settlement
    if now not in _LATER_STATUSES[written]:
        return _failed(
            "settlement",
            f"The receipt says {written.name}, the audit module says {now.name}.",
        )

    if now is SettlementStatus.HELD:
        return _passed(
            "settlement",
            "HELD on chain, as the receipt says: the audit has not settled it yet.",
        )

    if now is not written:
        return _passed(
            "settlement",
            f"{now.name} on chain; the receipt was written while it was "
            f"{written.name}.",
        )

    return _passed("settlement", f"{now.name} on chain, as the receipt says.")


def _check_dispute_view(receipt: Receipt, chain: _Chain) -> Check:
    call = chain.audit.functions.verifySignature(receipt.encoding, receipt.signature)
    if not call.call():
        return _failed(
            "dispute view",
            "SettlementAudit.verifySignature says the terminal's registered key does "
            "not verify the receipt's signature over the record.",
        )

    return _passed(
        "dispute view",
        "SettlementAudit.verifySignature accepts the signature under the "
        "terminal's registered key.",
    )
