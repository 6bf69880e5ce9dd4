"""Bytes per item: raw features, float embeddings, packed codes, and each engine's index on disk and
in memory. Memory is the growth of the C heap's allocated bytes (glibc's mallinfo2: numpy, numba and
FAISS all allocate through malloc) while building the index in a fresh process (forked from a clean
forkserver that has only imported the libraries, and no interpreter start-up is paid per probe).
Resident memory (RSS) is the fallback where mallinfo2 is missing; it under-counts small indexes,
whose arrays fit in heap pages the process already holds (0 bytes an item at n = 10^4)."""
from __future__ import annotations

import ctypes
import ctypes.util
import gc
import multiprocessing as mp
import os
import tempfile
from pathlib import Path

import faiss
import numpy as np

from hashsearch.bench.engines import ENGINES, FAISS_FLAT, FAISS_MULTIHASH, WARM_N, build_engine


def resident_bytes() -> int:
    """Resident set size of this process (Linux /proc; 0 elsewhere)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return 0


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks",
                 "keepcost")]


def _mallinfo2():
    """glibc's mallinfo2 (2.33+), or None on other C libraries."""
    try:
        fn = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").mallinfo2
    except (OSError, AttributeError):
        return None
    fn.restype = _MallInfo2
    return fn


MALLINFO2 = _mallinfo2()
MEMORY_MEASURE = "heap bytes allocated (mallinfo2)" if MALLINFO2 else "resident memory growth (RSS)"


def allocated_bytes() -> int:
    """Bytes the C heap has handed out and not freed (in arenas and in mmapped blocks), or the resident
    set size where glibc's mallinfo2 is missing."""
    if MALLINFO2 is None:
        return resident_bytes()
    info = MALLINFO2()
    return info.uordblks + info.hblkhd


def path_bytes(path: Path) -> int:
    """Size of a file, or of every file under a directory."""
    path = Path(path)
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def save_engine(engine, path: Path) -> None:
    """Write an engine's index the way a user would: FAISS's writer or HammingIndex.save."""
    if engine.name in (FAISS_FLAT, FAISS_MULTIHASH):
        faiss.write_index_binary(engine.index, str(path))
    else:
        engine.index.save(path)


def _probe(codes_path: str, name: str, nbits: int, out_dir: str) -> tuple[int, int]:
    """Child process: memory allocated while building `name` over the codes, then its size on disk.

    A small engine is built and dropped first, so loaded libraries and compiled kernels are not counted.
    """
    codes = np.load(codes_path)
    build_engine(name, codes[:WARM_N], nbits)
    gc.collect()
    before = allocated_bytes()
    engine = build_engine(name, codes, nbits)
    gc.collect()
    memory = allocated_bytes() - before
    target = Path(out_dir) / f"index-{name}"
    save_engine(engine, target)
    return memory, path_bytes(target)


def index_footprint(codes: np.ndarray, nbits: int, engines: tuple[str, ...] = ENGINES) -> list[dict]:
    """Per engine: memory and disk bytes per item for an index over `codes`."""
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload([__name__])  # takes effect when the server starts (first use)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        codes_path = os.path.join(tmp, "codes.npy")
        np.save(codes_path, codes)
        for name in engines:
            pool = ctx.Pool(1)  # a fresh process per engine; errors re-raise here
            try:
                memory, disk = pool.apply(_probe, (codes_path, name, nbits, tmp))
            finally:
                pool.close()
                pool.join()
            rows.append({"item": f"index: {name}", "nbits": nbits, "n": len(codes),
                         "memory_bytes_per_item": memory / len(codes), "disk_bytes_per_item": disk / len(codes),
                         "memory_measure": MEMORY_MEASURE})
    return rows


def representation_sizes(nbits: int, feature_dims: dict[str, int]) -> list[dict]:
    """Bytes per item of float32 raw features (per data set and modality), float embeddings, codes."""
    rows = [{"item": f"raw features: {name}", "nbits": None, "memory_bytes_per_item": 4 * d,
             "disk_bytes_per_item": 4 * d} for name, d in feature_dims.items()]
    rows.append({"item": "float32 embedding", "nbits": nbits, "memory_bytes_per_item": 4 * nbits,
                 "disk_bytes_per_item": 4 * nbits})
    rows.append({"item": "packed code", "nbits": nbits, "memory_bytes_per_item": nbits // 8,
                 "disk_bytes_per_item": nbits // 8})
    return rows
