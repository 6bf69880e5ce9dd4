"""The one learner contract, scikit-learn's, and the input checks every learner shares.

- `Learner` is a `sklearn.base.BaseEstimator`: `get_params` / `set_params` come from the `__init__`
  signature, so `type(m)(**m.get_params())` and `sklearn.base.clone(m)` rebuild an unfitted copy.
  Constructors store their arguments unchanged under their own names; `_check_params` only raises
  (it runs in `__init__` for an early error and again in `fit`, after any `set_params`).
- Fitted state lives in attributes ending in `_`; `check_is_fitted` raises the one `NotFittedError`.
- One checkpoint format (`training.save_checkpoint`): config.json holds {"params": constructor
  arguments, "fitted": what a subclass learnt that is plain JSON}, state.pt its tensors. Subclasses
  give `_fitted_config`, `_fitted_state` and `_restore`; `save` / `load` live here.
- Input helpers written once: `signs` (sign(0) = +1), `multihot_labels`, `label_similarity`.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn.base import BaseEstimator

from hashsearch.datasets.checks import as_labels
from hashsearch.errors import CorruptIndexError, InvalidInputError, NotFittedError
from hashsearch.models import training

CUSTOM = "custom"  # stands in config.json for a constructor argument that is a torch module


def check_count(value: int, name: str) -> int:
    """A non-negative integer setting (seed, iterations), else InvalidInputError naming it."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
        raise InvalidInputError(f"{name} must be a non-negative integer, got {value!r}")
    return int(value)


def check_real(value: float, name: str, strictly_positive: bool = True) -> float:
    """A finite real setting that is > 0 (or >= 0), else InvalidInputError naming it."""
    ok = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool) and np.isfinite(value)
    if not ok or value < 0 or (strictly_positive and value == 0):
        raise InvalidInputError(f"{name} must be a finite number {'>' if strictly_positive else '>='} 0, got {value!r}")
    return float(value)


def signs(x: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
    """±1 of the same kind (numpy float64 or tensor of x's dtype) with sign(0) = +1: never a third state."""
    if isinstance(x, torch.Tensor):
        return torch.where(x >= 0, 1.0, -1.0).to(x.dtype)
    return np.where(np.asarray(x) >= 0, 1.0, -1.0)


def multihot_labels(labels: Any, n: int, name: str = "labels") -> np.ndarray:
    """Labels of `n` items as an (n, c) float32 0/1 matrix.

    Accepts class ids (n,) or a multi-hot (n, c) matrix (0/1 or -1/+1). Refuses rows with no label
    and label sets that are all zero or hold a single class: pairwise supervision needs both similar
    and dissimilar pairs.
    """
    if labels is None:
        raise InvalidInputError(f"{name} are required: this learner is supervised")
    raw = np.asarray(labels)
    if raw.ndim >= 1 and raw.shape[0] != n:
        raise InvalidInputError(f"{name} have {raw.shape[0]} rows but there are {n} items")
    if raw.ndim == 1 and raw.size and np.issubdtype(raw.dtype, np.number) and not raw.any():
        raise InvalidInputError(f"{name} are all zero: give class ids or multi-hot rows with at least one label each")
    out = as_labels(raw, name).astype(np.float32)
    if out.shape[1] == 1 or (out.all(axis=0)).any():
        raise InvalidInputError(f"{name}: every item shares one class, so no pair is dissimilar; nothing to learn from")
    return out


def label_similarity(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """S_ij = 1 where multi-hot rows a_i and b_j share at least one label, else 0 (float32)."""
    return (a @ b.T > 0).to(torch.float32)


def check_is_fitted(model: Any) -> None:
    """Raise `NotFittedError` unless `model` holds fitted state (an attribute ending in '_')."""
    if not any(k.endswith("_") and not k.startswith("__") for k in vars(model)):
        raise NotFittedError(f"this {type(model).__name__} is not fitted yet; call fit() first")


def _to_json(value: Any) -> Any:
    if isinstance(value, torch.nn.Module):
        return CUSTOM
    if isinstance(value, (tuple, list)):
        return [_to_json(v) for v in value]
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, np.generic):
        return value.item()
    return value


def _from_json(value: Any) -> Any:
    return tuple(_from_json(v) for v in value) if isinstance(value, list) else value


class Learner(BaseEstimator):
    """Base of every hashsearch learner: scikit-learn parameters, fitted check, checkpoints."""

    def _check_params(self) -> None:
        """Raise InvalidInputError for a bad constructor argument; never rewrites one."""

    # ---- checkpoints ------------------------------------------------------------------------------
    def _fitted_config(self) -> dict[str, Any]:
        """Plain-JSON fitted state (shapes, resolved settings, histories) for config.json."""
        return {}

    def _fitted_state(self) -> dict[str, Any]:
        """Tensors / state dicts of the fitted state for state.pt."""
        return {}

    def _restore(self, fitted: dict[str, Any], state: dict[str, Any]) -> None:
        """Set the fitted state from what `_fitted_config` and `_fitted_state` wrote."""
        raise NotImplementedError

    def _save(self, path: str | os.PathLike, extra_state: dict[str, Any] | None = None) -> Path:
        params = {k: _to_json(v) for k, v in self.get_params(deep=False).items()}
        config = {"params": params, "fitted": self._fitted_config()}
        return training.save_checkpoint(path, self, config, {**self._fitted_state(), **(extra_state or {})})

    def save(self, path: str | os.PathLike) -> Path:
        """Write the fitted learner into checkpoint directory `path` (read back by `load_model`)."""
        check_is_fitted(self)
        return self._save(path)

    @classmethod
    def load(cls, path: str | os.PathLike, **params: Any) -> "Learner":
        """Rebuild a learner saved by `save`; `params` override saved constructor arguments (a custom
        torch module must be passed again under its argument name)."""
        doc, state = training.load_checkpoint(path)
        if doc["class"] != training.class_path(cls):
            raise InvalidInputError(f"checkpoint {path} holds a {doc['class']}, not a {training.class_path(cls)}")
        cfg = doc["config"]
        if not isinstance(cfg, dict) or "params" not in cfg:
            raise CorruptIndexError(f"checkpoint {path} has no constructor params")
        saved = {k: _from_json(v) for k, v in cfg["params"].items()}
        missing = [k for k, v in saved.items() if v == CUSTOM and k not in params]
        if missing:
            raise InvalidInputError(f"{path} was trained with a custom {missing[0]}; pass the same module as {missing[0]}=")
        try:
            model = cls(**{**saved, **params})
        except (TypeError, InvalidInputError) as exc:
            raise CorruptIndexError(f"checkpoint {path} has settings {cls.__name__} does not accept: {exc}") from exc
        try:
            model._restore(cfg.get("fitted", {}), state)
        except KeyError as exc:
            raise CorruptIndexError(f"checkpoint {path} lacks {exc.args[0]!r} of {cls.__name__}") from exc
        return model
