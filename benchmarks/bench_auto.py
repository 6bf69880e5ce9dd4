"""Backend "auto" against the better of its two plans, side by side: for each cell (n, nbits, k or r,
batch size, threads) the same queries go to auto, to the linear scan and to MIH (default m), warm,
interleaved round by round (every order of the engines in turn); the cell's ratio is min(auto) /
min(min(scan), min(MIH)) over rounds (the fastest round: the least disturbed on a shared machine; the
same over median rounds is recorded too, as ratio_median).
Every answer is checked identical across the three. With --all-m, MIH runs at every substring count auto
may pick too (columns mih<m>_s), and `ratio_any_m` compares auto with the best of the scan and all of them.

Run:  python benchmarks/bench_auto.py [--sizes 1e4,1e5,1e6] [--nbits 32,64,128,256] [--threads 1,2]
                                      [--data clustered|uniform] [--calibrate] --out results.json
A batch of 1 is --single-queries calls of one query each (different queries: one query alone may be an
outlier for either plan), timed together and reported per call.
A cell's rows are appended to --out as soon as it is measured (a long run can be stopped and resumed:
cells already in the file are skipped). `--table` prints the markdown table of a results file.
"""
from __future__ import annotations

import argparse
import contextlib
import fcntl
import itertools
import json
import os
import sys
import time
from pathlib import Path

import numba
import numpy as np

from hashsearch.backends import AutoBackend
from hashsearch.kernels.popcount import as_words
from hashsearch.mih import default_substrings
from hashsearch.planner import Costs, calibrate
from hashsearch.synthetic_codes import clustered_codes, random_codes

KS, RADII, BATCHES = (1, 10, 100, 1000), (0, 1, 2, 3, 4), (1, 100)
CENTRES, FLIP = 2000, 0.05


def codes(data: str, n: int, nbits: int, offset: int, seed: int = 0) -> np.ndarray:
    if data == "uniform":
        return random_codes(n, nbits, seed=seed + offset)
    return clustered_codes(n, nbits, CENTRES, FLIP, seed=seed, offset=offset)


def same(a: tuple, b: tuple) -> bool:
    return all(np.array_equal(x, y) for x, y in zip(a, b))


def time_cell(engines: dict, min_rounds: int, budget_s: float) -> dict[str, float]:
    """Fastest round of each engine, the engines run in turn round after round, each round in the next of
    all their orders (so that each engine follows each other one, e.g. the cache-flushing scan, equally
    often): on a shared machine the fastest round is the least disturbed (the median is kept too, as
    *_median_s)."""
    times = {name: [] for name in engines}
    orders = list(itertools.islice(itertools.permutations(engines), 720))
    start, r = time.perf_counter(), 0
    while r < min_rounds or (time.perf_counter() - start < budget_s and r < 25):
        for name in orders[r % len(orders)]:
            t0 = time.perf_counter()
            engines[name]()
            times[name].append(time.perf_counter() - t0)
        r += 1
    return {**{name: float(np.min(t)) for name, t in times.items()},
            **{f"{name}_median": float(np.median(t)) for name, t in times.items()}}


def set_niceness(value: int) -> None:
    """Niceness of every thread of this process (numba's workers included; Linux: per thread)."""
    for tid in os.listdir("/proc/self/task"):
        with contextlib.suppress(OSError):
            os.setpriority(os.PRIO_PROCESS, int(tid), value)


class HeldLock:
    """The machine-wide lock file (flock), kept over the timed rounds of successive cells for up to
    `hold_s` seconds, then let go (others time too); released before each (n, nbits) set-up (codes,
    tables)."""

    def __init__(self, path: str | None, hold_s: float):
        self.path, self.hold_s, self.file, self.since = path, hold_s, None, 0.0

    def acquire(self) -> None:
        if self.path and self.file is None:
            self.file = open(self.path, "a")
            fcntl.flock(self.file, fcntl.LOCK_EX)
            self.since = time.monotonic()

    def release(self, unless_younger: bool = False) -> None:
        if self.file is not None and not (unless_younger and time.monotonic() - self.since < self.hold_s):
            fcntl.flock(self.file, fcntl.LOCK_UN)
            self.file.close()
            self.file = None


@contextlib.contextmanager
def timing(args: argparse.Namespace, lock: HeldLock):
    """Around one cell's timed rounds: the machine-wide lock (--lock) and niceness 0 (--nice: the rest,
    builds and warm-ups, runs nice)."""
    lock.acquire()
    if args.nice:
        set_niceness(0)
    try:
        yield
    finally:
        if args.nice:
            set_niceness(args.nice)
        lock.release(unless_younger=True)


def run(args: argparse.Namespace) -> None:
    out = Path(args.out)
    rows = [json.loads(line) for line in out.read_text().splitlines() if line.strip()] if out.exists() else []
    only = None
    if args.recheck is not None:  # drop the flagged cells from the file, then measure just those
        only = {tuple(r["key"]) for r in rows if max(r["ratio"], r.get("ratio_median", 0.0)) > args.recheck}
        rows = [r for r in rows if tuple(r["key"]) not in only]
        tmp = out.with_suffix(".tmp")
        tmp.write_text("".join(json.dumps(r) + "\n" for r in rows))
        tmp.replace(out)
    done = {tuple(r["key"]): r for r in rows}
    lock = HeldLock(args.lock, args.lock_hold)
    for n in args.sizes:
        for nbits in args.nbits:
            lock.release()
            if only is not None and not any(key[:3] == (args.data, n, nbits) for key in only | set(done)):
                continue  # a re-check of other sizes
            db = codes(args.data, n, nbits, 0)
            q = codes(args.data, max(args.batches + [args.single_queries]), nbits, n)
            auto = AutoBackend(db, nbits)
            m0 = default_substrings(nbits, n)
            t0 = time.perf_counter()
            mih = auto.tables(m0)
            build_s = time.perf_counter() - t0
            others = {m: auto.tables(m) for m in auto.substring_choices if m != m0} if args.all_m else {}
            for threads in args.threads:
                numba.set_num_threads(threads)
                for op, params in [("knn", k) for k in args.ks] + [("range", r) for r in args.radii]:
                    for batch in args.batches:
                        key = [args.data, n, nbits, op, params, batch, threads]
                        plan = auto.plan(batch, **({"k": params} if op == "knn" else {"radius": params}))
                        old = done.get(tuple(key))
                        changed = old is not None and only is not None and (old["plan"], old["plan_m"]) != (plan.plan, plan.m)
                        if changed:  # the model changed its mind since this cell was measured: measure it again
                            done.pop(tuple(key))
                            out.write_text("".join(json.dumps(r) + "\n" for r in done.values()))
                        elif tuple(key) in done or (only is not None and tuple(key) not in only):
                            continue
                        # each engine converts the packed codes itself, as its backend does; a batch of 1 is
                        # --single-queries calls of one query each (different queries), timed together
                        calls = [q[i:i + 1] for i in range(args.single_queries)] if batch == 1 else [q[:batch]]
                        if op == "knn":
                            fns = {"auto": lambda x: auto.search(x, params), "scan": lambda x: auto.scan.search(x, params),
                                   "mih": lambda x: mih.search(as_words(x), params),
                                   **{f"mih{m}": (lambda x, t=t: t.search(as_words(x), params)) for m, t in others.items()}}
                        else:
                            fns = {"auto": lambda x: auto.range_search(x, params),
                                   "scan": lambda x: auto.scan.range_search(x, params),
                                   "mih": lambda x: mih.range_search(as_words(x), params),
                                   **{f"mih{m}": (lambda x, t=t: t.range_search(as_words(x), params))
                                      for m, t in others.items()}}
                        engines = {name: (lambda f=f: [f(x) for x in calls]) for name, f in fns.items()}
                        if args.usual_m_only and plan.plan == "mih" and plan.m != m0:
                            print(f"skipped {key}: auto's plan needs the tables of m={plan.m} (memory)", flush=True)
                            continue
                        answers = {name: fn() for name, fn in engines.items()}  # warm: builds what auto needs
                        if not all(same(x, y) for a in answers.values() for x, y in zip(a, answers["scan"])):
                            raise AssertionError(f"answers differ in cell {key}")
                        with timing(args, lock):
                            med = time_cell(engines, args.min_rounds, args.budget)
                            load = os.getloadavg()[0]
                        best_any = min(v for e, v in med.items() if e != "auto" and not e.endswith("_median"))
                        best_any_median = min(v for e, v in med.items() if e != "auto_median" and e.endswith("_median"))
                        row = {"key": key, "data": args.data, "n": n, "nbits": nbits, "op": op, "param": params,
                               "batch": batch, "threads": threads, "calls": len(calls), "load": load,
                               **{f"{e}_s": v / len(calls) for e, v in med.items()},
                               "ratio": med["auto"] / min(med["scan"], med["mih"]),
                               "ratio_median": med["auto_median"] / min(med["scan_median"], med["mih_median"]),
                               **({"ratio_any_m": med["auto"] / best_any,
                                   "ratio_any_m_median": med["auto_median"] / best_any_median} if others else {}),
                               "plan": plan.plan, "plan_m": plan.m, "est_scan_s": plan.scan_s,
                               "est_mih_s": plan.mih_s.get(m0), "mih_m": m0, "mih_build_s": build_s,
                               "hits": float(np.mean([np.diff(a[0]).mean() for a in answers["scan"]])) if op == "range" else None}
                        done[tuple(key)] = row
                        with out.open("a") as f:
                            f.write(json.dumps(row) + "\n")
                        flag = "  <-- above 1.2" if row["ratio"] > 1.2 else ""
                        if others:
                            flag += "  any m: " + " ".join(f"{e}={row[e + '_s'] * 1e3:.3f}" for e in engines if e.startswith("mih")) + \
                                f" ratio {row['ratio_any_m']:.2f} (median {row['ratio_any_m_median']:.2f})"
                        print(f"{args.data} n={n:.0e} {nbits}b {op} {params:>4} batch {batch:>3} {threads}t: "
                              f"auto {row['auto_s'] * 1e3:8.3f} scan {row['scan_s'] * 1e3:8.3f} mih {row['mih_s'] * 1e3:8.3f} ms "
                              f"ratio {row['ratio']:.2f} ({plan.plan}{'' if plan.m is None else plan.m}){flag}", flush=True)
            del auto, mih, others
    lock.release()


def table(path: Path) -> str:
    """Markdown: one row a cell, ratio auto / min(scan, MIH) over fastest and over median rounds, and a
    summary of the cells above 1.2."""
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    lines = ["| data | n | bits | op | k / r | batch | threads | auto ms | scan ms | MIH ms | ratio | median ratio | plan |",
             "|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---|"]

    def mark(x: float | None) -> str:
        return "" if x is None else f"**{x:.2f}**" if x > 1.2 else f"{x:.2f}"

    for r in rows:
        plan = r["plan"] + ("" if r["plan_m"] is None else f" m={r['plan_m']}")
        lines.append(f"| {r['data']} | {r['n']:.0e} | {r['nbits']} | {r['op']} | {r['param']} | {r['batch']} | "
                     f"{r['threads']} | {r['auto_s'] * 1e3:.3f} | {r['scan_s'] * 1e3:.3f} | {r['mih_s'] * 1e3:.3f} | "
                     f"{mark(r['ratio'])} | {mark(r.get('ratio_median'))} | {plan} |")
    ratios = np.array([r["ratio"] for r in rows])
    medians = np.array([r.get("ratio_median", np.nan) for r in rows])
    over, over_med = int((ratios > 1.2).sum()), int((medians > 1.2).sum())
    lines.append(f"\n{len(rows)} cells: median ratio {np.median(ratios):.2f}, max {ratios.max():.2f}, "
                 f"{over} above 1.2 over fastest rounds, {over_med} over median rounds, "
                 f"{int(((ratios > 1.2) & (medians > 1.2)).sum())} by both")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", default="1e4,1e5,1e6", type=lambda s: [int(float(x)) for x in s.split(",")])
    p.add_argument("--nbits", default="32,64,128,256", type=lambda s: [int(x) for x in s.split(",")])
    p.add_argument("--threads", default="1,2", type=lambda s: [int(x) for x in s.split(",")])
    p.add_argument("--data", default="clustered", choices=["clustered", "uniform"])
    ints = lambda s: [int(x) for x in s.split(",")]  # noqa: E731
    p.add_argument("--ks", default=",".join(map(str, KS)), type=ints)
    p.add_argument("--radii", default=",".join(map(str, RADII)), type=ints)
    p.add_argument("--batches", default=",".join(map(str, BATCHES)), type=ints)
    p.add_argument("--min-rounds", type=int, default=3)
    p.add_argument("--budget", type=float, default=1.0, help="seconds of rounds per cell beyond the minimum")
    p.add_argument("--calibrate", action="store_true", help="calibrate the cost model first (and store it)")
    p.add_argument("--out", default="bench_auto.jsonl")
    p.add_argument("--recheck", type=float, default=None, metavar="RATIO",
                   help="measure again, with --budget, only the cells of --out whose ratio (fastest or median "
                        "rounds) is above RATIO (their rows are replaced)")
    p.add_argument("--single-queries", type=int, default=10, metavar="N",
                   help="a batch of 1 is N calls of one query each, different queries (times per call); "
                        "1: query 0 alone (as before December 8)")
    p.add_argument("--all-m", action="store_true",
                   help="time MIH at every substring count auto may pick as well (ratio_any_m: against the best)")
    p.add_argument("--lock", default=None, metavar="PATH",
                   help="hold this lock file (flock) around each cell's timed rounds only, not builds")
    p.add_argument("--lock-hold", type=float, default=0.0, metavar="S",
                   help="keep --lock over successive cells for up to S seconds (released before builds)")
    p.add_argument("--nice", type=int, default=0, help="niceness of everything but the timed rounds")
    p.add_argument("--usual-m-only", action="store_true",
                   help="skip the cells where auto would build MIH tables of another m (memory at large n)")
    p.add_argument("--table", action="store_true", help="print the markdown table of --out and stop")
    args = p.parse_args(argv)
    if args.nice:
        set_niceness(args.nice)
    if args.table:
        print(table(Path(args.out)))
        return
    if args.calibrate:
        print("calibrated:", calibrate(), file=sys.stderr)
    print("costs:", Costs.load(), file=sys.stderr)
    run(args)
    print(table(Path(args.out)))


if __name__ == "__main__":
    main()
