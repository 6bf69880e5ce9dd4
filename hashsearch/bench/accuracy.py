"""Accuracy of every learner on every real data set at nbits 16/32/64: mAP@all, mAP@k, P@r<=2, the
PR curve by Hamming radius and top-K precision, in the DCMH paper's layout (methods x task x bits).

Cross-modal learners (DCMH, SCM, CCA-ITQ) run where a set has both modalities (I->T, T->I);
single-modal learners (DPSH, SCHN, ITQ, LSH) run on each modality a set has (I->I, T->T).
"""
from __future__ import annotations

import time

import numpy as np
from tqdm.auto import tqdm

from hashsearch import datasets, learners, metrics
from hashsearch.bench.config import BenchConfig
from hashsearch.index import HammingIndex
from hashsearch.learners import CROSS, METHODS, SINGLE, Method
from hashsearch.models.training import load_model

LOADERS = {"wikipedia": "load_wikipedia", "mirflickr25k": "load_mirflickr", "nuswide10500": "load_nuswide",
           "mnist5k": "load_mnist5k", "siftsmall": "load_sift_small"}


def load_dataset(name: str) -> datasets.PairedDataset | datasets.SiftSmall:
    """A real data set by its folder-style name (see LOADERS)."""
    if name not in LOADERS:
        raise ValueError(f"unknown data set {name!r}; choose from {', '.join(LOADERS)}")
    return getattr(datasets, LOADERS[name])()


def tasks_of(ds: datasets.PairedDataset, method: Method) -> list[tuple[str, str, str]]:
    """(task label, query modality, database modality) pairs that `method` answers on `ds`."""
    have = [m for m, arr in (("I", ds.images), ("T", ds.texts)) if arr is not None]
    if method.kind == CROSS:
        return [("I→T", "I", "T"), ("T→I", "T", "I")] if len(have) == 2 else []
    return [] if len(have) == 2 else [(f"{m}→{m}", m, m) for m in have if m in method.modalities]


def fit_and_encode(method: Method, ds: datasets.PairedDataset, split: datasets.Split, modality: str,
                   nbits: int, cfg: BenchConfig) -> tuple[dict[str, tuple[np.ndarray, np.ndarray]], dict]:
    """Train (or load from cfg.models_dir) one learner; packed (query, database) codes per modality."""
    saved = cfg.models_dir / ds.name / f"{method.name}-{nbits}" if cfg.models_dir else None
    t0 = time.perf_counter()
    epochs = cfg.accuracy_epochs if method.deep else None
    if saved is not None and saved.exists():
        model, origin = load_model(saved), f"loaded {saved}"
    else:
        model = learners.fit(method, ds, split, nbits, modality=modality, seed=cfg.seed, epochs=epochs)
        settings = f"{method.settings.partition(':')[2]} + " if method.recommended() else ""
        origin = f"trained ({settings}{f'{epochs} epochs' if epochs else 'defaults'})"
    codes = {}
    for m in ("I", "T") if method.kind == CROSS else (modality,):
        x = learners.rows_of(ds, m)
        codes[m] = (learners.encode(model, x[split.query], m), learners.encode(model, x[split.database], m))
    return codes, {"origin": origin, "seconds": round(time.perf_counter() - t0, 1)}


def score(q: np.ndarray, db: np.ndarray, ql: np.ndarray, dbl: np.ndarray, nbits: int, cfg: BenchConfig) -> dict:
    """The table's metrics and the curves of one (query codes, database codes) pair."""
    precision, recall = metrics.pr_curve_by_radius(q, db, ql, dbl, nbits)
    ks = [k for k in cfg.accuracy_topk if k <= len(db)]
    return {"map_all": metrics.mean_average_precision(q, db, ql, dbl, nbits),
            "map_k": metrics.mean_average_precision(q, db, ql, dbl, nbits, k=cfg.map_k),
            "p_r2": metrics.precision_within_radius(q, db, ql, dbl, nbits, radius=2),
            "precision": np.asarray(precision).tolist(), "recall": np.asarray(recall).tolist(),
            "topk": ks, "topk_precision": metrics.topk_precision_curve(q, db, ql, dbl, nbits, ks=ks).tolist()}


def neighbour_recall(ds: datasets.SiftSmall, cfg: BenchConfig, true_k: int = 10) -> list[dict]:
    """Unlabelled descriptors: the share of each query's `true_k` Euclidean neighbours found in its
    Hamming top K, for the unsupervised learners (LSH, ITQ) at every nbits."""
    rows = []
    truth = ds.groundtruth[:, :true_k]
    for method in (m for m in METHODS if m.kind == SINGLE and not m.deep):
        for nbits in cfg.accuracy_nbits:
            model = method.make(nbits, cfg.seed, None).fit(ds.base)
            index = HammingIndex(nbits)
            index.add(model.encode(ds.base))
            _, ids = index.search(model.encode(ds.queries), max(cfg.accuracy_topk))
            recall = {f"recall@{k}": float(np.mean([np.isin(t, i[:k]).mean() for t, i in zip(truth, ids)]))
                      for k in cfg.accuracy_topk}
            rows.append({"dataset": ds.name, "method": method.name, "nbits": nbits, "true_k": true_k, **recall})
    return rows


def accuracy_section(cfg: BenchConfig) -> dict:
    """Rows of the accuracy table, curves at the widest code, notes, and learned codes for the scale run."""
    if cfg.threads is not None:  # the learners' torch ops use the run's threads too
        import torch

        torch.set_num_threads(cfg.threads)
    rows, curves, notes, feature_dims, recall = [], {}, [], {}, []
    learned: tuple[np.ndarray | None, str] = (None, "")
    loaded = {}
    for name in cfg.accuracy_datasets:
        ds = load_dataset(name)
        if isinstance(ds, datasets.SiftSmall):  # no labels: recall of the true Euclidean neighbours
            feature_dims[f"{name} descriptor"] = ds.base.shape[1]
            recall += neighbour_recall(ds, cfg)
            continue
        for mod, arr in (("image", ds.images), ("text", ds.texts)):
            if arr is not None:
                feature_dims[f"{name} {mod}"] = int(np.prod(arr.shape[1:]))
        loaded[name] = (ds, datasets.standard_split(ds, seed=cfg.seed))
    deep_ok = set(cfg.deep_datasets if cfg.deep_datasets is not None else loaded)
    deep_bits = set(cfg.deep_nbits if cfg.deep_nbits is not None else cfg.accuracy_nbits)
    jobs = [(name, m, task, nbits) for name, (ds, _) in loaded.items() for m in METHODS
            if name in deep_ok or not m.deep for task in tasks_of(ds, m) for nbits in cfg.accuracy_nbits
            if nbits in deep_bits or not m.deep]
    if set(loaded) - deep_ok:
        notes.append(f"- Deep learners skipped on {', '.join(sorted(set(loaded) - deep_ok))} in this "
                     f"{cfg.mode} run (time budget); the default `--full` grid trains them everywhere.")
    if set(cfg.accuracy_nbits) - deep_bits:
        notes.append(f"- Deep learners trained at {', '.join(map(str, sorted(deep_bits)))} bits only in this "
                     f"{cfg.mode} run (time budget); the default `--full` grid trains every width.")
    cache: dict = {}
    for name, method, (task, qm, dm), nbits in tqdm(jobs, desc="accuracy (set, method, task, bits)"):
        ds, split = loaded[name]
        key = (name, method.name, nbits, None if method.kind == CROSS else qm)
        if key not in cache:
            try:
                cache[key] = fit_and_encode(method, ds, split, qm, nbits, cfg)
            except Exception as exc:  # a learner that cannot run here is named in the notes, the rest go on
                cache[key] = None
                notes.append(f"- {method.name} on {name} ({nbits} bits) failed: {type(exc).__name__}: {exc}")
        if cache[key] is None:
            continue
        codes, info = cache[key]
        s = score(codes[qm][0], codes[dm][1], ds.labels[split.query], ds.labels[split.database], nbits, cfg)
        rows.append({"dataset": name, "method": method.name, "task": task, "nbits": nbits, **info,
                     **{k: s[k] for k in ("map_all", "map_k", "p_r2")}})
        if nbits == max(cfg.accuracy_nbits):
            c = curves.setdefault((name, task), {"dataset": name, "task": task, "nbits": nbits, "methods": {}})
            c["methods"][method.name] = {k: s[k] for k in ("precision", "recall", "topk", "topk_precision")}
        if learned[0] is None and method.deep and nbits == cfg.scale_nbits:
            learned = (codes[dm][1], f"{method.name} {name} {task} database codes, {nbits} bits")
    epochs = (f"for {cfg.accuracy_epochs} epochs (a short {cfg.mode} budget: far from converged)" if cfg.accuracy_epochs
              else "with their recommended settings or defaults")
    notes.insert(0, f"- Deep learners trained {epochs}; mAP@k uses k = {cfg.map_k}; P@r≤2 is pooled over "
                    "all query–database pairs; relevance = at least one shared label.")
    return {"rows": rows, "curves": list(curves.values()), "notes": notes, "map_k": cfg.map_k, "recall": recall,
            "feature_dims": feature_dims, "learned": learned}
