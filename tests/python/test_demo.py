"""The demo end to end on a real anvil: verdicts, settlement, what it leaves behind."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from posaudit.audit import SettlementStatus
from posaudit.chain.deploy import Deployment
from posaudit.demo import DemoResult, run_demo
from posaudit.rules import StatusCode
from posaudit.store import Store


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[DemoResult, Path]:
    out = tmp_path_factory.mktemp("demo")
    return run_demo(out=out), out


def test_demo_matches_the_model_and_completes_every_block(demo):
    result, _ = demo

    assert result.ok
    assert result.blocks == result.blocks_complete == 9
    assert result.held == 0
    codes = {record.actual for record in result.records if record.actual is not None}
    # An amount out of range cannot even be encoded, and no proof is damaged here.
    unreachable = {StatusCode.AMOUNT_OUT_OF_RANGE, StatusCode.PROOF_MISMATCH}
    assert codes == set(StatusCode) - unreachable
    approved = [r for r in result.records if r.actual == StatusCode.APPROVED]
    assert {r.settlement for r in approved} == {SettlementStatus.SETTLED}


def test_demo_leaves_a_store_a_deployment_and_a_chain(demo):
    result, out = demo
    on_chain = [r for r in result.records if r.actual is not None]

    deployment = Deployment.load(out / "deployment.json")
    with Store(out / "posaudit.db") as store:
        blocks = [
            store.block_records(block.block_hash) for block in store.unaudited_blocks()
        ]
        stored = store.record(on_chain[0].signed.record.record_id)

    assert deployment.audit.startswith("0x")
    assert blocks == []  # every block has its audit transaction
    assert stored.proof is not None
    assert (out / "devnet-state.json").stat().st_size > 0


def test_verdict_catches_a_wrong_expectation(demo):
    """Break one expected outcome: the run no longer counts as matching."""
    result, _ = demo
    records = list(result.records)
    first = next(i for i, r in enumerate(records) if r.actual == StatusCode.APPROVED)
    records[first] = dataclasses.replace(
        records[first], expected=StatusCode.INSUFFICIENT_BALANCE
    )

    broken = dataclasses.replace(result, records=records)

    assert not broken.ok
    assert [r.label for r in broken.records if not r.matches] == [records[first].label]


def test_verdict_catches_money_left_held(demo):
    result, _ = demo

    assert not dataclasses.replace(result, held=1).ok
    assert not dataclasses.replace(result, blocks_complete=result.blocks - 1).ok
