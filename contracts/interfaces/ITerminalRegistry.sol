// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

/// @title ITerminalRegistry
/// @notice Terminals known to the network: each belongs to one merchant and signs its
/// records with an RSA key of at least 2048 bits whose public half is kept here.
interface ITerminalRegistry {
    /// @notice Emitted when an operator registers a terminal.
    event TerminalRegistered(bytes8 indexed terminalId, address indexed merchant, bytes32 keyHash);

    /// @notice Emitted when an operator deactivates a terminal; its records are rejected.
    event TerminalDeactivated(bytes8 indexed terminalId);

    /// @notice Thrown when a terminal id is registered a second time.
    error RegistryTerminalExists(bytes8 terminalId);

    /// @notice Thrown when an operation names a terminal that was never registered.
    error RegistryUnknownTerminal(bytes8 terminalId);

    /// @notice Thrown when the merchant of a new terminal is the zero address.
    error RegistryZeroMerchant(bytes8 terminalId);

    /// @notice Thrown when an RSA modulus is shorter than the required bit length.
    error RegistryKeyTooSmall(uint256 bits, uint256 minimumBits);

    /// @notice Thrown when an RSA exponent is empty, even or wider than 32 bytes.
    error RegistryMalformedExponent(bytes exponent);

    /// @notice Registers `terminalId` for `merchant` with its RSA public key.
    /// @dev Requires the operator role; emits `TerminalRegistered`.
    function registerTerminal(
        bytes8 terminalId,
        address merchant,
        bytes calldata modulus,
        bytes calldata exponent
    ) external;

    /// @notice Deactivates `terminalId`; requires the operator role.
    /// @dev Emits `TerminalDeactivated`.
    function deactivateTerminal(bytes8 terminalId) external;

    /// @notice The merchant of `terminalId` and whether it may submit records.
    /// @dev An unregistered terminal returns the zero merchant and `active == false`.
    function terminalStatus(bytes8 terminalId)
        external
        view
        returns (address merchant, bool active);

    /// @notice The registered RSA public key of `terminalId`.
    function publicKeyOf(bytes8 terminalId)
        external
        view
        returns (bytes memory modulus, bytes memory exponent);
}
