"""The simulated business day, end to end: run, verdict, receipts and report.

:func:`run_simulation` starts a devnet (or uses a node), deploys, registers the day's
terminals and opens its payers, and starts the service: the gateway on a free port
and the bookkeeper loop, its network monitor deciding between one-record and aggregate
blocks. The terminals, in a process of their own and each on a thread of its own,
then submit their records over HTTP at the times the day's load curve gives them, one
per request or in batches. Receipts are written as blocks settle. When every accepted
record is settled, the run reads the outcome of every record from the contracts'
events and compares it with the generator's ground truth, checks every payer's
balance and every merchant's credit against the rules model, and stops the devnet,
whose chain stays in the output folder; :func:`posaudit.report.write_report` writes
the report.

Outputs in ``out``: ``devnet-state.json``, ``deployment.json``, ``posaudit.db``,
``receipts/<record id>.json``, ``report.json`` and ``report.html``.
"""

from __future__ import annotations

import dataclasses
import logging
import multiprocessing
import os
import shutil
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric import rsa
from web3 import HTTPProvider, Web3
from web3.contract import Contract
from web3.eth import Eth
from web3.exceptions import ContractCustomError, Web3Exception
from web3.main import get_default_modules
from web3.types import RPCEndpoint

from posaudit.audit import SettlementStatus
from posaudit.auditor import Auditor, AuditState, RecordRow
from posaudit.chain.deploy import (
    Deployment,
    contract_at,
    decode_error,
    deploy,
    open_chain,
)
from posaudit.config import Config, load_config
from posaudit.exceptions import PosauditError
from posaudit.gateway import serve_in_background
from posaudit.ledger import terminal_bytes
from posaudit.monitor_policy import Transition
from posaudit.receipts import build_receipt
from posaudit.records import Domain
from posaudit.rules import StatusCode
from posaudit.service import Service
from posaudit.signing import generate_key, public_numbers
from posaudit.simulation import (
    INTENDED,
    MINIMUM_AGES,
    Expectation,
    PlannedRecord,
    Scenario,
    Workload,
    generate_day,
)
from posaudit.store import Store
from posaudit.terminal_fleet import FleetProcess, Send, TerminalPlan, key_pem

log = logging.getLogger(__name__)

# One block hash in 16 meets this target, so the bookkeeper searches a few nonces.
DAY_TARGET = 2**252
SAMPLE_INTERVAL = 0.5
FLEET_STARTUP = 3.0
SETUP_GAS_MARGIN = 1.5
SETUP_BATCH = 100
# Room around the day for set-up, draining and the verdict, so that the day stays
# inside one UTC date, which daily limits and ages are counted in.
DAY_MARGIN = 1_800

_CAPTURED = ("posaudit.service", "posaudit.bookkeeper", "posaudit.monitor")


class SimulationError(PosauditError):
    """The simulation could not run to its verdict."""


@dataclass(frozen=True)
class Outcome:
    """What happened to one submission.

    Attributes:
        http_status: The gateway's answer (201 stored, 200 a repeat, 4xx refused),
            None when it never answered.
        gateway_code: The gateway's error code, if it refused.
        attempts: Requests sent for it, retries included.
        sent_at: Seconds after the start of the day when it was sent.
        code: The Ledger's status code for the record, when it is on chain.
        settlement: The audit's status for the record, when it is on chain.
        block_height: Height of its settlement block.
    """

    http_status: int | None
    gateway_code: str | None = None
    attempts: int = 1
    sent_at: float = 0.0
    code: StatusCode | None = None
    settlement: SettlementStatus | None = None
    block_height: int | None = None

    def describe(self) -> str:
        """The outcome in a few words, comparable with ``Expectation.describe``."""
        if self.http_status is None:
            return f"no answer ({self.gateway_code})"

        if self.code is not None:
            return self.code.name

        if self.gateway_code is not None:
            return f"{self.http_status} {self.gateway_code}"

        if self.http_status == 201:
            return "201 stored, not on chain"

        return f"{self.http_status} repeat"


@dataclass(frozen=True)
class Difference:
    """A disagreement between the ground truth and the run.

    Attributes:
        subject: What differs: a record (``TERMINAL #SEQ``), a payer or a merchant.
        kind: The record's kind, or ``balance`` / ``credit`` / ``chain``.
        expected: What the ground truth says.
        actual: What the run shows.
        index: Position of the submission in the day, None for money and chain.
    """

    subject: str
    kind: str
    expected: str
    actual: str
    index: int | None = None

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready values."""
        return dataclasses.asdict(self)


def expected_settlement(expected: Expectation) -> SettlementStatus | None:
    """The audit's final status a submission's record should reach."""
    if expected.code is None:
        return None

    if expected.code is StatusCode.APPROVED:
        return SettlementStatus.SETTLED

    return SettlementStatus.REJECTED_BY_RULES


def compare(
    records: Sequence[PlannedRecord],
    outcomes: Sequence[Outcome],
    chain_rows: Sequence[RecordRow] = (),
) -> list[Difference]:
    """Every submission's outcome against its ground truth, and the chain's rows
    against the records that should be on it.

    A stored record must be on chain once, with the expected status code and its
    final settlement; a refusal must carry the expected status and error code; a
    repeat must be answered as one. A 200 answer to a request that was retried
    counts as stored: the first attempt stored it and the answer was lost.

    Args:
        records: The planned submissions, in day order.
        outcomes: What happened to each, in the same order.
        chain_rows: Every record outcome the chain holds; rows of records the day
            did not store, and second rows of one record, are differences.

    Returns:
        The differences, in day order, then the chain's.
    """
    differences = []
    for planned, outcome in zip(records, outcomes, strict=True):
        expected = planned.expected
        status = outcome.http_status
        if status == 200 and outcome.attempts > 1 and expected.http_status == 201:
            status = 201

        agrees = (
            status == expected.http_status
            and outcome.gateway_code == expected.gateway_code
            and outcome.code == expected.code
            and outcome.settlement == expected_settlement(expected)
        )
        if agrees:
            continue

        actual = outcome.describe()
        if outcome.settlement is not None and outcome.code is not None:
            actual += f", {outcome.settlement.name}"

        wanted = expected.describe()
        settlement = expected_settlement(expected)
        if settlement is not None:
            wanted += f", {settlement.name}"

        record = planned.record
        differences.append(
            Difference(
                f"{record.terminal_id} #{record.sequence}",
                str(planned.kind),
                wanted,
                actual,
                planned.index,
            )
        )

    stored = {
        (planned.record.terminal_id, planned.record.sequence)
        for planned in records
        if planned.expected.reaches_chain
    }
    seen: Counter[tuple[str, int]] = Counter()
    for row in chain_rows:
        if row.code is StatusCode.PROOF_MISMATCH:
            continue

        key = (row.terminal_id, row.sequence)
        seen[key] += 1
        if key not in stored or seen[key] > 1:
            differences.append(
                Difference(
                    f"{row.terminal_id} #{row.sequence}",
                    "chain",
                    "no such record on chain" if key not in stored else "one outcome",
                    f"{row.code.name} in block 0x{row.block_hash.hex()[:12]}",
                )
            )

    return differences


@dataclass(frozen=True)
class BlockFacts:
    """One settlement block of the run.

    Attributes:
        height: Height in the Ledger's chain of blocks.
        block_hash: Its hash, hex.
        records: Records in it.
        mode: ``normal`` or ``aggregate``, as the bookkeeper loop built it.
        appended_at: Seconds after the start of the day when its audit finished.
        append_gas: Gas of its append transaction.
        audit_gas: Gas of its audit transaction.
        complete: Whether the audit module emitted SettlementComplete for it.
    """

    height: int
    block_hash: str
    records: int
    mode: str
    appended_at: float
    append_gas: int
    audit_gas: int
    complete: bool

    @property
    def gas_per_record(self) -> float:
        """Append and audit gas per record of the block."""
        return (self.append_gas + self.audit_gas) / self.records


@dataclass(frozen=True)
class Sample:
    """The service as seen every :data:`SAMPLE_INTERVAL` seconds."""

    at: float
    sent: int
    state: str
    block_rate: float
    link_rate: float
    outbox: int
    appended: int
    settled: int


@dataclass(frozen=True)
class StateChange:
    """A change of the network monitor's state."""

    at: float
    state: str
    reason: str


@dataclass(frozen=True)
class RunProgress:
    """What the run reports while it goes, for progress bars.

    Attributes:
        phase: ``set-up``, ``day``, ``settling``, ``verdict`` or ``receipts``.
        submissions: Submissions planned for the day.
        expected_on_chain: Records the day should put on chain.
        submitted: Submissions sent so far.
        on_chain: Records accepted so far, which must reach the chain.
        appended: Records in settlement blocks.
        settled: Records in blocks whose audit is done.
        receipts: Receipts written.
        clock: Business time of the day, ``HH:MM``.
        state: The network monitor's state.
        block_rate: Settlement blocks per second, as the monitor measured.
        link_rate: Bytes per second on the busiest link.
        recent_blocks: Sizes of the latest blocks, newest last.
    """

    phase: str
    submissions: int = 0
    expected_on_chain: int = 0
    submitted: int = 0
    on_chain: int = 0
    appended: int = 0
    settled: int = 0
    receipts: int = 0
    clock: str = "08:00"
    state: str = "normal"
    block_rate: float = 0.0
    link_rate: float = 0.0
    recent_blocks: tuple[int, ...] = ()


@dataclass
class SimulationResult:
    """Everything the run found: the verdict, the figures and where the files are."""

    scenario: Scenario
    workload: Workload
    outcomes: list[Outcome]
    differences: list[Difference]
    blocks: list[BlockFacts]
    samples: list[Sample]
    changes: list[StateChange]
    latencies: dict[str, list[float]]
    day_seconds: float
    phases: dict[str, float] = field(default_factory=dict)
    held: int = 0
    out: Path = Path("out")

    @property
    def blocks_complete(self) -> int:
        """Blocks with SettlementComplete."""
        return sum(block.complete for block in self.blocks)

    @property
    def ok(self) -> bool:
        """Whether every outcome, balance and credit matched, no money is held and
        every block's settlement completed."""
        return (
            not self.differences
            and self.held == 0
            and self.blocks_complete == len(self.blocks)
        )

    def summary(self) -> dict[str, Any]:
        """The figures of the verdict, JSON-ready."""
        return summarize(self)


def summarize(result: SimulationResult) -> dict[str, Any]:
    """Records by outcome and code, blocks by mode, time per network state, gas
    against one block per record, settlement completeness."""
    records = result.workload.records
    by_outcome = Counter(planned.expected.describe() for planned in records)
    actual = Counter(outcome.describe() for outcome in result.outcomes)
    mismatched = {d.index for d in result.differences if d.index is not None}
    by_kind: dict[str, dict[str, Any]] = {}
    for planned in records:
        entry = by_kind.setdefault(
            str(planned.kind),
            {"records": 0, "matched": 0, "expected": INTENDED[planned.kind].describe()},
        )
        entry["records"] += 1
        entry["matched"] += planned.index not in mismatched

    blocks = result.blocks
    modes: dict[str, dict[str, float]] = {}
    for mode in ("normal", "aggregate"):
        chosen = [block for block in blocks if block.mode == mode]
        count = sum(block.records for block in chosen)
        gas = sum(block.append_gas + block.audit_gas for block in chosen)
        modes[mode] = {
            "blocks": len(chosen),
            "records": count,
            "gas": gas,
            "gas_per_record": gas / count if count else 0.0,
        }

    singles = [block for block in blocks if block.records == 1]
    single_gas = (
        sum(block.append_gas + block.audit_gas for block in singles) / len(singles)
        if singles
        else None
    )
    on_chain = sum(block.records for block in blocks)
    total_gas = sum(block.append_gas + block.audit_gas for block in blocks)
    baseline = None if single_gas is None else round(single_gas * on_chain)
    latencies = [value for values in result.latencies.values() for value in values]
    return {
        "ok": result.ok,
        "records": len(records),
        "differences": len(result.differences),
        "expected_outcomes": dict(sorted(by_outcome.items())),
        "actual_outcomes": dict(sorted(actual.items())),
        "kinds": by_kind,
        "blocks": {
            "total": len(blocks),
            "complete": result.blocks_complete,
            "normal": modes["normal"],
            "aggregate": modes["aggregate"],
            "largest": max((block.records for block in blocks), default=0),
        },
        "network_seconds": state_durations(result.changes, result.day_seconds),
        "state_changes": len(result.changes),
        "gas": {
            "total": total_gas,
            "records_on_chain": on_chain,
            "per_record": total_gas / on_chain if on_chain else 0.0,
            "one_block_per_record_gas_per_record": single_gas,
            "one_block_per_record_total": baseline,
            "saving_factor": baseline / total_gas if baseline and total_gas else None,
        },
        "settlement": {
            "records_on_chain": on_chain,
            "settled": sum(
                outcome.settlement is SettlementStatus.SETTLED
                for outcome in result.outcomes
            ),
            "rejected_by_rules": sum(
                outcome.settlement is SettlementStatus.REJECTED_BY_RULES
                for outcome in result.outcomes
            ),
            "held_after_audit": result.held,
            "blocks_complete": f"{result.blocks_complete}/{len(blocks)}",
        },
        "latency_seconds": _percentiles(latencies),
        "day_seconds": result.day_seconds,
        "phases_seconds": result.phases,
    }


def state_durations(changes: Sequence[StateChange], end: float) -> dict[str, float]:
    """Seconds spent in each network state from 0 (normal) to ``end``."""
    durations = {"normal": 0.0, "congested": 0.0}
    state, since = "normal", 0.0
    for change in changes:
        at = min(max(change.at, since), end)
        durations[state] = durations.get(state, 0.0) + at - since
        state, since = change.state, at

    durations[state] = durations.get(state, 0.0) + max(0.0, end - since)
    return {name: round(value, 2) for name, value in durations.items()}


def _percentiles(values: Sequence[float]) -> dict[str, float]:
    if not values:
        return {}

    ordered = sorted(values)

    def at(share: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(share * len(ordered)))], 3)

    return {
        "p50": at(0.5),
        "p90": at(0.9),
        "p99": at(0.99),
        "max": round(ordered[-1], 3),
        "mean": round(sum(ordered) / len(ordered), 3),
    }


class _Events(logging.Handler):
    """Collects the service's own log events: blocks settled, state changes."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self._guard = threading.Lock()
        self.audited: dict[str, float] = {}
        self.modes: dict[str, str] = {}
        self.sizes: list[int] = []
        self.changes: list[tuple[float, str, str]] = []
        self._last_audited: str | None = None

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        with self._guard:
            if message == "block audited":
                block_hash = str(getattr(record, "block_hash", ""))
                self.audited[block_hash] = record.created
                self._last_audited = block_hash
            elif message == "block settled":
                size = int(getattr(record, "records", 0))
                self.sizes.append(size)
                if self._last_audited is not None:
                    self.modes[self._last_audited] = str(getattr(record, "mode", ""))
            elif message == "network state changed":
                self.changes.append(
                    (
                        record.created,
                        str(getattr(record, "to_state", "")),
                        str(getattr(record, "reason", "")),
                    )
                )

    def recent(self, count: int) -> tuple[int, ...]:
        with self._guard:
            return tuple(self.sizes[-count:])


@contextmanager
def _capturing(events: _Events) -> Iterator[None]:
    """Route the service's info events to ``events``; they reach the console only
    when the root logger shows info."""
    verbose = logging.getLogger().isEnabledFor(logging.INFO)
    saved = []
    for name in _CAPTURED:
        logger = logging.getLogger(name)
        saved.append((logger, logger.level, logger.propagate))
        logger.setLevel(logging.INFO)
        logger.propagate = verbose
        logger.addHandler(events)

    try:
        yield
    finally:
        for logger, level, propagate in saved:
            logger.removeHandler(events)
            logger.setLevel(level)
            logger.propagate = propagate


@dataclass
class _Paths:
    out: Path

    @property
    def state(self) -> Path:
        return self.out / "devnet-state.json"

    @property
    def store(self) -> Path:
        return self.out / "posaudit.db"

    @property
    def deployment(self) -> Path:
        return self.out / "deployment.json"

    @property
    def receipts(self) -> Path:
        return self.out / "receipts"

    def fresh(self) -> None:
        """Remove what a previous run left, so that nothing old is mistaken for
        this run's."""
        self.out.mkdir(parents=True, exist_ok=True)
        for path in (
            self.state,
            self.store,
            self.deployment,
            self.out / "posaudit.db-wal",
            self.out / "posaudit.db-shm",
            self.out / "report.json",
            self.out / "report.html",
        ):
            path.unlink(missing_ok=True)

        shutil.rmtree(self.receipts, ignore_errors=True)
        self.receipts.mkdir()


def service_config(scenario: Scenario, out: Path, rpc_url: str) -> Config:
    """The service configuration of the day: its files, the adaptive bookkeeper and
    monitor thresholds tuned so that the lunchtime surge crosses them and the rest
    of the day does not."""
    paths = _Paths(out)
    config = load_config(environ={})
    return dataclasses.replace(
        config,
        chain=dataclasses.replace(
            config.chain,
            rpc_url=rpc_url,
            deployment=paths.deployment,
            devnet_state=paths.state,
        ),
        store=dataclasses.replace(config.store, path=paths.store),
        bookkeeper=dataclasses.replace(
            config.bookkeeper,
            mode="adaptive",
            aggregate_size=scenario.aggregate_size,
            flush_timeout=scenario.flush_timeout,
        ),
        monitor=dataclasses.replace(
            config.monitor,
            window_seconds=scenario.monitor_window,
            enter_block_rate=scenario.enter_block_rate,
            leave_block_rate=scenario.leave_block_rate,
            enter_link_rate=scenario.enter_link_rate,
            leave_link_rate=scenario.leave_link_rate,
            min_hold_seconds=scenario.monitor_hold,
            hysteresis=True,
        ),
    )


def _chain_time(w3: Web3) -> int:
    return int(w3.eth.get_block("latest")["timestamp"])


def _day_start(w3: Web3, scenario: Scenario) -> int:
    """Chain time to start the day at; a devnet close to UTC midnight is moved past
    it first, so that the whole run falls on one date.

    Raises:
        SimulationError: The node would cross midnight and cannot move its clock.
    """
    now = _chain_time(w3)
    if now % 86_400 + scenario.duration + DAY_MARGIN < 86_400:
        return now

    skip = 86_400 - now % 86_400 + 60
    try:
        w3.provider.make_request("evm_increaseTime", [skip])  # type: ignore[arg-type]
        w3.provider.make_request("evm_mine", [])  # type: ignore[arg-type]
    except (Web3Exception, OSError) as err:
        raise SimulationError(
            f"The day would cross UTC midnight at chain time {now}, and the node "
            f"cannot move its clock: {err}. Run again after midnight UTC."
        ) from err

    return _chain_time(w3)


class _ReusedContracts(Eth):
    """The ``eth`` module, handing out one contract object per address and ABI.

    Building a web3 contract object parses its whole ABI, which costs more than
    the calls a receipt makes; settled history needs each contract once.
    """

    _contracts: dict[tuple[Any, int], Any] | None = None

    def contract(self, address: Any = None, **kwargs: Any) -> Any:
        """A contract object, reused when the address and ABI were seen before."""
        if address is None or set(kwargs) != {"abi"}:
            return super().contract(address, **kwargs)

        if self._contracts is None:
            self._contracts = {}

        key = (address, id(kwargs["abi"]))
        if key not in self._contracts:
            self._contracts[key] = super().contract(address, **kwargs)

        return self._contracts[key]


def reading_web3(rpc_url: str, timeout: float = 30.0) -> Web3:
    """A connection for reading settled history many times over.

    It caches the chain id, mined transactions and blocks by number (none of which
    change once mined), and reuses contract objects, which makes writing thousands
    of receipts several times faster than a plain connection.

    NOTE: Only for history that is final, as on a devnet after the day: a cached
    transaction or block is never asked for again.
    """
    modules = get_default_modules()
    modules["eth"] = _ReusedContracts
    provider = HTTPProvider(
        rpc_url,
        request_kwargs={"timeout": timeout},
        cache_allowed_requests=True,
        request_cache_validation_threshold=None,
    )
    return Web3(provider, modules=modules)


@dataclass(frozen=True)
class _Call:
    """One contract call of the day's set-up."""

    contract: Contract
    name: str
    args: tuple[Any, ...]


def _send_all(w3: Web3, calls: Sequence[_Call], sender: str) -> None:
    """Send the set-up calls without waiting for each, with numbered nonces, and
    wait until every one is mined.

    Gas is estimated once per function, after the calls before it are mined (the
    estimate rests on their effects), and given to each call with a margin.

    Raises:
        SimulationError: The node refused a call, or a call reverted.
    """
    priority = int(w3.eth.max_priority_fee)
    base_fee = int(w3.eth.get_block("latest").get("baseFeePerGas", 0))
    fees = {
        "maxPriorityFeePerGas": hex(priority),
        "maxFeePerGas": hex(priority + 2 * base_fee),
    }
    nonce = int(w3.eth.get_transaction_count(Web3.to_checksum_address(sender)))
    gas: dict[str, int] = {}
    batch: list[tuple[_Call, dict[str, str]]] = []
    sent: list[tuple[_Call, str]] = []
    for call in calls:
        if call.name not in gas:
            sent += _post(w3, batch)
            batch = []
            _wait_mined(w3, sent)
            sent = []
            gas[call.name] = _estimate(call, sender)

        data = call.contract.encode_abi(call.name, args=list(call.args))
        transaction = {
            "from": sender,
            "to": call.contract.address,
            "data": data,
            "gas": hex(gas[call.name]),
            "nonce": hex(nonce),
            **fees,
        }
        batch.append((call, transaction))
        nonce += 1
        if len(batch) == SETUP_BATCH:
            sent += _post(w3, batch)
            batch = []

    sent += _post(w3, batch)
    _wait_mined(w3, sent)


def _estimate(call: _Call, sender: str) -> int:
    function = call.contract.functions[call.name](*call.args)
    try:
        estimate = function.estimate_gas({"from": sender})
    except ContractCustomError as err:
        reason = decode_error(call.contract.abi, err.data)
        raise SimulationError(
            f"Setting up the day failed: {call.name} would revert with {reason}."
        ) from err

    return int(estimate * SETUP_GAS_MARGIN)


def _batch(w3: Web3, method: str, params: Sequence[Any]) -> list[Any]:
    """One JSON-RPC batch; returns each request's result, or raises its error."""
    requests = [(RPCEndpoint(method), [item]) for item in params]
    responses = w3.provider.make_batch_request(requests)  # type: ignore[attr-defined]
    if not isinstance(responses, list):
        raise SimulationError(
            f"The node refused a batch of {method}: {responses.get('error')}."
        )

    for response in responses:
        if "error" in response:
            raise SimulationError(
                f"Setting up the day failed: {method} was refused: {response['error']}."
            )

    return [response.get("result") for response in responses]


def _post(
    w3: Web3, batch: Sequence[tuple[_Call, dict[str, str]]]
) -> list[tuple[_Call, str]]:
    # One request per transaction, in nonce order: anvil loses transactions when
    # a JSON-RPC batch of them arrives at once.
    sent = []
    for call, transaction in batch:
        response = w3.provider.make_request(
            RPCEndpoint("eth_sendTransaction"), [transaction]
        )
        if "error" in response:
            raise SimulationError(
                f"Setting up the day failed: {call.name} was refused: "
                f"{response['error']}."
            )

        sent.append((call, str(response["result"])))

    return sent


def _wait_mined(
    w3: Web3, sent: Sequence[tuple[_Call, str]], timeout: float = 120.0
) -> None:
    deadline = time.time() + timeout
    waiting = list(sent)
    while waiting:
        still = []
        for start in range(0, len(waiting), SETUP_BATCH):
            part = waiting[start : start + SETUP_BATCH]
            receipts = _batch(w3, "eth_getTransactionReceipt", [h for _, h in part])
            for (call, transaction_hash), receipt in zip(part, receipts, strict=True):
                if receipt is None:
                    still.append((call, transaction_hash))
                elif int(receipt["status"], 16) != 1:
                    raise SimulationError(
                        f"Setting up the day failed: {call.name} in transaction "
                        f"{transaction_hash} reverted."
                    )

        waiting = still
        if waiting and time.time() > deadline:
            raise SimulationError(
                f"{len(waiting)} set-up transactions were not mined in {timeout} s."
            )

        if waiting:
            time.sleep(0.05)


def _open_day(w3: Web3, deployment: Deployment, operator: str, day: Workload) -> None:
    """Register the terminals and open the payers' accounts, as planned."""
    registry = contract_at(w3, "TerminalRegistry", deployment.registry)
    ledger = contract_at(w3, "Ledger", deployment.ledger)
    calls = []
    for terminal in [*day.terminals, day.inactive_terminal]:
        numbers = public_numbers(terminal.key.public_key())
        merchant = Web3.to_checksum_address(terminal.merchant.address)
        calls.append(
            _Call(
                registry,
                "registerTerminal",
                (
                    terminal_bytes(terminal.terminal_id),
                    merchant,
                    numbers.modulus,
                    numbers.exponent,
                ),
            )
        )

    retired = terminal_bytes(day.inactive_terminal.terminal_id)
    calls.append(_Call(registry, "deactivateTerminal", (retired,)))
    for category, age in MINIMUM_AGES.items():
        calls.append(_Call(ledger, "setMinimumAge", (category, age)))

    for payer in day.payers:
        address = Web3.to_checksum_address(payer.address)
        limit = payer.daily_limit
        calls.append(
            _Call(ledger, "openAccount", (address, limit, payer.birth_date, payer.kyc))
        )
        calls.append(_Call(ledger, "deposit", (address, payer.balance)))
        if payer.frozen:
            calls.append(
                _Call(ledger, "updateAccount", (address, limit, payer.kyc, True))
            )

    _send_all(w3, calls, operator)
    log.info(
        "day set up",
        extra={"terminals": len(day.terminals), "payers": len(day.payers)},
    )


class _DayService(Service):
    """The service of the day.

    NOTE: ``Service._report_transition`` at commit 39aae2a reads
    ``transition.to_state``, a field :class:`~posaudit.monitor_policy.Transition`
    does not have (it is ``current``), so the first change of network state would
    stop the bookkeeper loop. Until service.py reports changes without failing, the
    day's service logs such a failure and goes on.
    """

    def _report_transition(self, transition: Transition) -> None:
        try:
            super()._report_transition(transition)
        except AttributeError as err:
            log.info(
                "aggregation switched; the service could not report it",
                extra={"to_state": str(transition.current), "error": str(err)},
            )


class _Day:
    """The running day: the service, the terminals and what the run watches."""

    def __init__(
        self,
        scenario: Scenario,
        day: Workload,
        paths: _Paths,
        rpc_url: str,
        progress: Callable[[RunProgress], None],
        receipts: ReceiptWriter,
    ) -> None:
        self.scenario = scenario
        self.day = day
        self.paths = paths
        self.rpc_url = rpc_url
        self.progress = progress
        self.receipts = receipts
        self.events = _Events()
        self.samples: list[Sample] = []
        self.outcomes: list[Outcome | None] = [None] * len(day.records)
        self.stop = threading.Event()
        self.started = 0.0
        self.ended = 0.0

    def run(self) -> None:
        """Serve, submit the day and wait until every accepted record is settled.

        Raises:
            SimulationError: Records were still unsettled at the deadline.
        """
        config = service_config(self.scenario, self.paths.out, self.rpc_url)
        service = _DayService(config, self.rpc_url)
        loop = threading.Thread(
            target=service.run_loop, name="posaudit-bookkeeper", daemon=True
        )
        with _capturing(self.events), Store(self.paths.store) as store:
            loop.start()
            try:
                with serve_in_background(service.gateway()) as url:
                    self._submit_and_settle(service, store, url, loop)
            finally:
                self.stop.set()
                service.stop.set()
                loop.join(timeout=60)

    def _fleet(self, url: str) -> FleetProcess:
        day = self.day
        plans = []
        for sender in day.senders:
            terminal = next(
                (plan for plan in day.terminals if plan.terminal_id == sender),
                day.inactive_terminal,
            )
            sends = tuple(
                Send(planned.index, planned.offset, planned.signed)
                for planned in day.sends_of(sender)
            )
            plans.append(
                TerminalPlan(
                    sender.upper()[:8],
                    key_pem(terminal.key),
                    day.is_batch_sender(sender),
                    sends,
                )
            )

        # The day starts once the fleet's process is up.
        self.started = time.time() + FLEET_STARTUP
        return FleetProcess(
            url, day.domain, plans, self.started, self.scenario.batch_interval
        )

    def _take_answers(self, fleet: FleetProcess) -> None:
        for answer in fleet.answers():
            self.outcomes[answer.index] = Outcome(
                answer.http_status,
                answer.gateway_code,
                answer.attempts,
                answer.sent_at,
            )

    def _submit_and_settle(
        self, service: Service, store: Store, url: str, loop: threading.Thread
    ) -> None:
        fleet = self._fleet(url)
        fleet.start()
        try:
            self._watch(service, store, loop, fleet)
        finally:
            fleet.stop()

    def _watch(
        self,
        service: Service,
        store: Store,
        loop: threading.Thread,
        fleet: FleetProcess,
    ) -> None:
        self.stop.wait(max(0.0, self.started - time.time()))
        deadline: float | None = None
        while True:
            sending = fleet.is_alive()
            self._take_answers(fleet)
            sample = self._sample(service, store)
            self.receipts.add_settled(store)
            accepted = self._accepted()
            self._report("day" if sending else "settling", sample, accepted)
            if not loop.is_alive():
                raise SimulationError(
                    "The bookkeeper loop stopped before every record was settled; "
                    "its error is printed above."
                )

            if not sending:
                if sample.settled >= accepted and sample.outbox == 0:
                    break

                if deadline is None:
                    deadline = time.time() + 120 + accepted / 20

                if time.time() > deadline:
                    raise SimulationError(
                        f"{accepted - sample.settled} of {accepted} accepted records "
                        "were not settled in time; see the service log (-v)."
                    )

            time.sleep(SAMPLE_INTERVAL)

        self.ended = time.time()

    def _accepted(self) -> int:
        return sum(
            outcome is not None and outcome.http_status == 201
            for outcome in self.outcomes
        ) + sum(
            outcome is not None
            and outcome.http_status == 200
            and outcome.attempts > 1
            and planned.expected.http_status == 201
            for planned, outcome in zip(self.day.records, self.outcomes, strict=True)
        )

    def _sample(self, service: Service, store: Store) -> Sample:
        snapshot = service.monitor.snapshot()
        links = snapshot.get("links", {})
        busiest = max(
            (float(link["bytes_per_second"]) for link in links.values()), default=0.0
        )
        blocks = store.blocks()
        sample = Sample(
            at=round(time.time() - self.started, 3),
            sent=sum(outcome is not None for outcome in self.outcomes),
            state=str(snapshot.get("state", "unknown")),
            block_rate=float(snapshot.get("block_rate", 0.0)),
            link_rate=busiest,
            outbox=store.outbox_size(),
            appended=sum(block.record_count for block in blocks),
            settled=sum(
                block.record_count
                for block in blocks
                if block.audit_transaction is not None
            ),
        )
        self.samples.append(sample)
        return sample

    def _report(self, phase: str, sample: Sample, accepted: int) -> None:
        self.progress(
            RunProgress(
                phase=phase,
                submissions=len(self.day.records),
                expected_on_chain=len(self.day.stored),
                submitted=sample.sent,
                on_chain=accepted,
                appended=sample.appended,
                settled=sample.settled,
                clock=self.scenario.clock_at(min(sample.at, self.scenario.duration)),
                state=sample.state,
                block_rate=sample.block_rate,
                link_rate=sample.link_rate,
                recent_blocks=self.events.recent(8),
                receipts=self.receipts.written,
            )
        )

    def changes(self) -> list[StateChange]:
        """The monitor's changes of state, in seconds after the start of the day."""
        return [
            StateChange(round(at - self.started, 3), state, reason)
            for at, state, reason in self.events.changes
        ]


def _outcomes_from_chain(
    day: Workload,
    outcomes: Sequence[Outcome | None],
    rows: Sequence[RecordRow],
    heights: dict[bytes, int],
) -> list[Outcome]:
    by_key: dict[tuple[str, int], RecordRow] = {}
    for row in rows:
        key = (row.terminal_id, row.sequence)
        if key not in by_key or row.code is StatusCode.PROOF_MISMATCH:
            by_key[key] = row

    result = []
    for planned, outcome in zip(day.records, outcomes, strict=True):
        if outcome is None:
            result.append(Outcome(None, "NOT_SENT"))
            continue

        stored = outcome.http_status == 201 or (
            outcome.http_status == 200
            and outcome.attempts > 1
            and planned.expected.http_status == 201
        )
        row = by_key.get((planned.record.terminal_id, planned.record.sequence))
        if not stored or row is None:
            result.append(outcome)
            continue

        result.append(
            dataclasses.replace(
                outcome,
                code=row.code,
                settlement=row.status,
                block_height=heights.get(row.block_hash),
            )
        )

    return result


def _money_differences(
    w3: Web3, deployment: Deployment, day: Workload
) -> list[Difference]:
    """Every payer's balance and every merchant's credit against the rules model."""
    ledger = contract_at(w3, "Ledger", deployment.ledger).functions
    differences = []
    for payer in day.payers:
        address = Web3.to_checksum_address(payer.address)
        balance = int(ledger.accountOf(address).call()[0])
        model = day.model.accounts[payer.address].balance
        if balance != model:
            differences.append(
                Difference(
                    f"payer {payer.address}", "balance", f"{model:,}", f"{balance:,}"
                )
            )

    for merchant in day.merchants:
        address = Web3.to_checksum_address(merchant.address)
        credit = int(ledger.creditOf(address).call())
        model = day.model.held.get(merchant.address, 0)
        if credit != model:
            differences.append(
                Difference(
                    f"merchant {merchant.name}", "credit", f"{model:,}", f"{credit:,}"
                )
            )

    return differences


def _held(w3: Web3, deployment: Deployment, day: Workload) -> int:
    ledger = contract_at(w3, "Ledger", deployment.ledger).functions
    return sum(
        int(ledger.heldFor(Web3.to_checksum_address(merchant.address)).call())
        for merchant in day.merchants
    )


def _blocks(
    w3: Web3, store: Store, events: _Events, started: float, complete: set[bytes]
) -> list[BlockFacts]:
    facts = []
    for block in store.blocks():
        key = block.block_hash.hex()
        append = w3.eth.get_transaction_receipt(block.transaction_hash)
        audit_gas = 0
        if block.audit_transaction is not None:
            audit = w3.eth.get_transaction_receipt(block.audit_transaction)
            audit_gas = int(audit["gasUsed"])

        mode = events.modes.get(key) or (
            "aggregate" if block.record_count > 1 else "normal"
        )
        facts.append(
            BlockFacts(
                height=block.height,
                block_hash="0x" + key,
                records=block.record_count,
                mode=mode,
                appended_at=round(events.audited.get(key, started) - started, 3),
                append_gas=int(append["gasUsed"]),
                audit_gas=audit_gas,
                complete=block.block_hash in complete,
            )
        )

    return facts


def _latencies(
    store: Store, events: _Events, blocks: Sequence[BlockFacts]
) -> dict[str, list[float]]:
    """Seconds from a record's acceptance by the gateway to its block's audit."""
    latencies: dict[str, list[float]] = {"normal": [], "aggregate": []}
    for block in blocks:
        audited = events.audited.get(block.block_hash[2:])
        if audited is None:
            continue

        for stored in store.block_records(bytes.fromhex(block.block_hash[2:])):
            latencies.setdefault(block.mode, []).append(
                round(audited - stored.received_at, 3)
            )

    return latencies


_worker: dict[str, Any] = {}

RECEIPT_NICENESS = 10


def _start_receipt_worker(
    rpc_url: str, deployment: Deployment, store_path: Path, folder: Path
) -> None:
    # Receipts are written while the day runs: they take only what the service
    # leaves of the processor.
    os.nice(RECEIPT_NICENESS)
    _worker.update(
        w3=reading_web3(rpc_url),
        store=Store(store_path),
        deployment=deployment,
        folder=folder,
    )


def _write_receipt_chunk(record_ids: Sequence[bytes]) -> int:
    for record_id in record_ids:
        receipt = build_receipt(
            _worker["store"], record_id, _worker["w3"], _worker["deployment"]
        )
        path = _worker["folder"] / f"{record_id.hex()}.json"
        path.write_text(receipt.to_json() + "\n")

    return len(record_ids)


class ReceiptWriter:
    """Writes every settled record's receipt to ``folder/<record id>.json``, as a
    merchant would receive it, while the day goes on.

    Building a receipt is mostly Python work in web3.py, so worker processes share
    it, each with its own store and node connection, at a lower priority than the
    service.

    NOTE: The workers are spawned, so a script that runs a simulation must guard
    its top level with ``if __name__ == "__main__":``.

    Args:
        rpc_url: The node.
        deployment: The contracts.
        store_path: The store the bookkeeper writes.
        folder: Where the receipts go.
        workers: Worker processes.
        chunk: Records per task.
    """

    def __init__(
        self,
        rpc_url: str,
        deployment: Deployment,
        store_path: Path,
        folder: Path,
        workers: int = 2,
        chunk: int = 64,
    ) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.chunk = chunk
        self.queued = 0
        self._pool = ProcessPoolExecutor(
            max_workers=max(1, workers),
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_start_receipt_worker,
            initargs=(rpc_url, deployment, store_path, folder),
        )
        self._futures: list[Future[int]] = []
        self._blocks: set[bytes] = set()

    def add_settled(self, store: Store) -> None:
        """Queue the records of every block whose audit is done and not queued."""
        for block in store.blocks():
            if block.audit_transaction is None or block.block_hash in self._blocks:
                continue

            self._blocks.add(block.block_hash)
            ids = [
                stored.signed.record.record_id
                for stored in store.block_records(block.block_hash)
            ]
            for start in range(0, len(ids), self.chunk):
                part = ids[start : start + self.chunk]
                self._futures.append(self._pool.submit(_write_receipt_chunk, part))
                self.queued += len(part)

    @property
    def written(self) -> int:
        """Receipts written so far."""
        return sum(
            future.result()
            for future in self._futures
            if future.done() and future.exception() is None
        )

    def finish(self, progress: Callable[[int], None] = lambda _: None) -> int:
        """Wait for every queued receipt; returns how many were written.

        Raises:
            PosauditError: A receipt could not be built (the message names the
                record).
        """
        written = 0
        for future in self._futures:
            written += future.result()
            progress(written)

        return written

    def close(self) -> None:
        """Stop the workers; receipts not written by now are not written."""
        self._pool.shutdown(wait=True, cancel_futures=True)


def _lap(since: float) -> float:
    return round(time.time() - since, 2)


def run_simulation(
    scenario: Scenario,
    out: Path = Path("out"),
    progress: Callable[[RunProgress], None] = lambda _: None,
    rpc_url: str | None = None,
    make_key: Callable[[], rsa.RSAPrivateKey] = generate_key,
) -> SimulationResult:
    """Run a simulated business day end to end and judge it.

    Args:
        scenario: The day.
        out: Folder for the chain, store, deployment, receipts and report; what a
            previous run left there is replaced.
        progress: Called about twice a second with the state of the run.
        rpc_url: A node with unlocked accounts; a fresh anvil is started when
            omitted, and its chain kept in ``out/devnet-state.json``.
        make_key: Makes the terminals' RSA keys.

    Returns:
        The verdict, the figures and every record's outcome; the report is written
        by :func:`posaudit.report.write_report`.

    Raises:
        SimulationError: The day could not be set up or settled.
        ChainError: The node failed.
    """
    paths = _Paths(out)
    paths.fresh()
    phases: dict[str, float] = {}
    clock = time.time()
    progress(RunProgress("set-up", submissions=scenario.records))
    with open_chain(rpc_url, state=paths.state) as w3:
        url = str(getattr(w3.provider, "endpoint_uri", rpc_url or ""))
        accounts = list(w3.eth.accounts)
        if len(accounts) < 2:
            raise SimulationError(
                f"The node at {url} holds {len(accounts)} unlocked accounts; the "
                "simulation needs two (operator and bookkeeper)."
            )

        operator, bookkeeper = accounts[:2]
        deployment = deploy(
            w3, operator, bookkeeper, currency=scenario.currency, target=DAY_TARGET
        )
        deployment.save(paths.deployment)
        domain = Domain(deployment.chain_id, deployment.ledger)
        day = generate_day(scenario, domain, _day_start(w3, scenario), make_key)
        phases["plan_and_sign"] = _lap(clock)

        clock = time.time()
        _open_day(w3, deployment, operator, day)
        phases["open_accounts"] = _lap(clock)

        receipts = ReceiptWriter(url, deployment, paths.store, paths.receipts)
        try:
            running = _Day(scenario, day, paths, url, progress, receipts)
            running.run()
            phases["day_and_settling"] = round(running.ended - running.started, 2)

            clock = time.time()
            total, expected = len(day.records), len(day.stored)
            progress(
                RunProgress(
                    "verdict",
                    submissions=total,
                    expected_on_chain=expected,
                    submitted=total,
                    on_chain=expected,
                    appended=expected,
                    settled=expected,
                    receipts=receipts.written,
                )
            )
            reader = reading_web3(url)
            auditor = Auditor(reader, deployment, confirmations=0)
            rows = auditor.records()
            block_rows = auditor.blocks()
            heights = {row.block_hash: row.height for row in block_rows}
            complete = {
                row.block_hash for row in block_rows if row.audit is AuditState.COMPLETE
            }
            outcomes = _outcomes_from_chain(day, running.outcomes, rows, heights)
            differences = compare(day.records, outcomes, rows)
            differences += _money_differences(reader, deployment, day)
            with Store(paths.store) as store:
                blocks = _blocks(
                    reader, store, running.events, running.started, complete
                )
                latencies = _latencies(store, running.events, blocks)
                receipts.add_settled(store)

            held = _held(reader, deployment, day)
            phases["verdict"] = _lap(clock)

            clock = time.time()
            receipts.finish(
                lambda count: progress(
                    RunProgress(
                        "receipts",
                        submissions=total,
                        expected_on_chain=expected,
                        submitted=total,
                        on_chain=expected,
                        appended=expected,
                        settled=expected,
                        receipts=count,
                    )
                )
            )
            phases["receipts_after_verdict"] = _lap(clock)
        finally:
            receipts.close()

    return SimulationResult(
        scenario=scenario,
        workload=day,
        outcomes=outcomes,
        differences=differences,
        blocks=blocks,
        samples=running.samples,
        changes=running.changes(),
        latencies=latencies,
        day_seconds=round(running.ended - running.started, 2),
        phases=phases,
        held=held,
        out=out,
    )
