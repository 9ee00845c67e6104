"""The featurizer's window bookkeeping, without Kafka or Redis, on real flows."""

from services.common import serde
from services.featurizer.windowing import EarlyState, WindowKey, closing_in_batch, early_emissions, plan_batch
from tests.paths import SAMPLE
from training.datasets import load_flows
from training.windows import build_windows, window_start

W, LATE = 60.0, 30.0


def real_events(name: str = "CTU-Honeypot-Capture-4-1-labeled.csv.gz") -> tuple[list, list]:
    flows, _ = load_flows([SAMPLE / name])
    return flows, [(i, serde.encode("Flow", f)) for i, f in enumerate(flows)]


def test_batches_equal_one_at_a_time() -> None:
    _, events = real_events()
    whole = plan_batch(events, -1, float("-inf"), W, LATE)
    hwm, wm, appended = -1, float("-inf"), 0
    for i in range(0, len(events), 7):
        part = plan_batch(events[i : i + 7], hwm, wm, W, LATE)
        hwm, wm, appended = part.hwm, part.watermark, appended + part.accepted
    assert (whole.hwm, whole.watermark, whole.accepted) == (hwm, wm, appended) == (len(events) - 1, wm, len(events))


def test_replayed_offsets_are_skipped() -> None:
    _, events = real_events()
    first = plan_batch(events[:100], -1, float("-inf"), W, LATE)
    again = plan_batch(events[50:150], first.hwm, first.watermark, W, LATE)
    assert again.duplicates == 50
    assert again.accepted == 50


def test_late_and_undecodable_are_rejected_with_reasons() -> None:
    flows, events = real_events()
    old = dict(flows[0], first_seen=flows[0]["first_seen"] - 3600)
    batch = [*events[:50], (50, serde.encode("Flow", old)), (51, b"garbage"), (52, None)]
    plan = plan_batch(batch, -1, float("-inf"), W, LATE)
    assert [r.offset for r in plan.late] == [50]
    assert "late: window" in plan.late[0].reason
    assert [r.offset for r in plan.undecodable] == [51, 52]
    assert plan.accepted == 50 and plan.hwm == 52


def test_windows_close_once_the_watermark_passes_their_deadline() -> None:
    flows, events = real_events()
    plan = plan_batch(events, -1, float("-inf"), W, LATE)
    closed = set(closing_in_batch(plan))
    expected_open = {k for k, d in plan.deadlines.items() if d > plan.watermark}
    assert closed and expected_open and closed.isdisjoint(expected_open)
    offline = {(w["host"], w["window_start"]) for w in build_windows(flows, W)}
    assert {(k.host, k.start) for k in closed | expected_open} == offline
    last = flows[-1]
    assert WindowKey(last["src_addr"], window_start(last["first_seen"], W)) in expected_open


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


def test_early_state_round_trips() -> None:
    assert EarlyState.decode(EarlyState(12, 1533042911.25).encode().encode(), 0.0) == EarlyState(12, 1533042911.25)
