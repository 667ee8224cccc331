"""A simulated business day: merchants, terminals, payers and every payment they make.

The generator is seeded and pure (no I/O, no clock): given a :class:`Scenario`, the
deployment's domain and the chain time the day starts at, it plans every submission a
terminal will make, signs it, and decides its right outcome.

The day runs from 08:00 to 20:00, compressed into ``Scenario.duration`` seconds. Load
follows a base curve (a morning ramp, a plateau, an evening decline) plus a lunchtime
surge around 12:30 that carries most records: the surge is what congests the network.

Most records are ordinary purchases; a share are bad in one of the ways a payment can
fail, each kind at least once. Kinds the Ledger's rules catch reach the chain and are
rejected there with a status code; kinds the gateway catches (a forged signature, an
unknown or inactive terminal, another domain, a sequence number taken by another
record) are refused with an HTTP 4xx and never reach the chain; an exact resend is
stored once and answered as a repeat.

Outcomes do not depend on timing. Each payer pays at one terminal only, and each
terminal submits its records in sequence order from one thread, so the chain sees each
terminal's records in the order planned, and the rules model
(:class:`posaudit.rules.LedgerModel`) decides them here in that order. Record times
are the planned submission times, which the chain's block time can only follow; a
record meant to be expired expired hours before, and payers' birthdays lie weeks away
from the day, so that no outcome turns on a second.
"""

from __future__ import annotations

import datetime as dt
import math
import random
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from enum import StrEnum

from cryptography.hazmat.primitives.asymmetric import rsa

from posaudit.exceptions import PosauditError
from posaudit.records import Domain, SettlementRecord, SignedRecord, encode_record
from posaudit.rules import LedgerModel, PayerAccount, StatusCode, TerminalEntry
from posaudit.signing import generate_key, sign

OPENING_HOUR = 8.0
CLOSING_HOUR = 20.0
LUNCH_HOUR = 12.5
LUNCH_SPREAD_HOURS = 0.9

INTRUDER = "intruder"
"""The sender of records from outside the terminal network: forged, unknown, retired
or for another deployment. Its records never touch any state."""

INACTIVE_TERMINAL_ID = "RETIRED1"

GROCERIES = 1
FOOD = 2
NEWSPAPERS = 3
ELECTRONICS = 4
ALCOHOL = 7
TOBACCO = 8
LOTTERY = 9
MATURE_GAMES = 10

MINIMUM_AGES = {ALCOHOL: 18, TOBACCO: 18, LOTTERY: 16, MATURE_GAMES: 18}
"""Minimum payer age by goods category, as the Ledger is configured for the day."""

_DAILY_LIMITS = (100_000, 150_000, 250_000, 500_000)
_MINOR_AGES = (12, 15)
_ADULT_AGES = (19, 82)
_GAP_SHARE = 0.02
_EXPIRY_HOURS = 6
_PURCHASE_TRIES = 4
_FOREIGN_SEQUENCE = 900_000_000


class SimulationError(PosauditError):
    """The simulation could not run to its verdict."""


class ScenarioError(SimulationError, ValueError):
    """A scenario cannot make a day: too small, too short, or inconsistent."""


class RecordKind(StrEnum):
    """What a planned submission is meant to be."""

    PURCHASE = "purchase"
    INSUFFICIENT_BALANCE = "insufficient balance"
    DAILY_LIMIT = "daily limit"
    EXPIRED = "expired"
    DATED_AHEAD = "dated ahead"
    FROZEN_PAYER = "frozen payer"
    PAYER_WITHOUT_KYC = "payer without KYC"
    UNDER_AGE = "under-age purchase"
    UNKNOWN_PAYER = "unknown payer"
    WRONG_MERCHANT = "wrong merchant"
    WRONG_CURRENCY = "wrong currency"
    REPLAY = "replay"
    RESENT_DUPLICATE = "resent duplicate"
    SEQUENCE_CONFLICT = "sequence conflict"
    FORGED_SIGNATURE = "forged signature"
    UNKNOWN_TERMINAL = "unknown terminal"
    INACTIVE_TERMINAL = "inactive terminal"
    WRONG_DOMAIN = "wrong domain"


GOOD_KINDS = frozenset({RecordKind.PURCHASE})
BAD_KINDS = tuple(kind for kind in RecordKind if kind not in GOOD_KINDS)
_INTRUDER_KINDS = frozenset(
    {
        RecordKind.FORGED_SIGNATURE,
        RecordKind.UNKNOWN_TERMINAL,
        RecordKind.INACTIVE_TERMINAL,
        RecordKind.WRONG_DOMAIN,
    }
)


@dataclass(frozen=True)
class Expectation:
    """The right outcome of one submission.

    Attributes:
        http_status: The gateway's answer: 201 stored, 200 a repeat of a stored
            record, 4xx refused.
        gateway_code: The gateway's error code when it refuses, else None.
        code: The Ledger's status code for a record this submission stores; None
            when it stores nothing.
    """

    http_status: int
    gateway_code: str | None = None
    code: StatusCode | None = None

    @property
    def reaches_chain(self) -> bool:
        """Whether this submission puts a record on chain."""
        return self.http_status == 201

    def describe(self) -> str:
        """The outcome in a few words, e.g. ``APPROVED`` or ``403 UNKNOWN_TERMINAL``."""
        if self.code is not None:
            return self.code.name

        if self.gateway_code is not None:
            return f"{self.http_status} {self.gateway_code}"

        return f"{self.http_status} repeat"


INTENDED = {
    RecordKind.PURCHASE: Expectation(201, code=StatusCode.APPROVED),
    RecordKind.INSUFFICIENT_BALANCE: Expectation(
        201, code=StatusCode.INSUFFICIENT_BALANCE
    ),
    RecordKind.DAILY_LIMIT: Expectation(201, code=StatusCode.DAILY_LIMIT_EXCEEDED),
    RecordKind.EXPIRED: Expectation(201, code=StatusCode.EXPIRED),
    RecordKind.DATED_AHEAD: Expectation(201, code=StatusCode.TIMESTAMP_IN_FUTURE),
    RecordKind.FROZEN_PAYER: Expectation(201, code=StatusCode.PAYER_FROZEN),
    RecordKind.PAYER_WITHOUT_KYC: Expectation(201, code=StatusCode.PAYER_NOT_KYC),
    RecordKind.UNDER_AGE: Expectation(201, code=StatusCode.UNDER_AGE),
    RecordKind.UNKNOWN_PAYER: Expectation(201, code=StatusCode.UNKNOWN_PAYER),
    RecordKind.WRONG_MERCHANT: Expectation(201, code=StatusCode.MERCHANT_MISMATCH),
    RecordKind.WRONG_CURRENCY: Expectation(201, code=StatusCode.WRONG_CURRENCY),
    RecordKind.REPLAY: Expectation(201, code=StatusCode.SEQUENCE_NOT_ABOVE),
    RecordKind.RESENT_DUPLICATE: Expectation(200),
    RecordKind.SEQUENCE_CONFLICT: Expectation(409, "RECORD_CONFLICT"),
    RecordKind.FORGED_SIGNATURE: Expectation(422, "BAD_SIGNATURE"),
    RecordKind.UNKNOWN_TERMINAL: Expectation(403, "UNKNOWN_TERMINAL"),
    RecordKind.INACTIVE_TERMINAL: Expectation(403, "TERMINAL_INACTIVE"),
    RecordKind.WRONG_DOMAIN: Expectation(422, "WRONG_DOMAIN"),
}
"""The outcome each kind is built to have; purchases may still fail on their own."""


@dataclass(frozen=True)
class Trade:
    """A kind of merchant: what it sells and how much a payment usually is."""

    name: str
    prefix: str
    categories: tuple[int, ...]
    restricted: tuple[int, ...]
    median_amount: int
    restricted_share: float


TRADES = (
    Trade("supermarket", "SUPR", (GROCERIES,), (ALCOHOL, TOBACCO), 3_500, 0.12),
    Trade("cafe", "CAFE", (FOOD,), (ALCOHOL,), 900, 0.1),
    Trade("kiosk", "KIOS", (NEWSPAPERS, FOOD), (TOBACCO, LOTTERY), 700, 0.3),
    Trade("electronics", "ELEC", (ELECTRONICS,), (MATURE_GAMES,), 12_000, 0.08),
)


@dataclass(frozen=True)
class Scenario:
    """Everything that shapes a simulated day; a fixed seed makes it reproducible.

    Attributes:
        seed: Seed of every random choice.
        records: Submissions of the day, good and bad, 50 <= records.
        duration: Seconds the day (08:00 to 20:00) is compressed into, >= 5.
        merchants: Merchants, of the trades in :data:`TRADES` in turn.
        terminals: Terminals, spread over the merchants; each has an RSA key, so
            keep them to a few dozen (a key takes about 50 ms to make).
        batch_every: Every n-th terminal uploads in batches, the others one record
            per request; 0 makes every terminal upload singly.
        batch_interval: Seconds a batch terminal gathers records before an upload.
        payers_per_terminal: Regular payers of each terminal.
        base_rate: Records per second on the plateau of the base curve; the
            lunchtime surge carries the rest of ``records``.
        bad_share: Share of submissions that are bad, each bad kind at least once.
        currency: The Ledger's currency.
        aggregate_size: n, records of an aggregate block.
        flush_timeout: Seconds the oldest waiting record waits for n records.
        enter_block_rate: Settlement blocks per second above which the monitor
            counts the block rate as high: 1.5, three times the base load's peak
            and below what one bookkeeper appends one record per block while the
            surge keeps the gateway busy (measured 1.5 to 3 per second on two
            cores, 5 when idle).
        leave_block_rate: Settlement blocks per second below which it counts it
            as low again: 0.3, below the 1 / flush timeout that aggregation keeps
            up while records arrive.
        enter_link_rate: Bytes per second above which a link counts as busy:
            55,000, about 1.5 one-record blocks per second (a one-record block
            takes about 37 kB on the bookkeeper's link).
        leave_link_rate: Bytes per second below which a link counts as quiet:
            30,000, above what aggregate blocks carry at the base load (about
            20 kB/s) and far below what they carry through the surge (150 to
            300 kB/s), so that congestion ends when the backlog is settled.

    Raises:
        ScenarioError: Fewer than 50 records, a day under 5 s, or not
            1 <= merchants <= terminals <= 99.
    """

    seed: int = 20_240_601
    records: int = 3_000
    duration: float = 90.0
    merchants: int = 6
    terminals: int = 18
    batch_every: int = 2
    batch_interval: float = 0.5
    payers_per_terminal: int = 12
    base_rate: float = 0.5
    bad_share: float = 0.06
    currency: str = "EUR"
    aggregate_size: int = 64
    flush_timeout: float = 2.0
    enter_block_rate: float = 1.5
    leave_block_rate: float = 0.3
    enter_link_rate: float = 55_000.0
    leave_link_rate: float = 30_000.0

    def __post_init__(self) -> None:
        if self.records < 50:
            raise ScenarioError(
                f"A day needs at least 50 records to hold every kind; got "
                f"{self.records}."
            )

        if self.duration < 5:
            raise ScenarioError(f"A day lasts at least 5 s; got {self.duration}.")

        if not 1 <= self.merchants <= self.terminals <= 99:
            raise ScenarioError(
                f"Need 1 <= merchants <= terminals <= 99; got {self.merchants} "
                f"merchants and {self.terminals} terminals."
            )

    @property
    def seconds_per_hour(self) -> float:
        """Seconds of the run that stand for one hour of the business day."""
        return self.duration / (CLOSING_HOUR - OPENING_HOUR)

    @property
    def monitor_window(self) -> float:
        """The monitor's window: half an hour of the day, 2 to 10 seconds."""
        return min(10.0, max(2.0, self.seconds_per_hour / 1.5))

    @property
    def monitor_hold(self) -> float:
        """Seconds a network state is held after a change: two windows."""
        return 2 * self.monitor_window

    def hour_at(self, offset: float) -> float:
        """The hour of the business day ``offset`` seconds into the run."""
        return OPENING_HOUR + offset / self.seconds_per_hour

    def clock_at(self, offset: float) -> str:
        """The business-day time ``offset`` seconds into the run, as ``HH:MM``."""
        minutes = round(self.hour_at(offset) * 60)
        return f"{minutes // 60:02d}:{minutes % 60:02d}"

    def split(self) -> tuple[int, int]:
        """Records of the base curve and of the lunchtime surge."""
        base = round(self.base_rate * self.duration * _BASE_MEAN)
        base = min(base, self.records // 2)
        return base, self.records - base

    def offered_rate(self, offset: float) -> float:
        """The planned load ``offset`` seconds into the day, in records per second."""
        base, surge = self.split()
        hour = self.hour_at(offset)
        base_part = base * _base_shape(hour) / (_BASE_MEAN * self.duration)
        spread = LUNCH_SPREAD_HOURS * self.seconds_per_hour
        surge_part = surge * _gauss(offset, self._lunch_offset, spread)
        return base_part + surge_part

    @property
    def _lunch_offset(self) -> float:
        return (LUNCH_HOUR - OPENING_HOUR) * self.seconds_per_hour


def _base_shape(hour: float) -> float:
    """The base curve, 1.0 on the plateau: ramp 08-10, plateau, decline 17-20."""
    if hour < OPENING_HOUR or hour > CLOSING_HOUR:
        return 0.0

    if hour < 10.0:
        return 0.25 + 0.75 * (hour - OPENING_HOUR) / 2.0

    if hour <= 17.0:
        return 1.0

    return 1.0 - 0.7 * (hour - 17.0) / 3.0


def _mean_base_shape(steps: int = 1_200) -> float:
    span = CLOSING_HOUR - OPENING_HOUR
    hours = (OPENING_HOUR + span * (i + 0.5) / steps for i in range(steps))
    return sum(_base_shape(hour) for hour in hours) / steps


_BASE_MEAN = _mean_base_shape()


def _gauss(x: float, mean: float, spread: float) -> float:
    return math.exp(-0.5 * ((x - mean) / spread) ** 2) / (
        spread * math.sqrt(2 * math.pi)
    )


@dataclass(frozen=True)
class MerchantPlan:
    """A merchant of the day."""

    name: str
    address: str
    trade: Trade


@dataclass(frozen=True)
class TerminalPlan:
    """A terminal of the day and how it uploads."""

    terminal_id: str
    merchant: MerchantPlan
    key: rsa.RSAPrivateKey = field(repr=False)
    batch: bool
    weight: float


@dataclass(frozen=True)
class PayerPlan:
    """A payer account as it is opened before the day.

    Attributes:
        address: The account.
        terminal_id: The one terminal the payer pays at.
        balance: Deposit in minor units.
        daily_limit: Minor units per UTC day.
        birth_date: yyyymmdd.
        kyc: KYC done.
        frozen: Frozen by the operator.
        role: ``regular``, ``minor``, ``frozen`` or ``no-kyc``.
    """

    address: str
    terminal_id: str
    balance: int
    daily_limit: int
    birth_date: int
    kyc: bool = True
    frozen: bool = False
    role: str = "regular"


@dataclass(frozen=True)
class PlannedRecord:
    """One submission of the day, signed, with its right outcome.

    Attributes:
        index: Position in the day, in time order.
        offset: Seconds after the start of the day when it is sent.
        sender: The terminal whose thread sends it, or :data:`INTRUDER`.
        kind: What it is meant to be.
        signed: The signed record as sent.
        expected: Its right outcome.
    """

    index: int
    offset: float
    sender: str
    kind: RecordKind
    signed: SignedRecord = field(repr=False)
    expected: Expectation

    @property
    def record(self) -> SettlementRecord:
        """The record sent."""
        return self.signed.record


@dataclass
class Workload:
    """The planned day: who exists, what each sends and what should happen.

    Attributes:
        scenario: The scenario it was planned from.
        domain: The deployment the records are signed for.
        start: Chain time (Unix seconds) of the start of the day.
        merchants: The merchants.
        terminals: The registered, active terminals.
        inactive_terminal: A terminal registered and deactivated before the day.
        payers: Every payer account to open, in opening order.
        records: Every submission, in time order.
        model: The rules model after the whole day: the balances and merchant
            amounts the chain must end with.
    """

    scenario: Scenario
    domain: Domain
    start: int
    merchants: list[MerchantPlan]
    terminals: list[TerminalPlan]
    inactive_terminal: TerminalPlan
    payers: list[PayerPlan]
    records: list[PlannedRecord]
    model: LedgerModel

    def sends_of(self, sender: str) -> list[PlannedRecord]:
        """The submissions of one sender, in the order it sends them."""
        return [planned for planned in self.records if planned.sender == sender]

    @property
    def senders(self) -> list[str]:
        """Every sender: the terminals, then the intruder."""
        return [terminal.terminal_id for terminal in self.terminals] + [INTRUDER]

    def is_batch_sender(self, sender: str) -> bool:
        """Whether ``sender`` uploads in batches."""
        return any(
            terminal.batch
            for terminal in self.terminals
            if terminal.terminal_id == sender
        )

    @property
    def stored(self) -> list[PlannedRecord]:
        """The submissions that put a record on chain."""
        return [planned for planned in self.records if planned.expected.reaches_chain]


@dataclass(frozen=True)
class _Draft:
    """A planned submission before it is signed; a resend copies another's
    signature."""

    index: int
    offset: float
    sender: str
    kind: RecordKind
    record: SettlementRecord
    key: rsa.RSAPrivateKey
    expected: Expectation
    copy_of: int | None = None


@dataclass
class _TerminalState:
    plan: TerminalPlan
    payers: list[str]
    next_sequence: int = 2
    gaps: list[int] = field(default_factory=lambda: [1])
    stored: list[_Draft] = field(default_factory=list)
    minor: str | None = None
    frozen: str | None = None
    no_kyc: str | None = None


class _Planner:
    """Builds the day slot by slot, keeping the rules model in step."""

    def __init__(
        self,
        scenario: Scenario,
        domain: Domain,
        start: int,
        make_key: Callable[[], rsa.RSAPrivateKey],
    ) -> None:
        self.scenario = scenario
        self.domain = domain
        self.start = start
        self.today = dt.datetime.fromtimestamp(start, dt.UTC).date()
        self.rng = random.Random(scenario.seed)
        self.model = LedgerModel(domain, scenario.currency)
        self.model.minimum_age.update(MINIMUM_AGES)
        self.merchants = self._merchants()
        self.terminals = self._terminals(make_key)
        self.spare_key = make_key()
        self.inactive = TerminalPlan(
            INACTIVE_TERMINAL_ID, self.merchants[0], make_key(), batch=False, weight=0
        )
        self.payers: list[PayerPlan] = []
        self.states = {
            plan.terminal_id: _TerminalState(plan, []) for plan in self.terminals
        }
        for plan in self.terminals:
            self.model.terminals[plan.terminal_id] = TerminalEntry(
                plan.merchant.address
            )

        for state in self.states.values():
            for _ in range(scenario.payers_per_terminal):
                self._open_regular(state)

        self.drafts: list[_Draft] = []
        self.foreign = 0

    def _address(self) -> str:
        return "0x" + self.rng.randbytes(20).hex()

    def _merchants(self) -> list[MerchantPlan]:
        return [
            MerchantPlan(
                f"{TRADES[i % len(TRADES)].name} {i // len(TRADES) + 1}",
                self._address(),
                TRADES[i % len(TRADES)],
            )
            for i in range(self.scenario.merchants)
        ]

    def _terminals(
        self, make_key: Callable[[], rsa.RSAPrivateKey]
    ) -> list[TerminalPlan]:
        plans = []
        counts: dict[int, int] = {}
        every = self.scenario.batch_every
        for i in range(self.scenario.terminals):
            m = i % len(self.merchants)
            counts[m] = counts.get(m, 0) + 1
            merchant = self.merchants[m]
            plans.append(
                TerminalPlan(
                    f"{merchant.trade.prefix}{m + 1:02d}{counts[m]:02d}",
                    merchant,
                    make_key(),
                    batch=every > 0 and i % every == every - 1,
                    weight=self.rng.lognormvariate(0.0, 0.4),
                )
            )

        return plans

    def _birth_date(self, age: int) -> int:
        """A birth date making the payer exactly ``age`` today, weeks from a
        birthday either way."""
        anniversary = self.today.replace(
            year=self.today.year - age, day=min(self.today.day, 28)
        )
        born = anniversary - dt.timedelta(days=self.rng.randint(30, 330))
        return born.year * 10_000 + born.month * 100 + born.day

    def _open(self, state: _TerminalState, role: str, age: int) -> str:
        limit = self.rng.choice(_DAILY_LIMITS)
        payer = PayerPlan(
            address=self._address(),
            terminal_id=state.plan.terminal_id,
            balance=int(limit * self.rng.uniform(1.5, 4.0)),
            daily_limit=limit,
            birth_date=self._birth_date(age),
            kyc=role != "no-kyc",
            frozen=role == "frozen",
            role=role,
        )
        self.payers.append(payer)
        self.model.accounts[payer.address] = PayerAccount(
            balance=payer.balance,
            daily_limit=payer.daily_limit,
            birth_date=payer.birth_date,
            kyc=payer.kyc,
            frozen=payer.frozen,
        )
        return payer.address

    def _open_regular(self, state: _TerminalState) -> None:
        minor = self.rng.random() < 0.1
        ages = _MINOR_AGES if minor else _ADULT_AGES
        address = self._open(
            state, "minor" if minor else "regular", self.rng.randint(*ages)
        )
        state.payers.append(address)
        if minor and state.minor is None:
            state.minor = address

    def _special(self, state: _TerminalState, role: str) -> str:
        current = getattr(state, role.replace("-", "_"))
        if current is not None:
            return str(current)

        ages = _MINOR_AGES if role == "minor" else _ADULT_AGES
        address = self._open(state, role, self.rng.randint(*ages))
        setattr(state, role.replace("-", "_"), address)
        return address

    def _amount(self, trade: Trade) -> int:
        amount = self.rng.lognormvariate(math.log(trade.median_amount), 0.9)
        return max(50, min(250_000, round(amount / 10) * 10))

    def _adult(self, address: str) -> bool:
        return self.model.accounts[address].birth_date // 10_000 <= self.today.year - 18

    def _room(self, address: str, now: int) -> int:
        account = self.model.accounts[address]
        spent = account.spent_today if account.spent_day == now // 86_400 else 0
        return min(account.balance, account.daily_limit - spent)

    def _sequence(self, state: _TerminalState) -> int:
        sequence = state.next_sequence
        state.next_sequence += 1
        if self.rng.random() < _GAP_SHARE:
            state.gaps.append(state.next_sequence)
            state.next_sequence += 1

        return sequence

    def _record(
        self,
        state: _TerminalState,
        now: int,
        payer: str,
        amount: int,
        category: int = 0,
        **overrides: object,
    ) -> SettlementRecord:
        fields: dict[str, object] = {
            "domain": self.domain,
            "record_id": self.rng.randbytes(16),
            "terminal_id": state.plan.terminal_id,
            "sequence": 0,
            "payer": payer,
            "merchant": state.plan.merchant.address,
            "amount": amount,
            "currency": self.scenario.currency,
            "timestamp": now,
            "valid_until": now + _EXPIRY_HOURS * 3_600,
            "goods_category": category,
            "operator_id": self.rng.randint(1, 12),
        }
        fields.update(overrides)
        if fields["sequence"] == 0:
            fields["sequence"] = self._sequence(state)

        return SettlementRecord(**fields)  # type: ignore[arg-type]

    def plan(self) -> None:
        """Plan every slot of the day, in time order."""
        scenario = self.scenario
        offsets = self._offsets()
        kinds = self._kinds()
        weights = [plan.weight for plan in self.terminals]
        carried: list[RecordKind] = []
        for index, offset in enumerate(offsets):
            terminal = self.rng.choices(self.terminals, weights)[0]
            state = self.states[terminal.terminal_id]
            now = self.start + int(offset)
            kind = kinds[index]
            if kind in GOOD_KINDS and carried:
                kind = carried.pop(0)

            draft = self._build(index, offset, kind, state, now)
            if draft is None:
                carried.append(kind)
                purchase = self._purchase(state, now)
                kind = RecordKind.PURCHASE
                draft = self._decided(index, offset, kind, state, purchase, now)

            self.drafts.append(draft)

        if carried:
            raise ScenarioError(
                f"The day of {scenario.records} records left kinds unplanned: "
                f"{[str(kind) for kind in carried]}; plan more records."
            )

    def _offsets(self) -> list[float]:
        scenario = self.scenario
        base, surge = scenario.split()
        span = scenario.duration
        lunch = scenario._lunch_offset
        spread = LUNCH_SPREAD_HOURS * scenario.seconds_per_hour
        offsets = []
        while len(offsets) < base:
            offset = self.rng.uniform(0.0, span)
            if self.rng.random() < _base_shape(scenario.hour_at(offset)):
                offsets.append(offset)

        while len(offsets) < base + surge:
            offset = self.rng.gauss(lunch, spread)
            if 0.0 <= offset < span:
                offsets.append(offset)

        return sorted(offsets)

    def _kinds(self) -> list[RecordKind]:
        count = self.scenario.records
        bad = max(len(BAD_KINDS), round(count * self.scenario.bad_share))
        slots = self.rng.sample(range(count), bad)
        kinds = [RecordKind.PURCHASE] * count
        for position, slot in enumerate(slots):
            if position < len(BAD_KINDS):
                kinds[slot] = BAD_KINDS[position]
            else:
                kinds[slot] = self.rng.choice(BAD_KINDS)

        return kinds

    def _build(
        self,
        index: int,
        offset: float,
        kind: RecordKind,
        state: _TerminalState,
        now: int,
    ) -> _Draft | None:
        sender = state.plan.terminal_id
        if kind in _INTRUDER_KINDS:
            record, key = self._intruder_record(kind, state, now)
            return _Draft(index, offset, INTRUDER, kind, record, key, INTENDED[kind])

        if kind == RecordKind.RESENT_DUPLICATE:
            if not state.stored:
                return None

            original = self.rng.choice(state.stored[-20:])
            return _Draft(
                index,
                offset,
                sender,
                kind,
                original.record,
                original.key,
                INTENDED[kind],
                copy_of=original.index,
            )

        if kind == RecordKind.SEQUENCE_CONFLICT:
            if not state.stored:
                return None

            taken = self.rng.choice(state.stored[-20:]).record
            record = self._record(
                state, now, taken.payer, taken.amount + 10, sequence=taken.sequence
            )
            key = state.plan.key
            return _Draft(index, offset, sender, kind, record, key, INTENDED[kind])

        record = self._chain_record(kind, state, now)
        if record is None:
            return None

        return self._decided(index, offset, kind, state, record, now)

    def _decided(
        self,
        index: int,
        offset: float,
        kind: RecordKind,
        state: _TerminalState,
        record: SettlementRecord,
        now: int,
    ) -> _Draft:
        """A record that reaches the chain, decided by the rules model now."""
        expected = Expectation(201, code=self.model.decide(record, now))
        draft = _Draft(
            index,
            offset,
            state.plan.terminal_id,
            kind,
            record,
            state.plan.key,
            expected,
        )
        state.stored.append(draft)
        return draft

    def _chain_record(
        self, kind: RecordKind, state: _TerminalState, now: int
    ) -> SettlementRecord | None:
        trade = state.plan.merchant.trade
        if kind == RecordKind.PURCHASE:
            return self._purchase(state, now)

        payer = self.rng.choice(state.payers)
        amount = self._amount(trade)
        category = self.rng.choice(trade.categories)
        if kind == RecordKind.INSUFFICIENT_BALANCE:
            balance = self.model.accounts[payer].balance
            return self._record(state, now, payer, balance + amount, category)

        if kind == RecordKind.DAILY_LIMIT:
            return self._over_limit(state, now)

        if kind == RecordKind.EXPIRED:
            taken = now - 5 * 3_600
            return self._record(
                state,
                now,
                payer,
                amount,
                category,
                timestamp=taken,
                valid_until=taken + 2 * 3_600,
            )

        if kind == RecordKind.DATED_AHEAD:
            ahead = now + 2 * 3_600
            return self._record(
                state,
                now,
                payer,
                amount,
                category,
                timestamp=ahead,
                valid_until=ahead + _EXPIRY_HOURS * 3_600,
            )

        if kind == RecordKind.FROZEN_PAYER:
            return self._record(state, now, self._special(state, "frozen"), amount)

        if kind == RecordKind.PAYER_WITHOUT_KYC:
            return self._record(state, now, self._special(state, "no-kyc"), amount)

        if kind == RecordKind.UNDER_AGE:
            minor = self._special(state, "minor")
            restricted = self.rng.choice(trade.restricted)
            return self._record(state, now, minor, amount, restricted)

        if kind == RecordKind.UNKNOWN_PAYER:
            return self._record(state, now, self._address(), amount, category)

        if kind == RecordKind.WRONG_MERCHANT:
            others = [m for m in self.merchants if m != state.plan.merchant]
            elsewhere = self.rng.choice(others).address if others else self._address()
            return self._record(state, now, payer, amount, category, merchant=elsewhere)

        if kind == RecordKind.WRONG_CURRENCY:
            currency = "USD" if self.scenario.currency != "USD" else "EUR"
            return self._record(state, now, payer, amount, category, currency=currency)

        return self._replay(state, now, payer, amount, category)

    def _purchase(self, state: _TerminalState, now: int) -> SettlementRecord:
        """An ordinary payment; some are of age-restricted goods, by adults."""
        trade = state.plan.merchant.trade
        adults = [payer for payer in state.payers if self._adult(payer)]
        restricted = self.rng.random() < trade.restricted_share and bool(adults)
        category = self.rng.choice(trade.restricted if restricted else trade.categories)
        candidates = adults if restricted else state.payers
        payer, amount = candidates[0], self._amount(trade)
        for _ in range(_PURCHASE_TRIES):
            payer = self.rng.choice(candidates)
            if self._room(payer, now) >= amount:
                break

        return self._record(state, now, payer, amount, category)

    def _over_limit(self, state: _TerminalState, now: int) -> SettlementRecord | None:
        for payer in self.rng.sample(state.payers, len(state.payers)):
            account = self.model.accounts[payer]
            spent = account.spent_today if account.spent_day == now // 86_400 else 0
            left = account.daily_limit - spent
            if left < account.balance:
                excess = self.rng.randint(1, min(10_000, account.balance - left))
                return self._record(state, now, payer, left + excess)

        return None

    def _replay(
        self,
        state: _TerminalState,
        now: int,
        payer: str,
        amount: int,
        category: int,
    ) -> SettlementRecord | None:
        passed = self.model.last_sequence.get(state.plan.terminal_id, 0)
        usable = [gap for gap in state.gaps if gap < passed]
        if not usable:
            return None

        gap = max(usable)
        state.gaps.remove(gap)
        return self._record(state, now, payer, amount, category, sequence=gap)

    def _intruder_record(
        self, kind: RecordKind, state: _TerminalState, now: int
    ) -> tuple[SettlementRecord, rsa.RSAPrivateKey]:
        self.foreign += 1
        payer = self.rng.choice(state.payers)
        amount = self._amount(state.plan.merchant.trade)
        sequence = _FOREIGN_SEQUENCE + self.foreign
        if kind == RecordKind.UNKNOWN_TERMINAL:
            ghost = f"GHOST{self.foreign % 1000:03d}"
            record = self._record(
                state, now, payer, amount, terminal_id=ghost, sequence=sequence
            )
            return record, self.spare_key

        if kind == RecordKind.INACTIVE_TERMINAL:
            record = self._record(
                state,
                now,
                payer,
                amount,
                terminal_id=self.inactive.terminal_id,
                merchant=self.inactive.merchant.address,
                sequence=sequence,
            )
            return record, self.inactive.key

        if kind == RecordKind.WRONG_DOMAIN:
            foreign = Domain(self.domain.chain_id + 1, self.domain.ledger)
            record = self._record(
                state, now, payer, amount, domain=foreign, sequence=sequence
            )
            return record, state.plan.key

        # A forger knows the terminal's id and sequence range, not its key.
        record = self._record(state, now, payer, amount, sequence=sequence)
        return record, self.spare_key


def _sign_drafts(drafts: Sequence[_Draft], signers: int) -> list[PlannedRecord]:
    """Sign every draft; RSA signing releases the GIL, so threads share it out."""
    originals = [draft for draft in drafts if draft.copy_of is None]

    def signed(draft: _Draft) -> SignedRecord:
        return SignedRecord(draft.record, sign(draft.key, encode_record(draft.record)))

    with ThreadPoolExecutor(max_workers=max(1, signers)) as pool:
        by_index = {
            draft.index: result
            for draft, result in zip(
                originals, pool.map(signed, originals), strict=True
            )
        }

    return [
        PlannedRecord(
            draft.index,
            draft.offset,
            draft.sender,
            draft.kind,
            by_index[draft.index if draft.copy_of is None else draft.copy_of],
            draft.expected,
        )
        for draft in drafts
    ]


def generate_day(
    scenario: Scenario,
    domain: Domain,
    start: int,
    make_key: Callable[[], rsa.RSAPrivateKey] = generate_key,
    signers: int = 2,
) -> Workload:
    """Plan, sign and decide every submission of a simulated day.

    Args:
        scenario: The day's shape and seed.
        domain: The deployment the records are signed for.
        start: Chain time of the start of the day, Unix seconds; records carry
            ``start`` plus their offset as their time.
        make_key: Makes an RSA key; called once per terminal, then for the retired
            terminal and for the forger. Keys are not seeded: everything else is.
        signers: Threads that sign the records (about 1 ms each).

    Returns:
        The day, its submissions in time order with their right outcomes.

    Raises:
        ScenarioError: The scenario is too small to hold every kind of record.
    """
    planner = _Planner(scenario, domain, start, make_key)
    planner.plan()
    return Workload(
        scenario=scenario,
        domain=domain,
        start=start,
        merchants=planner.merchants,
        terminals=planner.terminals,
        inactive_terminal=planner.inactive,
        payers=planner.payers,
        records=_sign_drafts(planner.drafts, signers),
        model=planner.model,
    )


def kinds_of(records: Sequence[PlannedRecord]) -> Iterator[RecordKind]:
    """The kinds present in ``records``, each once, in :class:`RecordKind` order."""
    present = {planned.kind for planned in records}
    return (kind for kind in RecordKind if kind in present)
