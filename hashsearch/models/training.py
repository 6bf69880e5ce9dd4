"""Shared torch utilities for every learner: device choice, seeding, checkpoints, `load_model`.

A checkpoint is a directory holding `config.json` (the learner's class and constructor settings,
plain JSON a person can read) and `state.pt` (state dicts, tensors and numbers, loaded with
`weights_only=True` so that no pickled code runs). `load_model(dir)` rebuilds any saved learner.
"""
from __future__ import annotations

import importlib
import json
import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hashsearch.errors import CorruptIndexError, HashsearchError, InvalidInputError

CONFIG_FILE = "config.json"
STATE_FILE = "state.pt"
FORMAT_VERSION = 1


def select_device(device: str | torch.device | None = None) -> torch.device:
    """The device to train on: `device` if given and usable, else CUDA when available, else CPU."""
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise InvalidInputError(f"device {str(dev)!r} was asked for but CUDA is not available here; use 'cpu'")
    return dev


def seed_everything(seed: int) -> torch.Generator:
    """Seed python, numpy and torch (CPU and CUDA); return a torch.Generator seeded the same way."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise InvalidInputError(f"seed must be a non-negative integer, got {seed!r}")
    seed = int(seed)
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def as_float_tensor(x: np.ndarray, name: str, ndim: tuple[int, ...] = (2,)) -> torch.Tensor:
    """Check a numeric array (dimension, no NaN/inf) and return it as a float32 CPU tensor."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    x = np.asarray(x)
    if x.ndim not in ndim:
        raise InvalidInputError(f"{name} must have {' or '.join(map(str, ndim))} dimensions, got shape {x.shape}")
    if not (np.issubdtype(x.dtype, np.number) or x.dtype == np.bool_) or np.iscomplexobj(x):
        raise InvalidInputError(f"{name} must be real-valued, got dtype {x.dtype}")
    if x.shape[0] == 0:
        raise InvalidInputError(f"{name} is empty (0 rows)")
    x = x.astype(np.float32, copy=False)
    if not np.isfinite(x).all():
        bad = np.unique(np.nonzero(~np.isfinite(x.reshape(len(x), -1)))[0])
        raise InvalidInputError(f"{name} has NaN or infinite values in {bad.size} row(s), first at row {bad[0]}")
    return torch.from_numpy(np.ascontiguousarray(x))


def class_path(obj_or_cls: Any) -> str:
    """'module.QualName' of a class (or of an object's class), as stored in checkpoints."""
    cls = obj_or_cls if isinstance(obj_or_cls, type) else type(obj_or_cls)
    return f"{cls.__module__}.{cls.__qualname__}"


def save_checkpoint(path: str | os.PathLike, learner: Any, config: dict, state: dict[str, Any]) -> Path:
    """Write `config` (JSON-able) and `state` (tensors / state dicts / numbers) into directory `path`.

    The files are written beside their final names and then renamed, so an interrupted save
    never leaves a half-written checkpoint under the real name.
    """
    out = Path(path)
    out.mkdir(parents=True, exist_ok=True)
    doc = {"format": "hashsearch-model", "version": FORMAT_VERSION, "class": class_path(learner), "config": config}
    try:
        text = json.dumps(doc, indent=2, sort_keys=True)
    except TypeError as exc:
        raise InvalidInputError(f"model config is not JSON-serialisable: {exc}") from exc
    tmp_state, tmp_cfg = out / (STATE_FILE + ".tmp"), out / (CONFIG_FILE + ".tmp")
    torch.save(state, tmp_state)
    tmp_cfg.write_text(text + "\n")
    os.replace(tmp_state, out / STATE_FILE)
    os.replace(tmp_cfg, out / CONFIG_FILE)
    return out


def read_config(path: str | os.PathLike) -> dict:
    """The parsed `config.json` document of a checkpoint directory (class, version, config)."""
    cfg_file = Path(path) / CONFIG_FILE
    if not cfg_file.is_file():
        raise FileNotFoundError(f"no model checkpoint at {path}: {CONFIG_FILE} is missing")
    try:
        doc = json.loads(cfg_file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CorruptIndexError(f"model config {cfg_file} is not valid JSON: {exc}") from exc
    if not isinstance(doc, dict) or doc.get("format") != "hashsearch-model" or "class" not in doc:
        raise CorruptIndexError(f"{cfg_file} is not a hashsearch model config")
    if doc.get("version") != FORMAT_VERSION:
        raise CorruptIndexError(f"{cfg_file} has model format version {doc.get('version')}, expected {FORMAT_VERSION}")
    return doc


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> tuple[dict, dict]:
    """Read a checkpoint directory: (config document, state dict) — tensors only, no code is unpickled."""
    doc = read_config(path)
    state_file = Path(path) / STATE_FILE
    if not state_file.is_file():
        raise FileNotFoundError(f"model checkpoint {path} has no {STATE_FILE}")
    try:
        state = torch.load(state_file, map_location=map_location, weights_only=True)
    except Exception as exc:  # torch raises many types for truncated or foreign files
        raise CorruptIndexError(f"cannot read model weights {state_file}: {exc}") from exc
    return doc, state


def load_model(path: str | os.PathLike) -> Any:
    """Rebuild any saved hashsearch learner from its checkpoint directory (calls `Class.load(path)`)."""
    doc = read_config(path)
    module_name, _, name = doc["class"].rpartition(".")
    if not module_name.startswith("hashsearch."):
        raise CorruptIndexError(f"checkpoint {path} names class {doc['class']!r}, which is not a hashsearch learner")
    try:
        cls = getattr(importlib.import_module(module_name), name)
    except (ImportError, AttributeError) as exc:
        raise HashsearchError(f"checkpoint {path} needs {doc['class']}, which cannot be imported: {exc}") from exc
    return cls.load(path)
