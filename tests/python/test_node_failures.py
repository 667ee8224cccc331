"""The node fails while records flow through the running service: none lost.

Each test runs the crash harness's flow (``posaudit serve`` as its own process, four
terminals uploading through the gateway) and does one thing to the anvil under it: a
SIGKILL and a restart from the last state it dumped, so that its newest blocks are
gone; a SIGTERM and a restart from the whole state it dumps on exit; a rollback of
its newest blocks with ``evm_snapshot`` / ``evm_revert``. The bookkeeper must notice,
put on chain again what the node lost, and end with the chain equal to the store.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from posaudit.auditor import AuditState
from posaudit.bookkeeper import BatchPolicy, Bookkeeper, Reconciliation
from posaudit.chain.deploy import contract_at
from posaudit.chain.devnet import Devnet
from posaudit.chain.sender import Sender
from posaudit.exceptions import ChainError
from posaudit.rules import StatusCode
from posaudit.service import AuditWorker, BookkeeperLoop, FixedMode
from posaudit.store import Store

from .crash_harness import Flow, TrialResult, run_flow
from .world import World

RECORDS = 1_000
# Seconds each terminal waits per record uploaded: the flow lasts about 2.5 s, long
# enough for the node to fail and come back inside it.
PACE = 0.01
BATCH = 25
# Whole seconds between two state dumps of the node that is killed.
STATE_INTERVAL = 1
# A kill this soon after a dump has finished lands well before the next one starts
# (the node waits a whole interval after each), so it never tears the file.
KILL_WITHIN = 0.5
# A dump is finished when its file has not changed for this long.
DUMP_SETTLED = 0.05
# Seconds the node stays down.
OUTAGE = 0.5
# Settlement blocks a rollback takes back.
ROLLED_BACK = 3


@dataclass
class NodeFault:
    """The Ledger's head just before the node failed, and whether the node still had
    that settlement block once it was back (the service may have appended others by
    the time it is asked, so the height would not tell)."""

    head: bytes = b""
    height: int = 0
    head_kept: bool | None = None

    def note_head(self, flow: Flow) -> None:
        """Note the Ledger's head now."""
        self.head, self.height = ledger_head(flow)

    def check_head(self, flow: Flow) -> None:
        """Note whether the node has the head noted before."""
        ledger = contract_at(flow.w3, "Ledger", flow.deployment.ledger)
        self.head_kept = ledger.functions.blockOf(self.head).call()[1] > 0


def ledger_head(flow: Flow) -> tuple[bytes, int]:
    """Hash and height of the Ledger's newest settlement block."""
    ledger = contract_at(flow.w3, "Ledger", flow.deployment.ledger)
    head, height = ledger.functions.head().call()
    return bytes(head), int(height)


def wait_for_dump(state: Path, flow: Flow) -> int | None:
    """Wait for a state dump that starts from now on and finishes; its mtime in ns.

    Returns:
        None if the uploads ended first.
    """
    since = time.time_ns()
    seen = None
    while not flow.stop.wait(DUMP_SETTLED):
        written = state.stat().st_mtime_ns if state.exists() else 0
        if written > since and written == seen:
            return written

        seen = written

    return None


def kill_after_a_dump(state: Path, fault: NodeFault, flow: Flow) -> None:
    """SIGKILL the node once a settlement block is mined after its last dump, so
    that the restart loses it, and start the node again from that dump."""
    if not flow.reach(flow.records // 4):
        return

    while (dumped := wait_for_dump(state, flow)) is not None:
        deadline = dumped / 1e9 + KILL_WITHIN
        # At least the height the dump holds: it was read after the dump.
        _, dumped_height = ledger_head(flow)
        fault.note_head(flow)
        while fault.height == dumped_height and time.time() < deadline:
            time.sleep(0.01)
            fault.note_head(flow)

        if fault.height == dumped_height:
            continue  # no block to lose in time: wait for the next dump

        flow.devnet.kill()
        time.sleep(OUTAGE)
        flow.devnet.start()
        fault.check_head(flow)
        return


def stop_and_start(fault: NodeFault, flow: Flow) -> None:
    """Stop the node with SIGTERM (it dumps its whole state) and start it again."""
    if not flow.reach(flow.records * 2 // 5):
        return

    fault.note_head(flow)
    flow.devnet.stop()
    time.sleep(OUTAGE)
    flow.devnet.start()
    fault.check_head(flow)


def roll_back(fault: NodeFault, flow: Flow) -> None:
    """Take back the newest settlement blocks with ``evm_snapshot`` / ``evm_revert``
    while the service keeps appending."""
    if not flow.reach(flow.records // 4):
        return

    provider = flow.w3.provider
    snapshot = provider.make_request("evm_snapshot", [])["result"]
    _, start = ledger_head(flow)
    fault.note_head(flow)
    while fault.height < start + ROLLED_BACK:
        if flow.stop.wait(0.01):
            return

        fault.note_head(flow)

    provider.make_request("evm_revert", [snapshot])
    fault.check_head(flow)


def assert_chain_equals_store(result: TrialResult, store_path: Path) -> None:
    """Every record acknowledged, approved once, settled, and the chain's blocks,
    as the auditor reads them, exactly the store's."""
    with Store(store_path) as store:
        stored = {block.block_hash: block.record_count for block in store.blocks()}
        approved = sum(
            leaf.code == StatusCode.APPROVED
            for block_hash in stored
            for leaf in store.block_leaves(block_hash)
        )
    on_chain = {row.block_hash: row.record_count for row in result.auditor_blocks}

    assert result.errors == []
    assert len(result.acknowledged) == RECORDS
    assert result.lost == 0
    assert result.settled_twice == 0
    assert result.blocks_complete == result.blocks == len(stored)
    assert result.credit == result.expected_credit
    assert result.held == 0
    assert on_chain == stored
    assert {row.audit for row in result.auditor_blocks} == {AuditState.COMPLETE}
    assert sum(row.settled for row in result.auditor_blocks) == approved == RECORDS


def test_node_killed_and_restarted_from_its_last_dump_loses_no_record(
    tmp_path: Path,
) -> None:
    """SIGKILL loses the node's newest blocks; their records go on chain again."""
    state = tmp_path / "anvil-state.json"
    devnet = Devnet(state=state, state_interval=STATE_INTERVAL)
    fault = NodeFault()

    result = run_flow(
        tmp_path,
        RECORDS,
        seed=1,
        disrupt=lambda flow: kill_after_a_dump(state, fault, flow),
        devnet=devnet,
        batch=BATCH,
        pace=PACE,
    )

    assert fault.height > 0
    assert fault.head_kept is False
    assert_chain_equals_store(result, tmp_path / "posaudit.db")


def test_node_stopped_and_restarted_loses_no_record(tmp_path: Path) -> None:
    """SIGTERM and a restart from the whole state: the service carries on."""
    devnet = Devnet(state=tmp_path / "anvil-state.json")
    fault = NodeFault()

    result = run_flow(
        tmp_path,
        RECORDS,
        seed=2,
        disrupt=lambda flow: stop_and_start(fault, flow),
        devnet=devnet,
        batch=BATCH,
        pace=PACE,
    )

    assert fault.height > 0
    assert fault.head_kept is True
    assert_chain_equals_store(result, tmp_path / "posaudit.db")


def test_node_rolled_back_loses_no_record(tmp_path: Path) -> None:
    """A rollback of the newest blocks: their records go on chain again."""
    fault = NodeFault()

    result = run_flow(
        tmp_path,
        RECORDS,
        seed=3,
        disrupt=lambda flow: roll_back(fault, flow),
        batch=BATCH,
        pace=PACE,
    )

    assert fault.height >= ROLLED_BACK
    assert fault.head_kept is False
    assert_chain_equals_store(result, tmp_path / "posaudit.db")


def network_state_call(world: World) -> Any:
    """A bookkeeper call that changes nothing but the chain's height."""
    return world.ledger.ledger.functions.recordNetworkState(False, 1, 1)


def test_sender_after_a_rollback_fails_at_once_then_takes_the_nodes_count(
    world: World,
) -> None:
    """A send after the node lost this sender's transactions leaves no gap behind."""
    provider = world.w3.provider
    sender = Sender(world.w3, world.ledger.bookkeeper)
    snapshot = provider.make_request("evm_snapshot", [])["result"]
    sender.transact(network_state_call(world))
    provider.make_request("evm_revert", [snapshot])
    started = time.monotonic()

    with pytest.raises(ChainError, match="it has lost some"):
        sender.send(network_state_call(world))
    receipt = sender.transact(network_state_call(world), timeout=10)

    assert time.monotonic() - started < 5
    assert receipt.status == 1
    assert provider.make_request("txpool_status", [])["result"]["queued"] == "0x0"


def test_sender_waiting_for_a_rolled_back_transaction_fails_within_seconds(
    world: World,
) -> None:
    """A receipt the node will never have is not awaited for the whole timeout."""
    provider = world.w3.provider
    sender = Sender(world.w3, world.ledger.bookkeeper)
    snapshot = provider.make_request("evm_snapshot", [])["result"]
    dropped = sender.send(network_state_call(world))
    provider.make_request("evm_revert", [snapshot])
    started = time.monotonic()

    with pytest.raises(ChainError, match="no longer knows it"):
        sender.wait(dropped, timeout=60)

    assert time.monotonic() - started < 5


def test_sender_waiting_behind_lost_transactions_fails_within_seconds(
    world: World,
) -> None:
    """A transaction whose nonce has a gap below it is not awaited to the timeout."""
    account, other = world.w3.eth.accounts[5:7]
    sender = Sender(world.w3, account)
    count = world.w3.eth.get_transaction_count(account, "pending")
    stuck = world.w3.eth.send_transaction(
        {"from": account, "to": other, "value": 1, "nonce": count + 1}
    )
    started = time.monotonic()

    with pytest.raises(ChainError, match="waits behind transactions the node has"):
        sender.wait(bytes(stuck), timeout=60)

    assert time.monotonic() - started < 5


def test_loop_idle_after_a_lost_block_puts_its_records_on_chain_again(
    world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A block lost before its audit: the failed audit makes the loop reconcile."""
    path = tmp_path / "posaudit.db"
    records = [world.record(7 + i) for i in range(2)]
    with Store(path) as store:
        store.add_many(records)
    provider = world.w3.provider
    snapshot = provider.make_request("evm_snapshot", [])["result"]
    audit_block = world.audit.audit_block
    calls: list[bytes] = []

    def lose_the_block_first(*args: Any, **kwargs: Any) -> Any:
        # The first audit finds the node rolled back to before its block.
        if not calls:
            provider.make_request("evm_revert", [snapshot])
        calls.append(args[0])
        return audit_block(*args, **kwargs)

    monkeypatch.setattr(world.audit, "audit_block", lose_the_block_first)
    credit = world.credit()
    stop = threading.Event()

    def run() -> None:
        with Store(path) as store:
            policy = BatchPolicy(aggregate_size=2, flush_timeout=0.0)
            loop = BookkeeperLoop(
                Bookkeeper(store, world.ledger, world.audit),
                policy,
                FixedMode(congested=True),
                idle=0.01,
                auditor=AuditWorker(path, world.ledger, world.audit),
            )
            loop.run(stop)

    thread = threading.Thread(target=run)
    thread.start()
    try:
        deadline = time.monotonic() + 20
        while world.credit() - credit < 7 + 8 and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        stop.set()
        thread.join(timeout=20)

    with Store(path) as store:
        (block,) = store.blocks()
        waiting = store.outbox_size()

    assert world.credit() - credit == 7 + 8
    assert waiting == 0
    assert len(calls) >= 2
    assert world.audit.audit_of(block.block_hash).complete


def test_loop_against_a_failed_node_asks_it_again_once_an_idle_period(
    world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A block due at once, then a node that is down: no busy loop of retries."""
    path = tmp_path / "posaudit.db"
    with Store(path) as store:
        store.add(world.record(5))
    answers = [Reconciliation(0, 0, 0, 0)]
    stop = threading.Event()
    loops: list[BookkeeperLoop] = []

    def node_down(*args: Any, **kwargs: Any) -> Any:
        raise ChainError("The node does not answer.")

    def reconcile() -> Reconciliation:
        # The start's reconciliation finds nothing to do; then the node is down.
        return answers.pop() if answers else node_down()

    def run() -> None:
        with Store(path) as store:
            bookkeeper = Bookkeeper(store, world.ledger, world.audit)
            monkeypatch.setattr(bookkeeper, "reconcile", reconcile)
            monkeypatch.setattr(bookkeeper, "send", node_down)
            policy = BatchPolicy(aggregate_size=2, flush_timeout=0.0)
            loop = BookkeeperLoop(bookkeeper, policy, FixedMode(True), idle=0.05)
            loops.append(loop)
            loop.run(stop)

    thread = threading.Thread(target=run)

    thread.start()
    time.sleep(1.0)
    stop.set()
    thread.join(timeout=10)

    assert 10 <= loops[0].stats.failures <= 25
