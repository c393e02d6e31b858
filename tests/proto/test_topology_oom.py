"""The shard-count check and the consumer group a process ensures at its start write
nothing once they exist, so a process restarting while Redis refuses writes (maxmemory,
noeviction) can start."""

import pytest
import redis

from proto import bus, keys, topology


def test_agree_reads_only_once_the_count_is_recorded(r: redis.Redis) -> None:
    topology.agree(r, 2)
    assert topology.stored_shards(r) == 2
    used = int(r.info("memory")["used_memory"])
    r.config_set("maxmemory-policy", "noeviction")
    r.config_set("maxmemory", used // 2)
    try:
        with pytest.raises(redis.exceptions.OutOfMemoryError):
            r.set("probe", "x")
        topology.agree(r, 2)
        with pytest.raises(topology.ShardCountMismatch):
            topology.agree(r, 3)
    finally:
        r.config_set("maxmemory", 0)
    r.delete(keys.SHARDS)
    topology.agree(r, 1)  # nothing recorded: this count is
    assert topology.stored_shards(r) == 1


def test_ensure_group_reads_only_once_the_group_exists(r: redis.Redis) -> None:
    bus.ensure_group(r, keys.ticks(0), keys.ENGINE_GROUP, start="$")
    used = int(r.info("memory")["used_memory"])
    r.config_set("maxmemory-policy", "noeviction")
    r.config_set("maxmemory", used // 2)
    try:
        bus.ensure_group(r, keys.ticks(0), keys.ENGINE_GROUP, start="$")  # exists: fine
        with pytest.raises(redis.exceptions.OutOfMemoryError):  # a new one is refused
            bus.ensure_group(r, keys.ticks(1), keys.ENGINE_GROUP, start="$")
    finally:
        r.config_set("maxmemory", 0)
