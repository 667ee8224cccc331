"""The whole service on loopback: terminal -> gateway (uvicorn) -> outbox ->
bookkeeper loop -> Ledger -> audit -> SettlementComplete, on a real anvil."""

from __future__ import annotations

import dataclasses
import threading
import time
from pathlib import Path

import pytest
import requests

from posaudit.audit import SettlementStatus
from posaudit.config import Config, load_config
from posaudit.gateway import serve_in_background
from posaudit.records import Domain
from posaudit.service import Service
from posaudit.store import Store
from posaudit.terminal import TerminalClient

from .world import MERCHANT, PAYERS, World


def config_for(world: World, tmp_path: Path, **monitor: float) -> Config:
    deployment = tmp_path / "deployment.json"
    world.deployment.save(deployment)
    config = load_config(environ={})
    return dataclasses.replace(
        config,
        chain=dataclasses.replace(config.chain, deployment=deployment),
        store=dataclasses.replace(config.store, path=tmp_path / "posaudit.db"),
        monitor=dataclasses.replace(config.monitor, **monitor),
    )


def wait_for(condition, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        time.sleep(0.05)


@pytest.fixture
def service(world: World, tmp_path: Path):
    config = config_for(world, tmp_path)
    service = Service(config, world.w3.provider.endpoint_uri)
    loop = threading.Thread(target=service.run_loop, daemon=True)
    loop.start()
    with serve_in_background(service.gateway()) as url:
        yield service, url
    service.stop.set()
    loop.join(timeout=10)


def test_records_flow_from_terminal_to_settlement_complete(world, service):
    service, url = service
    domain = Domain(world.deployment.chain_id, world.deployment.ledger)
    client = TerminalClient(url, "TERM0001", world.key, domain)
    start = next(world.sequences)
    records = [
        client.make_record(start + i, PAYERS[i % 4], MERCHANT, 100 + i, "EUR")
        for i in range(5)
    ]
    for _ in range(5):
        next(world.sequences)
    credit = world.credit()

    answers = [client.submit(signed) for signed in records]

    assert {answer.status for answer in answers} == {"accepted"}
    with Store(service.config.store.path) as store:
        wait_for(lambda: store.outbox_size() == 0 and not store.unaudited_blocks())
        placed = [store.record(r.record.record_id) for r in records]
    for stored in placed:
        status = world.audit.status_of(stored.block_hash, stored.leaf_index)
        assert status == SettlementStatus.SETTLED
    assert world.credit() - credit == sum(100 + i for i in range(5))
    assert service.loop.stats.block_sizes == [1] * 5  # normal network
    network = requests.get(f"{url}/v1/network", timeout=5).json()
    assert network["state"] == "normal"
