"""End to end: terminals over HTTP, through the running service, to SettlementComplete.

Each run starts a fresh anvil, deploys, registers the terminals and opens the payers,
then starts ``posaudit serve`` as an operator would (the gateway in its process, the
bookkeeper and the network monitor in a child process) and lets a fleet of terminals,
a process of its own with a thread per terminal, upload records signed before the
clock starts. The clock runs from the fleet's first upload to the moment the store
shows the block of every record audited, which the audit module marks with
``SettlementComplete``.

Latency is taken from the store, on the service's clock: from the gateway storing a
record to the bookkeeper reading the receipt of the block that carries it. A fresh
anvil deploys the contracts at the same addresses every time, so one set of signed
records serves every run.
"""

from __future__ import annotations

import itertools
import os
import sqlite3
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path
from tempfile import TemporaryDirectory

import urllib3
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from eth_utils import keccak
from web3 import Web3

from posaudit.chain.deploy import Deployment, deploy, open_chain
from posaudit.chain.devnet import free_port
from posaudit.ledger import LedgerClient
from posaudit.records import Domain, SettlementRecord, SignedRecord, encode_record
from posaudit.signing import generate_key, sign
from posaudit.terminal_fleet import FleetProcess, Send, TerminalPlan, key_pem

TERMINALS = 8
PAYERS = 64
BALANCE = 10**15
MERCHANT = "0x" + keccak(b"posaudit bench merchant")[:20].hex()
# Seconds the fleet's process is given to start before the clock does.
FLEET_STARTUP = 2.0
SERVICE_STARTUP = 60.0
POLL = 0.01


class BenchError(RuntimeError):
    """A run did not do what a figure needs: it is not reported."""


@dataclass(frozen=True)
class Run:
    """One end-to-end run.

    Attributes:
        name: Names its figures, e.g. ``batch_aggregate``.
        records: Records the fleet uploads.
        batch: Terminals upload in batches of up to 1,000, else one per request.
        mode: The bookkeeper's mode: ``aggregate`` (congested: blocks of
            ``aggregate_size``) or ``normal`` (one record per block).
        rate: Records per second the fleet offers; None sends as fast as the
            terminals can.
    """

    name: str
    records: int
    batch: bool
    mode: str
    rate: float | None = None


@dataclass(frozen=True)
class RunSettings:
    """The service's bookkeeper settings in every run."""

    aggregate_size: int = 512
    flush_timeout: float = 0.25
    max_block_records: int = 512


@dataclass
class RunResult:
    """What one run measured.

    Attributes:
        seconds: From the first upload to the last block audited.
        latencies: Seconds from store to append receipt, one per record.
        block_intervals: Seconds between the append receipts of consecutive blocks.
        peak_rss_mb: Peak resident memory of the service, its processes summed.
    """

    run: Run
    seconds: float
    blocks: int
    latencies: list[float] = field(default_factory=list)
    block_intervals: list[float] = field(default_factory=list)
    peak_rss_mb: float = 0.0

    @property
    def records_per_s(self) -> float:
        """Records settled per second, end to end."""
        return self.run.records / self.seconds


@dataclass(frozen=True)
class Workload:
    """Terminals with their keys, funded payers, and records signed for them."""

    keys: dict[str, rsa.RSAPrivateKey]
    payers: tuple[str, ...]
    records: tuple[SignedRecord, ...]


def payer_address(index: int) -> str:
    """A payer's address, spread over all 20 bytes as real addresses are."""
    return "0x" + keccak(f"posaudit bench payer {index}".encode())[:20].hex()


def _sign_chunk(pem: bytes, encodings: Sequence[bytes]) -> list[bytes]:
    key = serialization.load_pem_private_key(pem, password=None)
    if not isinstance(key, rsa.RSAPrivateKey):
        raise TypeError("A terminal key is not an RSA key.")

    return [sign(key, encoding) for encoding in encodings]


def signed_workload(domain: Domain, count: int, now: int) -> Workload:
    """``count`` records, round robin over the terminals, signed on every core.

    Every record is approved: payers have balance and limits to spare.
    """
    keys = {f"BENCH{i:03d}": generate_key() for i in range(TERMINALS)}
    payers = tuple(payer_address(i) for i in range(PAYERS))
    terminals = list(keys)
    records: list[SettlementRecord] = []
    for index in range(count):
        records.append(
            SettlementRecord(
                domain=domain,
                record_id=keccak(index.to_bytes(8, "big") + domain.ledger.encode())[
                    :16
                ],
                terminal_id=terminals[index % TERMINALS],
                sequence=index // TERMINALS + 1,
                payer=payers[index % PAYERS],
                merchant=MERCHANT,
                amount=100 + index % 9_000,
                currency="EUR",
                timestamp=now,
                valid_until=now + 86_400,
            )
        )

    by_terminal = {
        terminal: [encode_record(r) for r in records if r.terminal_id == terminal]
        for terminal in terminals
    }
    with ProcessPoolExecutor(os.cpu_count(), mp_context=get_context("spawn")) as pool:
        futures = {
            terminal: pool.submit(_sign_chunk, key_pem(keys[terminal]), encodings)
            for terminal, encodings in by_terminal.items()
        }
        signatures = {terminal: iter(f.result()) for terminal, f in futures.items()}

    signed = tuple(
        SignedRecord(record, next(signatures[record.terminal_id])) for record in records
    )
    return Workload(keys, payers, signed)


def _set_up_chain(w3: Web3, workload: Workload | None) -> Deployment:
    operator, bookkeeper = w3.eth.accounts[:2]
    deployment = deploy(w3, operator, bookkeeper)
    if workload is None:
        return deployment

    client = LedgerClient(w3, deployment, operator, bookkeeper)
    for terminal_id, key in workload.keys.items():
        client.register_terminal(terminal_id, MERCHANT, key.public_key())
    for payer in workload.payers:
        client.open_account(payer, BALANCE, 1980_01_01)
        client.deposit(payer, BALANCE)
    return deployment


def bench_domain() -> tuple[Domain, int]:
    """The domain every run's fresh deployment has, and the chain's time now."""
    with open_chain(None) as w3:
        deployment = _set_up_chain(w3, None)
        now = int(w3.eth.get_block("latest")["timestamp"])
    return Domain(deployment.chain_id, deployment.ledger), now


class _Service:
    """``posaudit serve`` for one run, with its own config, store and port."""

    def __init__(self, workdir: Path, rpc_url: str, run: Run, settings: RunSettings):
        self.port = free_port()
        self.store = workdir / "posaudit.db"
        config = workdir / "posaudit.toml"
        config.write_text(
            f'[chain]\nrpc_url = "{rpc_url}"\n'
            f'deployment = "{workdir / "deployment.json"}"\n'
            f'[store]\npath = "{self.store}"\n'
            f"[gateway]\nport = {self.port}\n"
            f'[bookkeeper]\nmode = "{run.mode}"\n'
            f"aggregate_size = {settings.aggregate_size}\n"
            f"flush_timeout = {settings.flush_timeout}\n"
            f"max_block_records = {settings.max_block_records}\n"
        )
        command = Path(sys.executable).with_name("posaudit")
        self._log = (workdir / "service.log").open("wb")
        self.process = subprocess.Popen(
            [str(command), "serve", "--config", str(config)],
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        self.url = f"http://127.0.0.1:{self.port}"

    def wait_ready(self) -> None:
        http = urllib3.PoolManager(retries=False, timeout=1.0)
        deadline = time.monotonic() + SERVICE_STARTUP
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise BenchError(f"posaudit serve exited: see {self._log.name}.")

            try:
                if http.request("GET", f"{self.url}/health").status == 200:
                    return
            except urllib3.exceptions.HTTPError:
                pass
            time.sleep(0.1)
        raise BenchError(f"posaudit serve did not answer on {self.url}.")

    def peak_rss_mb(self) -> float:
        """Peak resident memory of the gateway's process and the bookkeeper's."""
        pids = [self.process.pid, *_children(self.process.pid)]
        return sum(_peak_rss_kb(pid) for pid in pids) / 1024

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self._log.close()


def _children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(child) for child in path.read_text().split()] if path.exists() else []


def _peak_rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


def _plans(workload: Workload, run: Run) -> list[TerminalPlan]:
    chosen = workload.records[: run.records]
    sends: dict[str, list[Send]] = {terminal: [] for terminal in workload.keys}
    for index, signed in enumerate(chosen):
        offset = 0.0 if run.rate is None else index / run.rate
        sends[signed.record.terminal_id].append(Send(index, offset, signed))
    return [
        TerminalPlan(terminal, key_pem(workload.keys[terminal]), run.batch, tuple(s))
        for terminal, s in sends.items()
    ]


def _settled(store: Path) -> int:
    """Records whose block is audited, read without disturbing the service."""
    db = sqlite3.connect(f"file:{store}?mode=ro", uri=True)
    try:
        row = db.execute(
            "SELECT COALESCE(SUM(record_count), 0) FROM blocks"
            " WHERE audit_transaction IS NOT NULL"
        ).fetchone()
    except sqlite3.Error:
        return 0
    finally:
        db.close()
    return int(row[0])


def _timings(store: Path) -> tuple[list[float], list[float], int]:
    db = sqlite3.connect(f"file:{store}?mode=ro", uri=True)
    try:
        latencies = [
            float(appended - received)
            for received, appended in db.execute(
                "SELECT r.received_at, b.appended_at FROM records AS r"
                " JOIN blocks AS b USING (block_hash)"
            )
        ]
        appended = [
            float(row[0])
            for row in db.execute("SELECT appended_at FROM blocks ORDER BY height")
        ]
    finally:
        db.close()
    intervals = [later - earlier for earlier, later in itertools.pairwise(appended)]
    return latencies, intervals, len(appended)


def _fleet_answers(fleet: FleetProcess, answers: list[int]) -> None:
    answers.extend(answer.http_status or 0 for answer in fleet.answers())


def measure_run(run: Run, workload: Workload, settings: RunSettings) -> RunResult:
    """Run ``run`` on a fresh chain and service and return what it measured.

    Raises:
        BenchError: The service did not start, a record was refused, or not every
            record was settled in time.
    """
    with TemporaryDirectory(prefix=f"posaudit-bench-{run.name}-") as folder:
        workdir = Path(folder)
        with open_chain(None) as w3:
            deployment = _set_up_chain(w3, workload)
            domain = workload.records[0].record.domain
            if deployment.ledger.lower() != domain.ledger.lower():
                raise BenchError(
                    f"The fresh deployment's Ledger is at {deployment.ledger}, not at"
                    f" {domain.ledger} where the records were signed for."
                )

            deployment.save(workdir / "deployment.json")
            rpc_url = str(w3.provider.endpoint_uri)  # type: ignore[attr-defined]
            service = _Service(workdir, rpc_url, run, settings)
            try:
                service.wait_ready()
                return _drive(run, workload, service, domain)
            finally:
                service.stop()


def _drive(
    run: Run, workload: Workload, service: _Service, domain: Domain
) -> RunResult:
    started = time.time() + FLEET_STARTUP
    fleet = FleetProcess(service.url, domain, _plans(workload, run), started, 0.05)
    fleet.start()
    answers: list[int] = []
    deadline = started + 120 + run.records / 10
    try:
        while _settled(service.store) < run.records:
            _fleet_answers(fleet, answers)
            if time.time() > deadline:
                raise BenchError(
                    f"Run {run.name}: {_settled(service.store)} of {run.records}"
                    " records settled in time."
                )
            time.sleep(POLL)
        ended = time.time()
    finally:
        fleet.stop()
    _fleet_answers(fleet, answers)
    refused = [status for status in answers if status != 201]
    if refused or len(answers) != run.records:
        raise BenchError(
            f"Run {run.name}: {len(answers)} answers for {run.records} records,"
            f" {len(refused)} not 201 (e.g. {refused[:3]})."
        )

    latencies, intervals, blocks = _timings(service.store)
    return RunResult(
        run=run,
        seconds=ended - started,
        blocks=blocks,
        latencies=latencies,
        block_intervals=intervals,
        peak_rss_mb=service.peak_rss_mb(),
    )


def percentile(values: Sequence[float], share: float) -> float:
    """The ``share`` quantile of ``values`` (nearest rank)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


RUNS = (
    Run("batch_aggregate", 32_000, batch=True, mode="aggregate"),
    Run("single_aggregate", 8_000, batch=False, mode="aggregate"),
    Run("single_normal", 200, batch=False, mode="normal"),
    # The latency run offers a load the service keeps up with: latency is then the
    # wait for a block, not a queue.
    Run("paced_aggregate", 8_000, batch=False, mode="aggregate", rate=1_000.0),
)


def run_e2e(
    runs: Sequence[Run] = RUNS,
    settings: RunSettings = RunSettings(),
    tick: Callable[[], None] = lambda: None,
) -> dict[str, float]:
    """Every end-to-end figure, named with its unit."""
    domain, now = bench_domain()
    workload = signed_workload(domain, max(run.records for run in runs), now)
    tick()
    results = {}
    for run in runs:
        results[run.name] = measure_run(run, workload, settings)
        tick()
    return e2e_figures(results, settings)


def e2e_figures(
    results: dict[str, RunResult], settings: RunSettings
) -> dict[str, float]:
    """The named figures of the runs in ``results``."""
    figures: dict[str, float] = {}
    for name, result in results.items():
        if result.run.rate is None:
            figures[f"e2e_records_per_s_{name}"] = round(result.records_per_s)
    paced = results.get("paced_aggregate")
    if paced is not None:
        figures["latency_p50_s_aggregate"] = round(percentile(paced.latencies, 0.5), 3)
        figures["latency_p99_s_aggregate"] = round(percentile(paced.latencies, 0.99), 3)
        figures["flush_timeout_s"] = settings.flush_timeout
    batch = results.get("batch_aggregate")
    if batch is not None and batch.block_intervals:
        figures["block_time_s_aggregate"] = round(
            statistics.median(batch.block_intervals), 3
        )
    figures["peak_rss_mb_service"] = round(
        max(result.peak_rss_mb for result in results.values()), 1
    )
    return figures
