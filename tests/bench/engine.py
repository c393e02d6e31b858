"""One engine shard's rule book in-process: 100k rules over 9000 symbols.

Figures: ticks/s; per-tick cost against a book of 11 rules on one symbol (the per-symbol
index should make them alike; goal ≤ 1.5x); against the naive loop that evaluates every
rule on every tick (the reference, same run); memory of the book (goal ≤ 500 MB).

The one-symbol book's ticks are as far apart in time as one symbol's ticks in the big book,
so that cooldowns and windows, and hence firings per tick, are alike in both: the ratio
then measures what the size of the book costs, not a different load. Times are the
process's CPU time (a shared machine preempts us; CPU time does not count that), each the
best of three consecutive slices of the tick stream (the first also builds the per-symbol
runs, which a shard does once per symbol after start or after a change of its rules).
"""

from __future__ import annotations

import argparse
import random
import time
from collections.abc import Callable
from typing import Any

from engine.book import Book
from proto.rules import Rule, parse_rule
from tests.bench.common import machine

KindMix = list[tuple[str, Callable[[float], dict[str, Any]]]]

# The first five kinds. Rule i has kind i % 5 and symbol i % 9000, so with 9000 symbols each
# symbol's rules are of one kind (as in the figures reported so far); --mix all gives every
# symbol rules of several kinds.
KINDS: KindMix = [
    ("cross_above", lambda p: {"level": round(p * 1.01, 2)}),
    ("cross_below", lambda p: {"level": round(p * 0.99, 2)}),
    ("change_pct", lambda p: {"pct": 3}),
    ("trailing_pct", lambda p: {"pct": 1}),
    ("window_pct", lambda p: {"pct": 1, "window_s": 300}),
]
ALL_KINDS: KindMix = [*KINDS,
    ("above", lambda p: {"level": round(p * 1.01, 2)}),
    ("below", lambda p: {"level": round(p * 0.99, 2)}),
    ("channel", lambda p: {"low": round(p * 0.99, 2), "high": round(p * 1.01, 2)}),
    ("volume_spike", lambda p: {"window_s": 60, "factor": 3}),
    ("sma_cross", lambda p: {"fast": 5, "slow": 20}),
    ("ema_cross", lambda p: {"fast": 9, "slow": 21}),
    ("rsi", lambda p: {"period": 14, "above": 70, "below": 30}),
    ("orb", lambda p: {"minutes": 15}),
]


def make_rules(n_rules: int, symbols: list[str], base: dict[str, float],
               kinds: KindMix = KINDS) -> list[Rule]:
    return [parse_rule({"id": f"r{i}", "symbol": (sym := symbols[i % len(symbols)]),
                        "kind": kinds[i % len(kinds)][0],
                        "params": kinds[i % len(kinds)][1](base[sym]), "cooldown_s": 60},
                       user="bench") for i in range(n_rules)]


def make_ticks(symbols: list[str], n: int, seed: int = 1,
               step_ms: int = 1) -> list[tuple[str, float, int]]:
    rnd = random.Random(seed)
    price = {s: 100 + rnd.random() * 3000 for s in symbols}
    out, t = [], 1_700_000_000_000
    for i in range(n):
        sym = symbols[i % len(symbols)] if len(symbols) > 1 else symbols[0]
        price[sym] *= 1 + rnd.gauss(0, 0.001)
        t += step_ms
        out.append((sym, round(price[sym], 2), t))
    return out


def rss_mib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def run_book(book: Book, ticks: list[tuple[str, float, int]],
             slices: int = 3) -> tuple[float, float]:
    """Seconds per tick (the best slice), and firings per tick (all of them)."""
    on_tick = book.on_tick
    best, fired = float("inf"), 0
    size = len(ticks) // slices
    for k in range(slices):
        part = ticks[k * size:(k + 1) * size]
        started = time.process_time()
        for sym, p, t in part:
            fired += len(on_tick(sym, p, t, 1000.0, 0))
        best = min(best, (time.process_time() - started) / len(part))
    return best, fired / (size * slices)


def naive(rules: list[Rule], ticks: list[tuple[str, float, int]]) -> float:
    """Every rule looks at every tick (and ignores other symbols'): seconds per tick."""
    book = Book()
    for rule in rules:
        book.put(rule)
    armed = list(book.by_id.values())
    started = time.process_time()
    for sym, p, t in ticks:
        for a in armed:
            if a.rule.symbol == sym:
                a.on_tick(p, t, 1000.0, 0)
    return (time.process_time() - started) / len(ticks)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="bench engine")
    p.add_argument("--rules", type=int, default=100_000)
    p.add_argument("--symbols", type=int, default=9000)
    p.add_argument("--ticks", type=int, default=300_000)
    p.add_argument("--mix", choices=("classic", "all"), default="classic",
                   help="the first five kinds (default) or every built-in kind")
    args = p.parse_args(argv)
    kinds = ALL_KINDS if args.mix == "all" else KINDS
    print(f"# engine book benchmark on {machine()}")
    symbols = [f"NSE:S{i}" for i in range(args.symbols)]
    ticks = make_ticks(symbols, args.ticks)
    base = {sym: p for sym, p, _t in ticks[: len(symbols)]}
    rss_before = rss_mib()
    rules = make_rules(args.rules, symbols, base, kinds)
    book = Book()
    for rule in rules:
        book.put(rule)
    big, big_fired = run_book(book, ticks)
    grown = rss_mib() - rss_before
    print(f"{args.rules:,} rules over {args.symbols:,} symbols: {1 / big:,.0f} ticks/s "
          f"({big * 1e6:.2f} µs CPU/tick, {big_fired:.3f} firings/tick); the book and its state "
          f"grew the process by {grown:,.0f} MiB (RSS; goal ≤ 500 MB for a whole shard)")
    per_symbol = max(1, args.rules // args.symbols)
    one = [symbols[0]]
    small_book = Book()
    for rule in make_rules(per_symbol, one, base, kinds):
        small_book.put(rule)
    small, small_fired = run_book(small_book, make_ticks(one, args.ticks // 3,
                                                         step_ms=args.symbols))
    print(f"{per_symbol} rules on one symbol: {small * 1e6:.2f} µs CPU/tick "
          f"({small_fired:.3f} firings/tick); ratio big/small {big / small:.2f}x (goal ≤ 1.5x)")
    slow = naive(rules, ticks[:300])
    print(f"reference, naive loop over every rule: {slow * 1e6:,.0f} µs/tick "
          f"({slow / big:,.0f}x slower than the per-symbol index)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
