// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

/// @title Vm
/// @notice The few forge cheatcodes this suite uses, declared by hand: forge-std is not
/// vendored (no git submodules offline), and the npm package `forge-std` (1.1.2) is an
/// unofficial copy of an early release whose `Test.sol` imports a `ds-test` it does not
/// ship and which predates invariant targets.
/// @dev Signatures as forge implements them; the cheatcode address is fixed.
interface Vm {
    /// @notice A log recorded since `recordLogs`.
    struct Log {
        bytes32[] topics;
        bytes data;
        address emitter;
    }

    /// @notice Sets `block.timestamp`.
    function warp(uint256 newTimestamp) external;

    /// @notice Makes `sender` the `msg.sender` of the next call.
    function prank(address sender) external;

    /// @notice Makes `sender` the `msg.sender` of every call until `stopPrank`.
    function startPrank(address sender) external;

    /// @notice Ends a `startPrank`.
    function stopPrank() external;

    /// @notice Starts recording the logs of the calls that follow.
    function recordLogs() external;

    /// @notice The logs recorded since `recordLogs` or the last call of this; stops
    /// nothing.
    function getRecordedLogs() external returns (Log[] memory logs);

    /// @notice Deploys the artifact `artifactPath` ("File.sol:Contract") with the
    /// ABI-encoded `constructorArgs`.
    function deployCode(string calldata artifactPath, bytes calldata constructorArgs)
        external
        returns (address deployed);
}

/// @dev keccak256("hevm cheat code") truncated to 20 bytes.
Vm constant VM = Vm(address(uint160(uint256(keccak256("hevm cheat code")))));
