"""The measured section of docs/benchmarks.md, rendered from bench/results.json (pipeline_bench)."""

from __future__ import annotations

import math
from typing import Any

SERVICES = ("featurizer", "scorer", "alerter")


def _f(x: float | None, fmt: str = ",.0f") -> str:
    return "n/a" if x is None else format(x, fmt)


def cluster(res: dict[str, Any], target: int) -> str:
    """Cores and featurizer workers for `target` flows/s, scaled linearly from this run's CPU seconds per
    flow (contention on this machine does not change what a flow costs much; it changes how many of those
    seconds a process gets). A featurizer worker is one process: one core at most."""
    cpu = res["pipeline_drain"]["cpu_s_per_1k_flows"]
    per_flow = {s: cpu.get(s, 0.0) / 1000 for s in (*SERVICES, "broker (Tansu)")}
    workers = math.ceil(target * per_flow["featurizer"])
    cores = math.ceil(target * sum(per_flow[s] for s in SERVICES))
    return (
        f"| {target:,} | {cores:,} | {workers:,} | {workers * 2:,} "
        f"| {math.ceil(target * per_flow['broker (Tansu)']):,} |"
    )


def render(res: dict[str, Any], aim_rate: int, aim_p99: float) -> str:
    m, raw, drain = res["machine"], res["raw_baseline"], res["pipeline_drain"]
    sustained = res["sustained"]["sustained_flows_per_s"]
    tta = res.get("time_to_alert")
    lat = (tta or {}).get("latency_s", {})
    lines = [
        f"Measured {res['date']} on {m['cores']} cores ({m['cpu']}), {m['memory_mb']:,} MB, Linux {m['kernel']}; "
        f"load average (1/5/15 min) {'/'.join(map(str, res['load_average_at_start']))} at the start, "
        f"{'/'.join(map(str, res.get('load_average_at_end', ['?'])))} at the end. "
        f"Embedded stack: one Tansu broker (in-memory), 4 partitions per topic. `make bench` regenerates this section.",
        "",
        "| measure | (a) raw Kafka copy | (b) FlowSentinel pipeline |",
        "|---|---|---|",
        f"| drain throughput, {drain['flows']:,} preloaded flows (upper bound) | {_f(raw['flows_per_s'])} flows/s "
        f"| {_f(drain['featurizer_flows_per_s'])} flows/s through the featurizer "
        f"({_f(drain['end_to_end_flows_per_s'])}/s until the last anomaly reached the alerter) |",
        f"| ratio (b)/(a) | 1 | {res['ratio_to_raw']:.3f} |",
        f"| sustained, lag bounded (rate ramp) | not ramped | {_f(sustained)} flows/s |",
        f"| flow-to-alert latency p50 / p95 / p99 (n={lat.get('n', 0)}) | - "
        f"| {_f(lat.get('p50'), '.2f')} / {_f(lat.get('p95'), '.2f')} / {_f(lat.get('p99'), '.2f')} s |",
        f"| CPU s per 1,000 flows | {raw['cpu_s_per_1k_flows']:.3f} | "
        + ", ".join(f"{k} {v:.3f}" for k, v in drain["cpu_s_per_1k_flows"].items())
        + " |",
        f"| peak RSS (VmHWM) | {raw['peak_rss_mb']:.0f} MB | "
        + ", ".join(f"{k} {v:.0f} MB" for k, v in res["peak_rss_mb"].items())
        + " |",
        "",
        f"Aim: {aim_rate:,} flows/s sustained with p99 under {aim_p99:g} s. "
        + (
            "Met."
            if sustained >= aim_rate and lat.get("p99") is not None and lat["p99"] < aim_p99
            else f"Not met: sustained {_f(sustained)} flows/s is {sustained / aim_rate:.0%} of the aim"
            + (f"; p99 {lat['p99']:.2f} s." if lat.get("p99") is not None else ".")
        ),
        "",
        "Rate ramp (`flowsentinel replay --rate R --duration D`, featurizer lag = flows published - flows accounted):",
        "",
        "| offered flows/s | achieved | lag growth (flows/s) | max lag | sustained |",
        "|---|---|---|---|---|",
    ]
    lines += [
        f"| {s['target']:,.0f} | {s['achieved']:,.0f} | {s['lag_growth_per_s']:,.0f} | {s['max_lag']:,} "
        f"| {'yes' if s['sustained'] else 'no'} |"
        for s in res["sustained"]["steps"]
    ]
    lines += [""]
    if tta:
        lines += [
            f"Time-to-alert under {tta['background_flows_per_s']:,.0f} flows/s of background load; "
            f"{tta['missed']} of {len(tta['injections'])} injections raised no alert within 60 s:",
            "",
            "| episode | from | injected | alerted | p50 s | p95 s | p99 s |",
            "|---|---|---|---|---|---|---|",
        ]
        lines += [
            f"| {name} | {e['source']} | {e['injected']} | {e['n']} | {_f(e['p50'], '.2f')} | {_f(e['p95'], '.2f')} "
            f"| {_f(e['p99'], '.2f')} |"
            for name, e in tta["per_episode"].items()
        ]
    else:
        lines += ["Time-to-alert: not measured (../shared/data with the attack captures is absent)."]
    lines += ["", "Hot spots (py-spy, share of the samples in which the service was busy; bench/profiles/):", ""]
    for name, spots in drain["hot_spots"].items():
        lines.append(f"- {name}: " + "; ".join(f"`{f}` {s:.0%}" for f, s in spots[:3]))
    workers = res.get("featurizer_workers")
    if workers:
        one, two = workers.get("1"), workers.get("2")
        lines += [
            "",
            f"Featurizer alone, {drain['flows'] // 2:,} preloaded flows: 1 worker {_f(one)} flows/s, "
            f"2 workers {_f(two)} flows/s"
            + (f" (x{two / one:.2f} on {m['cores']} cores, 4 partitions)." if one and two else "."),
        ]
    lines += [
        "",
        "Linear projection from this run's CPU seconds per flow (featurizer+scorer+alerter; a featurizer worker is "
        "one process, at most one core; two partitions per worker leave room to rebalance):",
        "",
        "| flows/s | service cores | featurizer workers | partitions of `flows` | broker cores (Tansu, as measured) |",
        "|---|---|---|---|---|",
        cluster(res, 100_000),
        cluster(res, 1_000_000),
    ]
    return "\n".join(lines)
