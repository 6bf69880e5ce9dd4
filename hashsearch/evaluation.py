"""Evaluate a learner's codes on a data set's standard split and write the report (Markdown table,
JSON, PNG curves). Cross-modal learners are scored both ways, image->text and text->image (query codes
of one modality against database codes of the other); single-modal learners within one modality.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from hashsearch import metrics
from hashsearch.datasets import PairedDataset, Split
from hashsearch.errors import InvalidInputError
from hashsearch.plots import plot_pr_curves, plot_topk_precision

REPORT, RESULTS, PR_PLOT, TOPK_PLOT = "report.md", "results.json", "pr_curve.png", "topk_precision.png"


def default_ks(limit: int) -> list[int]:
    """K values for the top-K curve: a few small ones, then every 100, up to `limit`."""
    ks = {1, 5, 10, 25, 50, *range(100, limit + 1, 100), limit}
    return sorted(k for k in ks if k <= limit)


def evaluate_codes(query_codes: np.ndarray, db_codes: np.ndarray, query_labels: np.ndarray,
                   db_labels: np.ndarray, nbits: int, *, topk: int = 1000, radius: int = 2) -> dict[str, Any]:
    """mAP@all, mAP@topk, precision within `radius`, the radius PR curve and the top-K precision curve
    (K up to min(topk, database size)) of one (queries, database) pair of packed codes."""
    limit = min(int(topk), len(db_codes))
    args = (query_codes, db_codes, query_labels, db_labels, nbits)
    precision, recall = metrics.pr_curve_by_radius(*args)
    ks = default_ks(limit)
    return {
        "n_query": len(query_codes),
        "n_database": len(db_codes),
        "map_all": metrics.mean_average_precision(*args),
        "map_at_k": metrics.mean_average_precision(*args, k=limit),
        "k": limit,
        "radius": radius,
        "precision_within_radius": metrics.precision_within_radius(*args, radius=radius),
        "lookup": metrics.lookup_statistics(*args, radius=radius),
        "database_codes": metrics.code_statistics(db_codes, nbits),
        "pr_curve": {"radius": list(range(nbits + 1)), "precision": precision.tolist(), "recall": recall.tolist()},
        "topk_curve": {"k": ks, "precision": metrics.topk_precision_curve(*args, ks=ks).tolist()},
    }


def lookup_summary(scores: dict[str, Any]) -> str:
    """P@H<=r in words: "no hits" when no query retrieves anything (precision is undefined then, not 0),
    else the precision and the share of queries with hits."""
    label = f"P@H<={scores['radius']}"
    share = scores.get("lookup", {}).get("hit_fraction")
    if share is None:  # results written before the hit share was recorded
        return f"{label} {scores['precision_within_radius']:.4f}"
    if share == 0:
        return f"{label} no hits (no query finds a code within radius {scores['radius']})"
    return f"{label} {scores['precision_within_radius']:.4f} ({100 * share:.1f}% of queries have hits)"


def _precision_cell(scores: dict[str, Any]) -> str:
    """P@H<=r for the report table: "no hits" when no query retrieves anything (undefined, not 0)."""
    return "no hits" if scores["lookup"]["hit_fraction"] == 0 else f"{scores['precision_within_radius']:.4f}"


def _describe(model: Any, dataset: PairedDataset, split: Split) -> dict[str, Any]:
    return {
        "dataset": dataset.name,
        "synthetic": bool(dataset.synthetic),
        "model": f"{type(model).__module__}.{type(model).__qualname__}",
        "nbits": int(model.nbits),
        "split": {"query": len(split.query), "train": len(split.train), "database": len(split.database)},
    }


def evaluate_crossmodal(model: Any, dataset: PairedDataset, split: Split, *, topk: int = 1000) -> dict[str, Any]:
    """I->T and T->I scores of a cross-modal learner (encode_image / encode_text)."""
    if dataset.images is None or dataset.texts is None:
        raise InvalidInputError(f"{dataset.name} lacks the {'image' if dataset.images is None else 'text'} modality: "
                                "cross-modal evaluation needs both")
    codes = {}
    for modality, encode, x in tqdm([("I", model.encode_image, dataset.images), ("T", model.encode_text, dataset.texts)],
                                    desc="encoding", leave=False):
        codes[modality] = (encode(x[split.query]), encode(x[split.database]))
    ql, dbl = dataset.labels[split.query], dataset.labels[split.database]
    tasks = {f"{a}→{b}": evaluate_codes(codes[a][0], codes[b][1], ql, dbl, model.nbits, topk=topk)
             for a, b in tqdm([("I", "T"), ("T", "I")], desc="scoring", leave=False)}
    return {**_describe(model, dataset, split), "tasks": tasks}


def evaluate_single(model: Any, dataset: PairedDataset, split: Split, *, modality: str | None = None,
                    topk: int = 1000) -> dict[str, Any]:
    """Within-modality scores (I->I or T->T): images by default, texts when the data set has no images
    (or modality="text"). Uses `encode`, or a cross-modal learner's encoder of that modality (so DCMH
    is scored T->T on the shared MIRFLICKR tags, which have no image features)."""
    modality = modality or ("image" if dataset.images is not None else "text")
    if modality not in ("image", "text"):
        raise InvalidInputError(f"modality must be 'image' or 'text', got {modality!r}")
    x = dataset.images if modality == "image" else dataset.texts
    if x is None:
        raise InvalidInputError(f"{dataset.name} has no {modality} modality")
    encode = getattr(model, "encode", None) or getattr(model, f"encode_{modality}")
    q, db = encode(x[split.query]), encode(x[split.database])
    tag = modality[0].upper()
    scores = evaluate_codes(q, db, dataset.labels[split.query], dataset.labels[split.database], model.nbits, topk=topk)
    return {**_describe(model, dataset, split), "tasks": {f"{tag}→{tag}": scores}}


def evaluate_model(model: Any, dataset: PairedDataset, split: Split, *, topk: int = 1000) -> dict[str, Any]:
    """Both cross-modal directions when the learner and the data have two modalities, else within the
    one modality there is."""
    cross = hasattr(model, "encode_image") and hasattr(model, "encode_text")
    if not cross and not hasattr(model, "encode"):
        raise InvalidInputError(f"{type(model).__name__} has neither encode_image/encode_text nor encode")
    if cross and dataset.images is not None and dataset.texts is not None:
        return evaluate_crossmodal(model, dataset, split, topk=topk)
    return evaluate_single(model, dataset, split, topk=topk)


def _label(result: dict[str, Any], task: str, many: bool) -> str:
    short = result["model"].rsplit(".", 1)[-1]
    return f"{short} {result['nbits']}b {task}" if many else f"{task}"


def write_report(results: dict[str, Any] | list[dict[str, Any]], out_dir: str | os.PathLike) -> Path:
    """Write report.md (table), results.json and the PR / top-K PNG plots to `out_dir`; returns report.md."""
    results = [results] if isinstance(results, dict) else list(results)
    if not results:
        raise InvalidInputError("no results to report")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    many = len(results) > 1
    lines = ["# Retrieval evaluation", ""]
    if any(r["synthetic"] for r in results):
        lines += ["**SYNTHETIC data: for tests only, not a reportable figure.**", ""]
    lines += [
        "| data set | model | bits | task | queries | database | mAP@all | mAP@K (K) | P@H≤r (r) "
        "| queries with a hit ≤r | P@r (queries with a hit) | recall@r | distinct db codes | constant bits | max abs bit corr |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    pr, topk = {}, {}
    for r in results:
        for task, s in r["tasks"].items():
            model = r["model"].rsplit(".", 1)[-1]
            lines.append(f"| {r['dataset']}{' (SYNTHETIC)' if r['synthetic'] else ''} | {model} | {r['nbits']} | {task} | "
                         f"{s['n_query']} | {s['n_database']} | {s['map_all']:.4f} | {s['map_at_k']:.4f} ({s['k']}) | "
                         f"{_precision_cell(s)} ({s['radius']}) | {s['lookup']['hit_fraction']:.1%} | "
                         f"{s['lookup']['precision']:.4f} | {s['lookup']['recall']:.4f} | {s['database_codes']['distinct']} | "
                         f"{len(s['database_codes']['constant_bits'])} | {s['database_codes']['max_abs_correlation']:.2f} |")
            label = _label(r, task, many)
            pr[label] = (s["pr_curve"]["precision"], s["pr_curve"]["recall"])
            topk[label] = (s["topk_curve"]["k"], s["topk_curve"]["precision"])
    title_set = ", ".join(sorted({r["dataset"] for r in results}))
    plot_pr_curves(pr, out / PR_PLOT, title=f"Hash lookup precision-recall ({title_set})")
    plot_topk_precision(topk, out / TOPK_PLOT, title=f"Top-K precision ({title_set})")
    lines += [
        "",
        "Relevance: at least one shared label. mAP@all over the whole Hamming ranking; mAP@K divides by the",
        "relevant items found in the top K; ties at equal distance ranked by ascending database row (stable).",
        "P@H≤r and the PR curve are pooled over all query-database pairs (micro-averaged); the lookup columns are",
        "per query: P@r is the mean over the queries with a hit within r, recall@r the mean over queries with a",
        "relevant item; the code columns describe the database codes.",
        "",
        f"![precision-recall]({PR_PLOT})",
        f"![top-K precision]({TOPK_PLOT})",
        "",
    ]
    (out / RESULTS).write_text(json.dumps(results, indent=1, ensure_ascii=False), encoding="utf-8")
    (out / REPORT).write_text("\n".join(lines), encoding="utf-8")
    return out / REPORT


def run_eval(model_dir: str | os.PathLike, data: str, out_dir: str | os.PathLike, *, topk: int = 1000,
             seed: int = 0) -> tuple[dict[str, Any], Path]:
    """`hashsearch eval`: load a saved learner, score it on the data set's standard split, write the report."""
    from hashsearch import datasets
    from hashsearch.models.training import load_model

    model = load_model(model_dir)
    dataset = datasets.load(data)
    result = evaluate_model(model, dataset, datasets.standard_split(dataset, seed=seed), topk=topk)
    return result, write_report(result, out_dir)
