"""The featurizer's window bookkeeping, without Kafka or Redis, on real flows, in both roles."""

import pytest

from services.common import serde
from services.featurizer.windowing import EarlyState, PartitionWindows, WindowKey, WindowRules, early_emissions
from tests.paths import SAMPLE
from training.datasets import load_flows
from training.windows import HOST_FIELD, build_windows, window_start

W, LATE = 60.0, 30.0
RULES = WindowRules(W, LATE, early_flows=50, early_seconds=20.0, future_tolerance=1e12)
NOW = 2e9


def real_events(name: str = "CTU-Honeypot-Capture-4-1-labeled.csv.gz", role: str = "src") -> tuple[list, list]:
    """The flows, and the messages the collector publishes for them on the role's topic (keyed by host)."""
    flows, _ = load_flows([SAMPLE / name])
    return flows, [(i, serde.encode("Flow", f), f[HOST_FIELD[role]].encode()) for i, f in enumerate(flows)]


def run(role: str, events: list, size: int) -> tuple[PartitionWindows, list[dict], int]:
    """Apply events in batches of `size`, then close what is left, as an idle partition would."""
    state, windows, accepted = PartitionWindows(role, RULES), [], 0
    for i in range(0, len(events), size):
        out = state.apply(events[i : i + size], NOW)
        windows += out.windows
        accepted += out.accepted
    windows += state.apply([], NOW, idle=True).windows
    return state, windows, accepted


@pytest.mark.parametrize("role", ["src", "dst"])
def test_streamed_windows_equal_the_training_windows_however_batched(role: str) -> None:
    flows, events = real_events("CTU-Malware-Capture-8-1-labeled.csv.gz", role)
    offline = {w["window_id"]: w for w in build_windows(flows, W, role)}
    results = [run(role, events, size) for size in (7, 1000, len(events))]
    for state, windows, accepted in results:
        closed = {w["window_id"]: w for w in windows if w["final"]}
        assert accepted == len(flows) and not state.open and state.hwm == len(events) - 1
        assert closed.keys() == offline.keys()
        assert all(closed[k]["features"] == offline[k]["features"] for k in offline)
    early = [sorted(w["window_id"] for w in windows if not w["final"]) for _, windows, _ in results]
    assert early[0] and early[0] == early[1] == early[2], "early emissions do not depend on batching"


def test_dst_windows_are_the_flows_a_host_received() -> None:
    flows, events = real_events("CTU-Malware-Capture-8-1-labeled.csv.gz", "dst")
    _, windows, _ = run("dst", events, 500)
    busiest = max((w for w in windows if w["final"]), key=lambda w: w["flow_count"])
    received = [
        f
        for f in flows
        if f["dst_addr"] == busiest["host"] and window_start(f["first_seen"], W) == busiest["window_start"]
    ]
    assert busiest["role"] == "dst" and busiest["window_id"].startswith("dst|")
    assert busiest["flow_count"] == len(received)
    assert busiest["features"][1] == sum(f["bytes_rev"] for f in received), "bytes_out: what the host sent back"
    assert busiest["features"][9] == len({f["src_addr"] for f in received}), "peers: the hosts that contacted it"


def test_replayed_offsets_are_skipped() -> None:
    _, events = real_events()
    state = PartitionWindows("src", RULES)
    state.apply(events[:100], NOW)
    again = state.apply(events[50:150], NOW)
    assert again.duplicates == 50
    assert again.accepted == 50


def test_late_undecodable_and_invalid_are_rejected_with_reasons() -> None:
    flows, events = real_events()
    old = dict(flows[0], first_seen=flows[0]["first_seen"] - 3600)
    nan = dict(flows[1], bytes=-5)
    key = flows[0]["src_addr"].encode()
    batch = [
        *events[:50],
        (50, serde.encode("Flow", old), key),
        (51, b"garbage", key),
        (52, None, key),
        (53, serde.encode("Flow", nan), key),
        (54, serde.encode("Flow", flows[0]), b"another-host"),
        (55, serde.encode("Flow", flows[0]), None),
    ]
    state = PartitionWindows("src", RULES)
    out = state.apply(batch, NOW)
    assert [(r.offset, r.kind) for r in out.rejected] == [
        (50, "late"),
        (51, "undecodable"),
        (52, "undecodable"),
        (53, "invalid"),
        (54, "invalid"),
        (55, "invalid"),
    ]
    assert "misrouted: keyed b'another-host'" in out.rejected[4].reason
    assert "late (src window): window" in out.rejected[0].reason
    assert out.accepted == 50 and state.hwm == 55
    assert (out.count("late"), out.count("undecodable"), out.count("invalid")) == (1, 2, 3)


@pytest.mark.parametrize("role", ["src", "dst"])
def test_windows_close_once_the_watermark_passes_their_deadline(role: str) -> None:
    flows, events = real_events(role=role)
    state = PartitionWindows(role, RULES)
    out = state.apply(events, NOW)
    closed = set(out.closed)
    assert closed and state.open and closed.isdisjoint(state.open)
    assert all(w.deadline > state.watermark for w in state.open.values())
    offline = {(w["host"], w["window_start"]) for w in build_windows(flows, W, role)}
    assert {(k.host, k.start) for k in closed | set(state.open)} == offline
    last = flows[-1]
    assert WindowKey(last[HOST_FIELD[role]], window_start(last["first_seen"], W)) in state.open
    assert set(out.opened) == closed | set(state.open)


def test_an_idle_live_partition_keeps_its_windows_open_until_their_deadline() -> None:
    """Live flows that pause (a quiet host) are not the end of a replay: the window stays open for the
    host's next flow, and closes once the clock passes its deadline."""
    flows, events = real_events()
    first = flows[0]["first_seen"]
    state = PartitionWindows("src", RULES)
    state.apply(events[:1], now=first + 5)
    assert not state.apply([], now=first + 10, idle=True).closed
    later = state.apply(events[1:2], now=first + 15)
    assert not later.rejected, "the host's next flow is not late"
    deadline = max(w.deadline for w in state.open.values())
    assert state.apply([], now=deadline + 1, idle=True).closed


def test_an_idle_replayed_partition_closes_everything() -> None:
    _, events = real_events()
    state = PartitionWindows("src", RULES)
    state.apply(events[:100], NOW)
    closed = state.apply([], NOW, idle=True).closed
    assert closed and not state.open


def test_window_key_round_trips_ipv6() -> None:
    key = WindowKey("2001:db8::1", 1533042900.0)
    assert WindowKey.parse(key.member().encode()) == key


def test_early_emissions_double_and_tick_in_event_time() -> None:
    flows, _ = real_events("CTU-Malware-Capture-8-1-labeled.csv.gz")
    # A dense real minute: the busiest host window of the capture.
    windows = build_windows(flows, W)
    busiest = max(windows, key=lambda w: w["flow_count"])
    in_window = [f for f in flows if window_start(f["first_seen"], W) == busiest["window_start"]]
    start = EarlyState.decode(None, busiest["window_start"])
    points, state = early_emissions(0, in_window, start, min_flows=5, every_seconds=0)
    expected = [n for n in (5, 10, 20, 40, 80, 160) if n <= len(in_window)]
    assert points == expected and state.count == expected[-1]
    # Split across batches (stored + appended), the same counts come out.
    first, state1 = early_emissions(0, in_window[:7], start, 5, 0)
    rest, _ = early_emissions(7, in_window[7:], state1, 5, 0)
    assert first + rest == points
    # By event time alone: one emission per 20 s tick that saw a flow.
    ticks, _ = early_emissions(0, in_window, start, min_flows=0, every_seconds=20)
    assert 1 <= len(ticks) <= 3
    # ...but only for windows that hold enough flows: a tick waits for the floor, then fires at once.
    floored, _ = early_emissions(0, in_window, start, min_flows=0, every_seconds=20, tick_min_flows=ticks[0] + 1)
    assert floored and floored[0] == ticks[0] + 1
    assert early_emissions(0, in_window, start, 0, 20, tick_min_flows=len(in_window) + 1)[0] == []


def test_early_state_round_trips() -> None:
    assert EarlyState.decode(EarlyState(12, 1533042911.25).encode().encode(), 0.0) == EarlyState(12, 1533042911.25)
