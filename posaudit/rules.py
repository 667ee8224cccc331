"""The payment rules, as an independent Python model of the Ledger contract.

``StatusCode`` mirrors the Solidity enum ``ILedger.StatusCode`` value for value. The
model (:class:`LedgerModel`) decides records the way the contract does, from its own
state, and serves as ground truth for the demo, the simulation and property tests that
compare it with the contract record by record.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from enum import IntEnum

from posaudit.records import MAX_AMOUNT, Domain, SettlementRecord

MAX_CLOCK_SKEW = 300
SECONDS_PER_DAY = 86_400


class StatusCode(IntEnum):
    """Outcome of the rules for one record, in the order the rules are checked."""

    APPROVED = 0
    WRONG_DOMAIN = 1
    UNKNOWN_TERMINAL = 2
    TERMINAL_INACTIVE = 3
    MERCHANT_MISMATCH = 4
    SEQUENCE_NOT_ABOVE = 5
    AMOUNT_OUT_OF_RANGE = 6
    WRONG_CURRENCY = 7
    TIMESTAMP_IN_FUTURE = 8
    EXPIRED = 9
    UNKNOWN_PAYER = 10
    PAYER_FROZEN = 11
    PAYER_NOT_KYC = 12
    UNDER_AGE = 13
    INSUFFICIENT_BALANCE = 14
    DAILY_LIMIT_EXCEEDED = 15
    PROOF_MISMATCH = 16


def civil_date(timestamp: int) -> int:
    """The UTC calendar date of ``timestamp`` as the integer yyyymmdd."""
    day = dt.datetime.fromtimestamp(timestamp, dt.UTC).date()
    return day.year * 10_000 + day.month * 100 + day.day


@dataclass
class PayerAccount:
    """A payer as the Ledger keeps it."""

    balance: int = 0
    daily_limit: int = 0
    birth_date: int = 0
    kyc: bool = False
    frozen: bool = False
    spent_today: int = 0
    spent_day: int = 0


@dataclass
class TerminalEntry:
    """A registered terminal."""

    merchant: str
    active: bool = True


@dataclass
class LedgerModel:
    """The Ledger's rules and the state they read and write, without a chain."""

    domain: Domain
    currency: str
    accounts: dict[str, PayerAccount] = field(default_factory=dict)
    terminals: dict[str, TerminalEntry] = field(default_factory=dict)
    last_sequence: dict[str, int] = field(default_factory=dict)
    minimum_age: dict[int, int] = field(default_factory=dict)
    held: dict[str, int] = field(default_factory=dict)

    def decide(self, record: SettlementRecord, now: int) -> StatusCode:
        """Apply the rules to ``record`` at chain time ``now`` and update the state."""
        code = self._check_terminal(record)
        if code is not StatusCode.APPROVED:
            return code

        self.last_sequence[record.terminal_id] = record.sequence
        code = self._check_payment(record, now)
        if code is StatusCode.APPROVED:
            self._hold(record, now)

        return code

    def _check_terminal(self, record: SettlementRecord) -> StatusCode:
        terminal = self.terminals.get(record.terminal_id)
        if record.domain != self.domain:
            return StatusCode.WRONG_DOMAIN
        if terminal is None:
            return StatusCode.UNKNOWN_TERMINAL
        if not terminal.active:
            return StatusCode.TERMINAL_INACTIVE
        if terminal.merchant != record.merchant:
            return StatusCode.MERCHANT_MISMATCH
        if record.sequence <= self.last_sequence.get(record.terminal_id, 0):
            return StatusCode.SEQUENCE_NOT_ABOVE
        return StatusCode.APPROVED

    def _check_payment(self, record: SettlementRecord, now: int) -> StatusCode:
        account = self.accounts.get(record.payer)
        if not 1 <= record.amount <= MAX_AMOUNT:
            return StatusCode.AMOUNT_OUT_OF_RANGE
        if record.currency != self.currency:
            return StatusCode.WRONG_CURRENCY
        if record.timestamp > now + MAX_CLOCK_SKEW:
            return StatusCode.TIMESTAMP_IN_FUTURE
        if record.valid_until < now:
            return StatusCode.EXPIRED
        if account is None:
            return StatusCode.UNKNOWN_PAYER
        if account.frozen:
            return StatusCode.PAYER_FROZEN
        if not account.kyc:
            return StatusCode.PAYER_NOT_KYC
        if not self._old_enough(account, record.goods_category, now):
            return StatusCode.UNDER_AGE
        if record.amount > account.balance:
            return StatusCode.INSUFFICIENT_BALANCE
        if self._spent_on(account, now) + record.amount > account.daily_limit:
            return StatusCode.DAILY_LIMIT_EXCEEDED
        return StatusCode.APPROVED

    def _old_enough(self, account: PayerAccount, category: int, now: int) -> bool:
        minimum = self.minimum_age.get(category, 0)
        if minimum == 0:
            return True
        if account.birth_date == 0:
            return False

        born = dt.date(
            account.birth_date // 10_000,
            account.birth_date // 100 % 100,
            account.birth_date % 100,
        )
        today = dt.datetime.fromtimestamp(now, dt.UTC).date()
        age = (
            today.year - born.year - ((today.month, today.day) < (born.month, born.day))
        )
        return age >= minimum

    @staticmethod
    def _spent_on(account: PayerAccount, now: int) -> int:
        same_day = account.spent_day == now // SECONDS_PER_DAY
        return account.spent_today if same_day else 0

    def _hold(self, record: SettlementRecord, now: int) -> None:
        account = self.accounts[record.payer]
        account.spent_today = self._spent_on(account, now) + record.amount
        account.spent_day = now // SECONDS_PER_DAY
        account.balance -= record.amount
        self.held[record.merchant] = self.held.get(record.merchant, 0) + record.amount
