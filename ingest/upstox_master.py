"""The Upstox instrument master: fetch the daily gzipped JSON, map instrument keys to our
``EXCHANGE:TRADINGSYMBOL`` symbols, store them in ``sa:instruments``, choose what to subscribe.

Symbols use Kite's exchange names so that one symbol means one instrument whichever feed
carries it: the exchange comes from the Upstox segment (``NSE_FO`` -> ``NFO``, ``NCD_FO`` ->
``CDS``, ``MCX_FO`` -> ``MCX``, ...), and an index is named by its upper-cased ``name``
(``NSE_INDEX|Nifty 50`` -> ``NSE:NIFTY 50``) as Kite names indices.
"""

from __future__ import annotations

import gzip
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import orjson
import redis.asyncio as aredis
import requests

from proto import keys

SOURCE = "upstox"
STORE_CHUNK = 1000
SEGMENT_EXCHANGE = {
    "NSE_EQ": "NSE", "NSE_INDEX": "NSE", "BSE_EQ": "BSE", "BSE_INDEX": "BSE",
    "NSE_FO": "NFO", "BSE_FO": "BFO", "NCD_FO": "CDS", "BCD_FO": "BCD",
    "MCX_FO": "MCX", "MCX_INDEX": "MCX", "NSE_COM": "NCO",
}


class MasterRejected(RuntimeError):
    """The master cannot be had from this URL (HTTP 4xx, not JSON rows): retrying won't help."""


@dataclass(frozen=True, slots=True)
class UpstoxInstrument:
    key: str  # instrument_key, e.g. NSE_EQ|INE009A01021
    symbol: str  # EXCHANGE:TRADINGSYMBOL
    name: str
    segment: str

    def record(self) -> bytes:
        return orjson.dumps({"tok": self.key, "src": SOURCE, "name": self.name})


def symbol_of(row: Mapping[str, Any]) -> str:
    segment = str(row.get("segment") or "")
    exchange = SEGMENT_EXCHANGE.get(segment) or str(row.get("exchange") or segment)
    name = str(row.get("name") or "")
    if segment.endswith("_INDEX") and name:
        return f"{exchange}:{name.upper()}"
    return f"{exchange}:{row['trading_symbol']}"


def from_rows(rows: Iterable[Any]) -> list[UpstoxInstrument]:
    """Instruments from the master's rows; rows without a key or trading symbol are skipped."""
    out = []
    for row in rows:
        if not isinstance(row, dict) or not row.get("instrument_key") \
                or not row.get("trading_symbol"):
            continue
        out.append(UpstoxInstrument(str(row["instrument_key"]), symbol_of(row),
                                    str(row.get("name") or ""), str(row.get("segment") or "")))
    return out


def parse(body: bytes) -> list[UpstoxInstrument]:
    """The master from its bytes, gzipped or not. Raises MasterRejected when not JSON rows."""
    try:
        data = gzip.decompress(body) if body[:2] == b"\x1f\x8b" else body
        rows = orjson.loads(data)
    except (OSError, EOFError, orjson.JSONDecodeError) as exc:
        raise MasterRejected(f"instrument master is not gzipped JSON: {exc}") from None
    if not isinstance(rows, list):
        raise MasterRejected("instrument master is not a JSON array of rows")
    return from_rows(rows)


def fetch(url: str, timeout_s: float = 60.0) -> list[UpstoxInstrument]:
    """The master from an http(s) URL or a local file (blocking: run it in a thread).

    Raises MasterRejected for a 4xx or a body that is not the master; transport failures
    and 5xx (``requests`` exceptions, ``OSError``) go to the caller to retry.
    """
    scheme = urlsplit(url).scheme
    if scheme not in ("http", "https"):
        path = Path(url.removeprefix("file://"))
        try:
            return parse(path.read_bytes())
        except FileNotFoundError:
            raise MasterRejected(f"no instrument master at {path}") from None
    resp = requests.get(url, timeout=timeout_s, headers={"Accept": "application/json"})
    if 400 <= resp.status_code < 500:
        raise MasterRejected(f"{url} answered HTTP {resp.status_code} for the instrument master")
    resp.raise_for_status()
    return parse(resp.content)


def select(instruments: Sequence[UpstoxInstrument], wanted: Sequence[str],
           exchanges: Sequence[str]) -> tuple[list[UpstoxInstrument], list[str]]:
    """What to subscribe, and the requested entries the master does not know.

    ``wanted`` names instruments by instrument key or by symbol; else ``exchanges`` keeps the
    instruments whose segment (``NSE_EQ``) or symbol exchange (``NSE``) is listed; else all.
    """
    if wanted:
        by_key = {i.key: i for i in instruments}
        by_symbol = {i.symbol: i for i in instruments}
        chosen = [by_key.get(w) or by_symbol.get(w) for w in wanted]
        found = list({i.key: i for i in chosen if i is not None}.values())
        return found, [w for w, i in zip(wanted, chosen, strict=True) if i is None]
    if exchanges:
        allowed = set(exchanges)
        return [i for i in instruments
                if i.segment in allowed or i.symbol.split(":", 1)[0] in allowed], []
    return list(instruments), []


async def store(r: aredis.Redis, instruments: Sequence[UpstoxInstrument]) -> None:
    """Upsert our symbols into ``sa:instruments``; other symbols' entries (Kite's) stay."""
    async with r.pipeline(transaction=False) as pipe:
        for start in range(0, len(instruments), STORE_CHUNK):
            chunk = instruments[start:start + STORE_CHUNK]
            pipe.hset(keys.INSTRUMENTS, mapping={i.symbol: i.record() for i in chunk})
        await pipe.execute()
