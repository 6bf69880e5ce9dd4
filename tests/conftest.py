"""Shared test settings."""
from __future__ import annotations

import os

import pytest
import torch
from hypothesis import settings

# No per-example deadline: the first example of a property test pays numba's compilation, and a
# shared machine's load can stretch any example; the oracles, not the clock, decide.
settings.register_profile("hashsearch", deadline=None)
settings.load_profile("hashsearch")
THOROUGH = os.environ.get("HASHSEARCH_THOROUGH") == "1"


@pytest.fixture(autouse=True, scope="session")
def one_torch_thread():
    """The test fits are small: one torch thread avoids oversubscribing 2 shared cores (a digits SCHN
    fit took 59 s on two threads and 3 s on one) and keeps results the same from run to run."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def ray_local():
    """One small local Ray instance for every test that needs one (starting Ray costs seconds)."""
    ray = pytest.importorskip("ray")
    from hashsearch.cluster import connect

    connect(num_cpus=2)
    yield ray
    ray.shutdown()


def examples(n: int) -> int:
    """A property test's example count: n where $HASHSEARCH_THOROUGH=1 (.ci/run), a third of it in the
    quick suite (the README's `pytest`), so that runs in a few minutes on 2 cores."""
    return n if THOROUGH else max(5, n // 3)
