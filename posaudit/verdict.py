"""The verdict of a simulated day: every submission's outcome against its truth.

The generator (:mod:`posaudit.simulation`) knows the right outcome of every
submission; the run records what the gateway answered and what the chain's events
say. :func:`compare` lists every disagreement, and also every record the chain holds
that the day did not store, or holds twice.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from posaudit.audit import SettlementStatus
from posaudit.auditor import RecordRow
from posaudit.rules import StatusCode
from posaudit.simulation import Expectation, PlannedRecord


@dataclass(frozen=True)
class Outcome:
    """What happened to one submission.

    Attributes:
        http_status: The gateway's answer (201 stored, 200 a repeat, 4xx refused),
            None when it never answered.
        gateway_code: The gateway's error code, if it refused.
        attempts: Requests sent for it, retries included.
        sent_at: Seconds after the start of the day when it was sent.
        code: The Ledger's status code for the record, when it is on chain.
        settlement: The audit's status for the record, when it is on chain.
        block_height: Height of its settlement block.
    """

    http_status: int | None
    gateway_code: str | None = None
    attempts: int = 1
    sent_at: float = 0.0
    code: StatusCode | None = None
    settlement: SettlementStatus | None = None
    block_height: int | None = None

    def describe(self) -> str:
        """The outcome in a few words, comparable with ``Expectation.describe``."""
        if self.http_status is None:
            return f"no answer ({self.gateway_code})"

        if self.code is not None:
            return self.code.name

        if self.gateway_code is not None:
            return f"{self.http_status} {self.gateway_code}"

        if self.http_status == 201:
            return "201 stored, not on chain"

        return f"{self.http_status} repeat"


@dataclass(frozen=True)
class Difference:
    """A disagreement between the ground truth and the run.

    Attributes:
        subject: What differs: a record (``TERMINAL #SEQ``), a payer or a merchant.
        kind: The record's kind, or ``balance`` / ``credit`` / ``chain``.
        expected: What the ground truth says.
        actual: What the run shows.
        index: Position of the submission in the day, None for money and chain.
    """

    subject: str
    kind: str
    expected: str
    actual: str
    index: int | None = None

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready values."""
        return dataclasses.asdict(self)


def expected_settlement(expected: Expectation) -> SettlementStatus | None:
    """The audit's final status a submission's record should reach."""
    if expected.code is None:
        return None

    if expected.code is StatusCode.APPROVED:
        return SettlementStatus.SETTLED

    return SettlementStatus.REJECTED_BY_RULES


def compare(
    records: Sequence[PlannedRecord],
    outcomes: Sequence[Outcome],
    chain_rows: Sequence[RecordRow] = (),
) -> list[Difference]:
    """Every submission's outcome against its ground truth, and the chain's rows
    against the records that should be on it.

    A stored record must be on chain once, with the expected status code and its
    final settlement; a refusal must carry the expected status and error code; a
    repeat must be answered as one. A 200 answer to a request that was retried
    counts as stored: the first attempt stored it and the answer was lost.

    Args:
        records: The planned submissions, in day order.
        outcomes: What happened to each, in the same order.
        chain_rows: Every record outcome the chain holds; rows of records the day
            did not store, and second rows of one record, are differences.

    Returns:
        The differences, in day order, then the chain's.
    """
    differences = []
    for planned, outcome in zip(records, outcomes, strict=True):
        expected = planned.expected
        status = outcome.http_status
        if status == 200 and outcome.attempts > 1 and expected.http_status == 201:
            status = 201

        agrees = (
            status == expected.http_status
            and outcome.gateway_code == expected.gateway_code
            and outcome.code == expected.code
            and outcome.settlement == expected_settlement(expected)
        )
        if agrees:
            continue

        actual = outcome.describe()
        if outcome.settlement is not None and outcome.code is not None:
            actual += f", {outcome.settlement.name}"

        wanted = expected.describe()
        settlement = expected_settlement(expected)
        if settlement is not None:
            wanted += f", {settlement.name}"

        record = planned.record
        differences.append(
            Difference(
                f"{record.terminal_id} #{record.sequence}",
                str(planned.kind),
                wanted,
                actual,
                planned.index,
            )
        )

    stored = {
        (planned.record.terminal_id, planned.record.sequence)
        for planned in records
        if planned.expected.reaches_chain
    }
    seen: Counter[tuple[str, int]] = Counter()
    for row in chain_rows:
        if row.code is StatusCode.PROOF_MISMATCH:
            continue

        key = (row.terminal_id, row.sequence)
        seen[key] += 1
        if key not in stored or seen[key] > 1:
            differences.append(
                Difference(
                    f"{row.terminal_id} #{row.sequence}",
                    "chain",
                    "no such record on chain" if key not in stored else "one outcome",
                    f"{row.code.name} in block 0x{row.block_hash.hex()[:12]}",
                )
            )

    return differences


def outcomes_from_chain(
    records: Sequence[PlannedRecord],
    outcomes: Sequence[Outcome | None],
    rows: Sequence[RecordRow],
    heights: dict[bytes, int],
) -> list[Outcome]:
    """Each submission's gateway answer joined with its record's outcome on chain.

    Args:
        records: The planned submissions, in day order.
        outcomes: The gateway's answer to each, None when it was never sent.
        rows: Every record outcome the chain holds.
        heights: Height of each settlement block, by block hash.

    Returns:
        The outcomes, with the chain's status code and settlement for every record
        the gateway stored.
    """
    by_key: dict[tuple[str, int], RecordRow] = {}
    for row in rows:
        key = (row.terminal_id, row.sequence)
        if key not in by_key or row.code is StatusCode.PROOF_MISMATCH:
            by_key[key] = row

    result = []
    for planned, outcome in zip(records, outcomes, strict=True):
        if outcome is None:
            result.append(Outcome(None, "NOT_SENT"))
            continue

        stored = outcome.http_status == 201 or (
            outcome.http_status == 200
            and outcome.attempts > 1
            and planned.expected.http_status == 201
        )
        row = by_key.get((planned.record.terminal_id, planned.record.sequence))
        if not stored or row is None:
            result.append(outcome)
            continue

        result.append(
            dataclasses.replace(
                outcome,
                code=row.code,
                settlement=row.status,
                block_height=heights.get(row.block_hash),
            )
        )

    return result
