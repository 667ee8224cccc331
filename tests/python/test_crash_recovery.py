"""Crash safety of the bookkeeper on a real anvil.

Each test stops the bookkeeper at one point of its work (as a kill would), opens the
store afresh as a restarted process does, reconciles and carries on; then every record
of the outbox must be on chain exactly once and settled exactly once.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from posaudit.audit import SettlementStatus
from posaudit.bookkeeper import BatchPolicy, Bookkeeper
from posaudit.records import SignedRecord
from posaudit.store import Store

from .world import World


class Crash(Exception):
    """Stands for the process dying at this point."""


def crash_in(monkeypatch: pytest.MonkeyPatch, target: object, name: str) -> None:
    def die(*args: object, **kwargs: object) -> None:
        raise Crash(name)

    monkeypatch.setattr(target, name, die)


def crash_after(monkeypatch: pytest.MonkeyPatch, target: object, name: str) -> None:
    original: Callable[..., object] = getattr(target, name)

    def run_then_die(*args: object, **kwargs: object) -> None:
        original(*args, **kwargs)
        raise Crash(name)

    monkeypatch.setattr(target, name, run_then_die)


def restart(world: World, path: Path) -> tuple[Store, Bookkeeper]:
    store = Store(path)
    return store, Bookkeeper(store, world.ledger, world.audit)


def assert_settled_once(world: World, path: Path, records: list[SignedRecord]) -> None:
    with Store(path) as store:
        assert store.outbox_size() == 0
        assert store.submissions() == []
        for signed in records:
            stored = store.record(signed.record.record_id)
            status = world.audit.status_of(stored.block_hash, stored.leaf_index)
            assert status == SettlementStatus.SETTLED

        on_chain = [
            store.block(block.block_hash).block_hash for block in store.blocks()
        ]
    for block_hash in on_chain:
        assert world.audit.audit_of(block_hash).complete


@pytest.fixture
def outbox(world: World, tmp_path: Path) -> tuple[Path, list[SignedRecord]]:
    path = tmp_path / "posaudit.db"
    records = [world.record(10 + i) for i in range(3)]
    with Store(path) as store:
        for signed in records:
            store.add(signed)
    return path, records


@pytest.mark.parametrize(
    ("where", "method", "mode"),
    [
        ("before the transaction is sent", "send_block", "in"),
        ("after sending, before the hash is noted", "send_block", "after"),
        ("after the hash is noted, before the receipt", "block_result", "in"),
        ("after the receipt, before the local write", "block_result", "after"),
    ],
    ids=["before-send", "after-send", "before-receipt", "before-save"],
)
def test_crash_around_the_append_settles_every_record_once(
    world, outbox, monkeypatch, where, method, mode
):
    path, records = outbox
    credit = world.credit()
    store, bookkeeper = restart(world, path)
    (crash_in if mode == "in" else crash_after)(monkeypatch, world.ledger, method)

    with pytest.raises(Crash):
        bookkeeper.step(3)
    store.close()
    monkeypatch.undo()

    store, bookkeeper = restart(world, path)
    bookkeeper.reconcile()
    while bookkeeper.step(3) is not None:
        pass
    store.close()

    assert world.credit() - credit == 10 + 11 + 12, where
    assert_settled_once(world, path, records)


def test_crash_after_the_local_write_audits_on_restart(world, outbox, monkeypatch):
    path, records = outbox
    credit = world.credit()
    store, bookkeeper = restart(world, path)
    crash_in(monkeypatch, bookkeeper, "audit")

    with pytest.raises(Crash):
        bookkeeper.step(3)
    store.close()
    monkeypatch.undo()

    store, bookkeeper = restart(world, path)
    found = bookkeeper.reconcile()
    store.close()

    assert found.blocks_audited == 1
    assert world.credit() - credit == 33
    assert_settled_once(world, path, records)


def test_blocks_the_node_lost_are_put_on_chain_again(world, outbox):
    """A rollback of recent blocks (evm_revert): the records are resubmitted."""
    path, records = outbox
    snapshot = world.w3.provider.make_request("evm_snapshot", [])["result"]
    store, bookkeeper = restart(world, path)
    bookkeeper.step(3)
    world.w3.provider.make_request("evm_revert", [snapshot])

    found = bookkeeper.reconcile()
    while bookkeeper.step(3) is not None:
        pass
    store.close()

    assert found.returned_to_outbox == 3
    assert_settled_once(world, path, records)


def test_settlement_the_node_lost_is_audited_again(world, outbox):
    """A rollback that keeps a block but not its audit: the block is settled again."""
    path, records = outbox
    credit = world.credit()
    store, bookkeeper = restart(world, path)
    appended = bookkeeper.append_next(3)
    snapshot = world.w3.provider.make_request("evm_snapshot", [])["result"]
    bookkeeper.audit(appended.block_hash, appended)
    world.w3.provider.make_request("evm_revert", [snapshot])

    found = bookkeeper.reconcile()
    store.close()

    assert found.returned_to_outbox == 0
    assert found.blocks_audited == 1
    assert world.credit() - credit == 10 + 11 + 12
    assert_settled_once(world, path, records)


def test_reconcile_of_a_clean_store_changes_nothing(world, outbox):
    path, _ = outbox
    store, bookkeeper = restart(world, path)
    bookkeeper.step(3)

    found = bookkeeper.reconcile()
    store.close()

    assert found.returned_to_outbox == found.submissions_dropped == 0
    assert found.blocks_audited == 0


class TestBatchPolicy:
    policy = BatchPolicy(aggregate_size=8, flush_timeout=2.0, max_block_records=6)

    def test_normal_network_sends_one_record_per_block(self):
        assert self.policy.records_to_take(50, 10.0, congested=False) == 1

    def test_congested_network_waits_for_n_records(self):
        assert self.policy.records_to_take(3, 0.5, congested=True) == 0

    def test_block_size_is_capped_below_the_gas_limit(self):
        assert self.policy.records_to_take(50, 0.0, congested=True) == 6

    def test_flush_timeout_sends_what_waits(self):
        assert self.policy.records_to_take(3, 2.0, congested=True) == 3

    def test_empty_outbox_sends_nothing(self):
        assert self.policy.records_to_take(0, 99.0, congested=True) == 0

    def test_waiting_records_are_due_at_their_flush_timeout(self):
        assert self.policy.due_in(3, 0.5, congested=True) == 1.5

    def test_a_block_that_can_go_is_due_now(self):
        assert self.policy.due_in(6, 0.0, congested=True) == 0.0

    def test_an_empty_outbox_is_never_due(self):
        assert self.policy.due_in(0, 0.0, congested=True) == float("inf")
