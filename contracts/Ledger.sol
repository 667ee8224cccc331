// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

import {AccessControl} from "@openzeppelin/contracts/access/AccessControl.sol";
import {Pausable} from "@openzeppelin/contracts/utils/Pausable.sol";

import {AuditTree} from "./AuditTree.sol";
import {ILedger} from "./interfaces/ILedger.sol";
import {ITerminalRegistry} from "./interfaces/ITerminalRegistry.sol";
import {SettlementRecords} from "./SettlementRecords.sol";

/// @title Ledger
/// @notice Hash-linked settlement blocks with the payment rules (claims 4 and 5).
///
/// The model: operators open payer accounts (balance, daily limit, KYC and frozen flags,
/// birth date) and fund them; terminals are registered in the `TerminalRegistry`. The
/// bookkeeper appends blocks; each record of a block is checked against the rules in the
/// order of `StatusCode`, and an approved amount moves from the payer's balance to a
/// hold for the merchant. The audit module (`SettlementAudit`, holding `AUDIT_ROLE`)
/// later releases each hold to the merchant's credit or refunds it to the payer
/// (two-phase settlement); money is conserved: balances + holds + credits change only
/// by deposits.
///
/// NOTE: the Ledger does not verify RSA signatures when appending (the gateway does,
/// off chain); it binds each record to its signature through the leaf, which contains
/// the signature's SHA-256, and the records root.
contract Ledger is ILedger, AccessControl, Pausable {
    using SettlementRecords for bytes;

    /// @dev Per-record data the rules need from the chain, read once per block.
    struct Clock {
        uint64 now_;
        uint24 day;
        uint256 date;
    }

    bytes32 public constant OPERATOR_ROLE = keccak256("OPERATOR_ROLE");
    bytes32 public constant BOOKKEEPER_ROLE = keccak256("BOOKKEEPER_ROLE");
    bytes32 public constant AUDIT_ROLE = keccak256("AUDIT_ROLE");

    uint32 public constant BLOCK_VERSION = 1;
    uint256 public constant MAX_RECORDS = 1024;
    uint64 public constant MAX_CLOCK_SKEW = 300;
    uint64 public constant MAX_AMOUNT = type(uint64).max >> 1;

    uint8 internal constant FLAG_OPEN = 1;
    uint8 internal constant FLAG_KYC = 2;
    uint8 internal constant FLAG_FROZEN = 4;

    ITerminalRegistry public immutable registry;
    bytes3 public immutable currency;

    bytes32 private _head;
    uint64 private _height;
    uint64 private _headTimestamp;
    uint256 private _target;

    mapping(bytes32 blockHash => StoredBlock) private _blocks;
    // Rejections are the exception, so a block whose records all pass writes no bitmap.
    mapping(bytes32 blockHash => mapping(uint256 word => uint256 bits)) private _rejectedBits;
    mapping(address payer => Account) private _accounts;
    mapping(address merchant => uint256) private _held;
    mapping(address merchant => uint256) private _credit;
    mapping(bytes8 terminalId => uint64) private _lastSequence;
    mapping(uint16 goodsCategory => uint8 age) private _minimumAge;

    constructor(address admin, ITerminalRegistry registry_, bytes3 currency_, uint256 target_) {
        registry = registry_;
        currency = currency_;
        _target = target_;
        _grantRole(DEFAULT_ADMIN_ROLE, admin);
        _grantRole(OPERATOR_ROLE, admin);
    }


    /// @notice Opens an account for `payer`; requires the operator role.
    /// @dev Emits `AccountOpened`. `birthDate` is yyyymmdd, or 0 when unknown.
    function openAccount(address payer, uint64 dailyLimit, uint32 birthDate, bool kyc)
        external
        onlyRole(OPERATOR_ROLE)
    {
        if (payer == address(0) || _accounts[payer].flags & FLAG_OPEN != 0) {
            revert LedgerPayerExists(payer);
        }
        uint32 day = birthDate % 100;
        if (birthDate != 0 && (birthDate < 1900_01_01 || day == 0 || day > 31)) {
            revert LedgerBadBirthDate(birthDate);
        }

        _accounts[payer] = Account({
            balance: 0,
            spentToday: 0,
            spentDay: 0,
            dailyLimit: dailyLimit,
            birthDate: birthDate,
            flags: FLAG_OPEN | (kyc ? FLAG_KYC : 0)
        });
        emit AccountOpened(payer, dailyLimit, birthDate, kyc);
    }

    /// @notice Sets a payer's daily limit, KYC status and frozen flag; operator only.
    /// @dev Emits `AccountUpdated`.
    function updateAccount(address payer, uint64 dailyLimit, bool kyc, bool frozen)
        external
        onlyRole(OPERATOR_ROLE)
    {
        Account storage account = _openAccount(payer);

        account.dailyLimit = dailyLimit;
        account.flags = FLAG_OPEN | (kyc ? FLAG_KYC : 0) | (frozen ? FLAG_FROZEN : 0);
        emit AccountUpdated(payer, dailyLimit, kyc, frozen);
    }

    /// @notice Credits `amount` to `payer`'s balance; operator only.
    /// @dev Emits `Deposited`.
    function deposit(address payer, uint64 amount) external onlyRole(OPERATOR_ROLE) {
        Account storage account = _openAccount(payer);
        if (amount == 0) revert LedgerZeroDeposit(payer);
        uint64 balance = account.balance;
        if (amount > type(uint64).max - balance) {
            revert LedgerBalanceOverflow(payer, balance, amount);
        }

        account.balance = balance + amount;
        emit Deposited(payer, amount, balance + amount);
    }


    /// @notice Sets the difficulty target blocks must meet; operator only.
    function setTarget(uint256 target_) external onlyRole(OPERATOR_ROLE) {
        _target = target_;
        emit TargetChanged(target_);
    }

    /// @notice Sets the minimum payer age for a goods category (0 lifts it); operator only.
    function setMinimumAge(uint16 goodsCategory, uint8 age) external onlyRole(OPERATOR_ROLE) {
        _minimumAge[goodsCategory] = age;
        emit MinimumAgeChanged(goodsCategory, age);
    }

    /// @notice Stops appends until `unpause`; operator only.
    function pause() external onlyRole(OPERATOR_ROLE) {
        _pause();
    }

    /// @notice Lets appends resume; operator only.
    function unpause() external onlyRole(OPERATOR_ROLE) {
        _unpause();
    }


    /// @inheritdoc ILedger
    function appendBlock(BlockHeader calldata header, bytes calldata leaves)
        external
        onlyRole(BOOKKEEPER_ROLE)
        whenNotPaused
        returns (bytes32 blockHash)
    {
        uint256 count = _checkLeaves(header, leaves);
        blockHash = _checkHeader(header);

        uint64 height = _height + 1;
        _head = blockHash;
        _height = height;
        _headTimestamp = header.timestamp;
        emit BlockValidated(
            blockHash, height, header.prevHash, header.recordsRoot, header.recordCount
        );

        (uint32 approved, bytes32 holdsDigest) = _settleRecords(blockHash, leaves, count);
        _blocks[blockHash] = StoredBlock({
            recordsRoot: header.recordsRoot,
            recordCount: header.recordCount,
            approvedCount: approved,
            height: height,
            timestamp: header.timestamp,
            holdsDigest: holdsDigest
        });
    }


    /// @inheritdoc ILedger
    function release(address[] calldata merchants, uint256[] calldata amounts)
        external
        onlyRole(AUDIT_ROLE)
    {
        if (merchants.length != amounts.length) {
            revert LedgerReleaseLengths(merchants.length, amounts.length);
        }

        for (uint256 i = 0; i < merchants.length; ++i) {
            _takeHold(merchants[i], amounts[i]);
            _credit[merchants[i]] += amounts[i];
            emit HoldReleased(merchants[i], amounts[i]);
        }
    }

    /// @inheritdoc ILedger
    function refund(address payer, address merchant, uint64 amount)
        external
        onlyRole(AUDIT_ROLE)
    {
        Account storage account = _openAccount(payer);
        uint64 balance = account.balance;
        if (amount > type(uint64).max - balance) {
            revert LedgerBalanceOverflow(payer, balance, amount);
        }

        _takeHold(merchant, amount);
        account.balance = balance + amount;
        emit HoldRefunded(payer, merchant, amount);
    }


    /// @notice Hash and height of the newest block (zero before the first).
    function head() external view returns (bytes32 blockHash, uint64 height) {
        return (_head, _height);
    }

    /// @inheritdoc ILedger
    function blockOf(bytes32 blockHash) external view returns (StoredBlock memory) {
        return _blocks[blockHash];
    }

    /// @inheritdoc ILedger
    function isApproved(bytes32 blockHash, uint256 index) external view returns (bool) {
        if (index >= _blocks[blockHash].recordCount) return false;
        return _rejectedBits[blockHash][index >> 8] & (1 << (index & 0xff)) == 0;
    }

    /// @inheritdoc ILedger
    function rejectedBitsOf(bytes32 blockHash, uint256 word) external view returns (uint256) {
        return _rejectedBits[blockHash][word];
    }

    /// @notice The account of `payer`.
    function accountOf(address payer) external view returns (Account memory) {
        return _accounts[payer];
    }

    /// @notice The amount held for `merchant` until the audit releases it.
    function heldFor(address merchant) external view returns (uint256) {
        return _held[merchant];
    }

    /// @notice The amount the audit has released to `merchant`.
    function creditOf(address merchant) external view returns (uint256) {
        return _credit[merchant];
    }

    /// @notice The last sequence number accepted from `terminalId`.
    function lastSequenceOf(bytes8 terminalId) external view returns (uint64) {
        return _lastSequence[terminalId];
    }

    /// @notice The minimum payer age for `goodsCategory`.
    function minimumAgeOf(uint16 goodsCategory) external view returns (uint8) {
        return _minimumAge[goodsCategory];
    }

    /// @notice The difficulty target a block hash must not exceed.
    function target() external view returns (uint256) {
        return _target;
    }


    function _checkLeaves(BlockHeader calldata header, bytes calldata leaves)
        private
        pure
        returns (uint256 count)
    {
        if (leaves.length % SettlementRecords.LEAF_LENGTH != 0) {
            revert LedgerMalformedLeaves(leaves.length);
        }
        count = leaves.length / SettlementRecords.LEAF_LENGTH;
        if (count == 0 || count > MAX_RECORDS) revert LedgerRecordCount(count, MAX_RECORDS);
        if (header.recordCount != count) {
            revert LedgerRecordCountMismatch(header.recordCount, count);
        }

        bytes32[] memory leafHashes = new bytes32[](count);
        for (uint256 i = 0; i < count; ++i) {
            leafHashes[i] = AuditTree.hashLeafCalldata(_leafAt(leaves, i));
        }
        bytes32 root = AuditTree.rootOf(leafHashes);
        if (root != header.recordsRoot) revert LedgerRootMismatch(header.recordsRoot, root);
    }

    function _checkHeader(BlockHeader calldata header) private view returns (bytes32 blockHash) {
        if (header.version != BLOCK_VERSION) revert LedgerUnsupportedVersion(header.version);
        if (header.prevHash != _head) revert LedgerBlockNotLinked(_head, header.prevHash);
        if (header.target != _target) revert LedgerTargetMismatch(_target, header.target);
        uint64 latest = uint64(block.timestamp) + MAX_CLOCK_SKEW;
        if (header.timestamp < _headTimestamp || header.timestamp > latest) {
            revert LedgerHeaderTimestamp(header.timestamp, _headTimestamp, latest);
        }

        blockHash = sha256(abi.encodePacked(sha256(_encodeHeader(header))));
        if (uint256(blockHash) > header.target) {
            revert LedgerHashAboveTarget(blockHash, header.target);
        }
    }

    function _encodeHeader(BlockHeader calldata header) private pure returns (bytes memory) {
        return abi.encodePacked(
            header.version,
            header.prevHash,
            header.recordsRoot,
            header.recordCount,
            header.timestamp,
            header.target,
            header.nonce
        );
    }


    function _settleRecords(bytes32 blockHash, bytes calldata leaves, uint256 count)
        private
        returns (uint32 approved, bytes32 holdsDigest)
    {
        Clock memory clock = _clock();
        uint256 bits = 0;
        for (uint256 i = 0; i < count; ++i) {
            SettlementRecords.Record memory record = _leafAt(leaves, i).decode();
            StatusCode code = _applyRules(record, clock);
            if (code == StatusCode.Approved) {
                ++approved;
                holdsDigest = SettlementRecords.chainHold(holdsDigest, record);
                emit TransactionApproved(
                    record.terminalId, record.payer, record.merchant, blockHash, uint32(i),
                    record.sequence, record.amount
                );
            } else {
                bits |= 1 << (i & 0xff);
                emit TransactionRejected(
                    record.terminalId, record.payer, code, blockHash, uint32(i),
                    record.sequence, record.amount
                );
            }

            if (i & 0xff == 0xff || i + 1 == count) {
                if (bits != 0) _rejectedBits[blockHash][i >> 8] = bits;
                bits = 0;
            }
        }
    }

    /// @dev Runs the rules in `StatusCode` order; on approval moves the amount to the
    /// merchant's hold. State changes only once the sequence check has passed.
    function _applyRules(SettlementRecords.Record memory record, Clock memory clock)
        private
        returns (StatusCode)
    {
        if (record.chainId != block.chainid || record.ledger != address(this)) {
            return StatusCode.WrongDomain;
        }
        (address merchant, bool active) = registry.terminalStatus(record.terminalId);
        if (merchant == address(0)) return StatusCode.UnknownTerminal;
        if (!active) return StatusCode.TerminalInactive;
        if (merchant != record.merchant) return StatusCode.MerchantMismatch;
        if (record.sequence <= _lastSequence[record.terminalId]) return StatusCode.SequenceNotAbove;

        _lastSequence[record.terminalId] = record.sequence;
        StatusCode code = _checkPayment(record, clock);
        if (code == StatusCode.Approved) _hold(record, clock);
        return code;
    }

    function _checkPayment(SettlementRecords.Record memory record, Clock memory clock)
        private
        view
        returns (StatusCode)
    {
        if (record.amount == 0 || record.amount > MAX_AMOUNT) return StatusCode.AmountOutOfRange;
        if (record.currency != currency) return StatusCode.WrongCurrency;
        if (record.timestamp > clock.now_ + MAX_CLOCK_SKEW) return StatusCode.TimestampInFuture;
        if (record.validUntil < clock.now_) return StatusCode.Expired;

        Account memory account = _accounts[record.payer];
        // slither-disable-next-line incorrect-equality (a flag bit test)
        if (account.flags & FLAG_OPEN == 0) return StatusCode.UnknownPayer;
        if (account.flags & FLAG_FROZEN != 0) return StatusCode.PayerFrozen;
        // slither-disable-next-line incorrect-equality (a flag bit test)
        if (account.flags & FLAG_KYC == 0) return StatusCode.PayerNotKyc;
        if (!_oldEnough(account.birthDate, _minimumAge[record.goodsCategory], clock.date)) {
            return StatusCode.UnderAge;
        }
        if (record.amount > account.balance) return StatusCode.InsufficientBalance;
        // slither-disable-next-line incorrect-equality (the same UTC day is the rule)
        uint256 spent = account.spentDay == clock.day ? account.spentToday : 0;
        if (spent + record.amount > account.dailyLimit) return StatusCode.DailyLimitExceeded;
        return StatusCode.Approved;
    }

    function _hold(SettlementRecords.Record memory record, Clock memory clock) private {
        Account storage account = _accounts[record.payer];
        // Cannot underflow or overflow: _checkPayment proved amount <= balance and
        // spentToday + amount <= dailyLimit, a uint64.
        unchecked {
            // slither-disable-next-line incorrect-equality (the same UTC day is the rule)
            uint64 spent = account.spentDay == clock.day ? account.spentToday : 0;
            account.balance -= record.amount;
            account.spentToday = spent + record.amount;
        }
        account.spentDay = clock.day;
        _held[record.merchant] += record.amount;
    }

    function _clock() private view returns (Clock memory) {
        return Clock({
            now_: uint64(block.timestamp),
            day: uint24(block.timestamp / 1 days),
            date: _civilDate(block.timestamp)
        });
    }

    /// @dev Age in whole years by comparing yyyymmdd numbers: exact on birthdays, and a
    /// 29 February birthday counts on 1 March in common years.
    function _oldEnough(uint32 birthDate, uint8 minimumAge, uint256 today)
        private
        pure
        returns (bool)
    {
        if (minimumAge == 0) return true;
        // slither-disable-next-line incorrect-equality (0 means no birth date on file)
        if (birthDate == 0) return false;
        return today >= birthDate && today - birthDate >= uint256(minimumAge) * 10_000;
    }

    /// @dev Gregorian yyyymmdd of a Unix timestamp (days-to-civil of the proleptic
    /// calendar, written for unsigned inputs since timestamps are never negative).
    // slither-disable-next-line divide-before-multiply (each division is a meant floor)
    function _civilDate(uint256 timestamp) private pure returns (uint256) {
        uint256 z = timestamp / 1 days + 719_468;
        uint256 era = z / 146_097;
        uint256 doe = z - era * 146_097;
        uint256 yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        uint256 doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        uint256 mp = (5 * doy + 2) / 153;
        uint256 day = doy - (153 * mp + 2) / 5 + 1;
        uint256 month = mp < 10 ? mp + 3 : mp - 9;
        uint256 year = yoe + era * 400 + (month <= 2 ? 1 : 0);
        return year * 10_000 + month * 100 + day;
    }

    function _takeHold(address merchant, uint256 amount) private {
        uint256 held = _held[merchant];
        if (amount > held) revert LedgerHoldTooSmall(merchant, held, amount);

        // Cannot underflow: checked just above.
        unchecked {
            _held[merchant] = held - amount;
        }
    }

    function _openAccount(address payer) private view returns (Account storage account) {
        account = _accounts[payer];
        if (account.flags & FLAG_OPEN == 0) revert LedgerUnknownPayer(payer);
    }

    function _leafAt(bytes calldata leaves, uint256 index) private pure returns (bytes calldata) {
        uint256 start = index * SettlementRecords.LEAF_LENGTH;
        return leaves[start:start + SettlementRecords.LEAF_LENGTH];
    }
}
