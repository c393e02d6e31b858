"""Benchmarks (``make bench``): kept apart from the tests, each prints its figures with the
machine it ran on and a reference measured in the same run."""
