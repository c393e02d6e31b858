"""The shard's checkpoint document (engine.checkpoint.encode/restore_book): every rule, the
open bars and the previous closes come back so that the restored shard continues exactly;
a rule whose state is not JSON is left out alone; the field-per-rule layout of format 1
still restores."""

import zlib

import orjson

from engine import checkpoint
from engine.bars import BarBuilder
from engine.book import Book
from proto.rules import parse_rule
from tests.engine.test_crash import RULES, make_entries


def armed_book() -> Book:
    book = Book()
    for body in RULES:
        book.put(parse_rule(body, user="alice"))
    return book


def run(book: Book, bars: BarBuilder, batches) -> list[tuple[str, int]]:
    fired = []
    for n, batch in enumerate(batches):
        for tick in batch:
            bars.on_tick(tick.sym, tick.ltp, tick.ts, tick.vol)
            pc = tick.ltp * 1.01 if n % 7 == 0 else None  # now and then a previous close
            fired += [(f.rule.id, tick.ts) for f in book.on_tick(tick.sym, tick.ltp, tick.ts, pc)]
    return fired


def test_a_restored_shard_state_continues_exactly():
    batches = make_entries(300, 10)
    whole, whole_bars = armed_book(), BarBuilder()
    expected = run(whole, whole_bars, batches)

    first, first_bars = armed_book(), BarBuilder()
    fired = run(first, first_bars, batches[:150])
    doc = checkpoint.encode(first, first_bars)
    second, second_bars = armed_book(), BarBuilder()
    assert checkpoint.restore_book(second, second_bars,
                                   {checkpoint.STATE_FIELD: doc}) == len(second)
    assert second.prev_close == first.prev_close and second.prev_close
    assert second_bars.open == first_bars.open and second_bars.last_vol == first_bars.last_vol
    fired += run(second, second_bars, batches[150:])
    assert fired == expected and len(expected) > 20
    assert whole_bars.open == second_bars.open


def test_an_edited_rule_starts_over_and_a_state_that_is_not_json_is_left_out():
    book, bars = armed_book(), BarBuilder()
    run(book, bars, make_entries(50, 10))
    book.by_id["t0"].evaluator.peak = {1, 2}  # type: ignore[attr-defined]  # not JSON
    doc = checkpoint.decode(checkpoint.encode(book, bars))
    assert "t0" not in doc["rules"] and "t1" in doc["rules"]

    edited = armed_book()
    edited.put(parse_rule({**RULES[1], "params": {"pct": 0.9}}, user="alice"))  # t1
    saved = {checkpoint.STATE_FIELD: zlib.compress(orjson.dumps(doc))}
    assert checkpoint.restore_book(edited, BarBuilder(), saved) == len(RULES) - 2
    assert doc["rules"]["t1"]["ev"]["peak"] is not None
    assert edited.by_id["t1"].evaluator.peak is None  # type: ignore[attr-defined]


def test_the_field_per_rule_layout_still_restores():
    book, bars = armed_book(), BarBuilder()
    run(book, bars, make_entries(50, 10))
    doc = checkpoint.decode(checkpoint.encode(book, bars))
    legacy = {rule_id: orjson.dumps(state) for rule_id, state in doc["rules"].items()}
    legacy[checkpoint.BARS_FIELD] = orjson.dumps(doc["bars"])
    legacy[checkpoint.PREV_CLOSE_FIELD] = orjson.dumps(doc["pc"])
    again, again_bars = armed_book(), BarBuilder()
    assert checkpoint.restore_book(again, again_bars, legacy) == len(again)
    assert checkpoint.decode(checkpoint.encode(again, again_bars)) == doc
