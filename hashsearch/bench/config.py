"""What a benchmark run measures: the quick, full and tiny (test) grids."""
from __future__ import annotations

import dataclasses
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from hashsearch.bench.engines import ENGINES
from hashsearch.bench.latency import BATCH, SINGLE


@dataclass(frozen=True)
class BenchConfig:
    """Grid of the latency, storage, scale and accuracy sections (every size is a database size n)."""

    mode: str
    nbits: tuple[int, ...] = (16, 32, 64, 128)
    sizes: tuple[int, ...] = (10**4, 10**5, 10**6, 10**7)
    big_n: int = 10**6  # sizes above this are timed only at the widths in big_n_nbits
    big_n_nbits: tuple[int, ...] | None = None  # None: every width
    ks: tuple[int, ...] = (1, 10, 100, 1000)
    radii: tuple[int, ...] = (0, 1, 2, 3)
    modes: tuple[str, ...] = (SINGLE, BATCH)
    engines: tuple[str, ...] = ENGINES
    nqueries: int = 200  # distinct queries cycled through by single-query runs
    single_repeats: int = 100
    batch: int = 100
    batch_repeats: int = 5
    max_seconds: float = 5.0  # time budget of one cell; at least 3 calls are always kept
    single_threads: int = 1  # threads of single-query cells (batches use `threads`)
    max_hits: float = 2_000  # lookups returning more codes per query are skipped (listed in the report)
    storage_n: int = 10**6
    scale_nbits: int = 64
    scale_sizes: tuple[int, ...] = (10**4, 10**5, 10**6, 10**7)
    physical_buffer: int = 2 << 30
    accuracy_nbits: tuple[int, ...] = (16, 32, 64)
    accuracy_datasets: tuple[str, ...] = ("wikipedia", "mirflickr25k", "nuswide10500", "mnist5k", "siftsmall")
    accuracy_epochs: int | None = None  # None: each learner's own default
    deep_datasets: tuple[str, ...] | None = None  # where deep learners are trained (None: every set)
    deep_nbits: tuple[int, ...] | None = None  # code widths deep learners are trained at (None: all)
    accuracy_topk: tuple[int, ...] = (1, 10, 50, 100, 500, 1000)
    map_k: int = 100
    models_dir: Path | None = None
    threads: int | None = None  # FAISS (OpenMP) and numba threads; None: every core
    seed: int = 0

    def with_overrides(self, settings: list[str]) -> "BenchConfig":
        """A copy with `field=value` settings applied: tuples as comma-separated values, "none" for None
        where a field allows it, sizes as 1e6 or 1000000 (e.g. "sizes=1e4,1e5", "accuracy_epochs=20")."""
        fields = {f.name: f.type for f in dataclasses.fields(self) if f.name != "mode"}
        changes = {}
        for item in settings:
            key, sep, value = item.partition("=")
            key, value = key.strip(), value.strip()
            if not sep or key not in fields:
                raise ValueError(f"bad bench setting {item!r}: expected field=value with field one of "
                                 f"{', '.join(fields)}")
            kind = str(fields[key])
            try:
                if value.lower() == "none" and "None" in kind:
                    changes[key] = None
                elif kind.startswith("tuple[int"):
                    changes[key] = tuple(_number(v, int) for v in value.split(",") if v.strip())
                elif kind.startswith("tuple[str"):
                    changes[key] = tuple(v.strip() for v in value.split(",") if v.strip())
                elif kind.startswith("Path"):
                    changes[key] = Path(value)
                else:
                    changes[key] = _number(value, float if kind.startswith("float") else int)
            except ValueError:
                raise ValueError(f"bad bench setting {item!r}: {key} is {kind}") from None
        return replace(self, **changes)

    def as_dict(self) -> dict:
        d = asdict(self)
        d["models_dir"] = str(self.models_dir) if self.models_dir else None
        return d


def _number(text: str, kind: type) -> int | float:
    """An int or float from text such as "1e6" or "100000"; a non-integral int raises ValueError."""
    value = float(text)
    if kind is int and value != int(value):
        raise ValueError(text)
    return kind(value)


FULL = BenchConfig(mode="full")
QUICK = BenchConfig(
    mode="quick",
    sizes=(10**4, 10**5, 10**6),  # several n, so that latency against n is a line, not a dot
    big_n=10**5,
    big_n_nbits=(64,),  # 10^6 only at the width the latency plot shows
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
    accuracy_epochs=None,  # the learners' defaults: about a minute a model on 2 cores
    deep_datasets=("wikipedia", "mnist5k"),
    deep_nbits=(64,),
)
TINY = replace(
    QUICK,
    mode="tiny",
    nbits=(32,),
    sizes=(1000, 3000),
    big_n=10**6,
    big_n_nbits=None,
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
