"""Benchmarks of hashsearch: latency, storage, accuracy, scale and the machine's physical limits,
with one implementation of every workload shared by `hashsearch bench` and benchmarks/."""
from hashsearch.bench.runner import run

__all__ = ["run"]
