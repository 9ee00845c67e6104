"""Impossible values are rejected with a reason wherever flows enter: dataset readers, the featurizer."""

import gzip
import math

import numpy as np
import pytest

from services.collector.replay import parse_speed
from services.common import serde
from services.featurizer.windowing import PartitionWindows, WindowRules
from tests.paths import SAMPLE
from training.datasets import UnusableFileError, load_flows
from training.flowcheck import flow_problem

REAL = SAMPLE / "CTU-Honeypot-Capture-7-1-labeled.csv.gz"


def real_flow() -> dict:
    return load_flows([REAL])[0][0]


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"first_seen": math.nan}, "invalid first_seen"),
        ({"last_seen": math.inf}, "invalid last_seen"),
        ({"dst_port": 70000}, "invalid dst_port"),
        ({"packets": -1}, "invalid packets"),
        ({"bytes": 2**63}, "invalid bytes"),
        ({"src_addr": "not-an-ip"}, "invalid src_addr"),
        ({"dst_addr": "1" * 65}, "invalid dst_addr"),
        ({"attack_type": "x" * 300}, "invalid attack_type"),
    ],
)
def test_impossible_values_are_named(change: dict, reason: str) -> None:
    assert reason in flow_problem({**real_flow(), **change}, check_addresses=True)


def test_a_real_flow_passes_and_a_future_one_does_not() -> None:
    flow = real_flow()
    assert flow_problem(flow, now=flow["first_seen"], check_addresses=True) is None
    assert "from the future" in flow_problem(flow, now=flow["first_seen"] - 7200, future_tolerance=3600)


def test_readers_drop_bad_rows_and_keep_the_rest(tmp_path) -> None:
    lines = gzip.decompress(REAL.read_bytes()).decode().splitlines()
    header, good = lines[0], lines[1:6]
    cols = header.split(",")
    bad = []
    for col, value in (("ts", "nan"), ("orig_pkts", str(2**64)), ("id.resp_p", "99999"), ("id.orig_h", "x.y")):
        row = good[0].split(",")
        row[cols.index(col)] = value
        bad.append(",".join(row))
    path = tmp_path / "mixed.csv"
    path.write_text("\n".join([header, *good, *bad]) + "\n")
    flows, stats = load_flows([path])
    assert len(flows) == stats.flows == 5
    assert sum(stats.dropped.values()) == 4


def test_a_corrupt_gzip_is_a_clear_error(tmp_path) -> None:
    cut = tmp_path / "cut.csv.gz"
    cut.write_bytes(REAL.read_bytes()[:2000])
    with pytest.raises(UnusableFileError, match="unreadable after"):
        load_flows([cut])


def test_nan_and_future_flows_never_move_the_watermark() -> None:
    flow = real_flow()
    key = flow["src_addr"].encode()
    events = [
        (0, serde.encode("Flow", flow), key),
        (1, serde.encode("Flow", {**flow, "first_seen": math.nan}), key),
        (2, serde.encode("Flow", {**flow, "first_seen": 4_000_000_000.0, "last_seen": 4_000_000_001.0}), key),
    ]
    state = PartitionWindows("src", WindowRules(60, 30, 50, 20, future_tolerance=3600))
    out = state.apply(events, now=flow["first_seen"])
    assert out.accepted == 1 and [(r.offset, r.kind) for r in out.rejected] == [(1, "invalid"), (2, "invalid")]
    assert state.watermark == flow["first_seen"] and state.hwm == 2


@pytest.mark.parametrize("name", ["bytes", "first_seen"])
def test_numpy_numbers_from_a_reader_are_numbers(name: str) -> None:
    flow = real_flow()
    assert flow_problem({**flow, name: np.int64(5)}) is None
    assert "invalid" in flow_problem({**flow, name: np.float64("nan")})


@pytest.mark.parametrize("text", ["0", "-1", "abc", "nan", "inf", "1e-300"])
def test_speed_must_be_a_sane_multiple(text: str) -> None:
    with pytest.raises(ValueError, match="--speed"):
        parse_speed(text)
