// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

import {InvariantsBase} from "./Invariants.t.sol";

/// @title AllInvariantsTest
/// @notice Every property of {InvariantsBase} after every call of one campaign, naming
/// all that fail at the first call that breaks any: what forge/mutants.py runs against
/// each mutant (one campaign instead of eight).
contract AllInvariantsTest is InvariantsBase {
    /// @notice Thrown with the comma-separated names of the properties that failed.
    error PropertiesBroken(string names);

    function invariant_all() external view {
        bytes4[8] memory checks = [
            this.check_valueIsConserved.selector,
            this.check_moneyMovesOnlyAsCommitted.selector,
            this.check_noRecordSettlesTwice.selector,
            this.check_headMovesOnlyToLinkedBlocks.selector,
            this.check_storedBlocksNeverChange.selector,
            this.check_onlyRolesPassTheGuards.selector,
            this.check_rulesDecideAsSpecified.selector,
            this.check_callsSucceedOrFailAsSpecified.selector
        ];
        string[8] memory names = [
            "invariant_valueIsConserved",
            "invariant_moneyMovesOnlyAsCommitted",
            "invariant_noRecordSettlesTwice",
            "invariant_headMovesOnlyToLinkedBlocks",
            "invariant_storedBlocksNeverChange",
            "invariant_onlyRolesPassTheGuards",
            "invariant_rulesDecideAsSpecified",
            "invariant_callsSucceedOrFailAsSpecified"
        ];
        string memory broken = "";
        for (uint256 i = 0; i < checks.length; ++i) {
            (bool ok,) = address(this).staticcall(abi.encodeWithSelector(checks[i]));
            if (ok) continue;
            broken = bytes(broken).length == 0 ? names[i] : string.concat(broken, ",", names[i]);
        }
        if (bytes(broken).length != 0) revert PropertiesBroken(broken);
    }
}
