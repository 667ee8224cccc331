"""The network monitor (claim 6): block rate and link bandwidth, measured for real.

Two measures feed :class:`posaudit.monitor_policy.MonitorPolicy`:

- The **settlement-block rate**: the Ledger's head height, read from the chain at each
  tick, turned into blocks per second over a sliding window. It counts the blocks of
  every bookkeeper that appends to the Ledger, not only this process's.
- The **bandwidth of each link**: the bytes this process sends and receives on each
  RPC connection it holds, counted on the socket by :class:`CountingHTTPProvider` and
  turned into bytes per second over the same window.

:class:`NetworkMonitor` takes a sample at each :meth:`~NetworkMonitor.tick`, runs the
policy, logs each change of state and hands it to an ``on_change`` hook.

NOTE: Bytes are counted above TLS and TCP: HTTP request and status lines, headers and
bodies as sent and received, without TLS records, TCP/IP headers or retransmissions.
Traffic through an HTTP proxy is refused rather than left uncounted.
"""

from __future__ import annotations

import io
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import asdict
from typing import Any

from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.poolmanager import PoolManager
from web3 import HTTPProvider, Web3
from web3.exceptions import Web3Exception

from posaudit.chain.deploy import rpc_session
from posaudit.exceptions import ChainError, MonitorError
from posaudit.ledger import LedgerClient
from posaudit.monitor_policy import (
    MonitorPolicy,
    MonitorSettings,
    NetworkState,
    Sample,
    Transition,
)

log = logging.getLogger(__name__)


class LinkTraffic:
    """Bytes sent and received on one link, counted since creation; thread-safe.

    Args:
        name: The link's name, as the monitor reports it.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self._lock = threading.Lock()
        self._sent = 0
        self._received = 0

    def add_sent(self, count: int) -> None:
        """Count ``count`` bytes sent."""
        with self._lock:
            self._sent += count

    def add_received(self, count: int) -> None:
        """Count ``count`` bytes received."""
        with self._lock:
            self._received += count

    @property
    def sent(self) -> int:
        """Bytes sent so far."""
        with self._lock:
            return self._sent

    @property
    def received(self) -> int:
        """Bytes received so far."""
        with self._lock:
            return self._received

    @property
    def total(self) -> int:
        """Bytes sent and received so far."""
        with self._lock:
            return self._sent + self._received

    def __repr__(self) -> str:
        sent, received = self.sent, self.received
        return f"LinkTraffic({self.name!r}, sent={sent}, received={received})"


class _CountingReader(io.RawIOBase):
    """A socket's read side that counts every byte it receives."""

    def __init__(self, raw: io.RawIOBase, traffic: LinkTraffic) -> None:
        super().__init__()
        self._raw = raw
        self._traffic = traffic

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int | None:
        count = self._raw.readinto(buffer)
        if count:
            self._traffic.add_received(count)

        return count

    def fileno(self) -> int:
        return self._raw.fileno()

    def close(self) -> None:
        self._raw.close()
        super().close()


class _CountingSocket:
    """A connected socket that counts the bytes sent and received through it.

    Everything but sending and ``makefile`` (which ``http.client`` reads responses
    from) goes straight to the wrapped socket.
    """

    def __init__(self, sock: Any, traffic: LinkTraffic) -> None:
        self._sock = sock
        self._traffic = traffic

    def sendall(self, data: Any) -> None:
        self._sock.sendall(data)
        self._traffic.add_sent(memoryview(data).nbytes)

    def send(self, data: Any, *flags: int) -> int:
        count = int(self._sock.send(data, *flags))
        self._traffic.add_sent(count)
        return count

    def makefile(self, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        if mode != "rb":
            raise MonitorError(
                f"A counted RPC connection opened its socket in mode {mode!r}; only "
                "'rb' is counted."
            )

        raw = self._sock.makefile("rb", buffering=0)
        return io.BufferedReader(_CountingReader(raw, self._traffic))

    def __getattr__(self, name: str) -> Any:
        if name == "_sock":
            raise AttributeError(name)

        return getattr(self._sock, name)


class _CountingHTTPConnection(HTTPConnection):
    def __init__(self, *args: Any, traffic: LinkTraffic, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._traffic = traffic

    def connect(self) -> None:
        super().connect()
        self.sock = _CountingSocket(self.sock, self._traffic)


class _CountingHTTPSConnection(HTTPSConnection):
    def __init__(self, *args: Any, traffic: LinkTraffic, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._traffic = traffic

    def connect(self) -> None:
        super().connect()
        self.sock = _CountingSocket(self.sock, self._traffic)


class _CountingHTTPConnectionPool(HTTPConnectionPool):
    ConnectionCls = _CountingHTTPConnection


class _CountingHTTPSConnectionPool(HTTPSConnectionPool):
    ConnectionCls = _CountingHTTPSConnection


class _CountingPoolManager(PoolManager):
    """Pools whose connections count into one :class:`LinkTraffic`."""

    def __init__(self, traffic: LinkTraffic, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._traffic = traffic
        self.pool_classes_by_scheme = {
            "http": _CountingHTTPConnectionPool,
            "https": _CountingHTTPSConnectionPool,
        }

    def _new_pool(
        self,
        scheme: str,
        host: str,
        port: int,
        request_context: dict[str, Any] | None = None,
    ) -> HTTPConnectionPool:
        # The pool key is already made from request_context, so the counter can ride
        # along to the connections without becoming part of it.
        context = dict(
            self.connection_pool_kw if request_context is None else request_context
        )
        context["traffic"] = self._traffic
        return super()._new_pool(scheme, host, port, context)


class CountingAdapter(HTTPAdapter):
    """A requests transport adapter that counts the bytes of every connection it opens.

    Mount it on a session for ``http://`` and ``https://``.

    Args:
        traffic: Where the bytes are counted.
        **kwargs: Passed to :class:`requests.adapters.HTTPAdapter`.
    """

    def __init__(self, traffic: LinkTraffic, **kwargs: Any) -> None:
        # HTTPAdapter.__init__ builds the pool manager, which needs the counter.
        self.traffic = traffic
        super().__init__(**kwargs)

    def init_poolmanager(
        self, connections: int, maxsize: int, block: bool = False, **pool_kwargs: Any
    ) -> None:
        """Build the pool manager whose connections count their bytes."""
        self._pool_connections = connections
        self._pool_maxsize = maxsize
        self._pool_block = block
        self.poolmanager = _CountingPoolManager(
            self.traffic,
            num_pools=connections,
            maxsize=maxsize,
            block=block,
            **pool_kwargs,
        )

    def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any) -> Any:
        """Refuse proxies: their connections would not be counted.

        Raises:
            MonitorError: Always.
        """
        raise MonitorError(
            f"Link {self.traffic.name!r} would reach its node through the proxy "
            f"{proxy!r}, whose traffic is not counted. Add the node's host to "
            "NO_PROXY."
        )


class CountingHTTPProvider(HTTPProvider):
    """A web3 HTTP provider that counts the bytes it sends and receives.

    Args:
        endpoint_uri: The node's JSON-RPC URL.
        link_name: The link's name, as the monitor reports it.
        request_kwargs: Passed to :class:`web3.HTTPProvider` (``timeout``, headers).
        **kwargs: Passed to :class:`web3.HTTPProvider`, except ``session``.
    """

    def __init__(
        self,
        endpoint_uri: str,
        link_name: str,
        request_kwargs: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        self.traffic = LinkTraffic(link_name)
        session = rpc_session(endpoint_uri)
        adapter = CountingAdapter(self.traffic)
        session.mount("http://", adapter)
        session.mount("https://", adapter)
        super().__init__(
            endpoint_uri, request_kwargs=request_kwargs, session=session, **kwargs
        )


def counting_connect(rpc_url: str, link_name: str, timeout: float = 30.0) -> Web3:
    """A Web3 over HTTP to ``rpc_url`` whose traffic is counted as ``link_name``.

    The counter is ``traffic_of(w3)``; hand it to :class:`NetworkMonitor`.

    Raises:
        ChainError: The node does not answer.
    """
    provider = CountingHTTPProvider(
        rpc_url, link_name, request_kwargs={"timeout": timeout}
    )
    w3 = Web3(provider)
    if not w3.is_connected():
        raise ChainError(f"No Ethereum node answers at {rpc_url}.")

    return w3


def traffic_of(w3: Web3) -> LinkTraffic:
    """The byte counter of a Web3 made by :func:`counting_connect`.

    Raises:
        MonitorError: The Web3's provider does not count its traffic.
    """
    provider = w3.provider
    if not isinstance(provider, CountingHTTPProvider):
        raise MonitorError(
            f"The provider {provider} does not count its traffic; connect with "
            "posaudit.monitor.counting_connect."
        )

    return provider.traffic


class SlidingWindowRate:
    """The rate of change of a growing count over a sliding window of time.

    The rate is taken over the shortest run of samples that covers the window: from
    the newest sample at least ``window_seconds`` old, or the oldest one while the
    history is shorter, to the newest. When samples are further apart than the
    window, that is the last interval between two samples.

    Args:
        window_seconds: Length of the window; requires > 0.
    """

    def __init__(self, window_seconds: float) -> None:
        if not window_seconds > 0:
            raise MonitorError(
                f"A rate window of {window_seconds!r} s is too short; it must be "
                "longer than 0 s."
            )

        self.window_seconds = window_seconds
        self._samples: deque[tuple[float, float]] = deque()

    def add(self, now: float, count: float) -> float:
        """Record ``count`` at time ``now`` and return the rate per second.

        A count below the previous one (a node or a counter restarted) starts the
        history afresh, and the rate is 0 until the next sample.
        """
        if self._samples and count < self._samples[-1][1]:
            self._samples.clear()

        self._samples.append((now, count))
        cutoff = now - self.window_seconds
        while len(self._samples) > 1 and self._samples[1][0] <= cutoff:
            self._samples.popleft()

        return self.rate

    @property
    def rate(self) -> float:
        """The rate per second over the window; 0.0 before two samples."""
        if len(self._samples) < 2:
            return 0.0

        (start, first), (end, last) = self._samples[0], self._samples[-1]
        if end <= start:
            return 0.0

        return (last - first) / (end - start)


def ledger_height(ledger: LedgerClient) -> Callable[[], int]:
    """A source of the Ledger's settlement-block height, read from the chain.

    Returns:
        A callable that reads the height of the Ledger's head on each call and raises
        ChainError when the node does not answer or the call fails.
    """

    def height() -> int:
        try:
            return ledger.head()[1]
        except (OSError, Web3Exception) as err:
            raise ChainError(
                f"Cannot read the Ledger head at {ledger.deployment.ledger} to "
                f"measure the block rate: {err}"
            ) from err

    return height


class NetworkMonitor:
    """Measures the network, decides its state and reports each change.

    Synchronous and thread-safe: :meth:`tick` may run in the bookkeeper's loop while
    :attr:`state` and :meth:`snapshot` are read from the gateway's threads.

    Args:
        policy: Thresholds and the current state.
        block_rate_source: Where the block rate comes from: a callable returning the
            Ledger's settlement-block height, such as :func:`ledger_height`; the
            monitor turns it into blocks per second.
        links: Byte counters of the links to watch, such as :func:`traffic_of` of
            each connection; at least one, names unique.
        clock: Seconds, monotonic.
        on_change: Called with each transition, after it is logged, while ticks are
            held back; it may read :attr:`state` and :meth:`snapshot` but must not
            call :meth:`tick`.
        min_interval: Seconds below which a new tick takes no sample, so that a busy
            loop may call :meth:`tick` on every turn. Each sample reads the Ledger
            head, about 2 kB on the node's link when it shares a counted connection.

    Raises:
        MonitorError: No links, or two links with one name.
    """

    def __init__(
        self,
        policy: MonitorPolicy,
        block_rate_source: Callable[[], int],
        links: Iterable[LinkTraffic],
        clock: Callable[[], float] = time.monotonic,
        on_change: Callable[[Transition], None] | None = None,
        min_interval: float = 1.0,
    ) -> None:
        self._links = list(links)
        names = [link.name for link in self._links]
        if not names:
            raise MonitorError(
                "A network monitor needs at least one link: claim 6 declares "
                "congestion only when some link is above its bandwidth threshold."
            )

        if len(set(names)) != len(names):
            raise MonitorError(f"Link names must be unique; got {names!r}.")

        self._policy = policy
        self._height = block_rate_source
        self._clock = clock
        self._on_change = on_change
        self._min_interval = min_interval
        window = policy.settings.window_seconds
        self._block_meter = SlidingWindowRate(window)
        self._link_meters = {name: SlidingWindowRate(window) for name in names}
        self._tick_lock = threading.Lock()
        self._lock = threading.Lock()
        self._last: Sample | None = None

    @property
    def settings(self) -> MonitorSettings:
        """The policy's thresholds."""
        return self._policy.settings

    @property
    def state(self) -> NetworkState:
        """The current state."""
        with self._lock:
            return self._policy.state

    @property
    def congested(self) -> bool:
        """Whether the network is congested: what the bookkeeper's batching asks."""
        return self.state is NetworkState.CONGESTED

    def tick(self) -> Transition | None:
        """Take a sample, run the policy, and report a change of state.

        A tick within ``min_interval`` of the previous sample does nothing.

        Returns:
            The change of state, or None.

        Raises:
            ChainError: The block height cannot be read; no sample is taken.
            Exception: Whatever ``on_change`` raises; the state has changed already.
        """
        with self._tick_lock:
            now = self._clock()
            with self._lock:
                last = self._last

            if last is not None and now - last.time < self._min_interval:
                return None

            height = self._height()
            link_rates = {
                link.name: self._link_meters[link.name].add(now, link.total)
                for link in self._links
            }
            sample = Sample(now, self._block_meter.add(now, height), link_rates)
            with self._lock:
                transition = self._policy.observe(sample)
                self._last = sample

            if transition is None:
                return None

            log.info(
                "network state changed",
                extra={
                    "from_state": str(transition.previous),
                    "to_state": str(transition.current),
                    "block_rate": transition.block_rate,
                    "link_rates": dict(transition.link_rates),
                    "reason": transition.reason,
                },
            )
            if self._on_change is not None:
                self._on_change(transition)

            return transition

    def snapshot(self) -> dict[str, Any]:
        """The state and the last measurements, as a JSON-able dict.

        For the gateway's ``GET /v1/network`` and for metrics. Times are in seconds of
        the monitor's clock; rates are 0.0 before the first tick.
        """
        with self._lock:
            state = self._policy.state
            since = self._policy.since
            last = self._last

        return {
            "state": str(state),
            "since": since,
            "sampled_at": None if last is None else last.time,
            "block_rate": 0.0 if last is None else last.block_rate,
            "links": {
                link.name: {
                    "bytes_per_second": (
                        0.0 if last is None else last.link_rates[link.name]
                    ),
                    "bytes_sent": link.sent,
                    "bytes_received": link.received,
                }
                for link in self._links
            },
            "thresholds": asdict(self._policy.settings),
        }
