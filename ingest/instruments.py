"""The Kite instrument master: fetch it, store it in ``sa:instruments``, map tokens to symbols."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
import redis.asyncio as aredis
from kiteconnect import KiteConnect
from kiteconnect import exceptions as kite_errors

from proto import keys

STORE_CHUNK = 1000


class InstrumentsRejected(RuntimeError):
    """The REST API refused the request (bad key/token, bad input): retrying will not help."""


class TokenRefused(InstrumentsRejected):
    """Kite refused the access token (TokenException, HTTP 403): a new login is needed."""


@dataclass(frozen=True, slots=True)
class Instrument:
    token: int
    symbol: str  # EXCHANGE:TRADINGSYMBOL
    name: str
    src: str = "kite"

    def record(self) -> bytes:
        return orjson.dumps({"tok": str(self.token), "src": self.src, "name": self.name})


def from_kite_rows(rows: Iterable[Mapping[str, Any]]) -> list[Instrument]:
    """Instruments from ``KiteConnect.instruments()`` rows (or the CSV's dict rows)."""
    return [Instrument(int(row["instrument_token"]),
                       f"{row['exchange']}:{row['tradingsymbol']}", str(row.get("name") or ""))
            for row in rows]


def fetch_kite(api_url: str, api_key: str, access_token: str,
               timeout_s: float = 30.0) -> list[Instrument]:
    """The whole instruments dump over REST (blocking: run it in a thread).

    Raises TokenRefused for a refused access token, InstrumentsRejected when the API
    refuses us otherwise, and lets transport errors
    (``requests`` exceptions, ``OSError``) through for the caller to retry.
    """
    client = KiteConnect(api_key, access_token=access_token, root=api_url,
                         timeout=int(max(timeout_s, 1)))
    try:
        return from_kite_rows(client.instruments())
    except kite_errors.TokenException as exc:
        raise TokenRefused(f"instruments request refused: {exc}") from None
    except (kite_errors.PermissionException,
            kite_errors.InputException) as exc:
        raise InstrumentsRejected(f"{api_url} refused the instruments request: {exc}") from None


def select(instruments: Sequence[Instrument], symbols: Sequence[str],
           exchanges: Sequence[str]) -> tuple[list[Instrument], list[str]]:
    """The instruments to subscribe, and the requested symbols the master does not know."""
    if symbols:
        by_symbol = {i.symbol: i for i in instruments}
        return ([by_symbol[s] for s in symbols if s in by_symbol],
                [s for s in symbols if s not in by_symbol])
    if exchanges:
        wanted = set(exchanges)
        return [i for i in instruments if i.symbol.split(":", 1)[0] in wanted], []
    return list(instruments), []


def token_map(instruments: Iterable[Instrument]) -> dict[int, str]:
    return {i.token: i.symbol for i in instruments}


async def store(r: aredis.Redis, instruments: Sequence[Instrument]) -> None:
    """Upsert every instrument into ``sa:instruments`` (other feeds' entries stay)."""
    for start in range(0, len(instruments), STORE_CHUNK):
        chunk = instruments[start:start + STORE_CHUNK]
        await r.hset(keys.INSTRUMENTS, mapping={i.symbol: i.record() for i in chunk})


async def remove(r: aredis.Redis, symbols: Iterable[str]) -> int:
    """Drop instruments that left the master (expired contracts, delistings)."""
    gone = list(symbols)
    removed = 0
    for start in range(0, len(gone), STORE_CHUNK):
        removed += await r.hdel(keys.INSTRUMENTS, *gone[start:start + STORE_CHUNK])
    return removed
