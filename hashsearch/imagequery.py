"""Codes from image files: find them, read them with Pillow, encode them with a model whose image side
takes pixels (SCHN / DPSH / DCMH with image_net="mobilenet_v1", or a pixel CNN), and draw a query (an
image, or the words of a text query) with its results as a picture grid. Used by `hashsearch encode
--images` and `hashsearch query --image / --text`.
"""
from __future__ import annotations

import glob
import os
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from hashsearch.errors import InvalidInputError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")
FILE_COLUMN = "file"


def image_paths(spec: str | os.PathLike) -> list[Path]:
    """Image files named by `spec`: a folder (searched recursively), a glob pattern, or one file; sorted."""
    spec = os.fspath(spec)
    if os.path.isdir(spec):
        found = [p for p in Path(spec).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()]
    elif os.path.isfile(spec):
        found = [Path(spec)]
    else:
        found = [Path(p) for p in glob.glob(spec, recursive=True) if Path(p).suffix.lower() in IMAGE_SUFFIXES]
    if not found:
        raise InvalidInputError(f"no image files ({', '.join(IMAGE_SUFFIXES)}) match {spec!r}")
    return sorted(found)


def pixel_size(model: Any) -> tuple[int, int]:
    """(height, width) of the RGB pixel rows `model` was trained on, or a clear error if it takes features."""
    shape = getattr(model, "input_shape_", None) or getattr(model, "image_dim_", None)
    if shape is None or len(shape) != 3 or shape[0] != 3:
        raise InvalidInputError(f"{type(model).__name__} takes rows of shape {tuple(shape) if shape else '?'}, not RGB "
                                "images: train it on pixels, e.g. with image_net='mobilenet_v1'")
    return int(shape[1]), int(shape[2])


def read_images(paths: Sequence[str | os.PathLike], size: tuple[int, int]) -> np.ndarray:
    """float32 (n, 3, h, w) pixels in [0, 1], each file converted to RGB and resized (bilinear) to `size`."""
    from PIL import Image, UnidentifiedImageError

    out = np.empty((len(paths), 3, *size), dtype=np.float32)
    for k, path in enumerate(paths):
        try:
            with Image.open(path) as img:
                rgb = img.convert("RGB")
        except (OSError, UnidentifiedImageError) as exc:
            raise InvalidInputError(f"{path}: not a readable image ({exc})") from None
        if rgb.size != (size[1], size[0]):
            rgb = rgb.resize((size[1], size[0]), Image.BILINEAR)
        out[k] = np.asarray(rgb, dtype=np.float32).transpose(2, 0, 1) / 255
    return out


def encode_images(model: Any, paths: Sequence[str | os.PathLike], batch_size: int = 256) -> np.ndarray:
    """Packed codes of image files through the model's image side, `batch_size` files at a time."""
    from hashsearch import learners

    size = pixel_size(model)
    parts = [learners.encode(model, read_images(paths[i:i + batch_size], size), "I")
             for i in range(0, len(paths), batch_size)]
    return np.concatenate(parts)


def result_words(result: dict[str, Any]) -> str:
    """What describes a result in words: its stored tags, else its labels."""
    words = result.get("tags") or result.get("labels") or result.get("label") or ""
    return ", ".join(map(str, words)) if isinstance(words, (list, tuple)) else str(words)


def show_results(query: str | os.PathLike, results: Sequence[dict[str, Any]], out: str | os.PathLike,
                 columns: int = 6, *, query_is_text: bool = False) -> None:
    """A PNG grid: the query first (an image file, or with `query_is_text` its words), then each result
    titled with its distance: its image (metadata `file`) captioned with its words (`result_words`)
    and file name, or where it has no readable image, its words in the tile."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    first = (None, "query", str(query)) if query_is_text else (query, "query", Path(query).name)
    tiles = [first] + [(r.get(FILE_COLUMN), f"d = {r['distance']}   id {r['id']}" if "id" in r else f"d = {r['distance']}",
                        f"{result_words(r)} {Path(r[FILE_COLUMN]).name if r.get(FILE_COLUMN) else ''}".strip())
                       for r in results]
    columns = min(columns, len(tiles))
    rows = -(-len(tiles) // columns)
    fig = Figure(figsize=(2.0 * columns, 2.3 * rows), dpi=100)
    for k, (path, title, caption) in enumerate(tiles):
        ax = fig.add_subplot(rows, columns, k + 1)
        shown = path is not None and _draw_image(ax, path)
        if not shown:
            ax.text(0.5, 0.5, textwrap.fill(textwrap.shorten(caption, 240, placeholder=" …"), 22) or "no image", ha="center", va="center", fontsize=8,
                    wrap=True, transform=ax.transAxes)
        ax.set_title(title, fontsize=9, color="tab:blue" if k == 0 else "black")
        ax.set_xlabel(caption[:28] if shown else "", fontsize=7)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    tmp = Path(out).with_name(f".{Path(out).name}.tmp-{os.getpid()}.png")
    FigureCanvasAgg(fig).print_png(os.fspath(tmp))
    os.replace(tmp, out)


def _draw_image(ax: Any, path: str | os.PathLike) -> bool:
    """Draw the image file at `path` into `ax`; False when it cannot be read."""
    from PIL import Image

    try:
        with Image.open(path) as img:
            ax.imshow(np.asarray(img.convert("RGB")), interpolation="nearest")
    except (OSError, ValueError):
        return False
    return True
