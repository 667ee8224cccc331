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
from typing import Protocol

from posaudit.bookkeeper import BatchPolicy, Bookkeeper
from posaudit.exceptions import ChainError

log = logging.getLogger(__name__)


class CongestionSource(Protocol):
    """What the loop needs of the network monitor."""

    def tick(self) -> object:
        """Take a sample and update the state."""

    @property
    def congested(self) -> bool:
        """Whether the network is congested now."""


class AlwaysNormal:
    """A monitor stand-in that never sees congestion: one record per block."""

    def tick(self) -> None:
        """Nothing to sample."""

    @property
    def congested(self) -> bool:
        """Always False."""
        return False


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
        monitor: The network monitor; :class:`AlwaysNormal` when omitted.
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
        self.monitor = monitor or AlwaysNormal()
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
