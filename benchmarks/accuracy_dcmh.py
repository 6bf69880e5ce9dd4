"""DCMH against CCA-ITQ on wikipedia's standard split, same run, 16/32/64 bits, as a Markdown table.

Split: 693 queries, the 2,173 training pairs are the database (PROVENANCE). DCMH uses the feature
MLPs with `FEATURE_SETTINGS` (tuned on a validation split of the training pairs); CCA-ITQ its
defaults. mAP@all both ways from `hashsearch.metrics` (ranking by HammingIndex, ties by id).

Run: python benchmarks/accuracy_dcmh.py [--out benchmarks/results/dcmh.md] [--epochs N]
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

from hashsearch.datasets import load_wikipedia, standard_split
from hashsearch.metrics import mean_average_precision
from hashsearch.models.baselines import CCAITQ
from hashsearch.models.dcmh import DCMH, FEATURE_SETTINGS

BITS = (16, 32, 64)
PAPER_MIRFLICKR = {"I→T": (0.741, 0.747, 0.749), "T→I": (0.783, 0.790, 0.793)}  # DCMH paper, Table 2


def score(model, data, split) -> dict[str, float]:
    """mAP@all image→text and text→image, queries against the database."""
    q, db = split.query, split.database
    labels = data.labels[q], data.labels[db]
    return {
        "I→T": mean_average_precision(model.encode_image(data.images[q]), model.encode_text(data.texts[db]),
                                      *labels, model.nbits),
        "T→I": mean_average_precision(model.encode_text(data.texts[q]), model.encode_image(data.images[db]),
                                      *labels, model.nbits),
    }


def run(epochs: int, seed: int) -> list[dict]:
    data = load_wikipedia()
    split = standard_split(data, seed=seed)
    tr = split.train
    rows = []
    for nbits in BITS:
        for name, make in (("DCMH", lambda: DCMH(nbits, **{**FEATURE_SETTINGS, "epochs": epochs}, seed=seed)),
                           ("CCA-ITQ", lambda: CCAITQ(nbits, seed=seed))):
            start = time.perf_counter()
            model = make().fit(data.images[tr], data.texts[tr], data.labels[tr])
            fit_s = time.perf_counter() - start
            epoch_s = statistics.median(h["seconds"] for h in model.history_) if name == "DCMH" else None
            rows.append({"method": name, "nbits": nbits, **score(model, data, split), "fit_s": fit_s, "epoch_s": epoch_s})
            print(rows[-1], flush=True)
    return rows


def markdown(rows: list[dict], epochs: int, seed: int) -> str:
    by = {(r["method"], r["nbits"]): r for r in rows}
    head = "| method | " + " | ".join(f"{t} {b}" for t in ("I→T", "T→I") for b in BITS) + " | train s (16/32/64) | s/epoch |"
    lines = [head, "|---" * (2 * len(BITS) + 3) + "|"]
    for method in ("DCMH", "CCA-ITQ"):
        cells = [f"{by[method, b][t]:.3f}" for t in ("I→T", "T→I") for b in BITS]
        fit = "/".join(f"{by[method, b]['fit_s']:.0f}" for b in BITS)
        ep = "/".join(f"{by[method, b]['epoch_s']:.2f}" for b in BITS) if method == "DCMH" else "-"
        lines.append(f"| {method} | " + " | ".join(cells) + f" | {fit} | {ep} |")
    paper = " | ".join(f"{v:.3f}" for t in ("I→T", "T→I") for v in PAPER_MIRFLICKR[t])
    lines.append(f"| DCMH paper, MIRFLICKR-25K (CNN-F on pixels; not this data) | {paper} | - | - |")
    settings = ", ".join(f"{k}={v}" for k, v in {**FEATURE_SETTINGS, "epochs": epochs}.items())
    return "\n".join([
        "# DCMH vs CCA-ITQ on wikipedia (same run)", "",
        f"Date {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC; machine: {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} cores, CPU only (torch {torch.__version__}, {torch.get_num_threads()} threads), load average "
        f"{os.getloadavg()[0]:.1f} at the end (shared). Command: `python benchmarks/accuracy_dcmh.py --epochs {epochs}`.",
        "", "Data: wikipedia, 693 queries, 2,173 training pairs = database, relevance = same category. "
        f"mAP@all (ranking by HammingIndex, ties by id). Seed {seed}.", "",
        f"DCMH settings (feature MLPs): {settings}; γ = 1, batch 128.", "", *lines, "",
        "The paper's row is for orientation only: MIRFLICKR-25K's image features are not available here, so "
        "its cross-modal figures cannot be reproduced on this machine; the loader and split reproduce its protocol.",
    ]) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "dcmh.md"))
    parser.add_argument("--epochs", type=int, default=FEATURE_SETTINGS["epochs"])
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rows = run(args.epochs, args.seed)
    Path(args.out).write_text(markdown(rows, args.epochs, args.seed))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
