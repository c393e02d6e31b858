"""Symbol search for the pages' symbol boxes and ``GET /api/symbols``.

The instrument master (``keys.INSTRUMENTS``, thousands of symbols) is held in the web
process as a ``Catalogue`` and searched there, so a keystroke costs one HLEN, never a scan of
the hash. Ingest writes no version of the master, so the copy is reloaded when the hash's
length changes and, to catch a change that keeps the length (a symbol replaced by another,
a name changed), every ``RELOAD_S`` seconds.

Ranking: case-insensitive; a query without ``:`` is looked for in the trading symbol (the
part after the exchange), one with ``:`` in the whole symbol. Matches at the start come
before matches inside, then shorter trading symbols, then alphabetical order.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import time
from bisect import bisect_left
from collections.abc import Callable, Mapping
from operator import itemgetter
from typing import Annotated, NamedTuple, cast

import orjson
import redis
import redis.asyncio as aredis
from litestar import MediaType, get
from litestar.datastructures import State
from litestar.di import NamedDependency, Provide
from litestar.exceptions import ValidationException
from litestar.params import FromQuery, QueryParameter
from markupsafe import escape

from proto import keys

log = logging.getLogger("stormalert.web")

MAX_QUERY = 64
DEFAULT_LIMIT = 10
MAX_LIMIT = 50
RELOAD_S = 60.0
# While ingest is storing the master chunk by chunk its length changes on every keystroke's
# check; this bounds the reloads that causes.
MIN_RELOAD_GAP_S = 1.0
PAST_EVERY_PREFIX = chr(0x10FFFF)


class Entry(NamedTuple):
    symbol: str  # as stored: EXCHANGE:TRADINGSYMBOL
    name: str  # the instrument's name from the master ("" when it has none)
    full: str  # the symbol, lower case
    trading: str  # the trading symbol, lower case

    @property
    def rank(self) -> tuple[int, str]:
        return len(self.trading), self.symbol


def make_entry(symbol: str, name: str = "") -> Entry:
    full = symbol.lower()
    return Entry(symbol, name, full, full.partition(":")[2] or full)


def instrument_name(record: str) -> str:
    """The ``name`` of a stored instrument record (``{"tok", "src", "name"}``), or ""."""
    try:
        value = orjson.loads(record)
    except orjson.JSONDecodeError:
        return ""
    name = value.get("name") if isinstance(value, dict) else None
    return name if isinstance(name, str) else ""


def normalise_query(query: str) -> str:
    """Lower case, ends trimmed, inner runs of white space as one space (``NIFTY  5``)."""
    return " ".join(query.split()).lower()


class Catalogue:
    """An immutable, searchable copy of the instrument master."""

    def __init__(self, entries: list[Entry]) -> None:
        self.size = len(entries)
        self._by_trading = sorted(entries, key=itemgetter(3))
        self._trading = [e.trading for e in self._by_trading]
        self._by_full = sorted(entries, key=itemgetter(2))
        self._full = [e.full for e in self._by_full]

    @classmethod
    def from_records(cls, records: Mapping[str, str]) -> Catalogue:
        return cls([make_entry(sym, instrument_name(rec)) for sym, rec in records.items()])

    def search(self, query: str, limit: int = DEFAULT_LIMIT) -> list[Entry]:
        """At most ``limit`` (1..MAX_LIMIT) entries matching ``query``, best first."""
        q = normalise_query(query)
        limit = max(1, min(limit, MAX_LIMIT))
        if not q:
            return []
        found, texts = (self._by_full, self._full) if ":" in q else (
            self._by_trading, self._trading)
        # The texts are sorted: those starting with q form one run, found by bisection.
        lo = bisect_left(texts, q)
        hi = bisect_left(texts, q + PAST_EVERY_PREFIX, lo)
        best = heapq.nsmallest(limit, found[lo:hi], key=lambda e: e.rank)
        if len(best) < limit:
            inside = [found[i] for i, text in enumerate(texts) if (i < lo or i >= hi) and q in text]
            best += heapq.nsmallest(limit - len(best), inside, key=lambda e: e.rank)
        return best


class SymbolIndex:
    """The web process's copy of the instrument master, kept fresh (see the module doc)."""

    def __init__(self, reload_s: float = RELOAD_S, *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._reload_s = reload_s
        self._clock = clock
        self._catalogue = Catalogue([])
        self._loaded_at: float | None = None
        self._lock = asyncio.Lock()

    async def catalogue(self, ar: aredis.Redis) -> Catalogue:
        """The current copy, reloaded first when the master changed or it is due. With Redis
        not answering, the copy already loaded is still searched."""
        try:
            if await self._stale(ar):
                async with self._lock:
                    if await self._stale(ar):  # another request may have just reloaded
                        await self._load(ar)
        except (redis.RedisError, OSError) as exc:
            if self._loaded_at is None:
                raise
            log.warning("symbol search: instrument master not reloaded: %s", exc)
        return self._catalogue

    async def search(self, ar: aredis.Redis, query: str,
                     limit: int = DEFAULT_LIMIT) -> list[Entry]:
        if not normalise_query(query):
            return []
        return (await self.catalogue(ar)).search(query, limit)

    async def _stale(self, ar: aredis.Redis) -> bool:
        if self._loaded_at is None:
            return True
        age = self._clock() - self._loaded_at
        if age >= self._reload_s:
            return True
        if age < MIN_RELOAD_GAP_S:
            return False
        return int(await ar.hlen(keys.INSTRUMENTS)) != self._catalogue.size

    async def _load(self, ar: aredis.Redis) -> None:
        records = cast(dict[str, str], await ar.hgetall(keys.INSTRUMENTS))
        self._catalogue = await asyncio.to_thread(Catalogue.from_records, records)
        self._loaded_at = self._clock()


def symbol_index(state: State) -> SymbolIndex:
    """The app's one index (made on first use: each app, and so each event loop, has its own)."""
    index = state.get("symbol_index")
    if index is None:
        index = state.symbol_index = SymbolIndex()
    return cast(SymbolIndex, index)


INDEX = {"index": Provide(symbol_index, sync_to_thread=False)}


@get("/api/symbols", dependencies=INDEX)
async def api_symbols(
    ar: NamedDependency[aredis.Redis],
    index: NamedDependency[SymbolIndex],
    q: Annotated[str, QueryParameter(
        description="Part of a symbol, any case: `infy`, `nse:inf`, `nifty 5`",
        schema_extra={"maxLength": MAX_QUERY})] = "",
    limit: Annotated[int, QueryParameter(
        description=f"How many symbols at most (1 to {MAX_LIMIT})",
        schema_extra={"minimum": 1, "maximum": MAX_LIMIT})] = DEFAULT_LIMIT,
) -> list[str]:
    """Known symbols matching ``q``, best first: those whose trading symbol starts with it
    before those that hold it inside, then shorter, then alphabetical. An empty ``q`` gives
    an empty list."""
    # Checked here rather than by Litestar, whose refusal does not say what was wrong.
    if len(q) > MAX_QUERY:
        raise ValidationException(f"q is {len(q)} characters long; at most {MAX_QUERY} allowed")
    if not 1 <= limit <= MAX_LIMIT:
        raise ValidationException(f"limit must be between 1 and {MAX_LIMIT}")
    return [entry.symbol for entry in await index.search(ar, q, limit)]


def options_html(entries: list[Entry]) -> str:
    """``<option>`` elements for a ``<datalist>``: the symbol, labelled with its name."""
    return "".join(f'<option value="{escape(e.symbol)}">{escape(e.name)}</option>'
                   if e.name else f'<option value="{escape(e.symbol)}"></option>'
                   for e in entries)


@get("/symbol-options", dependencies=INDEX, media_type=MediaType.HTML)
async def symbol_options(
    ar: NamedDependency[aredis.Redis],
    index: NamedDependency[SymbolIndex],
    symbol: FromQuery[str] = "",
) -> str:
    """The suggestions for a symbol box (htmx swaps them into the box's ``<datalist>``; the
    box sends its own field, ``symbol``). A query too long to be a symbol suggests nothing."""
    if len(symbol) > MAX_QUERY:
        return ""
    return options_html(await index.search(ar, symbol, DEFAULT_LIMIT))


ROUTES = [api_symbols, symbol_options]
