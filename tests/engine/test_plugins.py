"""Rule-kind plug-ins through a real ``stormalert.rules`` entry point: a distribution
(dist-info with entry_points.txt) on sys.path, found by importlib.metadata."""

import logging
import subprocess
import sys
import textwrap

import orjson
import pytest

from engine.book import Book
from proto.rulekinds import REGISTRY
from proto.rules import RuleError, parse_rule
from tests.helpers import ROOT

S = "NSE:INFY"

GOOD = '''
from pydantic import field_validator
from proto.rulekinds import Params, RuleKind

class EveryParams(Params):
    n: int = 1

    @field_validator("n")
    @classmethod
    def _n(cls, v):
        if v < 1:
            raise ValueError("n must be at least 1")
        return v

class Every:
    def __init__(self, params):
        self.n, self.seen = params.n, 0

    def step(self, p, t, pc, vol):
        self.seen += 1
        return {"seen": self.seen} if self.seen % self.n == 0 else None

    def fired(self, p, t):
        pass

KIND = RuleKind(name="every_nth", params=EveryParams, evaluator=Every,
                describe=lambda params, sym, p, ref: f"{sym} tick {ref['seen']:g} at {p:g}",
                api_version=1)
'''

BAD = '''
from proto.rulekinds import Params, RuleKind
from plug_good import Every, EveryParams

def _boom(*args):
    raise ZeroDivisionError("boom")

class StepRaises(Every):
    def step(self, p, t, pc, vol):
        raise ZeroDivisionError("boom")

class BadRef(Every):
    def step(self, p, t, pc, vol):
        return {"when": object()}

def kind(name, **kw):
    spec = {"name": name, "params": EveryParams, "evaluator": Every,
            "describe": lambda params, sym, p, ref: "ok", "api_version": 1, **kw}
    return RuleKind(**spec)

STEP_RAISES = kind("step_raises", evaluator=StepRaises)
BAD_REF = kind("bad_ref", evaluator=BadRef)
FACTORY_RAISES = kind("factory_raises", evaluator=_boom)
DESCRIBE_RAISES = kind("describe_raises", describe=_boom)
FUTURE = kind("future_kind", api_version=2)
MISNAMED = kind("something_else")
SHADOW = kind("above")

class LooseParams(Params):
    model_config = {"extra": "allow", "frozen": True}

LOOSE = kind("loose", params=LooseParams)
NOT_A_KIND = {"name": "dict_kind"}
'''

REENTRANT = '''
from proto.rules import parse_rule
from plug_good import KIND as GOOD

# Validating a rule while the registry is still loading plug-ins sees those loaded so far.
parse_rule({"symbol": "NSE:INFY", "kind": "every_nth"})
KIND = type(GOOD)(name="reentrant", params=GOOD.params, evaluator=GOOD.evaluator,
                  describe=GOOD.describe, api_version=1)
'''

ENTRY_POINTS = '''
[stormalert.rules]
every_nth = plug_good:KIND
reentrant = plug_reentrant:KIND
step_raises = plug_bad:STEP_RAISES
bad_ref = plug_bad:BAD_REF
factory_raises = plug_bad:FACTORY_RAISES
describe_raises = plug_bad:DESCRIBE_RAISES
future_kind = plug_bad:FUTURE
misnamed = plug_bad:MISNAMED
above = plug_bad:SHADOW
loose = plug_bad:LOOSE
dict_kind = plug_bad:NOT_A_KIND
broken_import = plug_missing:KIND
'''

REJECTED = {
    "future_kind": "targets rule API version 2; this StormAlert speaks version 1",
    "misnamed": "entry point 'misnamed' names a kind called 'something_else'",
    "above": "'above' is a built-in kind",
    "loose": "params model must set extra='forbid' and frozen=True (subclass "
             "proto.rulekinds.Params)",
    "dict_kind": "is a dict, not a proto.rulekinds.RuleKind",
    "broken_import": "import failed: ModuleNotFoundError: No module named 'plug_missing'",
}


def write_dist(root):
    (root / "plug_good.py").write_text(textwrap.dedent(GOOD))
    (root / "plug_bad.py").write_text(textwrap.dedent(BAD))
    (root / "plug_reentrant.py").write_text(textwrap.dedent(REENTRANT))
    info = root / "sa_test_plugins-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: sa-test-plugins\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(ENTRY_POINTS)
    return root


@pytest.fixture
def plugins(tmp_path, monkeypatch, caplog):
    monkeypatch.syspath_prepend(str(write_dist(tmp_path)))
    with caplog.at_level(logging.INFO, logger="proto.rulekinds.registry"):
        REGISTRY.load_plugins()
    yield caplog
    monkeypatch.undo()
    for name in ("plug_good", "plug_bad", "plug_reentrant"):
        sys.modules.pop(name, None)
    REGISTRY.load_plugins()


def test_each_bad_plugin_is_rejected_with_one_clear_line(plugins):
    assert REGISTRY.rejected == REJECTED
    records = plugins.get_records("setup")  # the fixture loaded the plug-ins
    errors = [r.getMessage() for r in records if r.levelno == logging.ERROR]
    assert len(errors) == len(REJECTED)
    assert ("rule plug-in future_kind = plug_bad:FUTURE from sa-test-plugins 1.0 rejected: "
            "targets rule API version 2; this StormAlert speaks version 1") in errors
    assert all("\n" not in line for line in errors)
    assert set(REGISTRY.plugins) == {"every_nth", "reentrant", "step_raises", "bad_ref",
                                     "factory_raises", "describe_raises"}


def test_a_plugin_kind_validates_params_and_fires(plugins):
    with pytest.raises(RuleError, match=r"^params.n: n must be at least 1$"):
        parse_rule({"symbol": S, "kind": "every_nth", "params": {"n": 0}})
    with pytest.raises(RuleError, match=r"params\.colour: Extra inputs are not permitted"):
        parse_rule({"symbol": S, "kind": "every_nth", "params": {"colour": "red"}})
    with pytest.raises(RuleError, match="unknown kind 'future_kind'"):
        parse_rule({"symbol": S, "kind": "future_kind"})
    book = Book()
    book.put(parse_rule({"id": "e", "symbol": S, "kind": "every_nth", "params": {"n": 2}}))
    fired = [f for i in range(5) for f in book.on_tick(S, 100 + i, i * 1000, None)]
    assert [(f.ref, f.msg) for f in fired] == [
        ({"seen": 2}, "NSE:INFY tick 2 at 101"), ({"seen": 4}, "NSE:INFY tick 4 at 103")]


def test_failing_plugin_rules_are_disabled_and_the_others_keep_firing(plugins):
    book = Book()
    for kind in ("step_raises", "bad_ref", "factory_raises", "every_nth"):
        book.put(parse_rule({"id": kind, "symbol": S, "kind": kind}))
    book.put(parse_rule({"id": "lvl", "symbol": S, "kind": "above", "params": {"level": 1}}))
    first = book.on_tick(S, 100, 0, None)
    assert [f.rule.id for f in first] == ["every_nth", "lvl"]
    assert book.errors == 3 and sorted(book.by_id) == ["every_nth", "lvl"]
    assert [f.rule.id for f in book.on_tick(S, 100, 1000, None)] == ["every_nth"]


def test_a_failing_describe_still_sends_the_alert(plugins):
    book = Book()
    book.put(parse_rule({"id": "d", "symbol": S, "kind": "describe_raises"}))
    [firing] = book.on_tick(S, 100, 0, None)
    assert firing.msg == "NSE:INFY describe_raises fired at 100" and book.errors == 0


def test_proto_validates_plugin_kinds_without_the_engine_and_replay_runs_them(tmp_path):
    (tmp_path / "site").mkdir()
    plugin_root = write_dist(tmp_path / "site")  # a fresh process finds it on PYTHONPATH
    env = {"PYTHONPATH": f"{plugin_root}:{ROOT}", "PATH": "/usr/bin:/bin"}
    check = ("import sys; from proto.rules import parse_rule; "
             "r = parse_rule({'symbol': 'NSE:INFY', 'kind': 'every_nth', 'params': {'n': 3}}); "
             "print(r.params, 'engine' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True,
                         env=env, cwd=tmp_path, timeout=60)
    assert out.stdout.strip() == "{'n': 3} False", out.stderr
    assert "rule plug-in future_kind = plug_bad:FUTURE" in out.stderr  # one line on stderr
    (tmp_path / "t.csv").write_text("ts,symbol,ltp\n0,NSE:INFY,10\n1000,NSE:INFY,11\n"
                                    "2000,NSE:INFY,12\n")
    (tmp_path / "r.json").write_bytes(orjson.dumps(
        [{"id": "p", "symbol": "NSE:INFY", "kind": "every_nth", "params": {"n": 2}}]))
    out = subprocess.run([sys.executable, "-m", "engine.replay", "--ticks", "t.csv",
                          "--rules", "r.json"], capture_output=True, text=True, env=env,
                         cwd=tmp_path, timeout=60)
    assert out.returncode == 0, out.stderr
    [line] = [orjson.loads(x) for x in out.stdout.splitlines()]
    assert (line["rule"], line["ts"], line["msg"]) == ("p", 1000, "NSE:INFY tick 2 at 11")
