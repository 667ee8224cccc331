// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

import {IAccessControl} from "@openzeppelin/contracts/access/IAccessControl.sol";

import {AuditTree} from "../../contracts/AuditTree.sol";
import {SettlementRecords} from "../../contracts/SettlementRecords.sol";
import {ILedger} from "../../contracts/interfaces/ILedger.sol";
import {ISettlementAudit} from "../../contracts/interfaces/ISettlementAudit.sol";
import {IAuditUnderTest, ILedgerUnderTest, IRegistryUnderTest} from "./utils/Deployed.sol";
import {VM, Vm} from "./utils/Vm.sol";

// The role holders the contracts are deployed with, and an outsider holding no role.
address constant OPERATOR = address(uint160(0x0A0001));
address constant BOOKKEEPER = address(uint160(0x0A0002));
address constant AUDITOR = address(uint160(0x0A0003));
address constant OUTSIDER = address(uint160(0x0A0004));

/// @title Handler
/// @notice The actor of the invariant campaign: a bookkeeper, an operator, an auditor,
/// merchants and outsiders driving the Ledger, the TerminalRegistry and the
/// SettlementAudit with bounded random inputs, and a ghost of everything they should
/// have done for the invariants to compare with.
///
/// Two kinds of entry points:
/// - actions (`deposit`, `appendBlock`, `auditBlock`, `settleRecord`, `rejectRecord`,
///   `warp`, `updateAccount`, `manageTerminal`) are well formed and must succeed; a
///   revert is recorded as a surprise, never re-raised, so the invariants see it;
/// - probes (`appendUnlinked`, `auditForgedHolds`, `settleBadProof`, `rejectRefused`,
///   `overdrawHold`, `callUnauthorised`) must be refused with one exact error; that
///   revert is re-raised as {ExpectedRevert}, so forge counts it, while a success or
///   another error is recorded for the invariants.
///
/// The ghost keeps its own ledger of every balance, hold and credit, its own model of the
/// rules (to predict each record's verdict, rule edges included), the audit tree (roots
/// and inclusion proofs computed here, RFC 6962, independently of `AuditTree`) and the
/// hash chain of the blocks it appended.
contract Handler {
    /// @dev A payer as the ghost models it.
    struct Payer {
        address account;
        bool open;
        bool kyc;
        bool frozen;
        bool adult;
        uint64 dailyLimit;
        uint64 balance;
        uint64 spentToday;
        uint24 spentDay;
    }

    /// @dev A terminal as the ghost models it.
    struct Terminal {
        bytes8 id;
        address merchant;
        bool active;
        uint64 lastSequence;
    }

    /// @dev One record of an appended block: what it says, the verdicts predicted and
    /// given, and how often the audit resolved it (settled or rejected).
    struct Entry {
        bytes8 terminalId;
        uint64 sequence;
        address payer;
        uint8 payerIx;
        address merchant;
        uint64 amount;
        uint8 mode;
        bool predicted;
        bool approved;
        uint8 resolutions;
        bool rejectedByAudit;
    }

    /// @dev A block the bookkeeper appended: ghost copies of what the Ledger stored, and
    /// the audit counts the ghost expects.
    struct Block {
        bytes32 hash;
        bytes32 prevHash;
        bytes32 recordsRoot;
        uint32 recordCount;
        uint32 approvedCount;
        uint64 height;
        uint64 timestamp;
        bytes32 holdsDigest;
        bytes32 releasesDigest;
        uint32 settled;
        uint32 rejected;
    }

    /// @dev The ghost's money at once: per payer, per merchant, and all deposits.
    struct Books {
        address[] payers;
        uint256[] balances;
        address[] merchants;
        uint256[] held;
        uint256[] credit;
        uint256 deposits;
    }

    /// @dev A block being built: its leaves, their hashes, the header and the ghost's
    /// running model of payers and terminals while the records are predicted.
    struct Draft {
        bytes leaves;
        bytes[] leafList;
        bytes32[] leafHashes;
        Entry[] entries;
        Payer[] payers;
        Terminal[] terminals;
        ILedger.BlockHeader header;
        bytes32 hash;
    }

    /// @dev Working values for one record while it is drafted.
    struct Pick {
        uint256 rnd;
        uint256 mode;
        uint256 payerIx;
        uint256 terminalIx;
        bool knownTerminal;
    }

    /// @notice A probe was refused as it must be; forge counts it as a revert.
    error ExpectedRevert(bytes reason);

    bytes3 public constant CURRENCY = "EUR";
    uint16 public constant RESTRICTED = 18;
    uint64 internal constant MAX_CLOCK_SKEW = 300;
    uint64 internal constant MAX_AMOUNT = type(uint64).max >> 1;
    uint256 internal constant OPEN_PAYERS = 4;
    uint256 internal constant MAX_TERMINALS = 8;
    uint256 internal constant MAX_RECORDS = 8;
    // Of the ways to draft a record, the first ORDINARY_MODES are ordinary payments and
    // the EDGE_MODES after them sit on, or one past, the edge of a rule.
    uint256 internal constant ORDINARY_MODES = 20;
    uint256 internal constant EDGE_MODES = 12;

    IRegistryUnderTest public immutable registry;
    ILedgerUnderTest public immutable ledger;
    IAuditUnderTest public immutable audit;

    address[3] public merchants =
        [address(uint160(0xB0B001)), address(uint160(0xB0B002)), address(uint160(0xB0B003))];

    // The ghost's books.
    Payer[] internal _payers;
    Terminal[] internal _terminals;
    mapping(address merchant => uint256) public ghostHeld;
    mapping(address merchant => uint256) public ghostCredit;
    uint256 public totalDeposits;

    // The blocks the bookkeeper appended, with what the audit needs.
    Block[] internal _blocks;
    mapping(uint256 blockIx => Entry[]) internal _entries;
    mapping(uint256 blockIx => bytes[]) internal _leaves;
    mapping(uint256 blockIx => bytes32[]) internal _leafHashes;
    mapping(uint256 blockIx => bytes) internal _holds;
    mapping(uint256 blockIx => ILedger.Release[]) internal _releases;
    mapping(bytes8 terminalId => mapping(uint64 sequence => uint256)) internal _approvals;

    // What went other than specified; the invariants want every one of these at zero.
    uint256 public unauthorisedSuccesses;
    uint256 public unexpectedSuccesses;
    uint256 public unexpectedReverts;
    uint256 public wrongReverts;
    uint256 public verdictMismatches;
    uint256 public doubleApprovals;
    uint256 public bookkeepingErrors;
    string public lastSurprise;
    bytes public lastSurpriseData;

    // What this run did, for the log.
    uint256 public approvedRecords;
    uint256 public rejectedRecords;
    uint256 public settledByAudit;
    uint256 public settledOneByOne;
    uint256 public rejectedByAudit;
    uint256 public edgeRecords;
    uint256 public midnightsCrossed;

    uint256 private _fresh;

    constructor(IRegistryUnderTest registry_, ILedgerUnderTest ledger_, IAuditUnderTest audit_) {
        registry = registry_;
        ledger = ledger_;
        audit = audit_;

        VM.startPrank(OPERATOR);
        ledger.grantRole(ledger.BOOKKEEPER_ROLE(), BOOKKEEPER);
        ledger.grantRole(ledger.AUDIT_ROLE(), address(audit));
        ledger.setMinimumAge(RESTRICTED, 18);
        // A payer bound by its balance, one bound by its daily limit, a child (too young
        // for restricted goods), and one without birth date nor KYC until updated.
        _openPayer(address(uint160(0xA11CE1)), 1e12, 1990_05_17, true, 100_000);
        _openPayer(address(uint160(0xA11CE2)), 5_000, 1985_11_30, true, 100_000);
        _openPayer(address(uint160(0xA11CE3)), 50_000, 2020_01_01, true, 10_000);
        _openPayer(address(uint160(0xA11CE4)), 20_000, 0, false, 10_000);
        for (uint256 i = 0; i < 4; ++i) {
            _registerTerminal(_terminalId("TERM", i), merchants[i == 0 ? 0 : i - 1]);
        }
        VM.stopPrank();
        // Records of this payer are refused: it has no account.
        _payers.push(Payer(address(uint160(0xA11CE5)), false, false, false, false, 0, 0, 0, 0));
    }


    // Actions: well formed, they must succeed.

    /// @notice The operator deposits 1..50,000 to one of the open payers.
    function deposit(uint256 payerSeed, uint256 amountSeed) external {
        uint256 ix = payerSeed % OPEN_PAYERS;
        uint64 amount = uint64(1 + amountSeed % 50_000);

        VM.prank(OPERATOR);
        try ledger.deposit(_payers[ix].account, amount) {
            _payers[ix].balance += amount;
            totalDeposits += amount;
        } catch (bytes memory reason) {
            _surprise("deposit reverted", reason);
        }
    }

    /// @notice The bookkeeper appends a block of 1..8 records built here, linked to the
    /// head; every verdict is compared with the ghost's prediction.
    function appendBlock(uint256 seed, uint256 countSeed) external {
        Draft memory draft = _draft(seed, 1 + countSeed % MAX_RECORDS, _head());

        VM.recordLogs();
        VM.prank(BOOKKEEPER);
        try ledger.appendBlock(draft.header, draft.leaves) returns (bytes32 blockHash) {
            if (blockHash != draft.hash) _bookkeepingError("block hash", blockHash);
            _commit(draft);
            _keepReleases(_blocks.length - 1, VM.getRecordedLogs());
        } catch (bytes memory reason) {
            _surprise("appendBlock reverted", reason);
        }
    }

    /// @notice Anyone audits a whole block with its leaf hashes, holds digest and
    /// releases; it settles exactly the approved records still open.
    function auditBlock(uint256 blockSeed, uint256 callerSeed) external {
        if (_blocks.length == 0) return;
        uint256 b = blockSeed % _blocks.length;
        bytes32[] memory hashes = _leafHashes[b];
        uint256 open = _openCount(b);
        bool complete = _isComplete(b);

        VM.prank(_anyone(callerSeed));
        try audit.auditBlock(_blocks[b].hash, hashes, _blocks[b].holdsDigest, _releases[b])
        returns (uint256 settled) {
            uint256 want = complete ? 0 : open;
            if (settled != want) _bookkeepingError("auditBlock settled", bytes32(settled));
            if (!complete) _settleAllOpen(b);
        } catch (bytes memory reason) {
            _surprise("auditBlock reverted", reason);
        }
    }

    /// @notice Anyone settles one approved record with its inclusion proof; a record
    /// already resolved returns false and changes nothing.
    function settleRecord(uint256 blockSeed, uint256 indexSeed, uint256 callerSeed) external {
        (bool found, uint256 b, uint256 i) = _findRecord(blockSeed, indexSeed, true, false);
        if (!found) return;
        bytes32[] memory proof = _proof(_leafHashes[b], i);
        Entry memory entry = _entries[b][i];

        VM.prank(_anyone(callerSeed));
        try audit.settleRecord(_blocks[b].hash, i, _leaves[b][i], proof) returns (bool settled) {
            // Booked as it happened: a second settlement shows in the invariants.
            if (settled) {
                _settle(b, i);
                ++settledOneByOne;
            }
            if (settled != (entry.resolutions == 0)) {
                _bookkeepingError("settleRecord returned", bytes32(uint256(settled ? 1 : 0)));
            }
        } catch (bytes memory reason) {
            _surprise("settleRecord reverted", reason);
        }
    }

    /// @notice The auditor rejects an open approved record whose proof does not match
    /// (claim 8): its hold goes back to the payer.
    function rejectRecord(uint256 blockSeed, uint256 indexSeed, uint256 modeSeed) external {
        (bool found, uint256 b, uint256 i) = _findRecord(blockSeed, indexSeed, true, true);
        if (!found) return;
        (bytes memory leaf, bytes32[] memory proof,) = _badProof(b, i, modeSeed);

        VM.prank(AUDITOR);
        try audit.rejectRecord(
            _blocks[b].hash, i, leaf, proof, _holds[b], _blocks[b].releasesDigest
        ) {
            _reject(b, i);
        } catch (bytes memory reason) {
            _surprise("rejectRecord reverted", reason);
        }
    }

    /// @notice Moves the clock forward: a little, to one second before the next UTC
    /// midnight, onto it exactly, or past it.
    function warp(uint256 seed) external {
        uint256 clock = block.timestamp;
        uint256 midnight = (clock / 1 days + 1) * 1 days;
        uint256 mode = seed % 4;
        uint256 next;
        if (mode == 0) next = clock + 1 + (seed >> 8) % 900;
        else if (mode == 1) next = midnight - 1 > clock ? midnight - 1 : clock + 1;
        else if (mode == 2) next = midnight;
        else next = midnight + (seed >> 8) % 1 days;
        if (next / 1 days != clock / 1 days) ++midnightsCrossed;
        VM.warp(next);
    }

    /// @notice The operator freezes or thaws a payer, toggles its KYC, or changes its
    /// daily limit.
    function updateAccount(uint256 payerSeed, uint256 modeSeed) external {
        Payer storage payer = _payers[payerSeed % OPEN_PAYERS];
        bool kyc = payer.kyc;
        bool frozen = payer.frozen;
        uint64 limit = payer.dailyLimit;
        uint256 mode = modeSeed % 3;
        if (mode == 0) frozen = !frozen;
        else if (mode == 1) kyc = !kyc;
        else limit = [uint64(2_000), 5_000, 50_000, 1e12][(modeSeed >> 8) % 4];

        VM.prank(OPERATOR);
        try ledger.updateAccount(payer.account, limit, kyc, frozen) {
            (payer.kyc, payer.frozen, payer.dailyLimit) = (kyc, frozen, limit);
        } catch (bytes memory reason) {
            _surprise("updateAccount reverted", reason);
        }
    }

    /// @notice The operator registers a new terminal (up to 8) or deactivates one that
    /// is not among the first three.
    function manageTerminal(uint256 seed) external {
        uint256 count = _terminals.length;
        VM.startPrank(OPERATOR);
        if (seed % 2 == 0 && count < MAX_TERMINALS) {
            _registerTerminal(_terminalId("NEWT", count), merchants[seed % 3]);
        } else {
            Terminal storage terminal = _terminals[3 + (seed >> 8) % (count - 3)];
            try registry.deactivateTerminal(terminal.id) {
                terminal.active = false;
            } catch (bytes memory reason) {
                _surprise("deactivateTerminal reverted", reason);
            }
        }
        VM.stopPrank();
    }


    // Probes: each must be refused with one exact error.

    /// @notice The bookkeeper appends a block that does not link to the head: a random
    /// previous hash, the head's parent, or an old block replayed whole.
    function appendUnlinked(uint256 seed, uint256 modeSeed) external {
        (bytes32 head,) = ledger.head();
        uint256 mode = _blocks.length == 0 ? 0 : modeSeed % 3;
        Draft memory draft;
        if (mode == 2) {
            draft = _replay(seed % _blocks.length);
        } else {
            bytes32 prevHash = mode == 0
                ? keccak256(abi.encode("unlinked", seed))
                : _blocks[_blocks.length - 1].prevHash;
            draft = _draft(seed, 1 + seed % 3, prevHash);
        }
        bytes memory expected = abi.encodeWithSelector(
            ILedger.LedgerBlockNotLinked.selector, head, draft.header.prevHash
        );

        VM.prank(BOOKKEEPER);
        (bool ok, bytes memory reason) = address(ledger).call(
            abi.encodeCall(ledger.appendBlock, (draft.header, draft.leaves))
        );
        _expectRefusal("appendBlock not linked", ok, reason, expected);
    }

    /// @notice Anyone audits a block that is not complete with forged releases (an
    /// amount or a merchant changed) or a forged holds list (an amount, a merchant or a
    /// payer changed): the settlement digest must refuse it.
    function auditForgedHolds(uint256 blockSeed, uint256 modeSeed) external {
        (bool found, uint256 b) = _findAuditable(blockSeed);
        if (!found) return;
        Block memory block_ = _blocks[b];
        ILedger.Release[] memory releases = _releases[b];
        bytes32 holdsDigest = block_.holdsDigest;
        if (modeSeed % 2 == 0) releases = _forgeReleases(releases, modeSeed >> 1);
        else holdsDigest = _digestOf(_forgeHolds(_holds[b], modeSeed >> 1));
        bytes memory expected = abi.encodeWithSelector(
            ISettlementAudit.AuditHoldsMismatch.selector,
            _settlementDigest(block_.holdsDigest, block_.releasesDigest),
            _settlementDigest(holdsDigest, _releasesDigest(releases))
        );

        VM.prank(OUTSIDER);
        (bool ok, bytes memory reason) = address(audit).call(
            abi.encodeCall(
                audit.auditBlock, (block_.hash, _leafHashes[b], holdsDigest, releases)
            )
        );
        // Had it passed, the records are resolved all the same: the books follow.
        if (ok) _settleAllOpen(b);
        _expectRefusal("auditBlock forged holds", ok, reason, expected);
    }

    /// @notice Anyone settles a record with a tampered leaf or proof (a mismatch, or a
    /// proof of the wrong length), or a record the rules rejected with its true proof.
    function settleBadProof(uint256 blockSeed, uint256 indexSeed, uint256 modeSeed) external {
        bool notApproved = modeSeed % 4 == 3;
        (bool found, uint256 b, uint256 i) = notApproved
            ? _findRejected(blockSeed, indexSeed)
            : _findRecord(blockSeed, indexSeed, false, false);
        if (!found) return;
        bytes32 blockHash = _blocks[b].hash;
        bytes memory leaf = _leaves[b][i];
        bytes32[] memory proof = _proof(_leafHashes[b], i);
        bytes4 selector = ISettlementAudit.AuditNotApproved.selector;
        if (!notApproved) {
            bool short;
            (leaf, proof, short) = _badProof(b, i, modeSeed);
            selector = short
                ? AuditTree.AuditTreeProofLength.selector
                : ISettlementAudit.AuditProofMismatch.selector;
        }

        VM.prank(OUTSIDER);
        (bool ok, bytes memory reason) = address(audit).call(
            abi.encodeCall(audit.settleRecord, (blockHash, i, leaf, proof))
        );
        if (notApproved) {
            bytes memory expected = abi.encodeWithSelector(selector, blockHash, i);
            _expectRefusal("settleRecord not approved", ok, reason, expected);
        } else {
            _expectRefusalSelector("settleRecord bad proof", ok, reason, selector);
        }
    }

    /// @notice The auditor tries rejections the audit must refuse: a proof that matches,
    /// a record already resolved, a record the rules rejected.
    function rejectRefused(uint256 blockSeed, uint256 indexSeed, uint256 modeSeed) external {
        uint256 mode = modeSeed % 3;
        bool found;
        uint256 b;
        uint256 i;
        if (mode == 0) (found, b, i) = _findRecord(blockSeed, indexSeed, true, true);
        else if (mode == 1) (found, b, i) = _findResolved(blockSeed, indexSeed);
        else (found, b, i) = _findRejected(blockSeed, indexSeed);
        if (!found) return;
        bytes4 selector = [
            ISettlementAudit.AuditProofMatches.selector,
            ISettlementAudit.AuditAlreadyResolved.selector,
            ISettlementAudit.AuditNotApproved.selector
        ][mode];
        bytes memory expected = abi.encodeWithSelector(selector, _blocks[b].hash, i);

        (bool ok, bytes memory reason) = _auditorRejects(b, i, mode != 0, modeSeed >> 8);
        // Had it passed, the record is resolved all the same: the books follow.
        if (ok && mode != 2) _reject(b, i);
        _expectRefusal("rejectRecord refused", ok, reason, expected);
    }

    /// @notice The audit module itself releases or refunds one more than a merchant holds.
    function overdrawHold(uint256 merchantSeed, uint256 modeSeed) external {
        address merchant = merchants[merchantSeed % 3];
        uint256 held = ledger.heldFor(merchant);
        uint256 amount = held + 1 + (modeSeed >> 8) % 3;
        bytes memory call_;
        if (modeSeed % 2 == 0) {
            call_ = abi.encodeCall(ledger.release, (_one(merchant, amount)));
        } else {
            address payer = _payers[(modeSeed >> 16) % OPEN_PAYERS].account;
            call_ = abi.encodeCall(ledger.refund, (payer, merchant, uint64(amount)));
        }
        bytes memory expected = abi.encodeWithSelector(
            ILedger.LedgerHoldTooSmall.selector, merchant, held, amount
        );

        VM.prank(address(audit));
        (bool ok, bytes memory reason) = address(ledger).call(call_);
        _expectRefusal("overdraw a hold", ok, reason, expected);
    }

    /// @notice Someone without the role calls a guarded function with arguments that
    /// would otherwise succeed; it must fail with the access error and nothing else.
    function callUnauthorised(uint256 kindSeed, uint256 callerSeed) external {
        (address target, bytes32 role, bytes memory call_) = _guardedCall(kindSeed);
        address caller = _withoutRole(target, role, callerSeed);
        bytes memory expected = abi.encodeWithSelector(
            IAccessControl.AccessControlUnauthorizedAccount.selector, caller, role
        );

        VM.prank(caller);
        (bool ok, bytes memory reason) = target.call(call_);
        if (ok) {
            ++unauthorisedSuccesses;
            _note("unauthorised call succeeded", call_);
            return;
        }
        _expectRefusal("unauthorised call", ok, reason, expected);
    }


    // What the invariants read, in as few calls as possible: each call made while
    // checking an invariant costs about as much as a whole handler action.

    /// @notice The ghost's balances, holds, credits and deposits.
    function books() external view returns (Books memory books_) {
        uint256 n = _payers.length;
        books_.payers = new address[](n);
        books_.balances = new uint256[](n);
        for (uint256 p = 0; p < n; ++p) {
            (books_.payers[p], books_.balances[p]) = (_payers[p].account, _payers[p].balance);
        }
        books_.merchants = new address[](3);
        books_.held = new uint256[](3);
        books_.credit = new uint256[](3);
        for (uint256 m = 0; m < 3; ++m) {
            address merchant = merchants[m];
            books_.merchants[m] = merchant;
            (books_.held[m], books_.credit[m]) = (ghostHeld[merchant], ghostCredit[merchant]);
        }
        books_.deposits = totalDeposits;
    }

    /// @notice The ghosts of the blocks the bookkeeper appended, oldest first.
    function blocks() external view returns (Block[] memory) {
        return _blocks;
    }

    /// @notice The ghosts of the records of block `b`.
    function entriesOf(uint256 b) external view returns (Entry[] memory) {
        return _entries[b];
    }

    /// @notice The holders of each role, and everyone else the probes call as.
    function actors() external view returns (address[] memory list) {
        list = new address[](8);
        (list[0], list[1], list[2], list[3]) = (OPERATOR, BOOKKEEPER, AUDITOR, OUTSIDER);
        (list[4], list[5]) = (merchants[0], _payers[0].account);
        (list[6], list[7]) = (address(audit), address(this));
    }


    // Drafting blocks.

    function _draft(uint256 seed, uint256 count, bytes32 prevHash)
        internal
        view
        returns (Draft memory draft)
    {
        draft.leafList = new bytes[](count);
        draft.leafHashes = new bytes32[](count);
        draft.entries = new Entry[](count);
        draft.payers = _payers;
        draft.terminals = _terminals;
        for (uint256 i = 0; i < count; ++i) {
            Pick memory pick = _pick(seed, i, draft);
            SettlementRecords.Record memory record = _record(seed, i, pick, draft);
            bool predicted = _predict(record, pick, draft);
            draft.entries[i] = Entry({
                terminalId: record.terminalId,
                sequence: record.sequence,
                payer: record.payer,
                payerIx: uint8(pick.payerIx),
                merchant: record.merchant,
                amount: record.amount,
                mode: uint8(pick.mode),
                predicted: predicted,
                approved: false,
                resolutions: 0,
                rejectedByAudit: false
            });
            bytes memory leaf = abi.encodePacked(
                SettlementRecords.encode(record),
                sha256(abi.encodePacked("signature", record.recordId))
            );
            draft.leafList[i] = leaf;
            draft.leafHashes[i] = _hashLeaf(leaf);
            draft.leaves = bytes.concat(draft.leaves, leaf);
        }
        draft.header = ILedger.BlockHeader({
            version: 1,
            prevHash: prevHash,
            recordsRoot: _root(draft.leafHashes, 0, count),
            recordCount: uint32(count),
            timestamp: uint64(block.timestamp),
            target: ledger.target(),
            nonce: 0
        });
        draft.hash = _blockHash(draft.header);
    }

    /// @dev Chooses a record's payer, terminal and way to draft it (ordinary or an edge).
    function _pick(uint256 seed, uint256 i, Draft memory draft)
        internal
        pure
        returns (Pick memory pick)
    {
        pick.rnd = uint256(keccak256(abi.encode(seed, i)));
        pick.mode = pick.rnd % (ORDINARY_MODES + EDGE_MODES);
        bool noAccount = pick.mode == ORDINARY_MODES + EDGE_MODES - 1;
        pick.payerIx = noAccount ? OPEN_PAYERS : (pick.rnd >> 32) % OPEN_PAYERS;
        pick.terminalIx = (pick.rnd >> 40) % draft.terminals.length;
        pick.knownTerminal = true;
    }

    function _record(uint256 seed, uint256 i, Pick memory pick, Draft memory draft)
        internal
        view
        returns (SettlementRecords.Record memory record)
    {
        Terminal memory terminal = draft.terminals[pick.terminalIx];
        Payer memory payer = draft.payers[pick.payerIx];
        uint64 clock = uint64(block.timestamp);
        uint256 rnd = pick.rnd;
        record = SettlementRecords.Record({
            chainId: uint64(block.chainid),
            ledger: address(ledger),
            recordId: bytes16(keccak256(abi.encode("record", seed, i, _blocks.length))),
            terminalId: terminal.id,
            sequence: terminal.lastSequence + 1 + uint64((rnd >> 48) % 4 == 0 ? 1 : 0),
            payer: payer.account,
            merchant: terminal.merchant,
            amount: uint64(1 + (rnd >> 56) % 3_000),
            currency: CURRENCY,
            timestamp: clock - uint64((rnd >> 72) % 600),
            validUntil: clock + 1 + uint64((rnd >> 88) % 3_600),
            goodsCategory: 0,
            operatorId: uint32(rnd >> 104)
        });
        _applyEdge(record, pick, payer, terminal, clock);
    }

    function _applyEdge(
        SettlementRecords.Record memory record,
        Pick memory pick,
        Payer memory payer,
        Terminal memory terminal,
        uint64 clock
    ) internal pure {
        if (pick.mode < ORDINARY_MODES) return;
        uint256 edge = pick.mode - ORDINARY_MODES;
        uint64 spent = payer.spentDay == clock / 1 days ? payer.spentToday : 0;
        uint64 room = payer.dailyLimit > spent ? payer.dailyLimit - spent : 0;
        if (edge == 0) record.amount = payer.balance == 0 ? 1 : payer.balance;
        else if (edge == 1) record.amount = payer.balance + 1;
        else if (edge == 2) record.amount = room == 0 ? 1 : room;
        else if (edge == 3) record.amount = room + 1;
        else if (edge == 4) record.validUntil = clock;
        else if (edge == 5) record.validUntil = clock - 1;
        else if (edge == 6) record.sequence = _replayedSequence(terminal, pick.rnd);
        else if (edge == 7) record.timestamp = clock + MAX_CLOCK_SKEW;
        else if (edge == 8) record.timestamp = clock + MAX_CLOCK_SKEW + 1;
        else if (edge == 9) record.goodsCategory = RESTRICTED;
        else if (edge == 10) _breakRule(record, pick);
        // edge 11: the payer without an account, chosen in `_pick`.
    }

    /// @dev The terminal's last sequence, or the one before: both not above the last.
    function _replayedSequence(Terminal memory terminal, uint256 rnd)
        internal
        pure
        returns (uint64)
    {
        uint64 last = terminal.lastSequence;
        return last == 0 ? 0 : last - uint64((rnd >> 120) % 2);
    }

    /// @dev One of the rules before the payer's: unknown terminal, merchant mismatch,
    /// wrong currency, wrong chain, amount 0 or above the maximum.
    function _breakRule(SettlementRecords.Record memory record, Pick memory pick) internal pure {
        uint256 rule = (pick.rnd >> 128) % 6;
        if (rule == 0) {
            record.terminalId = "NOSUCH00";
            pick.knownTerminal = false;
        } else if (rule == 1) {
            record.merchant = address(uint160(0xBAD));
        } else if (rule == 2) {
            record.currency = "USD";
        } else if (rule == 3) {
            record.chainId += 1;
        } else if (rule == 4) {
            record.amount = 0;
        } else {
            record.amount = MAX_AMOUNT + 1;
        }
    }

    /// @dev The rules in the Ledger's order, on the draft's running model: returns the
    /// verdict and, on approval, takes the amount from the modelled payer.
    function _predict(
        SettlementRecords.Record memory record,
        Pick memory pick,
        Draft memory draft
    ) internal view returns (bool) {
        if (record.chainId != block.chainid || record.ledger != address(ledger)) return false;
        if (!pick.knownTerminal) return false;
        Terminal memory terminal = draft.terminals[pick.terminalIx];
        if (!terminal.active || terminal.merchant != record.merchant) return false;
        if (record.sequence <= terminal.lastSequence) return false;
        terminal.lastSequence = record.sequence;

        uint64 clock = uint64(block.timestamp);
        if (record.amount == 0 || record.amount > MAX_AMOUNT) return false;
        if (record.currency != CURRENCY) return false;
        if (record.timestamp > clock + MAX_CLOCK_SKEW || record.validUntil < clock) return false;
        Payer memory payer = draft.payers[pick.payerIx];
        if (!payer.open || payer.frozen || !payer.kyc) return false;
        if (record.goodsCategory == RESTRICTED && !payer.adult) return false;
        if (record.amount > payer.balance) return false;
        uint24 day = uint24(clock / 1 days);
        uint256 spent = payer.spentDay == day ? payer.spentToday : 0;
        if (spent + record.amount > payer.dailyLimit) return false;

        payer.balance -= record.amount;
        payer.spentToday = uint64(spent + record.amount);
        payer.spentDay = day;
        return true;
    }

    /// @dev Books an appended block: terminal sequences from the model, money and holds
    /// from the Ledger's actual verdicts, each compared with the prediction.
    function _commit(Draft memory draft) internal {
        for (uint256 t = 0; t < draft.terminals.length; ++t) {
            _terminals[t].lastSequence = draft.terminals[t].lastSequence;
        }
        uint256 b = _blocks.length;
        uint24 day = uint24(block.timestamp / 1 days);
        bytes memory holds;
        uint32 approved = 0;
        for (uint256 i = 0; i < draft.entries.length; ++i) {
            Entry memory entry = draft.entries[i];
            if (entry.mode >= ORDINARY_MODES) ++edgeRecords;
            entry.approved = ledger.isApproved(draft.hash, i);
            if (entry.approved != entry.predicted) {
                ++verdictMismatches;
                _note("verdict differs from the model", abi.encode(b, i, entry.approved));
            }
            if (entry.approved) {
                ++approved;
                ++approvedRecords;
                _book(entry, day);
                holds = abi.encodePacked(
                    holds, entry.terminalId, entry.sequence, entry.amount, entry.merchant,
                    entry.payer
                );
            } else {
                ++rejectedRecords;
            }
            _entries[b].push(entry);
            _leaves[b].push(draft.leafList[i]);
        }
        _leafHashes[b] = draft.leafHashes;
        _holds[b] = holds;
        _blocks.push(
            Block({
                hash: draft.hash,
                prevHash: draft.header.prevHash,
                recordsRoot: draft.header.recordsRoot,
                recordCount: draft.header.recordCount,
                approvedCount: approved,
                height: uint64(b + 1),
                timestamp: draft.header.timestamp,
                holdsDigest: _digestOf(holds),
                releasesDigest: 0,
                settled: 0,
                rejected: 0
            })
        );
    }

    /// @dev An approved record in the ghost's books: payer to merchant's hold.
    function _book(Entry memory entry, uint24 day) internal {
        if (++_approvals[entry.terminalId][entry.sequence] > 1) {
            ++doubleApprovals;
            _note("approved twice", abi.encode(entry.terminalId, entry.sequence));
        }
        ghostHeld[entry.merchant] += entry.amount;
        Payer storage payer = _payers[entry.payerIx];
        if (entry.amount > payer.balance) {
            _bookkeepingError("approved beyond the balance", bytes32(uint256(entry.amount)));
            payer.balance = 0;
        } else {
            payer.balance -= entry.amount;
        }
        uint256 spent = payer.spentDay == day ? payer.spentToday : 0;
        payer.spentToday = uint64(spent + entry.amount);
        payer.spentDay = day;
    }

    /// @dev Rebuilds an old block's header and leaves, exactly as appended.
    function _replay(uint256 b) internal view returns (Draft memory draft) {
        Block storage old = _blocks[b];
        draft.header = ILedger.BlockHeader({
            version: 1,
            prevHash: old.prevHash,
            recordsRoot: old.recordsRoot,
            recordCount: old.recordCount,
            timestamp: old.timestamp,
            target: ledger.target(),
            nonce: 0
        });
        for (uint256 i = 0; i < old.recordCount; ++i) {
            draft.leaves = bytes.concat(draft.leaves, _leaves[b][i]);
        }
        draft.hash = old.hash;
    }


    // The ghost's audit.

    function _settleAllOpen(uint256 b) internal {
        Entry[] storage entries = _entries[b];
        for (uint256 i = 0; i < entries.length; ++i) {
            if (entries[i].approved && entries[i].resolutions == 0) {
                _settle(b, i);
                ++settledByAudit;
            }
        }
    }

    function _settle(uint256 b, uint256 i) internal {
        Entry storage entry = _entries[b][i];
        ++entry.resolutions;
        ++_blocks[b].settled;
        _takeGhostHold(entry.merchant, entry.amount);
        ghostCredit[entry.merchant] += entry.amount;
    }

    function _reject(uint256 b, uint256 i) internal {
        Entry storage entry = _entries[b][i];
        ++entry.resolutions;
        entry.rejectedByAudit = true;
        ++_blocks[b].rejected;
        ++rejectedByAudit;
        _takeGhostHold(entry.merchant, entry.amount);
        _payers[entry.payerIx].balance += entry.amount;
    }

    function _takeGhostHold(address merchant, uint64 amount) internal {
        if (amount > ghostHeld[merchant]) {
            _bookkeepingError("ghost hold too small", bytes32(uint256(amount)));
            ghostHeld[merchant] = 0;
        } else {
            ghostHeld[merchant] -= amount;
        }
    }

    function _isComplete(uint256 b) internal view returns (bool) {
        Block storage blk = _blocks[b];
        return audit.auditOf(blk.hash).complete;
    }

    function _openCount(uint256 b) internal view returns (uint256 open) {
        Entry[] storage entries = _entries[b];
        for (uint256 i = 0; i < entries.length; ++i) {
            if (entries[i].approved && entries[i].resolutions == 0) ++open;
        }
    }

    /// @dev A record from `blockSeed` on: approved ones only if `approved`, and then open
    /// ones only if `open`.
    function _findRecord(uint256 blockSeed, uint256 indexSeed, bool approved, bool open)
        internal
        view
        returns (bool found, uint256 b, uint256 i)
    {
        uint256 n = _blocks.length;
        for (uint256 k = 0; k < n; ++k) {
            b = (blockSeed % n + k) % n;
            Entry[] storage entries = _entries[b];
            for (uint256 j = 0; j < entries.length; ++j) {
                i = (indexSeed % entries.length + j) % entries.length;
                if (approved && !entries[i].approved) continue;
                if (open && entries[i].resolutions != 0) continue;
                return (true, b, i);
            }
        }
        return (false, 0, 0);
    }

    function _findRejected(uint256 blockSeed, uint256 indexSeed)
        internal
        view
        returns (bool found, uint256 b, uint256 i)
    {
        uint256 n = _blocks.length;
        for (uint256 k = 0; k < n; ++k) {
            b = (blockSeed % n + k) % n;
            Entry[] storage entries = _entries[b];
            for (uint256 j = 0; j < entries.length; ++j) {
                i = (indexSeed % entries.length + j) % entries.length;
                if (!entries[i].approved) return (true, b, i);
            }
        }
        return (false, 0, 0);
    }

    function _findResolved(uint256 blockSeed, uint256 indexSeed)
        internal
        view
        returns (bool found, uint256 b, uint256 i)
    {
        uint256 n = _blocks.length;
        for (uint256 k = 0; k < n; ++k) {
            b = (blockSeed % n + k) % n;
            Entry[] storage entries = _entries[b];
            for (uint256 j = 0; j < entries.length; ++j) {
                i = (indexSeed % entries.length + j) % entries.length;
                if (entries[i].approved && entries[i].resolutions != 0) return (true, b, i);
            }
        }
        return (false, 0, 0);
    }

    /// @dev A block with approved records not all resolved.
    function _findAuditable(uint256 blockSeed) internal view returns (bool found, uint256 b) {
        uint256 n = _blocks.length;
        for (uint256 k = 0; k < n; ++k) {
            b = (blockSeed % n + k) % n;
            if (_openCount(b) > 0) return (true, b);
        }
        return (false, 0);
    }

    /// @dev The auditor calls `rejectRecord` on record `i` of block `b`, with its true
    /// leaf and proof or with a bad pair.
    function _auditorRejects(uint256 b, uint256 i, bool bad, uint256 badSeed)
        internal
        returns (bool ok, bytes memory reason)
    {
        bytes memory leaf = _leaves[b][i];
        bytes32[] memory proof = _proof(_leafHashes[b], i);
        if (bad) (leaf, proof,) = _badProof(b, i, badSeed);
        bytes memory call_ = _rejectCall(b, i, leaf, proof);

        VM.prank(AUDITOR);
        (ok, reason) = address(audit).call(call_);
    }

    /// @dev Calldata of `rejectRecord` for record `i` of block `b` with the block's holds.
    function _rejectCall(uint256 b, uint256 i, bytes memory leaf, bytes32[] memory proof)
        internal
        view
        returns (bytes memory)
    {
        Block memory block_ = _blocks[b];
        return abi.encodeCall(
            audit.rejectRecord,
            (block_.hash, i, leaf, proof, _holds[b], block_.releasesDigest)
        );
    }

    /// @dev A leaf and proof for record `i` that do not lead to the stored root: a byte
    /// of the amount flipped, a sibling flipped, or a proof one hash short.
    function _badProof(uint256 b, uint256 i, uint256 modeSeed)
        internal
        view
        returns (bytes memory leaf, bytes32[] memory proof, bool short)
    {
        leaf = bytes.concat(_leaves[b][i]);
        proof = _proof(_leafHashes[b], i);
        uint256 mode = modeSeed % 3;
        if (mode == 1 && proof.length > 0) {
            proof[modeSeed % proof.length] ^= bytes32(uint256(1));
        } else if (mode == 2 && proof.length > 0) {
            bytes32[] memory shorter = new bytes32[](proof.length - 1);
            for (uint256 k = 0; k < shorter.length; ++k) shorter[k] = proof[k];
            proof = shorter;
            short = true;
        } else {
            leaf[107] ^= 0x01; // last byte of the amount
        }
    }

    /// @dev One 64-byte hold of the list changed: amount, merchant or payer.
    function _forgeHolds(bytes memory holds, uint256 modeSeed)
        internal
        pure
        returns (bytes memory forged)
    {
        forged = bytes.concat(holds);
        uint256 o = ((modeSeed >> 8) % (holds.length / 64)) * 64;
        uint256 mode = modeSeed % 3;
        if (mode == 0) forged[o + 23] ^= 0x01; // amount
        else if (mode == 1) forged[o + 43] ^= 0x01; // merchant
        else forged[o + 63] ^= 0x01; // payer
    }


    // Probing the guards.

    /// @dev A call to one of the guarded functions with arguments that pass every other
    /// check: the target, the role it requires, and the calldata.
    function _guardedCall(uint256 kindSeed)
        internal
        returns (address target, bytes32 role, bytes memory call_)
    {
        uint256 kind = kindSeed % 16;
        address merchant = merchants[(kindSeed >> 8) % 3];
        address payer = _payers[(kindSeed >> 16) % OPEN_PAYERS].account;
        uint256 held = ledger.heldFor(merchant);
        uint256 amount = held == 0 ? 0 : 1 + (kindSeed >> 24) % held;
        target = address(ledger);
        role = ledger.OPERATOR_ROLE();
        if (kind == 0) {
            Draft memory draft = _draft(kindSeed, 1 + (kindSeed >> 32) % 3, _head());
            role = ledger.BOOKKEEPER_ROLE();
            call_ = abi.encodeCall(ledger.appendBlock, (draft.header, draft.leaves));
        } else if (kind == 1) {
            role = ledger.AUDIT_ROLE();
            call_ = abi.encodeCall(ledger.release, (_one(merchant, amount)));
        } else if (kind == 2) {
            role = ledger.AUDIT_ROLE();
            call_ = abi.encodeCall(ledger.refund, (payer, merchant, uint64(amount)));
        } else if (kind == 3) {
            call_ = abi.encodeCall(ledger.deposit, (payer, 1_000));
        } else if (kind == 4) {
            address fresh = address(uint160(0xFE0000 + ++_fresh));
            call_ = abi.encodeCall(ledger.openAccount, (fresh, 1_000, 0, true));
        } else if (kind == 5) {
            call_ = abi.encodeCall(ledger.updateAccount, (payer, 1, false, true));
        } else if (kind == 6) {
            call_ = abi.encodeCall(ledger.setTarget, (ledger.target()));
        } else if (kind == 7) {
            call_ = abi.encodeCall(ledger.setMinimumAge, (RESTRICTED, 99));
        } else if (kind == 8) {
            call_ = abi.encodeCall(ledger.pause, ());
        } else if (kind == 9) {
            call_ = abi.encodeCall(ledger.grantRole, (ledger.BOOKKEEPER_ROLE(), OUTSIDER));
            role = ledger.DEFAULT_ADMIN_ROLE();
        } else {
            (target, role, call_) = _guardedCallElsewhere(kind, kindSeed, merchant);
        }
    }

    function _guardedCallElsewhere(uint256 kind, uint256 kindSeed, address merchant)
        internal
        returns (address target, bytes32 role, bytes memory call_)
    {
        target = address(registry);
        role = registry.OPERATOR_ROLE();
        if (kind == 10 || kind == 11) {
            bytes8 id = bytes8(abi.encodePacked(bytes4("EVIL"), uint32(++_fresh)));
            call_ = abi.encodeCall(
                registry.registerTerminal, (id, merchant, _modulus(), hex"010001")
            );
        } else if (kind == 12) {
            call_ = abi.encodeCall(registry.deactivateTerminal, (_terminals[0].id));
        } else if (kind == 13) {
            call_ = abi.encodeCall(registry.grantRole, (role, OUTSIDER));
            role = registry.DEFAULT_ADMIN_ROLE();
        } else {
            target = address(audit);
            role = audit.AUDITOR_ROLE();
            (bool found, uint256 b, uint256 i) =
                _findRecord(kindSeed, kindSeed >> 8, true, true);
            if (kind == 15 || !found) {
                call_ = abi.encodeCall(audit.grantRole, (role, OUTSIDER));
                role = audit.DEFAULT_ADMIN_ROLE();
            } else {
                (bytes memory leaf, bytes32[] memory proof,) = _badProof(b, i, kindSeed >> 16);
                call_ = _rejectCall(b, i, leaf, proof);
            }
        }
    }

    /// @dev One of the actors that lacks `role` on `target`, from `seed` on.
    function _withoutRole(address target, bytes32 role, uint256 seed)
        internal
        view
        returns (address)
    {
        address[] memory list = this.actors();
        for (uint256 k = 0; k < list.length; ++k) {
            address candidate = list[(seed % list.length + k) % list.length];
            if (!IAccessControl(target).hasRole(role, candidate)) return candidate;
        }
        return OUTSIDER;
    }


    // Outcomes.

    function _expectRefusal(
        string memory what,
        bool ok,
        bytes memory reason,
        bytes memory expected
    ) internal {
        if (ok) {
            ++unexpectedSuccesses;
            _note(string.concat(what, ": succeeded"), reason);
        } else if (keccak256(reason) != keccak256(expected)) {
            ++wrongReverts;
            _note(string.concat(what, ": refused with another error"), reason);
        } else {
            revert ExpectedRevert(reason);
        }
    }

    /// @dev As {_expectRefusal}, comparing only the error's selector (its arguments are
    /// roots the probe does not compute).
    function _expectRefusalSelector(
        string memory what,
        bool ok,
        bytes memory reason,
        bytes4 selector
    ) internal {
        bytes memory head = reason.length >= 4 ? abi.encodePacked(bytes4(reason)) : reason;
        _expectRefusal(what, ok, head, abi.encodePacked(selector));
    }

    function _surprise(string memory what, bytes memory reason) internal {
        ++unexpectedReverts;
        _note(what, reason);
    }

    function _bookkeepingError(string memory what, bytes32 value) internal {
        ++bookkeepingErrors;
        _note(what, abi.encode(value));
    }

    function _note(string memory what, bytes memory data) internal {
        lastSurprise = what;
        lastSurpriseData = data;
    }


    // Trees, hashes and small helpers.

    /// @dev RFC 6962 leaf hash: sha256(0x00 || leaf).
    function _hashLeaf(bytes memory leaf) internal pure returns (bytes32) {
        return sha256(abi.encodePacked(bytes1(0x00), leaf));
    }

    /// @dev RFC 6962 node hash: sha256(0x01 || left || right).
    function _hashNode(bytes32 left, bytes32 right) internal pure returns (bytes32) {
        return sha256(abi.encodePacked(bytes1(0x01), left, right));
    }

    /// @dev RFC 6962 MTH of hashes[lo:hi]: split at the largest power of two below the size.
    function _root(bytes32[] memory hashes, uint256 lo, uint256 hi)
        internal
        pure
        returns (bytes32)
    {
        if (hi - lo == 1) return hashes[lo];
        uint256 k = _split(hi - lo);
        return _hashNode(_root(hashes, lo, lo + k), _root(hashes, lo + k, hi));
    }

    /// @dev RFC 6962 PATH(index): sibling subtree roots, bottom up.
    function _proof(bytes32[] memory hashes, uint256 index)
        internal
        pure
        returns (bytes32[] memory proof)
    {
        bytes32[] memory topDown = new bytes32[](8);
        uint256 n = 0;
        uint256 lo = 0;
        uint256 hi = hashes.length;
        while (hi - lo > 1) {
            uint256 k = _split(hi - lo);
            if (index < lo + k) {
                topDown[n++] = _root(hashes, lo + k, hi);
                hi = lo + k;
            } else {
                topDown[n++] = _root(hashes, lo, lo + k);
                lo = lo + k;
            }
        }
        proof = new bytes32[](n);
        for (uint256 j = 0; j < n; ++j) proof[j] = topDown[n - 1 - j];
    }

    /// @dev Largest power of two strictly below `n` (n >= 2).
    function _split(uint256 n) internal pure returns (uint256 k) {
        k = 1;
        while (k << 1 < n) k <<= 1;
    }

    /// @dev Double SHA-256 of the 120-byte packed header.
    function _blockHash(ILedger.BlockHeader memory header) internal pure returns (bytes32) {
        bytes memory packed = abi.encodePacked(
            header.version,
            header.prevHash,
            header.recordsRoot,
            header.recordCount,
            header.timestamp,
            header.target,
            header.nonce
        );
        return sha256(abi.encodePacked(sha256(packed)));
    }

    /// @dev Keeps the releases of block `b` from its append's `HoldPlaced` logs, and
    /// checks that they hold for each merchant what the ghost approved for it.
    function _keepReleases(uint256 b, Vm.Log[] memory logs) internal {
        bytes32 placed = keccak256("HoldPlaced(bytes32,address,uint256)");
        uint256[3] memory released;
        uint256[3] memory approved;
        for (uint256 k = 0; k < logs.length; ++k) {
            if (logs[k].emitter != address(ledger) || logs[k].topics[0] != placed) continue;
            address merchant = address(uint160(uint256(logs[k].topics[2])));
            uint256 amount = abi.decode(logs[k].data, (uint256));
            _releases[b].push(ILedger.Release(merchant, amount));
            released[_merchantIx(merchant)] += amount;
        }
        Entry[] storage entries = _entries[b];
        for (uint256 i = 0; i < entries.length; ++i) {
            if (!entries[i].approved) continue;
            approved[_merchantIx(entries[i].merchant)] += entries[i].amount;
        }
        for (uint256 m = 0; m < 3; ++m) {
            if (released[m] != approved[m]) _bookkeepingError("releases", bytes32(released[m]));
        }
        _blocks[b].releasesDigest = _releasesDigest(_releases[b]);
    }

    function _merchantIx(address merchant) internal view returns (uint256) {
        for (uint256 m = 0; m < 3; ++m) {
            if (merchants[m] == merchant) return m;
        }
        revert ExpectedRevert(abi.encode("unknown merchant", merchant));
    }

    /// @dev The releases digest: keccak256 chained over (merchant, amount), from zero.
    function _releasesDigest(ILedger.Release[] memory releases)
        internal
        pure
        returns (bytes32 digest)
    {
        for (uint256 k = 0; k < releases.length; ++k) {
            digest =
                keccak256(abi.encodePacked(digest, releases[k].merchant, releases[k].amount));
        }
    }

    function _settlementDigest(bytes32 holdsDigest, bytes32 releasesDigest)
        internal
        pure
        returns (bytes32)
    {
        return keccak256(abi.encodePacked(holdsDigest, releasesDigest));
    }

    /// @dev One release of the list changed: its amount or its merchant; or, for a
    /// block with none, one added.
    function _forgeReleases(ILedger.Release[] memory releases, uint256 modeSeed)
        internal
        view
        returns (ILedger.Release[] memory forged)
    {
        if (releases.length == 0) return _one(merchants[modeSeed % 3], 1);
        forged = new ILedger.Release[](releases.length);
        for (uint256 j = 0; j < releases.length; ++j) {
            forged[j] = ILedger.Release(releases[j].merchant, releases[j].amount);
        }
        uint256 k = (modeSeed >> 8) % releases.length;
        if (modeSeed % 2 == 0) forged[k].amount += 1;
        else forged[k].merchant = merchants[(_merchantIx(forged[k].merchant) + 1) % 3];
    }

    /// @dev The holds digest: keccak256 chained over the 64-byte holds, from zero.
    function _digestOf(bytes memory holds) internal pure returns (bytes32 digest) {
        for (uint256 o = 0; o < holds.length; o += 64) {
            bytes memory hold = new bytes(64);
            for (uint256 k = 0; k < 64; ++k) hold[k] = holds[o + k];
            digest = keccak256(abi.encodePacked(digest, hold));
        }
    }

    function _head() internal view returns (bytes32 blockHash) {
        (blockHash,) = ledger.head();
    }

    function _anyone(uint256 seed) internal view returns (address) {
        address[4] memory anyone = [OUTSIDER, merchants[0], merchants[1], _payers[0].account];
        return anyone[seed % 4];
    }

    function _openPayer(address account, uint64 limit, uint32 birthDate, bool kyc, uint64 funds)
        internal
    {
        ledger.openAccount(account, limit, birthDate, kyc);
        ledger.deposit(account, funds);
        totalDeposits += funds;
        bool adult = birthDate != 0 && birthDate <= 2000_01_01;
        _payers.push(Payer(account, true, kyc, false, adult, limit, funds, 0, 0));
    }

    function _registerTerminal(bytes8 id, address merchant) internal {
        try registry.registerTerminal(id, merchant, _modulus(), hex"010001") {
            _terminals.push(Terminal(id, merchant, true, 0));
        } catch (bytes memory reason) {
            _surprise("registerTerminal reverted", reason);
        }
    }

    function _terminalId(bytes4 prefix, uint256 n) internal pure returns (bytes8) {
        return bytes8(abi.encodePacked(prefix, bytes4(uint32(0x30303030 + n % 10))));
    }

    /// @dev A 2048-bit number: the registry checks the key's size, the audit never uses it.
    function _modulus() internal pure returns (bytes memory modulus) {
        modulus = new bytes(256);
        modulus[0] = 0xC5;
        modulus[255] = 0x01;
    }

    function _one(address merchant, uint256 amount)
        internal
        pure
        returns (ILedger.Release[] memory list)
    {
        list = new ILedger.Release[](1);
        list[0] = ILedger.Release(merchant, amount);
    }
}
