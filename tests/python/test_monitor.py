"""The network monitor on a real anvil: bytes counted on the socket, Ledger blocks
counted on chain, and the state crossing into congestion and back under real load.

The clock is fake so that rates are exact; the blocks and bytes are real.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from eth_typing import HexStr
from web3 import Web3
from web3.types import RPCEndpoint, TxParams

from posaudit.chain.deploy import Deployment, deploy
from posaudit.chain.devnet import Devnet, free_port
from posaudit.exceptions import ChainError, MonitorError
from posaudit.ledger import LedgerClient
from posaudit.monitor import (
    CountingHTTPProvider,
    LinkTraffic,
    NetworkMonitor,
    SlidingWindowRate,
    counting_connect,
    ledger_height,
    traffic_of,
)
from posaudit.monitor_policy import (
    MonitorPolicy,
    MonitorSettings,
    NetworkState,
    Transition,
)
from posaudit.records import Domain, SettlementRecord, SignedRecord, encode_record
from posaudit.signing import sign

MERCHANT = "0x" + "3e" * 20
PAYER = "0x" + "a0" * 20
BIG_DATA = HexStr("0x" + "ab" * 50_000)


@dataclass
class World:
    rpc_url: str
    w3: Web3
    deployment: Deployment
    ledger: LedgerClient
    key: rsa.RSAPrivateKey
    sequences: Iterator[int]

    def record(self) -> SignedRecord:
        now = int(self.w3.eth.get_block("latest")["timestamp"])
        record = SettlementRecord(
            domain=Domain(self.deployment.chain_id, self.deployment.ledger),
            record_id=os.urandom(16),
            terminal_id="TERM0001",
            sequence=next(self.sequences),
            payer=PAYER,
            merchant=MERCHANT,
            amount=1,
            currency="EUR",
            timestamp=now,
            valid_until=now + 3_600,
        )
        return SignedRecord(record, sign(self.key, encode_record(record)))

    def append_blocks(self, count: int) -> None:
        """Append ``count`` one-record settlement blocks, as in normal mode."""
        for _ in range(count):
            self.ledger.append([self.record()])


@pytest.fixture(scope="module")
def world(terminal_key: rsa.RSAPrivateKey) -> Iterator[World]:
    with Devnet() as devnet:
        w3 = counting_connect(devnet.rpc_url, "bookkeeper")
        admin, bookkeeper = list(w3.eth.accounts)[:2]
        deployment = deploy(w3, admin, bookkeeper)
        ledger = LedgerClient(w3, deployment, admin, bookkeeper)
        ledger.register_terminal("TERM0001", MERCHANT, terminal_key.public_key())
        ledger.open_account(PAYER, 10**12, 1990_01_01)
        ledger.deposit(PAYER, 10**12)
        yield World(
            devnet.rpc_url, w3, deployment, ledger, terminal_key, itertools.count(1)
        )


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class Relay:
    """A TCP relay in front of the node that counts the bytes it forwards each way."""

    def __init__(self, node_url: str) -> None:
        self._node = ("127.0.0.1", int(node_url.rsplit(":", 1)[1]))
        self._server = socket.create_server(("127.0.0.1", 0))
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self.upstream = 0
        self.downstream = 0
        self.url = f"http://127.0.0.1:{self._server.getsockname()[1]}"
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                client, _ = self._server.accept()
            except OSError:
                return

            node = socket.create_connection(self._node)
            self._sockets += [client, node]
            for source, sink, up in ((client, node, True), (node, client, False)):
                threading.Thread(
                    target=self._pipe, args=(source, sink, up), daemon=True
                ).start()

    def _pipe(self, source: socket.socket, sink: socket.socket, up: bool) -> None:
        try:
            while data := source.recv(65_536):
                # Counted before forwarding: when the client holds a response, both
                # directions are counted in full.
                with self._lock:
                    if up:
                        self.upstream += len(data)
                    else:
                        self.downstream += len(data)

                sink.sendall(data)
        except OSError:
            return

    def close(self) -> None:
        self._server.close()
        for sock in self._sockets:
            sock.close()


@pytest.fixture
def relay(world: World) -> Iterator[Relay]:
    relay = Relay(world.rpc_url)
    yield relay
    relay.close()


class TestCountingProvider:
    """Bytes counted per link are the bytes that crossed the socket."""

    def test_counts_exactly_what_a_tcp_relay_forwards(self, world, relay):
        w3 = counting_connect(relay.url, "relayed")
        traffic = traffic_of(w3)

        chain_id = w3.eth.chain_id
        w3.eth.get_block("latest", full_transactions=True)
        w3.eth.call({"to": Web3.to_checksum_address(PAYER), "data": BIG_DATA})

        assert chain_id == 31_337
        assert traffic.sent == relay.upstream
        assert traffic.received == relay.downstream
        assert traffic.sent > 100_000
        assert traffic.total == traffic.sent + traffic.received

    def test_known_request_counts_its_json_body_and_an_http_head(self, world):
        provider = CountingHTTPProvider(world.rpc_url, "chain-id")

        chain_id = Web3(provider).eth.chain_id

        assert chain_id == 31_337
        # The request again, with the next id (1, as long as the 0 that was sent),
        # and anvil's fixed answer to the one that was sent.
        request = provider.encode_rpc_request(RPCEndpoint("eth_chainId"), [])
        response = b'{"jsonrpc":"2.0","id":0,"result":"0x7a69"}'
        request_head = provider.traffic.sent - len(request)
        response_head = provider.traffic.received - len(response)
        assert 150 <= request_head <= 300, "request line and headers only"
        assert 150 <= response_head <= 300, "status line and headers only"

    def test_links_count_separately(self, world):
        quiet = counting_connect(world.rpc_url, "quiet")
        busy = counting_connect(world.rpc_url, "busy")
        before = traffic_of(quiet).total

        for _ in range(5):
            busy.eth.get_block("latest")

        assert traffic_of(quiet).total == before
        assert traffic_of(busy).total > 5 * 500

    def test_plain_web3_has_no_counter(self, world):
        w3 = Web3(Web3.HTTPProvider(world.rpc_url))

        with pytest.raises(MonitorError, match="counting_connect"):
            traffic_of(w3)

    def test_proxy_is_refused_rather_than_left_uncounted(self, world, monkeypatch):
        for name in ("HTTP_PROXY", "http_proxy"):
            monkeypatch.setenv(name, "http://127.0.0.1:9")

        for name in ("NO_PROXY", "no_proxy"):
            monkeypatch.delenv(name, raising=False)

        provider = CountingHTTPProvider(
            world.rpc_url, "proxied", exception_retry_configuration=None
        )

        with pytest.raises(MonitorError, match=r"'proxied' .* NO_PROXY"):
            Web3(provider).eth.get_block_number()


class TestSlidingWindowRate:
    """Rates over the shortest run of samples that covers the window."""

    def test_no_rate_before_two_samples(self):
        meter = SlidingWindowRate(10.0)

        assert meter.add(0.0, 5) == 0.0

    def test_rate_spans_the_window(self):
        meter = SlidingWindowRate(10.0)
        for second, count in enumerate([0, 10, 20, 30]):
            meter.add(float(second * 5), count)

        assert meter.rate == pytest.approx(20 / 10)

    def test_sparse_samples_give_the_last_interval(self):
        meter = SlidingWindowRate(1.0)
        meter.add(0.0, 0)
        meter.add(5.0, 50)

        assert meter.add(10.0, 60) == pytest.approx(2.0)

    def test_count_going_back_restarts_the_history(self):
        meter = SlidingWindowRate(10.0)
        meter.add(0.0, 100)
        meter.add(1.0, 200)

        assert meter.add(2.0, 3) == 0.0
        assert meter.add(3.0, 5) == pytest.approx(2.0)

    def test_window_must_be_positive(self):
        with pytest.raises(MonitorError, match="longer than 0 s"):
            SlidingWindowRate(0.0)


def test_block_rate_is_the_rate_of_ledger_blocks(world):
    """Six one-record blocks in two seconds are three settlement blocks per second."""
    height = ledger_height(world.ledger)
    meter = SlidingWindowRate(10.0)
    start = height()
    meter.add(0.0, start)

    world.append_blocks(6)
    rate = meter.add(2.0, height())

    assert height() == start + 6 == world.ledger.head()[1]
    assert rate == pytest.approx(3.0)
    assert meter.add(12.0, height()) == 0.0


def test_network_monitor_crosses_into_congestion_and_back(world, caplog):
    """Big requests alone keep it normal; block load congests it; quiet ends it."""
    settings = MonitorSettings(
        window_seconds=4.0,
        enter_block_rate=2.0,
        leave_block_rate=0.5,
        enter_link_rate=20_000.0,
        leave_link_rate=5_000.0,
        min_hold_seconds=4.0,
    )
    clock = FakeClock()
    changes: list[Transition] = []
    link = traffic_of(world.w3)
    monitor = NetworkMonitor(
        MonitorPolicy(settings),
        ledger_height(world.ledger),
        [link],
        clock=clock,
        on_change=changes.append,
        min_interval=0.5,
    )
    caplog.set_level(logging.INFO, logger="posaudit.monitor")
    big_call: TxParams = {"to": Web3.to_checksum_address(PAYER), "data": BIG_DATA}

    def second(load: str) -> Transition | None:
        if load == "big requests":
            world.w3.eth.call(big_call)
        elif load == "blocks":
            world.append_blocks(4)

        clock.now += 1.0
        return monitor.tick()

    monitor.tick()
    busy_link = [second("big requests") for _ in range(6)]
    peak_link = monitor.snapshot()["links"]["bookkeeper"]["bytes_per_second"]
    entering = [second("blocks") for _ in range(6)]
    leaving = [second("quiet") for _ in range(8)]

    assert busy_link == [None] * 6
    assert peak_link > settings.enter_link_rate
    assert [(t.previous, t.current) for t in changes] == [
        (NetworkState.NORMAL, NetworkState.CONGESTED),
        (NetworkState.CONGESTED, NetworkState.NORMAL),
    ]
    assert changes[0] in entering
    assert changes[1] in leaving
    assert changes[0].block_rate > 2.0
    assert changes[0].link_rates["bookkeeper"] > 20_000.0
    assert changes[1].time - changes[0].time >= settings.min_hold_seconds
    assert monitor.state is NetworkState.NORMAL
    logged = [r for r in caplog.records if r.getMessage() == "network state changed"]
    assert [(r.from_state, r.to_state) for r in logged] == [
        ("normal", "congested"),
        ("congested", "normal"),
    ]
    assert logged[0].block_rate == changes[0].block_rate
    assert logged[0].link_rates == {"bookkeeper": changes[0].link_rates["bookkeeper"]}


def test_snapshot_is_json_for_the_gateway(world):
    clock = FakeClock()
    monitor = NetworkMonitor(
        MonitorPolicy(),
        ledger_height(world.ledger),
        [traffic_of(world.w3)],
        clock=clock,
    )
    monitor.tick()
    clock.now = 2.0
    world.append_blocks(2)

    monitor.tick()
    snapshot = json.loads(json.dumps(monitor.snapshot()))

    assert snapshot["state"] == "normal"
    assert snapshot["since"] is None
    assert snapshot["sampled_at"] == 2.0
    assert snapshot["block_rate"] == pytest.approx(1.0)
    link = snapshot["links"]["bookkeeper"]
    assert link["bytes_per_second"] > 0
    assert link["bytes_sent"] > 0 and link["bytes_received"] > 0
    assert snapshot["thresholds"]["enter_block_rate"] == 5.0


def test_tick_within_min_interval_takes_no_sample(world):
    clock = FakeClock()
    reads: list[float] = []

    def height() -> int:
        reads.append(clock.now)
        return 0

    monitor = NetworkMonitor(
        MonitorPolicy(),
        height,
        [traffic_of(world.w3)],
        clock=clock,
        min_interval=1.0,
    )
    monitor.tick()
    clock.now = 0.9

    monitor.tick()

    assert reads == [0.0]


def test_unreachable_node_raises_and_keeps_the_state(world):
    nobody = f"http://127.0.0.1:{free_port()}"
    dead = Web3(
        CountingHTTPProvider(nobody, "dead", exception_retry_configuration=None)
    )
    ledger = LedgerClient(dead, world.deployment, world.ledger.operator, PAYER)
    monitor = NetworkMonitor(
        MonitorPolicy(), ledger_height(ledger), [traffic_of(dead)], clock=FakeClock()
    )

    with pytest.raises(ChainError, match="Cannot read the Ledger head"):
        monitor.tick()

    assert monitor.state is NetworkState.NORMAL
    assert monitor.snapshot()["sampled_at"] is None


def test_concurrent_ticks_keep_samples_in_order(world):
    """Four threads tick and read at once; the policy never sees time go back."""
    heights = itertools.count()
    monitor = NetworkMonitor(
        MonitorPolicy(), lambda: next(heights), [traffic_of(world.w3)], min_interval=0
    )
    errors: list[BaseException] = []

    def hammer() -> None:
        try:
            for _ in range(300):
                monitor.tick()
                monitor.snapshot()
        except BaseException as err:
            errors.append(err)

    threads = [threading.Thread(target=hammer) for _ in range(4)]
    for thread in threads:
        thread.start()

    for thread in threads:
        thread.join()

    assert errors == []


@pytest.mark.parametrize(
    ("links", "message"),
    [([], "at least one link"), (["rpc", "rpc"], "unique")],
    ids=["no-links", "duplicate-names"],
)
def test_monitor_refuses_bad_links(links, message):
    with pytest.raises(MonitorError, match=message):
        NetworkMonitor(MonitorPolicy(), lambda: 0, [LinkTraffic(n) for n in links])


def test_default_leave_rate_is_below_the_aggregate_block_rate():
    """Congested, a block leaves at least every flush timeout while records arrive."""
    from posaudit.bookkeeper import BatchPolicy

    assert MonitorSettings().leave_block_rate < 1 / BatchPolicy().flush_timeout
