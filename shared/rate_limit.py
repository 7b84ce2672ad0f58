"""Pacing of requests to a rate-limited API, shared by every thread that talks to one connection.

Autopilot limits requests per key (and possibly per client address), and a 429 is a signal about the
whole connection, not about one request: when one caller is throttled, every caller sharing the key
must back off, or the others keep the limit exceeded and the 429s never stop. So the limiter has two
parts: an even spacing of request starts (no bursts beyond one request, so the server never sees more
than ``rate + 1`` requests in any second), and a shared pause that a throttled caller sets for all.

The logic takes its clock and its sleep function as parameters so it can be tested with a fake clock.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from typing import Protocol

Clock = Callable[[], float]
Sleep = Callable[[float], None]


class RateLimiter:
    """Evenly spaced request slots at ``requests_per_second``, plus a pause every caller honours.

    ``requests_per_second=None`` means no spacing (only pauses apply): a local server or a test that
    wants full speed still gets the shared back-off on 429.

    Slots are handed out in order (a reservation each), so N threads sharing one limiter together
    send at the rate, not N times the rate. A caller whose slot falls inside a pause set while it
    waited gives the slot up and takes a new one after the pause: requests reserved before a 429
    must not go out during the back-off that 429 asked for. A pause never brings the next slot
    forward, so a short back-off cannot make room for a burst.
    """

    def __init__(
        self,
        requests_per_second: float | None,
        *,
        clock: Clock = time.monotonic,
        sleep: Sleep = time.sleep,
    ) -> None:
        if requests_per_second is not None and (
            not math.isfinite(requests_per_second) or requests_per_second <= 0
        ):
            raise ValueError(f"requests_per_second must be a positive number, got {requests_per_second!r}")
        self._rate = requests_per_second
        self._interval = 0.0 if requests_per_second is None else 1.0 / requests_per_second
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._next_slot = -math.inf  # earliest start of the next request
        self._paused_until = -math.inf

    @property
    def requests_per_second(self) -> float | None:
        return self._rate

    @property
    def interval(self) -> float:
        """Seconds between two request starts (0 when unpaced)."""
        return self._interval

    @property
    def paused_until(self) -> float:
        """The clock time before which no request may start (in the past when not paused)."""
        with self._lock:
            return self._paused_until

    def acquire(self) -> None:
        """Block until this caller may send one request."""
        while True:
            with self._lock:
                now = self._clock()
                start = max(now, self._next_slot, self._paused_until)
                self._next_slot = start + self._interval
            wait = start - now
            if wait <= 0:
                return
            self._sleep(wait)
            with self._lock:
                if start >= self._paused_until:
                    return
            # A pause arrived while this caller waited and covers its slot: queue again behind it.

    def pause_until(self, deadline: float) -> None:
        """No request of any caller starts before ``deadline`` (a value of this limiter's clock).

        A shorter pause never cuts a longer one short: two throttled callers asking for 2 s and 1 s
        leave the limiter paused for the 2 s.
        """
        with self._lock:
            if deadline <= self._paused_until:
                return
            self._paused_until = deadline
            # Slots already handed out before the deadline are void (their holders queue again);
            # those after it stay valid, and new slots follow them, so the spacing holds throughout.
            self._next_slot = max(self._next_slot, deadline)

    def pause_for(self, seconds: float) -> None:
        """Pause every caller for ``seconds`` from now (a 429's back-off)."""
        if seconds > 0:
            self.pause_until(self._clock() + seconds)


class Pacer(Protocol):
    """What the Autopilot client needs of a limiter: a slot per request, and a shared back-off."""

    def acquire(self) -> None: ...

    def pause_for(self, seconds: float) -> None: ...


class PacerChain:
    """Several limits at once: a request goes when every one of them gives it a slot.

    An upload activity paces at its run's share of the connection (``rate / in-flight uploads``:
    safe however many machines the activities land on) AND at the connection's process-wide limit
    (two runs of the same connection in one worker cannot add up to twice the rate).
    """

    def __init__(self, *pacers: Pacer) -> None:
        self._pacers = pacers

    def acquire(self) -> None:
        for pacer in self._pacers:
            pacer.acquire()

    def pause_for(self, seconds: float) -> None:
        for pacer in self._pacers:
            pacer.pause_for(seconds)


_connection_limiters: dict[tuple[str, float | None], RateLimiter] = {}
_registry_lock = threading.Lock()


def connection_limiter(connection: str, requests_per_second: float | None) -> RateLimiter:
    """The process's one limiter for a connection at its configured rate, shared by every client."""
    key = (connection, requests_per_second)
    with _registry_lock:
        limiter = _connection_limiters.get(key)
        if limiter is None:
            limiter = _connection_limiters[key] = RateLimiter(requests_per_second)
        return limiter
