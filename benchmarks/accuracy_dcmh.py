"""DCMH at its defaults (no settings passed): ranking mAP, hash lookup and code use, 16/32/64 bits.

Sets: wikipedia's standard split (693 queries, the 2,173 training pairs are the database; the feature
recipe was tuned on a validation carve-out of those training pairs) and, held out from all tuning,
two-view handwritten digits: scikit-learn's 8x8 digits with the top four pixel rows as one view and
the bottom four as the other (standard digits split, 500 queries, 1,297 database = training).
CCA-ITQ at its defaults is run beside DCMH on the same split. Per direction: mAP@all, hash lookup at
r <= 2 (queries with a hit, P@r over queries with a hit, recall@r), the database codes' distinct
count, bit balance (max |mean - 0.5|), constant bits and max |bit correlation|; training wall and
CPU seconds. The PR curves of hash lookup (radius 0..nbits) go to a PNG beside the Markdown.

Run: python benchmarks/accuracy_dcmh.py [--out benchmarks/results/dcmh_defaults.md] [--bits 16,32,64]
     [--before earlier.json]  (adds a before/after table of DCMH's figures)
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

from hashsearch import metrics
from hashsearch.datasets import PairedDataset, load_digits, load_wikipedia, standard_split
from hashsearch.models.baselines import CCAITQ
from hashsearch.models.dcmh import DCMH
from hashsearch.plots import plot_pr_curves

DIRECTIONS = (("I→T", "image", "text"), ("T→I", "text", "image"))


def digits_two_views() -> PairedDataset:
    """scikit-learn's digits as a two-view set: top half (rows 0-3) and bottom half (rows 4-7) of each image."""
    d = load_digits()
    top, bottom = d.images[:, 0, :4].reshape(len(d), -1), d.images[:, 0, 4:].reshape(len(d), -1)
    return PairedDataset(name="digits", images=np.ascontiguousarray(top), texts=np.ascontiguousarray(bottom),
                         labels=d.labels)


def evaluate(model, data: PairedDataset, split, nbits: int) -> dict:
    """Per direction: mAP, lookup statistics at r <= 2, database code statistics and the radius PR curve."""
    q, db = split.query, split.database
    codes = {"image": (model.encode_image(data.images[q]), model.encode_image(data.images[db])),
             "text": (model.encode_text(data.texts[q]), model.encode_text(data.texts[db]))}
    out = {}
    for name, a, b in DIRECTIONS:
        args = (codes[a][0], codes[b][1], data.labels[q], data.labels[db], nbits)
        stats = metrics.code_statistics(codes[b][1], nbits)
        precision, recall = metrics.pr_curve_by_radius(*args)
        out[name] = {"map": metrics.mean_average_precision(*args), **metrics.lookup_statistics(*args, radius=2),
                     "distinct": stats["distinct"], "constant_bits": len(stats["constant_bits"]),
                     "max_imbalance": float(np.max(np.abs(np.asarray(stats["bit_means"]) - 0.5))),
                     "max_corr": stats["max_abs_correlation"], "pr": (precision.tolist(), recall.tolist())}
    return out


SETS = {"wikipedia": load_wikipedia, "digits": digits_two_views}


def run(bits: list[int], seed: int, sets: list[str], partial: Path) -> list[dict]:
    """Train and score every (set, bits, method); rows are also written to `partial` as they come.

    torch's thread count is set again before each fit: the numba kernels that score the codes share
    torch's OpenMP runtime and leave its thread count at theirs, so later fits ran on 2 spinning
    threads on a loaded machine (wall and CPU seconds several times a one-thread fit's)."""
    rows, threads = [], torch.get_num_threads()
    for data in (SETS[name]() for name in sets):
        split = standard_split(data, seed=seed)
        tr = split.train
        for nbits in bits:
            for method, make in (("DCMH", lambda: DCMH(nbits, seed=seed, progress=False)),
                                 ("CCA-ITQ", lambda: CCAITQ(nbits, seed=seed))):
                torch.set_num_threads(threads)
                wall, cpu = time.perf_counter(), time.process_time()
                model = make().fit(data.images[tr], data.texts[tr], data.labels[tr])
                wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
                row = {"data": data.name, "method": method, "nbits": nbits, "fit_wall_s": wall, "fit_cpu_s": cpu,
                       "epochs": getattr(model, "params_", {}).get("epochs"), **evaluate(model, data, split, nbits)}
                rows.append(row)
                partial.write_text(json.dumps(rows, ensure_ascii=False))
                print(json.dumps({k: v for k, v in row.items() if k not in DICT_KEYS}),
                      {t: {k: round(v, 3) for k, v in row[t].items() if k != "pr"} for t, _, _ in DIRECTIONS}, flush=True)
    return rows


DICT_KEYS = {"I→T", "T→I"}


COMPARED = (("map", "mAP", "{:.3f}"), ("hit_fraction", "hit r≤2", "{:.1%}"), ("precision", "P@r≤2", "{:.3f}"),
            ("recall", "recall@r≤2", "{:.3f}"), ("distinct", "distinct", "{}"),
            ("max_imbalance", "max imbalance", "{:.2f}"), ("max_corr", "max abs corr", "{:.2f}"))


def comparison(before: list[dict], rows: list[dict]) -> list[str]:
    """Markdown lines: DCMH's figures in an earlier run (`before`) and in `rows`, per data set, bits and task."""
    old = {(r["data"], r["nbits"]): r for r in before if r["method"] == "DCMH"}
    lines = ["| data | bits | task | " + " | ".join(f"{name} before → after" for _, name, _ in COMPARED) + " |",
             "|---" * (3 + len(COMPARED)) + "|"]
    for r in rows:
        if r["method"] != "DCMH":
            continue
        for task, _, _ in DIRECTIONS:
            b = old.get((r["data"], r["nbits"]), {}).get(task)
            cells = [(fmt.format(b[key]) if b else "not run") + " → " + fmt.format(r[task][key]) for key, _, fmt in COMPARED]
            lines.append(f"| {r['data']} | {r['nbits']} | {task} | " + " | ".join(cells) + " |")
    return lines


def markdown(rows: list[dict], bits: list[int], seed: int, png: str, before: list[dict] | None = None,
             before_name: str = "") -> str:
    head = ("| data | method | bits | task | mAP@all | queries with a hit r≤2 | P@r≤2 | recall@r≤2 | distinct db codes "
            "| max bit imbalance | constant bits | max abs bit corr | train wall s | train CPU s |")
    lines = [head, "|---" * 14 + "|"]
    for r in rows:
        for task, _, _ in DIRECTIONS:
            s = r[task]
            lines.append(f"| {r['data']} | {r['method']} | {r['nbits']} | {task} | {s['map']:.3f} | {s['hit_fraction']:.1%} | "
                         f"{s['precision']:.3f} | {s['recall']:.3f} | {s['distinct']} | {s['max_imbalance']:.2f} | "
                         f"{s['constant_bits']} | {s['max_corr']:.2f} | {r['fit_wall_s']:.0f} | {r['fit_cpu_s']:.0f} |")
    return "\n".join([
        "# DCMH defaults: ranking, hash lookup and code use (no settings passed)", "",
        f"Date {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC; machine: {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} cores shared with other engineers, CPU only (torch {torch.__version__}, "
        f"{torch.get_num_threads()} thread(s)), load average {os.getloadavg()[0]:.1f} at the end. "
        f"Command: `python benchmarks/accuracy_dcmh.py --bits {','.join(map(str, bits))}`. Seed {seed}.", "",
        "wikipedia: standard split, 693 queries, database = the 2,173 training pairs, relevance = same category "
        "(the feature recipe was tuned on a validation carve-out of the training pairs). digits (held out: never "
        "used in tuning): two views = top and bottom halves of scikit-learn's 8x8 digits, 500 queries, 1,297 "
        "database = training. DCMH = `DCMH(nbits, seed=0)`, everything else its defaults (the feature recipe, "
        "`params_`); CCA-ITQ at its defaults.", "",
        "Lookup (per query): 'queries with a hit' = share of queries with a database item within Hamming distance 2; "
        "P@r≤2 = mean precision over the queries with a hit; recall@r≤2 = mean share of a query's relevant items "
        "found within 2. Code columns describe the database codes. Train CPU s is process time (less sensitive "
        "to the shared machine's load than wall time).", "", *lines, "",
        f"![hash lookup PR curves]({png})", "",
        *([f"## Before ({before_name}) and after, DCMH", "", *comparison(before, rows), ""] if before else []),
    ]) + "\n"


def plot(rows: list[dict], path: Path) -> None:
    curves = {f"{r['data']} {r['method']} {r['nbits']}b {task}": tuple(r[task]["pr"])
              for r in rows if r["method"] == "DCMH" and r["nbits"] == 32 for task, _, _ in DIRECTIONS if "pr" in r[task]}
    plot_pr_curves(curves, path, title="DCMH defaults: hash lookup precision-recall, radius 0..nbits")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "dcmh_defaults.md"))
    parser.add_argument("--bits", default="16,32,64")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--sets", default=",".join(SETS), help=f"comma-separated, from {', '.join(SETS)}")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own choice)")
    parser.add_argument("--render", default=None, help="comma-separated .json files of earlier runs: write their "
                        "rows as one report instead of running")
    parser.add_argument("--before", default=None, help="a .json file of an earlier run: add a table of DCMH's "
                        "figures there and here")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    bits = [int(b) for b in args.bits.split(",")]
    if args.render:
        rows = [row for f in args.render.split(",") for row in json.loads(Path(f).read_text())]
    else:
        rows = run(bits, args.seed, args.sets.split(","), Path(args.out).with_suffix(".json"))
    out = Path(args.out)
    png = out.with_suffix(".png")
    plot(rows, png)
    before = json.loads(Path(args.before).read_text()) if args.before else None
    out.write_text(markdown(rows, bits, args.seed, png.name, before, Path(args.before).name if args.before else ""))
    out.with_suffix(".json").write_text(json.dumps(rows, ensure_ascii=False))
    print(f"wrote {out} and {png}")


if __name__ == "__main__":
    main()
