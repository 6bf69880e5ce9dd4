"""`hashsearch bench`: run every section of the benchmark (physical limits, latency grid, storage,
accuracy, scale) with progress bars, then write report.md, results.json and the plots."""
from __future__ import annotations

import datetime as dt
import os
import platform
import subprocess
import sys
import time
import traceback
from dataclasses import replace
from pathlib import Path

import faiss
import numba
import numpy as np
from tqdm.auto import tqdm

from hashsearch.bench import physical, scale
from hashsearch.bench.config import CONFIGS, BenchConfig
from hashsearch.bench.engines import FAISS_FLAT, OURS
from hashsearch.bench.latency import BATCH, SINGLE, Workload, time_grid, workloads
from hashsearch.bench.report import write_report
from hashsearch.bench.storage import index_footprint, representation_sizes
from hashsearch.index import set_num_threads

SECTIONS = ("physical", "latency", "storage", "accuracy", "scale")


def machine_info() -> dict:
    """CPU model, cores, memory, library versions, git commit and UTC time of this run."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") if hasattr(os, "sysconf") else None
    return {"date_utc": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "cpu": cpu,
            "cores": os.cpu_count(), "memory_GiB": round(mem / 2**30, 1) if mem else None, "commit": git_commit(),
            "python": platform.python_version(), "numpy": np.__version__, "numba": numba.__version__,
            "faiss": faiss.__version__, "faiss_threads": faiss.omp_get_max_threads(),
            "numba_threads": numba.get_num_threads(), "load_avg_start": load_average()}


def git_commit() -> str:
    """The commit of the checkout the package runs from (an editable install), else of the working
    folder (a clone installed with `pip install .`), else the installed version."""
    from hashsearch import __version__

    for folder in (Path(__file__).resolve().parent, Path.cwd()):
        try:
            done = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                  timeout=5, cwd=folder)
        except (OSError, subprocess.SubprocessError):
            continue
        if done.returncode == 0 and done.stdout.strip():
            dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                                   text=True, timeout=5, cwd=folder).stdout.strip()
            return done.stdout.strip() + (" + local changes" if dirty else "")
    return f"unknown: not run from a git checkout (hashsearch {__version__})"


def load_average() -> str | None:
    """The 1/5/15-minute load averages (how busy the machine was: other work skews timings)."""
    try:
        return " / ".join(f"{v:.1f}" for v in os.getloadavg())
    except OSError:
        return None


def latency_section(cfg: BenchConfig, skipped: list[dict]) -> list[dict]:
    """The full (nbits x n x engine x workload) grid on clustered synthetic codes."""
    items = workloads(cfg.ks, cfg.radii, cfg.modes)
    records = []
    combos = [(b, n) for b in cfg.nbits for n in cfg.sizes
              if n <= cfg.big_n or cfg.big_n_nbits is None or b in cfg.big_n_nbits]
    for nbits, n in tqdm(combos, desc="latency grid (nbits, n)", unit="db"):
        codes = scale.database_codes(n, nbits, cfg.seed)
        queries = scale.query_codes(codes, max(cfg.nqueries, cfg.batch), seed=cfg.seed)
        records += time_grid(codes, queries, nbits, items, **grid_options(cfg, skipped))
    return records


def grid_options(cfg: BenchConfig, skipped: list[dict]) -> dict:
    """The keyword arguments of `time_grid` that the configuration sets; skipped cells go to `skipped`."""
    return {"engines": cfg.engines, "single_repeats": cfg.single_repeats, "batch": cfg.batch,
            "batch_repeats": cfg.batch_repeats, "max_seconds": cfg.max_seconds, "single_threads": cfg.single_threads,
            "max_hits": cfg.max_hits, "skipped": skipped}


def storage_section(cfg: BenchConfig, feature_dims: dict[str, int]) -> list[dict]:
    """Bytes per item of representations and of every engine's index, per nbits."""
    rows = []
    for nbits in tqdm(cfg.nbits, desc="storage (nbits)"):
        rows += representation_sizes(nbits, feature_dims if nbits == cfg.nbits[0] else {})
        rows += index_footprint(scale.database_codes(cfg.storage_n, nbits, cfg.seed), nbits, cfg.engines)
    return rows


def scale_section(cfg: BenchConfig, learned: np.ndarray | None, learned_source: str) -> dict:
    """Memory growth with n on synthetic codes; latency on learned codes replicated with bit noise."""
    out: dict = {"memory": scale.memory_growth(cfg.scale_sizes, cfg.scale_nbits, cfg.seed, cfg.engines)}
    if learned is None:
        return out
    items = [Workload("knn", 10, SINGLE), Workload("knn", 100, BATCH)] + [
        Workload("lookup", r, m) for m in (SINGLE, BATCH) for r in cfg.radii if r <= 2]
    out["learned"], out["learned_source"], out["skipped"] = [], learned_source, []
    for n in tqdm(cfg.scale_sizes, desc="learned codes at scale (n)"):
        codes = scale.replicate_with_noise(learned, n, seed=cfg.seed)
        queries = scale.query_codes(codes, max(cfg.nqueries, cfg.batch), seed=cfg.seed)
        out["learned"] += time_grid(codes, queries, cfg.scale_nbits, items, **grid_options(cfg, out["skipped"]))
    return out


def accuracy_section(cfg: BenchConfig) -> dict:
    """The accuracy table; imported on use because it loads torch and every learner."""
    from hashsearch.bench.accuracy import accuracy_section as run_accuracy

    return run_accuracy(cfg)


def physical_fractions(limits: dict, latency: list[dict]) -> list[dict]:
    """Scan rates (codes/s) of the linear scans (k-NN with the smallest k) at the largest n, against
    bandwidth and popcount rate on the threads each cell ran on."""
    out = []
    for eng, mode in ((OURS, SINGLE), (OURS, BATCH), (FAISS_FLAT, SINGLE), (FAISS_FLAT, BATCH)):
        cells = [r for r in latency if r["engine"] == eng and r["mode"] == mode and r["op"] == "knn"]
        for nbits in sorted({r["nbits"] for r in cells}):
            sub = [r for r in cells if r["nbits"] == nbits]
            n = max(r["n"] for r in sub)
            best = min((r for r in sub if r["n"] == n), key=lambda r: r["param"])
            threads = best["threads"]
            frac = physical.scan_fractions(limits, n * best["qps"], nbits, threads)
            out.append({"label": f"{eng} {mode} k={best['param']} ({threads} thr)", "nbits": nbits, "n": n, **frac})
    return out


def set_threads(threads: int | None) -> None:
    """Use `threads` threads (None: every core) in FAISS's OpenMP loops and numba's parallel kernels."""
    cores = os.cpu_count() or 1
    threads = cores if threads is None else threads
    if not 1 <= threads <= cores:
        raise ValueError(f"threads must be between 1 and {cores} (the cores of this machine), got {threads}")
    set_num_threads(threads)


def run(mode: str | BenchConfig, out_dir: Path, models_dir: Path | None = None,
        sections: tuple[str, ...] = SECTIONS, threads: int | None = None, settings: tuple[str, ...] = ()) -> Path:
    """Run the benchmark `mode` ("quick", "full", or a BenchConfig) with `settings` ("field=value",
    see BenchConfig.with_overrides) applied, and write the report into `out_dir`."""
    cfg = (mode if isinstance(mode, BenchConfig) else CONFIGS[mode]).with_overrides(list(settings))
    if models_dir is not None:
        cfg = replace(cfg, models_dir=Path(models_dir))
    if threads is not None:
        cfg = replace(cfg, threads=threads)
    set_threads(cfg.threads)
    unknown = set(sections) - set(SECTIONS)
    if unknown:
        raise ValueError(f"unknown bench section(s) {sorted(unknown)}; choose from {', '.join(SECTIONS)}")
    results: dict = {"meta": {"mode": cfg.mode, "settings": " ".join(settings) or None, **machine_info(),
                              "scale_nbits": cfg.scale_nbits, "config": cfg.as_dict()}, "timings": {}, "errors": {}}
    learned = (None, "")

    def timed(name: str, fn):
        if name not in sections:
            return None
        t0 = time.perf_counter()
        try:
            return fn()
        except Exception as exc:  # a broken section is reported, the others still run
            results["errors"][name] = f"{type(exc).__name__}: {exc}"
            traceback.print_exc(file=sys.stderr)
            return None
        finally:
            results["timings"][name] = round(time.perf_counter() - t0, 1)

    def report(final: bool = False) -> Path:  # after every section: an interrupted run keeps what it measured
        results["meta"]["load_avg_end"] = load_average()
        if results["errors"]:
            results["meta"]["errors"] = "; ".join(f"{k}: {v}" for k, v in results["errors"].items())
        return write_report(results, out_dir, plots=final)

    limits = timed("physical", lambda: physical.machine_limits(cfg.physical_buffer))
    results["skipped"] = []
    results["latency"] = timed("latency", lambda: latency_section(cfg, results["skipped"])) or []
    if limits:
        results["physical"] = {"limits": limits, "fractions": physical_fractions(limits, results["latency"])}
    report()
    acc = timed("accuracy", lambda: accuracy_section(cfg))
    if acc:
        learned = acc.pop("learned", (None, ""))
        results["accuracy"] = acc
    report()
    results["storage"] = timed("storage", lambda: storage_section(cfg, (acc or {}).get("feature_dims", {}))) or []
    report()
    results["scale"] = timed("scale", lambda: scale_section(cfg, *learned)) or {}
    return report(final=True)
