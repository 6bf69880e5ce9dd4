"""PNG plots of retrieval quality (matplotlib's Agg canvas, no display and no global pyplot state)."""
from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure


def _save(fig: Figure, path: str | os.PathLike) -> None:
    fig.tight_layout()
    FigureCanvasAgg(fig).print_png(os.fspath(path))


def plot_pr_curves(curves: Mapping[str, tuple[Sequence[float], Sequence[float]]], path: str | os.PathLike,
                   title: str = "Precision-recall of hash lookup (radius 0..nbits)") -> None:
    """One line per label from (precision, recall) arrays indexed by Hamming radius; radii that retrieve
    nothing relevant yet (recall 0) are left out rather than drawn as a misleading (0, 0)."""
    fig = Figure(figsize=(6.4, 4.8), dpi=100)
    ax = fig.add_subplot()
    for label, (precision, recall) in curves.items():
        precision, recall = np.asarray(precision), np.asarray(recall)
        keep = recall > 0
        ax.plot(recall[keep], precision[keep], marker=".", markersize=4, label=label)
    ax.set(xlabel="recall", ylabel="precision", xlim=(0, 1.02), ylim=(0, 1.02), title=title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    _save(fig, path)


def plot_topk_precision(curves: Mapping[str, tuple[Sequence[int], Sequence[float]]], path: str | os.PathLike,
                        title: str = "Precision of the top K (Hamming ranking)") -> None:
    """One line per label from (ks, precision at each K)."""
    fig = Figure(figsize=(6.4, 4.8), dpi=100)
    ax = fig.add_subplot()
    for label, (ks, precision) in curves.items():
        ax.plot(ks, precision, marker=".", markersize=4, label=label)
    ax.set(xlabel="K (items returned)", ylabel="precision", ylim=(0, 1.02), title=title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    _save(fig, path)
