"""A fleet of terminals submitting a planned day of records to a gateway.

Each terminal is a thread with its own :class:`~posaudit.terminal.TerminalClient`;
it waits for each record's time and uploads it, one record per request or, for a
terminal that batches, everything that came due since its last upload. A terminal
sends its records in the order given, so the gateway stores them in that order.

:func:`run_fleet` runs the fleet in the calling process; :class:`FleetProcess` runs
it in a process of its own, as terminals are devices of their own: their HTTP and
JSON work then does not compete with the gateway's for one interpreter.

This module imports no chain library, so that a fleet process starts quickly.
"""

from __future__ import annotations

import logging
import multiprocessing
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from posaudit.exceptions import GatewayUnavailableError, UploadRejectedError
from posaudit.records import Domain, SignedRecord
from posaudit.terminal import TerminalClient
from posaudit.upload import MAX_BATCH_RECORDS

log = logging.getLogger(__name__)

UPLOAD_TIMEOUT = 30.0
UNAVAILABLE = "GATEWAY_UNAVAILABLE"


@dataclass(frozen=True)
class Send:
    """One planned upload: its place in the day, its time and the record."""

    index: int
    offset: float
    signed: SignedRecord


@dataclass(frozen=True)
class TerminalPlan:
    """What one terminal of the fleet sends, and how.

    Attributes:
        terminal_id: The terminal's id, for its client and its thread's name.
        key_pem: The terminal's private key, PKCS#8 PEM without encryption (the
            records are signed already; the client holds the key as terminals do).
        batch: Whether it uploads in batches.
        sends: Its uploads, in order.
    """

    terminal_id: str
    key_pem: bytes
    batch: bool
    sends: tuple[Send, ...]


@dataclass(frozen=True)
class Answer:
    """The gateway's answer to one upload.

    Attributes:
        index: The upload's place in the day.
        http_status: 201 stored, 200 a repeat, 4xx refused, None no answer.
        gateway_code: The gateway's error code, if any.
        attempts: Requests sent, retries included.
        sent_at: Seconds after the start of the day when it was sent.
    """

    index: int
    http_status: int | None
    gateway_code: str | None
    attempts: int
    sent_at: float


def key_pem(key: rsa.RSAPrivateKey) -> bytes:
    """A key as unencrypted PKCS#8 PEM, to hand to a fleet process."""
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


class _Terminal(threading.Thread):
    def __init__(
        self,
        url: str,
        domain: Domain,
        plan: TerminalPlan,
        started: float,
        interval: float,
        answer: Callable[[Sequence[Answer]], None],
        stop: threading.Event,
    ) -> None:
        super().__init__(name=f"posaudit-terminal-{plan.terminal_id}", daemon=True)
        key = serialization.load_pem_private_key(plan.key_pem, password=None)
        if not isinstance(key, rsa.RSAPrivateKey):
            raise TypeError(f"Terminal {plan.terminal_id}'s key is not an RSA key.")

        self.plan = plan
        self.started = started
        self.interval = interval
        self.answer = answer
        self.stop = stop
        self.client = TerminalClient(
            url, plan.terminal_id, key, domain, timeout=UPLOAD_TIMEOUT, retries=2
        )

    def run(self) -> None:
        try:
            if self.plan.batch:
                self._run_batches()
            else:
                self._run_singles()
        finally:
            self.client.close()

    def _elapsed(self) -> float:
        return time.time() - self.started

    def _wait_until(self, offset: float) -> bool:
        delay = offset - self._elapsed()
        if delay > 0:
            return not self.stop.wait(delay)

        return not self.stop.is_set()

    def _run_singles(self) -> None:
        for send in self.plan.sends:
            if not self._wait_until(send.offset):
                return

            sent = self._elapsed()
            try:
                reply = self.client.submit(send.signed)
            except UploadRejectedError as err:
                self.answer([Answer(send.index, err.status, err.code, 1, sent)])
            except GatewayUnavailableError as err:
                log.warning("upload failed", extra={"error": str(err)})
                self.answer([Answer(send.index, None, UNAVAILABLE, 1, sent)])
            else:
                status = 201 if reply.created else 200
                self.answer([Answer(send.index, status, None, reply.attempts, sent)])

    def _run_batches(self) -> None:
        sends = self.plan.sends
        position = 0
        while position < len(sends):
            tick = (int(self._elapsed() / self.interval) + 1) * self.interval
            if not self._wait_until(max(sends[position].offset, tick)):
                return

            now = self._elapsed()
            due = []
            while position < len(sends) and sends[position].offset <= now:
                due.append(sends[position])
                position += 1

            # A gateway takes at most MAX_BATCH_RECORDS records in one upload.
            for start in range(0, len(due), MAX_BATCH_RECORDS):
                self._upload(due[start : start + MAX_BATCH_RECORDS], now)

    def _upload(self, due: Sequence[Send], sent: float) -> None:
        try:
            reply = self.client.submit_batch([send.signed for send in due])
        except (UploadRejectedError, GatewayUnavailableError) as err:
            log.warning("batch upload failed", extra={"error": str(err)})
            self.answer(
                [Answer(send.index, None, UNAVAILABLE, 1, sent) for send in due]
            )
            return

        answers = []
        for send, outcome in zip(due, reply.outcomes, strict=True):
            if outcome.error is not None:
                error = outcome.error
                answers.append(Answer(send.index, error.status, error.code, 1, sent))
            else:
                status = 201 if outcome.created else 200
                answers.append(Answer(send.index, status, None, reply.attempts, sent))

        # One message for the whole batch: a queue put per record would cost the
        # fleet's process more than its upload.
        self.answer(answers)


def run_fleet(
    url: str,
    domain: Domain,
    plans: Sequence[TerminalPlan],
    started: float,
    interval: float,
    answer: Callable[[Sequence[Answer]], None],
    stop: threading.Event | None = None,
) -> None:
    """Run every terminal of the fleet until each has sent its records.

    Args:
        url: The gateway.
        domain: The deployment, for the clients.
        plans: One plan per terminal.
        started: Wall-clock time (``time.time()``) of the start of the day.
        interval: Seconds a batching terminal gathers records before an upload.
        answer: Called with the answers of each upload, from the terminals'
            threads.
        stop: Set to stop the terminals early.
    """
    stop = stop or threading.Event()
    terminals = [
        _Terminal(url, domain, plan, started, interval, answer, stop) for plan in plans
    ]
    for terminal in terminals:
        terminal.start()

    for terminal in terminals:
        terminal.join()


def _fleet_main(
    url: str,
    domain: Domain,
    plans: Sequence[TerminalPlan],
    started: float,
    interval: float,
    answers: multiprocessing.Queue[Sequence[Answer]],
) -> None:
    run_fleet(url, domain, plans, started, interval, answers.put)


class FleetProcess:
    """The fleet in a process of its own; answers come back through a queue.

    NOTE: The process is spawned, so a script that starts one must guard its top
    level with ``if __name__ == "__main__":``.
    """

    def __init__(
        self,
        url: str,
        domain: Domain,
        plans: Sequence[TerminalPlan],
        started: float,
        interval: float,
    ) -> None:
        context = multiprocessing.get_context("spawn")
        self._answers: multiprocessing.Queue[Sequence[Answer]] = context.Queue()
        self._process = context.Process(
            target=_fleet_main,
            args=(url, domain, list(plans), started, interval, self._answers),
            name="posaudit-terminals",
            daemon=True,
        )

    def start(self) -> None:
        """Start the terminals."""
        self._process.start()

    def answers(self) -> list[Answer]:
        """The answers that arrived since the last call."""
        arrived: list[Answer] = []
        while True:
            try:
                arrived.extend(self._answers.get_nowait())
            except queue.Empty:
                return arrived

    def is_alive(self) -> bool:
        """Whether some terminal is still sending."""
        return self._process.is_alive()

    def stop(self, timeout: float = 10.0) -> None:
        """End the process (its terminals stop mid-day)."""
        if self._process.is_alive():
            self._process.terminate()

        self._process.join(timeout)
