"""The terminal registry, and the record encoding shared by Python and Solidity."""

from __future__ import annotations

import hashlib
from typing import Any

import ape
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from posaudit.records import encode_record
from posaudit.signing import public_numbers


@pytest.fixture(scope="module")
def records_harness(project: Any, owner: Any) -> Any:
    return project.SettlementRecordsHarness.deploy(sender=owner)


def solidity_fields(record: Any) -> tuple[Any, ...]:
    return (
        record.domain.chain_id,
        record.domain.ledger,
        record.record_id,
        record.terminal_id.encode(),
        record.sequence,
        record.payer,
        record.merchant,
        record.amount,
        record.currency.encode(),
        record.timestamp,
        record.valid_until,
        record.goods_category,
        record.operator_id,
    )


class TestRecordEncoding:
    @pytest.mark.parametrize(
        "overrides",
        [
            {},
            {"amount": 2**63 - 1, "sequence": 2**64 - 1, "operator_id": 2**32 - 1},
            {"amount": 1, "timestamp": 0, "valid_until": 0, "goods_category": 65535},
        ],
        ids=["typical", "maximums", "minimums"],
    )
    def test_python_and_solidity_produce_identical_bytes(
        self, records_harness, make_record, overrides
    ):
        record = make_record(**overrides).record
        encoding = encode_record(record)

        solidity = bytes(records_harness.encode(solidity_fields(record)))

        assert solidity == encoding
        assert (
            bytes(records_harness.digest(encoding)) == hashlib.sha256(encoding).digest()
        )

    @pytest.mark.parametrize(
        "overrides",
        [
            {"amount": 98_765, "goods_category": 4, "operator_id": 17},
            {
                "amount": 2**63 - 1,
                "sequence": 2**64 - 1,
                "operator_id": 2**32 - 1,
                "goods_category": 65535,
                "record_id": b"\xff" * 16,
                "terminal_id": "~~~~~~~~",
                "timestamp": 2**64 - 2,
                "valid_until": 2**64 - 1,
            },
        ],
        ids=["typical", "every-field-at-its-maximum"],
    )
    def test_solidity_decodes_python_encoding_field_for_field(
        self, records_harness, make_record, overrides
    ):
        """Neighbouring fields must not leak into each other when decoded."""
        record = make_record(**overrides).record

        decoded = records_harness.decode(encode_record(record))

        assert (
            decoded.chainId, decoded.ledger.lower(), bytes(decoded.recordId),
            bytes(decoded.terminalId), decoded.sequence, decoded.payer.lower(),
            decoded.merchant.lower(), decoded.amount, bytes(decoded.currency),
            decoded.timestamp, decoded.validUntil, decoded.goodsCategory,
            decoded.operatorId,
        ) == (
            record.domain.chain_id, record.domain.ledger, record.record_id,
            record.terminal_id.encode(), record.sequence, record.payer,
            record.merchant, record.amount, record.currency.encode(),
            record.timestamp, record.valid_until, record.goods_category,
            record.operator_id,
        )  # fmt: skip

    def test_decoding_a_whole_leaf_ignores_the_signature_hash(
        self, records_harness, make_record
    ):
        signed = make_record()

        from_leaf = records_harness.decode(signed.leaf)

        assert from_leaf == records_harness.decode(signed.encoding)

    def test_short_input_reverts(self, records_harness):
        with ape.reverts(records_harness.SettlementRecordsTooShort):
            records_harness.decode(b"\x00" * 132)


class TestTerminalRegistry:
    def test_registered_terminal_reports_merchant_and_key(
        self, registry, merchant, terminal_keys
    ):
        numbers = public_numbers(terminal_keys["TERM0001"].public_key())

        status = registry.terminalStatus(b"TERM0001")
        modulus, exponent = registry.publicKeyOf(b"TERM0001")

        assert tuple(status) == (merchant.address, True)
        assert bytes(modulus) == numbers.modulus
        assert bytes(exponent) == numbers.exponent

    def test_key_under_2048_bits_is_refused(self, registry, owner, merchant):
        small = rsa.generate_private_key(public_exponent=65537, key_size=1024)
        numbers = public_numbers(small.public_key())

        with ape.reverts(registry.RegistryKeyTooSmall):
            registry.registerTerminal(
                b"TERM0099", merchant, numbers.modulus, numbers.exponent, sender=owner
            )

    def test_2047_bit_modulus_padded_to_256_bytes_is_refused(
        self, registry, owner, merchant
    ):
        padded = (2**2046 + 1).to_bytes(256, "big")

        with ape.reverts(registry.RegistryKeyTooSmall, bits=2047, minimumBits=2048):
            registry.registerTerminal(
                b"TERM0099", merchant, padded, b"\x01\x00\x01", sender=owner
            )

    def test_even_exponent_is_refused(self, registry, owner, merchant, terminal_keys):
        modulus = public_numbers(terminal_keys["TERM0001"].public_key()).modulus

        with ape.reverts(registry.RegistryMalformedExponent):
            registry.registerTerminal(
                b"TERM0099", merchant, modulus, b"\x02", sender=owner
            )

    def test_terminal_cannot_be_registered_twice(
        self, registry, owner, merchant, terminal_keys
    ):
        numbers = public_numbers(terminal_keys["TERM0001"].public_key())

        with ape.reverts(registry.RegistryTerminalExists):
            registry.registerTerminal(
                b"TERM0001", merchant, numbers.modulus, numbers.exponent, sender=owner
            )

    def test_deactivation_is_recorded(self, registry, owner, merchant):
        receipt = registry.deactivateTerminal(b"TERM0001", sender=owner)

        assert tuple(registry.terminalStatus(b"TERM0001")) == (merchant.address, False)
        assert len(receipt.events.filter(registry.TerminalDeactivated)) == 1

    def test_outsider_cannot_register_or_deactivate(
        self, registry, outsider, merchant, terminal_keys
    ):
        numbers = public_numbers(terminal_keys["TERM0001"].public_key())

        with ape.reverts(registry.AccessControlUnauthorizedAccount):
            registry.registerTerminal(
                b"TERM0098",
                merchant,
                numbers.modulus,
                numbers.exponent,
                sender=outsider,
            )
        with ape.reverts(registry.AccessControlUnauthorizedAccount):
            registry.deactivateTerminal(b"TERM0001", sender=outsider)

    def test_unknown_terminal_cannot_be_deactivated(self, registry, owner):
        with ape.reverts(registry.RegistryUnknownTerminal):
            registry.deactivateTerminal(b"NOSUCH01", sender=owner)
