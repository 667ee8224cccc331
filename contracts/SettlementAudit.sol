// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

import {AccessControl} from "@openzeppelin/contracts/access/AccessControl.sol";
import {RSA} from "@openzeppelin/contracts/utils/cryptography/RSA.sol";

import {AuditTree} from "./AuditTree.sol";
import {ILedger} from "./interfaces/ILedger.sol";
import {ISettlementAudit} from "./interfaces/ISettlementAudit.sol";
import {ITerminalRegistry} from "./interfaces/ITerminalRegistry.sol";
import {SettlementRecords} from "./SettlementRecords.sol";

/// @title SettlementAudit
/// @notice The audit module of claim 8, holding the Ledger's `AUDIT_ROLE`.
///
/// The model: the Ledger appended a block, stored its records root, size and settlement
/// digest, and holds each approved amount for its merchant. This contract settles the
/// block's records, each exactly once: one by one with inclusion proofs (a merchant's
/// receipt), or all at once from the leaf hashes of the bookkeeper's audit tree, which
/// must rebuild the stored root. The money moves as the Ledger committed to in the
/// settlement digest, never as a caller says: a whole block by the releases it holds
/// for each merchant, one record by its own hold.
///
/// Settlement state is one bit per record in a per-block bitmap, set by the one-by-one
/// paths, which also keep what they moved per block and merchant; once a block is
/// complete every approved record is resolved, so the whole-block audit of a block
/// nobody settled from writes no bitmap at all.
///
/// NOTE: The auditor role is trusted with claim 8's rejection: given a bookkeeper's
/// proof that does not match, it reverses that record's payment. Anyone else with a
/// failing proof only reverts.
contract SettlementAudit is ISettlementAudit, AccessControl {
    using SettlementRecords for bytes;

    bytes32 public constant AUDITOR_ROLE = keccak256("AUDITOR_ROLE");

    /// @dev Entries a whole-block audit looks back over for a merchant's earlier
    /// release before it starts a new payment: bounds the search, while a merchant seen
    /// again later only costs an extra payment.
    uint256 private constant MERCHANT_LOOKBACK = 8;

    ILedger public immutable ledger;
    ITerminalRegistry public immutable registry;

    mapping(bytes32 blockHash => BlockAudit) private _audits;
    mapping(bytes32 blockHash => mapping(uint256 word => uint256 bits)) private _resolvedBits;
    // Audit rejections are the exception, so only they pay for a second bitmap.
    mapping(bytes32 blockHash => mapping(uint256 word => uint256 bits)) private _rejectedBits;
    // What records settled or rejected one by one took from a merchant's releases, until
    // the whole-block audit pays the rest.
    mapping(bytes32 blockHash => mapping(address merchant => uint256 amount))
        private _resolvedAmounts;

    constructor(address admin, ILedger ledger_, ITerminalRegistry registry_) {
        ledger = ledger_;
        registry = registry_;
        _grantRole(DEFAULT_ADMIN_ROLE, admin);
        _grantRole(AUDITOR_ROLE, admin);
    }


    /// @inheritdoc ISettlementAudit
    function auditBlock(
        bytes32 blockHash,
        bytes32[] calldata leafHashes,
        bytes32 holdsDigest,
        ILedger.Release[] calldata releases
    ) external returns (uint256 settled) {
        BlockAudit memory audit = _audits[blockHash];
        if (audit.complete) return 0;
        ILedger.StoredBlock memory stored = _storedBlock(blockHash);
        _checkBlockProof(stored, leafHashes);
        _checkSettlement(stored, holdsDigest, _releasesDigest(releases));

        bool untouched = audit.settled == 0 && audit.rejected == 0;
        // Cannot underflow: an open block has fewer resolved records than approved ones.
        settled = stored.approvedCount - audit.settled - audit.rejected;
        // At most 1024 records per block, so the count fits.
        audit.settled += uint32(settled);
        _store(blockHash, audit, stored.approvedCount);

        ILedger.Release[] memory owed = _merged(releases);
        if (!untouched) _subtractResolved(blockHash, owed);
        ledger.release(owed);
    }

    /// @inheritdoc ISettlementAudit
    function settleRecord(
        bytes32 blockHash,
        uint256 index,
        bytes calldata leaf,
        bytes32[] calldata proof
    ) external returns (bool) {
        ILedger.StoredBlock memory stored = _storedBlock(blockHash);
        bytes32 computed = _rootFromProof(stored, index, leaf, proof);
        if (computed != stored.recordsRoot) revert AuditProofMismatch(stored.recordsRoot, computed);
        if (!ledger.isApproved(blockHash, index)) revert AuditNotApproved(blockHash, index);
        if (_isResolved(blockHash, index)) return false;

        SettlementRecords.Record memory record = leaf.decode();
        _resolve(blockHash, index);
        _resolvedAmounts[blockHash][record.merchant] += record.amount;
        emit RecordSettled(blockHash, uint32(index), record.merchant, record.amount);
        BlockAudit memory audit = _audits[blockHash];
        audit.settled += 1;
        _store(blockHash, audit, stored.approvedCount);

        ledger.release(_single(record.merchant, record.amount));
        return true;
    }

    /// @inheritdoc ISettlementAudit
    function rejectRecord(
        bytes32 blockHash,
        uint256 index,
        bytes calldata leaf,
        bytes32[] calldata proof,
        bytes calldata holds,
        bytes32 releasesDigest
    ) external onlyRole(AUDITOR_ROLE) {
        ILedger.StoredBlock memory stored = _storedBlock(blockHash);
        if (_proofMatches(stored, index, leaf, proof)) revert AuditProofMatches(blockHash, index);
        if (!ledger.isApproved(blockHash, index)) revert AuditNotApproved(blockHash, index);
        if (_isResolved(blockHash, index)) revert AuditAlreadyResolved(blockHash, index);
        _checkHolds(stored, holds, releasesDigest);

        (address payer, address merchant, uint64 amount) =
            _reject(blockHash, index, holds, stored.approvedCount);
        ledger.refund(payer, merchant, amount);
    }


    /// @inheritdoc ISettlementAudit
    function verifySignature(bytes calldata record, bytes calldata signature)
        external
        view
        returns (bool)
    {
        if (record.length != SettlementRecords.RECORD_LENGTH) {
            revert AuditMalformedRecord(record.length, SettlementRecords.RECORD_LENGTH);
        }
        bytes8 terminalId = record.decode().terminalId;
        // The registry reverts for a terminal it never registered; name it here.
        try registry.publicKeyOf(terminalId) returns (bytes memory n, bytes memory e) {
            return RSA.pkcs1Sha256(record.digest(), signature, e, n);
        } catch {
            revert AuditUnknownTerminal(terminalId);
        }
    }

    /// @inheritdoc ISettlementAudit
    function auditOf(bytes32 blockHash) external view returns (BlockAudit memory) {
        return _audits[blockHash];
    }

    /// @inheritdoc ISettlementAudit
    function statusOf(bytes32 blockHash, uint256 index) external view returns (RecordStatus) {
        if (index >= ledger.blockOf(blockHash).recordCount) return RecordStatus.Unknown;
        if (!ledger.isApproved(blockHash, index)) return RecordStatus.RejectedByRules;
        if (!_isResolved(blockHash, index)) return RecordStatus.Held;
        if (_rejectedBits[blockHash][index >> 8] & (1 << (index & 0xff)) != 0) {
            return RecordStatus.RejectedByAudit;
        }
        return RecordStatus.Settled;
    }


    function _storedBlock(bytes32 blockHash)
        private
        view
        returns (ILedger.StoredBlock memory stored)
    {
        stored = ledger.blockOf(blockHash);
        if (stored.recordCount == 0) revert AuditUnknownBlock(blockHash);
    }

    function _checkBlockProof(ILedger.StoredBlock memory stored, bytes32[] calldata leafHashes)
        private
        pure
    {
        if (leafHashes.length != stored.recordCount) {
            revert AuditLeafCount(stored.recordCount, leafHashes.length);
        }
        bytes32 computed = AuditTree.rootOf(leafHashes);
        if (computed != stored.recordsRoot) revert AuditRootMismatch(stored.recordsRoot, computed);
    }

    function _checkHolds(
        ILedger.StoredBlock memory stored,
        bytes calldata holds,
        bytes32 releasesDigest
    ) private pure {
        uint256 expected = uint256(stored.approvedCount) * SettlementRecords.HOLD_LENGTH;
        if (holds.length != expected) revert AuditMalformedHolds(holds.length, expected);

        _checkSettlement(stored, SettlementRecords.chainHolds(0, holds), releasesDigest);
    }

    function _checkSettlement(
        ILedger.StoredBlock memory stored,
        bytes32 holdsDigest,
        bytes32 releasesDigest
    ) private pure {
        bytes32 digest = keccak256(abi.encodePacked(holdsDigest, releasesDigest));
        if (digest != stored.settlementDigest) {
            revert AuditHoldsMismatch(stored.settlementDigest, digest);
        }
    }

    function _releasesDigest(ILedger.Release[] calldata releases)
        private
        pure
        returns (bytes32 digest)
    {
        for (uint256 i = 0; i < releases.length; ++i) {
            digest = SettlementRecords.chainRelease(
                digest, releases[i].merchant, releases[i].amount
            );
        }
    }

    /// @dev The releases with those of one merchant summed, as long as the merchant comes
    /// again within `MERCHANT_LOOKBACK` entries: one payment per merchant where its
    /// terminals sit close together, each paid once (a payment costs a transfer of the
    /// hold and an event), while the search stays bounded.
    function _merged(ILedger.Release[] calldata releases)
        private
        pure
        returns (ILedger.Release[] memory owed)
    {
        owed = new ILedger.Release[](releases.length);
        uint256 entries = 0;
        for (uint256 i = 0; i < releases.length; ++i) {
            address merchant = releases[i].merchant;
            uint256 first = entries > MERCHANT_LOOKBACK ? entries - MERCHANT_LOOKBACK : 0;
            uint256 j = entries;
            while (j > first && owed[j - 1].merchant != merchant) --j;
            if (j > first) {
                owed[j - 1].amount += releases[i].amount;
            } else {
                owed[entries++] = ILedger.Release(merchant, releases[i].amount);
            }
        }
        // Shrinking a memory array in place is safe: its tail is simply never read.
        assembly ("memory-safe") {
            mstore(owed, entries)
        }
    }

    /// @dev Takes off what records settled or rejected one by one already took from each
    /// merchant, which is used up as it is subtracted.
    function _subtractResolved(bytes32 blockHash, ILedger.Release[] memory owed) private {
        for (uint256 i = 0; i < owed.length; ++i) {
            address merchant = owed[i].merchant;
            uint256 resolved = _resolvedAmounts[blockHash][merchant];
            if (resolved == 0) continue;

            uint256 taken = resolved < owed[i].amount ? resolved : owed[i].amount;
            // Cannot underflow: taken is at most either of them.
            unchecked {
                owed[i].amount -= taken;
                _resolvedAmounts[blockHash][merchant] = resolved - taken;
            }
        }
    }

    function _rootFromProof(
        ILedger.StoredBlock memory stored,
        uint256 index,
        bytes calldata leaf,
        bytes32[] calldata proof
    ) private pure returns (bytes32) {
        if (leaf.length != SettlementRecords.LEAF_LENGTH) {
            revert AuditMalformedLeaf(leaf.length, SettlementRecords.LEAF_LENGTH);
        }
        bytes32 leafHash = AuditTree.hashLeafCalldata(leaf);
        return AuditTree.rootFromInclusionProof(index, stored.recordCount, leafHash, proof);
    }

    /// @dev Like {_rootFromProof} compared with the root, but a leaf or proof of the wrong
    /// shape is a mismatch rather than an error: it is what claim 8 rejects.
    function _proofMatches(
        ILedger.StoredBlock memory stored,
        uint256 index,
        bytes calldata leaf,
        bytes32[] calldata proof
    ) private pure returns (bool) {
        if (index >= stored.recordCount) {
            revert AuditTree.AuditTreeIndexOutOfRange(index, stored.recordCount);
        }
        if (leaf.length != SettlementRecords.LEAF_LENGTH) return false;
        if (proof.length != AuditTree.inclusionProofLength(index, stored.recordCount)) {
            return false;
        }
        return _rootFromProof(stored, index, leaf, proof) == stored.recordsRoot;
    }

    /// @dev Rejects record `index`, whose hold is hold number `hold` of the checked list
    /// `holds` (it has one per approved record); the caller refunds.
    function _reject(bytes32 blockHash, uint256 index, bytes calldata holds, uint32 approved)
        private
        returns (address payer, address merchant, uint64 amount)
    {
        uint256 hold = index - _rejectedBefore(blockHash, index);
        (merchant, amount) = _holdAt(holds, hold);
        _resolve(blockHash, index);
        _rejectedBits[blockHash][index >> 8] |= 1 << (index & 0xff);
        _resolvedAmounts[blockHash][merchant] += amount;
        BlockAudit memory audit = _audits[blockHash];
        audit.rejected += 1;
        _store(blockHash, audit, approved);

        payer = _announceRejection(blockHash, index, holds, hold);
    }

    /// @dev Emits the audit's `TransactionRejected` for record `index`, from its hold.
    function _announceRejection(
        bytes32 blockHash,
        uint256 index,
        bytes calldata holds,
        uint256 hold
    ) private returns (address payer) {
        uint256 o = hold * SettlementRecords.HOLD_LENGTH;
        bytes8 terminalId = bytes8(holds[o:o + 8]);
        uint64 sequence = uint64(bytes8(holds[o + 8:o + 16]));
        uint64 amount = uint64(bytes8(holds[o + 16:o + 24]));
        payer = address(bytes20(holds[o + 44:o + 64]));
        emit TransactionRejected(
            terminalId,
            payer,
            ILedger.StatusCode.ProofMismatch,
            blockHash,
            uint32(index),
            sequence,
            amount
        );
    }

    /// @dev Number of records before `index` that the rules rejected.
    function _rejectedBefore(bytes32 blockHash, uint256 index) private view returns (uint256 n) {
        for (uint256 word = 0; word <= index >> 8; ++word) {
            uint256 bits = ledger.rejectedBitsOf(blockHash, word);
            if (word == index >> 8) bits &= (1 << (index & 0xff)) - 1;
            n += _popCount(bits);
        }
    }

    function _store(bytes32 blockHash, BlockAudit memory audit, uint32 approved) private {
        audit.complete = audit.settled + audit.rejected == approved;
        _audits[blockHash] = audit;
        if (audit.complete) emit SettlementComplete(blockHash, audit.settled, audit.rejected);
    }

    function _resolve(bytes32 blockHash, uint256 index) private {
        _resolvedBits[blockHash][index >> 8] |= 1 << (index & 0xff);
    }

    /// @dev Whether record `index` is settled or rejected. Every approved record of a
    /// complete block is, so a whole-block audit, which always completes its block, does
    /// not write the bits.
    function _isResolved(bytes32 blockHash, uint256 index) private view returns (bool) {
        if (_audits[blockHash].complete) return true;
        return _resolvedBits[blockHash][index >> 8] & (1 << (index & 0xff)) != 0;
    }

    /// @dev The merchant and amount of hold `hold` of the list. Requires
    /// `hold < holds.length / HOLD_LENGTH`, which callers check.
    function _holdAt(bytes calldata holds, uint256 hold)
        private
        pure
        returns (address merchant, uint64 amount)
    {
        uint256 o;
        // Cannot overflow: hold < holds.length / HOLD_LENGTH.
        unchecked {
            o = hold * SettlementRecords.HOLD_LENGTH;
        }
        // Two loads inside the hold: amount at 16, merchant at 24. Measured on anvil
        // (Cancun rules), 256 holds: slicing both fields cost ~830 gas per hold more.
        assembly ("memory-safe") {
            let p := add(holds.offset, o)
            amount := shr(192, calldataload(add(p, 16)))
            merchant := shr(96, calldataload(add(p, 24)))
        }
    }

    function _single(address merchant, uint256 amount)
        private
        pure
        returns (ILedger.Release[] memory list)
    {
        list = new ILedger.Release[](1);
        list[0] = ILedger.Release(merchant, amount);
    }

    /// @dev Number of set bits in `x`, one bit at a time: it runs once per 256 records,
    /// or on the rare audit rejection.
    function _popCount(uint256 x) private pure returns (uint256 n) {
        for (; x != 0; x &= x - 1) ++n;
    }
}
