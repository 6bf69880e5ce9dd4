"""The main job end to end: train DCMH, encode both modalities, index them, query across modalities.

The embedded default is a small seeded synthetic paired set (no download; the output says
SYNTHETIC); `data="wikipedia"` (or any name/path `hashsearch.datasets.load` knows) runs on real data.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from hashsearch.datasets import PairedDataset, load, standard_split, synthetic_paired
from hashsearch.errors import InvalidInputError
from hashsearch.index import HammingIndex
from hashsearch.jobs import check_widths, torch_threads
from hashsearch.metrics import mean_average_precision
from hashsearch.models.dcmh import DCMH

SYNTHETIC_SIZE = dict(n=2000, n_classes=10, image_dim=64, text_dim=32, max_labels=2, noise=1.0)


def demo_dataset(data: str | None, seed: int) -> PairedDataset:
    """The embedded synthetic set (data=None) or a real data set by name or path."""
    if data is None:
        return synthetic_paired(**SYNTHETIC_SIZE, seed=seed)
    dataset = load(data)
    if dataset.images is None or dataset.texts is None or dataset.images.ndim != 2:
        raise InvalidInputError(f"the demo needs paired image features and texts; {dataset.name} lacks one of them")
    return dataset


def check_arguments(nbits: int, epochs: int | None, k: int, threads: int | None = 1) -> None:
    """Refuse bad arguments before any data is read or generated."""
    check_widths([nbits])
    for name, value in (("--epochs", 1 if epochs is None else epochs), ("--k", k),
                        ("--threads", 1 if threads is None else threads)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise InvalidInputError(f"{name} must be a positive integer, got {value!r}")


def label_text(row: np.ndarray, names: tuple[str, ...] | None) -> str:
    """A row's labels by class name where the data set has names, else by label number."""
    columns = np.flatnonzero(row)
    return ", ".join(names[c] if names is not None else str(c) for c in columns) or "none"


def _show_query(echo: Callable[[str], None], title: str, dataset: PairedDataset, labels: np.ndarray,
                query: int, dist: np.ndarray, ids: np.ndarray) -> None:
    names = dataset.label_names
    echo(f"{title}: query pair {query}, labels: {label_text(labels[query], names)}")
    for rank, (d, i) in enumerate(zip(dist, ids), 1):
        hit = "relevant" if (labels[i] & labels[query]).any() else "-"
        echo(f"  {rank:2d}. item {int(i):5d}  hamming {int(d):3d}  labels: {label_text(labels[i], names)}  {hit}")


def run_demo(data: str | None = None, nbits: int = 32, epochs: int | None = None, k: int = 5, seed: int = 0,
             progress: bool = True, threads: int | None = 1, echo: Callable[[str], None] = print) -> dict[str, Any]:
    """Train (on `threads` torch threads; None: torch's default), encode, index, query both ways and
    print the results; returns the two MAPs. `epochs=None` keeps DCMH's own choice for the input
    (`DCMH.params_`)."""
    check_arguments(nbits, epochs, k, threads)
    with torch_threads(threads):
        return _run(data, nbits, epochs, k, seed, progress, echo)


def _run(data, nbits, epochs, k, seed, progress, echo) -> dict[str, Any]:
    dataset = demo_dataset(data, seed)
    split = standard_split(dataset, seed=seed)
    kind = "SYNTHETIC (seeded, generated here; real data: --data wikipedia)" if dataset.synthetic else "real"
    echo(f"data: {dataset.name} [{kind}]: {len(dataset)} pairs, {len(split.query)} queries, "
         f"{len(split.train)} training pairs, {len(split.database)} in the database")
    labels = dataset.labels.astype(bool)
    tr, db, qs = split.train, split.database, split.query
    model = DCMH(nbits, epochs="auto" if epochs is None else epochs, seed=seed, progress=progress)
    model.fit(dataset.images[tr], dataset.texts[tr], labels[tr])
    echo(f"trained DCMH: {nbits} bits, {model.params_['epochs']} epochs ({model.params_['recipe']} recipe), "
         f"{sum(h['seconds'] for h in model.history_):.1f} s")

    db_image, db_text = model.encode_image(dataset.images[db]), model.encode_text(dataset.texts[db])
    image_index, text_index = HammingIndex(nbits), HammingIndex(nbits)
    image_index.add(db_image, ids=db)
    text_index.add(db_text, ids=db)
    q_text, q_image = model.encode_text(dataset.texts[qs]), model.encode_image(dataset.images[qs])

    dist, ids = image_index.search(q_text[:1], k)
    _show_query(echo, "text -> image", dataset, labels, int(qs[0]), dist[0], ids[0])
    dist, ids = text_index.search(q_image[:1], k)
    _show_query(echo, "image -> text", dataset, labels, int(qs[0]), dist[0], ids[0])

    t2i = mean_average_precision(q_text, db_image, labels[qs], labels[db], nbits)
    i2t = mean_average_precision(q_image, db_text, labels[qs], labels[db], nbits)
    echo(f"MAP over the whole database ({len(qs)} queries): text->image {t2i:.3f}  image->text {i2t:.3f}"
         + ("  [SYNTHETIC data]" if dataset.synthetic else ""))
    return {"dataset": dataset.name, "synthetic": dataset.synthetic, "nbits": nbits, "t2i_map": t2i, "i2t_map": i2t}
