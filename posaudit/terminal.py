"""The terminal client: builds, signs and uploads settlement records to a gateway.

Exactly once: a request that timed out or lost its connection is sent again with the
same bytes, and the gateway answers a repeat of a stored record with the first answer
(200 instead of 201), so a record is stored once however often it is sent. The same
holds for a 502, 503 or 504 answer, where nothing was stored.

A terminal's sequence numbers must increase; :class:`SequenceFile` keeps the next one
in a small JSON file beside the terminal's key and writes it to disk before handing a
number out, so a crash can skip a number but never reuse one.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import urllib3
from cryptography.hazmat.primitives.asymmetric import rsa
from urllib3.exceptions import IncompleteRead, ProtocolError
from urllib3.exceptions import TimeoutError as HTTPTimeoutError

from posaudit.exceptions import (
    GatewayUnavailableError,
    SequenceFileError,
    UploadRejectedError,
)
from posaudit.records import (
    MAX_UINT64,
    Domain,
    SettlementRecord,
    SignedRecord,
    encode_record,
)
from posaudit.signing import sign
from posaudit.upload import ERROR_CODES, MAX_BATCH_RECORDS, upload_document

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 5.0
DEFAULT_RETRIES = 3
# A terminal waits at most this long between two attempts, so that it notices a
# gateway that is back within seconds, not minutes.
MAX_BACKOFF = 2.0
DEFAULT_VALIDITY = 3_600

_RETRY_STATUSES = frozenset({502, 503, 504})


@dataclass(frozen=True)
class SubmitAnswer:
    """The gateway's answer to one upload.

    Attributes:
        record_id: The record's 16-byte id.
        status: ``"accepted"``: the record is in the outbox.
        created: True when this upload stored it, False for a repeat.
        attempts: Requests sent, retries included.
    """

    record_id: bytes
    status: str
    created: bool
    attempts: int


@dataclass(frozen=True)
class BatchOutcome:
    """One record's outcome in a batch.

    Attributes:
        index: Position in the batch.
        record_id: The record's id (as sent).
        created: True when stored now, False for a repeat, None when refused.
        error: Why the gateway refused it, or None.
    """

    index: int
    record_id: bytes
    created: bool | None
    error: UploadRejectedError | None


@dataclass(frozen=True)
class BatchAnswer:
    """The gateway's answer to a batch."""

    accepted: int
    duplicates: int
    rejected: int
    outcomes: tuple[BatchOutcome, ...]
    attempts: int


class SequenceFile:
    """The next sequence number of one terminal, in a JSON file.

    Args:
        path: The file, e.g. ``keys/TERM0001.sequence.json``; created at 1.
        terminal_id: The terminal the file belongs to; a file of another terminal
            is refused.
    """

    def __init__(self, path: Path, terminal_id: str) -> None:
        self.path = path
        self.terminal_id = terminal_id

    @classmethod
    def beside(cls, key_path: Path, terminal_id: str) -> SequenceFile:
        """The sequence file in the folder of ``key_path``."""
        return cls(key_path.parent / f"{terminal_id}.sequence.json", terminal_id)

    def peek(self) -> int:
        """The number :meth:`take` hands out next.

        Raises:
            SequenceFileError: The file is unreadable or belongs to another terminal.
        """
        if not self.path.exists():
            return 1

        try:
            document = json.loads(self.path.read_text())
            terminal, following = document["terminal_id"], document["next"]
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise SequenceFileError(
                f"Cannot read the sequence file {self.path}: {err}."
            ) from err

        if terminal != self.terminal_id or not isinstance(following, int):
            raise SequenceFileError(
                f"The sequence file {self.path} is for terminal {terminal!r}, not "
                f"{self.terminal_id!r}, or has no integer 'next'."
            )

        return following

    def take(self, count: int = 1) -> int:
        """Reserve ``count`` numbers; returns the first. Saved before returning.

        Raises:
            SequenceFileError: The file cannot be read or written, or the numbers
                would pass 2**64 - 1.
        """
        first = self.peek()
        if count < 1 or first + count - 1 > MAX_UINT64:
            raise SequenceFileError(
                f"Cannot take {count} sequence numbers from {first}: the last must "
                f"be at most {MAX_UINT64}."
            )

        self._write(first + count)
        return first

    def _write(self, following: int) -> None:
        document = {"terminal_id": self.terminal_id, "next": following}
        temporary = self.path.with_name(self.path.name + ".tmp")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with temporary.open("w") as file:
                file.write(json.dumps(document) + "\n")
                file.flush()
                os.fsync(file.fileno())

            os.replace(temporary, self.path)
        except OSError as err:
            raise SequenceFileError(
                f"Cannot write the sequence file {self.path}: {err}."
            ) from err


class TerminalClient:
    """One terminal's connection to a gateway.

    Args:
        base_url: The gateway, e.g. ``http://127.0.0.1:8000``.
        terminal_id: The terminal's 8-character id.
        key: The terminal's private key.
        domain: The deployment the records settle on.
        timeout: Seconds to wait for a connection and for an answer.
        retries: Extra attempts after a timeout, a lost connection or a 502, 503
            or 504.
        backoff: Seconds before the first retry; doubles with each retry, up to
            ``MAX_BACKOFF``.
    """

    def __init__(
        self,
        base_url: str,
        terminal_id: str,
        key: rsa.RSAPrivateKey,
        domain: Domain,
        timeout: float = DEFAULT_TIMEOUT,
        retries: int = DEFAULT_RETRIES,
        backoff: float = 0.2,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.terminal_id = terminal_id
        self.domain = domain
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self._key = key
        # urllib3 itself rather than requests over it: a third of the CPU per upload,
        # which matters on a terminal and in a load test alike. Retries are ours.
        self._pool = urllib3.PoolManager(
            retries=False, timeout=urllib3.Timeout(connect=timeout, read=timeout)
        )

    def close(self) -> None:
        """Close the HTTP connections."""
        self._pool.clear()

    def __enter__(self) -> TerminalClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def make_record(
        self,
        sequence: int,
        payer: str,
        merchant: str,
        amount: int,
        currency: str,
        *,
        timestamp: int | None = None,
        valid_until: int | None = None,
        goods_category: int = 0,
        operator_id: int = 0,
        record_id: bytes | None = None,
    ) -> SignedRecord:
        """Build and sign a record of this terminal.

        Args:
            sequence: The terminal's next sequence number (see :class:`SequenceFile`).
            payer: Payer account address.
            merchant: Merchant account address.
            amount: Minor units, 1 <= amount <= 2**63 - 1.
            currency: ISO 4217 code.
            timestamp: Unix seconds; now when None.
            valid_until: Lock time; ``timestamp`` + one hour when None.
            goods_category: Index into the Ledger's age rules.
            operator_id: Cashier or operator.
            record_id: 16 bytes; random when None.

        Raises:
            FieldRangeError: A field is out of range.
        """
        taken = int(time.time()) if timestamp is None else timestamp
        record = SettlementRecord(
            domain=self.domain,
            record_id=secrets.token_bytes(16) if record_id is None else record_id,
            terminal_id=self.terminal_id,
            sequence=sequence,
            payer=payer,
            merchant=merchant,
            amount=amount,
            currency=currency,
            timestamp=taken,
            valid_until=taken + DEFAULT_VALIDITY
            if valid_until is None
            else valid_until,
            goods_category=goods_category,
            operator_id=operator_id,
        )
        return SignedRecord(record, sign(self._key, encode_record(record)))

    def submit(self, signed: SignedRecord) -> SubmitAnswer:
        """Upload one record; retried with the same body until the gateway answers.

        Returns:
            The gateway's answer.

        Raises:
            UploadRejectedError: The gateway refused the record (4xx); ``code`` is
                the gateway's error code, e.g. ``RECORD_CONFLICT``.
            GatewayUnavailableError: No answer, or 5xx, after every retry.
        """
        body = json.dumps(upload_document(signed), separators=(",", ":")).encode()
        response, attempts = self._post("/v1/records", body)
        document = json.loads(response.data)
        return SubmitAnswer(
            record_id=bytes.fromhex(document["record_id"]),
            status=document["status"],
            created=response.status == 201,
            attempts=attempts,
        )

    def submit_batch(self, records: Sequence[SignedRecord]) -> BatchAnswer:
        """Upload up to 1,000 records in one request, retried like :meth:`submit`.

        Returns:
            Counts and each record's outcome; refused records carry their error.

        Raises:
            ValueError: No records, or more than 1,000.
            UploadRejectedError: The gateway refused the batch as a whole.
            GatewayUnavailableError: No answer, or 5xx, after every retry.
        """
        if not 1 <= len(records) <= MAX_BATCH_RECORDS:
            raise ValueError(
                f"A batch holds 1 to {MAX_BATCH_RECORDS} records; got {len(records)}."
            )

        uploads = [upload_document(signed) for signed in records]
        body = json.dumps({"records": uploads}, separators=(",", ":")).encode()
        response, attempts = self._post("/v1/records/batch", body)
        document = json.loads(response.data)
        outcomes = tuple(
            BatchOutcome(
                index=result["index"],
                record_id=records[result["index"]].record.record_id,
                created=result.get("created"),
                error=None if result["status"] == "accepted" else _error(result),
            )
            for result in document["results"]
        )
        return BatchAnswer(
            accepted=document["accepted"],
            duplicates=document["duplicates"],
            rejected=document["rejected"],
            outcomes=outcomes,
            attempts=attempts,
        )

    def status(self, record_id: bytes) -> dict[str, Any]:
        """Where a record stands, as the gateway's JSON answer.

        Raises:
            UploadRejectedError: ``RECORD_NOT_FOUND`` and other 4xx.
            GatewayUnavailableError: No answer after every retry.
        """
        response, _ = self._send("GET", f"/v1/records/{record_id.hex()}", None)
        return dict(json.loads(response.data))

    def _post(self, path: str, body: bytes) -> tuple[urllib3.BaseHTTPResponse, int]:
        return self._send("POST", path, body)

    def _send(
        self, method: str, path: str, body: bytes | None
    ) -> tuple[urllib3.BaseHTTPResponse, int]:
        url = self.base_url + path
        headers = {"Content-Type": "application/json"} if body is not None else {}
        problem = "no attempt was made"
        for attempt in range(1, self.retries + 2):
            if attempt > 1:
                time.sleep(min(self.backoff * 2 ** (attempt - 2), MAX_BACKOFF))

            try:
                response = self._pool.request(method, url, body=body, headers=headers)
            except (HTTPTimeoutError, ProtocolError, IncompleteRead) as err:
                # A gateway that dies mid-reply may or may not have stored the
                # record; the same body again gets the first answer either way.
                problem = f"{type(err).__name__}: {err}"
                log.warning(
                    "gateway did not answer, retrying with the same body",
                    extra={"url": url, "attempt": attempt, "error": problem},
                )
                continue

            if response.status in _RETRY_STATUSES:
                problem = f"HTTP {response.status}: {_text(response)}"
                continue

            if 400 <= response.status < 500:
                raise _error(_json_or_empty(response), response.status)

            if response.status >= 500:
                raise GatewayUnavailableError(
                    f"The gateway {self.base_url} failed on {method} {path}: "
                    f"HTTP {response.status} {_text(response)}"
                )

            return response, attempt

        raise GatewayUnavailableError(
            f"The gateway {self.base_url} did not answer {method} {path} after "
            f"{self.retries + 1} attempts; last: {problem}"
        )


def _json_or_empty(response: urllib3.BaseHTTPResponse) -> dict[str, Any]:
    try:
        document = json.loads(response.data)
    except ValueError:
        return {}

    return document if isinstance(document, dict) else {}


def _text(response: urllib3.BaseHTTPResponse) -> str:
    """The start of an answer's body, for a message."""
    return response.data[:200].decode(errors="replace")


def _error(document: dict[str, Any], status: int | None = None) -> UploadRejectedError:
    """The gateway's error object as an exception; a batch result has no status."""
    detail = document.get("error")
    if not isinstance(detail, dict):
        return UploadRejectedError(
            f"HTTP_{status}",
            f"The gateway refused with HTTP {status}.",
            None,
            status or 0,
        )

    code = str(detail.get("code", f"HTTP_{status}"))
    if status is None:
        status = ERROR_CODES[code].status if code in ERROR_CODES else 422

    return UploadRejectedError(
        code, str(detail.get("message", "")), detail.get("field"), status
    )
