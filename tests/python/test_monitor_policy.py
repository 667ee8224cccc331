"""The network monitor's policy: claim 6's rule, its edges, and why it needs hysteresis.

Pure: samples are made up here, no chain and no clock.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable

import pytest

from posaudit.exceptions import MonitorError, MonitorSettingsError
from posaudit.monitor_policy import (
    MonitorPolicy,
    MonitorSettings,
    NetworkState,
    Sample,
    Transition,
)

NORMAL, CONGESTED = NetworkState.NORMAL, NetworkState.CONGESTED

# Round numbers for the rule tests; no hold unless a test asks for one.
RULE = MonitorSettings(
    window_seconds=10.0,
    enter_block_rate=10.0,
    leave_block_rate=4.0,
    enter_link_rate=1_000.0,
    leave_link_rate=200.0,
    min_hold_seconds=0.0,
)


def sample(time: float, block_rate: float, **link_rates: float) -> Sample:
    return Sample(time, block_rate, link_rates)


def congested_policy(settings: MonitorSettings = RULE) -> MonitorPolicy:
    policy = MonitorPolicy(settings)
    policy.observe(sample(0.0, 11.0, rpc=2_000.0))
    assert policy.state is CONGESTED
    return policy


class TestClaimRule:
    """Congested when the block rate and some link are high; normal otherwise."""

    def test_high_block_rate_with_quiet_links_stays_normal(self):
        policy = MonitorPolicy(RULE)

        transition = policy.observe(sample(1.0, 50.0, rpc=900.0, audit=10.0))

        assert transition is None
        assert policy.state is NORMAL

    def test_busy_link_with_low_block_rate_stays_normal(self):
        policy = MonitorPolicy(RULE)

        transition = policy.observe(sample(1.0, 9.0, rpc=90_000.0))

        assert transition is None
        assert policy.state is NORMAL

    def test_high_block_rate_and_one_busy_link_enter_congestion(self):
        policy = MonitorPolicy(RULE)

        transition = policy.observe(sample(3.0, 12.0, rpc=10.0, audit=1_500.0))

        assert transition is not None
        assert transition == Transition(
            time=3.0,
            previous=NORMAL,
            current=CONGESTED,
            block_rate=12.0,
            link_rates={"rpc": 10.0, "audit": 1_500.0},
            reason=transition.reason,
        )
        assert "'audit'" in transition.reason
        assert policy.state is CONGESTED
        assert policy.since == 3.0

    def test_no_links_never_congest(self):
        policy = MonitorPolicy(RULE)

        assert policy.observe(sample(1.0, 1_000.0)) is None

    def test_low_block_rate_leaves_congestion_with_busy_links(self):
        policy = congested_policy()

        transition = policy.observe(sample(1.0, 3.9, rpc=50_000.0))

        assert transition is not None
        assert (transition.previous, transition.current) == (CONGESTED, NORMAL)
        assert "block rate" in transition.reason

    def test_quiet_links_leave_congestion_at_a_high_block_rate(self):
        policy = congested_policy()

        transition = policy.observe(sample(1.0, 50.0, rpc=199.0, audit=0.0))

        assert transition is not None
        assert transition.current is NORMAL
        assert "every link" in transition.reason

    def test_one_busy_link_keeps_congestion(self):
        policy = congested_policy()

        transition = policy.observe(sample(1.0, 5.0, rpc=10.0, audit=300.0))

        assert transition is None
        assert policy.state is CONGESTED


class TestEdges:
    """Above is strictly above, below strictly below: a level itself changes nothing."""

    @pytest.mark.parametrize(
        ("block_rate", "link_rate", "enters"),
        [
            (10.0, 5_000.0, False),
            (math.nextafter(10.0, math.inf), 5_000.0, True),
            (50.0, 1_000.0, False),
            (50.0, math.nextafter(1_000.0, math.inf), True),
        ],
        ids=["rate-at-level", "rate-just-above", "link-at-level", "link-just-above"],
    )
    def test_enter_levels_are_exclusive(self, block_rate, link_rate, enters):
        policy = MonitorPolicy(RULE)

        transition = policy.observe(sample(1.0, block_rate, rpc=link_rate))

        assert (transition is not None) is enters

    @pytest.mark.parametrize(
        ("block_rate", "link_rate", "leaves"),
        [
            (4.0, 5_000.0, False),
            (math.nextafter(4.0, 0.0), 5_000.0, True),
            (50.0, 200.0, False),
            (50.0, math.nextafter(200.0, 0.0), True),
        ],
        ids=["rate-at-level", "rate-just-below", "link-at-level", "link-just-below"],
    )
    def test_leave_levels_are_exclusive(self, block_rate, link_rate, leaves):
        policy = congested_policy()

        transition = policy.observe(sample(1.0, block_rate, rpc=link_rate))

        assert (transition is not None) is leaves

    @pytest.mark.parametrize("state", [NORMAL, CONGESTED], ids=str)
    def test_sample_at_the_single_level_keeps_either_state(self, state):
        policy = MonitorPolicy(RULE.without_hysteresis(), state=state)

        transition = policy.observe(sample(1.0, 10.0, rpc=1_000.0))

        assert transition is None
        assert policy.state is state


# A plant for the closed-loop tests, with the costs measured on anvil: a one-record
# append carries about 18 kB of JSON-RPC per block plus 1.5 kB per record; congested,
# the bookkeeper waits for 64 records or 2 s (BatchPolicy's defaults).
BLOCK_BYTES, RECORD_BYTES = 18_000.0, 1_550.0
AGGREGATE_SIZE, FLUSH_TIMEOUT = 64, 2.0


def plant(state: NetworkState, load: float) -> tuple[float, float]:
    """Blocks per second and link bytes per second for ``load`` records per second."""
    if state is NORMAL or load == 0:
        blocks = load
    else:
        blocks = min(load, max(1 / FLUSH_TIMEOUT, load / AGGREGATE_SIZE))

    return blocks, blocks * BLOCK_BYTES + load * RECORD_BYTES


def oscillating_load(second: int) -> float:
    """Quiet, then 7 records/s swinging by 2 around it for two minutes, then quiet."""
    if 30 <= second < 150:
        return 7.0 + 2.0 * math.sin(2 * math.pi * second / 8)

    return 0.0


def run(settings: MonitorSettings, load: Callable[[int], float]) -> list[Transition]:
    """Drive a policy for 200 s, measuring over its window as the monitor does."""
    policy = MonitorPolicy(settings)
    window = int(settings.window_seconds)
    blocks: deque[float] = deque(maxlen=window)
    link: deque[float] = deque(maxlen=window)
    transitions = []
    for second in range(200):
        block_rate, link_rate = plant(policy.state, load(second))
        blocks.append(block_rate)
        link.append(link_rate)
        measured = Sample(
            float(second), sum(blocks) / len(blocks), {"rpc": sum(link) / len(link)}
        )
        transition = policy.observe(measured)
        if transition is not None:
            transitions.append(transition)

    return transitions


class TestHysteresis:
    """Aggregation lowers the block rate that triggers it; hysteresis stops the flap."""

    def test_single_threshold_flaps_while_aggregation_lowers_the_rate(self):
        transitions = run(MonitorSettings().without_hysteresis(), oscillating_load)

        assert len(transitions) >= 10

    def test_hold_time_alone_only_slows_the_flapping(self):
        settings = MonitorSettings(
            leave_block_rate=MonitorSettings().enter_block_rate,
            leave_link_rate=MonitorSettings().enter_link_rate,
        )

        transitions = run(settings, oscillating_load)

        assert 2 < len(transitions) <= 120 / settings.min_hold_seconds + 1

    def test_default_settings_enter_once_and_leave_once(self):
        transitions = run(MonitorSettings(), oscillating_load)

        assert [(t.previous, t.current) for t in transitions] == [
            (NORMAL, CONGESTED),
            (CONGESTED, NORMAL),
        ]
        assert 30 <= transitions[0].time < 40
        assert transitions[1].time >= 150

    def test_without_hysteresis_keeps_enter_levels_and_window(self):
        settings = MonitorSettings(window_seconds=4.0, min_hold_seconds=9.0)

        plain = settings.without_hysteresis()

        assert plain.leave_block_rate == plain.enter_block_rate == 5.0
        assert plain.leave_link_rate == plain.enter_link_rate == 64_000.0
        assert plain.min_hold_seconds == 0.0
        assert plain.window_seconds == 4.0


class TestHoldTime:
    """No change of state before the minimum hold time since the last one."""

    HOLD = MonitorSettings(
        window_seconds=10.0,
        enter_block_rate=10.0,
        leave_block_rate=4.0,
        enter_link_rate=1_000.0,
        leave_link_rate=200.0,
        min_hold_seconds=20.0,
    )

    def test_first_change_needs_no_hold(self):
        policy = MonitorPolicy(self.HOLD)

        assert policy.observe(sample(0.0, 11.0, rpc=2_000.0)) is not None

    def test_leave_waits_until_the_hold_has_passed(self):
        policy = congested_policy(self.HOLD)

        early = policy.observe(sample(19.9, 0.0, rpc=0.0))
        on_time = policy.observe(sample(20.0, 0.0, rpc=0.0))

        assert early is None
        assert on_time is not None
        assert on_time.current is NORMAL
        assert policy.since == 20.0

    def test_re_enter_waits_for_the_hold_after_leaving(self):
        policy = congested_policy(self.HOLD)
        policy.observe(sample(20.0, 0.0, rpc=0.0))

        assert policy.observe(sample(39.0, 50.0, rpc=9_000.0)) is None
        assert policy.observe(sample(40.0, 50.0, rpc=9_000.0)) is not None

    def test_hold_counts_from_a_recorded_change(self):
        policy = MonitorPolicy(self.HOLD, state=CONGESTED, since=100.0)

        assert policy.observe(sample(119.0, 0.0, rpc=0.0)) is None
        assert policy.observe(sample(120.0, 0.0, rpc=0.0)) is not None


def test_sample_older_than_the_previous_is_refused():
    policy = MonitorPolicy(RULE)
    policy.observe(sample(5.0, 0.0))

    with pytest.raises(MonitorError, match=r"t=4\.0 s is older than .* t=5\.0 s"):
        policy.observe(sample(4.0, 0.0))


class TestSettingsValidation:
    """Settings that cannot work are refused with the field, the value and a fix."""

    @pytest.mark.parametrize(
        ("changes", "message"),
        [
            (
                {"leave_block_rate": 6.0},
                r"leave_block_rate is 6\.0, above enter_block_rate 5\.0.*"
                r"Set leave_block_rate <= enter_block_rate\.",
            ),
            (
                {"leave_link_rate": 70_000.0},
                r"leave_link_rate is 70000\.0, above enter_link_rate 64000\.0",
            ),
            ({"window_seconds": 0.0}, r"window_seconds is 0\.0; .* longer than 0 s"),
            ({"window_seconds": -1.0}, r"window_seconds is -1\.0; .* not be negative"),
            ({"min_hold_seconds": -5.0}, r"min_hold_seconds is -5\.0"),
            ({"enter_link_rate": math.nan}, r"enter_link_rate is nan; .* finite"),
            ({"enter_block_rate": math.inf}, r"enter_block_rate is inf; .* finite"),
            ({"window_seconds": "10"}, r"window_seconds is '10'; .* finite number"),
        ],
        ids=[
            "leave-rate-above-enter",
            "leave-link-above-enter",
            "zero-window",
            "negative-window",
            "negative-hold",
            "nan-threshold",
            "infinite-threshold",
            "text-window",
        ],
    )
    def test_invalid_settings_are_refused(self, changes, message):
        with pytest.raises(MonitorSettingsError, match=message):
            MonitorSettings(**changes)

    def test_equal_enter_and_leave_levels_are_accepted(self):
        settings = MonitorSettings(leave_block_rate=5.0, leave_link_rate=64_000.0)

        assert settings.leave_block_rate == settings.enter_block_rate

    def test_settings_error_is_a_value_error(self):
        with pytest.raises(ValueError):
            MonitorSettings(window_seconds=0.0)
