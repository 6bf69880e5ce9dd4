"""Backend "gpu": exact Hamming search with the codes resident in GPU memory (`hashsearch.kernels.gpu`).

One query is spread over the whole database (every multiprocessor), top-k is exact for any k (a two-pass
histogram select: no k limit, unlike FAISS's 2048), radius search is exact and inclusive, the mask is
applied in the kernels, and batched queries share each tile of codes. Codes are uploaded once; `append`
adds rows and `delete` marks tombstones without uploading the rest again. Codes larger than the device
memory budget stay on the host and are streamed through the GPU in tiles, each tile's exact result merged
with `hashsearch.results`.

Without a CUDA device the backend refuses to build unless `device="cpu"` is asked for: that runs the
same kernels in Triton's interpreter, which is how CI tests them (slowly: tiny sizes only).
"""
from __future__ import annotations

import threading
import warnings
from collections.abc import Iterator
from typing import Any, ClassVar

import numpy as np
import torch

from hashsearch import bitmaps
from hashsearch.backends import build_params, check_mask
from hashsearch.codes import validate_codes
from hashsearch.errors import HashsearchError, InvalidInputError
from hashsearch.results import empty_range, empty_topk, merge_range, merge_topk

BUILD_PARAMS: dict[str, type] = build_params("gpu")


class GpuUnavailableError(HashsearchError, RuntimeError):
    """The GPU backend cannot run here: no CUDA device, or no triton."""


def _kernels():
    """hashsearch.kernels.gpu, imported on first use so that this module imports without triton."""
    try:
        from hashsearch.kernels import gpu
    except ModuleNotFoundError as exc:
        if exc.name != "triton":
            raise
        raise GpuUnavailableError("backend 'gpu' needs triton: pip install triton (torch's CUDA wheels "
                                  "bring it; the CPU tests use its interpreter)") from None
    except ImportError as exc:  # triton imported in the wrong mode for this machine
        raise GpuUnavailableError(str(exc)) from None
    return gpu


def resolve_device(device: str | None) -> torch.device:
    """The torch device to search on: CUDA unless device='cpu' (Triton's interpreter, for tests)."""
    if device is not None and not isinstance(device, str):
        raise InvalidInputError(f"parameter 'device' must be a string such as 'cuda' or 'cpu', got {device!r}")
    try:
        dev = torch.device(device or "cuda")
    except RuntimeError:
        raise InvalidInputError(f"parameter 'device' must be 'cuda', 'cuda:N' or 'cpu', got {device!r}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise GpuUnavailableError("no CUDA device: backend 'gpu' needs torch with CUDA and a visible GPU "
                                  "(torch.cuda.is_available() is False); device='cpu' runs its kernels in "
                                  "Triton's interpreter, for tests only")
    if dev.type not in ("cuda", "cpu"):
        raise InvalidInputError(f"parameter 'device' must be 'cuda', 'cuda:N' or 'cpu', got {device!r}")
    kernels = _kernels()
    if dev.type == "cpu" and not kernels.INTERPRETED:
        raise GpuUnavailableError("device='cpu' runs the kernels in Triton's interpreter, but this process "
                                  "compiled them for CUDA: set TRITON_INTERPRET=1 before importing hashsearch")
    return dev


def as_tensor(array: np.ndarray) -> torch.Tensor:
    """A CPU tensor sharing `array`'s memory, read-only memory maps included (torch warns that it could
    write to them; nothing here does)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        return torch.from_numpy(np.ascontiguousarray(array))


def check_build_params(params: dict[str, Any]) -> dict[str, Any]:
    """Build parameters with their types; InvalidInputError names an unknown key or a bad value."""
    out = {}
    for key, value in params.items():
        if key not in BUILD_PARAMS:
            raise InvalidInputError(f"backend 'gpu' takes no parameter {key!r} (it takes: {', '.join(BUILD_PARAMS)})")
        if value is None:
            continue
        if BUILD_PARAMS[key] is int:
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < (0 if key == "max_resident_bytes" else 1):
                raise InvalidInputError(f"parameter {key!r} of backend 'gpu' must be a positive integer, got {value!r}")
            value = int(value)
        out[key] = value
    return out


class GpuBackend:
    """Exact top-k and radius search over fixed packed codes on a GPU (see the module docstring).

    Build parameters: device ('cuda', 'cuda:N'; 'cpu' = Triton's interpreter), max_resident_bytes (codes
    larger than this are streamed from the host; default 80% of the free device memory), stream_rows (rows
    per streamed tile), block_rows and chunks (the kernels' tiling; defaults fit the device)."""

    name: ClassVar[str] = "gpu"
    build_params: ClassVar[dict[str, type]] = BUILD_PARAMS

    def __init__(self, codes: np.ndarray, nbits: int, **params: Any):
        codes = validate_codes(codes, nbits)
        self.nbits = int(nbits)
        self.params = check_build_params(params)
        self.device = resolve_device(self.params.get("device"))
        self._k = _kernels()
        self._lock = threading.Lock()  # append and delete; searches read a snapshot
        self.words_per_row = -(-codes.shape[1] // 4)
        budget = self.params.get("max_resident_bytes")
        if budget is None:
            budget = int(0.8 * torch.cuda.mem_get_info(self.device)[0]) if self.device.type == "cuda" else 1 << 62
        self.n = codes.shape[0]
        self.resident = self.n * self.words_per_row * 4 <= budget
        row_bytes = 4 * self.words_per_row
        self.stream_rows = self.params.get("stream_rows") or max(1, budget // (2 * row_bytes))
        self._host = None if self.resident else [codes]  # streamed parts (never copied), in position order
        self._words = self._upload(codes) if self.resident else None  # (words, capacity) int32
        self._alive: torch.Tensor | None = None  # (capacity,) uint8 tombstones: 0 = deleted; None: none

    # ------------------------------------------------------------------ storage
    def _upload(self, codes: np.ndarray) -> torch.Tensor:
        """Codes as word-major int32 words on the device (the only host-to-device copy of them)."""
        return self._k.to_words(as_tensor(codes).to(self.device))

    def append(self, codes: np.ndarray) -> None:
        """Add rows after the last one (positions n, n+1, ...): uploads only the new rows; the device
        buffer grows by doubling, copied on the device."""
        codes = validate_codes(codes, self.nbits)
        m = codes.shape[0]
        if m == 0:
            return
        with self._lock:
            if not self.resident:
                self._host = self._host + [codes]
            else:
                need = self.n + m
                if need > self._words.shape[1]:
                    grown = torch.empty((self.words_per_row, max(need, 2 * self._words.shape[1])),
                                        dtype=torch.int32, device=self.device)
                    grown[:, :self.n] = self._words[:, :self.n]
                    self._words = grown
                self._words[:, self.n:need] = self._upload(codes)
            if self._alive is not None:
                self._alive = self._grow_alive(self._alive, self.n + m)
            self.n += m

    def _grow_alive(self, alive: torch.Tensor, n: int) -> torch.Tensor:
        """The tombstone mask extended to n rows (new rows alive)."""
        if alive.shape[0] >= n:
            alive[self.n:n] = 1
            return alive
        grown = torch.ones(max(n, 2 * alive.shape[0]), dtype=torch.uint8, device=self.device)
        grown[:self.n] = alive[:self.n]
        return grown

    def delete(self, positions: np.ndarray) -> None:
        """Mark rows as deleted (tombstones): they are never returned; only their positions travel."""
        pos = np.unique(np.atleast_1d(np.asarray(positions)))
        if pos.size and not np.issubdtype(pos.dtype, np.integer):
            raise InvalidInputError(f"positions must be integers, got dtype {pos.dtype}")
        bad = pos[(pos < 0) | (pos >= self.n)]
        if bad.size:
            raise InvalidInputError(f"positions must be in [0, {self.n}), got {bad[0]} ({bad.size} out of range)")
        with self._lock:
            if self._alive is None:
                self._alive = torch.ones(self.n if self._words is None else self._words.shape[1],
                                         dtype=torch.uint8, device=self.device)
            self._alive[torch.from_numpy(pos.astype(np.int64)).to(self.device)] = 0

    @property
    def nbytes(self) -> int:
        """Device memory held: the resident words (spare capacity included) and the tombstone mask."""
        words = 0 if self._words is None else self._words.numel() * 4
        return words + (0 if self._alive is None else self._alive.numel())

    # ------------------------------------------------------------------ search
    def _parts(self, mask: np.ndarray | None) -> Iterator[tuple[int, Any]]:
        """(first position, kernels.Codes) for each part of the database: the resident words, or each
        streamed tile of host codes uploaded in turn; the allowed mask is tombstones AND `mask`."""
        with self._lock:
            n, words, alive, host = self.n, self._words, self._alive, self._host
        allowed = None if alive is None else alive[:n]
        if mask is not None:
            m = as_tensor(mask.view(np.uint8)).to(self.device)
            allowed = m if allowed is None else allowed & m
        if words is not None:
            yield 0, self._k.Codes(words, n, allowed)
            return
        start = 0
        for part in host:
            for a in range(0, part.shape[0], self.stream_rows):
                b = min(a + self.stream_rows, part.shape[0])
                tile = None if allowed is None else allowed[start + a:start + b]
                yield start + a, self._k.Codes(self._upload(part[a:b]), b - a, tile)
            start += part.shape[0]

    def _check(self, queries: np.ndarray, mask: np.ndarray | None,
               params: dict[str, Any]) -> tuple[torch.Tensor, np.ndarray | None]:
        """Query words on the device, and the mask (bool or packed bitmap) as an (n,) bool array."""
        if params:
            raise InvalidInputError(f"backend 'gpu' takes no search parameter {next(iter(params))!r} (it takes: none)")
        bits = check_mask(mask, self.n)
        queries = validate_codes(queries, self.nbits, name="queries")
        return (self._k.query_words(as_tensor(queries).to(self.device)),
                None if bits is None else bitmaps.as_bool(bits, self.n))

    def _launch(self, n: int, nq: int):
        return self._k.plan_launch(n, nq, self.words_per_row, self.nbits, self.device,
                                   self.params.get("block_rows"), self.params.get("chunks"))

    def search(self, queries: np.ndarray, k: int, mask: np.ndarray | None = None,
               **params: Any) -> tuple[np.ndarray, np.ndarray]:
        """Exact top-k by (distance, position) among the allowed rows: (nq, k) int32 distances and int64
        positions, padded with (PAD_DISTANCE, -1); any k >= 1."""
        q, mask = self._check(queries, mask, params)
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise InvalidInputError(f"k must be a positive integer, got {k!r}")
        k, nq = int(k), q.shape[0]
        if nq == 0 or self.n == 0:
            return empty_topk(nq, k)
        parts = []
        for first, codes in self._parts(mask):
            d, p = self._k.topk(codes, q, min(k, codes.n), self.nbits, self._launch(codes.n, nq))
            p = torch.where(p >= 0, p + first, p)
            parts.append((d.cpu().numpy(), p.cpu().numpy()))
        return merge_topk(parts, k)

    def range_search(self, queries: np.ndarray, radius: int, mask: np.ndarray | None = None,
                     **params: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Every allowed row within `radius` (inclusive): CSR (lims, int32 distances, int64 positions),
        each query's rows sorted by (distance, position)."""
        q, mask = self._check(queries, mask, params)
        if isinstance(radius, bool) or not isinstance(radius, (int, np.integer)) or radius < 0:
            raise InvalidInputError(f"radius must be a non-negative integer, got {radius!r}")
        radius, nq = min(int(radius), self.nbits), q.shape[0]
        if nq == 0 or self.n == 0:
            return empty_range(nq)
        parts = []
        for first, codes in self._parts(mask):
            lims, d, p = self._k.range_search(codes, q, radius, self.nbits, self._launch(codes.n, nq))
            parts.append((lims.cpu().numpy(), d.cpu().numpy(), p.cpu().numpy() + first))
        return merge_range(parts)

    def explain(self, nq: int, k: int | None = None, radius: int | None = None) -> dict:
        """The launch a query batch would get, and the bytes of codes each pass reads."""
        launch = self._launch(self.n if self.resident else min(self.n, self.stream_rows), max(1, nq))
        passes = "histogram of distances, then select rows below the k-th distance" if radius is None \
            else "histogram of distances, then select rows within the radius"
        return {"backend": self.name, "plan": "resident" if self.resident else "streamed", "device": str(self.device),
                "interpreted": self._k.INTERPRETED, "n": self.n, "nbits": self.nbits, "nq": nq, "k": k,
                "radius": radius, "block_rows": launch.block_rows, "block_queries": launch.block_queries,
                "chunks": launch.chunks, "code_bytes_per_pass": self.n * 4 * self.words_per_row,
                "why": f"two passes over the codes, parallel over the database ({passes}); "
                       + ("codes resident on the device" if self.resident else
                          f"codes streamed from the host in tiles of {self.stream_rows} rows")}

    def __repr__(self) -> str:
        return f"GpuBackend(n={self.n}, nbits={self.nbits}, device={self.device}, resident={self.resident})"
