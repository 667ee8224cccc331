"""Receipts for everyone: every settled record's receipt, written as the day goes.

A merchant receives a receipt per record once its block is settled;
:class:`ReceiptWriter` writes them with :func:`posaudit.receipts.build_receipt` in
worker processes, at a lower priority than the service, while the day runs.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from pathlib import Path
from typing import Any

from posaudit.chain.deploy import Deployment
from posaudit.day_setup import reading_web3
from posaudit.receipts import build_receipt
from posaudit.store import Store

_worker: dict[str, Any] = {}

RECEIPT_NICENESS = 10


def _start_receipt_worker(
    rpc_url: str, deployment: Deployment, store_path: Path, folder: Path
) -> None:
    # Receipts are written while the day runs: they take only what the service
    # leaves of the processor.
    os.nice(RECEIPT_NICENESS)
    _worker.update(
        w3=reading_web3(rpc_url),
        store=Store(store_path),
        deployment=deployment,
        folder=folder,
    )


def _write_receipt_chunk(record_ids: Sequence[bytes]) -> int:
    for record_id in record_ids:
        receipt = build_receipt(
            _worker["store"], record_id, _worker["w3"], _worker["deployment"]
        )
        path = _worker["folder"] / f"{record_id.hex()}.json"
        path.write_text(receipt.to_json() + "\n")

    return len(record_ids)


class ReceiptWriter:
    """Writes every settled record's receipt to ``folder/<record id>.json``, as a
    merchant would receive it, while the day goes on.

    Building a receipt is mostly Python work in web3.py, so worker processes share
    it, each with its own store and node connection, at a lower priority than the
    service.

    NOTE: The workers are spawned, so a script that runs a simulation must guard
    its top level with ``if __name__ == "__main__":``.

    Args:
        rpc_url: The node.
        deployment: The contracts.
        store_path: The store the bookkeeper writes.
        folder: Where the receipts go.
        workers: Worker processes.
        chunk: Records per task.
    """

    def __init__(
        self,
        rpc_url: str,
        deployment: Deployment,
        store_path: Path,
        folder: Path,
        workers: int = 2,
        chunk: int = 64,
    ) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.chunk = chunk
        self.queued = 0
        self._pool = ProcessPoolExecutor(
            max_workers=max(1, workers),
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_start_receipt_worker,
            initargs=(rpc_url, deployment, store_path, folder),
        )
        self._futures: list[Future[int]] = []
        self._blocks: set[bytes] = set()

    def add_settled(self, store: Store) -> None:
        """Queue the records of every block whose audit is done and not queued."""
        for block in store.blocks():
            if block.audit_transaction is None or block.block_hash in self._blocks:
                continue

            self._blocks.add(block.block_hash)
            ids = [
                stored.signed.record.record_id
                for stored in store.block_records(block.block_hash)
            ]
            for start in range(0, len(ids), self.chunk):
                part = ids[start : start + self.chunk]
                self._futures.append(self._pool.submit(_write_receipt_chunk, part))
                self.queued += len(part)

    @property
    def written(self) -> int:
        """Receipts written so far."""
        return sum(
            future.result()
            for future in self._futures
            if future.done() and future.exception() is None
        )

    def finish(self, progress: Callable[[int], None] = lambda _: None) -> int:
        """Wait for every queued receipt; returns how many were written.

        Raises:
            PosauditError: A receipt could not be built (the message names the
                record).
        """
        written = 0
        for future in self._futures:
            written += future.result()
            progress(written)

        return written

    def close(self) -> None:
        """Stop the workers; receipts not written by now are not written."""
        self._pool.shutdown(wait=True, cancel_futures=True)
