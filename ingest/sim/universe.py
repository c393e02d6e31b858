"""The simulator's instrument universe and its Kite REST instruments dump.

Always holds NSE:INFY, NSE:RELIANCE, NSE:TCS (their real tokens) and the index NSE:NIFTY 50,
then the real NSE rows shipped in ``data/instruments_nse.csv`` (from zerodha/kiteconnect-mocks),
then generated instruments over several segments (so every price divisor is exercised) up to
the requested size.
"""

from __future__ import annotations

import csv
import gzip
import io
import random
from dataclasses import dataclass
from importlib import resources

from ingest.kite import SEGMENT_INDICES, divisor_for

CSV_COLUMNS = ("instrument_token", "exchange_token", "tradingsymbol", "name", "last_price",
               "expiry", "strike", "tick_size", "lot_size", "instrument_type", "segment",
               "exchange")
NAMED = ("NSE:INFY", "NSE:RELIANCE", "NSE:TCS", "NSE:NIFTY 50")
MIN_SYMBOLS = len(NAMED)

# exchange, segment name, segment id, instrument type, price range in rupees
_GENERATED_KINDS = (
    ("NSE", "NSE", 1, "EQ", (20.0, 4000.0)),
    ("BSE", "BSE", 4, "EQ", (20.0, 4000.0)),
    ("CDS", "CDS-FUT", 3, "FUT", (50.0, 120.0)),
    ("BCD", "BCD-FUT", 6, "FUT", (50.0, 120.0)),
    ("MCX", "MCX-FUT", 7, "FUT", (100.0, 90000.0)),
    ("NCO", "NCO-FUT", 12, "FUT", (100.0, 9000.0)),
)


@dataclass(frozen=True, slots=True)
class Instrument:
    token: int
    exchange_token: int
    tradingsymbol: str
    name: str
    exchange: str
    segment: str
    instrument_type: str
    tick_size: float
    lot_size: int
    price: float  # the simulator's starting price (previous close), rupees

    @property
    def symbol(self) -> str:
        return f"{self.exchange}:{self.tradingsymbol}"

    @property
    def is_index(self) -> bool:
        return self.token & 0xFF == SEGMENT_INDICES

    @property
    def divisor(self) -> float:
        return divisor_for(self.token & 0xFF)

    def csv_row(self) -> tuple[object, ...]:
        return (self.token, self.exchange_token, self.tradingsymbol, self.name, 0.0, "", 0.0,
                self.tick_size, self.lot_size, self.instrument_type, self.segment, self.exchange)


def _named() -> list[Instrument]:
    def eq(exchange_token: int, ts: str, name: str, price: float) -> Instrument:
        return Instrument(exchange_token << 8 | 1, exchange_token, ts, name, "NSE", "NSE", "EQ",
                          0.05, 1, price)

    return [
        eq(1594, "INFY", "INFOSYS", 1573.7),
        eq(2885, "RELIANCE", "RELIANCE INDUSTRIES", 2450.0),
        eq(11536, "TCS", "TATA CONSULTANCY SERV LT", 3400.0),
        Instrument(1001 << 8 | SEGMENT_INDICES, 1001, "NIFTY 50", "NIFTY 50", "NSE", "INDICES",
                   "EQ", 0.0, 0, 24000.0),
    ]


def _seed_rows(rng: random.Random) -> list[Instrument]:
    text = resources.files("ingest.sim").joinpath("data/instruments_nse.csv").read_text()
    out = []
    for row in csv.DictReader(io.StringIO(text)):
        out.append(Instrument(
            int(row["instrument_token"]), int(row["exchange_token"]), row["tradingsymbol"],
            row["name"], row["exchange"], row["segment"], row["instrument_type"],
            float(row["tick_size"]), int(row["lot_size"]), round(rng.uniform(20, 3000), 1)))
    return out


def _generated(rng: random.Random, start: int, count: int) -> list[Instrument]:
    out = []
    for n in range(count):
        exchange, segment, seg_id, itype, (lo, hi) = _GENERATED_KINDS[n % len(_GENERATED_KINDS)]
        exchange_token = 900_000 + start + n
        ts = f"SIM{n:05d}" if itype == "EQ" else f"SIM{n:05d}FUT"
        tick = 0.0025 if seg_id in (3, 6) else 0.05
        out.append(Instrument(exchange_token << 8 | seg_id, exchange_token, ts,
                              f"SIMULATED {n}", exchange, segment, itype, tick, 1,
                              round(rng.uniform(lo, hi), 2)))
    return out


def build(symbols: int, seed: int) -> list[Instrument]:
    """The first ``symbols`` instruments (at least the four named ones)."""
    rng = random.Random(seed)
    named = _named()
    taken = {i.symbol for i in named} | {i.token for i in named}
    rows = [i for i in _seed_rows(rng) if i.symbol not in taken and i.token not in taken]
    universe = (named + rows)[: max(symbols, MIN_SYMBOLS)]
    missing = max(symbols, MIN_SYMBOLS) - len(universe)
    if missing > 0:
        universe += _generated(rng, len(universe), missing)
    return universe


def instruments_csv_gz(instruments: list[Instrument], exchange: str | None = None) -> bytes:
    """The REST dump body: gzipped CSV in Kite's column order, optionally one exchange."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for inst in instruments:
        if exchange is None or inst.exchange == exchange:
            writer.writerow(inst.csv_row())
    return gzip.compress(buf.getvalue().encode(), mtime=0)
