"""Tests of the audit tree: RFC 6962 vectors, known answers and properties."""

import hashlib
from typing import Any

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from posaudit.audittree import (
    EMPTY_ROOT,
    AuditTree,
    leaf_hash,
    node_hash,
    root_from_inclusion_proof,
    verify_consistency,
    verify_inclusion,
)
from posaudit.exceptions import ProofError, RootMismatchError

from ..vectors import load_vectors

# The leaf inputs behind every tree in the rfc6962 vectors (vectors/README.md).
REFERENCE_LEAVES = [
    bytes.fromhex(h)
    for h in (
        "",
        "00",
        "10",
        "2021",
        "3031",
        "40414243",
        "5051525354555657",
        "606162636465666768696a6b6c6d6e6f",
    )
]

# MTH(D[n]) of the first n reference leaves, n = 0..8: SHA-256("") for the empty
# tree, the others as published in transparency-dev/merkle testonly/constants.go
# (Certificate Transparency's reference values); the n = 8 root also appears in
# vectors/README.md.
REFERENCE_ROOTS = [
    bytes.fromhex(h)
    for h in (
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
        "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
        "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
        "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
        "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
        "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
    )
]

REJECTED = (ProofError, RootMismatchError)


INCLUSION = load_vectors("inclusion")
CONSISTENCY = load_vectors("consistency")


def _leaves(size: int, salt: int = 0) -> list[bytes]:
    # The position is part of each leaf so that no two leaves are equal.
    return [i.to_bytes(4, "big") + salt.to_bytes(4, "big") for i in range(size)]


def _flip(data: bytes, bit: int) -> bytes:
    flipped = bytearray(data)
    flipped[bit // 8] ^= 1 << (bit % 8)
    return bytes(flipped)


def test_vectors_are_present() -> None:
    assert len(INCLUSION) > 50
    assert len(CONSISTENCY) > 50


@pytest.mark.parametrize(("name", "case"), INCLUSION, ids=[n for n, _ in INCLUSION])
def test_verify_inclusion_matches_rfc6962_vector(
    name: str, case: dict[str, Any]
) -> None:
    args = (case["leafIdx"], case["treeSize"], case["leafHash"], case["proof"])

    if case["wantErr"]:
        with pytest.raises(REJECTED):
            verify_inclusion(*args, case["root"])
    else:
        verify_inclusion(*args, case["root"])


@pytest.mark.parametrize(("name", "case"), CONSISTENCY, ids=[n for n, _ in CONSISTENCY])
def test_verify_consistency_matches_rfc6962_vector(
    name: str, case: dict[str, Any]
) -> None:
    args = (case["size1"], case["size2"], case["root1"], case["root2"], case["proof"])

    if case["wantErr"]:
        with pytest.raises(REJECTED):
            verify_consistency(*args)
    else:
        verify_consistency(*args)


def test_vectors_happy_paths_verify_and_all_others_reject() -> None:
    """Only happy paths and two degenerate single-leaf cases expect success."""
    accepted = {name for name, case in INCLUSION + CONSISTENCY if not case["wantErr"]}

    assert {n for n in accepted if not n.endswith("/happy-path.json")} == {
        "inclusion/single-entry/matching-root-and-leaf.json",
        "consistency/additional/sizes-are-equal-one-and-proof-is-empty.json",
    }


def test_audittree_root_matches_known_root_of_eight_reference_leaves() -> None:
    tree = AuditTree.from_leaves(REFERENCE_LEAVES)

    assert tree.root.hex() == (
        "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328"
    )


@pytest.mark.parametrize("size", range(9))
def test_audittree_root_matches_reference_root(size: int) -> None:
    tree = AuditTree.from_leaves(REFERENCE_LEAVES[:size])

    assert tree.size == size
    assert tree.root == REFERENCE_ROOTS[size]


@pytest.mark.parametrize(
    ("name", "case"),
    [(n, c) for n, c in INCLUSION if n.endswith("happy-path.json")],
    ids=lambda value: value if isinstance(value, str) else "",
)
def test_audittree_inclusion_proof_equals_vector(
    name: str, case: dict[str, Any]
) -> None:
    tree = AuditTree.from_leaves(REFERENCE_LEAVES[: case["treeSize"]])

    proof = tree.inclusion_proof(case["leafIdx"])

    assert tree.root == case["root"]
    assert leaf_hash(REFERENCE_LEAVES[case["leafIdx"]]) == case["leafHash"]
    assert proof == case["proof"]


@pytest.mark.parametrize(
    ("name", "case"),
    [(n, c) for n, c in CONSISTENCY if n.endswith("happy-path.json")],
    ids=lambda value: value if isinstance(value, str) else "",
)
def test_audittree_consistency_proof_equals_vector(
    name: str, case: dict[str, Any]
) -> None:
    tree = AuditTree.from_leaves(REFERENCE_LEAVES[: case["size2"]])

    proof = tree.consistency_proof(case["size1"])

    assert (
        AuditTree.from_leaves(REFERENCE_LEAVES[: case["size1"]]).root == (case["root1"])
    )
    assert tree.root == case["root2"]
    assert proof == case["proof"]


def test_leaf_hash_is_sha256_of_zero_prefix_and_data() -> None:
    assert leaf_hash(b"abc") == hashlib.sha256(b"\x00abc").digest()


def test_node_hash_is_sha256_of_one_prefix_and_children() -> None:
    left, right = b"\x11" * 32, b"\x22" * 32

    assert node_hash(left, right) == hashlib.sha256(b"\x01" + left + right).digest()


def test_leaf_hash_differs_from_node_hash_of_same_bytes() -> None:
    """Second preimage: a leaf whose data is two child hashes is not their node."""
    left, right = leaf_hash(b"a"), leaf_hash(b"b")

    assert leaf_hash(left + right) != node_hash(left, right)


def test_verify_inclusion_rejects_inner_node_posing_as_leaf() -> None:
    """An inner node, proven in a smaller tree, does not pass at the trusted size."""
    leaves = _leaves(4)
    tree = AuditTree.from_leaves(leaves)
    forged_leaf = node_hash(leaf_hash(leaves[0]), leaf_hash(leaves[1]))
    forged_proof = [tree.inclusion_proof(0)[1]]

    # The forgery is a correct proof for a two-leaf tree with the same root...
    verify_inclusion(0, 2, forged_leaf, forged_proof, tree.root)
    # ...which is why the verifier must use its own size, where it fails.
    with pytest.raises(ProofError, match="Proof has 1 hashes, want 2"):
        verify_inclusion(0, 4, forged_leaf, forged_proof, tree.root)


def test_audittree_empty_has_sha256_of_nothing_as_root() -> None:
    tree = AuditTree([])

    assert tree.size == 0
    assert tree.root == EMPTY_ROOT == hashlib.sha256(b"").digest()
    assert tree.inclusion_proofs() == []


def test_audittree_single_leaf_root_is_leaf_hash() -> None:
    tree = AuditTree.from_leaves([b"record"])

    assert tree.root == leaf_hash(b"record")
    assert tree.inclusion_proof(0) == []
    assert tree.inclusion_proofs() == [()]


def test_audittree_odd_leaf_is_carried_up_not_duplicated() -> None:
    """Duplicated-leaf forgery (CVE-2012-2459): [a,b,c] and [a,b,c,c] differ."""
    a, b, c = (leaf_hash(x) for x in (b"a", b"b", b"c"))

    root3 = AuditTree([a, b, c]).root

    assert root3 == node_hash(node_hash(a, b), c)
    assert root3 != AuditTree([a, b, c, c]).root


def test_audittree_rejects_leaf_hash_of_wrong_length() -> None:
    with pytest.raises(ProofError, match="Leaf hash 1 has 31 bytes, want 32"):
        AuditTree([b"\x00" * 32, b"\x00" * 31])


@pytest.mark.parametrize("index", [-1, 5, 6])
def test_audittree_inclusion_proof_rejects_index_out_of_range(index: int) -> None:
    tree = AuditTree.from_leaves(_leaves(5))

    with pytest.raises(ProofError, match=f"index {index} is out of range"):
        tree.inclusion_proof(index)


@pytest.mark.parametrize("size1", [0, 6])
def test_audittree_consistency_proof_rejects_size_out_of_range(size1: int) -> None:
    tree = AuditTree.from_leaves(_leaves(5))

    with pytest.raises(ProofError, match="requires 0 < size1 <= 5"):
        tree.consistency_proof(size1)


def test_root_from_inclusion_proof_rejects_short_proof() -> None:
    tree = AuditTree.from_leaves(_leaves(16))
    proof = tree.inclusion_proof(3)

    with pytest.raises(ProofError, match="Proof has 3 hashes, want 4"):
        root_from_inclusion_proof(3, 16, leaf_hash(_leaves(16)[3]), proof[:3])


def test_root_from_inclusion_proof_rejects_truncated_hash() -> None:
    tree = AuditTree.from_leaves(_leaves(4))
    proof = tree.inclusion_proof(0)
    proof[1] = proof[1][:20]

    with pytest.raises(ProofError, match="Proof hash 1 has 20 bytes, want 32"):
        root_from_inclusion_proof(0, 4, leaf_hash(_leaves(4)[0]), proof)


def test_root_from_inclusion_proof_rejects_index_beyond_size() -> None:
    """Checked before any hashing: an index past the block cannot be proven."""
    with pytest.raises(ProofError, match="requires 0 <= index < size"):
        root_from_inclusion_proof(4, 4, b"\x00" * 32, [])


def test_verify_inclusion_mismatch_carries_both_roots() -> None:
    tree = AuditTree.from_leaves(_leaves(3))
    wrong = b"\xff" * 32

    with pytest.raises(RootMismatchError) as caught:
        verify_inclusion(0, 3, leaf_hash(_leaves(3)[0]), tree.inclusion_proof(0), wrong)

    assert caught.value.expected == wrong
    assert caught.value.computed == tree.root


def test_verify_consistency_rejects_proof_from_empty_tree() -> None:
    """Every tree extends the empty one, so such a proof would prove nothing."""
    with pytest.raises(ProofError, match="requires 0 < size1 <= size2"):
        verify_consistency(0, 3, EMPTY_ROOT, b"\x00" * 32, [])


def test_verify_consistency_rejects_shrinking_tree() -> None:
    """A later tree smaller than the earlier one would let history be dropped."""
    with pytest.raises(ProofError, match="requires 0 < size1 <= size2"):
        verify_consistency(4, 3, b"\x00" * 32, b"\x00" * 32, [])


def test_verify_consistency_rejects_rewritten_history() -> None:
    """A new tree whose first leaves differ is not consistent with the old root."""
    old = AuditTree.from_leaves(_leaves(5))
    rewritten = AuditTree.from_leaves(_leaves(5, salt=1) + _leaves(3, salt=2))

    with pytest.raises(RootMismatchError):
        verify_consistency(
            5, 8, old.root, rewritten.root, rewritten.consistency_proof(5)
        )


@settings(max_examples=60, deadline=None)
@given(size=st.integers(1, 600), salt=st.integers(0, 2**32 - 1))
def test_audittree_every_inclusion_proof_verifies(size: int, salt: int) -> None:
    leaves = _leaves(size, salt)
    tree = AuditTree.from_leaves(leaves)

    proofs = tree.inclusion_proofs()

    assert len(proofs) == size
    for index, leaf in enumerate(leaves):
        assert list(proofs[index]) == tree.inclusion_proof(index)
        verify_inclusion(index, size, leaf_hash(leaf), proofs[index], tree.root)


@settings(max_examples=30, deadline=None)
@given(data=st.data(), size=st.integers(1, 600))
def test_verify_inclusion_rejects_every_single_bit_flip(
    data: st.DataObject, size: int
) -> None:
    """Tampering: no flipped bit in proof, leaf or root goes unnoticed."""
    index = data.draw(st.integers(0, size - 1), label="index")
    leaves = _leaves(size)
    tree = AuditTree.from_leaves(leaves)
    leaf, proof, root = leaf_hash(leaves[index]), tree.inclusion_proof(index), tree.root

    for bit in range(256):
        with pytest.raises(RootMismatchError):
            verify_inclusion(index, size, _flip(leaf, bit), proof, root)

        with pytest.raises(RootMismatchError):
            verify_inclusion(index, size, leaf, proof, _flip(root, bit))

        for position in range(len(proof)):
            corrupted = [*proof]
            corrupted[position] = _flip(proof[position], bit)
            with pytest.raises(RootMismatchError):
                verify_inclusion(index, size, leaf, corrupted, root)


@settings(max_examples=100, deadline=None)
@given(data=st.data(), size=st.integers(2, 600))
def test_verify_inclusion_rejects_proof_replayed_at_other_index(
    data: st.DataObject, size: int
) -> None:
    """Position forgery: a record proven at i cannot be passed off as record j."""
    index = data.draw(st.integers(0, size - 1), label="index")
    other = data.draw(st.integers(0, size - 1).filter(lambda j: j != index))
    leaves = _leaves(size)
    tree = AuditTree.from_leaves(leaves)

    with pytest.raises(REJECTED):
        verify_inclusion(
            other,
            size,
            leaf_hash(leaves[index]),
            tree.inclusion_proof(index),
            tree.root,
        )


@settings(max_examples=150, deadline=None)
@given(data=st.data(), size2=st.integers(1, 600))
def test_audittree_consistency_proof_verifies(data: st.DataObject, size2: int) -> None:
    size1 = data.draw(st.integers(1, size2), label="size1")
    leaves = _leaves(size2)
    old, new = AuditTree.from_leaves(leaves[:size1]), AuditTree.from_leaves(leaves)

    proof = new.consistency_proof(size1)

    verify_consistency(size1, size2, old.root, new.root, proof)


@settings(max_examples=200, deadline=None)
@given(
    first=st.lists(st.binary(max_size=8), min_size=1, max_size=40),
    second=st.lists(st.binary(max_size=8), min_size=1, max_size=40),
)
def test_audittree_different_leaves_give_different_roots(
    first: list[bytes], second: list[bytes]
) -> None:
    assume(first != second)

    assert AuditTree.from_leaves(first).root != AuditTree.from_leaves(second).root


@settings(max_examples=100, deadline=None)
@given(size=st.integers(1, 600).filter(lambda n: n % 2 == 1))
def test_audittree_odd_size_root_differs_from_duplicated_last_leaf(size: int) -> None:
    """Duplicated-leaf forgery: an odd block does not share a root with n + 1."""
    leaves = _leaves(size)

    root = AuditTree.from_leaves(leaves).root

    assert root != AuditTree.from_leaves([*leaves, leaves[-1]]).root
