"""Every Redis key and stream name StormAlert uses, and the shard function.

Keys that belong together carry one hash tag (the part in braces) so a Redis Cluster keeps
them in one slot: each tick shard has its own tag, and each user's keys share the user's.
"""

import zlib

PREFIX = "sa"

# Streams
ALERTS = "sa:alerts"
ALERTS_DEAD = "sa:alerts:dead"
RULE_CHANGES = "sa:rules:changes"

# Test-message requests from the dashboard to the notifier: fields ``id`` (request id),
# ``user``, ``at_ms``. The notifier reads it in its group ``notify`` and answers in
# ``notify_test(user, id)``.
NOTIFY_TESTS = "sa:notify:tests"
NOTIFY_TESTS_MAXLEN = 1000

# Backtest jobs ("test on history") from the web to the engine's backtest workers: fields
# ``id`` (job id), ``user``, ``at_ms``; the job itself is in ``backtest(user, id)``. Read in
# group ``BACKTEST_GROUP``.
BACKTEST_JOBS = "sa:backtest:jobs"
BACKTEST_JOBS_MAXLEN = 1000

# Consumer groups
ENGINE_GROUP = "engine"
NOTIFY_GROUP = "notify"
BACKTEST_GROUP = "backtest"

# Control plane
USERS = "sa:users"
RULES = "sa:rules"
INSTRUMENTS = "sa:instruments"  # hash: symbol -> JSON {"tok", "src", "name"}
QUOTES = "sa:quotes"  # hash: symbol -> JSON latest quote (proto.events.quote_json)
# Litestar RedisStore namespaces of the web's rate limits (sign-in and password-change posts
# per client address and minute): sa:limits:{store}:{key}
RATE_LIMITS = "sa:limits"
JWT_SECRET = "sa:secret:jwt"  # generated once when no JWT_SECRET is configured

# Stream trimming
TICKS_MAXLEN = 200_000
ALERTS_MAX_AGE_DAYS = 30
RULE_CHANGES_MAXLEN = 10_000
DELIVERY_TTL_S = 7 * 24 * 3600
HEARTBEAT_TTL_S = 15


# The engine shard count every ingest and engine process must be started with (decimal text):
# recorded by the first one to start, changed only by ``stormalert engine reshard --to M``
# (proto.topology). While a reshard is under way, RESHARD holds every rule's state.
SHARDS = "sa:shards"
RESHARD = "sa:reshard"


def ticks(shard: int) -> str:
    """The tick stream of one engine shard."""
    return f"sa:ticks:{{{shard}}}"


def shard_for(sym: str, shards: int) -> int:
    """The engine shard that owns a symbol; ingest and engine both call this."""
    return zlib.crc32(sym.encode()) % shards


def user(name: str) -> str:
    return f"sa:user:{{{name}}}"


def user_channels(name: str) -> str:
    return f"sa:user:{{{name}}}:channels"


def user_rules(name: str) -> str:
    return f"sa:user:{{{name}}}:rules"


def user_token(name: str, token_id: str) -> str:
    """One API token's record, JSON {name, hash (sha256 hex of the token), created (epoch s),
    expires (epoch s, null: never), used_ms (epoch ms of the last request it authenticated,
    at most a minute old), used_from (that request's client address)}. A token that expires
    has a Redis TTL ``API_TOKEN_KEPT_S`` past its expiry. The token itself is never stored."""
    return f"sa:user:{{{name}}}:token:{token_id}"


def user_token_ids(name: str) -> str:
    """Set of a user's API token ids; an id whose ``user_token`` record is gone (expired
    past ``API_TOKEN_KEPT_S``) is dropped when the list is next read."""
    return f"sa:user:{{{name}}}:token_ids"


def api_token(digest: str) -> str:
    """sha256 hex of an API token -> "USER:TOKEN_ID", the look-up of a bearer token, with the
    record's TTL. Valid only while the user's ``user_token`` record holds the same hash
    (written first, removed last)."""
    return f"sa:tokens:hash:{digest}"


# How long an expired token's record and index entry stay (listed as expired) before Redis
# removes them.
API_TOKEN_KEPT_S = 14 * 24 * 3600


def user_tokens(name: str) -> str:
    """Before token expiry: hash of a user's API tokens, token id -> JSON {name, hash,
    created}. Read only to move such tokens to ``user_token`` records (web.tokens)."""
    return f"sa:user:{{{name}}}:tokens"


# Before token expiry: hash, sha256 hex of an API token -> "USER:TOKEN_ID" (now
# ``api_token``). Read only to move old tokens to the new keys.
API_TOKENS = "sa:tokens"


def token_failures(client: str) -> str:
    """Count of unknown bearer tokens from one client address in the current minute."""
    return f"sa:tokens:fail:{client}"


def user_watchlist(name: str) -> str:
    """JSON array of the symbols on a user's dashboard watchlist, in the user's order.
    Absent: the default list (web); an empty array is a list the user emptied."""
    return f"sa:user:{{{name}}}:watchlist"


def delivery(alert_id: str) -> str:
    """Hash of channel id -> delivery record for one alert (idempotency and log)."""
    return f"sa:dlv:{{{alert_id}}}"


def user_prefs(name: str) -> str:
    """Hash of a user's notification preferences: ``max_per_minute`` (decimal text),
    ``quiet`` (``HH:MM-HH:MM``, IST). Absent fields take the notifier's defaults."""
    return f"sa:user:{{{name}}}:prefs"


def user_rate(name: str, minute: int) -> str:
    """Hash of one user's alerts in one minute (epoch minute of the alert's emit time):
    ``#n`` (alerts counted) and ``id:ALERT_ID`` -> the notifier's decision for that alert
    (``send`` or the digest window it was folded into), so a redelivery decides the same."""
    return f"sa:user:{{{name}}}:rate:{minute}"


def user_digest(name: str, window: str) -> str:
    """Hash of one digest of a user: ``closed_at`` (epoch µs, set once when it is flushed)."""
    return f"sa:user:{{{name}}}:digest:{window}"


def user_digest_items(name: str, window: str) -> str:
    """List of the alerts folded into one digest, as JSON summaries, in folding order."""
    return f"sa:user:{{{name}}}:digest:{window}:items"


# Sorted set of digests waiting to be delivered: member ``digest:USER:WINDOW`` (the digest's
# alert id), score = epoch ms when it is due, or until when a notifier holds it.
DIGESTS_DUE = "sa:digests:due"


NOTIFY_TEST_TTL_S = 600


def notify_test(name: str, request_id: str) -> str:
    """Hash of one test-message request of a user and its outcome: ``requested_ms`` (set by
    the web), then by the notifier ``picked_ms``, ``channels`` (how many), ``ch:CHANNEL_ID``
    -> JSON {channel (scheme:id), tag, ok, error} per channel as each finishes, ``done_ms``.
    Expires after ``NOTIFY_TEST_TTL_S``."""
    return f"sa:user:{{{name}}}:test:{request_id}"


BACKTEST_TTL_S = 3600


def backtest(name: str, job_id: str) -> str:
    """Hash of one backtest job of a user: the request (``requested_ms``, ``job`` JSON,
    ``csv`` when uploaded) set by the web, then by the worker ``picked_ms``, ``attempts``,
    ``worker`` (its consumer name; with ``attempts``, the run that owns the job: a worker
    writes only while both still show its run), ``status``, ``progress`` (0-100), ``hb_ms``,
    and at the end ``result`` (JSON) or ``error``, ``done_ms``. Expires after
    ``BACKTEST_TTL_S``."""
    return f"sa:user:{{{name}}}:backtest:{job_id}"


def backtest_rate(name: str, minute: int) -> str:
    """Count of the backtests a user asked for in one minute (epoch minute); 2-minute TTL."""
    return f"sa:user:{{{name}}}:backtest-rate:{minute}"


BARS_MAXLEN = 5 * 375  # five NSE sessions of one-minute bars


def bars(sym: str) -> str:
    """Closed one-minute OHLCV bars of a symbol; entry id = the bar's start (epoch ms)-0,
    fields ``o h l c v`` (v: volume traded in the minute)."""
    return f"sa:bars:{{{sym}}}"


def engine_state(shard: int) -> str:
    """Hash of a shard's checkpoint: rule id -> rule state JSON, plus the open bars. Shares
    the hash tag of ``sa:ticks:{shard}`` so the checkpoint and the ack go in one MULTI."""
    return f"sa:state:{{{shard}}}"


def alert_seen(alert_id: str) -> str:
    """Marks an alert id as written. Its hash tag is the name ``sa:alerts``, so in a Redis
    Cluster it lives in the alert stream's slot and one script can check and append."""
    return f"{{{ALERTS}}}:seen:{alert_id}"


def feed_state(feed: str) -> str:
    """Hash of a feed's state for status and the dashboard: ``state`` (connected |
    reconnecting | needs_login | stopped), ``reason``, ``since`` (epoch s)."""
    return f"sa:feed:{feed}"


def feed_token(feed: str) -> str:
    """The broker access token the web admin's login flow stores (Kite's expires daily)."""
    return f"sa:feed:{feed}:token"


def broker(feed: str) -> str:
    """Hash of a broker's API credentials, sealed (``proto.secrets``): ``key`` ``secret``
    ``updated`` ``updated_by``."""
    return f"sa:broker:{feed}"


OAUTH_STATE_TTL_S = 600


def oauth_state(state: str) -> str:
    """One broker login in progress (JSON {feed, user, redirect_uri}); read once by the
    callback, expires after ``OAUTH_STATE_TTL_S``."""
    return f"sa:oauth:{state}"


MARKET_STATUS = "sa:market:status"  # hash: segment -> status (Upstox market_info)


def heartbeat(process: str) -> str:
    return f"sa:hb:{process}"


HEARTBEAT_PATTERN = "sa:hb:*"
