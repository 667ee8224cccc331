// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

import {IAccessControl} from "@openzeppelin/contracts/access/IAccessControl.sol";

import {ILedger} from "../../contracts/interfaces/ILedger.sol";
import {ISettlementAudit} from "../../contracts/interfaces/ISettlementAudit.sol";
import {AUDITOR, BOOKKEEPER, Handler, OPERATOR, OUTSIDER} from "./Handler.sol";
import {IAuditUnderTest, ILedgerUnderTest, IRegistryUnderTest} from "./utils/Deployed.sol";
import {InvariantTest} from "./utils/InvariantTest.sol";
import {VM} from "./utils/Vm.sol";

uint256 constant NOON = 1_898_856_000; // 2030-03-04 12:00:00 UTC, as in the ape tests

/// @title InvariantsBase
/// @notice The Ledger, the TerminalRegistry and the SettlementAudit on forge's EVM, driven
/// by {Handler}, and the properties that must hold after every call. {InvariantsTest}
/// checks each in a campaign of its own; {AllInvariantsTest} checks all of them in one.
abstract contract InvariantsBase is InvariantTest {
    /// @notice Thrown when a property fails: what, and the two values compared.
    error InvariantBroken(string what, uint256 got, uint256 want);

    /// @notice Thrown when the handler recorded an outcome other than specified.
    error HandlerSurprised(string what, uint256 count, string last, bytes data);

    /// @dev A role some contract grants, and the one account that must hold it.
    struct Role {
        string name;
        IAccessControl target;
        bytes32 id;
        address holder;
    }

    Handler internal handler;
    ILedgerUnderTest internal ledger;
    IAuditUnderTest internal audit;
    IRegistryUnderTest internal registry;
    Role[] internal roles;

    function setUp() public {
        VM.warp(NOON);
        registry = IRegistryUnderTest(
            VM.deployCode("TerminalRegistry.sol:TerminalRegistry", abi.encode(OPERATOR))
        );
        // The easiest target: every header meets it, no nonce search.
        bytes memory args = abi.encode(OPERATOR, registry, bytes3("EUR"), type(uint256).max);
        ledger = ILedgerUnderTest(VM.deployCode("Ledger.sol:Ledger", args));
        args = abi.encode(AUDITOR, ledger, registry);
        audit = IAuditUnderTest(VM.deployCode("SettlementAudit.sol:SettlementAudit", args));
        handler = new Handler(registry, ledger, audit);

        bytes4[] memory selectors = new bytes4[](15);
        selectors[0] = Handler.deposit.selector;
        selectors[1] = Handler.appendBlock.selector;
        selectors[2] = Handler.auditBlock.selector;
        selectors[3] = Handler.settleRecord.selector;
        selectors[4] = Handler.rejectRecord.selector;
        selectors[5] = Handler.warp.selector;
        selectors[6] = Handler.updateAccount.selector;
        selectors[7] = Handler.manageTerminal.selector;
        selectors[8] = Handler.appendUnlinked.selector;
        selectors[9] = Handler.auditForgedHolds.selector;
        selectors[10] = Handler.settleBadProof.selector;
        selectors[11] = Handler.rejectRefused.selector;
        selectors[12] = Handler.overdrawHold.selector;
        selectors[13] = Handler.callUnauthorised.selector;
        // Listed twice: appending twice as often leaves each run more blocks to audit.
        selectors[14] = Handler.appendBlock.selector;
        _targetContract(address(handler));
        _targetSelectors(address(handler), selectors);

        roles.push(Role("ledger admin", ledger, 0x00, OPERATOR));
        roles.push(Role("ledger operator", ledger, ledger.OPERATOR_ROLE(), OPERATOR));
        roles.push(Role("bookkeeper", ledger, ledger.BOOKKEEPER_ROLE(), BOOKKEEPER));
        roles.push(Role("audit role", ledger, ledger.AUDIT_ROLE(), address(audit)));
        roles.push(Role("registry admin", registry, 0x00, OPERATOR));
        roles.push(Role("registry operator", registry, registry.OPERATOR_ROLE(), OPERATOR));
        roles.push(Role("audit admin", audit, 0x00, AUDITOR));
        roles.push(Role("auditor", audit, audit.AUDITOR_ROLE(), AUDITOR));
    }

    /// @notice Payer balances + holds + merchant credits == deposits: the contracts create
    /// and destroy no money.
    function check_valueIsConserved() public view {
        Handler.Books memory books = handler.books();
        uint256 total = 0;
        for (uint256 p = 0; p < books.payers.length; ++p) {
            total += ledger.accountOf(books.payers[p]).balance;
        }
        for (uint256 m = 0; m < books.merchants.length; ++m) {
            total += ledger.heldFor(books.merchants[m]) + ledger.creditOf(books.merchants[m]);
        }
        _equal("balances + holds + credits vs deposits", total, books.deposits);
    }

    /// @notice Every balance, hold and credit is what the ghost's books say: money moves
    /// only as the Ledger committed when it approved a record.
    function check_moneyMovesOnlyAsCommitted() public view {
        Handler.Books memory books = handler.books();
        for (uint256 p = 0; p < books.payers.length; ++p) {
            uint256 balance = ledger.accountOf(books.payers[p]).balance;
            _equal("payer balance", balance, books.balances[p]);
        }
        for (uint256 m = 0; m < books.merchants.length; ++m) {
            _equal("merchant hold", ledger.heldFor(books.merchants[m]), books.held[m]);
            _equal("merchant credit", ledger.creditOf(books.merchants[m]), books.credit[m]);
        }
        _none("ghost books out of balance", handler.bookkeepingErrors());
    }

    /// @notice No record is settled or rejected twice: per (block, index) at most one
    /// resolution, the audit's status and counts are the ghost's, and per (terminal,
    /// sequence) at most one approval.
    function check_noRecordSettlesTwice() public view {
        Handler.Block[] memory blocks = handler.blocks();
        for (uint256 b = 0; b < blocks.length; ++b) {
            Handler.Entry[] memory entries = handler.entriesOf(b);
            for (uint256 i = 0; i < entries.length; ++i) {
                _atMost("resolutions of a record", entries[i].resolutions, 1);
                uint256 status = uint256(audit.statusOf(blocks[b].hash, i));
                _equal("record status", status, _status(entries[i]));
            }
            ISettlementAudit.BlockAudit memory counts = audit.auditOf(blocks[b].hash);
            _equal("audit settled", counts.settled, blocks[b].settled);
            _equal("audit rejected", counts.rejected, blocks[b].rejected);
        }
        _none("terminal and sequence approved twice", handler.doubleApprovals());
    }

    /// @notice The head moves only to a block linked to the one before, one height at a
    /// time, and holding at least one record.
    function check_headMovesOnlyToLinkedBlocks() public view {
        (bytes32 head, uint64 height) = ledger.head();
        Handler.Block[] memory blocks = handler.blocks();
        _equal("head height vs appended blocks", height, blocks.length);
        bytes32 prev = bytes32(0);
        for (uint256 b = 0; b < blocks.length; ++b) {
            _equal("block links to its parent", uint256(blocks[b].prevHash), uint256(prev));
            _equal("block height", blocks[b].height, b + 1);
            prev = blocks[b].hash;
        }
        _equal("head is the last appended block", uint256(head), uint256(prev));
        if (blocks.length > 0) {
            ILedger.StoredBlock memory stored = ledger.blockOf(head);
            if (stored.recordCount == 0) revert InvariantBroken("head records", 0, 1);
            _equal("head stored height", stored.height, height);
        }
    }

    /// @notice What the Ledger stored of a block (root, sizes, height, time, settlement
    /// digest) is what the bookkeeper built, and never changes.
    function check_storedBlocksNeverChange() public view {
        Handler.Block[] memory blocks = handler.blocks();
        for (uint256 b = 0; b < blocks.length; ++b) {
            Handler.Block memory ghost = blocks[b];
            ILedger.StoredBlock memory stored = ledger.blockOf(ghost.hash);
            _equal("records root", uint256(stored.recordsRoot), uint256(ghost.recordsRoot));
            _equal("record count", stored.recordCount, ghost.recordCount);
            _equal("approved count", stored.approvedCount, ghost.approvedCount);
            _equal("height", stored.height, ghost.height);
            _equal("timestamp", stored.timestamp, ghost.timestamp);
            bytes32 settlement =
                keccak256(abi.encodePacked(ghost.holdsDigest, ghost.releasesDigest));
            _equal("settlement digest", uint256(stored.settlementDigest), uint256(settlement));
        }
    }

    /// @notice Only the roles append, release, refund, audit-reject, register or run the
    /// operator's functions: every unauthorised call failed, each role is still held by
    /// its holder, and the outsider the probes try to promote holds none.
    function check_onlyRolesPassTheGuards() public view {
        _none("unauthorised calls succeeded", handler.unauthorisedSuccesses());
        for (uint256 r = 0; r < roles.length; ++r) {
            Role memory role = roles[r];
            _role(role.name, role.target.hasRole(role.id, role.holder), true);
            _role(role.name, role.target.hasRole(role.id, OUTSIDER), false);
        }
    }

    /// @notice The rules decide every record as the ghost's model of them, rule edges
    /// included: balance exactly spent, daily limit exactly reached, validity ending
    /// now, clock skew at its bound, UTC midnight, replayed sequence numbers.
    function check_rulesDecideAsSpecified() public view {
        _none("verdicts differ from the model", handler.verdictMismatches());
    }

    /// @notice Well-formed calls succeed, and refused ones fail with their exact error.
    function check_callsSucceedOrFailAsSpecified() public view {
        _none("well-formed calls reverted", handler.unexpectedReverts());
        _none("refused calls succeeded", handler.unexpectedSuccesses());
        _none("refusals with another error", handler.wrongReverts());
    }

    /// @notice What the last run did, printed with -vv.
    function afterInvariant() external view {
        _log("blocks appended", handler.blocks().length);
        _log("records approved", handler.approvedRecords());
        _log("records rejected by the rules", handler.rejectedRecords());
        _log("of them on a rule edge", handler.edgeRecords());
        _log("records settled by block audits", handler.settledByAudit());
        _log("records settled one by one", handler.settledOneByOne());
        _log("records rejected by the auditor", handler.rejectedByAudit());
        _log("UTC midnights crossed", handler.midnightsCrossed());
    }

    function _status(Handler.Entry memory entry) private pure returns (uint256) {
        if (!entry.approved) return uint256(ISettlementAudit.RecordStatus.RejectedByRules);
        if (entry.resolutions == 0) return uint256(ISettlementAudit.RecordStatus.Held);
        if (entry.rejectedByAudit) return uint256(ISettlementAudit.RecordStatus.RejectedByAudit);
        return uint256(ISettlementAudit.RecordStatus.Settled);
    }

    function _equal(string memory what, uint256 got, uint256 want) private pure {
        if (got != want) revert InvariantBroken(what, got, want);
    }

    function _atMost(string memory what, uint256 got, uint256 most) private pure {
        if (got > most) revert InvariantBroken(what, got, most);
    }

    function _role(string memory what, bool has, bool should) private pure {
        if (has != should) revert InvariantBroken(what, has ? 1 : 0, should ? 1 : 0);
    }

    function _none(string memory what, uint256 count) private view {
        if (count == 0) return;
        revert HandlerSurprised(what, count, handler.lastSurprise(), handler.lastSurpriseData());
    }
}

/// @title InvariantsTest
/// @notice Each property of {InvariantsBase} in its own campaign (runs x depth handler
/// calls with a fixed seed, see foundry.toml): `make forge-test`.
contract InvariantsTest is InvariantsBase {
    function invariant_valueIsConserved() external view {
        check_valueIsConserved();
    }

    function invariant_moneyMovesOnlyAsCommitted() external view {
        check_moneyMovesOnlyAsCommitted();
    }

    function invariant_noRecordSettlesTwice() external view {
        check_noRecordSettlesTwice();
    }

    function invariant_headMovesOnlyToLinkedBlocks() external view {
        check_headMovesOnlyToLinkedBlocks();
    }

    function invariant_storedBlocksNeverChange() external view {
        check_storedBlocksNeverChange();
    }

    function invariant_onlyRolesPassTheGuards() external view {
        check_onlyRolesPassTheGuards();
    }

    function invariant_rulesDecideAsSpecified() external view {
        check_rulesDecideAsSpecified();
    }

    function invariant_callsSucceedOrFailAsSpecified() external view {
        check_callsSucceedOrFailAsSpecified();
    }
}
