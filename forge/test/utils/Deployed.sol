// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {IAccessControl} from "@openzeppelin/contracts/access/IAccessControl.sol";

import {ILedger} from "../../../contracts/interfaces/ILedger.sol";
import {ISettlementAudit} from "../../../contracts/interfaces/ISettlementAudit.sol";
import {ITerminalRegistry} from "../../../contracts/interfaces/ITerminalRegistry.sol";

// The suite deploys the contracts from their compiled artifacts (`VM.deployCode`) and
// reaches them through these interfaces, never through their sources: a change to one
// contract (a mutant, see forge/mutants.py) then recompiles that contract alone.

/// @title ILedgerUnderTest
/// @notice The Ledger's whole external surface: {ILedger} plus its roles, accounts,
/// operator functions and views.
interface ILedgerUnderTest is ILedger, IAccessControl {
    function OPERATOR_ROLE() external view returns (bytes32);
    function BOOKKEEPER_ROLE() external view returns (bytes32);
    function AUDIT_ROLE() external view returns (bytes32);
    function DEFAULT_ADMIN_ROLE() external view returns (bytes32);
    function openAccount(address payer, uint64 dailyLimit, uint32 birthDate, bool kyc) external;
    function updateAccount(address payer, uint64 dailyLimit, bool kyc, bool frozen) external;
    function deposit(address payer, uint64 amount) external;
    function setTarget(uint256 target_) external;
    function setMinimumAge(uint16 goodsCategory, uint8 age) external;
    function pause() external;
    function unpause() external;
    function head() external view returns (bytes32 blockHash, uint64 height);
    function accountOf(address payer) external view returns (Account memory);
    function heldFor(address merchant) external view returns (uint256);
    function creditOf(address merchant) external view returns (uint256);
    function lastSequenceOf(bytes8 terminalId) external view returns (uint64);
    function target() external view returns (uint256);
}

/// @title IRegistryUnderTest
/// @notice {ITerminalRegistry} plus its roles.
interface IRegistryUnderTest is ITerminalRegistry, IAccessControl {
    function OPERATOR_ROLE() external view returns (bytes32);
    function DEFAULT_ADMIN_ROLE() external view returns (bytes32);
}

/// @title IAuditUnderTest
/// @notice {ISettlementAudit} plus its roles.
interface IAuditUnderTest is ISettlementAudit, IAccessControl {
    function AUDITOR_ROLE() external view returns (bytes32);
    function DEFAULT_ADMIN_ROLE() external view returns (bytes32);
}
