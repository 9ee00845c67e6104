"""Retry one call until it succeeds, with capped exponential backoff, interruptible by a stop request.

The scorer wraps its model-backend call in this: while the model server is down the batch in hand is
retried and no new one is consumed, so no offset moves past an unscored window.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import TypeVar

T = TypeVar("T")


class Interrupted(Exception):
    """Stop was requested while the call was still failing: the work in hand was NOT done."""


def backoff_delays(initial: float, cap: float) -> Iterator[float]:
    """initial, 2*initial, 4*initial, ... never more than cap."""
    delay = initial
    while True:
        yield min(delay, cap)
        delay = min(delay * 2, cap)


def call_with_retry(
    fn: Callable[[], T],
    retry_on: type[Exception],
    stop: threading.Event,
    delays: Iterator[float],
    on_failure: Callable[[Exception, float], None],
    on_success: Callable[[int], None],
) -> T:
    """fn() until it returns. After each `retry_on` failure: on_failure(error, next delay), then wait that
    long (or until `stop` is set, which raises Interrupted). on_success(failures so far) before returning."""
    failures = 0
    while True:
        try:
            result = fn()
        except retry_on as exc:
            failures += 1
            delay = next(delays)
            on_failure(exc, delay)
            if stop.wait(delay):
                raise Interrupted(f"stopped after {failures} failed attempts: {exc}") from exc
            continue
        on_success(failures)
        return result
