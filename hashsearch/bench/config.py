"""What a benchmark run measures: the quick, full and tiny (test) grids."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from hashsearch.bench.engines import ENGINES
from hashsearch.bench.latency import BATCH, SINGLE


@dataclass(frozen=True)
class BenchConfig:
    """Grid of the latency, storage, scale and accuracy sections (every size is a database size n)."""

    mode: str
    nbits: tuple[int, ...] = (16, 32, 64, 128)
    sizes: tuple[int, ...] = (10**4, 10**5, 10**6, 10**7)
    ks: tuple[int, ...] = (1, 10, 100, 1000)
    radii: tuple[int, ...] = (0, 1, 2, 3)
    modes: tuple[str, ...] = (SINGLE, BATCH)
    engines: tuple[str, ...] = ENGINES
    nqueries: int = 200  # distinct queries cycled through by single-query runs
    single_repeats: int = 100
    batch: int = 100
    batch_repeats: int = 5
    max_seconds: float = 5.0  # time budget of one cell; at least 3 calls are always kept
    storage_n: int = 10**6
    scale_nbits: int = 64
    scale_sizes: tuple[int, ...] = (10**4, 10**5, 10**6, 10**7)
    physical_buffer: int = 2 << 30
    accuracy_nbits: tuple[int, ...] = (16, 32, 64)
    accuracy_datasets: tuple[str, ...] = ("wikipedia", "mirflickr25k", "nuswide10500", "mnist5k", "siftsmall")
    accuracy_epochs: int | None = None  # None: each learner's own default
    deep_datasets: tuple[str, ...] | None = None  # where deep learners are trained (None: every set)
    accuracy_topk: tuple[int, ...] = (1, 10, 50, 100, 500, 1000)
    map_k: int = 100
    models_dir: Path | None = None
    threads: int | None = None  # FAISS (OpenMP) and numba threads; None: every core
    seed: int = 0
    extra: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        d = asdict(self)
        d["models_dir"] = str(self.models_dir) if self.models_dir else None
        return d


FULL = BenchConfig(mode="full")
QUICK = BenchConfig(
    mode="quick",
    sizes=(10**5,),
    ks=(1, 10, 100, 1000),
    radii=(0, 1, 2, 3),
    nqueries=50,
    single_repeats=20,
    batch=100,
    batch_repeats=3,
    max_seconds=0.3,
    storage_n=10**5,
    scale_sizes=(10**4, 10**5, 10**6),
    physical_buffer=256 << 20,
    accuracy_datasets=("wikipedia", "mirflickr25k", "mnist5k", "siftsmall"),
    accuracy_epochs=2,
    deep_datasets=("wikipedia", "mnist5k"),
)
TINY = replace(
    QUICK,
    mode="tiny",
    nbits=(32,),
    sizes=(2000,),
    ks=(1, 10),
    radii=(0, 2),
    nqueries=10,
    single_repeats=3,
    batch=10,
    batch_repeats=2,
    max_seconds=0.05,
    storage_n=2000,
    scale_sizes=(1000, 4000),
    physical_buffer=8 << 20,
    accuracy_nbits=(16,),
    accuracy_datasets=("wikipedia",),
    accuracy_epochs=1,
)
CONFIGS = {"full": FULL, "quick": QUICK, "tiny": TINY}
