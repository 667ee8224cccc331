"""Where the gateway finds a terminal's public key: the registry on chain, or a table.

The gateway asks one question per record: which key verifies this terminal's
signatures, if the terminal may submit at all? :class:`RegistryKeys` answers from the
TerminalRegistry contract and keeps a cache, refreshed from the registry's
``TerminalRegistered`` and ``TerminalDeactivated`` events at most once per refresh
interval; :class:`StaticKeys` answers from a table, for tests and for gateways whose
terminals are configured by hand.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Protocol

import requests
from cryptography.hazmat.primitives.asymmetric import rsa
from web3 import Web3
from web3.exceptions import Web3Exception

from posaudit.chain.deploy import Deployment, contract_at
from posaudit.exceptions import (
    ChainError,
    TerminalInactiveError,
    UnknownTerminalError,
)
from posaudit.ledger import terminal_bytes
from posaudit.signing import KEY_BITS

log = logging.getLogger(__name__)

DEFAULT_REFRESH_INTERVAL = 1.0
DEFAULT_LOG_PAGE = 10_000

# What a node that does not answer, or answers nonsense, raises through web3.py.
_CHAIN_FAILURES: tuple[type[BaseException], ...] = (
    Web3Exception,
    requests.exceptions.RequestException,
    OSError,
    ValueError,
)


class TerminalKeys(Protocol):
    """A source of terminal keys, safe to call from several threads."""

    def key_of(self, terminal_id: str) -> rsa.RSAPublicKey:
        """The key that verifies ``terminal_id``'s signatures.

        Raises:
            UnknownTerminalError: No key is registered for the terminal.
            TerminalInactiveError: The terminal is deactivated.
            ChainError: The source cannot be read to look up a new terminal.
        """
        ...


def _unknown(terminal_id: str) -> UnknownTerminalError:
    return UnknownTerminalError(
        f"Terminal {terminal_id!r} has no registered key; an operator registers it "
        "with 'posaudit terminal register'."
    )


def _inactive(terminal_id: str) -> TerminalInactiveError:
    return TerminalInactiveError(
        f"Terminal {terminal_id!r} is deactivated in the registry; its records are "
        "refused."
    )


class StaticKeys:
    """Terminal keys from a table.

    Args:
        keys: Public key by terminal id.
        inactive: Terminal ids that are known but deactivated.
    """

    def __init__(
        self, keys: Mapping[str, rsa.RSAPublicKey], inactive: Iterable[str] = ()
    ) -> None:
        self._keys = dict(keys)
        self._inactive = set(inactive)

    def key_of(self, terminal_id: str) -> rsa.RSAPublicKey:
        """The key of ``terminal_id`` (see :meth:`TerminalKeys.key_of`)."""
        if terminal_id in self._inactive:
            raise _inactive(terminal_id)

        try:
            return self._keys[terminal_id]
        except KeyError:
            raise _unknown(terminal_id) from None

    def deactivate(self, terminal_id: str) -> None:
        """Refuse ``terminal_id`` from now on."""
        self._inactive.add(terminal_id)


class RegistryKeys:
    """Terminal keys read from the deployment's TerminalRegistry, cached.

    The first lookup reads every ``TerminalRegistered`` and ``TerminalDeactivated``
    event since ``from_block``; later lookups read the events of the blocks mined
    since, at most once per ``refresh_interval`` seconds, so that a new terminal is
    known and a deactivated one refused within about that time. For each terminal
    an event names, the key and the active flag are read from the registry's state
    at the scanned block, so the cache never depends on the order of events.

    When the node does not answer, known terminals keep their cached keys; a
    terminal not in the cache raises :class:`ChainError`.

    Args:
        w3: Connection to a node of the deployment's chain.
        deployment: The contracts; only the registry is read.
        refresh_interval: Least number of seconds between two reads of the chain.
        from_block: First chain block to scan, e.g. the deployment's.
        log_page: Chain blocks per ``eth_getLogs`` request.
        clock: Monotonic seconds; tests pass their own.
    """

    def __init__(
        self,
        w3: Web3,
        deployment: Deployment,
        refresh_interval: float = DEFAULT_REFRESH_INTERVAL,
        from_block: int = 0,
        log_page: int = DEFAULT_LOG_PAGE,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._w3 = w3
        self._registry = contract_at(w3, "TerminalRegistry", deployment.registry)
        self._refresh_interval = refresh_interval
        self._next_block = from_block
        self._log_page = log_page
        self._clock = clock
        self._lock = threading.Lock()
        self._active: dict[str, rsa.RSAPublicKey] = {}
        self._inactive: set[str] = set()
        self._last_refresh: float | None = None

    def key_of(self, terminal_id: str) -> rsa.RSAPublicKey:
        """The key of ``terminal_id`` (see :meth:`TerminalKeys.key_of`)."""
        with self._lock:
            known = terminal_id in self._active or terminal_id in self._inactive
            if self._due():
                try:
                    self._refresh()
                except ChainError as err:
                    if not known:
                        raise

                    log.warning(
                        "registry refresh failed, using cached keys",
                        extra={"terminal_id": terminal_id, "error": str(err)},
                    )

            if terminal_id in self._inactive:
                raise _inactive(terminal_id)

            key = self._active.get(terminal_id)

        if key is None:
            raise _unknown(terminal_id)

        return key

    def refresh(self) -> int:
        """Read the registry's events now, whatever the interval.

        Returns:
            The number of terminals whose entry changed.

        Raises:
            ChainError: The node does not answer.
        """
        with self._lock:
            return self._refresh()

    def __len__(self) -> int:
        with self._lock:
            return len(self._active)

    def _due(self) -> bool:
        return (
            self._last_refresh is None
            or self._clock() - self._last_refresh >= self._refresh_interval
        )

    def _refresh(self) -> int:
        self._last_refresh = self._clock()
        try:
            head = int(self._w3.eth.block_number)
            changed = self._terminals_named(self._next_block, head)
            states = {tid: self._state(tid, head) for tid in sorted(changed)}
        except _CHAIN_FAILURES as err:
            raise ChainError(
                f"Cannot read the terminal registry {self._registry.address}: {err}."
            ) from err

        for terminal_id, key in states.items():
            self._active.pop(terminal_id, None)
            self._inactive.discard(terminal_id)
            if key is None:
                self._inactive.add(terminal_id)
            else:
                self._active[terminal_id] = key

        self._next_block = max(self._next_block, head + 1)
        if states:
            log.info(
                "terminal keys refreshed",
                extra={
                    "changed": len(states),
                    "active": len(self._active),
                    "inactive": len(self._inactive),
                    "to_block": head,
                },
            )

        return len(states)

    def _terminals_named(self, first: int, last: int) -> set[str]:
        named: set[str] = set()
        events = self._registry.events
        for start in range(first, last + 1, self._log_page):
            end = min(start + self._log_page - 1, last)
            for event in (events.TerminalRegistered, events.TerminalDeactivated):
                for entry in event.get_logs(from_block=start, to_block=end):
                    named.add(_terminal_text(entry["args"]["terminalId"]))

        return named

    def _state(self, terminal_id: str, block: int) -> rsa.RSAPublicKey | None:
        """The terminal's key when it is active, None when it is not."""
        functions = self._registry.functions
        tid = terminal_bytes(terminal_id)
        _, active = functions.terminalStatus(tid).call(block_identifier=block)
        if not active:
            return None

        modulus, exponent = functions.publicKeyOf(tid).call(block_identifier=block)
        return _public_key(terminal_id, bytes(modulus), bytes(exponent))


def _terminal_text(value: Any) -> str:
    return bytes(value).decode("ascii", errors="replace")


def _public_key(
    terminal_id: str, modulus: bytes, exponent: bytes
) -> rsa.RSAPublicKey | None:
    """The registered key, or None (the terminal is refused) when it is unusable."""
    numbers = rsa.RSAPublicNumbers(
        int.from_bytes(exponent, "big"), int.from_bytes(modulus, "big")
    )
    try:
        key = numbers.public_key()
    except ValueError as err:
        log.warning(
            "registered key is unusable",
            extra={"terminal_id": terminal_id, "error": str(err)},
        )
        return None

    if key.key_size < KEY_BITS:
        log.warning(
            "registered key is too small",
            extra={"terminal_id": terminal_id, "bits": key.key_size},
        )
        return None

    return key
