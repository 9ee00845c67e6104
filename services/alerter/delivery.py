"""Delivery: each sink drains its own spool in its own thread, retrying with exponential backoff and
dead-lettering an alert after the attempt limit, so one sink that is down never holds up the others."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from services.alerter.sinks import Sink
from services.alerter.spool import Spool
from services.common.metrics import ALERTS_SENT, SINK_ERRORS

logger = logging.getLogger("alerter.delivery")

DeadLetter = Callable[[str, dict[str, Any], str], None]  # (sink name, alert, reason)


@dataclass(frozen=True)
class RetryPolicy:
    base_s: float
    max_s: float
    max_attempts: int

    def delay(self, attempt: int) -> float:
        """Wait before retry number `attempt` (1 = the first retry): base * 2^(attempt-1), capped."""
        return min(self.max_s, self.base_s * 2 ** max(0, attempt - 1))

    def schedule(self) -> list[float]:
        """Every wait an alert goes through before it is dead-lettered."""
        return [self.delay(n) for n in range(1, self.max_attempts)]


class SinkWorker:
    def __init__(
        self, sink: Sink, spool: Spool, policy: RetryPolicy, dead_letter: DeadLetter, batch: int = 200
    ) -> None:
        self.sink, self.spool, self.policy, self.dead_letter, self.batch = sink, spool, policy, dead_letter, batch
        self.healthy = True  # the last attempt succeeded (or none failed yet)
        self.wake = threading.Event()
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, name=f"sink-{sink.name}", daemon=True)

    def start(self) -> SinkWorker:
        self.thread.start()
        return self

    def enqueue(self, alerts: list[dict[str, Any]]) -> None:
        """Queue durably (returns once on disk); alerts evicted by the bound are dead-lettered."""
        for alert in self.spool.put(alerts):
            self.dead_letter(self.sink.name, alert, f"queue full ({self.spool.max_entries} alerts)")
        self.wake.set()

    def wait_idle(self, timeout: float) -> bool:
        """Wait until the spool is empty, unless the sink is failing (then it is not worth waiting)."""
        deadline = time.monotonic() + timeout
        while len(self.spool) and self.healthy and time.monotonic() < deadline:
            time.sleep(0.005)
        return not len(self.spool)

    def stop(self, timeout: float = 10.0) -> None:
        self.stopping.set()
        self.wake.set()
        self.thread.join(timeout)

    def _run(self) -> None:
        while not self.stopping.is_set():
            entries = self.spool.due(self.batch, time.time())
            if not entries:
                nxt = self.spool.next_due()
                self.wake.wait(0.5 if nxt is None else min(0.5, max(0.0, nxt - time.time())))
                self.wake.clear()
                continue
            self._attempt(entries)

    def _attempt(self, entries: list[Any]) -> None:
        name = self.sink.name
        try:
            self.sink.send([e.alert for e in entries])
        except Exception as exc:  # noqa: BLE001 - any sink failure is retried; it must not end the thread
            self.healthy = False
            SINK_ERRORS.labels(name).inc()
            reason = f"{type(exc).__name__}: {exc}"
            dead = [e for e in entries if e.attempts + 1 >= self.policy.max_attempts]
            alive = [e for e in entries if e.attempts + 1 < self.policy.max_attempts]
            for e in dead:
                self.dead_letter(name, e.alert, f"{self.policy.max_attempts} attempts failed; last: {reason}")
            self.spool.remove([e.seq for e in dead])
            if alive:
                wait = self.policy.delay(alive[0].attempts + 1)
                self.spool.retry_later([e.seq for e in alive], time.time() + wait, reason)
                logger.warning("sink %s failed (%s); %d alert(s) retried in %.1fs", name, reason, len(alive), wait)
            return
        self.spool.remove([e.seq for e in entries])
        ALERTS_SENT.labels(name).inc(len(entries))
        if not self.healthy:
            logger.info("sink %s recovered", name)
        self.healthy = True
