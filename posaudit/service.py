"""The bookkeeper loop: drains the outbox into blocks, as the network monitor allows.

Normal network: one record per block. Congested: an aggregate block as soon as n
records wait, or when the oldest has waited the flush timeout (claim 7). Every block
is audited before the next one is built; at start, the loop reconciles the store with
the chain, so that a restart after a crash finishes the interrupted work.

:meth:`Service.serve` runs the gateway in its process and the bookkeeper loop with the
network monitor in a child process: they meet only in the store, and each gets a core
of its own instead of sharing one interpreter.
"""

from __future__ import annotations

import ctypes
import logging
import multiprocessing
import os
import queue
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar

import requests
from eth_account import Account
from eth_account.signers.local import LocalAccount
from web3.exceptions import Web3Exception

from posaudit.audit import AuditClient
from posaudit.bookkeeper import (
    BatchPolicy,
    Bookkeeper,
    PreparedBlock,
    Reconciliation,
    SentBlock,
)
from posaudit.chain.deploy import Deployment
from posaudit.config import Config
from posaudit.exceptions import ChainError, RecordNotFoundError
from posaudit.gateway import create_chain_app, serve
from posaudit.ledger import AppendResult, LedgerClient
from posaudit.monitor import NetworkMonitor, counting_connect, ledger_height, traffic_of
from posaudit.monitor_policy import MonitorPolicy, NetworkState, Transition
from posaudit.store import Store, read_network

# prctl(2): the signal the kernel sends a process when its parent dies.
PR_SET_PDEATHSIG = 1
# Seconds between two snapshots of the network monitor written to the store.
PUBLISH_INTERVAL = 0.5
# Seconds before a bookkeeper process that died is started again.
RESTART_DELAY = 1.0

log = logging.getLogger(__name__)

T = TypeVar("T")

# What a node that fails, restarts or refuses raises: the loop survives them all.
NODE_ERRORS = (ChainError, requests.RequestException, Web3Exception)


class CongestionSource(Protocol):
    """What the loop needs of the network monitor."""

    def tick(self) -> object:
        """Take a sample and update the state."""

    @property
    def congested(self) -> bool:
        """Whether the network is congested now."""


class FixedMode:
    """A monitor stand-in with a fixed verdict: always normal or always congested."""

    def __init__(self, congested: bool = False) -> None:
        self._congested = congested

    def tick(self) -> None:
        """Nothing to sample."""

    @property
    def congested(self) -> bool:
        """The fixed verdict."""
        return self._congested


def publish_network(
    monitor: NetworkMonitor,
    store_path: Path,
    stop: threading.Event,
    interval: float = PUBLISH_INTERVAL,
) -> None:
    """Write the monitor's snapshot to the store every ``interval`` seconds until
    ``stop`` is set, for a gateway in another process (``GET /v1/network``).

    It runs on a thread of its own: a write waits for the store's lock, which the
    gateway holds while it stores a batch, and the bookkeeper must not wait with it.
    """
    with Store(store_path) as store:
        while True:
            store.save_network(monitor.snapshot())
            if stop.wait(interval):
                return


class AuditWorker:
    """Audits the blocks the loop appends, on a thread of its own, while the loop
    builds and sends the next block.

    The node then mines one block's append while the audit of the block before runs,
    instead of each waiting for the other. The worker has its own store connection
    and its own connection to the node (the auditor's link). A block whose audit
    fails goes again once the loop has reconciled the store with the chain; one left
    when the loop stops is audited by the reconciliation of the next start.

    Args:
        store_path: The store.
        ledger: A Ledger client for reads, on the worker's own connection.
        audit: The audit client, on the same connection.
        backlog: Blocks that may wait for their audit before :meth:`submit` waits.
    """

    def __init__(
        self,
        store_path: Path,
        ledger: LedgerClient,
        audit: AuditClient,
        backlog: int = 4,
    ) -> None:
        self.store_path = store_path
        self.ledger = ledger
        self.audit = audit
        self.audited = 0
        # Set, by the worker or the loop, when the node failed: the loop reconciles
        # before anything else, and clears it. Meanwhile the worker starts no audit:
        # a node that lost the settlement of older blocks must get it again before
        # a newer block is settled (see Bookkeeper.reconcile).
        self.reconcile_due = threading.Event()
        # Held for each audit, and by the loop while it reconciles.
        self.lock = threading.Lock()
        self._queue: queue.Queue[AppendResult] = queue.Queue(maxsize=backlog)

    def submit(self, appended: AppendResult) -> None:
        """Hand over a block just appended and stored.

        While a reconciliation is due the block is left to it, which audits every
        block the store holds unaudited: the worker waits for it, and the loop
        must not wait for the worker.
        """
        while not self.reconcile_due.is_set():
            try:
                self._queue.put(appended, timeout=0.05)
                return
            except queue.Full:
                pass

    def run(self, stop: threading.Event) -> None:
        """Audit what is handed over until ``stop`` is set."""
        with Store(self.store_path) as store:
            bookkeeper = Bookkeeper(store, self.ledger, self.audit)
            while not stop.is_set():
                try:
                    appended = self._queue.get(timeout=0.05)
                except queue.Empty:
                    continue

                self._audit(bookkeeper, appended, stop)

    def _audit(
        self, bookkeeper: Bookkeeper, appended: AppendResult, stop: threading.Event
    ) -> None:
        block = appended.block_hash.hex()
        while not stop.is_set():
            if self.reconcile_due.is_set():
                stop.wait(0.05)
                continue

            try:
                with self.lock:
                    bookkeeper.audit(appended.block_hash, appended)
            except RecordNotFoundError:
                # A reconciliation found the node without the block and put its
                # records back in the outbox: there is nothing left to audit.
                log.warning("block gone before its audit", extra={"block_hash": block})
                return
            except NODE_ERRORS as err:
                log.warning(
                    "block audit failed; trying again after a reconciliation",
                    extra={"block_hash": block, "error": str(err)},
                )
                self.reconcile_due.set()
                continue

            self.audited += 1
            return


@dataclass
class LoopStats:
    """Counters the loop keeps, for metrics and tests."""

    blocks: int = 0
    records: int = 0
    aggregate_blocks: int = 0
    failures: int = 0
    block_sizes: list[int] = field(default_factory=list)


class BookkeeperLoop:
    """Runs a bookkeeper until stopped.

    Args:
        bookkeeper: The bookkeeper, with its own store connection (SQLite connections
            stay in the thread that made them, so build it inside :meth:`run`'s
            thread when running it in one).
        policy: Block sizes and the flush timeout.
        monitor: The network monitor; always normal when omitted.
        idle: Seconds to sleep when nothing is ready.
        clock: Wall-clock time, comparable with the store's arrival times.
    """

    def __init__(
        self,
        bookkeeper: Bookkeeper,
        policy: BatchPolicy,
        monitor: CongestionSource | None = None,
        idle: float = 0.05,
        clock: Callable[[], float] = time.time,
        auditor: AuditWorker | None = None,
    ) -> None:
        self.bookkeeper = bookkeeper
        self.policy = policy
        self.monitor = monitor or FixedMode(congested=False)
        self.idle = idle
        self.clock = clock
        self.auditor = auditor
        self.stats = LoopStats()
        # The monitor's verdict each block was built under, until it is on chain.
        self._congested: dict[bytes, bool] = {}
        # Set by a failure: reconcile before the next block.
        self._failed = False
        # Seconds until the policy may want a block with the records waiting now.
        self._due_in = idle

    def run(self, stop: threading.Event) -> None:
        """Reconcile, then build blocks until ``stop`` is set.

        Each block is sent as soon as the one before is on chain: the next one is
        built, and written down as a submission, while the node mines the current
        one, instead of after it.
        """
        # The first round reconciles: a restart finishes what a crash left.
        self._failed = True
        worker = None
        if self.auditor is not None:
            worker = threading.Thread(
                target=self.auditor.run, args=(stop,), name="posaudit-audit"
            )
            worker.start()

        mining: SentBlock | None = None
        while not stop.is_set():
            if self.auditor is not None and self.auditor.reconcile_due.is_set():
                self._failed = True
            if mining is not None:
                # A failure since it was sent: finish it alone, then reconcile.
                mining = self._advance(mining, build_next=not self._failed)
                continue
            if self._failed:
                self._failed = self._reconcile() is None
            if not self._failed:
                mining = self._guarded(self._send_next)
            if mining is None:
                # Wake at the oldest record's flush timeout rather than up to one
                # idle period after it: that wait is part of every latency. A node
                # that failed is asked again a whole idle period later, not at once.
                stop.wait(self.idle if self._failed else min(self.idle, self._due_in))

        if worker is not None:
            worker.join()

    def run_once(self) -> bool:
        """Build, send and audit one block if one is due.

        Returns:
            Whether a block was put on chain.
        """
        sent = self._guarded(self._send_next)
        if sent is None:
            return False

        blocks = self.stats.blocks
        self._advance(sent, build_next=False)
        return self.stats.blocks > blocks

    def _send_next(self) -> SentBlock | None:
        """Build the block the policy wants now, if any, and send it."""
        ready = self._next_block(None)
        if ready is None:
            return None

        return self._send(ready)

    def _send(self, ready: PreparedBlock) -> SentBlock:
        try:
            return self.bookkeeper.send(ready)
        except BaseException:
            self._congested.pop(ready.header.block_hash, None)
            raise

    def _advance(self, mining: SentBlock, build_next: bool = True) -> SentBlock | None:
        """See ``mining`` on chain and send the block after it, which is built while
        ``mining`` is mined and sent the moment it is on chain; then store
        ``mining`` and hand it to the audit while that one is mined.

        Returns:
            The block after it, sent; None if none was due, or the chain refused
            ``mining`` (the block after would link to it) or the one after.
        """
        following = (
            self._guarded(lambda: self._next_block(mining)) if build_next else None
        )
        appended = self._guarded(lambda: self.bookkeeper.confirm(mining))
        if appended is None:
            self._congested.pop(mining.header.block_hash, None)
            if following is not None:
                self._discard(following)
            return None

        sent = (
            None if following is None else self._guarded(lambda: self._send(following))
        )
        self._settle(appended, mining)
        return sent

    def _discard(self, prepared: PreparedBlock) -> None:
        """Forget a block built and not sent; its records stay in the outbox."""
        self.bookkeeper.discard(prepared)
        self._congested.pop(prepared.header.block_hash, None)

    def _reconcile(self) -> Reconciliation | None:
        """Reconcile the store with the chain, with no audit of the worker's under
        way; None when the node failed."""
        if self.auditor is None:
            return self._guarded(self.bookkeeper.reconcile)

        with self.auditor.lock:
            reconciled = self._guarded(self.bookkeeper.reconcile)

        if reconciled is not None:
            self.auditor.reconcile_due.clear()

        return reconciled

    def _next_block(self, after: SentBlock | None) -> PreparedBlock | None:
        """The next block the policy wants, built from the outbox past ``after``."""
        store = self.bookkeeper.store
        skip = 0 if after is None else len(after.records)
        self.monitor.tick()
        waiting = store.outbox_size(skip + self.policy.max_block_records) - skip
        since = store.oldest_waiting_since(skip)
        age = 0.0 if since is None else self.clock() - since
        congested = self.monitor.congested
        size = self.policy.records_to_take(waiting, age, congested)
        self._due_in = self.policy.due_in(waiting, age, congested)
        if size == 0:
            return None

        prepared = self.bookkeeper.prepare(size, after)
        if prepared is not None:
            self._congested[prepared.header.block_hash] = congested
        return prepared

    def _settle(self, appended: AppendResult, sent: SentBlock) -> None:
        """Store a block on chain and audit it: on the worker's thread if there is
        one."""
        self.bookkeeper.keep(appended, sent)
        if self.auditor is not None:
            self.auditor.submit(appended)
        else:
            self._guarded(lambda: self.bookkeeper.audit(appended.block_hash, appended))
        congested = self._congested.pop(appended.block_hash, False)
        self._count(appended.header.record_count, congested)

    def _guarded(self, work: Callable[[], T]) -> T | None:
        """``work()``, or None when the node failed or refused.

        The records stay in the outbox, and the loop reconciles the store with the
        chain before its next block: a node restarted from an older state, or
        rolled back, has lost blocks the store holds, and their records must go
        on chain again.
        """
        try:
            return work()
        except NODE_ERRORS as err:
            self.stats.failures += 1
            self._failed = True
            if self.auditor is not None:
                self.auditor.reconcile_due.set()
            log.warning("block not settled", extra={"error": str(err)})
            return None

    def _count(self, size: int, congested: bool) -> None:
        self.stats.blocks += 1
        self.stats.records += size
        self.stats.aggregate_blocks += congested
        self.stats.block_sizes.append(size)
        log.info(
            "block settled",
            extra={"records": size, "mode": "aggregate" if congested else "normal"},
        )


class Service:
    """The running service: gateway, bookkeeper loop and network monitor, one process.

    The gateway and the bookkeeper meet only in the store: the gateway's threads write
    the outbox, the loop's thread drains it. Each opens its own store connection.

    Args:
        config: The configuration (see :mod:`posaudit.config`).
        rpc_url: The node, already running (the caller starts a devnet if needed).
    """

    def __init__(self, config: Config, rpc_url: str) -> None:
        self.config = config
        self.rpc_url = rpc_url
        self.deployment = Deployment.load(config.chain.deployment)
        self.w3 = counting_connect(rpc_url, "bookkeeper")
        self._check_chain()
        operator, bookkeeper, auditor = self._accounts()
        self.ledger = LedgerClient(self.w3, self.deployment, operator, bookkeeper)
        # The audit worker's thread has a connection of its own: another link.
        self.audit_w3 = counting_connect(rpc_url, "auditor")
        self.audit = AuditClient(self.audit_w3, self.deployment, auditor)
        self.monitor = NetworkMonitor(
            MonitorPolicy(config.monitor.settings()),
            ledger_height(self.ledger),
            [traffic_of(self.w3), traffic_of(self.audit_w3)],
            on_change=self._report_transition,
        )
        self.stop = threading.Event()
        self.loop: BookkeeperLoop | None = None

    def _check_chain(self) -> None:
        chain_id = int(self.w3.eth.chain_id)
        if chain_id != self.deployment.chain_id:
            raise ChainError(
                f"The node at {self.rpc_url} serves chain {chain_id}; the deployment"
                f" {self.config.chain.deployment} is on chain"
                f" {self.deployment.chain_id}."
            )

    def _accounts(self) -> tuple[str, str | LocalAccount, str | LocalAccount]:
        chain = self.config.chain
        unlocked = list(self.w3.eth.accounts)
        operator = unlocked[0] if unlocked else ""
        bookkeeper = _account(chain.bookkeeper_key_file, chain.bookkeeper, unlocked, 1)
        auditor = _account(chain.auditor_key_file, chain.auditor, unlocked, 0)
        return operator, bookkeeper, auditor

    def _report_transition(self, transition: Transition) -> None:
        """Put the monitor's change on chain, so auditors see when aggregation ran."""
        congested = transition.current is NetworkState.CONGESTED
        busiest = max(transition.link_rates.values(), default=0.0)
        try:
            self.ledger.record_network_state(congested, transition.block_rate, busiest)
        except ChainError as err:
            # The switch itself must not wait for the chain; the log keeps it.
            log.warning(
                "network state not recorded on chain", extra={"error": str(err)}
            )

    def run_loop(self, publish: bool = False) -> None:
        """The bookkeeper loop, on the calling thread, until :attr:`stop` is set.

        Args:
            publish: Write the network monitor's snapshot to the store, for a
                gateway in another process.
        """
        path = self.config.store.path
        reader = LedgerClient(
            self.audit_w3, self.deployment, self.ledger.operator, self.ledger.bookkeeper
        )
        if publish:
            threading.Thread(
                target=publish_network,
                args=(self.monitor, path, self.stop),
                name="posaudit-network",
                daemon=True,
            ).start()
        with Store(path) as store:
            self.loop = BookkeeperLoop(
                Bookkeeper(store, self.ledger, self.audit),
                self.config.bookkeeper.policy(),
                self._congestion(),
                auditor=AuditWorker(path, reader, self.audit),
            )
            self.loop.run(self.stop)

    def _congestion(self) -> CongestionSource:
        mode = self.config.bookkeeper.mode
        if mode == "adaptive":
            return self.monitor

        return FixedMode(congested=mode == "aggregate")

    def gateway(self, monitor_in_store: bool = False) -> Any:
        """The gateway app, wired to the monitor's snapshot.

        Args:
            monitor_in_store: Read the snapshot from the store, where a bookkeeper
                in another process writes it, rather than from this process's
                monitor.
        """
        path = self.config.store.path
        return create_chain_app(
            path,
            self.w3,
            self.deployment,
            network_state=(
                (lambda: read_network(path))
                if monitor_in_store
                else self.monitor.snapshot
            ),
        )

    def serve(self) -> None:
        """Run everything until interrupted: the gateway here, the bookkeeper loop
        and the network monitor in a child process, stopped with the gateway."""
        bookkeeper = BookkeeperProcess(self.config, self.rpc_url)
        bookkeeper.start()
        try:
            gateway = self.config.gateway
            serve(self.gateway(monitor_in_store=True), gateway.host, gateway.port)
        finally:
            bookkeeper.stop()


class BookkeeperProcess:
    """The bookkeeper loop and the network monitor in a child process, started again
    if it dies.

    The child dies with its parent (``PR_SET_PDEATHSIG``): a service killed with
    SIGKILL leaves no bookkeeper behind, and its restart reconciles what either
    process left unfinished.

    Args:
        config: The service's configuration.
        rpc_url: The node.
    """

    def __init__(self, config: Config, rpc_url: str) -> None:
        self.config = config
        self.rpc_url = rpc_url
        self._context = multiprocessing.get_context("spawn")
        self._process: Any = None
        self._stopping = threading.Event()
        self._watch: threading.Thread | None = None

    def start(self) -> None:
        """Start the child and a thread that starts it again should it die."""
        self._spawn()
        self._watch = threading.Thread(
            target=self._supervise, name="posaudit-bookkeeper-watch", daemon=True
        )
        self._watch.start()

    def _spawn(self) -> None:
        level = logging.getLogger().getEffectiveLevel()
        self._process = self._context.Process(
            target=_bookkeeper_main,
            args=(self.config, self.rpc_url, os.getpid(), level),
            name="posaudit-bookkeeper",
        )
        self._process.start()

    def _supervise(self) -> None:
        while not self._stopping.is_set():
            self._process.join(timeout=0.5)
            if self._process.is_alive() or self._stopping.is_set():
                continue

            log.error(
                "bookkeeper process died; starting it again",
                extra={"exitcode": self._process.exitcode},
            )
            if not self._stopping.wait(RESTART_DELAY):
                self._spawn()

    def stop(self, timeout: float = 30.0) -> None:
        """Ask the child to finish its block and stop; kill it after ``timeout``."""
        self._stopping.set()
        if self._watch is not None:
            self._watch.join()

        if self._process is None or not self._process.is_alive():
            return

        self._process.terminate()
        self._process.join(timeout)
        if self._process.is_alive():
            self._process.kill()
            self._process.join()


def _bookkeeper_main(config: Config, rpc_url: str, parent: int, log_level: int) -> None:
    """The child process of :class:`BookkeeperProcess`."""
    _die_with(parent)
    logging.basicConfig(level=log_level)
    # Ctrl-C reaches the whole process group; the parent's SIGTERM stops this one
    # between two blocks instead.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    service = Service(config, rpc_url)
    signal.signal(signal.SIGTERM, lambda *_: service.stop.set())
    service.run_loop(publish=True)


def _die_with(parent: int) -> None:
    """Have the kernel kill this process when ``parent`` dies (Linux)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError) as err:
        log.warning("bookkeeper will outlive a killed service", extra={"error": err})

    # The parent may have died before prctl took effect.
    if os.getppid() != parent:
        os._exit(1)


def _account(
    key_file: str, address: str, unlocked: list[str], fallback: int
) -> str | LocalAccount:
    if key_file:
        try:
            key = Path(key_file).read_text().strip()
        except OSError as err:
            raise ChainError(f"Cannot read the key file {key_file}: {err}.") from err

        return Account.from_key(key)

    if address:
        return address

    if len(unlocked) <= fallback:
        raise ChainError(
            "The node holds no unlocked accounts to use; set bookkeeper_key_file and "
            "auditor_key_file in the [chain] section."
        )

    return unlocked[fallback]
