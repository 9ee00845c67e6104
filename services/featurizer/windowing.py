"""Pure window bookkeeping for one partition in one role: which flows are fresh, replayed, late or
unreadable, which host windows they join, which windows emit early and which close. No Kafka, no Redis:
the state lives in memory, `apply` returns what a batch changed, and the store checkpoints exactly that.

Processing a batch gives exactly what processing its flows one at a time would: a flow is late when
the partition's watermark (latest flow start seen) had already passed its window's deadline when it
arrived; windows close once the watermark passes their deadline (end + allowed lateness).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from services.common import serde
from training.flowcheck import flow_problem
from training.windows import HOST_FIELD, host_window, window_start

Flow = dict[str, Any]
Event = tuple[int, bytes | None, bytes | None]  # offset, value, key of one consumed message


@dataclass(frozen=True)
class WindowKey:
    host: str
    start: float

    def member(self) -> str:
        return f"{self.host}|{self.start!r}"

    @classmethod
    def parse(cls, member: str | bytes) -> WindowKey:
        text = member.decode() if isinstance(member, bytes) else member
        host, start = text.rsplit("|", 1)
        return cls(host, float(start))


@dataclass
class Rejected:
    offset: int
    value: bytes | None
    reason: str
    kind: str  # late, undecodable or invalid: the counter it goes to


@dataclass
class EarlyState:
    """When an open window was last emitted early: its flow count then, and the event time."""

    count: int
    at: float

    def encode(self) -> str:
        return f"{self.count}|{self.at!r}"

    @classmethod
    def decode(cls, raw: bytes | str | None, window_start: float) -> EarlyState:
        if raw is None:
            return cls(0, window_start)
        text = raw.decode() if isinstance(raw, bytes) else raw
        count, at = text.split("|")
        return cls(int(count), float(at))


def early_emissions(
    stored: int,
    appended: list[Flow],
    state: EarlyState,
    min_flows: int,
    every_seconds: float,
    tick_min_flows: int = 1,
) -> tuple[list[int], EarlyState]:
    """Flow counts at which an open window is emitted before it closes, so a fast attack is scored early:
    when it holds at least `min_flows` and has doubled since its last early emission (N, 2N, 4N...: a
    flood costs O(n log n), not O(n^2)), or when `every_seconds` of event time passed since the last one
    and it holds at least `tick_min_flows` (a host's one or two flows are most windows, and can wait for
    the close). Decided flow by flow, so the emissions do not depend on how flows were batched."""
    points = []
    for i, flow in enumerate(appended, 1):
        count = stored + i
        by_count = min_flows > 0 and count >= max(min_flows, 2 * state.count)
        by_time = every_seconds > 0 and count >= tick_min_flows and flow["first_seen"] - state.at >= every_seconds
        if by_count or by_time:
            points.append(count)
            state = EarlyState(count, flow["first_seen"])
    return points, state


@dataclass
class OpenWindow:
    deadline: float
    flows: list[Flow] = field(default_factory=list)
    early: EarlyState = field(default_factory=lambda: EarlyState(0, 0.0))


@dataclass(frozen=True)
class WindowRules:
    window_seconds: float
    lateness: float
    early_flows: int
    early_seconds: float
    future_tolerance: float = 3600.0
    early_tick_min_flows: int = 1


@dataclass
class BatchOutcome:
    """What one batch did: the records to publish and the state changes to checkpoint."""

    windows: list[dict[str, Any]] = field(default_factory=list)  # HostWindow records: early ones, then closed
    rejected: list[Rejected] = field(default_factory=list)
    appended: dict[WindowKey, list[bytes]] = field(default_factory=lambda: defaultdict(list))
    opened: dict[WindowKey, float] = field(default_factory=dict)  # new open windows -> deadline
    early_states: dict[WindowKey, EarlyState] = field(default_factory=dict)
    closed: list[WindowKey] = field(default_factory=list)
    duplicates: int = 0
    early: int = 0

    @property
    def accepted(self) -> int:
        return sum(len(v) for v in self.appended.values())

    def count(self, kind: str) -> int:
        return sum(1 for r in self.rejected if r.kind == kind)


@dataclass
class PartitionWindows:
    """One partition's open windows in one role, and how far it has read."""

    role: str
    rules: WindowRules
    hwm: int = -1  # last applied offset of this partition
    watermark: float = float("-inf")
    open: dict[WindowKey, OpenWindow] = field(default_factory=dict)

    def apply(self, events: list[Event], now: float, idle: bool = False) -> BatchOutcome:
        """Apply a batch (offset order) at wall-clock time `now`; with idle (the partition got nothing for a
        while), also close what its silence ends (see _closing). Mutates the state; the outcome says what
        changed."""
        out = BatchOutcome()
        fresh: dict[WindowKey, list[Flow]] = defaultdict(list)
        for offset, value, message_key in events:
            if offset <= self.hwm:  # applied before a crash or rebalance: count it once only
                out.duplicates += 1
                continue
            self.hwm = offset
            admitted = self._admit(offset, value, message_key, now, out)
            if admitted is None:
                continue
            flow, key, deadline = admitted
            if key not in self.open:
                self.open[key] = OpenWindow(deadline, early=EarlyState(0, key.start))
                out.opened[key] = deadline
            fresh[key].append(flow)
            out.appended[key].append(value or b"")
            self.watermark = max(self.watermark, flow["first_seen"])

        for key, flows in fresh.items():  # early emissions are decided flow by flow: batching does not matter
            window = self.open[key]
            stored = len(window.flows)
            window.flows.extend(flows)
            self._emit_early(key, window, stored, flows, now, out)
        for key in sorted(self._closing(idle, now), key=lambda k: (k.start, k.host)):
            window = self.open.pop(key)
            out.windows.append(self._record(key, window.flows, True, now))
            out.closed.append(key)
        return out

    def _admit(
        self, offset: int, value: bytes | None, message_key: bytes | None, now: float, out: BatchOutcome
    ) -> tuple[Flow, WindowKey, float] | None:
        """The decoded flow, its window and the window's deadline, or None with the reason recorded."""
        try:
            flow = serde.decode_as(value, "Flow")
        except serde.DecodeError as exc:
            out.rejected.append(Rejected(offset, value, str(exc), "undecodable"))
            return None
        problem = flow_problem(flow, now, self.rules.future_tolerance)
        host = flow[HOST_FIELD[self.role]]
        if problem is None and message_key != host.encode():
            # another partition may hold the host's other flows: counting this one would split its window
            problem = f"misrouted: keyed {message_key!r}, but its {self.role} host is {host!r}"
        if problem:
            out.rejected.append(Rejected(offset, value, problem, "invalid"))
            return None
        start = window_start(flow["first_seen"], self.rules.window_seconds)
        deadline = start + self.rules.window_seconds + self.rules.lateness
        if deadline <= self.watermark:
            reason = (
                f"late ({self.role} window): window {start} closed at watermark {self.watermark} "
                f"(lateness {self.rules.lateness}s)"
            )
            out.rejected.append(Rejected(offset, value, reason, "late"))
            return None
        return flow, WindowKey(host, start), deadline

    def _closing(self, idle: bool, now: float) -> set[WindowKey]:
        """The windows the watermark has passed. An idle partition's silence moves it on: flows from the
        past (a replay) that stopped are over, so every window closes (and later flows for them are late,
        not a second copy); live flows that paused let event time go on with the clock, so a window still
        closes at its deadline and a host's next flow in it is not late."""
        if idle and self.open:
            if self.watermark < now - self.rules.window_seconds - self.rules.lateness:
                self.watermark = max(self.watermark, max(w.deadline for w in self.open.values()))
            else:
                self.watermark = max(self.watermark, now)
        return {k for k, w in self.open.items() if w.deadline <= self.watermark}

    def _emit_early(
        self, key: WindowKey, window: OpenWindow, stored: int, flows: list[Flow], now: float, out: BatchOutcome
    ) -> None:
        rules = self.rules
        points, window.early = early_emissions(
            stored, flows, window.early, rules.early_flows, rules.early_seconds, rules.early_tick_min_flows
        )
        if not points:
            return
        for count in points:
            record = self._record(key, window.flows[:count], False, now)
            record["window_id"] += f"#{count}"
            out.windows.append(record)
        out.early += len(points)
        out.early_states[key] = window.early

    def _record(self, key: WindowKey, flows: list[Flow], final: bool, now: float) -> dict[str, Any]:
        return host_window(key.host, self.role, key.start, self.rules.window_seconds, flows, final, now)
