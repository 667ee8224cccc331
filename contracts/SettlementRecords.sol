// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

/// @title SettlementRecords
/// @notice The fixed-length binary encoding of a settlement record, shared byte for byte
/// with `posaudit/records.py`: big-endian, packed, 133 bytes. An audit-tree leaf is the
/// encoding followed by the SHA-256 of the terminal's signature over it (165 bytes).
///
/// Layout (offset, size): chainId 0/8, ledger 8/20, recordId 28/16, terminalId 44/8,
/// sequence 52/8, payer 60/20, merchant 80/20, amount 100/8, currency 108/3,
/// timestamp 111/8, validUntil 119/8, goodsCategory 127/2, operatorId 129/4.
library SettlementRecords {
    struct Record {
        uint64 chainId;
        address ledger;
        bytes16 recordId;
        bytes8 terminalId;
        uint64 sequence;
        address payer;
        address merchant;
        uint64 amount;
        bytes3 currency;
        uint64 timestamp;
        uint64 validUntil;
        uint16 goodsCategory;
        uint32 operatorId;
    }

    uint256 internal constant RECORD_LENGTH = 133;
    uint256 internal constant LEAF_LENGTH = 165;

    /// @notice Thrown when bytes shorter than one record are decoded.
    error SettlementRecordsTooShort(uint256 length, uint256 required);

    /// @notice Decodes the record at the start of `data` (a record or a whole leaf).
    function decode(bytes calldata data) internal pure returns (Record memory record) {
        if (data.length < RECORD_LENGTH) {
            revert SettlementRecordsTooShort(data.length, RECORD_LENGTH);
        }

        record.chainId = uint64(bytes8(data[0:8]));
        record.ledger = address(bytes20(data[8:28]));
        record.recordId = bytes16(data[28:44]);
        record.terminalId = bytes8(data[44:52]);
        record.sequence = uint64(bytes8(data[52:60]));
        record.payer = address(bytes20(data[60:80]));
        record.merchant = address(bytes20(data[80:100]));
        record.amount = uint64(bytes8(data[100:108]));
        record.currency = bytes3(data[108:111]);
        record.timestamp = uint64(bytes8(data[111:119]));
        record.validUntil = uint64(bytes8(data[119:127]));
        record.goodsCategory = uint16(bytes2(data[127:129]));
        record.operatorId = uint32(bytes4(data[129:133]));
    }

    /// @notice Encodes `record` into its 133 bytes (the inverse of `decode`).
    function encode(Record memory record) internal pure returns (bytes memory) {
        bytes memory head = abi.encodePacked(
            record.chainId,
            record.ledger,
            record.recordId,
            record.terminalId,
            record.sequence,
            record.payer,
            record.merchant
        );
        return abi.encodePacked(
            head,
            record.amount,
            record.currency,
            record.timestamp,
            record.validUntil,
            record.goodsCategory,
            record.operatorId
        );
    }

    /// @notice SHA-256 of an encoded record: the digest a terminal signs.
    function digest(bytes calldata data) internal pure returns (bytes32) {
        return sha256(data[:RECORD_LENGTH]);
    }
}
