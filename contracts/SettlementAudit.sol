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
/// The model: the Ledger appended a block, stored its records root, size and holds
/// digest, and holds each approved amount for its merchant. This contract settles the
/// block's records, each exactly once: one by one with inclusion proofs (a merchant's
/// receipt), or all at once from the leaf hashes of the bookkeeper's audit tree, which
/// must rebuild the stored root. The money moves as the Ledger committed to in the holds
/// digest, never as a caller says.
///
/// Settlement state is one bit per record in a per-block bitmap, set by the one-by-one
/// paths; once a block is complete every approved record is resolved, so the whole-block
/// audit of a block nobody settled from writes no bitmap at all.
///
/// NOTE: The auditor role is trusted with claim 8's rejection: given a bookkeeper's
/// proof that does not match, it reverses that record's payment. Anyone else with a
/// failing proof only reverts.
contract SettlementAudit is ISettlementAudit, AccessControl {
    using SettlementRecords for bytes;

    /// @dev What a block audit owes merchants so far: `entries` (merchant, amount) pairs.
    struct Releases {
        address[] merchants;
        uint256[] amounts;
        uint256 entries;
    }

    bytes32 public constant AUDITOR_ROLE = keccak256("AUDITOR_ROLE");

    /// @dev Distinct merchants a whole-block audit looks back over before it starts a new
    /// release entry: bounds the search, while a merchant seen again later only costs an
    /// extra entry.
    uint256 private constant MERCHANT_LOOKBACK = 8;

    ILedger public immutable ledger;
    ITerminalRegistry public immutable registry;

    mapping(bytes32 blockHash => BlockAudit) private _audits;
    mapping(bytes32 blockHash => mapping(uint256 word => uint256 bits)) private _resolvedBits;
    // Audit rejections are the exception, so only they pay for a second bitmap.
    mapping(bytes32 blockHash => mapping(uint256 word => uint256 bits)) private _rejectedBits;

    constructor(address admin, ILedger ledger_, ITerminalRegistry registry_) {
        ledger = ledger_;
        registry = registry_;
        _grantRole(DEFAULT_ADMIN_ROLE, admin);
        _grantRole(AUDITOR_ROLE, admin);
    }


    /// @inheritdoc ISettlementAudit
    function auditBlock(bytes32 blockHash, bytes32[] calldata leafHashes, bytes calldata holds)
        external
        returns (uint256 settled)
    {
        BlockAudit memory audit = _audits[blockHash];
        if (audit.complete) return 0;
        ILedger.StoredBlock memory stored = _storedBlock(blockHash);
        _checkBlockProof(stored, leafHashes);
        _checkHolds(stored, holds);

        Releases memory releases = _newReleases(stored.approvedCount);
        if (audit.settled == 0 && audit.rejected == 0) {
            // Nothing settled or rejected yet: every hold is open, in order.
            settled = stored.approvedCount;
            _releaseHolds(releases, holds, 0, settled);
        } else {
            settled = _settleOpen(blockHash, stored.recordCount, holds, releases);
        }
        // At most 1024 records per block, so the count fits.
        audit.settled += uint32(settled);
        _store(blockHash, audit, stored.approvedCount);

        _releaseAll(releases);
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
        emit RecordSettled(blockHash, uint32(index), record.merchant, record.amount);
        BlockAudit memory audit = _audits[blockHash];
        audit.settled += 1;
        _store(blockHash, audit, stored.approvedCount);

        ledger.release(_single(record.merchant), _single(record.amount));
        return true;
    }

    /// @inheritdoc ISettlementAudit
    function rejectRecord(
        bytes32 blockHash,
        uint256 index,
        bytes calldata leaf,
        bytes32[] calldata proof,
        bytes calldata holds
    ) external onlyRole(AUDITOR_ROLE) {
        ILedger.StoredBlock memory stored = _storedBlock(blockHash);
        if (_proofMatches(stored, index, leaf, proof)) revert AuditProofMatches(blockHash, index);
        if (!ledger.isApproved(blockHash, index)) revert AuditNotApproved(blockHash, index);
        if (_isResolved(blockHash, index)) revert AuditAlreadyResolved(blockHash, index);
        _checkHolds(stored, holds);

        _resolve(blockHash, index);
        _rejectedBits[blockHash][index >> 8] |= 1 << (index & 0xff);
        (address payer, address merchant, uint64 amount) = _reject(blockHash, index, holds);
        BlockAudit memory audit = _audits[blockHash];
        audit.rejected += 1;
        _store(blockHash, audit, stored.approvedCount);

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

    function _checkHolds(ILedger.StoredBlock memory stored, bytes calldata holds) private pure {
        uint256 expected = uint256(stored.approvedCount) * SettlementRecords.HOLD_LENGTH;
        if (holds.length != expected) revert AuditMalformedHolds(holds.length, expected);

        bytes32 digest = SettlementRecords.chainHolds(0, holds);
        if (digest != stored.holdsDigest) revert AuditHoldsMismatch(stored.holdsDigest, digest);
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

    /// @dev Marks every approved, open record settled, 256 at a time, and sums what each
    /// merchant is owed: the path of a block some of whose records were settled or
    /// rejected one by one before.
    function _settleOpen(
        bytes32 blockHash,
        uint256 count,
        bytes calldata holds,
        Releases memory releases
    ) private returns (uint256 settled) {
        uint256 hold = 0;
        for (uint256 word = 0; word << 8 < count; ++word) {
            uint256 end = count - (word << 8) < 256 ? count - (word << 8) : 256;
            uint256 opened;
            (opened, hold) = _settleWord(blockHash, word, end, holds, hold, releases);
            if (opened != 0) {
                _resolvedBits[blockHash][word] |= opened;
                settled += _popCount(opened);
            }
        }
    }

    /// @dev Releases what a block audit owes, in one call to the Ledger.
    function _releaseAll(Releases memory releases) private {
        if (releases.entries == 0) return;
        address[] memory merchants = releases.merchants;
        uint256[] memory amounts = releases.amounts;
        uint256 entries = releases.entries;
        // Shrinking a memory array in place is safe: its tail is simply never read.
        assembly ("memory-safe") {
            mstore(merchants, entries)
            mstore(amounts, entries)
        }
        ledger.release(merchants, amounts);
    }

    /// @dev Adds the open records of one 256-record word to `releases`, reading the
    /// Ledger's rejections and this contract's resolutions once. The holds list only
    /// approved records, so `hold` counts approved positions, open or not.
    /// @return opened The bits of the records settled.
    /// @return next The position in the holds list of the next word's first approved record.
    function _settleWord(
        bytes32 blockHash,
        uint256 word,
        uint256 end,
        bytes calldata holds,
        uint256 hold,
        Releases memory releases
    ) private view returns (uint256 opened, uint256 next) {
        uint256 rejected = ledger.rejectedBitsOf(blockHash, word);
        uint256 resolved = _resolvedBits[blockHash][word];
        for (uint256 bit = 0; bit < end; ++bit) {
            uint256 mask = 1 << bit;
            if (rejected & mask != 0) continue;
            if (resolved & mask == 0) {
                _releaseHolds(releases, holds, hold, hold + 1);
                opened |= mask;
            }
            ++hold;
        }
        next = hold;
    }

    /// @dev Adds holds `from` (inclusive) to `to` (exclusive) of the list to `releases`,
    /// each run of consecutive holds for one merchant summed first: adding a run at once
    /// gives the entries that adding its holds one by one would.
    function _releaseHolds(
        Releases memory releases,
        bytes calldata holds,
        uint256 from,
        uint256 to
    ) private pure {
        if (to > holds.length / SettlementRecords.HOLD_LENGTH) {
            revert AuditMalformedHolds(holds.length, to * SettlementRecords.HOLD_LENGTH);
        }
        if (from >= to) return;

        (address merchant, uint256 amount) = _holdAt(holds, from);
        // Cannot overflow: `hold` stays below `to`, and a run sums at most 1024 amounts
        // below 2**64.
        unchecked {
            for (uint256 hold = from + 1; hold < to; ++hold) {
                (address next, uint64 nextAmount) = _holdAt(holds, hold);
                if (next == merchant) {
                    amount += nextAmount;
                } else {
                    _addRelease(releases, merchant, amount);
                    (merchant, amount) = (next, nextAmount);
                }
            }
        }
        _addRelease(releases, merchant, amount);
    }

    /// @dev Adds `amount` to `merchant`'s entry among the last `MERCHANT_LOOKBACK` ones,
    /// or starts a new entry.
    function _addRelease(Releases memory releases, address merchant, uint256 amount)
        private
        pure
    {
        uint256 entries = releases.entries;
        uint256 first = entries > MERCHANT_LOOKBACK ? entries - MERCHANT_LOOKBACK : 0;
        for (uint256 j = entries; j > first; --j) {
            if (releases.merchants[j - 1] == merchant) {
                releases.amounts[j - 1] += amount;
                return;
            }
        }
        releases.merchants[entries] = merchant;
        releases.amounts[entries] = amount;
        releases.entries = entries + 1;
    }

    /// @dev Reads record `index`'s hold and reports its rejection; the caller refunds.
    function _reject(bytes32 blockHash, uint256 index, bytes calldata holds)
        private
        returns (address payer, address merchant, uint64 amount)
    {
        uint256 hold = index - _rejectedBefore(blockHash, index);
        uint256 o = hold * SettlementRecords.HOLD_LENGTH;
        // Slicing the terminal id checks that the hold lies inside the list.
        bytes8 terminalId = bytes8(holds[o:o + 8]);
        uint64 sequence = uint64(bytes8(holds[o + 8:o + 16]));
        (merchant, amount) = _holdAt(holds, hold);
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

    /// @dev Room for `capacity` entries: at most one per hold.
    function _newReleases(uint256 capacity) private pure returns (Releases memory) {
        return Releases(new address[](capacity), new uint256[](capacity), 0);
    }

    function _single(address merchant) private pure returns (address[] memory list) {
        list = new address[](1);
        list[0] = merchant;
    }

    function _single(uint64 amount) private pure returns (uint256[] memory list) {
        list = new uint256[](1);
        list[0] = amount;
    }

    /// @dev Number of set bits in `x`, one bit at a time: it runs once per 256 records,
    /// or on the rare audit rejection.
    function _popCount(uint256 x) private pure returns (uint256 n) {
        for (; x != 0; x &= x - 1) ++n;
    }
}
