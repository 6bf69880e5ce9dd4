"""The "gpu" backend (Triton kernels) against the brute-force oracle and the numba scan.

Without CUDA the same kernels run in Triton's interpreter (device="cpu"), a few thousand times slower
than numpy, so sizes are tiny; tiles of 16 rows and 3 chunks exercise every boundary the GPU sees."""
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st

pytest.importorskip("hashsearch.kernels.gpu")  # imports triton, in interpreter mode when there is no CUDA

from hashsearch.codes import hamming_bruteforce  # noqa: E402
from hashsearch.errors import InvalidInputError  # noqa: E402
from hashsearch.gpu import GpuBackend, GpuUnavailableError  # noqa: E402
from hashsearch.kernels import scan  # noqa: E402
from hashsearch.kernels.popcount import scan_words  # noqa: E402
from hashsearch.results import PAD_DISTANCE  # noqa: E402
from test_kernels import code_sets, oracle_range, oracle_topk  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
TILING = {"block_rows": 16, "chunks": 2}


def backend(db, nbits, **params):
    return GpuBackend(db, nbits, device=DEVICE, **{**TILING, **params})


def allowed_oracle_topk(q, db, k, mask):
    """oracle_topk over the allowed rows, positions mapped back to the whole database."""
    rows = np.nonzero(mask)[0]
    d, j = oracle_topk(q, db[rows], k)
    return d, np.where(j >= 0, np.append(rows, -1)[j], -1)


def allowed_oracle_range(q, db, r, mask):
    rows = np.nonzero(mask)[0]
    lims, d, j = oracle_range(q, db[rows], r)
    return lims, d, rows[j]


@st.composite
def searches(draw, max_n=64):
    """Codes (few queries: interpreted kernels are slow), a k from 1 to past n, and maybe a mask."""
    nbits, q, db = draw(code_sets(max_n=max_n))
    n = db.shape[0]
    k = draw(st.sampled_from(sorted({1, 3, max(1, n // 2), max(1, n), n + 3})))
    mask = draw(st.one_of(st.none(), st.integers(0, 2**32 - 1).map(
        lambda s: np.random.default_rng(s).random(n) < 0.6)))
    return nbits, q[:2], db, k, mask


@settings(max_examples=10, deadline=None)
@given(searches())
def test_topk_matches_oracle_and_numba(case):
    nbits, q, db, k, mask = case
    d, p = backend(db, nbits).search(q, k, mask)
    want_d, want_p = allowed_oracle_topk(q, db, k, np.ones(len(db), bool) if mask is None else mask)
    assert d.dtype == np.int32 and p.dtype == np.int64 and d.shape == (len(q), k)
    np.testing.assert_array_equal(p, want_p)
    np.testing.assert_array_equal(d, want_d)
    if mask is None and len(db):
        numba_d, numba_p = scan.topk(scan_words(q), scan_words(db), k, nbits)
        np.testing.assert_array_equal(p, numba_p)
        np.testing.assert_array_equal(d, numba_d)


@settings(max_examples=6, deadline=None)
@given(searches(), st.integers(0, 40))
def test_range_matches_oracle_and_numba(case, radius):
    nbits, q, db, _, mask = case
    radius = min(radius, nbits)
    lims, d, p = backend(db, nbits).range_search(q, radius, mask)
    want = allowed_oracle_range(q, db, radius, np.ones(len(db), bool) if mask is None else mask)
    for got, exp in zip((lims, d, p), want):
        np.testing.assert_array_equal(got, exp)
    assert lims.dtype == np.int64 and d.dtype == np.int32 and p.dtype == np.int64
    if mask is None and len(db):
        for got, exp in zip((lims, d, p), scan.range_search(scan_words(q), scan_words(db), radius, nbits)):
            np.testing.assert_array_equal(got, exp)


def test_ties_go_to_the_smaller_position_across_tiles_and_chunks():
    """70 copies of one code: every distance ties, so top-k is positions 0..k-1 wherever the k-th falls
    (inside a tile, at a tile's end, in the second chunk)."""
    db = np.repeat(np.array([[7, 1, 255, 0, 9, 9, 9, 9]], np.uint8), 70, axis=0)
    q = np.array([[7, 1, 255, 0, 9, 9, 9, 8], [0] * 8], np.uint8)
    b = backend(db, 64)
    for k in (1, 16, 17, 50, 70, 90):
        d, p = b.search(q, k)
        real = min(k, 70)
        np.testing.assert_array_equal(p[:, :real], np.tile(np.arange(real), (2, 1)))
        assert (d[0, :real] == 1).all() and (d[1, :real] == hamming_bruteforce(q[1:], db[:1])[0, 0]).all()
        assert (d[:, real:] == PAD_DISTANCE).all() and (p[:, real:] == -1).all()


def test_streamed_tiles_give_the_resident_answer():
    """Codes over the memory budget are streamed from the host in tiles (7 rows here), each tile's exact
    result merged: the same answer as the resident codes, tombstones and masks included."""
    rng = np.random.default_rng(3)
    db = rng.integers(0, 4, (50, 4), dtype=np.uint8)  # few distinct bits: many ties
    q = db[[5, 40]]
    mask = rng.random(50) < 0.8
    streamed = backend(db, 32, max_resident_bytes=0, stream_rows=17)
    resident = backend(db, 32)
    assert not streamed.resident and resident.resident and streamed.nbytes == 0
    streamed.delete([5, 6, 49])
    resident.delete([5, 6, 49])
    allowed = mask.copy()
    allowed[[5, 6, 49]] = False
    for b in (streamed, resident):
        np.testing.assert_array_equal(b.search(q, 30, mask)[1], allowed_oracle_topk(q, db, 30, allowed)[1])
        for got, exp in zip(b.range_search(q, 3, mask), allowed_oracle_range(q, db, 3, allowed)):
            np.testing.assert_array_equal(got, exp)


def test_append_and_delete_without_reupload():
    rng = np.random.default_rng(4)
    db = rng.integers(0, 256, (50, 2), dtype=np.uint8)
    b = backend(db[:10], 16)
    b.delete([3])
    for a in range(10, 50, 20):
        b.append(db[a:a + 20])
    assert b.n == 50 and b._words.shape[1] >= 50  # grown by doubling on the device
    b.delete(np.array([0, 49, 3]))
    allowed = np.ones(50, bool)
    allowed[[0, 3, 49]] = False
    q = db[[0, 49]]
    np.testing.assert_array_equal(b.search(q, 50)[1], allowed_oracle_topk(q, db, 50, allowed)[1])
    streamed = backend(db[:10], 16, max_resident_bytes=0, stream_rows=16)
    streamed.append(db[10:])
    streamed.delete([0, 3, 49])
    np.testing.assert_array_equal(streamed.search(q, 9)[1], allowed_oracle_topk(q, db, 9, allowed)[1])
    with pytest.raises(InvalidInputError, match=r"positions must be in \[0, 50\), got 70 \(1 out of range\)"):
        b.delete([3, 70])
    with pytest.raises(InvalidInputError, match="positions must be integers, got dtype float64"):
        b.delete([1.5])


def test_empty_database_and_everything_masked():
    for nbytes in (1, 8):
        q = np.zeros((2, nbytes), np.uint8)
        empty = backend(np.zeros((0, nbytes), np.uint8), 8 * nbytes)
        empty.append(np.full((1, nbytes), 255, np.uint8))
        d, p = empty.search(q, 3)
        assert (d[:, 0] == 8 * nbytes).all() and (p[:, 0] == 0).all() and (p[:, 1:] == -1).all()
    q = np.zeros((2, 1), np.uint8)
    b = backend(np.zeros((5, 1), np.uint8), 8)
    d, p = b.search(q, 3, np.zeros(5, bool))
    assert (p == -1).all()
    lims, d, p = b.range_search(q, 8, np.zeros(5, bool))
    assert lims.tolist() == [0, 0, 0] and d.size == 0


def test_bad_input_is_named():
    db = np.zeros((4, 8), np.uint8)
    with pytest.raises(InvalidInputError, match="takes no parameter 'nhash'.*device"):
        GpuBackend(db, 64, device=DEVICE, nhash=2)
    with pytest.raises(InvalidInputError, match="'block_rows'.*positive integer"):
        GpuBackend(db, 64, device=DEVICE, block_rows=0)
    with pytest.raises(InvalidInputError, match="'device' must be"):
        GpuBackend(db, 64, device="tpu")
    b = backend(db, 64)
    with pytest.raises(InvalidInputError, match="k must be a positive integer"):
        b.search(db[:1], 0)
    with pytest.raises(InvalidInputError, match="radius must be a non-negative"):
        b.range_search(db[:1], -1)
    with pytest.raises(InvalidInputError, match=r"mask must be a \(4,\) bool array"):
        b.search(db[:1], 1, np.ones(3, bool))
    with pytest.raises(InvalidInputError, match="no search parameter 'nprobe'"):
        b.search(db[:1], 1, nprobe=3)
    with pytest.raises(InvalidInputError, match="queries hold 32-bit codes"):
        b.search(db[:1, :4].copy(), 1)


def test_explain_says_how_the_codes_are_read():
    db = np.zeros((100, 8), np.uint8)
    plan = backend(db, 64).explain(nq=1, k=10)
    assert plan["backend"] == "gpu" and plan["plan"] == "resident" and plan["chunks"] == 2
    assert plan["code_bytes_per_pass"] == 800 and "parallel over the database" in plan["why"]
    assert backend(db, 64, max_resident_bytes=0, stream_rows=10).explain(nq=5, radius=2)["plan"] == "streamed"


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error raised without a CUDA device")
def test_without_cuda_the_backend_refuses_unless_cpu_is_asked_for():
    with pytest.raises(GpuUnavailableError, match="no CUDA device: .*device='cpu'"):
        GpuBackend(np.zeros((4, 8), np.uint8), 64)


def test_backend_module_imports_without_triton():
    """The registry imports hashsearch.gpu everywhere: it must not need triton until a backend is built."""
    code = ("import sys; sys.modules['triton'] = None\n"
            "import numpy as np\n"
            "from hashsearch.gpu import GpuBackend, GpuUnavailableError\n"
            "assert GpuBackend.name == 'gpu'\n"
            "try:\n"
            "    GpuBackend(np.zeros((2, 1), np.uint8), 8, device='cpu')\n"
            "except GpuUnavailableError as e:\n"
            "    print(e)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "needs triton: pip install triton" in out.stdout


@pytest.mark.slow
def test_kernels_compile_for_an_h200():
    """The interpreter accepts code that the compiler may not: compile both kernels for sm_90 (ptxas ships
    with triton; no GPU needed) and check the popcount is the hardware instruction and nothing spills."""
    script = os.path.join(os.path.dirname(__file__), "..", "benchmarks", "gpu_search.py")
    out = subprocess.run([sys.executable, script, "--compile-only"], capture_output=True, text=True, timeout=600,
                         env={**os.environ, "TRITON_INTERPRET": "0"})
    assert out.returncode == 0, out.stderr[-2000:]
    assert "compiled" in out.stdout and "spills" not in out.stdout, out.stdout


@pytest.mark.slow
def test_device_script_runs_and_checks_itself_at_a_tiny_size():
    """benchmarks/gpu_search.py is run on a lent GPU only now and then: its every section must work here,
    and its own exactness checks (GPU = numba = torch brute force) must pass."""
    import argparse
    import runpy
    script = runpy.run_path(os.path.join(os.path.dirname(__file__), "..", "benchmarks", "gpu_search.py"))
    args = argparse.Namespace(check_rows=1024, backend_max_n=2000, cpu=True)
    row = script["database"](args, 1500, 64, torch.device(DEVICE), 1, 50, 4)
    assert row["subset_check"]["exact"] and row["source_row_found"]
    assert row["cpu_numba"]["same_as_gpu"] and row["backend"]["same_results"]
    report = {"date": "-", "torch": "-", "triton": "-", "host": "-", "command": "-", "skipped": [],
              "bandwidth": script["bandwidth"](torch.device("cpu")), "databases": [row]}
    assert "| 1,500 | 64 | top-10 |" in script["markdown"](report)
