"""Hypothesis: the O(1) evaluators of the newer kinds agree with naive readings of
docs/RULES.md, which recompute everything from the whole tick history at every tick."""

from fractions import Fraction
from itertools import accumulate, pairwise

from hypothesis import given, settings
from hypothesis import strategies as st

from tests.engine.cases import fire_indices

COOLDOWNS = st.sampled_from([0, 1, 2.5, 90])
DIRECTIONS = st.sampled_from(["up", "down", "either"])


def drive(ticks, cooldown_s, cond):
    """Firing indices, given ``cond(i, fired)``: the kind's condition at tick i, knowing the
    (not suppressed) firings so far. Cooldown as ARCHITECTURE.md defines it."""
    fired, last = [], None
    for i, tick in enumerate(ticks):
        t = tick[0]
        if cond(i, fired) and (last is None or t >= last + cooldown_s * 1000):
            fired.append(i)
            last = t
    return fired


def walk(step_ms_max, tick_size=0.5, min_size=1):
    """Ticks (t, p): non-decreasing times, and a random walk from 100 in steps of at most two
    ticks on a coarse grid (so that ties and crossings are common)."""
    steps = st.tuples(st.integers(0, step_ms_max), st.integers(-2, 2))
    return st.lists(steps, min_size=min_size, max_size=120).map(lambda moves: [
        (sum(d for d, _ in moves[: i + 1]),
         round(100 / tick_size + sum(m for _, m in moves[: i + 1])) * tick_size)
        for i in range(len(moves))])


# above / below / channel ----------------------------------------------------------------

def naive_above(level, rearm_pct, ticks, cooldown_s):
    rearm = level * (1 - rearm_pct / 100)

    def cond(i, fired):
        ready = not fired or any(ticks[j][1] < rearm for j in range(fired[-1] + 1, i))
        return ready and ticks[i][1] >= level
    return drive(ticks, cooldown_s, cond)


@settings(max_examples=300, deadline=None)
@given(walk(3000), st.sampled_from([97.0, 100.0, 101.5]), st.sampled_from([0, 0.5, 2]), COOLDOWNS)
def test_above_matches_the_definition(ticks, level, rearm_pct, cooldown_s):
    rule = {"kind": "above", "cooldown_s": cooldown_s,
            "params": {"level": level, "rearm_pct": rearm_pct}}
    assert fire_indices(rule, ticks) == naive_above(level, rearm_pct, ticks, cooldown_s)


@settings(max_examples=300, deadline=None)
@given(walk(3000), st.sampled_from([97.0, 100.0]), st.sampled_from([0, 1]), COOLDOWNS)
def test_below_is_above_mirrored(ticks, level, rearm_pct, cooldown_s):
    mirrored = [(t, 200 - p) for t, p in ticks]  # exact on the 0.5 grid
    rule = {"kind": "below", "cooldown_s": cooldown_s,
            "params": {"level": 200 - level, "rearm_pct": rearm_pct}}
    band = 200 - level * (1 - rearm_pct / 100)
    expected = naive_above(level, rearm_pct, ticks, cooldown_s)
    if band == (200 - level) * (1 + rearm_pct / 100):  # the mirror is exact in float64
        assert fire_indices(rule, mirrored) == expected


@settings(max_examples=300, deadline=None)
@given(walk(3000), st.sampled_from(["enter", "exit", "both"]), COOLDOWNS)
def test_channel_matches_the_definition(ticks, on, cooldown_s):
    low, high = 98.0, 102.0

    def inside(i):
        return low <= ticks[i][1] <= high

    def cond(i, fired):
        if i == 0 or inside(i) == inside(i - 1):
            return False
        return on == "both" or (on == "enter") == inside(i)
    rule = {"kind": "channel", "cooldown_s": cooldown_s,
            "params": {"low": low, "high": high, "on": on}}
    assert fire_indices(rule, ticks) == drive(ticks, cooldown_s, cond)


# volume_spike ----------------------------------------------------------------------------

@st.composite
def volume_ticks(draw):
    ticks, t, vol = [], 0, 0
    for _ in range(draw(st.integers(1, 150))):
        t += draw(st.integers(0, 1500))
        move = draw(st.sampled_from(["trade"] * 8 + ["none", "quiet", "new_day"]))
        if move == "trade":
            vol += draw(st.integers(0, 100)) if vol else draw(st.integers(1, 100))
            ticks.append((t, 100.0, None, vol))
        elif move == "none":
            ticks.append((t, 100.0, None, 0))
        elif move == "quiet":
            ticks.append((t, 100.0, None, vol))
        else:
            vol = draw(st.integers(1, max(1, vol - 1))) if vol > 1 else vol
            ticks.append((t, 100.0, None, vol))
    return ticks


def naive_spike(w, factor, n, ticks, cooldown_s):
    def cond(i, fired):
        if ticks[i][3] <= 0:
            return False
        counted = [j for j in range(i + 1) if ticks[j][3] > 0]
        ref = max(j for j in counted if j == counted[0] or
                  ticks[j][3] < ticks[counted[counted.index(j) - 1]][3])
        if ref == i:
            return False
        since = [j for j in counted if j >= ref]
        sec, d = {}, {}
        for a, b in pairwise(since):
            sec[b] = max(ticks[b][0] // 1000, sec.get(a, ticks[ref][0] // 1000))
            d[b] = ticks[b][3] - ticks[a][3]
        s_i, s0 = sec[i], ticks[ref][0] // 1000
        r = max([k for k in fired if k >= ref], default=-1)
        window = sum(d[j] for j in since[1:] if sec[j] > s_i - w and j > r)
        baseline = sum(d[j] for j in since[1:] if s_i - (n + 1) * w < sec[j] <= s_i - w) / n
        return s_i - s0 >= (n + 1) * w and baseline > 0 and window >= factor * baseline
    return drive(ticks, cooldown_s, cond)


@settings(max_examples=300, deadline=None)
@given(volume_ticks(), st.integers(1, 3), st.sampled_from([1, 1.5, 2, 4]), st.integers(1, 4),
       st.sampled_from([0, 0.5, 2]))
def test_volume_spike_matches_the_definition(ticks, w, factor, n, cooldown_s):
    rule = {"kind": "volume_spike", "cooldown_s": cooldown_s,
            "params": {"window_s": w, "factor": factor, "baseline_windows": n}}
    assert fire_indices(rule, ticks) == naive_spike(w, factor, n, ticks, cooldown_s)


# bar strategies ---------------------------------------------------------------------------

def closes_before(ticks, i):
    """(closes of the bars closed by tick i, whether tick i closes a bar)."""
    minutes = [t // 60000 for t, *_ in ticks[: i + 1]]
    latest = list(accumulate(minutes, max))
    opens = [j for j in range(len(minutes)) if j == 0 or minutes[j] > latest[j - 1]]
    closes = [ticks[j - 1][1] for j in opens[1:]]
    return closes, i in opens[1:]


def q(x):
    return round(x * 10000)


def exact_mean(values):
    """The mean of the values to four decimals, exactly, rounded once to float64."""
    return float(Fraction(sum(map(q, values)), 10000 * len(values)))


def crossed(direction, f0, s0, f1, s1):
    up = f0 <= s0 and f1 > s1
    down = f0 >= s0 and f1 < s1
    return {"up": up, "down": down, "either": up or down}[direction]


def sma(c, n, k):
    return exact_mean(c[k - n + 1: k + 1])


def ema(c, n, k):
    value, alpha = exact_mean(c[:n]), 2 / (n + 1)
    for j in range(n, k + 1):
        value = alpha * c[j] + (1 - alpha) * value
    return value


def naive_cross(line, fast, slow, direction, ticks, cooldown_s):
    def cond(i, fired):
        c, closes_here = closes_before(ticks, i)
        k = len(c) - 1
        if not closes_here or k < slow:
            return False
        return crossed(direction, line(c, fast, k - 1), line(c, slow, k - 1),
                       line(c, fast, k), line(c, slow, k))
    return drive(ticks, cooldown_s, cond)


@settings(max_examples=200, deadline=None)
@given(walk(90_000, min_size=40), st.sampled_from([(2, 3), (2, 5), (3, 4)]), DIRECTIONS, COOLDOWNS)
def test_sma_cross_matches_the_definition(ticks, periods, direction, cooldown_s):
    fast, slow = periods
    rule = {"kind": "sma_cross", "cooldown_s": cooldown_s,
            "params": {"fast": fast, "slow": slow, "direction": direction}}
    assert fire_indices(rule, ticks) == naive_cross(sma, fast, slow, direction, ticks, cooldown_s)


@settings(max_examples=200, deadline=None)
@given(walk(90_000, tick_size=0.05, min_size=40), st.sampled_from([(2, 3), (2, 5), (4, 9)]),
       DIRECTIONS, COOLDOWNS)
def test_ema_cross_matches_the_definition(ticks, periods, direction, cooldown_s):
    fast, slow = periods
    rule = {"kind": "ema_cross", "cooldown_s": cooldown_s,
            "params": {"fast": fast, "slow": slow, "direction": direction}}
    assert fire_indices(rule, ticks) == naive_cross(ema, fast, slow, direction, ticks, cooldown_s)


def naive_rsi_values(c, n):
    """RSI[k] for k = n .. len(c) - 1."""
    deltas = [q(c[k]) - q(c[k - 1]) for k in range(1, len(c))]  # ten-thousandths
    gains, losses = [max(d, 0) for d in deltas], [max(-d, 0) for d in deltas]
    if len(deltas) < n:
        return []
    g = float(Fraction(sum(gains[:n]), 10000 * n))
    lo = float(Fraction(sum(losses[:n]), 10000 * n))
    out = []
    for k in range(n, len(c)):
        if k > n:
            g = (g * (n - 1) + gains[k - 1] / 10000) / n
            lo = (lo * (n - 1) + losses[k - 1] / 10000) / n
        out.append(100 * g / (g + lo) if g + lo > 0 else 50.0)
    return out


@settings(max_examples=200, deadline=None)
@given(walk(90_000, tick_size=0.05, min_size=40), st.integers(2, 5),
       st.sampled_from([None, 60, 70]), st.sampled_from([None, 30, 45]), COOLDOWNS)
def test_rsi_matches_the_definition(ticks, period, above, below, cooldown_s):
    if above is None and below is None:
        above = 50

    def cond(i, fired):
        c, closes_here = closes_before(ticks, i)
        rsi = naive_rsi_values(c, period)
        if not closes_here or len(rsi) < 2:
            return False
        prev, now = rsi[-2], rsi[-1]
        return ((above is not None and prev < above <= now)
                or (below is not None and prev > below >= now))
    rule = {"kind": "rsi", "cooldown_s": cooldown_s,
            "params": {"period": period, "above": above, "below": below}}
    assert fire_indices(rule, ticks) == drive(ticks, cooldown_s, cond)


# orb -------------------------------------------------------------------------------------

DAY_MS, IST_MS, OPEN_MS = 86_400_000, 19_800_000, 33_300_000
NINE_IST = 19_737 * DAY_MS - IST_MS + 9 * 3_600_000  # 2024-01-15 09:00 IST


@st.composite
def session_ticks(draw):
    ticks, t = [], NINE_IST
    for _ in range(draw(st.integers(10, 100))):
        t += draw(st.sampled_from([0, 20_000, 60_000, 180_000, 600_000, DAY_MS - 1_800_000]))
        ticks.append((t, draw(st.integers(190, 210)) * 0.5))
    return ticks


@settings(max_examples=300, deadline=None)
@given(session_ticks(), st.sampled_from([1, 5, 15, 30]), DIRECTIONS,
       st.sampled_from([0, 60, 86_400]))
def test_orb_matches_the_definition(ticks, minutes, direction, cooldown_s):
    def cond(i, fired):
        t, p = ticks[i]
        day = (t + IST_MS) // DAY_MS
        start = day * DAY_MS - IST_MS + OPEN_MS
        end = start + minutes * 60_000
        in_range = [q for tq, q in ticks[:i] if start <= tq < end]
        if t < end or not in_range or any((ticks[k][0] + IST_MS) // DAY_MS == day
                                          for k in fired):
            return False
        up, down = p > max(in_range), p < min(in_range)
        return {"up": up, "down": down, "either": up or down}[direction]
    rule = {"kind": "orb", "cooldown_s": cooldown_s,
            "params": {"minutes": minutes, "direction": direction}}
    assert fire_indices(rule, ticks) == drive(ticks, cooldown_s, cond)
