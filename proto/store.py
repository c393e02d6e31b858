"""Users, their notification channels and their rules, as stored in Redis.

Every write that touches more than one key runs in one MULTI so nothing is half-written; on
a Redis Cluster, whose MULTI cannot span slots, such writes go one by one in an order where a
failure part way leaves nothing half-visible (``_write_rule``). Rule changes are also
appended to ``sa:rules:changes`` so engine shards apply them live.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson
import redis
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from pydantic import ValidationError

from proto import bus, keys
from proto.rules import Rule, RuleError, describe_validation_error

log = logging.getLogger(__name__)

USER_RE = re.compile(r"^[a-z][a-z0-9_.-]{1,31}$")
_hasher = PasswordHasher()


class StoreError(ValueError):
    """A request the store refuses; the message says why in one line, and ``field`` names
    the field of the request at fault when one is (a form shows the message beside it)."""

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


# Users ---------------------------------------------------------------------------------


def add_user(r: redis.Redis, name: str, password: str, *, admin: bool = False) -> None:
    if not USER_RE.match(name):
        raise StoreError(
            f"bad user name {name!r}: 2-32 chars, lowercase letters, digits, '_', '.', '-'")
    _check_new_password(password)
    record: dict[Any, Any] = {"name": name, "pw": _hasher.hash(password),
                              "admin": "1" if admin else "0", "created": str(int(time.time()))}
    if not r.sadd(keys.USERS, name):
        raise StoreError(f"user {name!r} already exists")
    r.hset(keys.user(name), mapping=record)


def get_user(r: redis.Redis, name: str) -> dict[str, str] | None:
    record = r.hgetall(keys.user(name))
    return record or None  # type: ignore[return-value]


def check_password(r: redis.Redis, name: str, password: str) -> dict[str, str] | None:
    """The user record when the password matches and the user is not disabled, else None
    (same cost either way)."""
    record = get_user(r, name)
    stored = record["pw"] if record else _dummy_hash()
    try:
        _hasher.verify(stored, password)
    except (VerificationError, InvalidHashError):
        return None
    return record if record and not is_disabled(record) else None


def _check_new_password(password: str) -> None:
    if len(password) < 8:
        raise StoreError("password must be at least 8 characters")


def is_disabled(record: dict[str, str]) -> bool:
    return record.get("disabled") == "1"


def session_valid(record: dict[str, str], issued_at_s: float) -> bool:
    """Whether a session issued at ``issued_at_s`` still counts: not for a disabled user, nor
    from before the user's password was reset or the user was disabled (``sessions_after``)."""
    return not is_disabled(record) and issued_at_s >= float(record.get("sessions_after") or 0)


def set_password(r: redis.Redis, name: str, password: str) -> None:
    """A new password; the user's existing sessions end."""
    require_user(r, name)
    _check_new_password(password)
    r.hset(keys.user(name), mapping={"pw": _hasher.hash(password),
                                     "sessions_after": str(int(time.time()))})


def set_admin(r: redis.Redis, name: str, admin: bool) -> None:
    require_user(r, name)
    if not admin:
        _keep_an_admin(r, name)
    r.hset(keys.user(name), "admin", "1" if admin else "0")


def set_disabled(r: redis.Redis, name: str, disabled: bool) -> None:
    """A disabled user cannot sign in and their open sessions stop working."""
    require_user(r, name)
    if disabled:
        _keep_an_admin(r, name)
        r.hset(keys.user(name), mapping={"disabled": "1",
                                         "sessions_after": str(int(time.time()))})
    else:
        r.hset(keys.user(name), "disabled", "0")


def _keep_an_admin(r: redis.Redis, leaving: str) -> None:
    """Refuse to demote or disable the last enabled admin: nobody could manage users then."""
    admin, disabled = r.hmget(keys.user(leaving), ["admin", "disabled"])  # type: ignore[misc]
    if admin != "1" or disabled == "1":
        return
    others = [name for name in list_users(r) if name != leaving]
    with r.pipeline(transaction=False) as pipe:
        for name in others:
            pipe.hmget(keys.user(name), ["admin", "disabled"])
        flags = pipe.execute()
    if not any(admin == "1" and disabled != "1" for admin, disabled in flags):
        raise StoreError(f"{leaving!r} is the last enabled admin: make another user admin first")


@functools.cache
def _dummy_hash() -> str:
    """Checked against for unknown users, so a miss costs as much as a wrong password."""
    return _hasher.hash("not a real password")


def list_users(r: redis.Redis) -> list[str]:
    return sorted(r.smembers(keys.USERS))  # type: ignore[arg-type]


def require_user(r: redis.Redis, name: str) -> None:
    if not r.sismember(keys.USERS, name):
        raise StoreError(f"unknown user {name!r}")


# Channels ------------------------------------------------------------------------------


def channel_id(url: str) -> str:
    return hashlib.sha256(url.encode()).hexdigest()[:12]


def add_channel(r: redis.Redis, name: str, url: str, tag: str = "default") -> str:
    """Store an apprise URL for a user under a tag; returns the channel id."""
    require_user(r, name)
    validate_apprise_url(url)
    cid = channel_id(url)
    r.hset(keys.user_channels(name), cid, orjson.dumps({"url": url, "tag": tag}))
    return cid


def remove_channel(r: redis.Redis, name: str, cid: str) -> bool:
    return bool(r.hdel(keys.user_channels(name), cid))


def list_channels(r: redis.Redis, name: str) -> list[dict[str, str]]:
    raw: Any = r.hgetall(keys.user_channels(name))
    return decode_channels(raw)[0]


def decode_channels(raw: dict[str, str]) -> tuple[list[dict[str, str]], list[str]]:
    """The ``keys.user_channels`` hash (id -> JSON {url, tag}) as {id, url, tag} records, by
    id; the ids whose record cannot be read come second."""
    channels, unreadable = [], []
    for cid, value in sorted(raw.items()):
        try:
            record = orjson.loads(value)
            channels.append({"id": cid, "url": str(record["url"]),
                             "tag": str(record.get("tag", "default"))})
        except (orjson.JSONDecodeError, KeyError, TypeError, AttributeError):
            unreadable.append(cid)
    return channels, unreadable


def validate_apprise_url(url: str) -> None:
    import apprise  # imported here: only writers of channels pay for loading its plugins

    if not isinstance(url, str) or "://" not in url:
        raise StoreError(f"not a notification URL: {redact(url)}")
    if apprise.Apprise.instantiate(url) is None:
        raise StoreError(f"apprise does not accept this URL: {redact(url)}")


def redact(url: str) -> str:
    """A channel URL safe to show: its scheme and channel id. Nothing of the rest, because
    many schemes carry the secret where a host would be (tgram://BOT_TOKEN/...)."""
    scheme, sep, _rest = str(url).partition("://")
    if not sep or not scheme.isalnum():
        return "(not a URL)"
    return f"{scheme}:{channel_id(url)}"


# Notification preferences ---------------------------------------------------------------

QUIET_RE = re.compile(r"^(\d{1,2}):(\d{2})-(\d{1,2}):(\d{2})$")
MAX_PER_MINUTE_LIMIT = 1_000_000
PREF_FIELDS = ("max_per_minute", "quiet")


@dataclass(frozen=True, slots=True)
class NotifyPrefs:
    """A user's notification preferences; None means the notifier's default."""

    max_per_minute: int | None = None  # 0: never fold alerts into a digest
    quiet: tuple[int, int] | None = None  # (start, end) minute of the IST day; may wrap

    def quiet_text(self) -> str:
        if self.quiet is None:
            return ""
        (sh, sm), (eh, em) = divmod(self.quiet[0], 60), divmod(self.quiet[1], 60)
        return f"{sh:02d}:{sm:02d}-{eh:02d}:{em:02d}"


def parse_quiet(text: str) -> tuple[int, int]:
    """``HH:MM-HH:MM`` (IST, 24-hour; the end may be on the next day) as minutes of the day."""
    match = QUIET_RE.match(text.strip())
    if not match:
        raise StoreError(f"bad quiet hours {text!r}: expected HH:MM-HH:MM, e.g. 22:00-08:00")
    sh, sm, eh, em = (int(g) for g in match.groups())
    if sh > 23 or eh > 23 or sm > 59 or em > 59:
        raise StoreError(f"bad quiet hours {text!r}: hours 00-23, minutes 00-59")
    start, end = sh * 60 + sm, eh * 60 + em
    if start == end:
        raise StoreError(f"bad quiet hours {text!r}: start and end are the same time")
    return start, end


def parse_max_per_minute(value: str | int) -> int:
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise StoreError(f"bad max per minute {value!r}: expected a whole number") from None
    if not 0 <= number <= MAX_PER_MINUTE_LIMIT:
        raise StoreError(f"bad max per minute {number}: 0 (no limit) to {MAX_PER_MINUTE_LIMIT}")
    return number


def decode_prefs(raw: dict[str, str]) -> tuple[NotifyPrefs, list[str]]:
    """The ``keys.user_prefs`` hash as NotifyPrefs; the problems of unreadable fields (which
    are left at their default) come second."""
    max_per_minute, quiet, problems = None, None, []
    try:
        if "max_per_minute" in raw:
            max_per_minute = parse_max_per_minute(raw["max_per_minute"])
    except StoreError as exc:
        problems.append(str(exc))
    try:
        if raw.get("quiet"):
            quiet = parse_quiet(raw["quiet"])
    except StoreError as exc:
        problems.append(str(exc))
    return NotifyPrefs(max_per_minute, quiet), problems


def get_prefs(r: redis.Redis, name: str) -> NotifyPrefs:
    raw: Any = r.hgetall(keys.user_prefs(name))
    return decode_prefs(raw)[0]


def set_prefs(r: redis.Redis, name: str, *, max_per_minute: str | int | None = None,
              quiet: str | None = None) -> NotifyPrefs:
    """Set the given preferences (both validated before anything is written)."""
    require_user(r, name)
    update: dict[str, str] = {}
    if max_per_minute is not None:
        update["max_per_minute"] = str(parse_max_per_minute(max_per_minute))
    if quiet is not None:
        start, end = parse_quiet(quiet)
        update["quiet"] = NotifyPrefs(quiet=(start, end)).quiet_text()
    if update:
        r.hset(keys.user_prefs(name), mapping=update)  # type: ignore[arg-type]
    return get_prefs(r, name)


def clear_prefs(r: redis.Redis, name: str, fields: tuple[str, ...] = PREF_FIELDS) -> NotifyPrefs:
    """Back to the notifier's defaults for ``fields``."""
    require_user(r, name)
    unknown = set(fields) - set(PREF_FIELDS)
    if unknown:
        raise StoreError(f"unknown preference {sorted(unknown)[0]!r}")
    r.hdel(keys.user_prefs(name), *fields)
    return get_prefs(r, name)


# Rules ---------------------------------------------------------------------------------


def instrument_known(r: redis.Redis, symbol: str) -> bool | None:
    """True/False when an instrument master is loaded, None when none is."""
    if r.hexists(keys.INSTRUMENTS, symbol):
        return True
    return False if r.exists(keys.INSTRUMENTS) else None


def add_rule(r: redis.Redis, rule: Rule) -> Rule:
    require_user(r, rule.user)
    _require_symbol(r, rule.symbol)
    if r.hexists(keys.RULES, rule.id):
        raise StoreError(f"rule {rule.id!r} already exists", field="id")
    _write_rule(r, rule, new=True)
    return rule


def update_rule(r: redis.Redis, rule: Rule) -> Rule:
    """Replace the stored rule with ``rule``'s id, which must belong to ``rule.user``; the
    shards re-arm it (a changed rule starts over)."""
    current = get_rule(r, rule.id)
    if current is None or current.user != rule.user:
        raise StoreError(f"no rule {rule.id!r}", field="id")
    _require_symbol(r, rule.symbol)
    _write_rule(r, rule, new=False)
    return rule


def _require_symbol(r: redis.Redis, symbol: str) -> None:
    known = instrument_known(r, symbol)
    if known is None:
        raise StoreError("no instrument master loaded yet: start ingest (stormalert up) first",
                         field="symbol")
    if not known:
        raise StoreError(f"unknown symbol {symbol!r}", field="symbol")


def _write_rule(r: redis.Redis, rule: Rule, *, new: bool) -> None:
    body = rule.to_json()
    change = {"op": "put", "id": rule.id, "rule": body}
    if bus.is_cluster(r):
        # Three keys in three slots, and a cluster runs a MULTI within one slot: written one
        # by one, so that a failure part way leaves nothing a reader trips on. An id in the
        # user's set without a rule is skipped by list_rules; a stored rule whose change
        # did not go out is armed by the shards at their next start (the caller got the
        # error, and writing it again sends the change).
        if new:
            r.sadd(keys.user_rules(rule.user), rule.id)
        r.hset(keys.RULES, rule.id, body)
        _append_change(r, change)
        return
    with r.pipeline(transaction=True) as pipe:
        pipe.hset(keys.RULES, rule.id, body)
        if new:
            pipe.sadd(keys.user_rules(rule.user), rule.id)
        _append_change(pipe, change)
        pipe.execute()


def _append_change(r: redis.Redis, change: dict[str, str]) -> None:
    r.xadd(keys.RULE_CHANGES, change,  # type: ignore[arg-type]
           maxlen=keys.RULE_CHANGES_MAXLEN, approximate=True)


def get_rule(r: redis.Redis, rule_id: str) -> Rule | None:
    body = r.hget(keys.RULES, rule_id)
    return Rule.model_validate_json(body) if body else None  # type: ignore[arg-type]


def list_rules(r: redis.Redis, user: str | None = None, *,
               symbol_filter: Callable[[str], bool] | None = None) -> list[Rule]:
    """Stored rules (of ``user``), sorted; ``symbol_filter`` skips rules of other symbols
    before validating them (a shard of two validates half the rules: ~3.5 s of its start at
    100k rules went into validating rules another shard owns)."""
    if user is None:
        bodies = list(r.hvals(keys.RULES))  # type: ignore[arg-type]
    else:
        ids = sorted(r.smembers(keys.user_rules(user)))  # type: ignore[arg-type]
        bodies = [b for b in (r.hmget(keys.RULES, ids) if ids else []) if b]  # type: ignore[union-attr]
    rules = []
    for body in bodies:
        if symbol_filter is not None and (symbol := stored_symbol(body)) \
                and not symbol_filter(symbol):
            continue
        try:
            rules.append(Rule.model_validate_json(body))
        except ValidationError as exc:  # e.g. its kind's plug-in is not installed here
            log.error("stored rule %s skipped: %s", _stored_id(body),
                      describe_validation_error(exc))
    return sorted(rules, key=lambda rule: (rule.user, rule.id))


def _stored_field(body: str | bytes, name: str) -> str:
    """A text field of a stored rule without validating it; "" when unreadable."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return ""
    value = data.get(name) if isinstance(data, dict) else None
    return value if isinstance(value, str) else ""


def stored_symbol(body: str | bytes) -> str:
    """The symbol of a stored rule without validating it; "" when unreadable (validation
    then reports it, so a broken rule is never skipped silently by the filter)."""
    return _stored_field(body, "symbol")


def get_user_rule(r: redis.Redis, rule_id: str, user: str) -> Rule | None:
    """The rule if it is ``user``'s, else None (no such rule, or another user's). A rule of
    ``user`` stored but no longer valid here (its plug-in kind is not installed, say) raises
    StoreError saying why, so a page answers with the reason instead of failing."""
    body: Any = r.hget(keys.RULES, rule_id)
    if not body or _stored_field(body, "user") != user:
        return None
    try:
        return Rule.model_validate_json(body)
    except ValidationError as exc:
        raise StoreError(f"rule {rule_id!r} cannot be read here: "
                         f"{describe_validation_error(exc)}") from None


def _stored_id(body: str | bytes) -> str:
    return _stored_field(body, "id") or "?"


def remove_rule(r: redis.Redis, rule_id: str, user: str | None = None) -> None:
    """Remove a rule (of ``user`` when given). A stored rule that no longer validates (its
    plug-in kind uninstalled) can be removed too: it is read without validating."""
    body: Any = r.hget(keys.RULES, rule_id)
    owner = _stored_field(body, "user") if body else ""
    if not body or (user is not None and owner != user):
        raise StoreError(f"no rule {rule_id!r}")
    change = {"op": "rm", "id": rule_id}
    if bus.is_cluster(r):
        # One by one (see _write_rule): the shards disarm it first, so a failure part way
        # leaves a rule that is still listed, and removing it again finishes the job.
        _append_change(r, change)
        r.hdel(keys.RULES, rule_id)
        r.srem(keys.user_rules(owner), rule_id)
        return
    with r.pipeline(transaction=True) as pipe:
        pipe.hdel(keys.RULES, rule_id)
        pipe.srem(keys.user_rules(owner), rule_id)
        _append_change(pipe, change)
        pipe.execute()


def set_rule_active(r: redis.Redis, rule_id: str, active: bool,
                    user: str | None = None) -> Rule:
    rule = get_rule(r, rule_id)
    if rule is None or (user is not None and rule.user != user):
        raise StoreError(f"no rule {rule_id!r}")
    updated = rule.model_copy(update={"active": active})
    _write_rule(r, updated, new=False)
    return updated


def decode_rule_change(fields: dict[str, Any]) -> tuple[str, str, Rule | None]:
    """(op, rule id, rule or None) from a ``sa:rules:changes`` entry."""
    op, rule_id = fields.get("op", ""), fields.get("id", "")
    if op == "put":
        try:
            return op, rule_id, Rule.model_validate_json(fields["rule"])
        except (KeyError, ValueError) as exc:
            raise RuleError(f"bad rule change {rule_id!r}: {exc}") from exc
    return op, rule_id, None
