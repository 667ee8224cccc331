"""The settlement record encoding: layout, round trip and field ranges."""

import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from posaudit.exceptions import EncodingError, FieldRangeError
from posaudit.records import (
    CURRENCIES,
    LEAF_LENGTH,
    MAX_AMOUNT,
    RECORD_LENGTH,
    Domain,
    SettlementRecord,
    SignedRecord,
    decode_record,
    encode_record,
    record_digest,
)

DOMAIN = Domain(31337, "0x" + "11" * 20)


def make_record(**overrides: object) -> SettlementRecord:
    fields: dict[str, object] = {
        "domain": DOMAIN,
        "record_id": bytes(range(16)),
        "terminal_id": "TERM0001",
        "sequence": 7,
        "payer": "0x" + "22" * 20,
        "merchant": "0x" + "33" * 20,
        "amount": 1250,
        "currency": "EUR",
        "timestamp": 1_764_720_000,
        "valid_until": 1_764_723_600,
        "goods_category": 3,
        "operator_id": 42,
    }
    fields.update(overrides)
    return SettlementRecord(**fields)  # type: ignore[arg-type]


def test_encoding_known_answer() -> None:
    """Fixed vector: the same bytes are asserted against the Solidity library."""
    encoding = encode_record(make_record())

    assert len(encoding) == RECORD_LENGTH
    assert encoding.hex() == (
        "0000000000007a69"
        + "11" * 20
        + bytes(range(16)).hex()
        + b"TERM0001".hex()
        + "0000000000000007"
        + "22" * 20
        + "33" * 20
        + "00000000000004e2"
        + b"EUR".hex()
        + "00000000692f7d80"
        + "00000000692f8b90"
        + "0003"
        + "0000002a"
    )


def test_signed_record_leaf_is_encoding_and_signature_hash() -> None:
    signed = SignedRecord(make_record(), b"\x05" * 256)

    assert len(signed.leaf) == LEAF_LENGTH
    assert signed.leaf == signed.encoding + hashlib.sha256(b"\x05" * 256).digest()
    assert record_digest(signed.encoding) == hashlib.sha256(signed.encoding).digest()


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("amount", 0),
        ("amount", -1),
        ("amount", MAX_AMOUNT + 1),
        ("amount", 2**64),
        ("amount", 2**256 - 1),
        ("amount", True),
        ("sequence", 0),
        ("sequence", 2**64),
        ("currency", "ABC"),
        ("currency", "eur"),
        ("record_id", b"\x00" * 15),
        ("record_id", "0" * 16),
        ("terminal_id", "TERM001"),
        ("terminal_id", "TERM 001"),
        ("terminal_id", "TERMINAL9"),
        ("payer", "0x1234"),
        ("merchant", "33" * 20),
        ("valid_until", 1_764_719_999),
        ("goods_category", 2**16),
        ("operator_id", -1),
    ],
    ids=lambda value: repr(value)[:24],
)
def test_record_out_of_range_field_raises_naming_it(field: str, value: object) -> None:
    with pytest.raises(FieldRangeError) as raised:
        make_record(**{field: value})

    assert raised.value.field == field
    assert field in str(raised.value)


def test_domain_rejects_zero_chain_id() -> None:
    with pytest.raises(FieldRangeError, match="chain_id"):
        Domain(0, "0x" + "11" * 20)


@pytest.mark.parametrize("length", [0, RECORD_LENGTH - 1, RECORD_LENGTH + 1])
def test_decode_wrong_length_raises(length: int) -> None:
    with pytest.raises(EncodingError, match=str(RECORD_LENGTH)):
        decode_record(b"\x00" * length)


def test_decode_zero_amount_raises_field_error() -> None:
    encoding = bytearray(encode_record(make_record()))
    encoding[100:108] = bytes(8)

    with pytest.raises(FieldRangeError, match="amount"):
        decode_record(bytes(encoding))


addresses = st.binary(min_size=20, max_size=20).map(lambda raw: "0x" + raw.hex())


@given(
    chain_id=st.integers(1, 2**64 - 1),
    ledger=addresses,
    record_id=st.binary(min_size=16, max_size=16),
    terminal_id=st.text(
        st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=8, max_size=8
    ),
    sequence=st.integers(1, 2**64 - 1),
    payer=addresses,
    merchant=addresses,
    amount=st.integers(1, MAX_AMOUNT),
    currency=st.sampled_from(sorted(CURRENCIES)),
    timestamp=st.integers(0, 2**63),
    validity=st.integers(0, 2**63 - 1),
    goods_category=st.integers(0, 2**16 - 1),
    operator_id=st.integers(0, 2**32 - 1),
)
def test_encoding_round_trips(
    chain_id: int, ledger: str, validity: int, timestamp: int, **fields: object
) -> None:
    record = make_record(
        domain=Domain(chain_id, ledger),
        timestamp=timestamp,
        valid_until=timestamp + validity,
        **fields,
    )

    assert decode_record(encode_record(record)) == record
