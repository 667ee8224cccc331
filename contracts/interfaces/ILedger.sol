// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

/// @title ILedger
/// @notice Settlement blocks of POS records (claims 4 and 5). A bookkeeper appends
/// blocks whose header links to the current head and whose double SHA-256 is not above
/// the difficulty target; every record of an accepted block then runs through the rules
/// and is approved (its amount moves from the payer's balance to a hold for the
/// merchant) or rejected with a status code. A rejected record never reverts the block.
interface ILedger {
    /// @notice Outcome of the rules for one record; mirrored by `posaudit.rules.StatusCode`.
    /// @dev Checked in this order; from `SequenceNotAbove` on, the record's sequence
    /// number is consumed, so neither it nor an earlier one can be submitted again.
    enum StatusCode {
        Approved,
        WrongDomain,
        UnknownTerminal,
        TerminalInactive,
        MerchantMismatch,
        SequenceNotAbove,
        AmountOutOfRange,
        WrongCurrency,
        TimestampInFuture,
        Expired,
        UnknownPayer,
        PayerFrozen,
        PayerNotKyc,
        UnderAge,
        InsufficientBalance,
        DailyLimitExceeded,
        ProofMismatch
    }

    /// @notice Header of a settlement block; hashed packed, 120 bytes, in field order.
    struct BlockHeader {
        uint32 version;
        bytes32 prevHash;
        bytes32 recordsRoot;
        uint32 recordCount;
        uint64 timestamp;
        uint256 target;
        uint64 nonce;
    }

    /// @notice What the Ledger keeps of an accepted block.
    /// @dev `settlementDigest` is keccak256 of two digests the Ledger computes from the
    /// same leaves as the records root, in the same transaction: the holds digest, which
    /// chains record by record what each approved record holds (see
    /// {SettlementRecords-chainHold}), and the releases digest, which chains what the
    /// block holds for each merchant (see {SettlementRecords-chainRelease}). The audit
    /// trusts a list that reproduces one digest, given the other: the releases to settle
    /// a whole block, the holds to reject one record. Anyone can rebuild both lists
    /// from the block's events: `TransactionApproved` and `HoldPlaced`.
    struct StoredBlock {
        bytes32 recordsRoot;
        uint32 recordCount;
        uint32 approvedCount;
        uint64 height;
        uint64 timestamp;
        bytes32 settlementDigest;
    }

    /// @notice An amount a block holds for a merchant, as one `HoldPlaced` reports it.
    struct Release {
        address merchant;
        uint256 amount;
    }

    /// @notice A payer's account, packed into one storage slot.
    /// @dev `spentToday` counts approved amounts of UTC day `spentDay` (days since epoch);
    /// `birthDate` is yyyymmdd (0 when unknown); `flags` holds OPEN, KYC and FROZEN.
    struct Account {
        uint64 balance;
        uint64 spentToday;
        uint24 spentDay;
        uint64 dailyLimit;
        uint32 birthDate;
        uint8 flags;
    }

    /// @notice Emitted when a block is accepted and becomes the head.
    event BlockValidated(
        bytes32 indexed blockHash,
        uint64 indexed height,
        bytes32 prevHash,
        bytes32 recordsRoot,
        uint32 recordCount
    );

    /// @notice Emitted when a record passes the rules and its amount is held.
    event TransactionApproved(
        bytes8 indexed terminalId,
        address indexed payer,
        address indexed merchant,
        bytes32 blockHash,
        uint32 index,
        uint64 sequence,
        uint64 amount
    );

    /// @notice Emitted when a record breaks a rule; `code` says which.
    event TransactionRejected(
        bytes8 indexed terminalId,
        address indexed payer,
        StatusCode indexed code,
        bytes32 blockHash,
        uint32 index,
        uint64 sequence,
        uint64 amount
    );

    /// @notice Emitted when a block's approved records put `amount` on hold for
    /// `merchant`: once per terminal of the block, after its records, in the order the
    /// releases digest chains them.
    event HoldPlaced(bytes32 indexed blockHash, address indexed merchant, uint256 amount);

    /// @notice Emitted when the audit releases held money to a merchant.
    event HoldReleased(address indexed merchant, uint256 amount);

    /// @notice Emitted when the audit returns a held amount to the payer.
    event HoldRefunded(address indexed payer, address indexed merchant, uint64 amount);

    /// @notice Emitted when an operator opens a payer account.
    event AccountOpened(address indexed payer, uint64 dailyLimit, uint32 birthDate, bool kyc);

    /// @notice Emitted when a payer's KYC, frozen flag or daily limit changes.
    event AccountUpdated(address indexed payer, uint64 dailyLimit, bool kyc, bool frozen);

    /// @notice Emitted when money is deposited to a payer's balance.
    event Deposited(address indexed payer, uint64 amount, uint64 balance);

    /// @notice Emitted when the difficulty target changes.
    event TargetChanged(uint256 target);

    /// @notice Emitted when the bookkeeper's network monitor changes state (claim 6):
    /// from here on, blocks carry one record (normal) or aggregate n (congested).
    /// @param blockRate Settlement blocks per 1,000 seconds the monitor measured.
    /// @param linkRate Bytes per second on the busiest link the monitor measured.
    event NetworkStateChanged(bool indexed congested, uint64 blockRate, uint64 linkRate);

    /// @notice Emitted when the minimum age of a goods category changes.
    event MinimumAgeChanged(uint16 indexed goodsCategory, uint8 age);

    /// @notice Thrown when the header's version is not `BLOCK_VERSION`.
    error LedgerUnsupportedVersion(uint32 version);

    /// @notice Thrown when the header does not link to the current head.
    error LedgerBlockNotLinked(bytes32 expected, bytes32 got);

    /// @notice Thrown when the header's target is not the Ledger's current target.
    error LedgerTargetMismatch(uint256 expected, uint256 got);

    /// @notice Thrown when the block hash is numerically above the target.
    error LedgerHashAboveTarget(bytes32 blockHash, uint256 target);

    /// @notice Thrown when the header's timestamp is before its parent's or in the future.
    error LedgerHeaderTimestamp(uint64 timestamp, uint64 earliest, uint64 latest);

    /// @notice Thrown when the leaves are not a whole number of 165-byte leaves.
    error LedgerMalformedLeaves(uint256 length);

    /// @notice Thrown when a block holds no record or more than `MAX_RECORDS`.
    error LedgerRecordCount(uint256 count, uint256 maximum);

    /// @notice Thrown when the header's record count differs from the leaves submitted.
    error LedgerRecordCountMismatch(uint32 header, uint256 leaves);

    /// @notice Thrown when the header's records root is not the root of the leaves.
    error LedgerRootMismatch(bytes32 header, bytes32 computed);

    /// @notice Thrown when an account operation names a payer without an account.
    error LedgerUnknownPayer(address payer);

    /// @notice Thrown when an account is opened twice or for the zero address.
    error LedgerPayerExists(address payer);

    /// @notice Thrown when a deposit of zero is made.
    error LedgerZeroDeposit(address payer);

    /// @notice Thrown when a deposit would push a balance beyond 2**64 - 1.
    error LedgerBalanceOverflow(address payer, uint64 balance, uint64 amount);

    /// @notice Thrown when a birth date is not a plausible yyyymmdd value.
    error LedgerBadBirthDate(uint32 birthDate);

    /// @notice Thrown when the audit releases or refunds more than a merchant's hold.
    error LedgerHoldTooSmall(address merchant, uint256 held, uint256 amount);

    /// @notice Appends a settlement block and runs the rules on each of its records.
    /// @dev Requires the bookkeeper role and an unpaused Ledger. `leaves` is the
    /// concatenation of `header.recordCount` leaves of 165 bytes each (record encoding
    /// followed by the SHA-256 of its signature). Emits `BlockValidated`, then one
    /// `TransactionApproved` or `TransactionRejected` per record, in order, and a
    /// `HoldPlaced` per terminal with approved records.
    /// @return blockHash Double SHA-256 of the packed header.
    function appendBlock(BlockHeader calldata header, bytes calldata leaves)
        external
        returns (bytes32 blockHash);

    /// @notice Records a change of the network monitor's state, for auditors to see
    /// when aggregation was active.
    /// @dev Requires the bookkeeper role; emits `NetworkStateChanged`. Changes nothing
    /// else: the Ledger accepts blocks of any size in either state.
    function recordNetworkState(bool congested, uint64 blockRate, uint64 linkRate) external;

    /// @notice Moves each release's amount from its merchant's hold to its credit.
    /// @dev Requires the audit role; emits `HoldReleased` per release.
    function release(Release[] calldata releases) external;

    /// @notice Returns `amount` of `merchant`'s hold to `payer`'s balance.
    /// @dev Requires the audit role; emits `HoldRefunded`.
    function refund(address payer, address merchant, uint64 amount) external;

    /// @notice The stored root, sizes, height, timestamp and settlement digest of a
    /// block.
    function blockOf(bytes32 blockHash) external view returns (StoredBlock memory);

    /// @notice Whether record `index` of block `blockHash` was approved.
    function isApproved(bytes32 blockHash, uint256 index) external view returns (bool);

    /// @notice Word `word` of a block's bitmap of rejected records (bit i = index
    /// 256 * word + i).
    function rejectedBitsOf(bytes32 blockHash, uint256 word) external view returns (uint256);
}
