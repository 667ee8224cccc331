"""The audit tree: an RFC 6962 Merkle tree over the leaves of a settlement block.

A leaf hash is ``SHA-256(0x00 || data)`` and a node hash is
``SHA-256(0x01 || left || right)``, so a leaf can never be passed off as an inner
node. The tree is built bottom up, pairwise; an odd last node is carried up to the
next level unchanged, never duplicated. That is the same tree as RFC 6962's split at
the largest power of two below ``n``, so roots and proofs agree with Certificate
Transparency's.

Verification follows the inner/border decomposition of an inclusion path: the
``inner`` lower levels, where the paths to ``index`` and to the last leaf still
differ, take their sibling from either side; above them the path runs along the
tree's right border, where every sibling is on the left.

NOTE: an inclusion proof does not bind the tree size. A verifier must take ``size``
(and the root) from its own trusted record of the block, never from the prover.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from itertools import chain, islice, repeat

from posaudit.exceptions import ProofError, RootMismatchError

LEAF_PREFIX = b"\x00"
"""Domain-separation byte hashed in front of a leaf's data."""

NODE_PREFIX = b"\x01"
"""Domain-separation byte hashed in front of two child hashes."""

HASH_SIZE = 32
"""Length in bytes of every leaf, node and root hash."""

EMPTY_ROOT = hashlib.sha256(b"").digest()
"""Root of the tree with no leaves, as RFC 6962 defines it."""


def leaf_hash(data: bytes) -> bytes:
    """Hash one leaf.

    Args:
        data: The leaf's data, for posaudit an encoded settlement record.

    Returns:
        ``SHA-256(0x00 || data)``.
    """
    return hashlib.sha256(LEAF_PREFIX + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """Hash two children into their parent.

    Args:
        left: Hash of the left child.
        right: Hash of the right child.

    Returns:
        ``SHA-256(0x01 || left || right)``.
    """
    return hashlib.sha256(NODE_PREFIX + left + right).digest()


class AuditTree:
    """An audit tree that keeps every level, so that proofs need no hashing.

    The levels run from the leaf hashes up to the root, each holding the parents of
    the one below. Memory is about twice that of the leaf hashes alone.

    Attributes:
        size: Number of leaves.
        root: The tree's root hash (``EMPTY_ROOT`` for no leaves).
    """

    __slots__ = ("_levels", "root", "size")

    def __init__(self, leaf_hashes: Iterable[bytes]) -> None:
        """Build the tree from leaf hashes.

        Args:
            leaf_hashes: The leaves' hashes (see :func:`leaf_hash`), in order.

        Raises:
            ProofError: If a leaf hash is not 32 bytes long.
        """
        level = list(leaf_hashes)
        _check_hashes(level, "Leaf")

        self.size = len(level)
        self._levels = _build_levels(level)
        self.root = self._levels[-1][0] if self.size else EMPTY_ROOT

    @classmethod
    def from_leaves(cls, leaves: Iterable[bytes]) -> AuditTree:
        """Build the tree from leaf data, hashing each leaf first.

        Args:
            leaves: The leaves' data, in order.

        Returns:
            The audit tree over ``leaf_hash(data)`` of every leaf.
        """
        sha256 = hashlib.sha256
        prefix = LEAF_PREFIX
        return cls([sha256(prefix + data).digest() for data in leaves])

    @property
    def leaf_hashes(self) -> list[bytes]:
        """The leaf hashes the tree was built from, in order."""
        return list(self._levels[0]) if self.size else []

    def inclusion_proof(self, index: int) -> list[bytes]:
        """Return the inclusion proof of one leaf.

        Args:
            index: Position of the leaf; requires ``0 <= index < size``.

        Returns:
            The sibling hashes from the leaf's level up to the root, in RFC 6962
            order. Levels where the path's node is carried up have no sibling and
            contribute nothing.

        Raises:
            ProofError: If ``index`` is out of range.
        """
        _check_index(index, self.size)

        proof: list[bytes] = []
        for level in self._levels[:-1]:
            sibling = index ^ 1
            if sibling < len(level):
                proof.append(level[sibling])

            index >>= 1

        return proof

    def inclusion_proofs(self) -> list[tuple[bytes, ...]]:
        """Return the inclusion proof of every leaf at once.

        Equal to ``inclusion_proof(i)`` for every ``i``, as tuples, but about three
        times faster for a large block: each level's siblings are laid out once
        for all leaves and the proofs are zipped together in C.

        Returns:
            One proof per leaf, in leaf order.
        """
        size = self.size
        # (cut, column): leaves below `cut` have a sibling on this level, and
        # column[i] is leaf i's sibling there.
        columns: list[tuple[int, list[bytes]]] = []
        for height, level in enumerate(self._levels[:-1]):
            paired = len(level) & ~1
            swapped: list[bytes] = level[:paired]
            swapped[0::2] = level[1:paired:2]
            swapped[1::2] = level[0:paired:2]
            span = 1 << height
            if span > 1:
                swapped = list(
                    chain.from_iterable(map(repeat, swapped, repeat(span, paired)))
                )

            columns.append((min(paired << height, size), swapped))

        # Between two consecutive cuts every leaf has the same levels in its
        # proof, so one zip over those columns serves the whole range.
        proofs: list[tuple[bytes, ...]] = []
        low = 0
        for high in sorted({cut for cut, _ in columns} | {size}):
            if high <= low:
                continue

            active = [
                islice(column, low, high) for cut, column in columns if cut >= high
            ]
            if active:
                proofs.extend(zip(*active, strict=True))
            else:
                proofs.extend(() for _ in range(high - low))

            low = high

        return proofs

    def consistency_proof(self, size1: int) -> list[bytes]:
        """Return the proof that this tree extends its first ``size1`` leaves.

        This is RFC 9162's ``SUBPROOF(size1, D[size], true)``: the root of the
        largest complete subtree ending at leaf ``size1 - 1`` (left out when
        ``size1`` is a power of two, as the verifier holds it as the old root),
        followed by the inclusion path of that subtree in this tree.

        Args:
            size1: Size of the earlier tree; requires ``0 < size1 <= size``.

        Returns:
            The proof's hashes; empty when ``size1 == size``.

        Raises:
            ProofError: If ``size1`` is out of range.
        """
        if not 0 < size1 <= self.size:
            raise ProofError(
                f"Consistency proof from size {size1} requested from a tree of size "
                f"{self.size}; requires 0 < size1 <= {self.size}."
            )

        if size1 == self.size:
            return []

        # The lowest `shift` levels of the last old leaf's path lie inside one
        # complete subtree; its root seeds the proof instead of those siblings.
        shift = (size1 & -size1).bit_length() - 1
        path = self.inclusion_proof(size1 - 1)[shift:]
        if size1 == 1 << shift:
            return path

        return [self._levels[shift][(size1 - 1) >> shift], *path]


def _build_levels(leaf_hashes: list[bytes]) -> list[list[bytes]]:
    """Hash level after level up to the root, carrying an odd last node up."""
    sha256 = hashlib.sha256
    prefix = NODE_PREFIX
    levels = [leaf_hashes]
    level = leaf_hashes
    while len(level) > 1:
        parents = [
            sha256(prefix + left + right).digest()
            for left, right in zip(level[0::2], level[1::2], strict=False)
        ]
        if len(level) & 1:
            parents.append(level[-1])

        levels.append(parents)
        level = parents

    return levels


def _check_index(index: int, size: int) -> None:
    if not 0 <= index < size:
        raise ProofError(
            f"Leaf index {index} is out of range for a tree of size {size}; "
            f"requires 0 <= index < size."
        )


def _check_hashes(hashes: Sequence[bytes], what: str) -> None:
    # map(len) runs in C; the slow search for the culprit only runs on failure.
    if all(map(HASH_SIZE.__eq__, map(len, hashes))):
        return

    position, digest = next((i, h) for i, h in enumerate(hashes) if len(h) != HASH_SIZE)
    raise ProofError(
        f"{what} hash {position} has {len(digest)} bytes, want {HASH_SIZE}."
    )


def _decompose(index: int, size: int) -> tuple[int, int]:
    """Split the path of ``index`` in a tree of ``size`` into inner and border.

    ``inner`` counts the levels below the point where the paths to ``index`` and to
    the last leaf meet; ``border`` counts the left siblings above it, one per set
    bit of ``index`` there.
    """
    inner = (index ^ (size - 1)).bit_length()
    border = (index >> inner).bit_count()
    return inner, border


def root_from_inclusion_proof(
    index: int, size: int, leaf_hash: bytes, proof: Sequence[bytes]
) -> bytes:
    """Compute the root an inclusion proof leads to.

    Args:
        index: Position of the leaf; requires ``0 <= index < size``.
        size: Number of leaves in the tree, from the verifier's own records.
        leaf_hash: The leaf's hash (32 bytes).
        proof: Sibling hashes, bottom up (32 bytes each).

    Returns:
        The root of a tree of ``size`` leaves holding ``leaf_hash`` at ``index``.

    Raises:
        ProofError: If ``index`` is out of range, or the leaf hash or the proof
            has the wrong length.
    """
    _check_index(index, size)
    if len(leaf_hash) != HASH_SIZE:
        raise ProofError(f"Leaf hash has {len(leaf_hash)} bytes, want {HASH_SIZE}.")

    inner, border = _decompose(index, size)
    if len(proof) != inner + border:
        raise ProofError(f"Proof has {len(proof)} hashes, want {inner + border}.")

    _check_hashes(proof, "Proof")

    sha256 = hashlib.sha256
    prefix = NODE_PREFIX
    digest = leaf_hash
    for level in range(inner):
        if (index >> level) & 1:
            digest = sha256(prefix + proof[level] + digest).digest()
        else:
            digest = sha256(prefix + digest + proof[level]).digest()

    for sibling in proof[inner:]:
        digest = sha256(prefix + sibling + digest).digest()

    return digest


def verify_inclusion(
    index: int, size: int, leaf_hash: bytes, proof: Sequence[bytes], root: bytes
) -> None:
    """Check that a leaf sits at ``index`` in the tree of ``size`` with ``root``.

    Args:
        index: Position of the leaf; requires ``0 <= index < size``.
        size: Number of leaves, from the verifier's own records.
        leaf_hash: The leaf's hash (32 bytes).
        proof: Sibling hashes, bottom up.
        root: The trusted root.

    Raises:
        ProofError: If the proof is malformed (see
            :func:`root_from_inclusion_proof`).
        RootMismatchError: If the proof is well formed but leads to another root.
    """
    computed = root_from_inclusion_proof(index, size, leaf_hash, proof)
    if computed != root:
        raise RootMismatchError(root, computed)


def verify_consistency(
    size1: int, size2: int, root1: bytes, root2: bytes, proof: Sequence[bytes]
) -> None:
    """Check that the tree of ``size2`` with ``root2`` extends the one of ``size1``.

    A proof from the empty tree is refused: every tree extends it, so such a proof
    would prove nothing.

    Args:
        size1: Size of the earlier tree; requires ``0 < size1 <= size2``.
        size2: Size of the later tree.
        root1: The trusted root of the earlier tree.
        root2: The trusted root of the later tree.
        proof: The consistency proof (empty when ``size1 == size2``).

    Raises:
        ProofError: If the sizes are out of range or the proof has the wrong
            length.
        RootMismatchError: If the proof is well formed but does not lead to
            ``root1`` and ``root2``.
    """
    if not 0 < size1 <= size2:
        raise ProofError(
            f"Consistency from size {size1} to size {size2} is meaningless; "
            f"requires 0 < size1 <= size2."
        )

    if size1 == size2:
        if proof:
            raise ProofError(f"Proof has {len(proof)} hashes, want 0.")

        if root1 != root2:
            raise RootMismatchError(root2, root1)

        return

    inner, border = _decompose(size1 - 1, size2)
    shift = (size1 & -size1).bit_length() - 1
    inner -= shift
    # When size1 is a power of two the old root itself is the complete subtree the
    # proof starts from, so the prover leaves it out.
    seeded = size1 == 1 << shift
    want = inner + border + (0 if seeded else 1)
    if len(proof) != want:
        raise ProofError(f"Proof has {len(proof)} hashes, want {want}.")

    _check_hashes(proof, "Proof")

    sha256 = hashlib.sha256
    prefix = NODE_PREFIX
    if seeded:
        path = proof
        hash1 = hash2 = root1
    else:
        path = proof[1:]
        hash1 = hash2 = proof[0]

    # hash1 rebuilds the old root from left siblings only; hash2 takes every
    # sibling and so rebuilds the new root from the same hashes.
    mask = (size1 - 1) >> shift
    for level in range(inner):
        sibling = path[level]
        if (mask >> level) & 1:
            hash1 = sha256(prefix + sibling + hash1).digest()
            hash2 = sha256(prefix + sibling + hash2).digest()
        else:
            hash2 = sha256(prefix + hash2 + sibling).digest()

    for sibling in path[inner:]:
        hash1 = sha256(prefix + sibling + hash1).digest()
        hash2 = sha256(prefix + sibling + hash2).digest()

    if hash1 != root1:
        raise RootMismatchError(root1, hash1)

    if hash2 != root2:
        raise RootMismatchError(root2, hash2)
