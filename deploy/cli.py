"""The ``stormalert`` command. Process commands run ``python -m <package>`` in place of this
process; admin commands talk to Redis through ``proto``."""

from __future__ import annotations

import argparse
import getpass
import os
import sys
from collections.abc import Callable
from pathlib import Path

import orjson
import redis

from proto import bus, store
from proto.rules import RuleError, parse_rule
from proto.settings import BaseSettings, load

PROCESS_COMMANDS = {
    "sim": "ingest.sim",
    "ingest": "ingest",
    "decode": "ingest.decode",
    "engine": "engine",
    "notify": "notify",
    "web": "web",
    "replay": "engine.replay",
    "backtest": "engine.backtest",
}


# Commands of a process's admin module, run in place of this process with the whole argv.
ADMIN_COMMANDS = {"alerts": "notify.admin"}


class CliError(Exception):
    """A one-line error for the user; exit 1."""


def redis_url() -> str:
    """STORMALERT_REDIS_URL, else the embedded Redis of a running ``stormalert up``."""
    s = load(BaseSettings)
    explicit = "redis_url" in s.model_fields_set
    runtime_file = Path("var/redis.url")
    if not explicit and runtime_file.exists():
        return runtime_file.read_text().strip()
    return s.redis_url


def connect() -> redis.Redis:
    url = redis_url()
    r = bus.connect(url)
    try:
        bus.check(r, url)
    except bus.RedisUnavailable as exc:
        raise CliError(f"{exc} (set STORMALERT_REDIS_URL or start `stormalert up`)") from None
    return r


def read_password() -> str:
    if sys.stdin.isatty():
        first = getpass.getpass("Password: ")
        if getpass.getpass("Again: ") != first:
            raise CliError("passwords differ")
        return first
    return sys.stdin.readline().rstrip("\n")


def cmd_user(args: argparse.Namespace) -> None:
    r = connect()
    if args.user_cmd == "add":
        store.add_user(r, args.name, read_password(), admin=args.admin)
        print(f"user {args.name} added" + (" (admin)" if args.admin else ""))
    elif args.user_cmd == "channel" and args.name == "test" and "://" not in args.url:
        # `user channel test NAME`; `user channel test URL` still adds a channel to "test".
        store.require_user(r, args.url)
        only = ["--channel", args.channel] if args.channel else []
        run_admin("notify.admin", ["channel-test", args.url, *only])
    elif args.user_cmd == "channel":
        store.add_channel(r, args.name, args.url, tag=args.tag)
        print(f"channel {store.redact(args.url)} added to {args.name} as {args.tag!r}")
    elif args.user_cmd == "prefs":
        cmd_prefs(r, args)
    elif args.user_cmd == "list":
        for name in store.list_users(r):
            record = store.get_user(r, name) or {}
            channels = store.list_channels(r, name)
            admin = " admin" if record.get("admin") == "1" else ""
            prefs = prefs_text(store.get_prefs(r, name))
            print(f"{name}{admin} channels={len(channels)} {prefs}")


def prefs_text(prefs: store.NotifyPrefs) -> str:
    limit = "default" if prefs.max_per_minute is None else str(prefs.max_per_minute)
    quiet = f"{prefs.quiet_text()} IST" if prefs.quiet else "off"
    return f"max_per_minute={limit} quiet={quiet}"


def cmd_prefs(r: redis.Redis, args: argparse.Namespace) -> None:
    """Show, set or clear a user's preferences; every value is checked before any write."""
    name = args.name
    store.require_user(r, name)
    limit, quiet = args.max_per_minute, args.quiet
    if limit not in (None, "default"):
        store.parse_max_per_minute(limit)
    if quiet not in (None, "off"):
        store.parse_quiet(quiet)
    cleared = tuple(field for field, off in (("max_per_minute", limit == "default"),
                                             ("quiet", quiet == "off")) if off)
    if args.clear or cleared:
        store.clear_prefs(r, name, store.PREF_FIELDS if args.clear else cleared)
    prefs = store.set_prefs(r, name, max_per_minute=None if limit == "default" else limit,
                            quiet=None if quiet == "off" else quiet)
    print(f"{name}: {prefs_text(prefs)}")


def run_admin(module: str, argv: list[str]) -> None:
    """Run a process's admin module in place of this process (deploy does not import the
    processes), with the Redis this command would use (``var/redis.url`` included)."""
    url = redis_url()
    os.environ["STORMALERT_REDIS_URL"] = url
    os.execv(sys.executable, [sys.executable, "-m", module, *argv])


def cmd_rule(args: argparse.Namespace) -> None:
    r = connect()
    if args.rule_cmd == "add":
        rule = store.add_rule(r, parse_rule(args.json, user=args.user))
        print(rule.id)
    elif args.rule_cmd == "list":
        for rule in store.list_rules(r, args.user):
            state = "active" if rule.active else "inactive"
            print(f"{rule.id}\t{rule.user}\t{rule.symbol}\t{rule.kind}\t"
                  f"{orjson.dumps(rule.params).decode()}\t{rule.frequency}\t{state}")
    elif args.rule_cmd == "rm":
        store.remove_rule(r, args.id)
        print(f"rule {args.id} removed")


def cmd_status(args: argparse.Namespace) -> None:
    from deploy.status import collect, render

    status = collect(connect())
    print(orjson.dumps(status, option=orjson.OPT_INDENT_2).decode() if args.json
          else render(status))


def cmd_up(args: argparse.Namespace) -> int:
    from deploy.up import UpSettings, run

    s = load(UpSettings, feed=args.feed, shards=args.shards, port=args.port)
    return run(s)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="stormalert", description="Real-time stock alerts.")
    sub = p.add_subparsers(dest="cmd", required=True)
    up = sub.add_parser("up", help="run everything (embedded Redis and simulator by default)")
    up.add_argument("--feed", choices=["sim", "kite", "upstox"])
    up.add_argument("--shards", type=int)
    up.add_argument("--port", type=int, help="dashboard port (default 8000)")
    for name, module in PROCESS_COMMANDS.items():
        sub.add_parser(name, help=f"run `python -m {module}` (see its --help)", add_help=False)
    user = sub.add_parser("user", help="users and their notification channels")
    usub = user.add_subparsers(dest="user_cmd", required=True)
    add = usub.add_parser("add", help="add a user; the password is read from stdin")
    add.add_argument("name")
    add.add_argument("--admin", action="store_true")
    ch = usub.add_parser("channel", help="add an apprise URL (tgram://, mailto://, json://, …);"
                         " `channel test NAME` sends a test message to NAME's channels")
    ch.add_argument("name")
    ch.add_argument("url")
    ch.add_argument("--tag", default="default", help="rules route to channels by tag")
    ch.add_argument("--channel", help="with `test`: only this channel (id or scheme:id)")
    prefs = usub.add_parser("prefs", help="show or set notification preferences")
    prefs.add_argument("name")
    prefs.add_argument("--max-per-minute", metavar="N|default",
                       help="alerts a minute sent one by one, the rest in a digest (0: no limit)")
    prefs.add_argument("--quiet", metavar="HH:MM-HH:MM|off",
                       help="quiet hours (IST): alerts held for a digest at their end")
    prefs.add_argument("--clear", action="store_true", help="back to the defaults")
    usub.add_parser("list")
    for name, module in ADMIN_COMMANDS.items():
        sub.add_parser(name, help=f"alerts and their delivery log (`python -m {module}`)",
                       add_help=False)
    rule = sub.add_parser("rule", help="alert rules")
    rsub = rule.add_subparsers(dest="rule_cmd", required=True)
    radd = rsub.add_parser("add", help="add a rule; prints its id")
    radd.add_argument("--user", required=True)
    radd.add_argument("--json", required=True, help="the rule as JSON")
    rlist = rsub.add_parser("list")
    rlist.add_argument("--user")
    rrm = rsub.add_parser("rm")
    rrm.add_argument("id")
    status = sub.add_parser("status", help="processes, streams, lag, latency")
    status.add_argument("--json", action="store_true")
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in PROCESS_COMMANDS:
        module = PROCESS_COMMANDS[argv[0]]
        os.execv(sys.executable, [sys.executable, "-m", module, *argv[1:]])
    if argv and argv[0] in ADMIN_COMMANDS:
        run_admin(ADMIN_COMMANDS[argv[0]], argv)
    args = parser().parse_args(argv)
    handlers: dict[str, Callable[[argparse.Namespace], int | None]] = {
        "user": cmd_user, "rule": cmd_rule, "status": cmd_status}
    try:
        if args.cmd == "up":
            return cmd_up(args)
        return handlers[args.cmd](args) or 0
    except (CliError, store.StoreError, RuleError) as exc:
        print(f"stormalert {args.cmd}: {exc}", file=sys.stderr)
        return 1
    except redis.RedisError as exc:
        print(f"stormalert {args.cmd}: Redis error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
