"""Engine shards: per-symbol rule index, rule state, and the loop that turns ticks into alerts."""
