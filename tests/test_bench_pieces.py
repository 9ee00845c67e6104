"""Pure pieces of bench/pipeline_bench.py: episode cutting and renaming, profile reduction. No broker."""

from __future__ import annotations

from bench.episodes import Episode, busiest, injection
from bench.profiling import hot_spots


def flow(t: float, src: str = "10.0.0.1", dst: str = "10.0.0.2") -> dict:
    return {"first_seen": t, "last_seen": t + 1.0, "src_addr": src, "dst_addr": dst, "label": None}


def test_busiest_picks_the_densest_stretch() -> None:
    flows = [flow(t) for t in (0, 50, 100, 101, 102, 103, 200)]
    assert [f["first_seen"] for f in busiest(flows, seconds=5)] == [100, 101, 102, 103]
    assert busiest([flow(7)], seconds=5) == [flow(7)]


def test_injection_renames_every_address_per_injection_and_moves_time() -> None:
    ep = Episode("scan", "x.log", [flow(10, "a", "v"), flow(12, "a", "w"), flow(13, "b", "v")])
    first, hosts_0 = injection(ep, 0, 1000.0)
    second, hosts_1 = injection(ep, 1, 1000.0)
    # the sources and the targets: windows are per source and per destination host
    assert hosts_0 == {first[i][field] for i in range(3) for field in ("src_addr", "dst_addr")}
    assert len(hosts_0) == 4
    assert hosts_0.isdisjoint(hosts_1)  # every injection is new hosts, a new incident
    assert first[0]["src_addr"] == first[1]["src_addr"] != first[2]["src_addr"]  # one address, one name
    assert first[0]["dst_addr"] == first[2]["dst_addr"] != first[1]["dst_addr"]
    assert all(f["src_addr"].startswith("10.100.") for f in first)
    assert [f["first_seen"] for f in first] == [1000.0, 1002.0, 1003.0]
    assert all(f["label"] == "malicious" and f["attack_type"] == "scan" for f in first + second)
    assert ep.flows[0]["src_addr"] == "a"  # the episode itself is reused unchanged


def test_hot_spots_count_own_time_by_package_and_our_functions_inclusively() -> None:
    collapsed = "\n".join(
        [
            'process 1:"python";main (/x/services/cli.py:4);run (/x/site-packages/faust/a.py:9) 6',
            'process 1:"python";main (/x/services/cli.py:5);enc (/x/services/common/serde.py:61) 3',
            "main (/x/services/cli.py:4);select (/usr/lib/python3.11/selectors.py:1) 1",
            "garbage line",
        ]
    )
    samples, packages, own, ours = hot_spots(collapsed.replace("/x/", "/work/main/"))
    assert samples == 10
    assert packages[:3] == [("faust", 0.6), ("services/common/serde.py", 0.3), ("selectors", 0.1)]
    assert own[0] == ("run (faust/a.py)", 0.6)
    assert ours[0] == ("main (services/cli.py)", 1.0)  # lines of one function merge


def test_floods_come_last_and_never_overlap_another_injection() -> None:
    from bench.pipeline_bench import injection_starts

    scan = Episode("scan", "s", [flow(0), flow(30)])
    flood = Episode("flood", "f", [flow(0), flow(20)])
    plan = [(at, ep.name) for at, ep in injection_starts([flood, scan], rounds=2, gap=4.0)]
    assert plan == [(0.0, "scan"), (4.0, "scan"), (38.0, "flood"), (62.0, "flood")]
