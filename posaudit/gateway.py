"""The gateway: the data upload endpoint of terminals (claims 1 to 3).

A terminal posts its signed records here. The gateway reads each body strictly (see
:mod:`posaudit.upload`), verifies the RSA signature with the terminal's registered key
before anything else happens to the record, and puts the record in the store's outbox,
committed to disk, before it answers. It knows nothing of the bookkeeper: the two meet
only in the store.

Endpoints (the OpenAPI document at ``/openapi.json`` lists every answer):

``POST /v1/records``
    One upload. 201 ``{"record_id", "status": "accepted"}`` when stored now; 200 with
    the same body when the identical record was stored before, so a terminal that
    retries after a lost answer gets the first answer again; 409 ``RECORD_CONFLICT``
    when its record id, or its terminal and sequence number, belong to a different
    record. Body at most :data:`~posaudit.upload.MAX_RECORD_BODY` bytes.
``POST /v1/records/batch``
    Up to :data:`~posaudit.upload.MAX_BATCH_RECORDS` uploads. Each record is checked,
    verified and stored on its own: the good ones are stored and the bad ones
    reported, each with its error, in a 200 answer listing every record in order. A
    batch whose body or shape is wrong as a whole stores nothing and gets one error.
``GET /v1/records/{record_id}``
    Where a record stands: in the outbox, or in a settlement block at a leaf index
    with the Ledger's status code and the settlement status the store knows.
``GET /v1/records/{record_id}/receipt``
    The record's receipt (only when the gateway was given a receipt writer).
``GET /v1/network``
    The network monitor's state, or ``{"state": "unknown"}`` without a monitor.
``GET /health`` and ``GET /metrics``
    Liveness with the outbox size; Prometheus text.

Every error is ``{"error": {"code", "field", "message"}}`` with a code from
:data:`~posaudit.upload.ERROR_CODES`. An unknown or deactivated terminal gets 403; a
signature that does not verify gets 422 ``BAD_SIGNATURE``. No client mistake gets a
5xx: 503 means the registry or the store is unavailable, and then nothing was stored.

SQLite connections belong to the thread that opened them, and writes to one file
serialise anyway, so the gateway writes through one thread with one store and reads
(status, receipts, metrics) through another; signature checks run in the worker
threads, off the event loop.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import sqlite3
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar

import anyio.to_thread
import uvicorn
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from pydantic import BaseModel
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from web3 import Web3

from posaudit.chain.deploy import Deployment
from posaudit.exceptions import (
    BadSignatureError,
    ChainError,
    GatewayUnavailableError,
    PosauditError,
    RecordConflictError,
    RecordNotFoundError,
    RecordNotInBlockError,
    StoreError,
    TerminalInactiveError,
    UnknownTerminalError,
    UploadRejectedError,
)
from posaudit.receipts import Receipt, build_receipt
from posaudit.records import Domain, SignedRecord
from posaudit.rules import StatusCode
from posaudit.signing import verify
from posaudit.store import Store, StoredBlock, StoredRecord
from posaudit.terminal_keys import DEFAULT_REFRESH_INTERVAL, RegistryKeys, TerminalKeys
from posaudit.upload import (
    BATCH_SCHEMA,
    ERROR_CODES,
    MAX_BATCH_BODY,
    MAX_BATCH_RECORDS,
    MAX_RECORD_BODY,
    UPLOAD_SCHEMA,
    parse_json,
    read_batch,
    read_upload,
    record_id_bytes,
    rejected,
)

log = logging.getLogger(__name__)

T = TypeVar("T")

# Seconds a thread of the gateway may hold the GIL while others wait (Python's default
# is 0.005). The store's writer gives the GIL up around every SQLite call and waited
# up to that long to get it back each time, holding the store's write lock, which the
# bookkeeper then waited for.
SWITCH_INTERVAL = 0.0005

NetworkSnapshot = Callable[[], Mapping[str, Any]]
"""Returns the network monitor's state as a JSON-ready mapping, e.g.
``NetworkMonitor.snapshot``."""

ReceiptWriter = Callable[[Store, bytes], Receipt]
"""Writes the receipt of a record id from the store (and the chain it knows)."""

_LATENCY_BUCKETS = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)


@dataclass(frozen=True)
class GatewayLimits:
    """Bounds on what one request may carry.

    Attributes:
        record_body: Bytes of a ``POST /v1/records`` body.
        batch_body: Bytes of a ``POST /v1/records/batch`` body.
        batch_records: Uploads in one batch.
    """

    record_body: int = MAX_RECORD_BODY
    batch_body: int = MAX_BATCH_BODY
    batch_records: int = MAX_BATCH_RECORDS


class ErrorDetail(BaseModel):
    """What went wrong, for a program (code, field) and for a person (message)."""

    code: str
    field: str | None
    message: str


class ErrorReply(BaseModel):
    """Every 4xx and 5xx answer of the gateway."""

    error: ErrorDetail


class AcceptedReply(BaseModel):
    """A record is in the outbox (201 when stored now, 200 when stored before)."""

    record_id: str
    status: Literal["accepted"]


class BatchResult(BaseModel):
    """The outcome of one upload of a batch, at its index in the batch."""

    index: int
    record_id: str | None
    status: Literal["accepted", "rejected"]
    created: bool | None = None
    error: ErrorDetail | None = None


class BatchReply(BaseModel):
    """Counts and every upload's outcome, in batch order."""

    accepted: int
    duplicates: int
    rejected: int
    results: list[BatchResult]


class BlockPlace(BaseModel):
    """The settlement block a record is in."""

    hash: str
    height: int
    chain_block: int
    transaction_hash: str


class RecordStatusReply(BaseModel):
    """Where a record stands.

    ``settlement`` is what the store knows: ``REJECTED_BY_RULES`` (the Ledger's code
    is not APPROVED), ``HELD`` (approved, the block's audit not done) or ``AUDITED``
    (the block's audit transaction is ``audit_transaction``; the record's receipt
    tells whether it settled or was rejected by the audit).
    """

    record_id: str
    status: Literal["in_outbox", "in_block"]
    terminal_id: str
    sequence: int
    received_at: float
    block: BlockPlace | None = None
    leaf_index: int | None = None
    code: str | None = None
    settlement: Literal["REJECTED_BY_RULES", "HELD", "AUDITED"] | None = None
    audit_transaction: str | None = None


class HealthReply(BaseModel):
    """The gateway answers and its store reads."""

    status: Literal["ok"]
    outbox: int


class GatewayMetrics:
    """The gateway's Prometheus metrics, in a registry of their own."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.accepted = Counter(
            "posaudit_gateway_records_accepted",
            "Records stored in the outbox by this gateway.",
            registry=self.registry,
        )
        self.duplicates = Counter(
            "posaudit_gateway_records_duplicate",
            "Exact repeats of records already in the store.",
            registry=self.registry,
        )
        self.rejected = Counter(
            "posaudit_gateway_records_rejected",
            "Uploads refused, by error code.",
            ["code"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "posaudit_gateway_request_duration_seconds",
            "Time from request to the end of the answer.",
            ["method", "route", "status"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.outbox = Gauge(
            "posaudit_gateway_outbox_depth",
            "Records in the outbox, waiting for a settlement block.",
            registry=self.registry,
        )

    def count(self, created: bool, records: int = 1) -> None:
        """Count stored records, or exact repeats."""
        if records:
            (self.accepted if created else self.duplicates).inc(records)

    def render(self) -> bytes:
        """The metrics as Prometheus text."""
        return generate_latest(self.registry)


class _StoreThread:
    """One store used by one thread: sqlite3 connections stay in their thread."""

    def __init__(self, path: Path, name: str) -> None:
        self._path = path
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)
        self._store: Store | None = None

    def _call(self, work: Callable[[Store], T]) -> T:
        if self._store is None:
            self._store = Store(self._path)

        try:
            return work(self._store)
        except sqlite3.Error as err:
            raise rejected(
                "STORE_UNAVAILABLE", f"The store {self._path} failed: {err}."
            ) from err
        except StoreError as err:
            if isinstance(err, RecordConflictError | RecordNotFoundError):
                raise

            raise rejected("STORE_UNAVAILABLE", str(err)) from err

    async def run(self, work: Callable[[Store], T]) -> T:
        """Run ``work(store)`` on the store's thread."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._call, work)

    def _close(self) -> None:
        if self._store is not None:
            self._store.close()
            self._store = None

    async def close(self) -> None:
        """Close the store on its thread and stop the thread."""
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._executor, self._close)
        self._executor.shutdown(wait=True)


class _GroupCommit:
    """Stores single uploads that arrive together in one store transaction.

    Every record is on disk before its answer, as when stored alone; but a commit
    waits for the disk, and the uploads that arrive meanwhile share the next commit
    instead of each waiting for its own.

    Args:
        writer: The store thread that writes.
    """

    def __init__(self, writer: _StoreThread) -> None:
        self._writer = writer
        self._waiting: list[tuple[SignedRecord, asyncio.Future[Any]]] = []
        self._flush: asyncio.Task[None] | None = None

    async def add(self, signed: SignedRecord) -> bool:
        """Store ``signed``; returns whether it was new (False: an exact repeat).

        Raises:
            UploadRejectedError: A conflicting record is stored, or the store failed.
        """
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._waiting.append((signed, future))
        if self._flush is None:
            self._flush = asyncio.create_task(self._drain())

        outcome = await future
        if isinstance(outcome, UploadRejectedError):
            raise outcome

        return bool(outcome)

    async def _drain(self) -> None:
        try:
            while self._waiting:
                batch, self._waiting = self._waiting, []
                await self._commit(batch)
        finally:
            self._flush = None

    async def _commit(
        self, batch: list[tuple[SignedRecord, asyncio.Future[Any]]]
    ) -> None:
        records = [signed for signed, _ in batch]
        try:
            outcomes: Sequence[Any] = await self._writer.run(
                lambda store: _add_each(store, records)
            )
        except UploadRejectedError as err:
            outcomes = [err] * len(batch)
        except Exception as err:  # each upload's own answer reports it
            for _, future in batch:
                future.set_exception(err)
            return

        for (_, future), outcome in zip(batch, outcomes, strict=True):
            future.set_result(outcome)


def _error_reply(err: UploadRejectedError) -> JSONResponse:
    return JSONResponse(
        {"error": _error_detail(err)},
        status_code=err.status,
        headers={"Connection": "close"} if err.code == "BODY_TOO_LARGE" else None,
    )


def _error_detail(err: UploadRejectedError) -> dict[str, Any]:
    return {"code": err.code, "field": err.field, "message": str(err)}


def _documented(*codes: str) -> dict[int | str, dict[str, Any]]:
    """OpenAPI answers for these error codes, grouped by status."""
    by_status: dict[int, list[str]] = {}
    for code in (*codes, "INTERNAL_ERROR"):
        by_status.setdefault(ERROR_CODES[code].status, []).append(code)

    return {
        status: {
            "model": ErrorReply,
            "description": " ".join(
                f"`{code}`: {ERROR_CODES[code].meaning}" for code in names
            ),
        }
        for status, names in sorted(by_status.items())
    }


_BODY_CODES = (
    "EMPTY_BODY",
    "BODY_NOT_UTF8",
    "INVALID_JSON",
    "DUPLICATE_KEY",
    "BODY_TOO_LARGE",
    "UNSUPPORTED_MEDIA_TYPE",
    "WRONG_TYPE",
    "MISSING_FIELD",
    "UNKNOWN_FIELD",
)
_RECORD_CODES = (
    "OUT_OF_RANGE",
    "BAD_FORMAT",
    "BAD_LENGTH",
    "WRONG_DOMAIN",
    "BAD_SIGNATURE",
    "UNKNOWN_TERMINAL",
    "TERMINAL_INACTIVE",
    "RECORD_CONFLICT",
    "REGISTRY_UNAVAILABLE",
    "STORE_UNAVAILABLE",
)


def _request_body(schema: dict[str, Any], limit: int) -> dict[str, Any]:
    return {
        "requestBody": {
            "required": True,
            "description": f"UTF-8 JSON without duplicate keys, at most {limit:,} "
            "bytes; integers are JSON integers.",
            "content": {"application/json": {"schema": schema}},
        }
    }


def _is_json(content_type: str | None) -> bool:
    """Whether a Content-Type is application/json, with no charset but UTF-8."""
    if content_type is None:
        return False

    media, _, parameters = content_type.partition(";")
    if media.strip().lower() != "application/json":
        return False

    for parameter in parameters.split(";"):
        name, _, value = parameter.partition("=")
        charset = value.strip().strip('"').lower()
        if name.strip().lower() == "charset" and charset not in ("utf-8", "utf8"):
            return False

    return True


async def _read_body(request: Request, limit: int) -> bytes:
    """The body of ``request``, refused before reading when it is over ``limit``."""
    if not _is_json(request.headers.get("content-type")):
        raise rejected(
            "UNSUPPORTED_MEDIA_TYPE",
            "The Content-Type must be application/json (UTF-8); got "
            f"{request.headers.get('content-type')!r}.",
        )

    declared = request.headers.get("content-length", "")
    if declared.isdigit() and (len(declared) > 18 or int(declared) > limit):
        raise rejected(
            "BODY_TOO_LARGE",
            f"The body has {declared} bytes; this endpoint takes at most {limit:,}.",
        )

    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise rejected(
                "BODY_TOO_LARGE",
                f"The body has more than {limit:,} bytes, the most this endpoint "
                "takes.",
            )

        chunks.append(chunk)

    return b"".join(chunks)


def check_signature(keys: TerminalKeys, signed: SignedRecord) -> None:
    """Verify a record's signature with its terminal's registered key.

    Raises:
        UploadRejectedError: ``UNKNOWN_TERMINAL``, ``TERMINAL_INACTIVE``,
            ``BAD_LENGTH`` (of the signature for the key), ``BAD_SIGNATURE`` or
            ``REGISTRY_UNAVAILABLE``.
    """
    terminal_id = signed.record.terminal_id
    try:
        key = keys.key_of(terminal_id)
    except UnknownTerminalError as err:
        raise rejected(
            "UNKNOWN_TERMINAL",
            f"Field 'record.terminal_id': {err}",
            "record.terminal_id",
        ) from err
    except TerminalInactiveError as err:
        raise rejected(
            "TERMINAL_INACTIVE",
            f"Field 'record.terminal_id': {err}",
            "record.terminal_id",
        ) from err
    except ChainError as err:
        raise rejected("REGISTRY_UNAVAILABLE", str(err)) from err

    expected = (key.key_size + 7) // 8
    if len(signed.signature) != expected:
        raise rejected(
            "BAD_LENGTH",
            f"Field 'signature' must be {expected} bytes for terminal "
            f"{terminal_id!r}'s {key.key_size}-bit key; got {len(signed.signature)}.",
            "signature",
        )

    try:
        verify(key, signed.encoding, signed.signature)
    except BadSignatureError as err:
        raise rejected(
            "BAD_SIGNATURE",
            f"Field 'signature' does not verify for record "
            f"{signed.record.record_id.hex()} under terminal {terminal_id!r}'s "
            "registered key; sign the 133-byte encoding with the terminal's key.",
            "signature",
        ) from err


def _add_each(
    store: Store, records: Sequence[SignedRecord]
) -> list[bool | UploadRejectedError]:
    outcomes: list[bool | UploadRejectedError] = []
    for outcome in store.add_many(records):
        if isinstance(outcome, RecordConflictError):
            outcomes.append(rejected("RECORD_CONFLICT", str(outcome)))
        else:
            outcomes.append(outcome[1])

    return outcomes


def _check_each(
    keys: TerminalKeys, records: Sequence[SignedRecord]
) -> list[UploadRejectedError | None]:
    outcomes: list[UploadRejectedError | None] = []
    for signed in records:
        try:
            check_signature(keys, signed)
            outcomes.append(None)
        except UploadRejectedError as err:
            outcomes.append(err)

    return outcomes


def _status_of(stored: StoredRecord, block: StoredBlock | None) -> dict[str, Any]:
    record = stored.signed.record
    reply: dict[str, Any] = {
        "record_id": record.record_id.hex(),
        "status": "in_outbox",
        "terminal_id": record.terminal_id,
        "sequence": record.sequence,
        "received_at": stored.received_at,
    }
    if block is None or stored.code is None:
        return reply

    if stored.code != StatusCode.APPROVED:
        settlement = "REJECTED_BY_RULES"
    elif block.audit_transaction is None:
        settlement = "HELD"
    else:
        settlement = "AUDITED"

    audit = block.audit_transaction
    reply.update(
        status="in_block",
        block={
            "hash": "0x" + block.block_hash.hex(),
            "height": block.height,
            "chain_block": block.chain_block,
            "transaction_hash": "0x" + block.transaction_hash.hex(),
        },
        leaf_index=stored.leaf_index,
        code=stored.code.name,
        settlement=settlement,
        audit_transaction=None if audit is None else "0x" + audit.hex(),
    )
    return reply


def _record_and_block(
    store: Store, record_id: bytes
) -> tuple[StoredRecord, StoredBlock | None]:
    stored = store.record(record_id)
    if stored.block_hash is None:
        return stored, None

    return stored, store.block(stored.block_hash)


def _not_found(record_id: bytes) -> UploadRejectedError:
    return rejected(
        "RECORD_NOT_FOUND",
        f"No record with record_id {record_id.hex()} is in this gateway's store.",
        "record_id",
    )


def _unknown_network() -> Mapping[str, Any]:
    return {"state": "unknown", "reason": "No network monitor runs in this gateway."}


class _Timing:
    """ASGI middleware: the latency histogram, labelled by route template."""

    def __init__(self, app: ASGIApp, metrics: GatewayMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        start = time.perf_counter()
        status = 500

        async def send_timed(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])

            await send(message)

        try:
            await self.app(scope, receive, send_timed)
        finally:
            route = getattr(scope.get("route"), "path", "unmatched")
            self.metrics.latency.labels(scope["method"], route, str(status)).observe(
                time.perf_counter() - start
            )


class _GatewayApp(FastAPI):
    """FastAPI, with request schemas written into the OpenAPI document verbatim.

    FastAPI's OpenAPI model keeps ``minimum`` and ``maximum`` as floats, which
    would turn 2**63 - 1 into 2**63; the upload schemas go in as they are.
    """

    def __init__(
        self, exact_schemas: Mapping[str, dict[str, Any]], **settings: Any
    ) -> None:
        super().__init__(**settings)
        self._exact_schemas = exact_schemas

    def openapi(self) -> dict[str, Any]:
        """The OpenAPI document, built once, with the exact request schemas."""
        fresh = self.openapi_schema is None
        document = super().openapi()
        if fresh:
            for path, schema in self._exact_schemas.items():
                body = document["paths"][path]["post"]["requestBody"]
                body["content"]["application/json"]["schema"] = schema

        return document


class _Gateway:
    """The state behind the routes of one app."""

    def __init__(
        self,
        store_path: Path,
        keys: TerminalKeys,
        domain: Domain | None,
        network_state: NetworkSnapshot,
        receipts: ReceiptWriter | None,
        limits: GatewayLimits,
    ) -> None:
        self.keys = keys
        self.domain = domain
        self.network_state = network_state
        self.receipts = receipts
        self.limits = limits
        self.metrics = GatewayMetrics()
        self.writer = _StoreThread(store_path, "posaudit-store-writer")
        self.singles = _GroupCommit(self.writer)
        self.reader = _StoreThread(store_path, "posaudit-store-reader")

    async def submit(self, request: Request) -> JSONResponse:
        try:
            body = await _read_body(request, self.limits.record_body)
            signed = read_upload(parse_json(body), self.domain)
            await anyio.to_thread.run_sync(check_signature, self.keys, signed)
            created = await self.singles.add(signed)
        except UploadRejectedError as err:
            self.metrics.rejected.labels(err.code).inc()
            log.info(
                "upload refused",
                extra={"code": err.code, "field": err.field, "reason": str(err)},
            )
            raise

        self.metrics.count(created)
        return JSONResponse(
            {"record_id": signed.record.record_id.hex(), "status": "accepted"},
            status_code=201 if created else 200,
        )

    async def submit_batch(self, request: Request) -> JSONResponse:
        body = await _read_body(request, self.limits.batch_body)
        uploads = read_batch(parse_json(body), self.limits.batch_records)
        results: list[dict[str, Any] | None] = [None] * len(uploads)
        parsed: list[tuple[int, SignedRecord]] = []
        for index, upload in enumerate(uploads):
            try:
                parsed.append((index, read_upload(upload, self.domain)))
            except UploadRejectedError as err:
                results[index] = self._refused(index, None, err)

        checks = await anyio.to_thread.run_sync(
            _check_each, self.keys, [signed for _, signed in parsed]
        )
        verified: list[tuple[int, SignedRecord]] = []
        for (index, signed), problem in zip(parsed, checks, strict=True):
            if problem is None:
                verified.append((index, signed))
            else:
                results[index] = self._refused(index, signed, problem)

        records = [signed for _, signed in verified]
        outcomes = await self.writer.run(lambda store: _add_each(store, records))
        for (index, signed), outcome in zip(verified, outcomes, strict=True):
            if isinstance(outcome, UploadRejectedError):
                results[index] = self._refused(index, signed, outcome)
                continue

            results[index] = {
                "index": index,
                "record_id": signed.record.record_id.hex(),
                "status": "accepted",
                "created": outcome,
            }

        done = [result for result in results if result is not None]
        reply = {
            "accepted": sum(result.get("created") is True for result in done),
            "duplicates": sum(result.get("created") is False for result in done),
            "rejected": sum(result["status"] == "rejected" for result in done),
            "results": done,
        }
        self.metrics.count(True, reply["accepted"])
        self.metrics.count(False, reply["duplicates"])
        log.info(
            "batch stored",
            extra={key: reply[key] for key in ("accepted", "duplicates", "rejected")},
        )
        return JSONResponse(reply)

    def _refused(
        self, index: int, signed: SignedRecord | None, err: UploadRejectedError
    ) -> dict[str, Any]:
        self.metrics.rejected.labels(err.code).inc()
        return {
            "index": index,
            "record_id": None if signed is None else signed.record.record_id.hex(),
            "status": "rejected",
            "error": _error_detail(err),
        }

    async def record_status(self, record_id: str) -> JSONResponse:
        wanted = record_id_bytes(record_id)
        try:
            stored, block = await self.reader.run(
                lambda store: _record_and_block(store, wanted)
            )
        except RecordNotFoundError as err:
            raise _not_found(wanted) from err

        return JSONResponse(_status_of(stored, block))

    async def receipt(self, record_id: str) -> Response:
        wanted = record_id_bytes(record_id)
        writer = self.receipts
        if writer is None:
            raise HTTPException(404)

        try:
            receipt = await self.reader.run(lambda store: writer(store, wanted))
        except RecordNotFoundError as err:
            raise _not_found(wanted) from err
        except RecordNotInBlockError as err:
            raise rejected(
                "RECEIPT_NOT_READY",
                f"The record with record_id {wanted.hex()} is in the outbox, in no "
                "settlement block yet, so it has no receipt; ask again later.",
                "record_id",
            ) from err
        except ChainError as err:
            raise rejected("CHAIN_UNAVAILABLE", str(err)) from err

        return Response(receipt.to_json(), media_type="application/json")

    async def network(self) -> JSONResponse:
        try:
            state = await anyio.to_thread.run_sync(self.network_state)
        except PosauditError as err:
            raise rejected("MONITOR_UNAVAILABLE", str(err)) from err

        return JSONResponse(dict(state))

    async def health(self) -> JSONResponse:
        outbox = await self.reader.run(lambda store: store.outbox_size())
        return JSONResponse({"status": "ok", "outbox": outbox})

    async def prometheus(self) -> Response:
        outbox = await self.reader.run(lambda store: store.outbox_size())
        self.metrics.outbox.set(outbox)
        return Response(self.metrics.render(), media_type=CONTENT_TYPE_LATEST)


def create_app(
    store_path: Path | str,
    keys: TerminalKeys,
    *,
    domain: Domain | None = None,
    network_state: NetworkSnapshot | None = None,
    receipts: ReceiptWriter | None = None,
    limits: GatewayLimits | None = None,
) -> FastAPI:
    """Build the gateway's ASGI app; it opens the store when the server starts.

    Args:
        store_path: The SQLite store whose outbox the gateway fills.
        keys: Where the terminals' public keys come from.
        domain: The deployment's chain id and Ledger; records for another are
            refused with ``WRONG_DOMAIN``. None accepts any domain.
        network_state: The network monitor's state; ``GET /v1/network`` answers
            ``{"state": "unknown"}`` without it.
        receipts: Writes a record's receipt; without it there is no receipt route.
        limits: Body and batch bounds; the module defaults when None.

    Returns:
        The app; ``app.state.metrics`` holds its :class:`GatewayMetrics`.
    """
    gateway = _Gateway(
        Path(store_path),
        keys,
        domain,
        network_state or _unknown_network,
        receipts,
        limits or GatewayLimits(),
    )

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await gateway.writer.run(lambda store: None)
        await gateway.reader.run(lambda store: None)
        try:
            yield
        finally:
            await gateway.writer.close()
            await gateway.reader.close()

    app = _GatewayApp(
        exact_schemas={
            "/v1/records": UPLOAD_SCHEMA,
            "/v1/records/batch": BATCH_SCHEMA,
        },
        title="posaudit gateway",
        summary="The data upload endpoint of POS terminals.",
        description=__doc__,
        version="1",
        docs_url=None,
        redoc_url=None,
        lifespan=lifespan,
    )
    app.state.metrics = gateway.metrics
    app.add_middleware(_Timing, metrics=gateway.metrics)
    _add_error_handlers(app)
    limits_now = gateway.limits
    app.add_api_route(
        "/v1/records",
        gateway.submit,
        methods=["POST"],
        summary="Submit one signed record",
        status_code=201,
        responses={
            200: {"model": AcceptedReply, "description": "Stored before: a repeat."},
            201: {"model": AcceptedReply, "description": "Stored in the outbox."},
            **_documented(*_BODY_CODES, *_RECORD_CODES),
        },
        openapi_extra=_request_body(UPLOAD_SCHEMA, limits_now.record_body),
    )
    app.add_api_route(
        "/v1/records/batch",
        gateway.submit_batch,
        methods=["POST"],
        summary=f"Submit up to {limits_now.batch_records:,} signed records",
        description="Each record is checked and stored on its own; the answer "
        "lists every record's outcome (the error codes of single uploads apply "
        "per record). A batch whose body or shape is wrong stores nothing.",
        responses={
            200: {"model": BatchReply, "description": "Every record's outcome."},
            **_documented(*_BODY_CODES, "BATCH_EMPTY", "BATCH_TOO_LARGE"),
        },
        openapi_extra=_request_body(BATCH_SCHEMA, limits_now.batch_body),
    )
    app.add_api_route(
        "/v1/records/{record_id}",
        gateway.record_status,
        methods=["GET"],
        summary="Where a record stands",
        responses={
            200: {"model": RecordStatusReply, "description": "The record's status."},
            **_documented(
                "BAD_FORMAT", "BAD_LENGTH", "RECORD_NOT_FOUND", "STORE_UNAVAILABLE"
            ),
        },
    )
    if receipts is not None:
        app.add_api_route(
            "/v1/records/{record_id}/receipt",
            gateway.receipt,
            methods=["GET"],
            summary="The record's receipt, once it is in a settlement block",
            responses={
                200: {
                    "description": "The receipt document (receipt_version 1).",
                    "content": {"application/json": {"schema": {"type": "object"}}},
                },
                **_documented(
                    "BAD_FORMAT",
                    "BAD_LENGTH",
                    "RECORD_NOT_FOUND",
                    "RECEIPT_NOT_READY",
                    "CHAIN_UNAVAILABLE",
                    "STORE_UNAVAILABLE",
                ),
            },
        )

    app.add_api_route(
        "/v1/network",
        gateway.network,
        methods=["GET"],
        summary="The network monitor's state",
        responses={
            200: {
                "description": "The monitor's state; {'state': 'unknown'} without one.",
                "content": {"application/json": {"schema": {"type": "object"}}},
            },
            **_documented("MONITOR_UNAVAILABLE"),
        },
    )
    app.add_api_route(
        "/health",
        gateway.health,
        methods=["GET"],
        summary="Liveness, with the outbox size",
        responses={
            200: {"model": HealthReply, "description": "The store reads."},
            **_documented("STORE_UNAVAILABLE"),
        },
    )
    app.add_api_route(
        "/metrics",
        gateway.prometheus,
        methods=["GET"],
        summary="Prometheus metrics",
        responses={
            200: {
                "description": "Prometheus text exposition format.",
                "content": {CONTENT_TYPE_LATEST: {"schema": {"type": "string"}}},
            },
            **_documented("STORE_UNAVAILABLE"),
        },
    )
    return app


def create_chain_app(
    store_path: Path | str,
    w3: Web3,
    deployment: Deployment,
    *,
    network_state: NetworkSnapshot | None = None,
    refresh_interval: float = DEFAULT_REFRESH_INTERVAL,
    limits: GatewayLimits | None = None,
) -> FastAPI:
    """The gateway of one deployment: registry keys, its domain, its receipts.

    The registry is read once here, so that a node that does not answer stops the
    start rather than the first upload.

    Raises:
        ChainError: The registry cannot be read.
    """
    keys = RegistryKeys(w3, deployment, refresh_interval=refresh_interval)
    keys.refresh()

    def receipts(store: Store, record_id: bytes) -> Receipt:
        return build_receipt(store, record_id, w3, deployment)

    return create_app(
        store_path,
        keys,
        domain=Domain(deployment.chain_id, deployment.ledger),
        network_state=network_state,
        receipts=receipts,
        limits=limits,
    )


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(UploadRejectedError)
    async def on_rejected(_: Request, err: UploadRejectedError) -> JSONResponse:
        return _error_reply(err)

    @app.exception_handler(HTTPException)
    async def on_http(_: Request, err: HTTPException) -> JSONResponse:
        code, message = _HTTP_ERRORS.get(
            err.status_code, (f"HTTP_{err.status_code}", str(err.detail))
        )
        return JSONResponse(
            {"error": {"code": code, "field": None, "message": message}},
            status_code=err.status_code,
            headers=err.headers,
        )

    @app.exception_handler(RequestValidationError)
    async def on_validation(_: Request, err: RequestValidationError) -> JSONResponse:
        return JSONResponse(
            {"error": {"code": "WRONG_TYPE", "field": None, "message": str(err)}},
            status_code=422,
        )

    @app.exception_handler(Exception)
    async def on_crash(_: Request, err: Exception) -> JSONResponse:
        log.error("request failed", exc_info=err)
        message = "The gateway failed; nothing was stored. Retry later."
        return JSONResponse(
            {"error": {"code": "INTERNAL_ERROR", "field": None, "message": message}},
            status_code=500,
        )


_HTTP_ERRORS = {
    404: ("NOT_FOUND", "No such path; see /openapi.json for the endpoints."),
    405: ("METHOD_NOT_ALLOWED", "This path does not take this method."),
}


def serve(app: FastAPI, host: str, port: int, log_level: str = "info") -> None:
    """Run ``app`` with uvicorn until interrupted (Ctrl-C or SIGTERM)."""
    sys.setswitchinterval(SWITCH_INTERVAL)
    uvicorn.Server(_server_config(app, host=host, port=port, log_level=log_level)).run()


def _server_config(app: FastAPI, **options: Any) -> uvicorn.Config:
    # Each upload is counted in the metrics and logged when refused; an access log
    # line per request would cost as much CPU as storing the record.
    return uvicorn.Config(
        app,
        lifespan="on",
        access_log=False,
        http="httptools",
        loop="uvloop",
        **options,
    )


@contextmanager
def serve_in_background(
    app: FastAPI, host: str = "127.0.0.1", port: int = 0, start_timeout: float = 10.0
) -> Iterator[str]:
    """Run ``app`` on a thread for the ``with`` block; yields its base URL.

    Args:
        app: The app to serve.
        host: Address to bind.
        port: Port to bind; 0 picks a free one.
        start_timeout: Seconds to wait for the server to start.

    Raises:
        GatewayUnavailableError: The server did not start in time.
    """
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((host, port))
    bound = int(listener.getsockname()[1])
    server = uvicorn.Server(_server_config(app, log_level="warning"))
    thread = threading.Thread(
        target=server.run,
        kwargs={"sockets": [listener]},
        name=f"posaudit-gateway-{bound}",
        daemon=True,
    )
    thread.start()
    deadline = time.monotonic() + start_timeout
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            thread.join(start_timeout)
            listener.close()
            raise GatewayUnavailableError(
                f"The gateway did not start on {host}:{bound} within "
                f"{start_timeout} s; see the log for why."
            )

        time.sleep(0.01)

    try:
        yield f"http://{host}:{bound}"
    finally:
        server.should_exit = True
        thread.join(start_timeout)
        listener.close()
