"""Settlement block headers: encoding, block hash and the nonce search.

The header is hashed packed, 120 bytes, in this order: version (4), previous block hash
(32), records root (32), record count (4), timestamp (8), difficulty target (32), nonce
(8). The block hash is SHA-256(SHA-256(header)); it must not be numerically above the
target. This module is pure; the Ledger contract checks the same things on chain.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Sequence
from dataclasses import dataclass, replace

from posaudit.audittree import AuditTree
from posaudit.exceptions import EncodingError, PosauditError

BLOCK_VERSION = 1
HEADER_LENGTH = 120
MAX_NONCE = 2**64 - 1

_HEADER = struct.Struct(">I32s32sIQ32sQ")


@dataclass(frozen=True)
class BlockHeader:
    """Header of a settlement block."""

    prev_hash: bytes
    records_root: bytes
    record_count: int
    timestamp: int
    target: int
    nonce: int = 0
    version: int = BLOCK_VERSION

    def encode(self) -> bytes:
        """The 120-byte packed encoding that the block hash covers."""
        return _HEADER.pack(
            self.version,
            self.prev_hash,
            self.records_root,
            self.record_count,
            self.timestamp,
            self.target.to_bytes(32, "big"),
            self.nonce,
        )

    @classmethod
    def decode(cls, data: bytes) -> BlockHeader:
        """Parse the 120-byte encoding back into a header.

        Raises:
            EncodingError: ``data`` is not 120 bytes long.
        """
        if len(data) != HEADER_LENGTH:
            raise EncodingError(
                f"A block header is {HEADER_LENGTH} bytes, got {len(data)}."
            )

        version, prev, root, count, timestamp, target, nonce = _HEADER.unpack(data)
        return cls(
            prev_hash=prev,
            records_root=root,
            record_count=count,
            timestamp=timestamp,
            target=int.from_bytes(target, "big"),
            nonce=nonce,
            version=version,
        )

    @property
    def block_hash(self) -> bytes:
        """SHA-256(SHA-256(header))."""
        return hashlib.sha256(hashlib.sha256(self.encode()).digest()).digest()

    def as_tuple(self) -> tuple[int, bytes, bytes, int, int, int, int]:
        """Fields in the order of the Solidity struct ``ILedger.BlockHeader``."""
        return (
            self.version,
            self.prev_hash,
            self.records_root,
            self.record_count,
            self.timestamp,
            self.target,
            self.nonce,
        )


class NonceNotFoundError(PosauditError):
    """No nonce within the search budget meets the target."""


def mine(header: BlockHeader, max_tries: int = 10_000_000) -> BlockHeader:
    """Find a nonce whose block hash is not above ``header.target``.

    Args:
        header: Header with every field but the nonce set.
        max_tries: Give up after this many nonces.

    Returns:
        The header with the nonce found.

    Raises:
        NonceNotFoundError: No nonce in ``[0, max_tries)`` meets the target.
    """
    prefix = header.encode()[:-8]
    sha256 = hashlib.sha256
    pack = struct.Struct(">Q").pack
    for nonce in range(min(max_tries, MAX_NONCE + 1)):
        digest = sha256(sha256(prefix + pack(nonce)).digest()).digest()
        if int.from_bytes(digest, "big") <= header.target:
            return replace(header, nonce=nonce)

    raise NonceNotFoundError(
        f"No nonce below {max_tries} meets target {header.target:#x}; "
        "lower the difficulty or raise the budget."
    )


def build_header(
    prev_hash: bytes, leaves: Sequence[bytes], timestamp: int, target: int
) -> BlockHeader:
    """Header for a block of ``leaves`` (leaf data), nonce searched for ``target``."""
    tree = AuditTree.from_leaves(leaves)
    header = BlockHeader(
        prev_hash=prev_hash,
        records_root=tree.root,
        record_count=len(leaves),
        timestamp=timestamp,
        target=target,
    )
    return mine(header)
