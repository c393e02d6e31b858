"""The small Redis-Streams bus every process uses: connect, publish in batches,
consumer-group read, ack, and claim of entries a dead consumer left pending.

Sync functions serve the hot loops (the sync client costs less CPU per call); the ``a``-prefixed
ones serve asyncio processes. Values come back as ``str`` (``decode_responses=True``).

A URL with the scheme ``redis+cluster://`` (``rediss+cluster://`` with TLS) names any node of
a Redis Cluster: ``connect``/``aconnect`` then give a cluster client (redis-py's
``RedisCluster``) that finds the other nodes itself. Every key carries a hash tag
(``proto.keys``), and every command, script and MULTI of StormAlert stays within one slot,
or is split per slot where the code checks ``is_cluster``.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator, Iterable, Sequence
from typing import Any, cast

import redis
import redis.asyncio as aredis
import redis.asyncio.cluster as acluster
import redis.cluster as cluster
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import ExponentialBackoff
from redis.commands.core import Script
from redis.retry import Retry

from proto import keys
from proto.events import Fields

Entry = tuple[str, Fields]

# The cluster scheme of a URL, and the scheme redis-py's cluster client takes instead.
CLUSTER_SCHEMES = {"redis+cluster": "redis", "rediss+cluster": "rediss"}

# Redis errors a worker waits out (retrying) rather than exits on or blames a message for: no
# server, a server loading its data or refusing writes (maxmemory with noeviction: OOM; a
# replica after a failover: READONLY), a cluster without a quorum or moving a slot. Retried
# later the same command can succeed (one that timed out may also have been carried out).
TRANSIENT_ERRORS = (
    redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError,
    redis.exceptions.OutOfMemoryError, redis.exceptions.ReadOnlyError,
    redis.exceptions.ClusterDownError, redis.exceptions.TryAgainError)


# After a failover behind one address (a Kubernetes Service, a DNS name, a proxy) the server a
# pooled connection still talks to is a replica and answers every write with READONLY; a plain
# client would ask it forever (only Sentinel clients reconnect on it). Every single-instance
# client drops the connection on READONLY and asks again on a new one, which reaches the new
# primary: a few times, 0.2-0.8 s apart, before the error reaches the caller (whose own retry
# then starts on fresh connections). A READONLY write was refused, so asking again cannot
# apply it twice; other errors are not retried here (a write whose connection broke may
# have been applied; the callers know which of theirs may be repeated).
READONLY_RETRIES = 3
READONLY_BACKOFF = ExponentialBackoff(cap=1.0, base=0.1)


def _readonly_options(retry_class: type[Retry] | type[AsyncRetry]) -> dict[str, Any]:
    readonly = redis.exceptions.ReadOnlyError
    return {"retry": retry_class(READONLY_BACKOFF, READONLY_RETRIES, supported_errors=(readonly,)),
            "retry_on_error": [readonly]}


def raise_if_cut(exc: redis.WatchError) -> None:
    """A WatchError is also how redis-py reports a transaction on a watched key that was cut
    by the connection (READONLY after a failover, a dropped connection): the watch went with
    it, and the real error is the WatchError's context. Raise that error when it is one to
    wait out, so a caller retries later instead of taking it for a concurrent change of the
    key (a newer writer, a job taken over); else return."""
    cause = exc.__context__
    if isinstance(cause, TRANSIENT_ERRORS):
        raise cause from None


class RedisUnavailable(RuntimeError):
    """Redis did not answer; the message says where we tried."""


def cluster_url(url: str) -> str | None:
    """For a ``redis+cluster://`` URL, the same URL with the scheme redis-py's cluster client
    takes (``redis://``); None for a single-instance URL. A cluster has only database 0, so
    a URL naming another one is refused (ValueError, one line)."""
    scheme, sep, rest = url.partition("://")
    plain = CLUSTER_SCHEMES.get(scheme.lower()) if sep else None
    if plain is None:
        return None
    path = rest.split("?", 1)[0].partition("/")[2]
    if path not in ("", "0"):
        raise ValueError(f"{redact_url(url)}: a Redis Cluster has only database 0, "
                         f"not {path!r}")
    return f"{plain}://{rest}"


def is_cluster(r: object) -> bool:
    """Whether ``r`` (a client or a pipeline, sync or asyncio) talks to a Redis Cluster."""
    return isinstance(r, ClusterClient | AsyncClusterClient | cluster.RedisCluster
                      | acluster.RedisCluster | acluster.ClusterPipeline)


def connect(url: str, *, blocking: bool = False) -> redis.Redis:
    """A sync client. ``blocking`` readers get no socket timeout (XREADGROUP BLOCK).

    Like the single-instance client, a cluster client meets the server at its first command
    (``check``), not here: a process started before its Redis still fails with one line."""
    options: dict[str, Any] = dict(
        decode_responses=True, socket_timeout=None if blocking else 5.0,
        socket_connect_timeout=5.0, health_check_interval=30)
    plain = cluster_url(url)
    if plain is not None:
        return ClusterClient(SyncCluster(url=plain, **options))
    return redis.Redis.from_url(url, **options, **_readonly_options(Retry))


ASYNC_MAX_CONNECTIONS = 100
ASYNC_POOL_WAIT_S = 30.0


def aconnect(url: str, *, max_connections: int = ASYNC_MAX_CONNECTIONS) -> aredis.Redis:
    """An asyncio client; no socket timeout, so cancellation of blocked reads is prompt. (With
    one, redis-py sends through ``asyncio.wait_for``, which on Python 3.11 can swallow a
    cancellation that arrives as the send completes: a stopped task then runs on; see
    ``runtime.wait_event``. redis-py 8's default is 5 s.)

    The pool waits for a free connection (up to ``ASYNC_POOL_WAIT_S``) instead of refusing
    the call: redis-py's default pool raises "Too many connections" past its limit, which
    turned a burst of concurrent deliveries into failed writes and resends. The cluster
    client keeps that promise with a bound on the calls in flight (``AsyncCluster``)."""
    options: dict[str, Any] = dict(
        decode_responses=True, socket_timeout=None, socket_connect_timeout=5.0,
        health_check_interval=30)
    plain = cluster_url(url)
    if plain is not None:
        return AsyncClusterClient(AsyncCluster.from_url(
            plain, max_connections=max_connections, **options))
    pool = aredis.BlockingConnectionPool.from_url(
        url, max_connections=max_connections, timeout=ASYNC_POOL_WAIT_S, **options,
        **_readonly_options(AsyncRetry))
    return aredis.Redis.from_pool(pool)  # the client owns (and closes) its pool


def clone(r: redis.Redis, **overrides: Any) -> redis.Redis:
    """A client on new connections to the same server (or cluster) as ``r``, with some
    connection settings changed (a forked child must not use its parent's connections)."""
    if isinstance(r, ClusterClient):
        options = cast(SyncCluster, r.cluster_client).lazy_options
        return ClusterClient(SyncCluster(**{**options, **overrides}))
    pool = r.connection_pool
    kwargs = {**pool.connection_kwargs, **overrides}
    return redis.Redis(connection_pool=redis.ConnectionPool(
        connection_class=pool.connection_class, **kwargs))


def _stream_keys(args: tuple[Any, ...]) -> list[Any] | None:
    """The stream keys of an XREAD/XREADGROUP call (the first half of what follows
    STREAMS), or None when the command is another one."""
    if not args or str(args[0]).upper() not in ("XREAD", "XREADGROUP"):
        return None
    names = [a.upper() if isinstance(a, bytes | str) else a for a in args]
    at = max(i for i, a in enumerate(names) if a in (b"STREAMS", "STREAMS"))
    rest = args[at + 1:]
    return list(rest[:len(rest) // 2])


class _StandIn:
    """Everything asked of it goes to the cluster client it holds. Only its type differs:
    ``ClusterClient`` is a ``redis.Redis`` and ``AsyncClusterClient`` a
    ``redis.asyncio.Redis``, which redis-py's cluster clients are not (nor can be: their
    bases' method orders do not combine). The processes' code is written and typed against
    those two, and Litestar checks the web's dependencies against them."""

    def __init__(self, cluster_client: object) -> None:
        object.__setattr__(self, "_cluster", cluster_client)

    def __getattribute__(self, name: str) -> Any:
        if name in ("_cluster", "cluster_client"):
            return object.__getattribute__(self, "_cluster")
        return getattr(object.__getattribute__(self, "_cluster"), name)

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(object.__getattribute__(self, "_cluster"), name, value)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} of {object.__getattribute__(self, '_cluster')!r}>"

    def __del__(self, *_args: Any) -> None:
        """The cluster client cleans up after itself."""


class ClusterClient(_StandIn, redis.Redis):
    """A ``SyncCluster`` where a ``redis.Redis`` is expected (see ``_StandIn``)."""

    cluster_client: cluster.RedisCluster


class AsyncClusterClient(_StandIn, aredis.Redis):  # type: ignore[misc]  # redis-py's own stubs
    """An ``AsyncCluster`` where a ``redis.asyncio.Redis`` is expected (see ``_StandIn``)."""

    cluster_client: acluster.RedisCluster


class SyncCluster(cluster.RedisCluster):
    """redis-py's sync cluster client, with two differences:

    - it connects at its first command, not when built (redis-py's asks the cluster for
      its slots and command table in ``__init__``), so ``connect`` never raises;
    - XREAD/XREADGROUP find their keys here instead of asking a server
      (``COMMAND GETKEYS``, one more round trip before every read of every stream)."""

    lazy_options: dict[str, Any]
    _started: bool
    _starting: bool
    _start_lock: threading.Lock

    def __init__(self, **options: Any) -> None:  # super().__init__ runs at the first use
        self.__dict__.update(lazy_options=options, _started=False, _starting=False,
                             _start_lock=threading.Lock())

    def _start(self) -> None:
        with self._start_lock:
            if self._started:
                return
            self._starting = True
            try:
                super().__init__(**self.lazy_options)
            except cluster.RedisClusterException as exc:  # not a RedisError: callers
                raise redis.ConnectionError(str(exc)) from exc  # expect one
            finally:
                self._starting = False
            self._started = True

    def __getattr__(self, name: str) -> Any:
        # Only for attributes not set yet: the ones ``RedisCluster.__init__`` sets.
        if name.startswith("__") or self.__dict__.get("_starting", True) \
                or self.__dict__.get("_started", True):
            raise AttributeError(name)
        self._start()
        return getattr(self, name)

    def close(self) -> None:
        if self._started:
            super().close()

    def _get_command_keys(self, *args: Any) -> Any:
        found = _stream_keys(args)
        return super()._get_command_keys(*args) if found is None else found


class AsyncCluster(acluster.RedisCluster):
    """redis-py's asyncio cluster client, with XREAD/XREADGROUP keys found here (see
    ``SyncCluster``), and at most ``max_connections`` calls in flight, each waiting up to
    ``ASYNC_POOL_WAIT_S`` for its turn: redis-py's cluster raises MaxConnectionsError when a
    node's connections are all in use (``aconnect`` explains why that is not wanted)."""

    def __init__(self, *, max_connections: int = ASYNC_MAX_CONNECTIONS, **kwargs: Any) -> None:
        super().__init__(max_connections=max_connections, **kwargs)
        self._turns = asyncio.Semaphore(max_connections)

    @contextlib.asynccontextmanager
    async def turn(self) -> AsyncIterator[None]:
        """One of the ``max_connections`` calls in flight. Each call takes at most one
        connection per node, so no node runs out of them."""
        try:
            async with asyncio.timeout(ASYNC_POOL_WAIT_S):
                await self._turns.acquire()
        except TimeoutError:
            raise redis.ConnectionError(
                f"no free connection to the cluster within {ASYNC_POOL_WAIT_S:.0f} s") from None
        try:
            yield
        finally:
            self._turns.release()

    async def execute_command(self, *args: Any, **kwargs: Any) -> Any:
        async with self.turn():
            return await super().execute_command(*args, **kwargs)

    def pipeline(self, transaction: Any | None = None,
                 shard_hint: Any | None = None) -> acluster.ClusterPipeline:
        if shard_hint:
            raise cluster.RedisClusterException("shard_hint is deprecated in cluster mode")
        return _AsyncClusterPipeline(self, transaction)  # type: ignore[abstract]

    async def _determine_slot(self, *args: Any) -> int:
        found = _stream_keys(args)
        if not found:
            return await super()._determine_slot(*args)
        slots = {self.keyslot(key) for key in found}
        if len(slots) != 1:
            raise cluster.RedisClusterException(f"{args[0]} - all keys must map to the same "
                                                "key slot")
        return slots.pop()


class _AsyncClusterPipeline(acluster.ClusterPipeline):
    async def execute(self, raise_on_error: bool = True,
                      allow_redirections: bool = True) -> list[Any]:
        async with cast(AsyncCluster, self.cluster_client).turn():
            return await super().execute(raise_on_error, allow_redirections)


def check(r: redis.Redis, url: str) -> None:
    """Raise RedisUnavailable with a one-line reason when Redis does not answer."""
    try:
        r.ping()
    except redis.RedisError as exc:
        raise RedisUnavailable(f"cannot reach Redis at {redact_url(url)}: {exc}") from None


def redact_url(url: str) -> str:
    """A Redis URL without its password, for messages and logs."""
    if "@" not in url:
        return url
    scheme, _, rest = url.partition("://")
    return f"{scheme}://***@{rest.split('@', 1)[1]}"


def ensure_group(r: redis.Redis, stream: str, group: str, start: str = "0") -> None:
    """Create the consumer group (and the stream) unless it exists. Redis refusing writes
    (maxmemory: OOM) refuses XGROUP CREATE before it would say BUSYGROUP: then a group that
    exists is enough, so a process restarting meanwhile is not stopped by it."""
    try:
        r.xgroup_create(stream, group, id=start, mkstream=True)
    except redis.exceptions.OutOfMemoryError:
        groups: Any = r.xinfo_groups(stream) if r.exists(stream) else []
        if not any(g["name"] in (group, group.encode()) for g in groups):
            raise
    except redis.ResponseError as exc:
        if "BUSYGROUP" not in str(exc):
            raise


async def aensure_group(r: aredis.Redis, stream: str, group: str, start: str = "0") -> None:
    try:
        await r.xgroup_create(stream, group, id=start, mkstream=True)
    except redis.ResponseError as exc:
        if "BUSYGROUP" not in str(exc):
            raise


def publish(pipe: redis.client.Pipeline, stream: str, entries: Iterable[Fields],
            maxlen: int | None = None) -> None:
    """Queue XADDs on a pipeline; the caller executes it (one round trip per batch)."""
    for fields in entries:
        pipe.xadd(stream, fields, maxlen=maxlen, approximate=True)  # type: ignore[arg-type]


# Append each alert unless its id was appended before: a reprocessed tick (after a crash or
# a claim) yields the same alert id, and must not make a second entry. KEYS: the stream,
# then one seen-marker per alert; ARGV: the marker's TTL, then per alert its field count
# and its fields. Returns per alert the new entry's id, or false (written before).
_ALERTS_ONCE = """
local out = {}
local a = 2
for i = 2, #KEYS do
  local n = tonumber(ARGV[a])
  if redis.call('SET', KEYS[i], '1', 'NX', 'EX', ARGV[1]) then
    out[i - 1] = redis.call('XADD', KEYS[1], '*', unpack(ARGV, a + 1, a + n))
  else
    out[i - 1] = false
  end
  a = a + n + 1
end
return out
"""
# Alerts per script call at most: one call runs in Redis without a break, so a burst of
# alerts does not hold other clients up for longer than ~1 ms.
ALERTS_PER_CALL = 100


def publish_alerts_once(pipe: redis.client.Pipeline,
                        alerts: Sequence[tuple[str, Fields]]) -> int:
    """Queue once-only XADDs of alerts (id, fields) to ``sa:alerts`` on a pipeline, in script
    calls of up to ``ALERTS_PER_CALL`` alerts; returns the number of calls queued. Each
    call's result is a list with, per alert, its entry id or None (written before).

    One call for many alerts: a call per alert cost the engine ~14 µs and Redis ~10 µs an
    alert, one for 50 ~7 and ~8 (measured with 20k alerts on this machine). The script goes
    by EVALSHA (the pipeline loads it when the server does not have it yet). A cluster
    pipeline cannot load scripts first, and a node that restarted, failed over or joined has
    an empty script cache: there it goes whole (EVAL; Redis caches it by its SHA, so it costs
    only its ~400 bytes on the wire). All keys share the slot of ``sa:alerts``
    (``keys.alert_seen``)."""
    calls = 0
    for start in range(0, len(alerts), ALERTS_PER_CALL):
        alert_keys = [keys.ALERTS]
        args: list[Any] = [keys.DELIVERY_TTL_S]
        for alert_id, fields in alerts[start:start + ALERTS_PER_CALL]:
            alert_keys.append(keys.alert_seen(alert_id))
            args.append(2 * len(fields))
            for kv in fields.items():
                args.extend(kv)
        if is_cluster(pipe):
            # (redis-py's ClusterPipeline.eval() refuses; the command is routed by its keys)
            pipe.execute_command("EVAL", _ALERTS_ONCE, len(alert_keys), *alert_keys, *args)
        else:
            _alerts_once(keys=alert_keys, args=args, client=pipe)
        calls += 1
    return calls


# Given as bytes, the script needs no client to hash it; each call names its pipeline.
_alerts_once = Script(None, _ALERTS_ONCE.encode())  # type: ignore[arg-type]


def flatten(reply: list | dict | None) -> list[Entry]:
    """The entries of an XREAD/XREADGROUP reply, RESP2 or RESP3, deleted ones left out."""
    if not reply:
        return []
    if isinstance(reply, dict):  # RESP3
        return [e for entries in reply.values() for e in entries[0] if e[1] is not None]
    return [e for _stream, entries in reply for e in entries if e[1] is not None]


def read_group(r: redis.Redis, stream: str, group: str, consumer: str, *, count: int,
               block_ms: int | None, start: str = ">") -> list[Entry]:
    """New entries for this consumer (``start='>'``) or its own pending ones (``'0'``)."""
    reply = r.xreadgroup(group, consumer, {stream: start}, count=count, block=block_ms)
    return flatten(reply)  # type: ignore[arg-type]


async def aread_group(r: aredis.Redis, stream: str, group: str, consumer: str, *, count: int,
                      block_ms: int | None, start: str = ">") -> list[Entry]:
    reply = await r.xreadgroup(group, consumer, {stream: start}, count=count, block=block_ms)
    return flatten(reply)


def claim_stale(r: redis.Redis, stream: str, group: str, consumer: str, *, min_idle_ms: int,
                count: int = 500) -> list[Entry]:
    """Take over entries another consumer read but never acked (it died)."""
    claimed: list[Entry] = []
    cursor = "0-0"
    while True:
        cursor, entries, _deleted = r.xautoclaim(
            stream, group, consumer, min_idle_time=min_idle_ms, start_id=cursor, count=count)
        claimed.extend(e for e in entries if e[1] is not None)
        if cursor == "0-0" or not entries:
            return claimed


async def aclaim_stale(r: aredis.Redis, stream: str, group: str, consumer: str, *,
                       min_idle_ms: int, count: int = 500) -> list[Entry]:
    claimed: list[Entry] = []
    cursor = "0-0"
    while True:
        cursor, entries, _deleted = await r.xautoclaim(
            stream, group, consumer, min_idle_time=min_idle_ms, start_id=cursor, count=count)
        claimed.extend(e for e in entries if e[1] is not None)
        if cursor == "0-0" or not entries:
            return claimed
