"""The bookkeeper loop on a real anvil: block sizes follow the monitor's verdict."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from posaudit.bookkeeper import BatchPolicy, Bookkeeper
from posaudit.service import BookkeeperLoop
from posaudit.store import Store

from .world import World


class Switch:
    """A monitor whose verdict the test sets."""

    def __init__(self) -> None:
        self.congested = False
        self.ticks = 0

    def tick(self) -> None:
        self.ticks += 1


@pytest.fixture
def store(tmp_path: Path) -> Store:
    with Store(tmp_path / "posaudit.db") as store:
        yield store


def loop_for(world: World, store: Store, switch: Switch, now: list[float]):
    bookkeeper = Bookkeeper(store, world.ledger, world.audit)
    policy = BatchPolicy(aggregate_size=4, flush_timeout=5.0, max_block_records=16)
    return BookkeeperLoop(bookkeeper, policy, switch, clock=lambda: now[0])


def fill(world: World, store: Store, count: int) -> None:
    for _ in range(count):
        store.add(world.record(5))


def test_normal_network_settles_one_record_per_block(world, store):
    switch, now = Switch(), [time.time()]
    loop = loop_for(world, store, switch, now)
    fill(world, store, 3)

    while loop.run_once():
        pass

    assert loop.stats.block_sizes == [1, 1, 1]
    assert loop.stats.aggregate_blocks == 0
    assert switch.ticks >= 3


def test_congested_network_waits_for_n_then_sends_aggregates(world, store):
    switch, now = Switch(), [time.time()]
    switch.congested = True
    loop = loop_for(world, store, switch, now)
    fill(world, store, 3)

    assert not loop.run_once()  # 3 < n and nobody has waited 5 s yet

    fill(world, store, 6)
    while loop.run_once():
        pass

    assert loop.stats.block_sizes == [4, 4]
    assert store.outbox_size() == 1


def test_flush_timeout_sends_a_short_aggregate(world, store):
    switch, now = Switch(), [time.time()]
    switch.congested = True
    loop = loop_for(world, store, switch, now)
    fill(world, store, 2)

    assert not loop.run_once()
    now[0] += 6.0
    assert loop.run_once()

    assert loop.stats.block_sizes == [2]
    assert store.outbox_size() == 0


def test_loop_in_a_thread_drains_the_outbox_and_stops(world, tmp_path):
    path = tmp_path / "threaded.db"
    with Store(path) as store:
        fill(world, store, 4)
    stop = threading.Event()
    stats = {}

    def work() -> None:
        with Store(path) as store:
            loop = BookkeeperLoop(
                Bookkeeper(store, world.ledger, world.audit), BatchPolicy(), idle=0.01
            )
            stats["loop"] = loop
            loop.run(stop)

    thread = threading.Thread(target=work)
    thread.start()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with Store(path) as store:
            if store.outbox_size() == 0 and not store.unaudited_blocks():
                break
        time.sleep(0.05)
    stop.set()
    thread.join(timeout=10)

    assert not thread.is_alive()
    assert stats["loop"].stats.records == 4
