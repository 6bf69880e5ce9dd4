"""CIFAR-10 protocol (a) with ImageNet MobileNet v1: SCHN and DPSH on frozen features and with the last
blocks fine-tuned, ITQ and LSH on the frozen features, at 16/24/32/48/64 bits, laid out like the DPSH
paper's CIFAR-10 table.

    python benchmarks/accuracy_cifar10.py --models /tmp/cifar10-models --out benchmarks/results/cifar10.md
    python benchmarks/accuracy_cifar10.py --resolution 160 --methods SCHN,DPSH,ITQ,LSH --out benchmarks/results/cifar10_160px.md
    python benchmarks/accuracy_cifar10.py --finetune-timing 256 --out benchmarks/results/cifar10_finetune.json

One extraction pass (`hashsearch.features.cifar10_maps`, cached on disk) gives every image's pooled frozen
features and, when fine-tuned rows are asked for, the maps of MobileNet's first INPUT_BLOCK blocks
(frozen); the fine-tuned rows ("-ft") train the last FT_BLOCKS blocks + hash head on those maps, so only
the suffix runs; the end-to-end rows ("-e2e") train the whole network on pixels with augmented batches
(mirror + shift). Every learner is fitted on
the 5,000 training images (the frozen ones also on their left-right mirror images); fitted
models are kept under --models so that a later run only encodes and evaluates. `--database cached`
evaluates against the database rows already in the cache, the training images kept at the rate of the
others and cut to the same number per class (stated in the output); `full` (default) extracts any
missing rows first.
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
from hashsearch.features import cifar10_cache, cifar10_features, cifar10_maps
from hashsearch.metrics import mean_average_precision
from hashsearch.models.baselines import ITQ, LSH
from hashsearch.models.backbones import MobileNetV1
from hashsearch.models.dpsh import DPSH
from hashsearch.models.schn import SCHN

BITS = (24, 32, 48, 16, 64)  # the DPSH paper's columns (but 12: codes are whole bytes), then 16 and 64
INPUT_BLOCK, FT_BLOCKS = 10, 4  # cached maps after blocks 0..9 (512 x 6 x 6 at 96 px); fine-tune blocks 10..13
# Settings chosen on a validation split of the 5,000 training images only (400 a class fitted, 50 a class
# held-out queries against 50 a class held-out database; never the protocol's queries), 32 bits.
SCHN_SETTINGS = dict(label_dim=256, latent_dim=512, mlp_hidden=512, max_iter=10, max_epoch=1, num_samples=2000,
                     feature_dim=512)
DPSH_SETTINGS = dict(epochs=5, feature_dim=256)  # validation: 0.559 at 5 epochs, 0.535 at 10 (seen db 0.74 / 0.76)
SCHN_FT_SETTINGS = dict(SCHN_SETTINGS, max_iter=6)  # not validated (CPU time): ~2.4 passes
DPSH_FT_SETTINGS = dict(DPSH_SETTINGS, epochs=3)  # validation: 0.593 (frozen 0.559); lr scale 1: 0.554
# End to end from pixels (all 14 blocks at 0.1 x lr), each batch mirrored and shifted by up to 4 pixels:
# not validated; 78 s an epoch here at load ~3; at 3 epochs it underfits (32 bits: .528, seen database .559)
E2E_OPTIONS = {"trainable_blocks": None}
DPSH_E2E_SETTINGS = dict(DPSH_SETTINGS, epochs=3, augment=True)
SCHN_E2E_SETTINGS = dict(SCHN_SETTINGS, max_iter=6, augment=True)
PUBLISHED = {"DPSH (paper, CNN-F fine-tuned)": {12: .713, 24: .727, 32: .744, 48: .757},
             "DSDH (paper, CNN-F fine-tuned)": {12: .740, 24: .786, 32: .801, 48: .820}}


def finetuned(settings: dict, resolution: int, options: dict | None = None) -> dict:
    """`settings` plus the MobileNet options of the fine-tuned rows (default: last FT_BLOCKS blocks on cached maps)."""
    return dict(settings, image_net="mobilenet_v1", image_net_options={
        "resolution": resolution, **(options or {"trainable_blocks": FT_BLOCKS, "input_block": INPUT_BLOCK})})


LEARNERS = {  # name: (class, maker(nbits, resolution), input: frozen "features", prefix "maps" or "pixels",
    # fit on the mirror images too)
    "SCHN": (SCHN, lambda nbits, res: SCHN(nbits, verbose=False, **SCHN_SETTINGS), "features", True),
    "DPSH": (DPSH, lambda nbits, res: DPSH(nbits, verbose=False, **DPSH_SETTINGS), "features", True),
    "ITQ": (ITQ, lambda nbits, res: ITQ(nbits), "features", True),
    "LSH": (LSH, lambda nbits, res: LSH(nbits), "features", True),
    "SCHN-ft": (SCHN, lambda nbits, res: SCHN(nbits, verbose=False, **finetuned(SCHN_FT_SETTINGS, res)), "maps", False),
    "DPSH-ft": (DPSH, lambda nbits, res: DPSH(nbits, verbose=False, **finetuned(DPSH_FT_SETTINGS, res)), "maps", False),
    "SCHN-e2e": (SCHN, lambda nbits, res: SCHN(nbits, verbose=False, **finetuned(SCHN_E2E_SETTINGS, res, E2E_OPTIONS)),
                 "pixels", False),
    "DPSH-e2e": (DPSH, lambda nbits, res: DPSH(nbits, verbose=False, **finetuned(DPSH_E2E_SETTINGS, res, E2E_OPTIONS)),
                 "pixels", False),
}
TITLES = {"SCHN": "SCHN (frozen MobileNet{}, ours)", "DPSH": "DPSH (frozen MobileNet{}, ours)",
          "ITQ": "ITQ (frozen MobileNet{}, ours)", "LSH": "LSH (frozen MobileNet{}, ours)",
          "SCHN-ft": f"SCHN (MobileNet{{}}, last {FT_BLOCKS} blocks fine-tuned, ours)",
          "DPSH-ft": f"DPSH (MobileNet{{}}, last {FT_BLOCKS} blocks fine-tuned, ours)",
          "SCHN-e2e": "SCHN (MobileNet{}, fine-tuned end to end with augmentation, ours)",
          "DPSH-e2e": "DPSH (MobileNet{}, fine-tuned end to end with augmentation, ours)"}


def passes(model, n: int) -> float:
    """Passes over the n training rows a fitted SCHN / DPSH made (epochs; SCHN: rounds x sample / n)."""
    p = getattr(model, "params_", {})
    if "epochs" in p:
        return float(p["epochs"])
    if "max_iter" in p:
        return p["max_iter"] * p["max_epoch"] * p["num_samples"] / n
    return 1.0


def encode(model, x: np.ndarray, chunk: int = 4096) -> np.ndarray:
    """Codes of x in chunks (float16 maps become float32 one chunk at a time)."""
    return np.concatenate([model.encode(x[i:i + chunk]) for i in range(0, len(x), chunk)])


def fitted(method: str, nbits: int, resolution: int, x: np.ndarray, y: np.ndarray, models: Path | None,
           saved_only: bool = False) -> tuple[object | None, float]:
    """The learner fitted on (x, y), loaded from `models` when saved there before; (model, fit seconds).
    With `saved_only`, (None, 0) for one not saved yet."""
    cls, make = LEARNERS[method][:2]
    path = models / f"{method}-{nbits}" if models else None
    meta = path / "fit_seconds.json" if path else None
    if meta is not None and meta.is_file():
        return cls.load(path), json.loads(meta.read_text())["seconds"]
    if saved_only:
        return None, 0.0
    t0 = time.perf_counter()
    model = make(nbits, resolution).fit(x, y)
    seconds = time.perf_counter() - t0
    if path is not None:
        model.save(path)
        meta.write_text(json.dumps({"seconds": seconds}))
    return model, seconds


def balanced_cached(database: np.ndarray, train: np.ndarray, label: np.ndarray, cached: set[int]) -> np.ndarray:
    """Database rows whose features are cached, as a sample of the database that does not favour the
    training images (cached first, and ranked well by a hasher that has seen them): they are kept at
    the rate of the other cached rows; then the same number per class (the smallest class count)."""
    have = np.array([r for r in database.tolist() if r in cached], dtype=np.int64)
    seen = np.isin(have, train)
    rate = (~seen).sum() / (len(database) - len(train))
    rng = np.random.default_rng(0)
    have = np.concatenate([have[~seen], rng.choice(have[seen], round(rate * seen.sum()), replace=False)])
    per_class = min(int((label[have] == c).sum()) for c in range(10))
    keep = [rng.choice(have[label[have] == c], per_class, replace=False) for c in range(10)]
    return np.sort(np.concatenate(keep))


def evaluate(args) -> tuple[list[dict], dict]:
    archive = Cifar10Archive()
    split = cifar10_split(archive.label, archive.is_test, "a", seed=args.seed)
    maps_too = INPUT_BLOCK if any(LEARNERS[m][2] == "maps" for m in args.methods) else 0  # one pass caches both
    inputs = {"features": lambda rows, flip=False: cifar10_features(rows, resolution=args.resolution, flip=flip,
                                                                   maps_depth=maps_too),
              "maps": lambda rows, flip=False: cifar10_maps(rows, depth=INPUT_BLOCK, resolution=args.resolution,
                                                            flip=flip),
              "pixels": lambda rows, flip=False: archive.decode_rows(rows)[..., ::-1 if flip else 1] / np.float32(255)}
    database = split.database
    if args.database == "cached":
        have = cifar10_cache("features", args.resolution).stored_rows()
        if maps_too:
            have &= cifar10_cache("maps", args.resolution, depth=INPUT_BLOCK).stored_rows()
        database = balanced_cached(database, split.train, archive.label, have)
    onehot = np.eye(10, dtype=np.uint8)
    ytr = archive.label[split.train]
    yq, ydb = onehot[archive.label[split.query]], onehot[archive.label[database]]
    rows = []
    for kind in dict.fromkeys(LEARNERS[m][2] for m in args.methods):
        x_train = inputs[kind](split.train)
        mirrored = (np.concatenate([x_train, inputs[kind](split.train, True)]), np.concatenate([ytr, ytr]))
        # database rows extracted in a class-mixed order (the archive is sorted by class): a partial cache is a fair sample
        order = np.random.default_rng(0).permutation(len(database))
        x_query, x_db = ((inputs[kind](split.query), inputs[kind](database[order])[np.argsort(order)])
                         if not args.fit_only else (None, None))
        for nbits in args.bits:
            for method in (m for m in args.methods if LEARNERS[m][2] == kind):
                torch.set_num_threads(args.threads)
                x_fit, y_fit = mirrored if LEARNERS[method][3] else (x_train, ytr)
                model, seconds = fitted(method, nbits, args.resolution, x_fit, y_fit, args.models,
                                        args.saved_only and method not in ("ITQ", "LSH"))
                if model is None or args.fit_only:
                    continue
                t0 = time.perf_counter()
                q, db, tr = encode(model, x_query), encode(model, x_db), encode(model, x_train)
                rows.append({"method": method, "nbits": nbits, "train_s": round(seconds, 1),
                             "fit_rows": len(x_fit), "epoch_s": round(seconds / passes(model, len(x_fit)), 1),
                             "encode_s": round(time.perf_counter() - t0, 1),
                             "map_all": mean_average_precision(q, db, yq, ydb, nbits),
                             "map_1000": mean_average_precision(q, db, yq, ydb, nbits, k=1000),
                             "map_train_db": mean_average_precision(q, tr, yq, onehot[ytr], nbits),
                             "load": os.getloadavg()[0]})
                print(json.dumps(rows[-1]), flush=True)
        del x_train, x_fit, mirrored, x_query, x_db
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
    header = ["| method | " + " | ".join(f"{b} bits" for b in bits) + " |", "|---" * (len(bits) + 1) + "|"]
    full = info["database_rows"] == 59000
    any_ft = any(LEARNERS[m][2] == "maps" for m in args.methods)
    any_e2e = any(LEARNERS[m][2] == "pixels" for m in args.methods)
    maps_shape = MobileNetV1.maps_shape(INPUT_BLOCK, args.resolution)
    lines = [
        "# CIFAR-10 protocol (a): deep hashing with ImageNet MobileNet v1" + (", frozen and fine-tuned" if any_ft or any_e2e
                                                                              else ", frozen") + f", {args.resolution} px",
        "",
        f"- date: {datetime.now(timezone.utc):%Y-%m-%d %H:%M UTC}; machine: {platform.machine()}, {os.cpu_count()} CPU"
        f" cores **shared with other engineers' jobs** (1-min load average {load[0]:.1f} at the start, {load[1]:.1f}"
        f" at the end; per row in the json); torch {torch.__version__} CPU, {args.threads} torch thread(s), nice 19;"
        f" this run {seconds / 60:.1f} min (fits loaded from --models are not re-timed)",
        f"- command: `{' '.join(sys.argv)}`",
        f"- data: the shared lossy JPEG copy of CIFAR-10 (quality 75, see its PROVENANCE); protocol (a): 1,000 queries"
        f" (100 a class), 5,000 training images (500 a class), seed {args.seed}; database searched: {info['database_rows']:,}"
        f" images ({info['database_per_class']:,} a class)" + (" - **the full 59,000-image database**" if full else
                                                                " - **a class-balanced sample of the 59,000** (the rows"
                                                                " extracted by then, training images at the same rate"
                                                                " as the others), not the full database"),
        f"- backbone: ImageNet MobileNet v1 1.0 (shared TF weights), images upscaled 32 -> {args.resolution} px (bilinear);"
        f" one extraction pass cached every image's pooled 1,024-d features"
        + (f" and its {INPUT_BLOCK}-block maps ({' x '.join(map(str, maps_shape))}, float16)" if any_ft else "")
        + ". Frozen rows: the learners on the pooled features."
        + (f" Fine-tuned rows: the last {FT_BLOCKS} blocks (batch norm in training mode) + the hash head trained on"
           " the cached maps" if any_ft else "")
        + (" End-to-end rows: all blocks + the head trained on pixels, each batch mirrored and shifted (up to 4 px)"
           if any_e2e else ""),
        "- training rows: the 5,000 training images and their left-right mirror images (10,000 rows) for the frozen"
        " rows" + ("; the 5,000 alone for the fine-tuned rows (half the CPU time)" if any_ft or any_e2e else ""),
        "- mAP over the whole ranked database (relevance = same class, ties by database index); mAP@1000 below",
        f"- SCHN: {SCHN_SETTINGS}; fine-tuned: max_iter {SCHN_FT_SETTINGS['max_iter']}. DPSH: {DPSH_SETTINGS};"
        f" fine-tuned: epochs {DPSH_FT_SETTINGS['epochs']}"
        + (f"; end to end: SCHN max_iter {SCHN_E2E_SETTINGS['max_iter']}, DPSH epochs {DPSH_E2E_SETTINGS['epochs']}"
           if any_e2e else "") + ". Adam lr 1e-3 (backbone 0.1 x), batch 64. ITQ (PCA + 50 iterations) and"
        " LSH on the frozen features.",
        "",
        *header,
    ]
    for method in args.methods:
        lines.append(f"| {TITLES[method].format(f', {args.resolution} px')} | " + " | ".join(
            f"{cell[(method, b)]['map_all']:.3f}" if (method, b) in cell else "not run" for b in bits) + " |")
    for name, values in PUBLISHED.items():
        lines.append(f"| {name} | " + " | ".join(f"{values[b]:.3f}" if b in values else "-" for b in bits) + " |")
    lines += ["", "mAP@1000 / mAP with the 5,000 training images as the database (the hasher has seen every database"
              " item) / training seconds per pass over the training rows (fit seconds in the json):", "", *header]
    for method in args.methods:
        lines.append(f"| {method} | " + " | ".join(
            f"{cell[(method, b)]['map_1000']:.3f} / {cell[(method, b)]['map_train_db']:.3f} / {cell[(method, b)]['epoch_s']:.0f} s"
            if (method, b) in cell else "-" for b in bits) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bits", default=",".join(map(str, BITS)), type=lambda s: [int(b) for b in s.split(",")])
    parser.add_argument("--methods", default=",".join(LEARNERS), type=lambda s: s.split(","))
    parser.add_argument("--resolution", type=int, default=96)
    parser.add_argument("--database", choices=("full", "cached"), default="full")
    parser.add_argument("--models", type=Path, default=None, help="folder keeping fitted models between runs")
    parser.add_argument("--fit-only", action="store_true", help="only fit and save the models in --models")
    parser.add_argument("--saved-only", action="store_true", help="skip SCHN / DPSH models not yet saved in --models")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--finetune-timing", type=int, default=0, metavar="N",
                        help="instead: time one fine-tuning epoch of SCHN and DPSH on N training images")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    if set(args.methods) - set(LEARNERS):
        parser.error(f"--methods: give some of {', '.join(LEARNERS)}")
    start, load0 = time.perf_counter(), os.getloadavg()[0]
    if args.finetune_timing:
        args.out.write_text(json.dumps(finetune_timing(args), indent=1) + "\n")
        return
    if args.models:
        args.models.mkdir(parents=True, exist_ok=True)
    rows, info = evaluate(args)
    if args.fit_only:
        return
    args.out.write_text(markdown(rows, info, args, time.perf_counter() - start, (load0, os.getloadavg()[0])))
    args.out.with_suffix(".json").write_text(json.dumps({"info": info, "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
