"""The rate limiter's pacing and shared pause, on a fake clock (no real time passes)."""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest

from shared.rate_limit import RateLimiter


class FakeClock:
    """A clock that moves only when someone sleeps; records every sleep."""

    def __init__(self, start: float = 100.0) -> None:
        self.now = start
        self.sleeps: list[float] = []
        self.on_sleep: Callable[[float], None] | None = None

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        if self.on_sleep is not None:
            hook, self.on_sleep = self.on_sleep, None
            hook(seconds)
        self.now += seconds


def start_times(limiter: RateLimiter, clock: FakeClock, count: int) -> list[float]:
    times = []
    for _ in range(count):
        limiter.acquire()
        times.append(clock.now)
    return times


def test_requests_are_evenly_spaced_at_the_rate() -> None:
    clock = FakeClock()
    limiter = RateLimiter(4.0, clock=clock, sleep=clock.sleep)

    times = start_times(limiter, clock, 5)

    assert [round(t - times[0], 9) for t in times] == [0.0, 0.25, 0.5, 0.75, 1.0]


def test_the_first_request_goes_at_once() -> None:
    clock = FakeClock()
    limiter = RateLimiter(2.0, clock=clock, sleep=clock.sleep)

    limiter.acquire()

    assert clock.sleeps == []


def test_idle_time_does_not_build_up_a_burst() -> None:
    clock = FakeClock()
    limiter = RateLimiter(5.0, clock=clock, sleep=clock.sleep)
    limiter.acquire()
    clock.now += 60.0  # a minute without requests

    times = start_times(limiter, clock, 3)

    assert [round(t - times[0], 9) for t in times] == [0.0, 0.2, 0.4]


def test_pause_for_delays_the_next_request_of_every_caller() -> None:
    clock = FakeClock()
    limiter = RateLimiter(10.0, clock=clock, sleep=clock.sleep)
    limiter.acquire()
    paused_at = clock.now

    limiter.pause_for(3.0)
    times = start_times(limiter, clock, 3)

    assert [round(t - paused_at, 9) for t in times] == [3.0, 3.1, 3.2]


def test_a_shorter_pause_does_not_cut_a_longer_one_short() -> None:
    clock = FakeClock()
    limiter = RateLimiter(None, clock=clock, sleep=clock.sleep)
    limiter.pause_for(5.0)
    limiter.pause_for(1.0)

    limiter.acquire()

    assert clock.now == pytest.approx(105.0)


def test_a_pause_shorter_than_the_spacing_does_not_bring_the_next_request_forward() -> None:
    clock = FakeClock()
    limiter = RateLimiter(2.0, clock=clock, sleep=clock.sleep)
    limiter.acquire()

    limiter.pause_for(0.01)  # a throttled caller's jittered back-off can be tiny
    limiter.acquire()

    assert clock.now == pytest.approx(100.5)


def test_slots_after_a_pause_stay_valid_and_spaced() -> None:
    clock = FakeClock()  # frozen: sleep lengths are the slots handed out
    waits: list[float] = []
    limiter = RateLimiter(10.0, clock=clock, sleep=lambda s: waits.append(round(s, 9)))
    for _ in range(3):
        limiter.acquire()  # slots at +0.0, +0.1, +0.2

    limiter.pause_for(0.15)
    limiter.acquire()

    assert waits == [0.1, 0.2, 0.3]


def test_a_pause_arriving_while_a_caller_waits_moves_that_caller_behind_it() -> None:
    clock = FakeClock()
    limiter = RateLimiter(1.0, clock=clock, sleep=clock.sleep)
    limiter.acquire()  # slot at 100; the next slot is at 101
    # While this caller sleeps towards its slot, another caller is throttled and pauses everyone.
    clock.on_sleep = lambda _seconds: limiter.pause_until(110.0)

    limiter.acquire()

    assert clock.now == pytest.approx(110.0)


def test_unpaced_limiter_never_sleeps_unless_paused() -> None:
    clock = FakeClock()
    limiter = RateLimiter(None, clock=clock, sleep=clock.sleep)

    start_times(limiter, clock, 50)

    assert clock.sleeps == []


def test_threads_sharing_a_limiter_each_get_a_distinct_slot() -> None:
    clock = FakeClock()  # never advances: each caller's sleep length is the slot it was given
    lock = threading.Lock()
    waits: list[float] = []

    def record(seconds: float) -> None:
        with lock:
            waits.append(round(seconds, 9))

    limiter = RateLimiter(10.0, clock=clock, sleep=record)

    def worker() -> None:
        for _ in range(25):
            limiter.acquire()

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    # 100 acquisitions: one at once, 99 waiting for slots 0.1 s apart, no slot handed out twice.
    assert sorted(waits) == [round(0.1 * k, 9) for k in range(1, 100)]


@pytest.mark.parametrize("rate", [0.0, -1.0, float("inf"), float("nan")])
def test_a_rate_that_is_not_a_positive_number_is_refused(rate: float) -> None:
    with pytest.raises(ValueError, match="requests_per_second"):
        RateLimiter(rate)
