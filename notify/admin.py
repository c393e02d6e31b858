"""``python -m notify.admin``: the notifier's side of the ``stormalert`` command, run by it
as a subprocess (deploy never imports notify): a test message to a user's channels
(``stormalert user channel test NAME``) and the delivery log of alerts (``stormalert alerts
show ID`` / ``alerts list``).

Channels are shown as ``scheme:channel-id`` (``store.redact``), never their URL; the errors
in delivery records and test outcomes were scrubbed of URL parts by ``notify.send``.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

import orjson
import redis

from notify.deliver import Deliverer
from notify.send import Channel, SendOutcome, warm_up
from notify.settings import NotifySettings
from notify.testmsg import send_test
from proto import bus, delivery, store
from proto.delivery import NotFound
from proto.display import format_ist
from proto.runtime import Stats
from proto.settings import load

__all__ = ["NotFound", "channel_test", "main"]


# A test message ------------------------------------------------------------------------


def channel_test(r: redis.Redis, s: NotifySettings, name: str, only: str | None) -> bool:
    """Send a test message to each of ``name``'s channels (or the one ``only``) the way
    alerts are sent; prints one line per channel; True when every send was accepted."""
    store.require_user(r, name)
    channels = [Channel(c["id"], c["url"], c["tag"]) for c in store.list_channels(r, name)]
    if only is not None:
        channels = [c for c in channels if only in (c.id, c.label())]
        if not channels:
            raise NotFound(f"user {name!r} has no channel {only!r}")
    if not channels:
        raise NotFound(f"user {name!r} has no channels: add one with `stormalert user channel`")
    warm_up()
    outcomes = asyncio.run(_send_each(channels, name, s))
    for channel, outcome in zip(channels, outcomes, strict=True):
        result = "ok" if outcome.ok else f"failed: {outcome.error}"
        print(f"{channel.label()} ({channel.tag}): {result}")
    return all(o.ok for o in outcomes)


async def _send_each(channels: list[Channel], name: str,
                     s: NotifySettings) -> list[SendOutcome]:
    """One try per channel, all at once, through ``Deliverer.send_once``: the notifier's
    own send path (a dead channel's timeout does not delay the others)."""
    ar = bus.aconnect(s.redis_url)
    deliverer = Deliverer(s, ar, Stats("notify-admin"))
    try:
        return list(await asyncio.gather(*(send_test(deliverer, name, c) for c in channels)))
    finally:
        await deliverer.aclose()
        await ar.aclose()


# The delivery log (read by proto.delivery) ----------------------------------------------


def show_text(report: dict[str, Any]) -> str:
    lines = [f"alert {report['id']}"]
    fields = report["alert"]
    if fields:
        lines.append(f"  user {fields.get('user')}  {fields.get('sym')} {fields.get('kind')}"
                     f"  ltp {fields.get('ltp')}  at {format_ist(int(fields.get('ts', 0)))}")
        if fields.get("msg"):
            lines.append(f"  message: {fields['msg']}")
    if "digest_of" in report:
        lines.append(f"  digest of {len(report['digest_of'])} alerts: "
                     + ", ".join(report["digest_of"]))
    if report["folded_into"]:
        lines.append(f"  folded into {report['folded_into']} "
                     f"(stormalert alerts show {report['folded_into']})")
    if not report["deliveries"]:
        lines.append("  delivery: no record" if not report["folded_into"] else "")
    for row in report["deliveries"]:
        latency = "" if row["latency_ms"] is None else f"  latency={row['latency_ms']} ms"
        error = f"  error: {row['error']}" if row["error"] else ""
        tag = f" ({row['tag']})" if row["tag"] else ""
        lines.append(f"  {row['channel']}{tag}  {row['status']}  attempts={row['attempts']}"
                     f"{latency}{error}")
    return "\n".join(line for line in lines if line)


def summary(report: dict[str, Any]) -> str:
    if report["folded_into"]:
        return f"folded into {report['folded_into']}"
    statuses = [row["status"] for row in report["deliveries"]]
    if not statuses:
        return "no record"
    counts = {s: statuses.count(s) for s in sorted(set(statuses))}
    return ", ".join(f"{status} {n}/{len(statuses)}" for status, n in counts.items())


def list_alerts(r: redis.Redis, user: str | None, last: int) -> list[dict[str, Any]]:
    return [{"alert": fields, **delivery.run(r, delivery.read_delivery(
                fields.get("id", ""), fields.get("user", "")))}
            for fields in delivery.run(r, delivery.newest_alerts(user, last))]


def cmd_alerts(r: redis.Redis, args: argparse.Namespace) -> None:
    if args.alerts_cmd == "show":
        report = delivery.run(r, delivery.alert_report(args.id))
        print(orjson.dumps(report).decode() if args.json else show_text(report))
        return
    if args.user is not None:
        store.require_user(r, args.user)
    for report in list_alerts(r, args.user, args.last):
        if args.json:
            print(orjson.dumps(report).decode())
            continue
        f = report["alert"]
        print(f"{format_ist(int(f.get('ts', 0)))}\t{report['id']}\t{f.get('user')}\t"
              f"{f.get('sym')}\t{f.get('kind')}\t{f.get('ltp')}\t{summary(report)}")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m notify.admin",
                                description="Test messages and delivery logs (run by stormalert).")
    sub = p.add_subparsers(dest="cmd", required=True)
    test = sub.add_parser("channel-test", help="a test message to each of a user's channels")
    test.add_argument("name")
    test.add_argument("--channel", help="only this channel (id or scheme:id)")
    alerts = sub.add_parser("alerts", help="alerts and their delivery log")
    asub = alerts.add_subparsers(dest="alerts_cmd", required=True)
    show = asub.add_parser("show", help="one alert and its delivery per channel")
    show.add_argument("id")
    show.add_argument("--json", action="store_true")
    listing = asub.add_parser("list", help="newest alerts first, with their delivery")
    listing.add_argument("--user")
    listing.add_argument("--last", type=int, default=20, metavar="N")
    listing.add_argument("--json", action="store_true", help="one JSON object per line")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    verb = "user channel test" if args.cmd == "channel-test" else args.cmd
    s = load(NotifySettings)
    r = bus.connect(s.redis_url)
    try:
        bus.check(r, s.redis_url)
        if args.cmd == "channel-test":
            return 0 if channel_test(r, s, args.name, args.channel) else 1
        cmd_alerts(r, args)
        return 0
    except (bus.RedisUnavailable, store.StoreError) as exc:
        print(f"stormalert {verb}: {exc}", file=sys.stderr)
        return 1
    except redis.RedisError as exc:
        print(f"stormalert {verb}: Redis error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
