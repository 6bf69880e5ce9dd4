"""The learners' GPU path against their CPU path on the same machine: training time and accuracy.

DCMH (wikipedia, FEATURE_SETTINGS, 16/32/64 bits, plus mixed precision at 32 bits on CUDA), DPSH and
SCHN (mnist5k, 32 bits) are trained on every device given, same seed, and scored by mAP@all.
Writes a Markdown table (and JSON beside it). Needs CUDA for the "cuda" rows; CPU rows run anywhere.

Run: python benchmarks/gpu_check.py --devices cuda,cpu --out results/gpu.md
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

from hashsearch.datasets import load_mnist5k, load_wikipedia, standard_split
from hashsearch.metrics import mean_average_precision
from hashsearch.models.dcmh import DCMH, FEATURE_SETTINGS
from hashsearch.models.dpsh import DPSH
from hashsearch.models.schn import SCHN

SCHN_SHORT = dict(max_iter=15, max_epoch=1, num_samples=1000, label_dim=128, latent_dim=256, mlp_hidden=256)


def dcmh_rows(device: str, seed: int) -> list[dict]:
    data = load_wikipedia()
    split = standard_split(data, seed=seed)
    q, db, tr = split.query, split.database, split.train
    runs = [(nbits, False) for nbits in (16, 32, 64)] + ([(32, True)] if device == "cuda" else [])
    rows = []
    for nbits, amp in runs:
        start = time.perf_counter()
        model = DCMH(nbits, **FEATURE_SETTINGS, amp=amp, device=device, seed=seed, progress=False)
        model.fit(data.images[tr], data.texts[tr], data.labels[tr])
        fit_s = time.perf_counter() - start
        i2t = mean_average_precision(model.encode_image(data.images[q]), model.encode_text(data.texts[db]),
                                     data.labels[q], data.labels[db], nbits)
        t2i = mean_average_precision(model.encode_text(data.texts[q]), model.encode_image(data.images[db]),
                                     data.labels[q], data.labels[db], nbits)
        rows.append({"learner": "DCMH" + (" (amp)" if amp else ""), "data": "wikipedia", "device": device,
                     "nbits": nbits, "fit_s": fit_s, "epoch_s": statistics.median(h["seconds"] for h in model.history_),
                     "map": {"I→T": i2t, "T→I": t2i}})
        print(rows[-1], flush=True)
    return rows


def image_rows(device: str, seed: int, nbits: int = 32) -> list[dict]:
    data = load_mnist5k()
    split = standard_split(data, seed=seed)
    q, db, tr = split.query, split.database, split.train
    rows = []
    for name, make in (("DPSH", lambda: DPSH(nbits, seed=seed, device=device, verbose=False)),
                       ("SCHN", lambda: SCHN(nbits, seed=seed, device=device, verbose=False, **SCHN_SHORT))):
        start = time.perf_counter()
        model = make().fit(data.images[tr], data.labels[tr])
        fit_s = time.perf_counter() - start
        score = mean_average_precision(model.encode(data.images[q]), model.encode(data.images[db]),
                                       data.labels[q], data.labels[db], nbits)
        rows.append({"learner": name, "data": "mnist5k", "device": device, "nbits": nbits, "fit_s": fit_s,
                     "epoch_s": None, "map": {"I→I": score}})
        print(rows[-1], flush=True)
    return rows


def markdown(rows: list[dict]) -> str:
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    lines = ["# Learners on GPU vs CPU (same machine, same seed)", "",
             f"Date {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC; torch {torch.__version__}; GPU: {gpu}; "
             f"CPU: {platform.machine()}, {torch.get_num_threads()} torch threads. "
             "Command: `python benchmarks/gpu_check.py`.", "",
             "| learner | data | bits | device | train s | s/epoch | mAP@all |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        maps = ", ".join(f"{k} {v:.3f}" for k, v in r["map"].items())
        epoch = f"{r['epoch_s']:.3f}" if r["epoch_s"] is not None else "-"
        lines.append(f"| {r['learner']} | {r['data']} | {r['nbits']} | {r['device']} | {r['fit_s']:.1f} | {epoch} | {maps} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", default="cuda,cpu")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "gpu.md")
    args = parser.parse_args()
    rows = []
    for device in args.devices.split(","):
        rows += dcmh_rows(device, args.seed) + image_rows(device, args.seed)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(markdown(rows), encoding="utf-8")
    args.out.with_suffix(".json").write_text(json.dumps(rows, indent=1, ensure_ascii=False), encoding="utf-8")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
