"""The AuditTree library on a real EVM: RFC 6962 vectors, Python parity, gas."""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import ape
import pytest

from posaudit.audittree import (
    AuditTree,
    leaf_hash,
    node_hash,
    root_from_inclusion_proof,
    verify_consistency,
    verify_inclusion,
)
from posaudit.exceptions import ProofError, RootMismatchError

from ..vectors import HASH_FIELDS, load_vectors

# BRIEF.md: twice the 3,920 gas that the sha256 precompile alone costs at depth 20.
GAS_BUDGET_DEPTH_20 = 2 * 3_920


def _load(kind: str) -> list[tuple[str, dict[str, Any]]]:
    cases = load_vectors(kind)
    for _, case in cases:
        hashes = [case[f] for f in HASH_FIELDS if f in case] + case["proof"]
        case["fits"] = all(len(h) == 32 for h in hashes)
        # The ABI carries only 32-byte hashes and ape pads shorter bytes on its own;
        # padding here makes that explicit.
        for field in HASH_FIELDS:
            if field in case:
                case[field] = case[field].ljust(32, b"\x00")

        case["proof"] = [h.ljust(32, b"\x00") for h in case["proof"]]

    return cases


def _python_verdict(verify: Callable[..., None], *args: Any) -> str:
    try:
        verify(*args)
    except ProofError:
        return "malformed"
    except RootMismatchError:
        return "mismatch"

    return "valid"


INCLUSION = _load("inclusion")
CONSISTENCY = _load("consistency")


def _path_length(index: int, size: int) -> int:
    inner = (index ^ (size - 1)).bit_length()
    return inner + (index >> inner).bit_count()


@pytest.fixture(scope="module")
def harness(project: Any, accounts: Any) -> Any:
    return project.AuditTreeHarness.deploy(sender=accounts[0])


@pytest.mark.parametrize(("name", "case"), INCLUSION, ids=[n for n, _ in INCLUSION])
def test_verify_inclusion_matches_rfc6962_vector(
    harness: Any, name: str, case: dict[str, Any]
) -> None:
    """Happy paths hold, corrupted variants fail or revert with the exact error.

    The Python verifier, run on the same 32-byte inputs, is the oracle. Where padding
    changes nothing, it agrees with the vector's own verdict; the one exception is
    single-entry/empty-root-and-leaf, whose empty root and empty leaf hash both become
    bytes32(0): a true statement about a one-leaf tree.
    """
    index, size, proof = case["leafIdx"], case["treeSize"], case["proof"]
    args = (index, size, case["leafHash"], proof, case["root"])
    verdict = _python_verdict(verify_inclusion, *args)

    if case["fits"]:
        assert (verdict == "valid") is not case["wantErr"]

    if verdict != "malformed":
        assert harness.verifyInclusion(*args) is (verdict == "valid")
    elif index >= size:
        with ape.reverts(harness.AuditTreeIndexOutOfRange, index=index, size=size):
            harness.verifyInclusion(*args)
    else:
        want = _path_length(index, size)
        with ape.reverts(harness.AuditTreeProofLength, got=len(proof), want=want):
            harness.verifyInclusion(*args)


@pytest.mark.parametrize(("name", "case"), CONSISTENCY, ids=[n for n, _ in CONSISTENCY])
def test_verify_consistency_matches_rfc6962_vector(
    harness: Any, name: str, case: dict[str, Any]
) -> None:
    """Happy paths hold, corrupted variants fail or revert with the exact error."""
    size1, size2, proof = case["size1"], case["size2"], case["proof"]
    args = (size1, size2, case["root1"], case["root2"], proof)
    verdict = _python_verdict(verify_consistency, *args)

    if case["fits"]:
        assert (verdict == "valid") is not case["wantErr"]

    if verdict != "malformed":
        assert harness.verifyConsistency(*args) is (verdict == "valid")
    elif not 0 < size1 <= size2:
        with ape.reverts(harness.AuditTreeConsistencySizes, size1=size1, size2=size2):
            harness.verifyConsistency(*args)
    else:
        want = _consistency_length(size1, size2)
        with ape.reverts(harness.AuditTreeProofLength, got=len(proof), want=want):
            harness.verifyConsistency(*args)


def _consistency_length(size1: int, size2: int) -> int:
    if size1 == size2:
        return 0

    shift = (size1 & -size1).bit_length() - 1
    seed = 0 if size1 == 1 << shift else 1
    return seed + _path_length(size1 - 1, size2) - shift


def test_hash_leaf_matches_python(harness: Any) -> None:
    data = bytes(range(165))

    assert harness.hashLeaf(data) == leaf_hash(data)
    assert harness.hashLeafCalldata(data) == leaf_hash(data)
    assert harness.hashLeaf(b"") == leaf_hash(b"")


def test_hash_node_matches_python(harness: Any) -> None:
    left, right = leaf_hash(b"left"), leaf_hash(b"right")

    assert harness.hashNode(left, right) == node_hash(left, right)


def test_root_of_empty_reverts(harness: Any) -> None:
    with ape.reverts(harness.AuditTreeEmpty):
        harness.rootOf([])


def test_root_of_carries_odd_leaf_up_not_duplicated(harness: Any) -> None:
    """Duplicated-leaf forgery: [a,b,c] and [a,b,c,c] must not share a root."""
    a, b, c = (leaf_hash(x) for x in (b"a", b"b", b"c"))

    root3 = harness.rootOf([a, b, c])

    assert root3 == node_hash(node_hash(a, b), c)
    assert root3 != harness.rootOf([a, b, c, c])


def test_verify_inclusion_rejects_inner_node_posing_as_leaf(harness: Any) -> None:
    """A node proven in a smaller tree fails at the size the verifier stores."""
    hashes = [leaf_hash(bytes([i])) for i in range(4)]
    tree = AuditTree(hashes)
    forged_leaf = node_hash(hashes[0], hashes[1])
    forged_proof = [tree.inclusion_proof(0)[1]]

    assert harness.verifyInclusion(0, 2, forged_leaf, forged_proof, tree.root)
    with ape.reverts(harness.AuditTreeProofLength, got=1, want=2):
        harness.verifyInclusion(0, 4, forged_leaf, forged_proof, tree.root)


def test_solidity_agrees_with_python_for_sizes_1_to_300(harness: Any) -> None:
    """Differential: every size's root, and a few proofs per size, agree."""
    rng = random.Random(6962)

    for size in range(1, 301):
        # The position prefix keeps every leaf distinct.
        hashes = [
            leaf_hash(i.to_bytes(2, "big") + rng.randbytes(rng.randrange(0, 48)))
            for i in range(size)
        ]
        tree = AuditTree(hashes)
        indices = sorted({0, size - 1, rng.randrange(size)})
        proofs = [tree.inclusion_proof(i) for i in indices]
        leaves = [hashes[i] for i in indices]
        # Position forgery: each proof replayed at another index of the same length.
        for index, proof in list(zip(indices, proofs, strict=True)):
            other = (index + rng.randrange(1, size)) % size if size > 1 else index
            if other != index and len(proof) == _path_length(other, size):
                indices.append(other)
                proofs.append(proof)
                leaves.append(hashes[index])

        roots = harness.rootsFromInclusionProofs(indices, size, leaves, proofs)

        assert harness.rootOf(hashes) == tree.root, f"root of size {size}"
        for index, leaf, root in zip(indices, leaves, roots, strict=True):
            honest = leaf == hashes[index]
            assert (root == tree.root) is honest, f"leaf {index} of size {size}"


def test_solidity_agrees_with_python_on_consistency(harness: Any) -> None:
    """Differential: a consistency proof from Python verifies on chain."""
    rng = random.Random(9162)
    hashes = [leaf_hash(rng.randbytes(16)) for _ in range(300)]
    full = AuditTree(hashes)

    for size2 in range(1, 301, 7):
        tree = AuditTree(hashes[:size2])
        size1 = rng.randint(1, size2)
        old_root = AuditTree(hashes[:size1]).root
        proof = tree.consistency_proof(size1)

        assert harness.verifyConsistency(size1, size2, old_root, tree.root, proof), (
            f"{size1} -> {size2}"
        )
        if size1 < size2:
            assert not harness.verifyConsistency(
                size1, size2, old_root, full.root, proof
            ), f"{size1} -> {size2} against a foreign root"


@pytest.mark.parametrize("depth", [8, 16, 20])
def test_verify_inclusion_gas_is_within_budget(harness: Any, depth: int) -> None:
    """BRIEF.md: a depth-20 proof costs at most twice the precompile's 3,920 gas."""
    rng = random.Random(depth)
    size = 1 << depth
    index = rng.randrange(size)
    leaf = leaf_hash(b"record")
    proof = [rng.randbytes(32) for _ in range(depth)]
    # Any siblings belong to some tree of this size; its root is what they lead to.
    root = root_from_inclusion_proof(index, size, leaf, proof)

    ok, gas_used = harness.verifyInclusionGas(index, size, leaf, proof, root)

    print(f"depth {depth}: {gas_used} gas")
    assert ok
    assert gas_used <= GAS_BUDGET_DEPTH_20
