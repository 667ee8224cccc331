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
import shutil
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric import rsa
from web3 import Web3

from posaudit.audit import SettlementStatus
from posaudit.auditor import Auditor, AuditState
from posaudit.chain.deploy import Deployment, contract_at, deploy, open_chain
from posaudit.config import Config, load_config
from posaudit.day_setup import day_start, open_day, reading_web3
from posaudit.gateway import serve_in_background
from posaudit.receipt_writer import ReceiptWriter
from posaudit.records import Domain
from posaudit.service import Service
from posaudit.signing import generate_key
from posaudit.simulation import (
    INTENDED,
    Scenario,
    SimulationError,
    Workload,
    generate_day,
)
from posaudit.store import Store
from posaudit.terminal_fleet import FleetProcess, Send, TerminalPlan, key_pem
from posaudit.verdict import Difference, Outcome, compare, outcomes_from_chain

log = logging.getLogger(__name__)

# One block hash in 16 meets this target, so the bookkeeper searches a few nonces.
DAY_TARGET = 2**252
SAMPLE_INTERVAL = 0.5
FLEET_STARTUP = 3.0

_CAPTURED = ("posaudit.service", "posaudit.bookkeeper", "posaudit.monitor")


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
    changes_on_chain: int = 0
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
        "state_changes_on_chain": result.changes_on_chain,
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
    """Collects the service's own log events: blocks settled, state changes.

    Records at or above ``forward_level`` go on to the root logger's handlers, as
    they would without the capture.
    """

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.forward_level = logging.WARNING
        self._guard = threading.Lock()
        self.audited: dict[str, float] = {}
        self.modes: dict[str, str] = {}
        self.sizes: list[int] = []
        self.changes: list[tuple[float, str, str]] = []
        self._last_audited: str | None = None

    def emit(self, record: logging.LogRecord) -> None:
        if record.levelno >= self.forward_level:
            logging.getLogger().handle(record)

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
    at the level the root logger shows."""
    events.forward_level = logging.getLogger().getEffectiveLevel()
    saved = []
    for name in _CAPTURED:
        logger = logging.getLogger(name)
        saved.append((logger, logger.level, logger.propagate))
        logger.setLevel(logging.INFO)
        logger.propagate = False
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
        service = Service(config, self.rpc_url)
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


def _changes_on_chain(w3: Web3, deployment: Deployment) -> int:
    """The monitor's changes of state the service put on chain."""
    ledger = contract_at(w3, "Ledger", deployment.ledger)
    return len(ledger.events.NetworkStateChanged().get_logs(from_block=0))


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
        day = generate_day(scenario, domain, day_start(w3, scenario), make_key)
        phases["plan_and_sign"] = _lap(clock)

        clock = time.time()
        open_day(w3, deployment, operator, day)
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
            outcomes = outcomes_from_chain(day.records, running.outcomes, rows, heights)
            differences = compare(day.records, outcomes, rows)
            differences += _money_differences(reader, deployment, day)
            with Store(paths.store) as store:
                blocks = _blocks(
                    reader, store, running.events, running.started, complete
                )
                latencies = _latencies(store, running.events, blocks)
                receipts.add_settled(store)

            held = _held(reader, deployment, day)
            changes_on_chain = _changes_on_chain(reader, deployment)
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
        changes_on_chain=changes_on_chain,
        out=out,
    )
