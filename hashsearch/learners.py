"""The learners by name, and how each is fitted to a data set and encodes its rows.

One table (`METHODS`) serves `hashsearch train`, `hashsearch encode` and the benchmark: cross-modal
learners (DCMH, SCM, CCA-ITQ) fit on image/text pairs and encode either side; single-modal learners
(SCHN, DPSH, ITQ, LSH) fit on one modality. Shallow learners take flat feature vectors.
"""
from __future__ import annotations

import importlib
import inspect
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hashsearch.datasets import PairedDataset, Split
from hashsearch.errors import InvalidInputError
from hashsearch.models.training import CONFIG_FILE

CROSS, SINGLE = "cross", "single"
MODALITIES = {"image": "I", "text": "T"}


@dataclass(frozen=True)
class Method:
    """A learner: `target` is "module:Class"; deep learners train for `epochs`.

    `settings` names a dict of recommended constructor arguments beside the class ("module:NAME"),
    used when the module defines it (the learner's defaults otherwise).
    """

    name: str
    kind: str
    target: str
    deep: bool
    settings: str | None = None
    budget: tuple[str, ...] = ("epochs",)  # constructor arguments set to `epochs` in short runs
    budget_fixed: tuple[tuple[str, int], ...] = ()  # and these, fixed, in short runs
    modalities: tuple[str, ...] = ("I", "T")  # single-modal learners: the inputs they are made for
    texts_alone: bool = False  # a cross-modal learner that also fits tag-only data (images=None)

    def make(self, nbits: int, seed: int, epochs: int | None, quiet: bool = True, **options: Any) -> Any:
        """A fresh learner; with `epochs` its training budget is cut to that; `quiet` hides its own
        progress bar (for callers that show theirs); `options` are further constructor arguments."""
        cls = self.learner_class()
        params = inspect.signature(cls).parameters
        kwargs: dict[str, Any] = {**self.recommended(), "seed": seed}
        if epochs is not None:
            kwargs.update({name: epochs for name in self.budget}, **dict(self.budget_fixed))
        for flag in ("progress", "verbose"):
            if flag in params:
                kwargs[flag] = not quiet
        return cls(nbits, **kwargs, **options)

    def learner_class(self) -> type:
        """The class named by `target`, imported on first use (torch loads only when a deep learner does)."""
        module, _, cls_name = self.target.partition(":")
        return getattr(importlib.import_module(module), cls_name)

    def checkpoints(self) -> bool:
        """Whether the learner writes training checkpoints it can resume from (`checkpoint_dir`)."""
        return "checkpoint_dir" in inspect.signature(self.learner_class()).parameters

    def recommended(self) -> dict[str, Any]:
        """The recommended settings dict named by `settings`, or {} where there is none."""
        if self.settings is None:
            return {}
        module, _, name = self.settings.partition(":")
        return dict(getattr(importlib.import_module(module), name, {}))


METHODS = (
    Method("DCMH", CROSS, "hashsearch.models.dcmh:DCMH", deep=True, texts_alone=True),  # "auto" defaults follow the input
    Method("SCM", CROSS, "hashsearch.models.baselines:SCM", deep=False),
    Method("CCA-ITQ", CROSS, "hashsearch.models.baselines:CCAITQ", deep=False),
    Method("SCHN", SINGLE, "hashsearch.models.schn:SCHN", deep=True, budget=("max_iter",),
           budget_fixed=(("max_epoch", 1), ("num_samples", 1000), ("label_dim", 128), ("latent_dim", 256),
                         ("mlp_hidden", 256)),
           modalities=("I",)),  # an image hasher (AlexNet features in the paper)
    Method("DPSH", SINGLE, "hashsearch.models.dpsh:DPSH", deep=True),
    Method("ITQ", SINGLE, "hashsearch.models.baselines:ITQ", deep=False),
    Method("LSH", SINGLE, "hashsearch.models.baselines:LSH", deep=False),
)


def method_named(name: str) -> Method:
    """The learner called `name`, case and punctuation aside ("dcmh", "cca-itq", "ccaitq")."""
    key = name.lower().replace("-", "").replace("_", "")
    for method in METHODS:
        if method.name.lower().replace("-", "") == key:
            return method
    raise InvalidInputError(f"unknown method {name!r}; choose from {', '.join(m.name for m in METHODS)}")


def flat(x: np.ndarray) -> np.ndarray:
    """Rows as flat float32 feature vectors (pixels (n, c, h, w) become (n, c*h*w))."""
    return np.ascontiguousarray(x.reshape(len(x), -1), dtype=np.float32)


def rows_of(ds: PairedDataset, modality: str) -> np.ndarray:
    """The data set's "I" (image) or "T" (text) rows, with a clear error when it lacks them."""
    x = ds.images if modality == "I" else ds.texts
    if x is None:
        raise InvalidInputError(f"{ds.name} has no {'image' if modality == 'I' else 'text'} modality")
    return x


def fit(method: Method, ds: PairedDataset, split: Split, nbits: int, *, modality: str = "I", seed: int = 0,
        epochs: int | None = None, quiet: bool = True, checkpoint_dir: Path | None = None,
        resume: bool = False) -> Any:
    """A learner trained on the split's training rows: on image/text pairs (cross-modal) or on the
    `modality` rows ("I" or "T") for a single-modal learner. Learners that checkpoint save their
    training state to `checkpoint_dir`, and with `resume` continue from the one found there. A learner
    that takes a text vocabulary (DCMH) is given the data set's, so it can encode free text later;
    one that fits texts alone does so on a data set without images."""
    options, more = {}, {}
    if checkpoint_dir is not None and method.checkpoints():
        options["checkpoint_dir"] = checkpoint_dir
        if resume and (Path(checkpoint_dir) / CONFIG_FILE).exists():
            more["resume"] = checkpoint_dir
    model = method.make(nbits, seed, epochs, quiet=quiet, **options)
    tr, labels = split.train, ds.labels[split.train]
    if method.kind == CROSS:
        if ds.text_vocabulary is not None and "text_vocabulary" in inspect.signature(model.fit).parameters:
            more["text_vocabulary"] = ds.text_vocabulary
        images = None if ds.images is None and method.texts_alone else rows_of(ds, "I")[tr]
        return model.fit(images, rows_of(ds, "T")[tr], labels, **more)
    x = rows_of(ds, modality)[tr]
    return model.fit(x if method.deep else flat(x), labels, **more)


def encode(model: Any, x: np.ndarray, modality: str) -> np.ndarray:
    """Packed codes of rows `x` of one modality ("I" or "T"): a cross-modal learner's encoder of that
    side, or a single-modal learner's `encode` (on flat vectors for the shallow ones)."""
    if hasattr(model, "encode_image") and hasattr(model, "encode_text"):
        return model.encode_image(x) if modality == "I" else model.encode_text(x)
    from hashsearch.models.baselines import LinearHash

    return model.encode(flat(x) if isinstance(model, LinearHash) else x)
