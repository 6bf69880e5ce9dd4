"""Bytes per item of a saved index, on disk and in memory, against the raw packed codes.

Run: python benchmarks/storage_size.py [--n 1000000] [--out benchmarks/results/storage.md]
Each memory figure comes from a fresh spawned process (no earlier arrays or allocator state):
  in memory (read)  : bytes allocated by read_index(mmap=False): Arrow's pool plus the id array
  mapped (mmap)     : resident growth after read_index(mmap=True) and touching every code (page cache,
                      shared between processes and dropped under pressure)
  HammingIndex      : resident growth after HammingIndex.load(dir) and one search (what a server holds)
Then a scale run (--scale-n, default 10^8 64-bit codes; 0 skips it): write_index / read_index times
and peak memory, and `hashsearch build-index` / `info` on the same codes, each in its own process.
"""
from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pyarrow as pa

from hashsearch.storage import index_size, read_index, write_index

NBITS = (32, 64, 128)


def resident_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _probe(path: str, how: str) -> int:
    """Child process: resident growth after opening the index `how`, with every code touched.
    A tiny index is opened the same way first, so that loading libraries and compiling kernels
    does not count."""
    with tempfile.TemporaryDirectory() as tmp:
        write_index(Path(tmp) / "warm", np.zeros((8, 4), np.uint8), None, 32, backend="numba", params={})
        _open(Path(tmp) / "warm", how)
        if how == "read":  # exact: Arrow's pool plus numpy's sequential ids (RSS hides it in mimalloc arenas)
            before = pa.total_allocated_bytes()
            held = _open(path, how)
            return pa.total_allocated_bytes() - before + (held.ids.nbytes if held.ids.flags.owndata else 0)
        before = resident_bytes()
        held = _open(path, how)  # noqa: F841 (alive while measuring)
        return resident_bytes() - before


def _open(path: str | Path, how: str) -> object:
    """Open the index `how` and touch every code; returns what holds the memory."""
    if how == "hamming":
        from hashsearch.index import HammingIndex

        index = HammingIndex.load(path)
        index.search(np.zeros((1, index.nbits // 8), np.uint8), 1)
        return index
    stored = read_index(path, mmap=how == "mmap")
    int(stored.codes.sum(dtype=np.uint64)) + int(stored.ids.sum())
    return stored


def probe(path: Path, how: str) -> int:
    with mp.get_context("spawn").Pool(1) as pool:
        return pool.apply(_probe, (str(path), how))


def median_seconds(fn, repeat: int = 3) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def measure(n: int, nbits: int, root: Path) -> dict:
    rng = np.random.default_rng(nbits)
    codes = rng.integers(0, 256, (n, nbits // 8), dtype=np.uint8)
    seq, shuffled = root / f"seq{nbits}", root / f"ids{nbits}"
    write_s = median_seconds(lambda: write_index(seq, codes, None, nbits, backend="numba", params={}, overwrite=True))
    write_index(shuffled, codes, rng.permutation(n), nbits, backend="numba", params={}, overwrite=True)
    verify_s = median_seconds(lambda: read_index(seq, mmap=True, verify=True))
    open_s = median_seconds(lambda: read_index(seq, mmap=True, verify=False))
    row = {
        "nbits": nbits, "raw": nbits / 8,
        "disk_seq": index_size(seq) / n, "disk_ids": index_size(shuffled) / n,
        "mem_read": probe(seq, "read") / n, "mem_mmap": probe(seq, "mmap") / n,
        "write_s": write_s, "verify_s": verify_s, "open_s": open_s,
    }
    try:
        row["mem_hamming"] = probe(seq, "hamming") / n
    except ImportError:
        row["mem_hamming"] = None
    return row


def peak_rss() -> int:
    """Peak resident bytes of this process so far (Linux reports kilobytes)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _scale_child(n: int, root: str) -> dict:
    """Child process: n random 64-bit codes made in blocks, saved both as .npy (for the CLI) and as
    an index; times and peak memory against the codes' own size."""
    codes = np.empty((n, 8), np.uint8)
    rng = np.random.default_rng(0)
    for lo in range(0, n, 10_000_000):
        codes[lo:lo + 10_000_000] = rng.integers(0, 256, (min(10_000_000, n - lo), 8), dtype=np.uint8)
    np.save(Path(root) / "codes.npy", codes)
    base = peak_rss()
    t = time.perf_counter()
    write_index(Path(root) / "ix", codes, None, 64, backend="numba", params={})
    row = {"write_s": time.perf_counter() - t, "write_extra_peak": peak_rss() - base, "codes_bytes": codes.nbytes}
    del codes
    for key, verify in (("verify_s", True), ("open_s", False)):
        t = time.perf_counter()
        read_index(Path(root) / "ix", mmap=True, verify=verify)
        row[key] = time.perf_counter() - t
    return row


_CLI = ("import resource, sys, time; from hashsearch.cli import main; t = time.perf_counter(); "
        "main.main(sys.argv[1:], standalone_mode=False); "
        "print(time.perf_counter() - t, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, file=sys.stderr)")


def run_cli(*args: str) -> tuple[float, int]:
    """Seconds and peak resident bytes of one `hashsearch` command in a fresh interpreter."""
    done = subprocess.run([sys.executable, "-c", _CLI, *args], capture_output=True, text=True, check=True)
    seconds, peak = done.stderr.split()[-2:]
    return float(seconds), int(peak)


def scale(n: int, root: Path) -> dict:
    with mp.get_context("spawn").Pool(1) as pool:
        row = pool.apply(_scale_child, (n, str(root)))
    row["n"] = n
    row["build_s"], row["build_peak"] = run_cli("build-index", str(root / "codes.npy"), "--out", str(root / "cli"))
    row["info_s"], row["info_peak"] = run_cli("info", str(root / "cli"))
    return row


def scale_markdown(r: dict) -> list[str]:
    gb = lambda b: f"{b / 1e9:.2f} GB"  # noqa: E731
    return [
        "",
        f"## Scale: {r['n']:,} x 64-bit codes ({gb(r['codes_bytes'])} of codes), sequential ids, one run",
        "",
        "| step | time (s) | memory |",
        "|---|---:|---:|",
        f"| write_index (incl. SHA-256, fsync) | {r['write_s']:.1f} | +{gb(max(r['write_extra_peak'], 0))} peak over the codes |",
        f"| read_index(mmap=True), verify SHA-256 | {r['verify_s']:.1f} | mapped |",
        f"| read_index(mmap=True, verify=False) | {r['open_s']:.4f} | mapped |",
        f"| `hashsearch build-index codes.npy` (numba) | {r['build_s']:.1f} | {gb(r['build_peak'])} peak |",
        f"| `hashsearch info` (verifies checksums) | {r['info_s']:.1f} | {gb(r['info_peak'])} peak |",
        "",
        "build-index time includes HammingIndex.add in batches of 4M codes (each add copies the codes "
        "so far) and the save; the .npy input is memory-mapped.",
    ]


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.machine()


def markdown(rows: list[dict], n: int, command: str, scale_row: dict | None) -> str:
    pct = lambda x, raw: f"{x:.2f} ({100 * (x / raw - 1):+.1f} %)"  # noqa: E731
    lines = [
        "# Storage: bytes per item (STORAGE)",
        "",
        f"Machine: {cpu_name()}, {os.cpu_count()} cores (shared with other jobs), "
        f"Python {platform.python_version()}. Date: {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC.",
        f"Command: `{command}`. n = {n:,} random codes per width; sizes are exact, times are medians of 3.",
        "",
        "Bytes per item (overhead against the raw packed code in brackets). *seq ids*: ids 0..n-1, which "
        "the format does not store; *own ids*: shuffled int64 ids, stored (8 bytes an item).",
        "",
        "| nbits | raw code | disk, seq ids | disk, own ids | memory, read_index(mmap=False) "
        "| resident, read_index(mmap=True) | resident, HammingIndex.load |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        ham = pct(r["mem_hamming"], r["raw"]) if r["mem_hamming"] is not None else "n/a"
        lines.append(f"| {r['nbits']} | {r['raw']:.0f} | {pct(r['disk_seq'], r['raw'])} | {pct(r['disk_ids'], r['raw'])} "
                     f"| {pct(r['mem_read'], r['raw'])} | {pct(r['mem_mmap'], r['raw'])} | {ham} |")
    lines += [
        "",
        "Memory, each in a fresh process: read_index(mmap=False) counts the bytes allocated (Arrow's pool + "
        "numpy); the other two are resident-set growth with every code touched (mapped file pages count). "
        "The read_index columns include the ids as a caller reads them: sequential ids become an int64 array "
        "(8 bytes an item) on first access of `.ids`. HammingIndex keeps sequential ids implicit and maps the "
        "codes; its extra is its search layout (codes as 64-bit words: 32-bit codes are padded to 8 bytes).",
        "",
        "| nbits | write_index (s) | read_index, verify SHA-256 (s) | read_index, verify=False (s) |",
        "|---:|---:|---:|---:|",
    ]
    lines += [f"| {r['nbits']} | {r['write_s']:.3f} | {r['verify_s']:.3f} | {r['open_s']:.4f} |" for r in rows]
    if scale_row is not None:
        lines += scale_markdown(scale_row)
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--scale-n", type=int, default=100_000_000)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "storage.md"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        rows = [measure(args.n, nbits, Path(tmp)) for nbits in NBITS]
    with tempfile.TemporaryDirectory() as tmp:
        scale_row = scale(args.scale_n, Path(tmp)) if args.scale_n else None
    command = f"python benchmarks/storage_size.py --n {args.n} --scale-n {args.scale_n}"
    text = markdown(rows, args.n, command, scale_row)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(text)
    print(text)


if __name__ == "__main__":
    main()
