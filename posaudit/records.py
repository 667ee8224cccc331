"""Settlement records and their fixed-length binary encoding.

A settlement record is one payment taken by a terminal. Its encoding is shared byte for
byte with the Solidity library ``SettlementRecords``: big-endian, packed, 133 bytes,

    offset size field
         0    8 chain_id         EIP-155 chain id of the deployment (domain)
         8   20 ledger           address of the Ledger contract (domain)
        28   16 record_id        unique id chosen by the terminal
        44    8 terminal_id      8 printable ASCII characters (ISO 8583 field 41)
        52    8 sequence         terminal sequence number, strictly increasing
        60   20 payer            payer account
        80   20 merchant         merchant account
       100    8 amount           minor units, 1 <= amount < 2**63
       108    3 currency         ISO 4217 alphabetic code
       111    8 timestamp        when the payment was taken, Unix seconds
       119    8 valid_until      lock time: the record may not settle after it
       127    2 goods_category   index into the Ledger's age rules
       129    4 operator_id      cashier or operator at the terminal

The domain (chain id and Ledger address) is part of what the terminal signs, so a
signature cannot be replayed on another chain or against another deployment.

A leaf of the audit tree commits to the record and to the terminal's signature over it:
``leaf = encoding || SHA-256(signature)`` (165 bytes).

A record's hold is what the audit needs to move its money, 64 bytes packed: terminal_id
8, sequence 8, amount 8, merchant 20, payer 20. A block's releases are what it holds for
each merchant, one per terminal with approved records. When it appends the block, the
Ledger chains the holds into one Keccak-256 digest and the releases into another, and
stores the digest of the two; see :func:`settlement_digest`.
"""

from __future__ import annotations

import hashlib
import re
import struct
from collections.abc import Iterable
from dataclasses import dataclass, field

from eth_hash.auto import keccak

from posaudit.exceptions import EncodingError, FieldRangeError

RECORD_LENGTH = 133
SIGNATURE_HASH_LENGTH = 32
LEAF_LENGTH = RECORD_LENGTH + SIGNATURE_HASH_LENGTH
HOLD_LENGTH = 64

# Amounts stay below 2**63 so that every layer, SQLite's signed 64-bit integers
# included, stores them exactly.
MAX_AMOUNT = 2**63 - 1
MAX_UINT64 = 2**64 - 1
MAX_UINT32 = 2**32 - 1
MAX_UINT16 = 2**16 - 1

# ISO 4217 codes of the currencies posaudit settles; a Ledger is deployed for one.
CURRENCIES = frozenset(
    {"AUD", "CAD", "CHF", "CNY", "EUR", "GBP", "HKD", "JPY", "SGD", "USD"}
)

_LAYOUT = struct.Struct(">Q20s16s8sQ20s20sQ3sQQHI")
_HOLD = struct.Struct(">8sQQ20s20s")
_ADDRESS = re.compile(r"^0x[0-9a-fA-F]{40}$")
_TERMINAL_ID = re.compile(r"^[\x21-\x7e]{8}$")


def _check_uint(name: str, value: object, low: int, high: int) -> int:
    if (
        not isinstance(value, int)
        or isinstance(value, bool)
        or not low <= value <= high
    ):
        raise FieldRangeError(name, value, f"an integer from {low} to {high}")

    return value


def _check_address(name: str, value: object) -> str:
    if not isinstance(value, str) or not _ADDRESS.match(value):
        raise FieldRangeError(name, value, "a 20-byte hex address such as 0x00…00")

    return "0x" + value[2:].lower()


@dataclass(frozen=True)
class Domain:
    """Where a record may settle: one chain and one Ledger deployment.

    Attributes:
        chain_id: EIP-155 chain id, 1 <= chain_id <= 2**64 - 1.
        ledger: Address of the Ledger contract, as 0x-prefixed hex.
    """

    chain_id: int
    ledger: str

    def __post_init__(self) -> None:
        _check_uint("chain_id", self.chain_id, 1, MAX_UINT64)
        object.__setattr__(self, "ledger", _check_address("ledger", self.ledger))


@dataclass(frozen=True)
class SettlementRecord:
    """One payment taken by a terminal; field ranges are checked on construction.

    Raises:
        FieldRangeError: A field is outside the range given in the module docs.
    """

    domain: Domain
    record_id: bytes
    terminal_id: str
    sequence: int
    payer: str
    merchant: str
    amount: int
    currency: str
    timestamp: int
    valid_until: int
    goods_category: int = 0
    operator_id: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.record_id, bytes) or len(self.record_id) != 16:
            raise FieldRangeError("record_id", self.record_id, "exactly 16 bytes")

        if not isinstance(self.terminal_id, str) or not _TERMINAL_ID.match(
            self.terminal_id
        ):
            raise FieldRangeError(
                "terminal_id", self.terminal_id, "8 printable ASCII characters"
            )

        _check_uint("sequence", self.sequence, 1, MAX_UINT64)
        object.__setattr__(self, "payer", _check_address("payer", self.payer))
        object.__setattr__(self, "merchant", _check_address("merchant", self.merchant))
        _check_uint("amount", self.amount, 1, MAX_AMOUNT)
        if self.currency not in CURRENCIES:
            raise FieldRangeError(
                "currency", self.currency, f"one of {', '.join(sorted(CURRENCIES))}"
            )

        _check_uint("timestamp", self.timestamp, 0, MAX_UINT64)
        _check_uint("valid_until", self.valid_until, self.timestamp, MAX_UINT64)
        _check_uint("goods_category", self.goods_category, 0, MAX_UINT16)
        _check_uint("operator_id", self.operator_id, 0, MAX_UINT32)

    @property
    def key(self) -> tuple[str, int]:
        """The (terminal id, sequence) pair that identifies a record everywhere."""
        return (self.terminal_id, self.sequence)


def encode_record(record: SettlementRecord) -> bytes:
    """Return the 133-byte encoding of ``record`` (see the module docs)."""
    return _LAYOUT.pack(
        record.domain.chain_id,
        bytes.fromhex(record.domain.ledger[2:]),
        record.record_id,
        record.terminal_id.encode("ascii"),
        record.sequence,
        bytes.fromhex(record.payer[2:]),
        bytes.fromhex(record.merchant[2:]),
        record.amount,
        record.currency.encode("ascii"),
        record.timestamp,
        record.valid_until,
        record.goods_category,
        record.operator_id,
    )


def decode_record(data: bytes) -> SettlementRecord:
    """Parse a 133-byte encoding back into a record.

    Raises:
        EncodingError: ``data`` has the wrong length or a field cannot be decoded.
        FieldRangeError: A decoded field is out of range.
    """
    if len(data) != RECORD_LENGTH:
        raise EncodingError(
            f"A settlement record is {RECORD_LENGTH} bytes, got {len(data)}."
        )

    (
        chain_id,
        ledger,
        record_id,
        terminal_id,
        sequence,
        payer,
        merchant,
        amount,
        currency,
        timestamp,
        valid_until,
        goods_category,
        operator_id,
    ) = _LAYOUT.unpack(data)
    try:
        terminal, code = terminal_id.decode("ascii"), currency.decode("ascii")
    except UnicodeDecodeError as err:
        raise EncodingError(f"Terminal id or currency is not ASCII: {err}.") from err

    return SettlementRecord(
        domain=Domain(chain_id, "0x" + ledger.hex()),
        record_id=record_id,
        terminal_id=terminal,
        sequence=sequence,
        payer="0x" + payer.hex(),
        merchant="0x" + merchant.hex(),
        amount=amount,
        currency=code,
        timestamp=timestamp,
        valid_until=valid_until,
        goods_category=goods_category,
        operator_id=operator_id,
    )


def encode_hold(record: SettlementRecord) -> bytes:
    """Return the 64-byte hold of ``record`` (see the module docs)."""
    return _HOLD.pack(
        record.terminal_id.encode("ascii"),
        record.sequence,
        record.amount,
        bytes.fromhex(record.merchant[2:]),
        bytes.fromhex(record.payer[2:]),
    )


def holds_digest(holds: bytes) -> bytes:
    """The holds digest of a block whose approved records have these holds (64 bytes
    each, in record order).

    Each step is ``keccak256(digest || hold)``, starting from 32 zero bytes.
    """
    digest = bytes(32)
    for start in range(0, len(holds), HOLD_LENGTH):
        digest = keccak(digest + holds[start : start + HOLD_LENGTH])
    return digest


def releases_digest(releases: Iterable[tuple[str, int]]) -> bytes:
    """The releases digest of a block: what it holds for each merchant, in the order
    of its ``HoldPlaced`` events.

    Each step is ``keccak256(digest || merchant || amount)``, the merchant in 20
    bytes and the amount in 32, starting from 32 zero bytes.
    """
    digest = bytes(32)
    for merchant, amount in releases:
        release = bytes.fromhex(merchant[2:]) + amount.to_bytes(32, "big")
        digest = keccak(digest + release)
    return digest


def settlement_digest(holds_digest: bytes, releases_digest: bytes) -> bytes:
    """The digest the Ledger stores for a block, of its holds and releases digests."""
    return keccak(holds_digest + releases_digest)


def record_digest(encoding: bytes) -> bytes:
    """SHA-256 of an encoded record: what the terminal's signature covers."""
    return hashlib.sha256(encoding).digest()


@dataclass(frozen=True)
class SignedRecord:
    """A record with the terminal's RSA signature over its encoding."""

    record: SettlementRecord
    signature: bytes
    encoding: bytes = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "encoding", encode_record(self.record))

    @classmethod
    def from_encoding(cls, encoding: bytes, signature: bytes) -> SignedRecord:
        """A signed record from its stored bytes, decoded (and checked) once and
        not encoded again.

        Raises:
            EncodingError: ``encoding`` is not a record.
            FieldRangeError: A decoded field is out of range.
        """
        signed = cls.__new__(cls)
        # What the dataclass's own __init__ does, minus the encoding we already have.
        object.__setattr__(signed, "record", decode_record(encoding))
        object.__setattr__(signed, "signature", signature)
        object.__setattr__(signed, "encoding", encoding)
        return signed

    @property
    def leaf(self) -> bytes:
        """The audit-tree leaf data: encoding followed by SHA-256 of the signature."""
        return self.encoding + hashlib.sha256(self.signature).digest()
