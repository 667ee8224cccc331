"""The bookkeeper loop: drains the outbox into blocks, as the network monitor allows.

Normal network: one record per block. Congested: an aggregate block as soon as n
records wait, or when the oldest has waited the flush timeout (claim 7). Every block
is audited before the next one is built; at start, the loop reconciles the store with
the chain, so that a restart after a crash finishes the interrupted work.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from eth_account import Account
from eth_account.signers.local import LocalAccount

from posaudit.audit import AuditClient
from posaudit.bookkeeper import BatchPolicy, Bookkeeper
from posaudit.chain.deploy import Deployment
from posaudit.config import Config
from posaudit.exceptions import ChainError
from posaudit.gateway import create_chain_app, serve
from posaudit.ledger import LedgerClient
from posaudit.monitor import NetworkMonitor, counting_connect, ledger_height, traffic_of
from posaudit.monitor_policy import MonitorPolicy, NetworkState, Transition
from posaudit.store import Store

log = logging.getLogger(__name__)


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
    ) -> None:
        self.bookkeeper = bookkeeper
        self.policy = policy
        self.monitor = monitor or FixedMode(congested=False)
        self.idle = idle
        self.clock = clock
        self.stats = LoopStats()

    def run(self, stop: threading.Event) -> None:
        """Reconcile, then build blocks until ``stop`` is set."""
        self.bookkeeper.reconcile()
        while not stop.is_set():
            if not self.run_once():
                stop.wait(self.idle)

    def run_once(self) -> bool:
        """Build, send and audit one block if one is due.

        Returns:
            Whether a block was put on chain.
        """
        store = self.bookkeeper.store
        try:
            self.monitor.tick()
            waiting = store.outbox_size()
            since = store.oldest_waiting_since()
            age = 0.0 if since is None else self.clock() - since
            congested = self.monitor.congested
            size = self.policy.records_to_take(waiting, age, congested)
            if size == 0:
                return False

            done = self.bookkeeper.step(size)
        except ChainError as err:
            # The records stay in the outbox; the next round tries again.
            self.stats.failures += 1
            log.warning("block not settled", extra={"error": str(err)})
            return False

        if done is None:
            return False

        appended, _ = done
        self._count(appended.header.record_count, congested)
        return True

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
        self.audit = AuditClient(self.w3, self.deployment, auditor)
        self.monitor = NetworkMonitor(
            MonitorPolicy(config.monitor.settings()),
            ledger_height(self.ledger),
            [traffic_of(self.w3)],
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

    def run_loop(self) -> None:
        """The bookkeeper loop, on the calling thread, until :attr:`stop` is set."""
        with Store(self.config.store.path) as store:
            bookkeeper = Bookkeeper(store, self.ledger, self.audit)
            self.loop = BookkeeperLoop(
                bookkeeper, self.config.bookkeeper.policy(), self._congestion()
            )
            self.loop.run(self.stop)

    def _congestion(self) -> CongestionSource:
        mode = self.config.bookkeeper.mode
        if mode == "adaptive":
            return self.monitor

        return FixedMode(congested=mode == "aggregate")

    def gateway(self) -> Any:
        """The gateway app, wired to the monitor's snapshot."""
        return create_chain_app(
            self.config.store.path,
            self.w3,
            self.deployment,
            network_state=self.monitor.snapshot,
        )

    def serve(self) -> None:
        """Run everything until interrupted; the loop stops with the gateway."""
        thread = threading.Thread(
            target=self.run_loop, name="posaudit-bookkeeper", daemon=True
        )
        thread.start()
        try:
            gateway = self.config.gateway
            serve(self.gateway(), gateway.host, gateway.port)
        finally:
            self.stop.set()
            thread.join(timeout=30)


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
