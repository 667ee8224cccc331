// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

import {AccessControl} from "@openzeppelin/contracts/access/AccessControl.sol";

import {ITerminalRegistry} from "./interfaces/ITerminalRegistry.sol";

/// @title TerminalRegistry
/// @notice On-chain register of POS terminals (claims 1 and 2): id, merchant, RSA public
/// key and active flag. Operators register and deactivate terminals; the Ledger asks it
/// whether a record's terminal may submit and which merchant it pays.
contract TerminalRegistry is ITerminalRegistry, AccessControl {
    struct Terminal {
        address merchant;
        bool active;
        bytes modulus;
        bytes exponent;
    }

    bytes32 public constant OPERATOR_ROLE = keccak256("OPERATOR_ROLE");
    uint256 public constant MIN_KEY_BITS = 2048;

    mapping(bytes8 terminalId => Terminal) private _terminals;

    constructor(address admin) {
        _grantRole(DEFAULT_ADMIN_ROLE, admin);
        _grantRole(OPERATOR_ROLE, admin);
    }

    /// @inheritdoc ITerminalRegistry
    function registerTerminal(
        bytes8 terminalId,
        address merchant,
        bytes calldata modulus,
        bytes calldata exponent
    ) external onlyRole(OPERATOR_ROLE) {
        if (_terminals[terminalId].merchant != address(0)) {
            revert RegistryTerminalExists(terminalId);
        }
        if (merchant == address(0)) revert RegistryZeroMerchant(terminalId);
        uint256 bits = _bitLength(modulus);
        if (bits < MIN_KEY_BITS) revert RegistryKeyTooSmall(bits, MIN_KEY_BITS);
        uint256 length = exponent.length;
        if (length == 0 || length > 32 || uint8(exponent[length - 1]) & 1 == 0) {
            revert RegistryMalformedExponent(exponent);
        }

        _terminals[terminalId] = Terminal(merchant, true, modulus, exponent);
        emit TerminalRegistered(terminalId, merchant, keccak256(modulus));
    }

    /// @inheritdoc ITerminalRegistry
    function deactivateTerminal(bytes8 terminalId) external onlyRole(OPERATOR_ROLE) {
        Terminal storage terminal = _terminals[terminalId];
        if (terminal.merchant == address(0)) revert RegistryUnknownTerminal(terminalId);

        terminal.active = false;
        emit TerminalDeactivated(terminalId);
    }

    /// @inheritdoc ITerminalRegistry
    function terminalStatus(bytes8 terminalId)
        external
        view
        returns (address merchant, bool active)
    {
        Terminal storage terminal = _terminals[terminalId];
        return (terminal.merchant, terminal.active);
    }

    /// @inheritdoc ITerminalRegistry
    function publicKeyOf(bytes8 terminalId)
        external
        view
        returns (bytes memory modulus, bytes memory exponent)
    {
        Terminal storage terminal = _terminals[terminalId];
        if (terminal.merchant == address(0)) revert RegistryUnknownTerminal(terminalId);

        return (terminal.modulus, terminal.exponent);
    }

    /// @dev Bit length of a big-endian unsigned integer, ignoring leading zero bytes.
    function _bitLength(bytes calldata value) private pure returns (uint256) {
        for (uint256 i = 0; i < value.length; ++i) {
            uint8 top = uint8(value[i]);
            if (top == 0) continue;

            uint256 bits = (value.length - i) * 8;
            while (top < 0x80) {
                top <<= 1;
                --bits;
            }
            return bits;
        }
        return 0;
    }
}
