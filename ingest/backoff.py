"""Reconnect delays: capped exponential backoff with jitter."""

from __future__ import annotations

import random


def backoff_s(attempt: int, min_s: float, max_s: float, rng: random.Random | None = None) -> float:
    """The delay before reconnect ``attempt`` (1 = first retry): ``min_s * 2**(attempt-1)``
    capped at ``max_s``, then scaled by a random factor in [0.5, 1] so that many clients
    dropped together do not return together."""
    base = min(max_s, min_s * 2 ** min(max(attempt - 1, 0), 30))
    return base * (rng or random).uniform(0.5, 1.0)
