// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

import {AuditTree} from "../AuditTree.sol";

/// @title AuditTreeHarness
/// @notice Exposes the {AuditTree} library to tests; holds no state.
contract AuditTreeHarness {
    /// @notice See {AuditTree-hashLeaf}.
    function hashLeaf(bytes memory data) external pure returns (bytes32) {
        return AuditTree.hashLeaf(data);
    }

    /// @notice See {AuditTree-hashLeafCalldata}.
    function hashLeafCalldata(bytes calldata data) external pure returns (bytes32) {
        return AuditTree.hashLeafCalldata(data);
    }

    /// @notice See {AuditTree-hashNode}.
    function hashNode(bytes32 left, bytes32 right) external pure returns (bytes32) {
        return AuditTree.hashNode(left, right);
    }

    /// @notice See {AuditTree-rootOf}.
    function rootOf(bytes32[] memory leafHashes) external pure returns (bytes32) {
        return AuditTree.rootOf(leafHashes);
    }

    /// @notice See {AuditTree-rootFromInclusionProof}.
    function rootFromInclusionProof(
        uint256 index,
        uint256 size,
        bytes32 leafHash,
        bytes32[] calldata proof
    ) external pure returns (bytes32) {
        return AuditTree.rootFromInclusionProof(index, size, leafHash, proof);
    }

    /// @notice Runs {AuditTree-rootFromInclusionProof} for several proofs in a tree of
    /// `size`, so that a differential test pays for one call per tree, not per proof.
    function rootsFromInclusionProofs(
        uint256[] calldata indices,
        uint256 size,
        bytes32[] calldata leafHashes,
        bytes32[][] calldata proofs
    ) external pure returns (bytes32[] memory roots) {
        roots = new bytes32[](indices.length);
        for (uint256 i = 0; i < indices.length; ++i) {
            roots[i] = AuditTree.rootFromInclusionProof(indices[i], size, leafHashes[i], proofs[i]);
        }
    }

    /// @notice See {AuditTree-verifyInclusion}.
    function verifyInclusion(
        uint256 index,
        uint256 size,
        bytes32 leafHash,
        bytes32[] calldata proof,
        bytes32 root
    ) external pure returns (bool) {
        return AuditTree.verifyInclusion(index, size, leafHash, proof, root);
    }

    /// @notice See {AuditTree-verifyConsistency}.
    function verifyConsistency(
        uint256 size1,
        uint256 size2,
        bytes32 root1,
        bytes32 root2,
        bytes32[] calldata proof
    ) external pure returns (bool) {
        return AuditTree.verifyConsistency(size1, size2, root1, root2, proof);
    }

    /// @notice Runs {AuditTree-verifyInclusion} and reports the gas it took, measured
    /// with `gasleft()` around the library call alone (ABI decoding excluded).
    function verifyInclusionGas(
        uint256 index,
        uint256 size,
        bytes32 leafHash,
        bytes32[] calldata proof,
        bytes32 root
    ) external view returns (bool ok, uint256 gasUsed) {
        uint256 before = gasleft();
        ok = AuditTree.verifyInclusion(index, size, leafHash, proof, root);
        gasUsed = before - gasleft();
    }
}
