"""The simulated business day: the generator, the verdict and a short day on anvil."""

from __future__ import annotations

import dataclasses
import itertools
import json
from collections import defaultdict
from pathlib import Path

import pytest

from posaudit.audit import SettlementStatus
from posaudit.auditor import RecordRow
from posaudit.receipts import Receipt, Verdict, verify_receipt
from posaudit.records import Domain
from posaudit.report import write_report
from posaudit.rules import StatusCode
from posaudit.simulate import (
    SimulationResult,
    StateChange,
    run_simulation,
    state_durations,
)
from posaudit.simulation import (
    BAD_KINDS,
    INTENDED,
    INTRUDER,
    Expectation,
    RecordKind,
    Scenario,
    Workload,
    generate_day,
)
from posaudit.verdict import Outcome, compare, expected_settlement

DOMAIN = Domain(31337, "0x" + "11" * 20)
START = 1_780_000_000  # 2026-05-28 20:26:40 UTC
SHORT = Scenario(
    seed=7,
    records=250,
    duration=15.0,
    merchants=3,
    terminals=6,
    payers_per_terminal=5,
)


@pytest.fixture(scope="module")
def keys(terminal_key, other_key):
    """Keys are slow to make: the pure tests share two between all terminals."""
    return lambda: itertools.cycle([terminal_key, other_key]).__next__


@pytest.fixture(scope="module")
def day(keys) -> Workload:
    return generate_day(Scenario(records=600, duration=30.0), DOMAIN, START, keys())


def fields_of(workload: Workload) -> list[tuple[object, ...]]:
    return [
        (p.index, round(p.offset, 6), p.sender, p.kind, p.record, p.expected)
        for p in workload.records
    ]


def matching_outcomes(workload: Workload) -> list[Outcome]:
    return [
        Outcome(
            p.expected.http_status,
            p.expected.gateway_code,
            code=p.expected.code,
            settlement=expected_settlement(p.expected),
        )
        for p in workload.records
    ]


def test_generate_day_is_reproducible_with_a_seed(keys, day):
    again = generate_day(Scenario(records=600, duration=30.0), DOMAIN, START, keys())

    assert fields_of(again) == fields_of(day)
    assert [p.address for p in again.payers] == [p.address for p in day.payers]


def test_generate_day_differs_with_another_seed(keys, day):
    other = generate_day(
        Scenario(seed=1, records=600, duration=30.0), DOMAIN, START, keys()
    )

    assert fields_of(other) != fields_of(day)


def test_generate_day_produces_every_bad_kind_with_its_outcome(day):
    kinds = {planned.kind for planned in day.records}

    assert set(BAD_KINDS) <= kinds
    for planned in day.records:
        if planned.kind in BAD_KINDS:
            assert planned.expected == INTENDED[planned.kind], planned.kind


def test_generate_day_refuses_gateway_kinds_off_chain(day):
    refused = [p for p in day.records if not p.expected.reaches_chain]

    assert {p.expected.http_status for p in refused} == {200, 403, 409, 422}
    assert all(p.expected.code is None for p in refused)
    assert {p.kind for p in refused if p.sender == INTRUDER} == {
        RecordKind.FORGED_SIGNATURE,
        RecordKind.UNKNOWN_TERMINAL,
        RecordKind.INACTIVE_TERMINAL,
        RecordKind.WRONG_DOMAIN,
    }


def test_generate_day_keeps_each_payer_at_one_terminal(day):
    terminals = defaultdict(set)
    for planned in day.stored:
        terminals[planned.record.payer].add(planned.record.terminal_id)

    assert all(len(found) == 1 for found in terminals.values())


def test_generate_day_sends_each_terminal_in_sequence_order(day):
    for terminal in day.terminals:
        sequences = [
            p.record.sequence
            for p in day.sends_of(terminal.terminal_id)
            if p.expected.reaches_chain and p.kind != RecordKind.REPLAY
        ]

        assert sequences == sorted(set(sequences)), terminal.terminal_id


def test_generate_day_expires_records_hours_before_their_time(day):
    expired = [p for p in day.records if p.kind == RecordKind.EXPIRED]

    assert expired
    for planned in expired:
        assert planned.record.valid_until <= START + planned.offset - 3 * 3_600


def test_scenario_lunchtime_surge_carries_most_records():
    scenario = Scenario()
    base, surge = scenario.split()
    lunch = scenario.offered_rate(4.5 * scenario.seconds_per_hour)
    evening = scenario.offered_rate(10 * scenario.seconds_per_hour)

    assert base + surge == scenario.records
    assert surge > 10 * base
    assert lunch > 50 * evening
    assert scenario.clock_at(scenario.duration) == "20:00"


def test_compare_finds_no_difference_when_every_outcome_matches(day):
    assert compare(day.records, matching_outcomes(day)) == []


def test_compare_catches_a_broken_expectation(day):
    """Break one expected outcome: the verdict names exactly that record."""
    outcomes = matching_outcomes(day)
    records = list(day.records)
    first = next(i for i, p in enumerate(records) if p.kind == RecordKind.PURCHASE)
    records[first] = dataclasses.replace(
        records[first],
        expected=Expectation(201, code=StatusCode.INSUFFICIENT_BALANCE),
    )

    differences = compare(records, outcomes)

    assert [d.index for d in differences] == [first]
    assert differences[0].expected == "INSUFFICIENT_BALANCE, REJECTED_BY_RULES"
    assert differences[0].actual == "APPROVED, SETTLED"


def test_compare_counts_a_repeat_after_a_retry_as_stored(day):
    outcomes = matching_outcomes(day)
    first = next(i for i, p in enumerate(day.records) if p.expected.reaches_chain)
    outcomes[first] = dataclasses.replace(outcomes[first], http_status=200, attempts=2)

    assert compare(day.records, outcomes) == []


def test_compare_catches_a_record_on_chain_twice(day):
    planned = day.stored[0]
    row = RecordRow(
        terminal_id=planned.record.terminal_id,
        sequence=planned.record.sequence,
        payer=planned.record.payer,
        merchant=planned.record.merchant,
        amount=planned.record.amount,
        code=StatusCode.APPROVED,
        status=SettlementStatus.SETTLED,
        block_hash=bytes(32),
        index=0,
        tx_hash=bytes(32),
        block_number=1,
        timestamp=START,
        settlement_tx=None,
        final=True,
    )

    differences = compare(day.records, matching_outcomes(day), [row, row])

    assert [d.kind for d in differences] == ["chain"]


def test_state_durations_split_the_day_by_state():
    changes = [StateChange(10.0, "congested", ""), StateChange(25.0, "normal", "")]

    assert state_durations(changes, 40.0) == {"normal": 25.0, "congested": 15.0}


@pytest.fixture(scope="module")
def short_day(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[SimulationResult, Path]:
    out = tmp_path_factory.mktemp("day")
    result = run_simulation(SHORT, out)
    write_report(result, out)
    return result, out


def test_short_day_matches_its_ground_truth(short_day):
    result, _ = short_day

    assert result.differences == []
    assert result.ok
    assert result.held == 0
    assert result.blocks_complete == len(result.blocks)
    assert set(BAD_KINDS) <= {planned.kind for planned in result.workload.records}


def test_short_day_aggregates_during_the_surge(short_day):
    result, _ = short_day
    modes = {block.mode for block in result.blocks}

    assert modes == {"normal", "aggregate"}
    assert [change.state for change in result.changes][:1] == ["congested"]
    assert result.changes_on_chain == len(result.changes)


def test_short_day_verdict_catches_a_broken_expectation(short_day):
    result, _ = short_day
    records = list(result.workload.records)
    first = next(
        i for i, p in enumerate(records) if p.expected.code == StatusCode.APPROVED
    )
    records[first] = dataclasses.replace(
        records[first], expected=Expectation(201, code=StatusCode.PAYER_FROZEN)
    )

    differences = compare(records, result.outcomes)
    broken = dataclasses.replace(result, differences=differences)

    assert [d.index for d in differences] == [first]
    assert not broken.ok


def test_short_day_writes_a_receipt_for_every_record_on_chain(short_day):
    result, out = short_day
    on_chain = {p.record.record_id.hex() for p in result.workload.stored}
    files = sorted((out / "receipts").glob("*.json"))

    receipt = Receipt.from_json(files[0].read_text())
    checks = verify_receipt(receipt)

    assert {path.stem for path in files} == on_chain
    assert {check.verdict for check in checks} <= {Verdict.PASSED, Verdict.NOT_CHECKED}


def test_short_day_report_files_exist_and_parse(short_day):
    result, out = short_day

    document = json.loads((out / "report.json").read_text())
    page = (out / "report.html").read_text()

    assert document["summary"]["ok"] is True
    assert document["summary"]["records"] == SHORT.records
    assert len(document["blocks"]) == len(result.blocks)
    assert sum(document["offered_load"]["sent_per_second"]) == SHORT.records
    assert page.count("data:image/png;base64,") == 6
    assert "every record matched its expected outcome" in page
