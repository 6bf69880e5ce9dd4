"""Validation for CIFAR-10 protocol (a) inside its 5,000 training images only (never the protocol's
queries): 400 a class fitted, the other 100 a class held out (50 queries, 50 database), frozen MobileNet
features (or, for the "-ft" rows, block maps) at one resolution, cached by `hashsearch.features`
(missing rows are extracted); the learners and settings of `accuracy_cifar10.py`.

    python benchmarks/validate_cifar10.py --resolution 160 --probe
    python benchmarks/validate_cifar10.py --resolution 160 --methods SCHN,DPSH --set DPSH.epochs=3
    python benchmarks/validate_cifar10.py --methods DPSH-ft --set DPSH-ft.augment=true

`--probe`: accuracy of logistic regression (standardised features) on the held-out 1,000, per C: how
separable the frozen features are, which bounds what a hasher on them can reach. Hashers: mAP of the
held-out queries against the held-out database (unseen) and against the fitted rows (seen).
"""
from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np
import torch

from accuracy_cifar10 import INPUT_BLOCK, LEARNERS
from hashsearch.datasets.cifar10 import Cifar10Archive, cifar10_split
from hashsearch.features import cifar10_features, cifar10_maps
from hashsearch.metrics import mean_average_precision


def validation_split(label: np.ndarray, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Positions in the training rows: (fitted 400 a class, held-out queries 50 a class, held-out database 50 a class)."""
    rng = np.random.default_rng(seed)
    parts = [[], [], []]
    for c in range(10):
        members = rng.permutation(np.flatnonzero(label == c))
        for part, chunk in zip(parts, (members[:400], members[400:450], members[450:500])):
            part.append(chunk)
    return tuple(np.sort(np.concatenate(p)) for p in parts)


def probe(x: np.ndarray, y: np.ndarray, fit: np.ndarray, held: np.ndarray, x_mirror: np.ndarray | None,
          cs: list[float]) -> dict[float, tuple[float, float]]:
    """C -> (held-out accuracy, fitted accuracy) of logistic regression on standardised features."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    xf, yf = (x[fit], y[fit]) if x_mirror is None else (np.concatenate([x[fit], x_mirror[fit]]), np.tile(y[fit], 2))
    scaler = StandardScaler().fit(xf)
    out = {}
    for c in cs:
        clf = LogisticRegression(C=c, max_iter=2000).fit(scaler.transform(xf), yf)
        out[c] = (round(clf.score(scaler.transform(x[held]), y[held]), 4), round(clf.score(scaler.transform(xf), yf), 4))
    return out


def override(text: str) -> tuple[str, str, object]:
    """"METHOD.key=value" (value as JSON, else a string) -> (method, key, value)."""
    target, _, value = text.partition("=")
    method, _, key = target.partition(".")
    try:
        parsed = json.loads(value)
    except json.JSONDecodeError:
        parsed = value
    return method, key, parsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--resolution", type=int, default=96)
    parser.add_argument("--probe", action="store_true", help="logistic-regression accuracy of the frozen features")
    parser.add_argument("--c", default="0.003,0.01,0.03,0.1", type=lambda s: [float(c) for c in s.split(",")])
    parser.add_argument("--methods", default="", type=lambda s: [m for m in s.split(",") if m])
    parser.add_argument("--bits", default="32", type=lambda s: [int(b) for b in s.split(",")])
    parser.add_argument("--set", action="append", default=[], type=override, metavar="METHOD.key=value",
                        help="change one setting of a learner (repeatable)")
    parser.add_argument("--no-mirror", action="store_true", help="fit without the left-right mirror images")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    archive = Cifar10Archive()
    train = cifar10_split(archive.label, archive.is_test, "a", seed=0).train
    y = archive.label[train]
    fit, held_q, held_db = validation_split(y)
    inputs = {"features": lambda flip: cifar10_features(train, resolution=args.resolution, flip=flip),
              "maps": lambda flip: cifar10_maps(train, depth=INPUT_BLOCK, resolution=args.resolution, flip=flip)}
    common = {"resolution": args.resolution, "mirror": not args.no_mirror}
    if args.probe:
        held = np.sort(np.concatenate([held_q, held_db]))
        x_mirror = None if args.no_mirror else inputs["features"](True)
        print(json.dumps({**common, "probe": probe(inputs["features"](False), y, fit, held, x_mirror, args.c)}), flush=True)
    onehot = np.eye(10, dtype=np.uint8)
    for method in args.methods:
        changes = {k: v for m, k, v in args.set if m == method}
        x = inputs[LEARNERS[method][2]](False)
        xf, yf = (x[fit], y[fit]) if args.no_mirror else (
            np.concatenate([x[fit], inputs[LEARNERS[method][2]](True)[fit]]), np.tile(y[fit], 2))
        for nbits in args.bits:
            model = LEARNERS[method][1](nbits, args.resolution).set_params(**changes)
            load0, t0 = os.getloadavg()[0], time.perf_counter()
            model.fit(xf, yf)
            seconds = time.perf_counter() - t0
            q, db, seen = model.encode(x[held_q]), model.encode(x[held_db]), model.encode(x[fit])
            yq = onehot[y[held_q]]
            print(json.dumps({**common, "method": method, "nbits": nbits, "changes": changes,
                              "map_unseen": round(mean_average_precision(q, db, yq, onehot[y[held_db]], nbits), 4),
                              "map_seen": round(mean_average_precision(q, seen, yq, onehot[y[fit]], nbits), 4),
                              "fit_s": round(seconds, 1), "load": [round(load0, 1), round(os.getloadavg()[0], 1)]}),
                  flush=True)


if __name__ == "__main__":
    main()
