"""CIFAR-10 protocol (a) on frozen ImageNet MobileNet v1 features: SCHN, DPSH, ITQ, LSH at
12/16/24/32/48/64 bits, laid out like the DPSH paper's CIFAR-10 table.

    python benchmarks/accuracy_cifar10.py --models /tmp/cifar10-models --out benchmarks/results/cifar10.md
    python benchmarks/accuracy_cifar10.py --finetune-timing 256 --out benchmarks/results/cifar10_finetune.json

Features come from `hashsearch.features.cifar10_features` (cached on disk: extracted once). Every learner
is fitted on the 5,000 training images; fitted models are kept under --models so that a later run
(e.g. once the whole database is extracted) only encodes and evaluates. `--database cached` evaluates
against the database rows whose features are already in the cache, cut to the same number per class
(stated in the output); `full` (default) extracts any missing rows first.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

from hashsearch.datasets.cifar10 import Cifar10Archive, cifar10_split
from hashsearch.features import FeatureCache, cifar10_features
from hashsearch.metrics import mean_average_precision
from hashsearch.models.baselines import ITQ, LSH
from hashsearch.models.dpsh import DPSH
from hashsearch.models.schn import SCHN

BITS = (24, 32, 48, 16, 64)  # the DPSH paper's columns (but 12: codes are whole bytes), then 16 and 64
# Budgets chosen on a validation split of the 5,000 training images (100 queries a class, the other
# 4,000 as database; never the protocol's queries), 32 bits.
SCHN_SETTINGS = dict(label_dim=256, latent_dim=512, mlp_hidden=512, max_iter=10, max_epoch=1, num_samples=2000,
                     feature_dim=512)
DPSH_SETTINGS = dict(epochs=10, feature_dim=256)
PUBLISHED = {"DPSH (paper, CNN-F fine-tuned)": {12: .713, 24: .727, 32: .744, 48: .757},
             "DSDH (paper, CNN-F fine-tuned)": {12: .740, 24: .786, 32: .801, 48: .820}}
LEARNERS = {
    "SCHN": (SCHN, lambda nbits: SCHN(nbits, verbose=False, **SCHN_SETTINGS)),
    "DPSH": (DPSH, lambda nbits: DPSH(nbits, verbose=False, **DPSH_SETTINGS)),
    "ITQ": (ITQ, lambda nbits: ITQ(nbits)),
    "LSH": (LSH, lambda nbits: LSH(nbits)),
}


def fitted(method: str, nbits: int, x: np.ndarray, y: np.ndarray, models: Path | None,
           saved_only: bool = False) -> tuple[object | None, float]:
    """The learner fitted on (x, y), loaded from `models` when saved there before; (model, fit seconds).
    With `saved_only`, (None, 0) for one not saved yet."""
    cls, make = LEARNERS[method]
    path = models / f"{method}-{nbits}" if models else None
    meta = path / "fit_seconds.json" if path else None
    if meta is not None and meta.is_file():
        return cls.load(path), json.loads(meta.read_text())["seconds"]
    if saved_only:
        return None, 0.0
    t0 = time.perf_counter()
    model = make(nbits).fit(x, y)
    seconds = time.perf_counter() - t0
    if path is not None:
        model.save(path)
        meta.write_text(json.dumps({"seconds": seconds}))
    return model, seconds


def balanced_cached(database: np.ndarray, label: np.ndarray, cached: set[int]) -> np.ndarray:
    """Database rows whose features are cached, the same number per class (the smallest class count)."""
    have = np.array([r for r in database.tolist() if r in cached], dtype=np.int64)
    per_class = min(int((label[have] == c).sum()) for c in range(10))
    rng = np.random.default_rng(0)
    keep = [rng.choice(have[label[have] == c], per_class, replace=False) for c in range(10)]
    return np.sort(np.concatenate(keep))


def evaluate(args) -> tuple[list[dict], dict]:
    archive = Cifar10Archive()
    split = cifar10_split(archive.label, archive.is_test, "a", seed=args.seed)
    feats = lambda rows: cifar10_features(rows, resolution=args.resolution)  # noqa: E731
    x_train, x_query = feats(split.train), feats(split.query)
    database = split.database
    if args.database == "cached":
        from hashsearch.features import cache_root
        from hashsearch.models.backbones import file_checksum, mobilenet_weights_path

        folder = cache_root() / f"cifar10-mobilenet_v1-{file_checksum(mobilenet_weights_path())[:16]}-{args.resolution}px"
        database = balanced_cached(database, archive.label, set(FeatureCache(folder, 1024).stored()))
    x_db = feats(database)
    onehot = np.eye(10, dtype=np.uint8)
    yq, ydb, ytr = onehot[archive.label[split.query]], onehot[archive.label[database]], archive.label[split.train]
    rows = []
    for nbits in args.bits:
        for method in args.methods:
            torch.set_num_threads(args.threads)
            model, seconds = fitted(method, nbits, x_train, ytr, args.models, args.saved_only and method in ("SCHN", "DPSH"))
            if model is None:
                continue
            q, db, tr = model.encode(x_query), model.encode(x_db), model.encode(x_train)
            rows.append({"method": method, "nbits": nbits, "train_s": round(seconds, 1),
                         "map_all": mean_average_precision(q, db, yq, ydb, nbits),
                         "map_1000": mean_average_precision(q, db, yq, ydb, nbits, k=1000),
                         "map_train_db": mean_average_precision(q, tr, yq, onehot[ytr], nbits)})
            print(json.dumps(rows[-1]), flush=True)
    info = {"database_rows": len(database), "database_per_class": int(ydb.sum(0).min()), "queries": len(split.query),
            "train": len(split.train)}
    return rows, info


def finetune_timing(args) -> dict:
    """Seconds per epoch of SCHN and DPSH fine-tuning MobileNet end to end on `n` training images."""
    archive = Cifar10Archive()
    split = cifar10_split(archive.label, archive.is_test, "a", seed=args.seed)
    rows = split.train[np.random.default_rng(0).permutation(len(split.train))[:args.finetune_timing]]
    x = archive.decode_rows(rows).astype(np.float32) / 255
    y = archive.label[rows]
    torch.set_num_threads(args.threads)
    options = {"resolution": args.resolution, "trainable_blocks": None}
    out = {"images": len(rows), "resolution": args.resolution, "threads": args.threads, "batch_size": 64}
    for name, make in (("DPSH", lambda: DPSH(32, epochs=1, verbose=False, image_net="mobilenet_v1", image_net_options=options)),
                       ("SCHN", lambda: SCHN(32, max_iter=1, max_epoch=1, num_samples=len(rows), verbose=False,
                                             image_net="mobilenet_v1", image_net_options=options,
                                             **{k: v for k, v in SCHN_SETTINGS.items() if k not in
                                                ("max_iter", "max_epoch", "num_samples")}))):
        model = make()
        model.fit(x[:8], y[:8])  # warm-up: lazy imports, allocator
        t0 = time.perf_counter()
        make().fit(x, y)
        seconds = time.perf_counter() - t0
        out[name] = {"epoch_s": round(seconds, 1), "per_image_s": round(seconds / len(rows), 4)}
        print(name, out[name], flush=True)
    return out


def markdown(rows: list[dict], info: dict, args, seconds: float, load: tuple[float, float]) -> str:
    bits = [b for b in BITS if b in args.bits]
    cell = {(r["method"], r["nbits"]): r for r in rows}
    lines = [
        "# CIFAR-10 protocol (a): deep hashing on frozen ImageNet MobileNet v1 features",
        "",
        f"- date: {datetime.now(timezone.utc):%Y-%m-%d %H:%M UTC}; machine: {platform.machine()}, {os.cpu_count()} CPU"
        f" cores **shared with other engineers' jobs** (1-min load average {load[0]:.1f} at the start, {load[1]:.1f}"
        f" at the end); torch {torch.__version__} CPU, {args.threads} torch thread(s); this run {seconds / 60:.1f} min",
        f"- command: `{' '.join(sys.argv)}`",
        f"- data: the shared lossy JPEG copy of CIFAR-10 (quality 75, see its PROVENANCE); protocol (a): 1,000 queries"
        f" (100 a class), 5,000 training images (500 a class), seed {args.seed}; database searched: {info['database_rows']:,}"
        f" images ({info['database_per_class']:,} a class)" + (" - **the full 59,000-image database**" if
                                                                info["database_rows"] == 59000 else
                                                                " - **a class-balanced subset of the 59,000** (the rows whose"
                                                                " features were extracted by then), not the full database"),
        f"- features: ImageNet MobileNet v1 1.0 (shared TF weights), frozen, images upscaled 32 -> {args.resolution} px"
        " (bilinear), global average pool, 1,024-d; extracted once into the feature cache",
        "- mAP over the whole ranked database (relevance = same class, ties by database index); mAP@1000 beside it",
        f"- SCHN: {SCHN_SETTINGS}, gamma 10, alpha 2, beta 0.1, Adam lr 1e-3; rows encode the database with the"
        f" image network. DPSH: {DPSH_SETTINGS}, eta 10. Both: MLP 1024 -> 512 -> feature_dim on the features."
        " ITQ (PCA + 50 iterations) and LSH on the same features.",
        "",
        "| method | " + " | ".join(f"{b} bits" for b in bits) + " |",
        "|---" * (len(bits) + 1) + "|",
    ]
    for method in dict.fromkeys(r["method"] for r in rows):
        lines.append(f"| {method} (frozen MobileNet, ours) | " + " | ".join(
            f"{cell[(method, b)]['map_all']:.3f}" if (method, b) in cell else "not finished" for b in bits) + " |")
    for method in ("SCHN", "DPSH"):
        lines.append(f"| {method} (fine-tuned MobileNet) | " + " | ".join("not run" for _ in bits) + " |")
    for name, values in PUBLISHED.items():
        lines.append(f"| {name} | " + " | ".join(f"{values[b]:.3f}" if b in values else "-" for b in bits) + " |")
    lines += ["", "mAP@1000 / mAP with the 5,000 training images as the database (the steering side's calibration"
              " setting: the hasher has seen every database item) / training seconds (fit on 5,000 feature rows):", "",
              "| method | " + " | ".join(f"{b} bits" for b in bits) + " |", "|---" * (len(bits) + 1) + "|"]
    for method in dict.fromkeys(r["method"] for r in rows):
        lines.append(f"| {method} | " + " | ".join(
            f"{cell[(method, b)]['map_1000']:.3f} / {cell[(method, b)]['map_train_db']:.3f} / {cell[(method, b)]['train_s']:.0f} s"
            if (method, b) in cell else "-" for b in bits) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bits", default=",".join(map(str, BITS)), type=lambda s: [int(b) for b in s.split(",")])
    parser.add_argument("--methods", default="SCHN,DPSH,ITQ,LSH", type=lambda s: s.split(","))
    parser.add_argument("--resolution", type=int, default=96)
    parser.add_argument("--database", choices=("full", "cached"), default="full")
    parser.add_argument("--models", type=Path, default=None, help="folder keeping fitted models between runs")
    parser.add_argument("--saved-only", action="store_true", help="skip SCHN / DPSH models not yet saved in --models")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--finetune-timing", type=int, default=0, metavar="N",
                        help="instead: time one fine-tuning epoch of SCHN and DPSH on N training images")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    start, load0 = time.perf_counter(), os.getloadavg()[0]
    if args.finetune_timing:
        args.out.write_text(json.dumps(finetune_timing(args), indent=1) + "\n")
        return
    if args.models:
        args.models.mkdir(parents=True, exist_ok=True)
    rows, info = evaluate(args)
    args.out.write_text(markdown(rows, info, args, time.perf_counter() - start, (load0, os.getloadavg()[0])))
    args.out.with_suffix(".json").write_text(json.dumps({"info": info, "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
