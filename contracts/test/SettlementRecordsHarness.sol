// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

import {SettlementRecords} from "../SettlementRecords.sol";

/// @title SettlementRecordsHarness
/// @notice Exposes the record library to tests that compare it with `posaudit.records`.
contract SettlementRecordsHarness {
    function decode(bytes calldata data) external pure returns (SettlementRecords.Record memory) {
        return SettlementRecords.decode(data);
    }

    function encode(SettlementRecords.Record calldata record) external pure returns (bytes memory) {
        return SettlementRecords.encode(record);
    }

    function digest(bytes calldata data) external pure returns (bytes32) {
        return SettlementRecords.digest(data);
    }
}
