"""Symbol search for the pages' symbol boxes and ``GET /api/symbols``.

The instrument master (``keys.INSTRUMENTS``, thousands of symbols) is held in the web
process as a ``Catalogue`` and searched there, so a keystroke costs one HLEN, never a scan of
the hash. Ingest writes no version of the master, so the copy is reloaded when the hash's
length changes and, to catch a change that keeps the length (a symbol replaced by another,
a name changed), every ``RELOAD_S`` seconds.

Ranking: case-insensitive, white space runs as one space. A query without ``:`` is looked
for in the trading symbol (the part after the exchange), as typed and with its spaces
removed (``tata motors`` finds TATAMOTORS); one with ``:`` in the whole symbol. Trading
symbols starting with the query come first, then those holding it inside; then instrument
names (``infosys`` finds NSE:INFY, ``state bank`` NSE:SBIN) where a word of the name starts
with the query, then those holding it inside; after ``nse:`` only that exchange's names.
Each symbol comes once, in its best place; within each group shorter trading symbols come
first, then alphabetical order. An exchange alone (``nse:``, or ``nse`` when no trading
symbol holds it) lists that exchange's symbols in the same order. Sorted lists found by
bisection, texts joined in rank order for ``str.find`` and entries known by their place in
the rank order keep a search of 9000 symbols under a millisecond (0.1 to 0.2 ms typically).
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import re
import time
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Iterable, Iterator, Mapping
from operator import attrgetter
from typing import Annotated, Any, NamedTuple, cast

import orjson
import redis
import redis.asyncio as aredis
from litestar import MediaType, Request, get
from litestar.concurrency import sync_to_thread
from litestar.datastructures import State
from litestar.di import NamedDependency, Provide
from litestar.exceptions import ValidationException
from litestar.params import FromQuery, QueryParameter
from markupsafe import escape

from proto import keys, store
from web.views import User

log = logging.getLogger("stormalert.web")

MAX_QUERY = 64
DEFAULT_LIMIT = 10
MAX_LIMIT = 50
RELOAD_S = 60.0
# While ingest is storing the master chunk by chunk its length changes on every keystroke's
# check; this bounds the reloads that causes.
MIN_RELOAD_GAP_S = 1.0
PAST_EVERY_PREFIX = chr(0x10FFFF)
AROUND_COLON = re.compile(r" ?: ?")


class Entry(NamedTuple):
    symbol: str  # as stored: EXCHANGE:TRADINGSYMBOL
    name: str  # the instrument's name from the master ("" when it has none)
    full: str  # the symbol, lower case
    trading: str  # the trading symbol, lower case
    exchange: str  # the exchange, lower case ("" when the symbol has none)
    words: str  # the name, normalised as a query is

    @property
    def rank(self) -> tuple[int, str]:
        return len(self.trading), self.symbol


def make_entry(symbol: str, name: str = "") -> Entry:
    full = symbol.lower()
    exchange, colon, trading = full.partition(":")
    return Entry(symbol, name, full, trading if colon else full, exchange if colon else "",
                 normalise_query(name))


def instrument_name(record: str) -> str:
    """The ``name`` of a stored instrument record (``{"tok", "src", "name"}``), or ""."""
    try:
        value = orjson.loads(record)
    except orjson.JSONDecodeError:
        return ""
    name = value.get("name") if isinstance(value, dict) else None
    return name if isinstance(name, str) else ""


def normalise_query(query: str) -> str:
    """Lower case, ends trimmed, inner runs of white space as one space (``NIFTY  5``), none
    around the exchange's colon (``nse : infy``)."""
    return AROUND_COLON.sub(":", " ".join(query.split()).lower())


def word_starts(text: str) -> list[int]:
    """Where the words of a name begin: its start, and each letter or digit that follows
    anything else (``larsen & toubro``, ``bajaj-auto``)."""
    return [i for i, char in enumerate(text)
            if char.isalnum() and (i == 0 or not text[i - 1].isalnum())]


def starting_with(prefix: str, texts: list[str], places: list[int]) -> list[int]:
    """The places of the entries whose text starts with ``prefix``: ``texts`` are sorted, so
    those form one run, found by bisection (``places[i]`` is the place of ``texts[i]``)."""
    lo = bisect_left(texts, prefix)
    return places[lo:bisect_left(texts, prefix + PAST_EVERY_PREFIX, lo)]


def sorted_texts(texts: Iterable[tuple[str, int]]) -> tuple[list[str], list[int]]:
    """``(text, place)`` pairs as the sorted texts and, beside them, their places."""
    pairs = sorted(texts)
    return [text for text, _ in pairs], [place for _, place in pairs]


class Haystack:
    """One text of each entry, in rank order, joined into one string: ``str.find`` walks it at
    C speed, and the first entries it finds are the best ranked. Queries hold no newline
    (``normalise_query``), so a match never spans two texts."""

    def __init__(self, texts: list[tuple[str, int]]) -> None:
        self._places = [place for _, place in texts]
        self._starts: list[int] = []
        at = 0
        for text, _ in texts:
            self._starts.append(at)
            at += len(text) + 1
        self._joined = "\n".join(text for text, _ in texts)

    def holding(self, q: str) -> Iterator[int]:
        """The places of the entries whose text holds ``q``, best ranked first."""
        at = self._joined.find(q)
        while at >= 0:
            i = bisect_right(self._starts, at) - 1
            yield self._places[i]
            if i + 1 == len(self._starts):
                return
            at = self._joined.find(q, self._starts[i + 1])


class Picks:
    """The result being filled tier by tier, as places in the rank order (so the best of a
    tier are its smallest numbers): each tier adds its best not yet taken."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.places: list[int] = []
        self.taken: set[int] = set()

    @property
    def full(self) -> bool:
        return len(self.places) >= self.limit

    def add(self, places: Iterable[int]) -> None:
        """Adds the best of ``places`` (in any order, possibly repeated)."""
        if not self.full:
            fresh = set(places) - self.taken
            self.add_ranked(heapq.nsmallest(self.limit - len(self.places), fresh))

    def add_ranked(self, places: Iterable[int]) -> None:
        """Adds the first of ``places``, which come best ranked first."""
        for place in places:
            if self.full:
                return
            if place not in self.taken:
                self.places.append(place)
                self.taken.add(place)


class Catalogue:
    """An immutable, searchable copy of the instrument master. Entries are held in rank
    order and known elsewhere by their place in it."""

    def __init__(self, entries: list[Entry]) -> None:
        self.size = len(entries)
        self._ranked = ranked = sorted(entries, key=attrgetter("rank"))
        trading = [(e.trading, i) for i, e in enumerate(ranked)]
        full = [(e.full, i) for i, e in enumerate(ranked)]
        self._trading = sorted_texts(trading)
        self._full = sorted_texts(full)
        self._in_trading = Haystack(trading)
        self._in_full = Haystack(full)
        self._in_names = Haystack([(e.words, i) for i, e in enumerate(ranked) if e.words])
        # Each name once for every word it has, from that word on: a name holds a query at
        # the start of one of its words when one of these starts with the query.
        self._tails = sorted_texts((e.words[at:], i) for i, e in enumerate(ranked)
                                   for at in word_starts(e.words))
        self._by_exchange: dict[str, list[Entry]] = {}
        for entry in ranked:
            self._by_exchange.setdefault(entry.exchange, []).append(entry)

    @classmethod
    def from_records(cls, records: Mapping[str, str]) -> Catalogue:
        return cls([make_entry(sym, instrument_name(rec)) for sym, rec in records.items()])

    def search(self, query: str, limit: int = DEFAULT_LIMIT) -> list[Entry]:
        """At most ``limit`` (1..MAX_LIMIT) entries matching ``query``, best first."""
        q = normalise_query(query)
        picks = Picks(max(1, min(limit, MAX_LIMIT)))
        exchange, colon, rest = q.partition(":")
        if colon:
            if not rest:  # "nse:": the exchange's symbols
                return self._by_exchange.get(exchange, [])[:picks.limit] if exchange else []
            self._symbols([q], self._full, self._in_full, picks)
            self._names(rest, picks, exchange or None)  # ":infosys": any exchange
        elif q:
            spaceless = q.replace(" ", "")  # "tata motors" finds TATAMOTORS
            self._symbols(list(dict.fromkeys([q, spaceless])), self._trading,
                          self._in_trading, picks)
            if not picks.places and q in self._by_exchange:  # "nse" held by no symbol
                return self._by_exchange[q][:picks.limit]
            self._names(q, picks)
        return [self._ranked[place] for place in picks.places]

    @staticmethod
    def _symbols(queries: list[str], texts: tuple[list[str], list[int]], haystack: Haystack,
                 picks: Picks) -> None:
        """Adds the entries whose text holds one of ``queries``: at the start before inside."""
        for q in queries:
            picks.add(starting_with(q, *texts))
        for q in queries:
            picks.add_ranked(haystack.holding(q))

    def _names(self, q: str, picks: Picks, exchange: str | None = None) -> None:
        """Adds the entries whose name holds ``q``: at the start of one of its words before
        inside; only those of ``exchange`` when given."""
        if picks.full:
            return
        at_word: Iterable[int] = starting_with(q, *self._tails)
        inside = self._in_names.holding(q)
        if exchange is not None:
            at_word = (i for i in at_word if self._ranked[i].exchange == exchange)
            inside = (i for i in inside if self._ranked[i].exchange == exchange)
        picks.add(at_word)
        picks.add_ranked(inside)


class SymbolIndex:
    """The web process's copy of the instrument master, kept fresh (see the module doc)."""

    def __init__(self, reload_s: float = RELOAD_S, *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._reload_s = reload_s
        self._clock = clock
        self._catalogue = Catalogue([])
        self._records: dict[str, str] = {}  # what the catalogue was built from
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
        # The periodic reload mostly finds the master unchanged: comparing the records costs
        # milliseconds, building a catalogue of a whole exchange dump (100k instruments)
        # about a second of CPU, in a thread that shares the GIL with the event loop.
        if records != self._records:
            self._catalogue = await asyncio.to_thread(Catalogue.from_records, records)
            self._records = records
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
        description=("Part of a symbol or of an instrument's name, any case: `infy`, "
                     "`nse:inf`, `nifty 5`, `infosys`, `state bank`; an exchange alone "
                     "(`nse:`) lists its symbols"),
        schema_extra={"maxLength": MAX_QUERY})] = "",
    limit: Annotated[int, QueryParameter(
        description=f"How many symbols at most (1 to {MAX_LIMIT})",
        schema_extra={"minimum": 1, "maximum": MAX_LIMIT})] = DEFAULT_LIMIT,
) -> list[str]:
    """Known symbols matching ``q``, best first (see the module doc): trading symbols starting
    with it, then holding it, then instrument names with a word starting with it, then
    holding it; within each, shorter, then alphabetical. An empty ``q`` gives an empty
    list."""
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
    request: Request[User, Any, Any],
    ar: NamedDependency[aredis.Redis],
    r: NamedDependency[redis.Redis],
    index: NamedDependency[SymbolIndex],
    symbol: FromQuery[str] = "",
) -> str:
    """The suggestions for a symbol box (htmx swaps them into the box's ``<datalist>``; the
    box sends its own field, ``symbol``). An emptied box gets the symbols of the user's own
    rules, the alert filter's first suggestions, back; a query too long to be a symbol
    suggests nothing."""
    if len(symbol) > MAX_QUERY:
        return ""
    if not normalise_query(symbol):
        rules = await sync_to_thread(store.list_rules, r, request.user.name)
        return options_html([make_entry(sym) for sym in sorted({rule.symbol for rule in rules})])
    return options_html(await index.search(ar, symbol, DEFAULT_LIMIT))


ROUTES = [api_symbols, symbol_options]
