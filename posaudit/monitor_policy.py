"""When the network counts as congested: the network monitor's policy (claim 6).

Claim 6 calls the network congested when the settlement-block rate is above its
threshold **and** some link is above its bandwidth threshold, and normal otherwise.
Read with a single threshold per measure, that rule flaps under the very load it is
meant to detect. Congestion switches the bookkeeper to aggregate blocks (claim 7), and
an aggregate block carries up to n records, so the block rate falls by up to n times as
a direct result of the decision. The next samples see a low rate and declare the
network normal, one-record blocks return, the rate climbs past the threshold again,
and the state flips at every window for as long as the load lasts. Each flip changes
how records are settled and, through the monitor's ``on_change`` hook, costs a
transaction.

The policy therefore adds hysteresis, the way a thermostat does:

- Each measure has two levels. The network becomes congested when the rate is above
  the *enter* level and some link is above its *enter* level. It becomes normal again
  only when the rate falls below the lower *leave* level, or every link falls below its
  *leave* level. Between the two levels the state stays as it is.
- After a change the state is held for a minimum time. Samples taken within one window
  of a change still count blocks and bytes from before it; the hold lets the window fill
  with the new mode before the policy judges it.

Comparisons are strict: *above* means ``>`` and *below* means ``<``. A rate exactly at
an enter level does not enter and a rate exactly at a leave level does not leave, so
that with hysteresis off (leave level equal to enter level) a sample at the threshold
changes nothing in either state.

NOTE: Under congestion with a flush timeout of T seconds, aggregate blocks go out at
least every T seconds while records arrive, so the block rate stays near 1 / T or
above however low the load is. Keep ``leave_block_rate`` at or below 1 / T (the
default 0.4 fits the bookkeeper's default T = 2 s); above it, the rate clause ends
congestion while the load lasts and only the hold time slows the flapping.

This module does no I/O: the measurements come in as :class:`Sample` objects, taken by
:mod:`posaudit.monitor`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from enum import StrEnum

from posaudit.exceptions import MonitorError, MonitorSettingsError


class NetworkState(StrEnum):
    """The monitor's verdict: one-record blocks if normal, aggregates if congested."""

    NORMAL = "normal"
    CONGESTED = "congested"


@dataclass(frozen=True)
class MonitorSettings:
    """Thresholds, window and hold time of the network monitor.

    The defaults come from measurements of one bookkeeper on anvil: a one-record
    append costs about 20 kB of JSON-RPC on its link (18 kB per block, 1.5 kB per
    record), and one bookkeeper appends about 15 one-record blocks per second. They
    assume the bookkeeper's default flush timeout of 2 s; operators tune them to
    their chain.

    Attributes:
        window_seconds: Length of the sliding window over which the block rate and
            link bandwidth are measured. 10 s holds several blocks even at the leave
            rate, so that one late block does not swing the estimate.
        enter_block_rate: Settlement blocks per second above which the block rate
            counts as high: 5, a third of what one bookkeeper appends, where a
            transaction per record starts to crowd the chain.
        leave_block_rate: Settlement blocks per second below which the block rate
            counts as low again: 0.4, below 1 / flush timeout, the least that
            aggregation produces while records still arrive.
        enter_link_rate: Bytes per second above which a link counts as busy: 64,000,
            about 3 one-record appends per second, so that a bookkeeper's own link is
            busy whenever its blocks drive the rate above the enter level.
        leave_link_rate: Bytes per second below which a link counts as quiet again:
            12,000, below the 16 kB/s that aggregate blocks still carry at the enter
            load (0.5 blocks/s of 18 kB and 5 records/s of 1.5 kB), so that
            congestion ends when the load falls, not when aggregation starts.
        min_hold_seconds: Seconds a state is kept after a change before the next
            change: 20, two windows, so that the window holds only the new mode before
            it is judged.
    """

    window_seconds: float = 10.0
    enter_block_rate: float = 5.0
    leave_block_rate: float = 0.4
    enter_link_rate: float = 64_000.0
    leave_link_rate: float = 12_000.0
    min_hold_seconds: float = 20.0

    def __post_init__(self) -> None:
        for item in fields(self):
            value = getattr(self, item.name)
            if not isinstance(value, int | float) or not math.isfinite(value):
                raise MonitorSettingsError(
                    f"Monitor setting {item.name} is {value!r}; it must be a finite "
                    "number."
                )

            if value < 0:
                raise MonitorSettingsError(
                    f"Monitor setting {item.name} is {value!r}; it must not be "
                    "negative."
                )

        if self.window_seconds <= 0:
            raise MonitorSettingsError(
                f"Monitor setting window_seconds is {self.window_seconds!r}; a rate "
                "needs a window longer than 0 s."
            )

        for measure in ("block_rate", "link_rate"):
            enter = getattr(self, f"enter_{measure}")
            leave = getattr(self, f"leave_{measure}")
            if leave > enter:
                raise MonitorSettingsError(
                    f"Monitor setting leave_{measure} is {leave!r}, above "
                    f"enter_{measure} {enter!r}: congestion would end at a level that "
                    f"starts it. Set leave_{measure} <= enter_{measure}."
                )

    def without_hysteresis(self) -> MonitorSettings:
        """The same enter levels and window, with no hysteresis at all.

        Leave levels equal the enter levels and the hold time is 0: the literal
        single-threshold rule of claim 6, kept for comparison.
        """
        return replace(
            self,
            leave_block_rate=self.enter_block_rate,
            leave_link_rate=self.enter_link_rate,
            min_hold_seconds=0.0,
        )


@dataclass(frozen=True)
class Sample:
    """One measurement of the network.

    Attributes:
        time: When it was taken, in seconds of the monitor's clock.
        block_rate: Settlement blocks per second over the window.
        link_rates: Bytes per second over the window, by link name.
    """

    time: float
    block_rate: float
    link_rates: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Transition:
    """A change of state, with the sample that caused it.

    Attributes:
        time: Time of the sample, in seconds of the monitor's clock.
        previous: The state before.
        current: The state after.
        block_rate: Settlement blocks per second in the sample.
        link_rates: Bytes per second of each link in the sample.
        reason: Which measure crossed which level, as a sentence.
    """

    time: float
    previous: NetworkState
    current: NetworkState
    block_rate: float
    link_rates: Mapping[str, float]
    reason: str


class MonitorPolicy:
    """Turns samples into the network state, with hysteresis and a hold time.

    Not thread-safe: :class:`posaudit.monitor.NetworkMonitor` serialises access.

    Args:
        settings: Thresholds and hold time.
        state: The state to start in.
        since: Clock time of the last change, when the starting state was recorded
            earlier; None lets the first change happen at once.
    """

    def __init__(
        self,
        settings: MonitorSettings | None = None,
        state: NetworkState = NetworkState.NORMAL,
        since: float | None = None,
    ) -> None:
        self.settings = settings if settings is not None else MonitorSettings()
        self._state = state
        self._since = since
        self._last_time: float | None = None

    @property
    def state(self) -> NetworkState:
        """The current state."""
        return self._state

    @property
    def since(self) -> float | None:
        """Clock time of the last change, or None if there has been none."""
        return self._since

    def observe(self, sample: Sample) -> Transition | None:
        """Take one sample into account and change state if the rule says so.

        Args:
            sample: The newest measurement; samples must come in time order.

        Returns:
            The change of state, or None when the state stays.

        Raises:
            MonitorError: The sample is older than the previous one.
        """
        if self._last_time is not None and sample.time < self._last_time:
            raise MonitorError(
                f"Sample at t={sample.time!r} s is older than the previous one at "
                f"t={self._last_time!r} s; samples must come from a monotonic clock."
            )

        self._last_time = sample.time
        if self._holding(sample.time):
            return None

        if self._state is NetworkState.NORMAL:
            reason = self._reason_to_enter(sample)
            target = NetworkState.CONGESTED
        else:
            reason = self._reason_to_leave(sample)
            target = NetworkState.NORMAL

        if reason is None:
            return None

        transition = Transition(
            time=sample.time,
            previous=self._state,
            current=target,
            block_rate=sample.block_rate,
            link_rates=dict(sample.link_rates),
            reason=reason,
        )
        self._state = target
        self._since = sample.time
        return transition

    def _holding(self, now: float) -> bool:
        if self._since is None:
            return False

        return now - self._since < self.settings.min_hold_seconds

    def _reason_to_enter(self, sample: Sample) -> str | None:
        settings = self.settings
        if not sample.block_rate > settings.enter_block_rate:
            return None

        busy = _busiest(sample.link_rates)
        if busy is None or not sample.link_rates[busy] > settings.enter_link_rate:
            return None

        return (
            f"block rate {sample.block_rate:.3g}/s is above "
            f"{settings.enter_block_rate:.3g}/s and link {busy!r} carries "
            f"{sample.link_rates[busy]:,.0f} B/s, above "
            f"{settings.enter_link_rate:,.0f} B/s."
        )

    def _reason_to_leave(self, sample: Sample) -> str | None:
        settings = self.settings
        if sample.block_rate < settings.leave_block_rate:
            return (
                f"block rate {sample.block_rate:.3g}/s is below "
                f"{settings.leave_block_rate:.3g}/s."
            )

        busy = _busiest(sample.link_rates)
        if busy is None or sample.link_rates[busy] < settings.leave_link_rate:
            busiest = 0.0 if busy is None else sample.link_rates[busy]
            return (
                f"every link carries less than {settings.leave_link_rate:,.0f} B/s "
                f"(busiest {busiest:,.0f} B/s)."
            )

        return None


def _busiest(link_rates: Mapping[str, float]) -> str | None:
    """Name of the link with the highest rate, or None when there are no links."""
    if not link_rates:
        return None

    return max(link_rates, key=lambda name: link_rates[name])
