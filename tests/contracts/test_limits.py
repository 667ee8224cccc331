"""Amount edges get one verdict at every layer: the record type, the upload format
the gateway reads, the rules model and the Ledger on a real EVM.

An amount is valid from 1 to 2**63 - 1. The record type and the gateway refuse the
others before anything is signed or stored; the Ledger, given the raw bytes of those
that fit the 8-byte field, rejects them with ``AmountOutOfRange``; 2**64 and beyond do
not fit the field at all, so nothing carrying them can reach the chain.
"""

from __future__ import annotations

import dataclasses

import pytest

from posaudit.exceptions import FieldRangeError, UploadRejectedError
from posaudit.records import SettlementRecord
from posaudit.rules import LedgerModel, PayerAccount, StatusCode, TerminalEntry
from posaudit.upload import read_upload, upload_document

from .conftest import NOON

RICH = "0x" + "ed" * 20
MAX_AMOUNT = 2**63 - 1
EDGES = [0, 1, MAX_AMOUNT, 2**63, 2**64, 2**256 - 1]
IDS = ["0", "1", "2^63-1", "2^63", "2^64", "2^256-1"]


def valid(amount: int) -> bool:
    return 1 <= amount <= MAX_AMOUNT


@pytest.fixture
def rich_payer(ledger, owner):
    """A payer whose balance and daily limit cover the largest valid amount."""
    ledger.openAccount(RICH, 2**64 - 1, 1990_05_17, True, sender=owner)
    ledger.deposit(RICH, MAX_AMOUNT, sender=owner)
    return RICH


@pytest.mark.parametrize("amount", EDGES, ids=IDS)
def test_record_type_accepts_exactly_the_valid_amounts(make_record, amount):
    record = make_record().record

    if valid(amount):
        assert dataclasses.replace(record, amount=amount).amount == amount
    else:
        with pytest.raises(FieldRangeError, match="amount"):
            dataclasses.replace(record, amount=amount)


@pytest.mark.parametrize("amount", EDGES, ids=IDS)
def test_gateway_upload_format_accepts_exactly_the_valid_amounts(
    make_record, domain, amount
):
    document = upload_document(make_record())
    document["record"]["amount"] = amount

    if valid(amount):
        assert read_upload(document, domain).record.amount == amount
    else:
        with pytest.raises(UploadRejectedError) as refused:
            read_upload(document, domain)
        assert (refused.value.code, refused.value.field) == (
            "OUT_OF_RANGE",
            "record.amount",
        )


@pytest.mark.parametrize("amount", EDGES, ids=IDS)
def test_ledger_and_rules_model_decide_alike(
    append, make_record, ledger, merchant, rich_payer, domain, amount
):
    signed = make_record(payer=rich_payer)
    if amount >= 2**64:
        with pytest.raises(OverflowError):
            amount.to_bytes(8, "big")
        return

    leaf = bytearray(signed.leaf)
    leaf[100:108] = amount.to_bytes(8, "big")
    forged = dataclasses.replace(signed)
    object.__setattr__(forged, "encoding", bytes(leaf[:133]))
    before = ledger.accountOf(rich_payer).balance

    (code,) = append([forged], at=NOON).codes

    if valid(amount):
        model = LedgerModel(domain, "EUR")
        model.terminals["TERM0001"] = TerminalEntry(merchant.address.lower())
        model.accounts[rich_payer] = PayerAccount(
            balance=MAX_AMOUNT, daily_limit=2**64 - 1, birth_date=1990_05_17, kyc=True
        )
        record: SettlementRecord = dataclasses.replace(signed.record, amount=amount)
        assert code == model.decide(record, NOON) == StatusCode.APPROVED
        assert ledger.accountOf(rich_payer).balance == before - amount
    else:
        assert code == StatusCode.AMOUNT_OUT_OF_RANGE
        assert ledger.accountOf(rich_payer).balance == before
