// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

/// @title InvariantTest
/// @notice What forge reads from an invariant test contract to choose its targets: the
/// contracts it may call (`targetContracts`) and, per contract, the functions
/// (`targetSelectors`). forge looks these up by name and ABI.
abstract contract InvariantTest {
    /// @dev The shape forge decodes from `targetSelectors()`.
    struct FuzzSelector {
        address addr;
        bytes4[] selectors;
    }

    address private constant CONSOLE = 0x000000000000000000636F6e736F6c652e6c6f67;

    address[] private _contracts;
    FuzzSelector[] private _selectors;

    /// @notice The contracts the invariant campaign calls.
    function targetContracts() public view returns (address[] memory) {
        return _contracts;
    }

    /// @notice The functions the invariant campaign calls, per contract.
    function targetSelectors() public view returns (FuzzSelector[] memory) {
        return _selectors;
    }

    function _targetContract(address target) internal {
        _contracts.push(target);
    }

    function _targetSelectors(address target, bytes4[] memory selectors) internal {
        _selectors.push(FuzzSelector(target, selectors));
    }

    /// @dev console.log(string, uint256) of forge's console: a plain staticcall, since
    /// the console address has no code and a typed call would check for some.
    function _log(string memory label, uint256 value) internal view {
        bytes memory call_ = abi.encodeWithSignature("log(string,uint256)", label, value);
        (bool ok,) = CONSOLE.staticcall(call_);
        ok;
    }
}
