// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {Math} from "@openzeppelin/contracts/utils/math/Math.sol";

/// @title AuditTree
/// @notice The audit tree of a settlement block: an RFC 6962 Merkle tree over SHA-256,
/// byte for byte the tree of `posaudit/audittree.py`.
///
/// A leaf hash is `sha256(0x00 || data)` and a node hash `sha256(0x01 || left || right)`,
/// so a leaf can never pass for an inner node. The tree is built bottom up, pairwise; an
/// odd last node is carried up unchanged, never duplicated, which gives the same tree as
/// RFC 6962's split at the largest power of two below the size.
///
/// Proofs are checked with the inner/border decomposition of a leaf's path: on the
/// `inner` lowest levels, where the paths to `index` and to the last leaf differ, the
/// sibling sits on either side; above them the path runs along the right border of the
/// tree and every sibling sits on the left.
///
/// NOTE: An inclusion proof does not bind the tree size: the inner nodes of a large tree
/// are the leaves of a smaller one. Callers must take `size` (and the root) from their
/// own storage, never from the caller of their function.
library AuditTree {
    /// @notice Domain-separation byte hashed in front of a leaf's data.
    bytes1 internal constant LEAF_PREFIX = 0x00;

    /// @notice Domain-separation byte hashed in front of two child hashes.
    bytes1 internal constant NODE_PREFIX = 0x01;

    /// @notice Thrown when the root of zero leaves is asked for.
    error AuditTreeEmpty();

    /// @notice Thrown when a proof's leaf index is not below the tree size.
    error AuditTreeIndexOutOfRange(uint256 index, uint256 size);

    /// @notice Thrown when a proof has `got` hashes where its sizes call for `want`.
    error AuditTreeProofLength(uint256 got, uint256 want);

    /// @notice Thrown when consistency sizes break `0 < size1 <= size2`.
    error AuditTreeConsistencySizes(uint256 size1, uint256 size2);

    /// @notice Hashes one leaf: `sha256(0x00 || data)`.
    function hashLeaf(bytes memory data) internal pure returns (bytes32) {
        return sha256(abi.encodePacked(LEAF_PREFIX, data));
    }

    /// @notice Same as {hashLeaf}, for data still in calldata.
    function hashLeafCalldata(bytes calldata data) internal pure returns (bytes32) {
        return _castToPure(_hashLeafCalldata)(data);
    }

    /// @notice Hashes each leaf of `data`, the concatenation of `leafLength`-byte leaves,
    /// with {hashLeaf}.
    /// @dev Requires `leafLength > 0`; a trailing partial leaf is left out (callers check
    /// `data.length` against the number of leaves they expect).
    function hashLeavesCalldata(bytes calldata data, uint256 leafLength)
        internal
        pure
        returns (bytes32[] memory leafHashes)
    {
        leafHashes = new bytes32[](data.length / leafLength);
        _castToPure(_hashLeaves)(data, leafLength, leafHashes);
    }

    /// @notice Hashes two children into their parent: `sha256(0x01 || left || right)`.
    function hashNode(bytes32 left, bytes32 right) internal pure returns (bytes32) {
        return sha256(abi.encodePacked(NODE_PREFIX, left, right));
    }

    /// @notice Computes the root of the tree over `leafHashes`.
    /// @dev Requires `leafHashes.length > 0`; reverts with {AuditTreeEmpty} otherwise.
    ///
    /// WARNING: The reduction runs in place: `leafHashes` is overwritten with inner nodes.
    function rootOf(bytes32[] memory leafHashes) internal pure returns (bytes32) {
        if (leafHashes.length == 0) revert AuditTreeEmpty();

        return _castToPure(_reduce)(leafHashes);
    }

    /// @notice Computes the root that an inclusion proof leads to.
    /// @dev Requires `0 <= index < size` and `proof.length` equal to the path length of
    /// `index` in a tree of `size`; reverts with {AuditTreeIndexOutOfRange} or
    /// {AuditTreeProofLength} before any hashing otherwise.
    /// @param index Position of the leaf.
    /// @param size Number of leaves, from the caller's own storage (see the NOTE above).
    /// @param leafHash The leaf's hash, see {hashLeaf}.
    /// @param proof Sibling hashes, bottom up, in RFC 6962 order.
    function rootFromInclusionProof(
        uint256 index,
        uint256 size,
        bytes32 leafHash,
        bytes32[] calldata proof
    ) internal pure returns (bytes32) {
        if (index >= size) revert AuditTreeIndexOutOfRange(index, size);
        (uint256 inner, uint256 border) = _decompose(index, size);
        // Both are at most 256, so the sum cannot overflow.
        uint256 want;
        unchecked {
            want = inner + border;
        }
        if (proof.length != want) revert AuditTreeProofLength(proof.length, want);

        return _castToPure(_chain)(leafHash, proof, index, inner);
    }

    /// @notice Number of sibling hashes in the inclusion proof of `index` in a tree of
    /// `size`.
    /// @dev Requires `0 <= index < size`; reverts with {AuditTreeIndexOutOfRange} otherwise.
    function inclusionProofLength(uint256 index, uint256 size) internal pure returns (uint256) {
        if (index >= size) revert AuditTreeIndexOutOfRange(index, size);
        (uint256 inner, uint256 border) = _decompose(index, size);
        // Both are at most 256, so the sum cannot overflow.
        unchecked {
            return inner + border;
        }
    }

    /// @notice Tells whether `leafHash` sits at `index` in the tree of `size` with `root`.
    /// @dev Reverts like {rootFromInclusionProof} on a malformed proof; returns false for
    /// a well-formed proof that leads to another root.
    function verifyInclusion(
        uint256 index,
        uint256 size,
        bytes32 leafHash,
        bytes32[] calldata proof,
        bytes32 root
    ) internal pure returns (bool) {
        return rootFromInclusionProof(index, size, leafHash, proof) == root;
    }

    /// @notice Tells whether the tree of `size2` with `root2` extends the tree of `size1`
    /// with `root1`, given an RFC 6962 consistency proof.
    /// @dev Requires `0 < size1 <= size2` (every tree extends the empty one, so a proof
    /// from it would prove nothing) and the proof length the sizes call for; reverts with
    /// {AuditTreeConsistencySizes} or {AuditTreeProofLength} before any hashing otherwise.
    /// Returns false for a well-formed proof that leads to other roots.
    function verifyConsistency(
        uint256 size1,
        uint256 size2,
        bytes32 root1,
        bytes32 root2,
        bytes32[] calldata proof
    ) internal pure returns (bool) {
        if (size1 == 0 || size1 > size2) revert AuditTreeConsistencySizes(size1, size2);
        if (size1 == size2) {
            if (proof.length != 0) revert AuditTreeProofLength(proof.length, 0);
            return root1 == root2;
        }

        (uint256 inner, uint256 mask, uint256 start) =
            _consistencyShape(size1, size2, proof.length);
        bytes32 seed = start == 0 ? root1 : proof[0];
        (bytes32 hash1, bytes32 hash2) = _chainConsistency(seed, proof[start:], inner, mask);
        return hash1 == root1 && hash2 == root2;
    }

    /// @dev Checks a consistency proof's length for `0 < size1 < size2` and returns how
    /// to chain it: `inner` levels on which `mask` (the old last leaf's position above
    /// the seed) decides the side, and `start`, the index of the first path hash.
    function _consistencyShape(uint256 size1, uint256 size2, uint256 got)
        private
        pure
        returns (uint256 inner, uint256 mask, uint256 start)
    {
        // The lowest `shift` levels of the old last leaf's path lie inside one complete
        // subtree; the proof starts from that subtree's root instead of those siblings,
        // and leaves it out when it is the old root itself (size1 a power of two).
        uint256 border;
        (inner, border) = _decompose(size1 - 1, size2);
        uint256 shift = _bitLength(size1 & (~size1 + 1)) - 1;
        inner -= shift;
        start = size1 == 1 << shift ? 0 : 1;
        if (got != start + inner + border) {
            revert AuditTreeProofLength(got, start + inner + border);
        }
        mask = (size1 - 1) >> shift;
    }

    /// @dev Chains a consistency path from `seed` to the old root (`hash1`, left siblings
    /// only) and to the new root (`hash2`, every sibling).
    function _chainConsistency(
        bytes32 seed,
        bytes32[] calldata path,
        uint256 inner,
        uint256 mask
    ) private pure returns (bytes32 hash1, bytes32 hash2) {
        hash1 = seed;
        hash2 = seed;
        for (uint256 i = 0; i < inner; ++i) {
            if ((mask >> i) & 1 == 1) {
                hash1 = hashNode(path[i], hash1);
                hash2 = hashNode(path[i], hash2);
            } else {
                hash2 = hashNode(hash2, path[i]);
            }
        }
        for (uint256 i = inner; i < path.length; ++i) {
            hash1 = hashNode(path[i], hash1);
            hash2 = hashNode(path[i], hash2);
        }
    }

    /// @dev Replaces each level of `hashes` by the next one, in place, down to the root.
    /// Requires `hashes.length > 0`.
    function _reduce(bytes32[] memory hashes) private view returns (bytes32 root) {
        uint8 prefix = uint8(NODE_PREFIX);
        // Measured with AuditTreeHarness.rootOf on 256 leaves: 475,339 gas for the call
        // when each node goes through `hashNode`, 348,580 with this loop, about 500 gas
        // less per node. The 65-byte preimage sits past the free memory pointer:
        // temporary, never allocated, rewritten for every node.
        assembly ("memory-safe") {
            let buffer := mload(0x40)
            mstore8(buffer, prefix)
            let first := add(hashes, 0x20)
            for { let count := mload(hashes) } gt(count, 1) {} {
                let pairsEnd := add(first, shl(6, shr(1, count)))
                let out := first
                for { let pair := first } lt(pair, pairsEnd) { pair := add(pair, 0x40) } {
                    mstore(add(buffer, 0x01), mload(pair))
                    mstore(add(buffer, 0x21), mload(add(pair, 0x20)))
                    // The parent goes to slot `out`, never after the pair it comes from.
                    if iszero(staticcall(gas(), 0x02, buffer, 0x41, out, 0x20)) {
                        revert(0, 0)
                    }
                    out := add(out, 0x20)
                }
                if and(count, 1) { mstore(out, mload(pairsEnd)) }
                count := add(shr(1, count), and(count, 1))
            }
            root := mload(first)
        }
    }

    /// @dev {hashLeafCalldata} through a preimage written past the free memory pointer
    /// (temporary, never allocated). Measured on anvil, 256-record block: `sha256` of
    /// `abi.encodePacked` allocated a copy of every leaf and cost ~400 gas more per leaf.
    function _hashLeafCalldata(bytes calldata data) private view returns (bytes32 result) {
        uint8 prefix = uint8(LEAF_PREFIX);
        assembly ("memory-safe") {
            let buffer := mload(0x40)
            mstore8(buffer, prefix)
            calldatacopy(add(buffer, 0x01), data.offset, data.length)
            // The precompile fails only when out of gas; revert as `sha256` does.
            if iszero(staticcall(gas(), 0x02, buffer, add(data.length, 0x01), 0x00, 0x20)) {
                revert(0, 0)
            }
            result := mload(0x00)
        }
    }

    /// @dev Fills `leafHashes` for {hashLeavesCalldata}: each preimage is written past the
    /// free memory pointer, as in {_hashLeafCalldata}, and each hash goes straight to its
    /// place in the array. Measured on anvil, 256-record block: a Solidity loop slicing
    /// each leaf for {hashLeafCalldata} cost ~540 gas more per leaf.
    function _hashLeaves(bytes calldata data, uint256 leafLength, bytes32[] memory leafHashes)
        private
        view
    {
        uint8 prefix = uint8(LEAF_PREFIX);
        assembly ("memory-safe") {
            let buffer := mload(0x40)
            mstore8(buffer, prefix)
            let size := add(leafLength, 0x01)
            let out := add(leafHashes, 0x20)
            let end := add(out, shl(5, mload(leafHashes)))
            let ok := 1
            for { let p := data.offset } lt(out, end) { out := add(out, 0x20) } {
                calldatacopy(add(buffer, 0x01), p, leafLength)
                ok := and(ok, staticcall(gas(), 0x02, buffer, size, out, 0x20))
                p := add(p, leafLength)
            }
            // The precompile fails only when out of gas; revert as `sha256` does.
            if iszero(ok) { revert(0, 0) }
        }
    }

    /// @dev Hashes `seed` up its path: on the lowest `inner` levels the sibling's side
    /// follows the bits of `index`, above them every sibling is on the left.
    function _chain(bytes32 seed, bytes32[] calldata proof, uint256 index, uint256 inner)
        private
        view
        returns (bytes32 result)
    {
        uint8 prefix = uint8(NODE_PREFIX);
        // Measured with AuditTreeHarness.verifyInclusionGas at depth 20 (eth-tester and
        // anvil agree): 18,139 gas when each level goes through `hashNode`, whose
        // `sha256(abi.encodePacked(...))` allocates, copies and decodes every time; 7,398
        // with this loop in the worst case (20 inner levels), 3,920 of it the precompile
        // (budget: 7,840). Writing each parent straight to where the next level reads it
        // and checking the calls once saved ~1,000 over a loop through scratch space;
        // two levels per iteration saved ~420 more.
        assembly ("memory-safe") {
            // The 65-byte preimage sits past the free memory pointer: temporary, never
            // allocated. `side` is 0x20 while the running hash is a right child.
            let buffer := mload(0x40)
            mstore8(buffer, prefix)
            let left := add(buffer, 0x01)
            let right := add(buffer, 0x21)
            let p := proof.offset
            let innerEnd := add(p, shl(5, inner))
            let end := add(p, shl(5, proof.length))
            let ok := 1
            let side := shl(5, and(index, 1))
            mstore(add(left, side), seed)
            // Two levels per iteration, after a single one when `inner` is odd.
            if and(inner, 1) {
                mstore(sub(right, side), calldataload(p))
                index := shr(1, index)
                side := shl(5, and(index, 1))
                ok := and(ok, staticcall(gas(), 0x02, buffer, 0x41, add(left, side), 0x20))
                p := add(p, 0x20)
            }
            for {} lt(p, innerEnd) { p := add(p, 0x40) } {
                mstore(sub(right, side), calldataload(p))
                index := shr(1, index)
                side := shl(5, and(index, 1))
                ok := and(ok, staticcall(gas(), 0x02, buffer, 0x41, add(left, side), 0x20))
                mstore(sub(right, side), calldataload(add(p, 0x20)))
                index := shr(1, index)
                side := shl(5, and(index, 1))
                ok := and(ok, staticcall(gas(), 0x02, buffer, 0x41, add(left, side), 0x20))
            }
            // On the border the running hash is always the right child.
            if iszero(side) { mstore(right, mload(left)) }
            for {} lt(p, end) { p := add(p, 0x20) } {
                mstore(left, calldataload(p))
                ok := and(ok, staticcall(gas(), 0x02, buffer, 0x41, right, 0x20))
            }
            // The precompile fails only when out of gas; revert as `sha256` does.
            if iszero(ok) { revert(0, 0) }
            result := mload(right)
        }
    }

    /// @dev Returns {_reduce} typed as pure. The compiler counts every `staticcall` as reading
    /// state; this one only reaches the sha256 precompile, which reads nothing.
    function _castToPure(function(bytes32[] memory) view returns (bytes32) fn)
        private
        pure
        returns (function(bytes32[] memory) pure returns (bytes32) pureFn)
    {
        assembly ("memory-safe") {
            pureFn := fn
        }
    }

    /// @dev Returns {_hashLeafCalldata} typed as pure, for the reason given above.
    function _castToPure(function(bytes calldata) view returns (bytes32) fn)
        private
        pure
        returns (function(bytes calldata) pure returns (bytes32) pureFn)
    {
        assembly ("memory-safe") {
            pureFn := fn
        }
    }

    /// @dev Returns {_hashLeaves} typed as pure, for the reason given above.
    function _castToPure(function(bytes calldata, uint256, bytes32[] memory) view fn)
        private
        pure
        returns (function(bytes calldata, uint256, bytes32[] memory) pure pureFn)
    {
        assembly ("memory-safe") {
            pureFn := fn
        }
    }

    /// @dev Returns {_chain} typed as pure, for the reason given at the other overload.
    function _castToPure(
        function(bytes32, bytes32[] calldata, uint256, uint256) view returns (bytes32) fn
    )
        private
        pure
        returns (
            function(bytes32, bytes32[] calldata, uint256, uint256) pure returns (bytes32)
                pureFn
        )
    {
        assembly ("memory-safe") {
            pureFn := fn
        }
    }

    /// @dev Splits the path of `index` in a tree of `size` (requires index < size) into
    /// `inner` lower levels, below the point where it meets the path of the last leaf,
    /// and `border` left siblings above it, one per set bit of `index` there.
    function _decompose(uint256 index, uint256 size)
        private
        pure
        returns (uint256 inner, uint256 border)
    {
        // index < size, so size - 1 cannot underflow.
        unchecked {
            inner = _bitLength(index ^ (size - 1));
        }
        border = _popCount(index >> inner);
    }

    /// @dev Number of bits needed to write `x`: 0 for 0, else floor(log2(x)) + 1.
    function _bitLength(uint256 x) private pure returns (uint256) {
        // Math.log2 is branchless; a bit-by-bit loop would cost ~25 gas per bit.
        // log2 of a uint256 is at most 255, so adding one cannot overflow.
        unchecked {
            return x == 0 ? 0 : Math.log2(x) + 1;
        }
    }

    /// @dev Number of set bits in `x`.
    function _popCount(uint256 x) private pure returns (uint256) {
        // Summed in parallel lanes of 2, 4, 8 and 16 bits: constant cost, where a loop
        // over the set bits cost ~30 gas each. No lane ever exceeds its width, so nothing
        // borrows or carries out of 256 bits.
        unchecked {
            uint256 m2 = 0x3333333333333333333333333333333333333333333333333333333333333333;
            x -= (x >> 1) & 0x5555555555555555555555555555555555555555555555555555555555555555;
            x = (x & m2) + ((x >> 2) & m2);
            x = (x + (x >> 4)) & 0x0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f;
            x = (x + (x >> 8)) & 0x00ff00ff00ff00ff00ff00ff00ff00ff00ff00ff00ff00ff00ff00ff00ff00ff;
            x += x >> 16;
            x += x >> 32;
            x += x >> 64;
            x += x >> 128;
            return x & 0x1ff;
        }
    }
}
