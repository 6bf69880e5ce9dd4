"""Stability and quality of SCHN and DPSH with their DEFAULT settings (nothing passed but nbits and
seed): every (data set, learner, torch threads, seed) is one fit, recorded as finite or not, with
its recoveries from non-finite steps, mAP@all, hash-lookup figures and wall / CPU seconds.

    python benchmarks/stability_single_modal.py --out benchmarks/results/stability_single_modal.md

Input is feature rows (pixels flattened: digits 64-d, MNIST-5k 784-d) unless `--input pixels`.
Split: each set's per-class protocol (digits 500 queries / 1,297 training = database items; MNIST-5k
1,000 / 4,000). Each finished fit is appended to a JSON-lines file beside the output, so an
interrupted run resumes where it stopped; the Markdown table is rewritten from all rows at the end.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

from hashsearch.codes import hamming_bruteforce, unpack_bits
from hashsearch.datasets import load, standard_split
from hashsearch.metrics import mean_average_precision, precision_within_radius
from hashsearch.models.dpsh import DPSH
from hashsearch.models.schn import SCHN

LEARNERS = {"SCHN": SCHN, "DPSH": DPSH}


def lookup_figures(q: np.ndarray, db: np.ndarray, yq: np.ndarray, ydb: np.ndarray, nbits: int) -> dict:
    """Hash lookup at r <= 2 (fraction of queries with a hit, pooled precision) and per-bit balance
    of the database codes (fraction of ones; a constant bit carries nothing)."""
    ones = unpack_bits(db, nbits).mean(axis=0)
    return {
        "hit_r2": float((hamming_bruteforce(q, db).min(axis=1) <= 2).mean()),
        "p_r2": precision_within_radius(q, db, yq, ydb, nbits, 2),
        "bit_ones_min": float(ones.min()), "bit_ones_max": float(ones.max()),
        "constant_bits": int(((ones == 0) | (ones == 1)).sum()),
    }


def run_one(name: str, data, split, learner: str, nbits: int, seed: int, threads: int, pixels: bool) -> dict:
    """Fit one learner with defaults; a fit that raises is recorded as not finite."""
    x = data.images if pixels else data.images.reshape(len(data.images), -1)
    y = data.labels
    torch.set_num_threads(threads)  # numba's OpenMP layer (used by the metrics) can reset it
    row = {"dataset": name, "input": "pixels" if pixels else "features", "learner": learner, "nbits": nbits,
           "seed": seed, "threads": threads}
    t0, c0 = time.perf_counter(), time.process_time()
    try:
        model = LEARNERS[learner](nbits, seed=seed, verbose=False).fit(x[split.train], y[split.train])
    except Exception as exc:  # the point of this benchmark: record any failure, keep going
        return {**row, "finite": False, "error": f"{type(exc).__name__}: {exc}",
                "wall_s": round(time.perf_counter() - t0, 1), "cpu_s": round(time.process_time() - c0, 1)}
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    q, db = model.encode(x[split.query]), model.encode(x[split.database])
    losses = [v for h in model.history_ for k, v in h.items() if k in ("loss", "total")]
    return {**row, "finite": bool(np.isfinite(losses).all()),
            "recoveries": sum(h.get("event") == "recovered" for h in model.history_),
            "map": mean_average_precision(q, db, y[split.query], y[split.database], nbits),
            **lookup_figures(q, db, y[split.query], y[split.database], nbits),
            "wall_s": round(wall, 1), "cpu_s": round(cpu, 1),
            "resolved": {k: v for k, v in model.params_.items()
                         if k in ("max_iter", "num_samples", "label_dim", "latent_dim", "mlp_hidden", "epochs",
                                  "feature_dim")}}


def markdown(rows: list[dict], command: str, load: tuple[float, float]) -> str:
    """One line per (data set, input, learner, bits, threads): fits finite / total, recoveries, and
    median / min mAP, lookup figures and seconds over the seeds."""
    lines = [
        "# SCHN and DPSH with default settings: stability over seeds and torch threads",
        "",
        f"- date: {datetime.now(timezone.utc):%Y-%m-%d %H:%M UTC}; machine: {platform.machine()}, {os.cpu_count()} CPU"
        f" cores **shared with other engineers' jobs** (1-min load average {load[0]:.1f} when this run started,"
        f" {load[1]:.1f} when it wrote this table: wall seconds are inflated several-fold, CPU seconds less so), torch"
        f" {torch.__version__}; OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'unset')} (PASSIVE: idle OpenMP"
        " threads sleep instead of spinning, which on an oversubscribed machine made 2-thread fits burn 7x the CPU)",
        f"- command: `{command}`",
        "- each fit: `Learner(nbits, seed=s).fit(x_train, labels)` with nothing else passed; 'finite' = the fit"
        " returned and every recorded loss is finite; 'recov.' = steps restored after a non-finite value",
        "- mAP@all of query codes against database codes (per-class split, database = training items);"
        " hit@r≤2 = fraction of queries with a database item within Hamming distance 2; P@r≤2 pooled"
        " precision of those lookups; bits = range of the fraction of ones per bit over the database codes",
        "",
        "| set | input | learner | bits | threads | finite | recov. | mAP median (min) | hit@r≤2 | P@r≤2 "
        "| bits ones min-max | constant bits | wall s median | CPU s median |",
        "|---" * 14 + "|",
    ]
    keys = dict.fromkeys((r["dataset"], r["input"], r["learner"], r["nbits"], r["threads"]) for r in rows)
    for key in keys:
        group = [r for r in rows if (r["dataset"], r["input"], r["learner"], r["nbits"], r["threads"]) == key]
        ok = [r for r in group if r["finite"]]
        med = (lambda k: float(np.median([r[k] for r in ok]))) if ok else (lambda k: float("nan"))
        lines.append(
            f"| {' | '.join(map(str, key))} | {len(ok)}/{len(group)} | {sum(r.get('recoveries', 0) for r in group)} "
            f"| {med('map'):.4f} ({min((r['map'] for r in ok), default=float('nan')):.4f}) | {med('hit_r2'):.3f} "
            f"| {med('p_r2'):.3f} | {min((r['bit_ones_min'] for r in ok), default=float('nan')):.2f}-"
            f"{max((r['bit_ones_max'] for r in ok), default=float('nan')):.2f} "
            f"| {sum(r.get('constant_bits', 0) for r in ok)} | {med('wall_s'):.1f} | {med('cpu_s'):.1f} |")
    lines += ["", "Per fit (seed: mAP, wall s):", ""]
    for key in keys:
        group = [r for r in rows if (r["dataset"], r["input"], r["learner"], r["nbits"], r["threads"]) == key]
        cells = [f"{r['seed']}: {r['map']:.3f}, {r['wall_s']}" if r["finite"] else f"{r['seed']}: FAILED"
                 for r in sorted(group, key=lambda r: r["seed"])]
        lines.append(f"- {' / '.join(map(str, key))} threads: " + "; ".join(cells))
    failures = [r for r in rows if not r["finite"]]
    lines += ["", f"Failures: {len(failures)}"] + [f"- {r}" for r in failures]
    resolved = {(r["dataset"], r["input"], r["learner"]): r["resolved"] for r in rows if r["finite"]}
    lines += ["", "Settings the defaults resolved to:", ""] + [f"- {' / '.join(k)}: {v}" for k, v in resolved.items()]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", default="digits,mnist5k")
    parser.add_argument("--learners", default="SCHN,DPSH")
    parser.add_argument("--nbits", default="32")
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--input", choices=("features", "pixels"), default="features")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/stability_single_modal.md"))
    parser.add_argument("--report", action="store_true", help="only rewrite the table from the fits recorded so far")
    args = parser.parse_args()
    log = args.out.with_suffix(".jsonl")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    rows = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
    done = {(r["dataset"], r["input"], r["learner"], r["nbits"], r["seed"], r["threads"]) for r in rows}
    load_start = os.getloadavg()[0]
    sets = {name: load(name) for name in args.datasets.split(",")}
    splits = {name: standard_split(data, seed=0) for name, data in sets.items()}
    for seed in range(0 if args.report else args.seeds):  # seeds outermost: a cut-short run covers every setting
        for name in sets:
            for learner in args.learners.split(","):
                for nbits in map(int, args.nbits.split(",")):
                    for threads in map(int, args.threads.split(",")):
                        if (name, args.input, learner, nbits, seed, threads) in done:
                            continue
                        row = run_one(name, sets[name], splits[name], learner, nbits, seed, threads,
                                      args.input == "pixels")
                        rows.append(row)
                        with log.open("a") as f:
                            f.write(json.dumps(row) + "\n")
                        print(json.dumps({k: v for k, v in row.items() if k != "resolved"}), flush=True)
    command = "python benchmarks/stability_single_modal.py " + " ".join(
        f"--{k} {v}" for k, v in vars(args).items() if k not in ("out", "report")) + f" --out {args.out}"
    args.out.write_text(markdown(rows, command, (load_start, os.getloadavg()[0])))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
