"""``stormalert engine reshard`` on a three-node Redis Cluster: every command it sends names
keys of one slot (a shard's checkpoint and stream share its hash tag), so it runs there as on
one server."""

from __future__ import annotations

import zlib

import orjson
import pytest

from engine import checkpoint
from engine.reshard import reshard
from proto import bus, keys, store
from proto.rules import parse_rule
from tests.cluster.conftest import Cluster, cluster, redis_cluster  # noqa: F401  (fixtures)

SYMBOLS = ["NSE:MARUTI", "NSE:TCS", "NSE:INFY", "NSE:RELIANCE", "NSE:HDFCBANK"]


def rule_id(sym: str) -> str:
    return f"trail-{sym.split(':')[1].lower()}"


@pytest.mark.timeout(120)
def test_reshard_moves_the_state_on_a_cluster(cluster: Cluster) -> None:  # noqa: F811
    r = bus.connect(cluster.url)
    r.hset(keys.INSTRUMENTS, mapping={s: orjson.dumps({"tok": "1", "src": "test"}).decode()
                                      for s in SYMBOLS})
    store.add_user(r, "asha", "correct horse")
    for sym in SYMBOLS:
        store.add_rule(r, parse_rule({"id": rule_id(sym), "symbol": sym, "kind": "trailing_pct",
                                      "params": {"pct": 5, "direction": "down"}}, user="asha"))
    r.set(keys.SHARDS, 2)
    binary = bus.clone(r, decode_responses=False)
    for shard in range(2):
        owned = [s for s in SYMBOLS if keys.shard_for(s, 2) == shard]
        doc = {"v": checkpoint.FORMAT, "rules": {rule_id(s): {"fp": s, "ev": {"peak": 130.0}}
                                                 for s in owned},
               "bars": {"open": {}, "vol": {s: 10 for s in owned}}, "pc": {}}
        binary.hset(keys.engine_state(shard), mapping={
            checkpoint.EPOCH_FIELD: 4, checkpoint.STATE_FIELD: zlib.compress(orjson.dumps(doc))})
        # A drained stream: every entry read and acked.
        entry = r.xadd(keys.ticks(shard), {"n": "0", "ticks": "[]"})
        r.xgroup_create(keys.ticks(shard), keys.ENGINE_GROUP, id="$")
        assert entry
    summary = reshard(r, cluster.url, 3, 2)
    assert summary.startswith("resharded 2 -> 3: state of 5 rules carried over (3 moved")
    for shard in range(3):
        saved = binary.hgetall(keys.engine_state(shard))
        doc = checkpoint.decode(saved[checkpoint.STATE_FIELD.encode()])
        owned = {s for s in SYMBOLS if keys.shard_for(s, 3) == shard}
        assert set(doc["rules"]) == {rule_id(s) for s in owned}
        assert set(doc["bars"]["vol"]) == owned
        assert int(saved[checkpoint.EPOCH_FIELD.encode()]) == (5 if shard < 2 else 1)
        assert r.xinfo_groups(keys.ticks(shard))[0]["name"] == keys.ENGINE_GROUP
    assert r.get(keys.SHARDS) == "3" and not r.exists(keys.RESHARD)
