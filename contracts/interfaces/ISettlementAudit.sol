// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {ILedger} from "./ILedger.sol";

/// @title ISettlementAudit
/// @notice The audit module (claims 7 and 8): proves the records of each settlement block
/// against the root the Ledger stored for it, and finishes the two-phase settlement. A
/// record whose proof matches is settled (its hold goes to the merchant); a record whose
/// proof from the bookkeeper does not match is rejected (its hold goes back to the
/// payer). Once every approved record of a block is settled or rejected, the block's
/// settlement is complete.
interface ISettlementAudit {
    /// @notice Where one record of a block stands.
    enum RecordStatus {
        Unknown,
        RejectedByRules,
        Held,
        Settled,
        RejectedByAudit
    }

    /// @notice Audit progress of one block; `complete` once settled + rejected equals the
    /// block's approved records.
    struct BlockAudit {
        uint32 settled;
        uint32 rejected;
        bool complete;
    }

    /// @notice Emitted when one record is settled on its own, with its inclusion proof.
    event RecordSettled(
        bytes32 indexed blockHash, uint32 index, address indexed merchant, uint64 amount
    );

    /// @notice Emitted when the audit rejects a record whose proof does not match; same
    /// signature as the Ledger's, with `code` always `ProofMismatch`.
    event TransactionRejected(
        bytes8 indexed terminalId,
        address indexed payer,
        ILedger.StatusCode indexed code,
        bytes32 blockHash,
        uint32 index,
        uint64 sequence,
        uint64 amount
    );

    /// @notice Emitted once per block, when its last approved record is settled or
    /// rejected (at once for a block whose records were all rejected by the rules).
    event SettlementComplete(bytes32 indexed blockHash, uint32 settled, uint32 rejected);

    /// @notice Thrown when a block hash is not a block of the Ledger.
    error AuditUnknownBlock(bytes32 blockHash);

    /// @notice Thrown when a leaf is not exactly `LEAF_LENGTH` bytes.
    error AuditMalformedLeaf(uint256 length, uint256 expected);

    /// @notice Thrown when a record is not exactly `RECORD_LENGTH` bytes.
    error AuditMalformedRecord(uint256 length, uint256 expected);

    /// @notice Thrown when an inclusion proof leads to another root than the stored one.
    error AuditProofMismatch(bytes32 expected, bytes32 computed);

    /// @notice Thrown when a proof offered as mismatching in fact matches the stored root.
    error AuditProofMatches(bytes32 blockHash, uint256 index);

    /// @notice Thrown when the record at `index` was rejected by the rules: nothing is held.
    error AuditNotApproved(bytes32 blockHash, uint256 index);

    /// @notice Thrown when a record that is already settled or rejected is rejected.
    error AuditAlreadyResolved(bytes32 blockHash, uint256 index);

    /// @notice Thrown when a block audit brings another number of leaves than the block has.
    error AuditLeafCount(uint256 expected, uint256 got);

    /// @notice Thrown when the holds are not 64 bytes for each approved record.
    error AuditMalformedHolds(uint256 length, uint256 expected);

    /// @notice Thrown when the holds or releases given, with the other digest, do not
    /// reproduce the settlement digest the Ledger stored.
    error AuditHoldsMismatch(bytes32 expected, bytes32 computed);

    /// @notice Thrown when the leaf hashes of a block audit lead to another root.
    error AuditRootMismatch(bytes32 expected, bytes32 computed);

    /// @notice Thrown when a signature is checked for a terminal that is not registered.
    error AuditUnknownTerminal(bytes8 terminalId);

    /// @notice Settles every approved record of a block not yet settled or rejected.
    /// @dev Anyone may call it: it moves money only as the Ledger committed when the
    /// block was appended. `leafHashes` must reproduce the block's records root (the
    /// audit of every record's proof at once), and `releases` (what the block holds for
    /// each merchant, as its `HoldPlaced` events list them) with `holdsDigest` (see
    /// {SettlementRecords-chainHold}) its settlement digest. Merchants are paid their
    /// releases less what records of the block settled or rejected one by one took. A
    /// block whose settlement is complete is left unchanged. Emits `SettlementComplete`
    /// when the block completes.
    /// @return settled Number of records this call settled.
    function auditBlock(
        bytes32 blockHash,
        bytes32[] calldata leafHashes,
        bytes32 holdsDigest,
        ILedger.Release[] calldata releases
    ) external returns (uint256 settled);

    /// @notice Settles record `index` of a block with its inclusion proof (a receipt).
    /// @dev Anyone may call it; a proof that does not match reverts and changes nothing.
    /// Requires a 165-byte leaf of an approved record. Returns false, changing nothing,
    /// when the record is already settled or rejected. Emits `RecordSettled`, and
    /// `SettlementComplete` when it was the block's last open record.
    function settleRecord(
        bytes32 blockHash,
        uint256 index,
        bytes calldata leaf,
        bytes32[] calldata proof
    ) external returns (bool);

    /// @notice Rejects record `index` of a block because the bookkeeper's proof for it
    /// does not match the stored root (claim 8), returning its hold to the payer.
    /// @dev Requires the auditor role, a proof that does not match (a malformed one
    /// counts) and an open, approved record. `holds` lists the block's approved records'
    /// holds (64 bytes each, in index order) and, with `releasesDigest` (see
    /// {SettlementRecords-chainRelease}), must reproduce its settlement digest, so the
    /// refund goes to the payer the Ledger saw, whatever the mismatching leaf says.
    /// Emits `TransactionRejected` with `ProofMismatch`, and `SettlementComplete` when it
    /// was the block's last open record.
    function rejectRecord(
        bytes32 blockHash,
        uint256 index,
        bytes calldata leaf,
        bytes32[] calldata proof,
        bytes calldata holds,
        bytes32 releasesDigest
    ) external;

    /// @notice Whether `terminalId`'s registered key verifies `signature` over `record`
    /// (RSA PKCS#1 v1.5 with SHA-256): the dispute check anyone can run.
    /// @dev Requires a 133-byte record of a registered terminal.
    function verifySignature(bytes calldata record, bytes calldata signature)
        external
        view
        returns (bool);

    /// @notice Audit progress of a block.
    function auditOf(bytes32 blockHash) external view returns (BlockAudit memory);

    /// @notice Where record `index` of a block stands.
    function statusOf(bytes32 blockHash, uint256 index) external view returns (RecordStatus);
}
