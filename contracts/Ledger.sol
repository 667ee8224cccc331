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

    /// @dev The terminals of one block, kept in memory while its records are settled: a
    /// direct-mapped table of `TERMINAL_SLOTS` slots, each holding one terminal's
    /// registry answer (`entries`: terminal id, merchant, flags) and its `states`: the
    /// last sequence number (with `SEQUENCE_DIRTY` once raised) and, from `HELD_SHIFT`
    /// up, the amount approved for its merchant. A slot goes back to storage when another
    /// terminal takes it, or at the end of the block; `order` lists the slots in use.
    /// Each hold written back is a release of the block, chained into `releasesDigest`.
    ///
    /// The registry cannot change during an append (the Ledger only reads it), so its
    /// answer holds for the whole block. Measured on anvil, 256-record block of 8
    /// terminals: asking the registry and updating `_lastSequence` and `_held` for every
    /// record cost ~1,700 gas per record more.
    struct TerminalCache {
        uint256[] entries;
        uint256[] states;
        uint256[] order;
        uint256 used;
        bytes32 blockHash;
        bytes32 releasesDigest;
    }

    /// @dev What the rules read besides the record and its payer: the chain's clock, read
    /// once per block (`latest`: the newest record timestamp accepted), and the minimum
    /// age of goods category `category`, the category of a record before (`NO_CATEGORY`
    /// at first). Ages change only in other transactions.
    struct Context {
        uint64 now_;
        uint256 latest;
        uint24 day;
        uint256 date;
        uint256 category;
        uint8 minimumAge;
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

    // Bit offsets of the `Account` fields in its storage word, where Solidity would put
    // them (first field lowest); `balance` starts at bit 0.
    uint256 private constant SPENT_TODAY_SHIFT = 64;
    uint256 private constant SPENT_DAY_SHIFT = 128;
    uint256 private constant DAILY_LIMIT_SHIFT = 152;
    uint256 private constant BIRTH_DATE_SHIFT = 216;
    uint256 private constant FLAGS_SHIFT = 248;
    /// @dev The bits an approval leaves alone: daily limit, birth date and flags.
    uint256 private constant ACCOUNT_FIXED_BITS = type(uint256).max << DAILY_LIMIT_SHIFT;

    /// @dev No goods category: `Context.category` before the first record.
    uint256 private constant NO_CATEGORY = type(uint256).max;

    uint256 private constant TERMINAL_SLOTS = 64;
    uint256 private constant TERMINAL_SLOT_BITS = 6;
    /// @dev 2**64 divided by the golden ratio, odd: ids that differ in any byte spread.
    uint64 private constant TERMINAL_HASH = 0x9E3779B97F4A7C15;
    uint256 private constant ENTRY_USED = 1;
    uint256 private constant ENTRY_ACTIVE = 2;
    uint256 private constant ENTRY_MERCHANT_SHIFT = 32;
    uint256 private constant SEQUENCE_DIRTY = 1 << 64;
    uint256 private constant HELD_SHIFT = 128;

    ITerminalRegistry public immutable registry;
    bytes3 public immutable currency;

    bytes32 private _head;
    uint64 private _height;
    uint64 private _headTimestamp;
    uint256 private _target;

    mapping(bytes32 blockHash => StoredBlock) private _blocks;
    // Rejections are the exception, so a block whose records all pass writes no bitmap.
    mapping(bytes32 blockHash => mapping(uint256 word => uint256 bits)) private _rejectedBits;
    // An `Account` packed by hand into the word Solidity would store for it, so that an
    // approval reads and writes its payer's slot once: three field writes cost ~430 gas
    // more per record (measured on anvil, 256-record block).
    mapping(address payer => uint256 account) private _accounts;
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
        if (payer == address(0) || (_accounts[payer] >> FLAGS_SHIFT) & FLAG_OPEN != 0) {
            revert LedgerPayerExists(payer);
        }
        uint32 day = birthDate % 100;
        if (birthDate != 0 && (birthDate < 1900_01_01 || day == 0 || day > 31)) {
            revert LedgerBadBirthDate(birthDate);
        }

        _accounts[payer] = _packAccount(
            Account({
                balance: 0,
                spentToday: 0,
                spentDay: 0,
                dailyLimit: dailyLimit,
                birthDate: birthDate,
                flags: FLAG_OPEN | (kyc ? FLAG_KYC : 0)
            })
        );
        emit AccountOpened(payer, dailyLimit, birthDate, kyc);
    }

    /// @notice Sets a payer's daily limit, KYC status and frozen flag; operator only.
    /// @dev Emits `AccountUpdated`.
    function updateAccount(address payer, uint64 dailyLimit, bool kyc, bool frozen)
        external
        onlyRole(OPERATOR_ROLE)
    {
        Account memory account = _openAccount(payer);

        account.dailyLimit = dailyLimit;
        account.flags = FLAG_OPEN | (kyc ? FLAG_KYC : 0) | (frozen ? FLAG_FROZEN : 0);
        _accounts[payer] = _packAccount(account);
        emit AccountUpdated(payer, dailyLimit, kyc, frozen);
    }

    /// @notice Credits `amount` to `payer`'s balance; operator only.
    /// @dev Emits `Deposited`.
    function deposit(address payer, uint64 amount) external onlyRole(OPERATOR_ROLE) {
        Account memory account = _openAccount(payer);
        if (amount == 0) revert LedgerZeroDeposit(payer);
        uint64 balance = account.balance;
        if (amount > type(uint64).max - balance) {
            revert LedgerBalanceOverflow(payer, balance, amount);
        }

        account.balance = balance + amount;
        _accounts[payer] = _packAccount(account);
        emit Deposited(payer, amount, balance + amount);
    }


    /// @inheritdoc ILedger
    function recordNetworkState(bool congested, uint64 blockRate, uint64 linkRate)
        external
        onlyRole(BOOKKEEPER_ROLE)
    {
        emit NetworkStateChanged(congested, blockRate, linkRate);
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

        (uint32 approved, bytes32 settlementDigest) = _settleRecords(blockHash, leaves, count);
        _blocks[blockHash] = StoredBlock({
            recordsRoot: header.recordsRoot,
            recordCount: header.recordCount,
            approvedCount: approved,
            height: height,
            timestamp: header.timestamp,
            settlementDigest: settlementDigest
        });
    }


    /// @inheritdoc ILedger
    function release(Release[] calldata releases) external onlyRole(AUDIT_ROLE) {
        for (uint256 i = 0; i < releases.length; ++i) {
            (address merchant, uint256 amount) = (releases[i].merchant, releases[i].amount);
            _takeHold(merchant, amount);
            _credit[merchant] += amount;
            emit HoldReleased(merchant, amount);
        }
    }

    /// @inheritdoc ILedger
    function refund(address payer, address merchant, uint64 amount)
        external
        onlyRole(AUDIT_ROLE)
    {
        Account memory account = _openAccount(payer);
        uint64 balance = account.balance;
        if (amount > type(uint64).max - balance) {
            revert LedgerBalanceOverflow(payer, balance, amount);
        }

        _takeHold(merchant, amount);
        account.balance = balance + amount;
        _accounts[payer] = _packAccount(account);
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
        return _unpackAccount(_accounts[payer]);
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

        bytes32 root = AuditTree.rootOf(
            AuditTree.hashLeavesCalldata(leaves, SettlementRecords.LEAF_LENGTH)
        );
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


    /// @dev Runs the rules on every record; returns the approved count and the settlement
    /// digest (see {ILedger-StoredBlock}). `digest` chains the holds while the records
    /// run, then takes in the releases.
    function _settleRecords(bytes32 blockHash, bytes calldata leaves, uint256 count)
        private
        returns (uint32 approved, bytes32 digest)
    {
        Context memory context = _context();
        TerminalCache memory terminals = _newTerminalCache(blockHash);
        // slither-disable-next-line uninitialized-local (decodeInto fills it for each record)
        SettlementRecords.Record memory record;
        uint256 bits = 0;
        for (uint256 i = 0; i < count; ++i) {
            _leafAt(leaves, i).decodeInto(record);
            StatusCode code = _applyRules(record, context, terminals);
            // slither-disable-next-line incorrect-equality (an outcome, not a time)
            if (code == StatusCode.Approved) {
                // Cannot overflow: at most MAX_RECORDS records.
                unchecked {
                    ++approved;
                }
                digest = SettlementRecords.chainHold(digest, record);
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

            // The bits of a word are stored at its last record, or the block's.
            if (bits != 0 && (i & 0xff == 0xff || i + 1 == count)) {
                _rejectedBits[blockHash][i >> 8] = bits;
                bits = 0;
            }
        }
        _writeBackAll(terminals);
        digest = keccak256(abi.encodePacked(digest, terminals.releasesDigest));
    }

    /// @dev Runs the rules in `StatusCode` order; on approval moves the amount from the
    /// payer's balance to the terminal's slot, held for its merchant. State changes only
    /// once the sequence check has passed.
    function _applyRules(
        SettlementRecords.Record memory record,
        Context memory context,
        TerminalCache memory terminals
    ) private returns (StatusCode code) {
        if (record.chainId != block.chainid || record.ledger != address(this)) {
            return StatusCode.WrongDomain;
        }
        (uint256 slot, uint256 entry) = _terminalSlot(terminals, record.terminalId);
        address merchant = address(uint160(entry >> ENTRY_MERCHANT_SHIFT));
        if (merchant == address(0)) return StatusCode.UnknownTerminal;
        // slither-disable-next-line incorrect-equality (a flag bit test)
        if (entry & ENTRY_ACTIVE == 0) return StatusCode.TerminalInactive;
        if (merchant != record.merchant) return StatusCode.MerchantMismatch;
        uint256 state = terminals.states[slot];
        if (record.sequence <= uint64(state)) return StatusCode.SequenceNotAbove;

        uint256 account;
        (code, account) = _checkPayment(record, context);
        state = (state >> HELD_SHIFT << HELD_SHIFT) | SEQUENCE_DIRTY | record.sequence;
        // slither-disable-next-line incorrect-equality (an outcome, not a time)
        if (code == StatusCode.Approved) {
            _accounts[record.payer] = account;
            // At most 1024 amounts below 2**63 per block: the sum stays below 2**73.
            unchecked {
                state += uint256(record.amount) << HELD_SHIFT;
            }
        }
        terminals.states[slot] = state;
    }

    /// @dev The payment rules, on the payer's account read once. On approval, returns
    /// the packed account as the approval leaves it: the amount taken from the balance
    /// and added to the day's spending.
    function _checkPayment(SettlementRecords.Record memory record, Context memory context)
        private
        view
        returns (StatusCode, uint256 account)
    {
        uint64 amount = record.amount;
        if (amount == 0 || amount > MAX_AMOUNT) return (StatusCode.AmountOutOfRange, 0);
        if (record.currency != currency) return (StatusCode.WrongCurrency, 0);
        if (record.timestamp > context.latest) return (StatusCode.TimestampInFuture, 0);
        if (record.validUntil < context.now_) return (StatusCode.Expired, 0);

        account = _accounts[record.payer];
        uint256 flags = account >> FLAGS_SHIFT;
        // slither-disable-next-line incorrect-equality (a flag bit test)
        if (flags & FLAG_OPEN == 0) return (StatusCode.UnknownPayer, account);
        if (flags & FLAG_FROZEN != 0) return (StatusCode.PayerFrozen, account);
        // slither-disable-next-line incorrect-equality (a flag bit test)
        if (flags & FLAG_KYC == 0) return (StatusCode.PayerNotKyc, account);
        uint32 birthDate = uint32(account >> BIRTH_DATE_SHIFT);
        uint8 minimumAge = _minimumAgeOf(context, record.goodsCategory);
        if (minimumAge != 0 && !_oldEnough(birthDate, minimumAge, context.date)) {
            return (StatusCode.UnderAge, account);
        }
        uint64 balance = uint64(account);
        if (amount > balance) return (StatusCode.InsufficientBalance, account);
        uint256 spent;
        // Cannot overflow: a uint64 plus an amount below 2**63.
        unchecked {
            spent = _spentOn(account, context.day) + amount;
        }
        if (spent > uint64(account >> DAILY_LIMIT_SHIFT)) {
            return (StatusCode.DailyLimitExceeded, account);
        }

        // Cannot underflow: amount <= balance, checked above.
        unchecked {
            balance -= amount;
        }
        account = (account & ACCOUNT_FIXED_BITS)
            | balance
            | (spent << SPENT_TODAY_SHIFT)
            | (uint256(context.day) << SPENT_DAY_SHIFT);
        return (StatusCode.Approved, account);
    }

    /// @dev What the payer of the packed `account` has spent on UTC day `day`.
    function _spentOn(uint256 account, uint24 day) private pure returns (uint256) {
        // slither-disable-next-line incorrect-equality (the same UTC day is the rule)
        if (uint24(account >> SPENT_DAY_SHIFT) == day) return uint64(account >> SPENT_TODAY_SHIFT);
        return 0;
    }

    function _newTerminalCache(bytes32 blockHash) private pure returns (TerminalCache memory) {
        return TerminalCache({
            entries: new uint256[](TERMINAL_SLOTS),
            states: new uint256[](TERMINAL_SLOTS),
            order: new uint256[](TERMINAL_SLOTS),
            used: 0,
            blockHash: blockHash,
            releasesDigest: 0
        });
    }

    /// @dev The slot of `terminalId` in the cache, and its entry. On a miss, writes back
    /// the terminal that holds the slot, then loads the registry's answer and, for an
    /// active terminal, its last sequence number.
    function _terminalSlot(TerminalCache memory terminals, bytes8 terminalId)
        private
        returns (uint256 slot, uint256 entry)
    {
        // Fibonacci hashing: the product wraps modulo 2**64, its top bits pick the slot.
        unchecked {
            slot = (uint64(terminalId) * TERMINAL_HASH) >> (64 - TERMINAL_SLOT_BITS);
        }
        entry = terminals.entries[slot];
        if (entry & ENTRY_USED != 0) {
            if (bytes8(bytes32(entry)) == terminalId) return (slot, entry);
            _writeBack(terminals, slot);
        } else {
            terminals.order[terminals.used++] = slot;
        }

        (address merchant, bool active) = registry.terminalStatus(terminalId);
        entry = uint256(bytes32(terminalId))
            | (uint256(uint160(merchant)) << ENTRY_MERCHANT_SHIFT)
            | (active ? ENTRY_ACTIVE : 0)
            | ENTRY_USED;
        terminals.entries[slot] = entry;
        terminals.states[slot] = active ? _lastSequence[terminalId] : 0;
    }

    /// @dev Stores what the terminal in `slot` changed: its last sequence number and its
    /// merchant's hold, which becomes one of the block's releases.
    function _writeBack(TerminalCache memory terminals, uint256 slot) private {
        uint256 entry = terminals.entries[slot];
        uint256 state = terminals.states[slot];
        if (state & SEQUENCE_DIRTY != 0) _lastSequence[bytes8(bytes32(entry))] = uint64(state);
        uint256 held = state >> HELD_SHIFT;
        if (held == 0) return;

        address merchant = address(uint160(entry >> ENTRY_MERCHANT_SHIFT));
        _held[merchant] += held;
        emit HoldPlaced(terminals.blockHash, merchant, held);
        terminals.releasesDigest =
            SettlementRecords.chainRelease(terminals.releasesDigest, merchant, held);
    }

    function _writeBackAll(TerminalCache memory terminals) private {
        for (uint256 k = 0; k < terminals.used; ++k) {
            _writeBack(terminals, terminals.order[k]);
        }
    }

    function _context() private view returns (Context memory) {
        return Context({
            now_: uint64(block.timestamp),
            latest: block.timestamp + MAX_CLOCK_SKEW,
            day: uint24(block.timestamp / 1 days),
            date: _civilDate(block.timestamp),
            category: NO_CATEGORY,
            minimumAge: 0
        });
    }

    /// @dev The minimum age of `category`, read from storage only when it differs from
    /// the category of the record before. Measured on anvil, 256-record block of one
    /// category: reading it for every record cost ~105 gas per record more.
    function _minimumAgeOf(Context memory context, uint16 category) private view returns (uint8) {
        if (context.category != category) {
            context.category = category;
            context.minimumAge = _minimumAge[category];
        }
        return context.minimumAge;
    }

    /// @dev Age in whole years by comparing yyyymmdd numbers: exact on birthdays, and a
    /// 29 February birthday counts on 1 March in common years.
    function _oldEnough(uint32 birthDate, uint8 minimumAge, uint256 today)
        private
        pure
        returns (bool)
    {
        // slither-disable-next-line incorrect-equality (0 means no minimum age)
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

    function _openAccount(address payer) private view returns (Account memory account) {
        account = _unpackAccount(_accounts[payer]);
        // slither-disable-next-line incorrect-equality (a flag bit test)
        if (account.flags & FLAG_OPEN == 0) revert LedgerUnknownPayer(payer);
    }

    function _packAccount(Account memory account) private pure returns (uint256) {
        return uint256(account.balance)
            | (uint256(account.spentToday) << SPENT_TODAY_SHIFT)
            | (uint256(account.spentDay) << SPENT_DAY_SHIFT)
            | (uint256(account.dailyLimit) << DAILY_LIMIT_SHIFT)
            | (uint256(account.birthDate) << BIRTH_DATE_SHIFT)
            | (uint256(account.flags) << FLAGS_SHIFT);
    }

    function _unpackAccount(uint256 account) private pure returns (Account memory) {
        return Account({
            balance: uint64(account),
            spentToday: uint64(account >> SPENT_TODAY_SHIFT),
            spentDay: uint24(account >> SPENT_DAY_SHIFT),
            dailyLimit: uint64(account >> DAILY_LIMIT_SHIFT),
            birthDate: uint32(account >> BIRTH_DATE_SHIFT),
            flags: uint8(account >> FLAGS_SHIFT)
        });
    }

    function _leafAt(bytes calldata leaves, uint256 index) private pure returns (bytes calldata) {
        uint256 start;
        uint256 end;
        // Cannot overflow: index < MAX_RECORDS, so both stay below 2**18.
        unchecked {
            start = index * SettlementRecords.LEAF_LENGTH;
            end = start + SettlementRecords.LEAF_LENGTH;
        }
        return leaves[start:end];
    }
}
