"""The event types that travel on the streams, and their codec to and from stream fields.

A tick entry on ``sa:ticks:{i}`` is either one tick as flat fields, or a batch:
``n`` (count) and ``ticks`` (a JSON array of tick objects with the same field names).
Ingest writes batches; readers accept both. Every value is text a person can read in
``redis-cli XRANGE``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import msgspec
import orjson

Fields = dict[str, str]

TICK_REQUIRED = ("sym", "tok", "src", "ltp", "vol", "ts", "rx")
TICK_OPTIONAL = ("oi", "bid", "ask", "pc", "o", "h", "l")


class CodecError(ValueError):
    """A stream entry that cannot be read as the event it claims to be."""


class Tick(msgspec.Struct, gc=False, omit_defaults=True):
    """One market-data tick. A C-level struct (msgspec) rather than a dataclass: ingest builds
    one per feed packet and the engine one per tick read, and construction here costs a
    third of a slotted dataclass's. Fields hold only scalars, so the cycle GC may skip them;
    absent optional fields (None) are left out when msgspec encodes it, as in ``to_dict``."""

    sym: str
    tok: str
    src: str
    ltp: float
    vol: int
    ts: int  # exchange time, epoch ms
    rx: int  # ingest receive time, epoch µs
    oi: float | None = None
    bid: float | None = None
    ask: float | None = None
    pc: float | None = None
    o: float | None = None
    h: float | None = None
    l: float | None = None  # noqa: E741 - the contract's field name

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "sym": self.sym, "tok": self.tok, "src": self.src, "ltp": self.ltp,
            "vol": self.vol, "ts": self.ts, "rx": self.rx,
        }
        for name in TICK_OPTIONAL:
            value = getattr(self, name)
            if value is not None:
                d[name] = value
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Tick:
        try:
            return cls(
                sym=str(d["sym"]), tok=str(d["tok"]), src=str(d["src"]),
                ltp=float(d["ltp"]), vol=int(d["vol"]), ts=int(d["ts"]), rx=int(d["rx"]),
                oi=_opt_float(d.get("oi")), bid=_opt_float(d.get("bid")),
                ask=_opt_float(d.get("ask")), pc=_opt_float(d.get("pc")),
                o=_opt_float(d.get("o")), h=_opt_float(d.get("h")), l=_opt_float(d.get("l")),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise CodecError(f"bad tick {d!r}: {exc}") from exc


def _opt_float(value: Any) -> float | None:
    return None if value is None or value == "" else float(value)


# Ticks are msgspec structs: encoded and decoded in C, absent optional fields left out.
# Lax decoding also reads numbers written as strings.
_encode_ticks = msgspec.json.Encoder().encode
_decode_ticks = msgspec.json.Decoder(list[Tick], strict=False).decode


def encode_ticks_json(ticks: list[Tick]) -> bytes:
    """The ``ticks`` field of a batch entry: a JSON array of tick objects."""
    return _encode_ticks(ticks)


def encode_tick_batch(ticks: list[Tick]) -> Fields:
    """One stream entry holding a batch of ticks."""
    return {"n": str(len(ticks)), "ticks": encode_ticks_json(ticks).decode()}


def encode_tick(tick: Tick) -> Fields:
    """One stream entry holding one tick as flat fields."""
    return {k: str(v) for k, v in tick.to_dict().items()}


def decode_ticks(fields: Fields) -> list[Tick]:
    """The ticks of one stream entry, batch or flat. Raises CodecError on a malformed entry."""
    batch = fields.get("ticks")
    if batch is None:
        return [Tick.from_dict(fields)]
    try:
        return _decode_ticks(batch)
    except msgspec.DecodeError as exc:  # ValidationError included
        raise CodecError(f"bad ticks field: {exc}") from exc


@dataclass(slots=True)
class Alert:
    """One firing of one rule. ``id`` is derived from the rule and the firing tick."""

    id: str
    rule: str
    user: str
    sym: str
    kind: str
    ltp: float
    ts: int  # exchange time of the firing tick, epoch ms
    rx: int  # ingest receive time of the firing tick, epoch µs
    at: int  # engine emit time, epoch µs
    msg: str
    channels: list[str] = field(default_factory=lambda: ["default"])
    ref: dict[str, float] = field(default_factory=dict)

    def to_fields(self) -> Fields:
        return {
            "id": self.id, "rule": self.rule, "user": self.user, "sym": self.sym,
            "kind": self.kind, "ltp": repr(self.ltp), "ts": str(self.ts), "rx": str(self.rx),
            "at": str(self.at), "msg": self.msg,
            "channels": ",".join(self.channels),
            "ref": orjson.dumps(self.ref).decode(),
        }

    @classmethod
    def from_fields(cls, f: Fields) -> Alert:
        try:
            return cls(
                id=f["id"], rule=f["rule"], user=f["user"], sym=f["sym"], kind=f["kind"],
                ltp=float(f["ltp"]), ts=int(f["ts"]), rx=int(f["rx"]), at=int(f["at"]),
                msg=f["msg"],
                channels=[c for c in f.get("channels", "default").split(",") if c],
                ref=orjson.loads(f["ref"]) if f.get("ref") else {},
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise CodecError(f"bad alert entry: {exc}") from exc

    def latency_us(self) -> int:
        """Ingest receive to engine emit."""
        return self.at - self.rx


def quote_json(tick: Tick, bar: list[float] | None = None) -> str:
    """The latest-quote record kept per symbol in ``sa:quotes`` for the dashboard; ``bar`` is
    the open one-minute bar ``[start_ms, o, h, l, c, v]`` when the engine has one."""
    q: dict[str, Any] = {"ltp": tick.ltp, "ts": tick.ts, "vol": tick.vol}
    if bar is not None:
        q["bar"] = bar
    if tick.pc:
        q["pc"] = tick.pc
        q["chg_pct"] = round((tick.ltp / tick.pc - 1) * 100, 3)
    return orjson.dumps(q).decode()
