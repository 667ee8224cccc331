"""The contract and the independent Python rules model agree record by record."""

from __future__ import annotations

import random
from typing import Any

import pytest

from posaudit.records import Domain
from posaudit.rules import LedgerModel, PayerAccount, StatusCode, TerminalEntry

from .conftest import NOON

RESTRICTED = 9


def model_of(
    domain: Domain, payers: list[str], merchant: Any, other_merchant: Any
) -> LedgerModel:
    model = LedgerModel(domain, "EUR")
    model.terminals["TERM0001"] = TerminalEntry(merchant.address.lower())
    model.terminals["TERM0002"] = TerminalEntry(other_merchant.address.lower())
    model.minimum_age[RESTRICTED] = 21
    for payer in payers:
        model.accounts[payer] = PayerAccount(
            balance=100_000, daily_limit=50_000, birth_date=1990_05_17, kyc=True
        )
    return model


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_contract_agrees_with_model_on_random_workload(
    ledger, owner, append, make_record, domain, payers, merchant, other_merchant, seed
):
    """Random payers, amounts, terminals, categories and clocks, in mixed blocks."""
    rng = random.Random(seed)
    model = model_of(domain, payers, merchant, other_merchant)
    ledger.setMinimumAge(RESTRICTED, 21, sender=owner)
    ledger.updateAccount(payers[5], 50_000, False, False, sender=owner)
    model.accounts[payers[5]].kyc = False
    ledger.updateAccount(payers[6], 50_000, True, True, sender=owner)
    model.accounts[payers[6]].frozen = True
    at = NOON
    codes_seen: set[StatusCode] = set()

    for _ in range(6):
        at += rng.choice([1, 600, 40_000])
        records = []
        for _ in range(rng.randint(1, 12)):
            terminal = rng.choice(["TERM0001", "TERM0002"])
            shop = merchant if terminal == "TERM0001" else other_merchant
            records.append(
                make_record(
                    terminal_id=terminal,
                    merchant=shop.address if rng.random() < 0.9 else "0x" + "12" * 20,
                    payer=rng.choice([*payers, "0x" + "34" * 20]),
                    amount=rng.choice([1, 500, 9_999, 25_000, 60_000]),
                    goods_category=rng.choice([0, 0, RESTRICTED]),
                    timestamp=at - rng.choice([30, 60]),
                    valid_until=at + rng.choice([-1, 0, 3_600, 100_000]),
                    currency=rng.choice(["EUR"] * 9 + ["USD"]),
                )
            )
        block = append(records, at=at)

        expected = [model.decide(record.record, at) for record in records]
        assert block.codes == expected
        codes_seen.update(expected)

    for payer in payers:
        assert ledger.accountOf(payer).balance == model.accounts[payer].balance
    assert ledger.heldFor(merchant) == model.held.get(merchant.address.lower(), 0)
    assert len(codes_seen) >= 4
