"""Kill the running service with SIGKILL while records flow, restart it, and count.

The service runs as its own process (``posaudit serve``) against an anvil the harness
owns. Terminal threads upload signed records through the real gateway, retrying with
the same body while the service is down; a killer thread sends SIGKILL at random
moments and starts the service again. At the end, every record a terminal was told is
accepted must be approved on chain exactly once and every block's settlement complete.

:func:`run_flow` is the same trial with another disruption in the killer's place
(``tests/python/test_node_failures.py`` stops, kills and rolls back the node).
"""

from __future__ import annotations

import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import requests
from cryptography.hazmat.primitives.asymmetric import rsa
from web3 import Web3

from posaudit.audit import AuditClient
from posaudit.auditor import Auditor, BlockRow
from posaudit.chain.deploy import Deployment, connect, contract_at, deploy
from posaudit.chain.devnet import Devnet, free_port
from posaudit.exceptions import GatewayUnavailableError, PosauditError
from posaudit.ledger import LedgerClient
from posaudit.records import Domain, SignedRecord
from posaudit.signing import generate_key
from posaudit.store import Store
from posaudit.terminal import TerminalClient

MERCHANT = "0x" + "4d" * 20
# Seconds, drawn uniformly, between a kill moment being reached and the kill.
KILL_JITTER = 0.3
TERMINALS = 4
PAYERS = 16
BALANCE = 10**15


@dataclass
class TrialResult:
    """What one trial saw."""

    kills: int
    errors: list[str] = field(default_factory=list)
    acknowledged: set[tuple[str, int]] = field(default_factory=set)
    approved: Counter[tuple[str, int]] = field(default_factory=Counter)
    blocks: int = 0
    blocks_complete: int = 0
    credit: int = 0
    expected_credit: int = 0
    held: int = 0
    auditor_blocks: list[BlockRow] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def lost(self) -> int:
        """Acknowledged records not approved on chain."""
        return len(self.acknowledged - set(self.approved))

    @property
    def settled_twice(self) -> int:
        """Records approved more than once."""
        return sum(count > 1 for count in self.approved.values())


class ServiceProcess:
    """``posaudit serve`` as a child process that can be killed and restarted."""

    def __init__(self, config: Path, log: Path) -> None:
        self.config = config
        self.log = log
        self.process: subprocess.Popen[bytes] | None = None
        self.kills = 0

    def start(self) -> None:
        command = [str(Path(sys.executable).with_name("posaudit"))]
        with self.log.open("ab") as stream:
            self.process = subprocess.Popen(
                [*command, "serve", "--config", str(self.config)],
                stdout=stream,
                stderr=subprocess.STDOUT,
            )

    def kill(self) -> None:
        if self.process is not None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()
            self.kills += 1

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.kill()


def _write_config(path: Path, rpc_url: str, workdir: Path, port: int) -> None:
    path.write_text(
        "[chain]\n"
        f'rpc_url = "{rpc_url}"\n'
        f'deployment = "{workdir / "deployment.json"}"\n'
        "[store]\n"
        f'path = "{workdir / "posaudit.db"}"\n'
        "[gateway]\n"
        f"port = {port}\n"
        "[bookkeeper]\n"
        'mode = "aggregate"\n'
        "aggregate_size = 256\n"
        "flush_timeout = 0.3\n"
    )


def _setup(w3: Web3, workdir: Path) -> tuple[Deployment, dict[str, rsa.RSAPrivateKey]]:
    admin, bookkeeper = w3.eth.accounts[:2]
    deployment = deploy(w3, admin, bookkeeper)
    deployment.save(workdir / "deployment.json")
    ledger = LedgerClient(w3, deployment, admin, bookkeeper)
    keys = {f"CRASH{i:03d}": generate_key() for i in range(TERMINALS)}
    for terminal_id, key in keys.items():
        ledger.register_terminal(terminal_id, MERCHANT, key.public_key())
    for payer in _payers():
        ledger.open_account(payer, BALANCE, 1980_01_01)
        ledger.deposit(payer, BALANCE)
    return deployment, keys


def _payers() -> list[str]:
    return [f"0x{0xC4A5 << 140 | i:040x}" for i in range(PAYERS)]


def _records(
    client: TerminalClient, count: int, now: int, rng: random.Random
) -> list[SignedRecord]:
    payers = _payers()
    return [
        client.make_record(
            sequence,
            payers[rng.randrange(PAYERS)],
            MERCHANT,
            rng.randint(1, 10_000),
            "EUR",
            timestamp=now,
            valid_until=now + 86_400,
        )
        for sequence in range(1, count + 1)
    ]


def _upload(
    client: TerminalClient,
    records: list[SignedRecord],
    batch: int,
    acknowledged: set[tuple[str, int]],
    errors: list[str],
    lock: threading.Lock,
    pace: float = 0.0,
) -> None:
    """Upload ``records`` in chunks of ``batch``, waiting ``pace`` seconds per record
    after each chunk (a terminal that takes payments over time, not all at once)."""
    for start in range(0, len(records), batch):
        chunk = records[start : start + batch]
        try:
            done = _send(client, chunk)
        except GatewayUnavailableError:
            done = []  # never acknowledged: it does not count
        except PosauditError as err:
            with lock:
                errors.append(f"{client.terminal_id}: {err}")
            done = []

        with lock:
            acknowledged.update(signed.record.key for signed in done)
        time.sleep(pace * len(chunk))


def _send(client: TerminalClient, chunk: list[SignedRecord]) -> list[SignedRecord]:
    if len(chunk) == 1:
        client.submit(chunk[0])
        return chunk

    answer = client.submit_batch(chunk)
    return [
        signed
        for signed, outcome in zip(chunk, answer.outcomes, strict=True)
        if outcome.error is None
    ]


@dataclass
class Flow:
    """Records on their way through a running service, as a disruption sees them.

    A disruption runs on a thread of its own while the terminals upload, and returns
    soon after :attr:`stop` is set: the uploads are over.
    """

    devnet: Devnet
    w3: Web3
    deployment: Deployment
    service: ServiceProcess
    health: str
    rng: random.Random
    records: int
    acknowledged: set[tuple[str, int]]
    stop: threading.Event

    def progress(self) -> int:
        """Records acknowledged so far."""
        return len(self.acknowledged)

    def reach(self, moment: int) -> bool:
        """Wait until ``moment`` records are acknowledged.

        Returns:
            False if the uploads ended first.
        """
        while self.progress() < moment:
            if self.stop.wait(0.01):
                return False

        return True


Disruption = Callable[[Flow], None]


def _killer(flow: Flow, moments: list[int]) -> None:
    """SIGKILL the service once the flow has reached each of ``moments`` (records
    acknowledged so far), a random fraction of a second later, and start it again.

    Drawing the moments from the flow rather than the clock keeps every kill inside
    it however fast the service runs; the random delay lands the kills in every phase
    of the work (before a send, between send and receipt, before a local write).
    """
    for moment in moments:
        if not flow.reach(moment):
            return

        _wait_healthy(flow.health, flow.stop)
        if flow.stop.wait(flow.rng.uniform(0.0, KILL_JITTER)):
            return

        flow.service.kill()
        flow.service.start()


def _wait_healthy(url: str, stop: threading.Event) -> None:
    while not stop.is_set():
        try:
            if requests.get(url, timeout=1).status_code == 200:
                return
        except requests.RequestException:
            pass
        stop.wait(0.05)


def _wait_settled(path: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with Store(path) as store:
                if store.outbox_size() == 0 and not store.unaudited_blocks():
                    if not store.submissions():
                        return
        except (sqlite3.Error, PosauditError):
            pass  # the service may be writing or recovering; look again
        time.sleep(0.2)
    raise TimeoutError(f"The outbox of {path} did not drain in {timeout} s.")


def _count_on_chain(
    w3: Web3,
    deployment: Deployment,
    result: TrialResult,
    amounts: dict[tuple[str, int], int],
) -> None:
    ledger = contract_at(w3, "Ledger", deployment.ledger)
    audit = AuditClient(w3, deployment, w3.eth.accounts[0])
    for event in ledger.events.TransactionApproved.get_logs(from_block=0):
        key = (bytes(event["args"]["terminalId"]).decode(), event["args"]["sequence"])
        result.approved[key] += 1
    for event in ledger.events.BlockValidated.get_logs(from_block=0):
        result.blocks += 1
        result.blocks_complete += audit.audit_of(
            bytes(event["args"]["blockHash"])
        ).complete
    merchant = Web3.to_checksum_address(MERCHANT)
    result.credit = int(ledger.functions.creditOf(merchant).call())
    result.held = int(ledger.functions.heldFor(merchant).call())
    result.expected_credit = sum(amounts[key] for key in result.acknowledged)
    # A node restarted from a dump keeps no historical state to find the
    # deployment's first block by; the devnet's chain starts with it anyway.
    auditor = Auditor(w3, deployment, confirmations=0, start_block=0)
    result.auditor_blocks = auditor.blocks()


def run_trial(
    workdir: Path, records_per_trial: int, seed: int, kills: int = 3
) -> TrialResult:
    """One trial: a fresh chain and store, uploads under random SIGKILLs.

    Args:
        workdir: Folder for the deployment, the store, the config and the log.
        records_per_trial: Records uploaded by four terminals (two one by one, two
            in batches of 100).
        seed: Seeds the records and the moments of the kills.
        kills: SIGKILLs during the upload, at moments drawn uniformly from the
            records acknowledged.
    """

    def kill_service(flow: Flow) -> None:
        moments = sorted(flow.rng.randrange(flow.records) for _ in range(kills))
        _killer(flow, moments)

    return run_flow(workdir, records_per_trial, seed, kill_service)


def run_flow(
    workdir: Path,
    records_per_trial: int,
    seed: int,
    disrupt: Disruption,
    devnet: Devnet | None = None,
    batch: int = 100,
    pace: float = 0.0,
) -> TrialResult:
    """A fresh chain and store, the service, four terminals uploading, and
    ``disrupt`` on a thread of its own meanwhile; then the count on chain.

    Args:
        workdir: Folder for the deployment, the store, the config and the log.
        records_per_trial: Records uploaded by four terminals (two one by one, two
            in batches of ``batch``).
        seed: Seeds the records and whatever ``disrupt`` draws from the flow's
            random generator.
        disrupt: What happens to the service or its node while records flow.
        devnet: The node, not yet started; a plain devnet when omitted.
        batch: Records per upload of the batching terminals.
        pace: Seconds each terminal waits per record it has uploaded, so that the
            flow lasts about ``pace * records_per_trial / 4`` seconds at least.
    """
    rng = random.Random(seed)
    workdir.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    node = devnet or Devnet()
    with node:
        w3 = connect(node.rpc_url)
        deployment, keys = _setup(w3, workdir)
        port = free_port()
        config = workdir / "posaudit.toml"
        _write_config(config, node.rpc_url, workdir, port)
        service = ServiceProcess(config, workdir / "service.log")
        service.start()
        domain = Domain(deployment.chain_id, deployment.ledger)
        now = int(w3.eth.get_block("latest")["timestamp"])
        per_terminal = records_per_trial // TERMINALS
        work, amounts = [], {}
        for index, (terminal_id, key) in enumerate(keys.items()):
            client = TerminalClient(
                f"http://127.0.0.1:{port}",
                terminal_id,
                key,
                domain,
                timeout=10.0,
                retries=40,
                backoff=0.05,
            )
            records = _records(client, per_terminal, now, rng)
            amounts.update({r.record.key: r.record.amount for r in records})
            work.append((client, records, 1 if index % 2 == 0 else batch))

        acknowledged: set[tuple[str, int]] = set()
        errors: list[str] = []
        lock, stop = threading.Lock(), threading.Event()
        flow = Flow(
            devnet=node,
            w3=w3,
            deployment=deployment,
            service=service,
            health=f"http://127.0.0.1:{port}/health",
            rng=rng,
            records=records_per_trial,
            acknowledged=acknowledged,
            stop=stop,
        )
        disruption = threading.Thread(target=disrupt, args=(flow,))
        uploaders = [
            threading.Thread(
                target=_upload,
                args=(client, records, size, acknowledged, errors, lock, pace),
            )
            for client, records, size in work
        ]
        disruption.start()
        for thread in uploaders:
            thread.start()
        for thread in uploaders:
            thread.join()
        stop.set()
        disruption.join()
        try:
            _wait_settled(workdir / "posaudit.db", timeout=300)
        finally:
            service.stop()

        result = TrialResult(
            kills=service.kills, errors=errors, acknowledged=acknowledged
        )
        _count_on_chain(w3, deployment, result, amounts)
    result.seconds = time.monotonic() - started
    return result


def main() -> None:
    """``python -m tests.python.crash_harness TRIALS RECORDS DIR [KILLS]``.

    Prints one line per trial; each trial kills the service KILLS times (default 5)
    while its records flow.
    """
    trials, records, workdir = int(sys.argv[1]), int(sys.argv[2]), Path(sys.argv[3])
    kills = int(sys.argv[4]) if len(sys.argv) > 4 else 5
    print("trial kills acknowledged approved lost settled_twice complete seconds")
    for trial in range(trials):
        result = run_trial(workdir / f"trial{trial}", records, seed=trial, kills=kills)
        print(
            trial,
            result.kills,
            len(result.acknowledged),
            len(result.approved),
            result.lost,
            result.settled_twice,
            f"{result.blocks_complete}/{result.blocks}",
            round(result.seconds, 1),
            flush=True,
        )


if __name__ == "__main__":
    main()
