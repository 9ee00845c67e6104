"""Load-test pacing of `flowsentinel replay --rate`: pure logic on a fake clock, no broker."""

from __future__ import annotations

import pytest

from services.collector.replay import looped, rate_batches, stamped


class FakeClock:
    """Time passes only when slept, or by `work` per batch taken (a sender's own cost)."""

    def __init__(self) -> None:
        self.now = 0.0
        self.slept = 0.0

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        assert seconds >= 0
        self.now += seconds
        self.slept += seconds


def send_times(rate: float, duration: float, clock: FakeClock, work: float = 0.0, most: int = 5000) -> list[float]:
    """The clock time each flow is released at."""
    times: list[float] = []
    for n in rate_batches(rate, duration, clock, most=most):
        times.extend([clock.now] * n)
        clock.now += work
    return times


@pytest.mark.parametrize(("rate", "duration"), [(1000.0, 2.0), (333.0, 1.5), (20000.0, 0.5), (3.0, 4.0)])
def test_sends_rate_times_duration_flows_each_not_before_its_due_time(rate: float, duration: float) -> None:
    clock = FakeClock()
    times = send_times(rate, duration, clock)
    assert len(times) == int(rate * duration)
    for i, t in enumerate(times):
        assert i / rate - 1e-9 <= t <= i / rate + 0.0011  # never early; late by at most the 1 ms minimum sleep


def test_an_idle_sender_sleeps_rather_than_spins() -> None:
    clock = FakeClock()
    send_times(10.0, 3.0, clock)
    assert clock.slept == pytest.approx(2.9, abs=0.05)  # the last of 30 flows is due at 2.9 s


def test_a_slow_sender_catches_up_in_bounded_batches_and_the_achieved_rate_shows_it() -> None:
    clock = FakeClock()
    # Each batch costs 0.1 s of work, whatever its size: at most 100 flows per batch means 1000 flows/s at best.
    times = send_times(5000.0, 2.0, clock, work=0.1, most=100)
    assert len(times) == 10000
    assert 9.0 < clock.now < 11.0  # 10,000 flows at the sender's limit of ~1,000/s, not 2 s worth of bursts


def test_bad_rate_or_duration_is_refused() -> None:
    for rate, duration in ((0.0, 1.0), (-5.0, 1.0), (10.0, 0.0)):
        with pytest.raises(ValueError):
            next(rate_batches(rate, duration, FakeClock()))


def test_looped_flows_restart_and_stamping_keeps_duration() -> None:
    flows = [{"first_seen": 10.0, "last_seen": 12.5, "n": 0}, {"first_seen": 11.0, "last_seen": 11.0, "n": 1}]
    source = looped(flows)
    assert [next(source)["n"] for _ in range(5)] == [0, 1, 0, 1, 0]
    moved = stamped(flows[0], 1000.0)
    assert (moved["first_seen"], moved["last_seen"], moved["n"]) == (1000.0, 1002.5, 0)
    assert flows[0]["first_seen"] == 10.0  # the dataset copy is untouched for the next loop
    # A flow recorded ending before it starts (seen with softflowd) gets no negative duration.
    assert stamped({"first_seen": 5.0, "last_seen": 4.0}, 100.0)["last_seen"] == 100.0
