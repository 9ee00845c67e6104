"""The featurizer's checkpoint against a real Redis: a partition reloaded from its last checkpoint carries
on exactly as the worker that wrote it would have, early emissions included, in both roles."""

import pytest
import redis

from services.common import serde
from services.common.redis_client import sync_redis
from services.common.settings import Settings
from services.featurizer.store import WindowStore, pack_flows, unpack_flows
from tests.paths import SAMPLE
from training.datasets import load_flows
from training.windows import HOST_FIELD

CAPTURE = SAMPLE / "CTU-Malware-Capture-34-1-labeled.csv.gz"  # a DDoS: windows of thousands of flows
NOW = 2e9


def test_packed_flows_round_trip() -> None:
    raws = [b"", b"\x00" * 300, b"flow"]
    assert list(unpack_flows(pack_flows(raws))) == raws


@pytest.mark.parametrize("role", ["src", "dst"])
def test_a_reloaded_partition_continues_as_the_one_that_wrote_it(settings: Settings, role: str) -> None:
    flows, _ = load_flows([CAPTURE])
    events = [(i, serde.encode("Flow", f), f[HOST_FIELD[role]].encode()) for i, f in enumerate(flows)]
    store = WindowStore(sync_redis(settings), settings)
    uninterrupted = settings.model_copy(update={"namespace": settings.namespace + "whole-"})
    whole = WindowStore(sync_redis(uninterrupted), uninterrupted)

    def emitted(store: WindowStore, batches: list[list], reload: bool) -> list[dict]:
        out, state = [], store.load(role, 0)
        for batch in batches:
            if reload:  # a new worker takes the partition over after every batch
                state = store.load(role, 0)
            base = state.hwm
            result = state.apply(batch, NOW)
            store.checkpoint(state, 0, result, base)
            out += result.windows
        base = state.hwm
        result = state.apply([], NOW, idle=True)
        store.checkpoint(state, 0, result, base)
        return out + result.windows

    batches = [events[i : i + 2000] for i in range(0, len(events), 2000)]
    reloaded = emitted(store, batches, reload=True)
    straight = emitted(whole, batches, reload=False)
    key = [(w["window_id"], w["final"], w["flow_count"], w["features"]) for w in reloaded]
    assert key == [(w["window_id"], w["final"], w["flow_count"], w["features"]) for w in straight]
    assert any(not w["final"] for w in reloaded) and any(w["final"] for w in reloaded)
    assert store.open_windows(role, 0) == 0
    r = sync_redis(settings)
    assert not list(r.scan_iter(match=f"{settings.namespace}fs:feat:{role}:flows:*")), "closed windows' flows freed"
    r.delete(*r.keys(f"{uninterrupted.namespace}fs:*"))


def test_a_worker_that_lost_its_partition_cannot_overwrite_the_successor(settings: Settings) -> None:
    flows, _ = load_flows([CAPTURE])
    events = [(i, serde.encode("Flow", f), f["src_addr"].encode()) for i, f in enumerate(flows[:600])]
    store = WindowStore(sync_redis(settings), settings)
    stale = store.load("src", 0)
    stale.apply(events[:300], NOW)  # a worker paused (GC, SIGSTOP) before its checkpoint...
    successor = store.load("src", 0)
    store.checkpoint(successor, 0, successor.apply(events, NOW), -1)  # ...meanwhile another took over
    with pytest.raises(redis.WatchError):
        store.checkpoint(stale, 0, stale.apply(events[300:450], NOW), -1)
    assert store.load("src", 0).hwm == 599
    assert int(sync_redis(settings).hget(settings.key("featurizer", "stats"), "flows_featurized")) == 600
