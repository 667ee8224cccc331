"""SIGKILL the running service while records flow: none lost, none settled twice.

``make crash-test`` runs the long version (10 trials of 10,000 records); this test runs
a short one on every ``make test``.
"""

from __future__ import annotations

import os

from .crash_harness import run_trial

TRIALS = int(os.environ.get("POSAUDIT_CRASH_TRIALS", "1"))
RECORDS = int(os.environ.get("POSAUDIT_CRASH_RECORDS", "1200"))


def test_killed_service_loses_nothing_and_settles_nothing_twice(tmp_path):
    for trial in range(TRIALS):
        result = run_trial(tmp_path / f"trial{trial}", RECORDS, seed=trial)

        assert result.errors == []
        assert result.kills >= 1
        assert len(result.acknowledged) > 0
        assert result.lost == 0
        assert result.settled_twice == 0
        assert result.blocks_complete == result.blocks
        assert result.credit == result.expected_credit
