"""Claims 6 and 7 live: a steady load switches the service to aggregate blocks and back,
and the switches are on chain for auditors. With hysteresis the state changes once
each way; without it, aggregation lowers the block rate below the level it entered at,
and the state flaps.
"""

from __future__ import annotations

import dataclasses
import itertools
import threading
import time
from pathlib import Path

from posaudit.chain.deploy import contract_at
from posaudit.gateway import serve_in_background
from posaudit.records import Domain
from posaudit.service import Service
from posaudit.store import Store
from posaudit.terminal import TerminalClient

from .test_service_end_to_end import config_for
from .world import MERCHANT, PAYERS, World

RATE = 8.0  # records per second, one terminal
LOAD_SECONDS = 12.0


def run_load(world: World, tmp_path: Path, hysteresis: bool) -> tuple[list, list]:
    """Serve, upload at RATE for LOAD_SECONDS, let it settle; return the on-chain
    state changes and the block sizes."""
    config = config_for(
        world,
        tmp_path,
        window_seconds=2.0,
        enter_block_rate=3.0,
        leave_block_rate=0.5,
        enter_link_rate=2_000.0,
        leave_link_rate=500.0,
        min_hold_seconds=2.0,
        hysteresis=hysteresis,
    )
    config = dataclasses.replace(
        config,
        bookkeeper=dataclasses.replace(
            config.bookkeeper, aggregate_size=16, flush_timeout=0.5
        ),
    )
    service = Service(config, world.w3.provider.endpoint_uri)
    start_block = world.w3.eth.block_number + 1
    loop = threading.Thread(target=service.run_loop, daemon=True)
    loop.start()
    with serve_in_background(service.gateway()) as url:
        domain = Domain(world.deployment.chain_id, world.deployment.ledger)
        client = TerminalClient(url, "TERM0001", world.key, domain)
        deadline = time.monotonic() + LOAD_SECONDS
        while time.monotonic() < deadline:
            sequence = next(world.sequences)
            client.submit(client.make_record(sequence, PAYERS[0], MERCHANT, 1, "EUR"))
            time.sleep(1 / RATE)
        # Quiet: the block rate falls and the monitor goes back to normal.
        time.sleep(6.0)
    service.stop.set()
    loop.join(timeout=30)

    with Store(config.store.path) as store:
        assert store.outbox_size() == 0

    ledger = contract_at(world.w3, "Ledger", world.deployment.ledger)
    changes = ledger.events.NetworkStateChanged.get_logs(from_block=start_block)
    return [bool(change["args"]["congested"]) for change in changes], list(
        service.loop.stats.block_sizes
    )


def test_load_switches_to_aggregate_blocks_and_back_once(world, tmp_path):
    states, sizes = run_load(world, tmp_path, hysteresis=True)

    assert states == [True, False]
    assert 1 in sizes
    assert max(sizes) > 1


def test_without_hysteresis_the_state_flaps(world, tmp_path):
    states, _ = run_load(world, tmp_path, hysteresis=False)

    assert len(states) >= 3, states
    assert states[0] is True, states
    assert all(a != b for a, b in itertools.pairwise(states))
