"""Exact Hamming search on one GPU (backend "gpu", Triton kernels) against the numba scan on the same
machine's CPU: latency of one query (top-10, top-10,000, radius <= 2), throughput of a 1,000-query batch,
the fraction of the memory bandwidth one query reaches, and exactness checks (GPU = numba on every
measured query, and = a torch brute force on a subset).

Codes are generated ON THE GPU (10^8 and 10^9 x 64 bits, 10^8 x 256 bits: nothing to upload), uniform
random; queries are stored codes with 2 bits flipped, so radius 2 finds at least their source row.
Sections run in order and the JSON and Markdown in --out are rewritten after each, so a run stopped by a
time limit keeps what it measured; a section that would not fit the --budget-s left is skipped.

    python benchmarks/gpu_search.py --out $OUT [--learners]  # the device machine (~4 min on an H200)
    python benchmarks/gpu_search.py --tiny --out /tmp/gs    # any machine: tiny sizes, CPU via Triton's interpreter
    TRITON_INTERPRET=0 python benchmarks/gpu_search.py --compile-only   # compile the kernels for sm_90, no GPU
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
import types
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]


def import_hashsearch() -> None:
    """Make hashsearch.kernels importable where hashsearch is not installed and faiss is absent (the
    device machine): register the packages' folders without running hashsearch/__init__ (it imports faiss)."""
    try:
        import hashsearch  # noqa: F401
        return
    except ImportError:
        pass
    for name, path in (("hashsearch", ROOT / "hashsearch"), ("hashsearch.kernels", ROOT / "kernels")):
        module = types.ModuleType(name)
        module.__path__ = [str(path)]
        sys.modules[name] = module
    sys.modules["hashsearch"].kernels = sys.modules["hashsearch.kernels"]


import_hashsearch()
from hashsearch.gpu import GpuBackend  # noqa: E402
from hashsearch.kernels import gpu as kernels  # noqa: E402

CPU_BATCH = 100  # queries in the numba batch (1,000 at 10^9 would take a minute)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def median_s(fn, device: torch.device, repeats: int) -> float:
    """Median wall time of fn() (after one untimed call: compiles, warms caches)."""
    fn()
    times = []
    for _ in range(repeats):
        sync(device)
        start = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def random_words(n: int, nbits: int, device: torch.device, seed: int) -> torch.Tensor:
    """(nbits / 32, n) int32 uniform random words made on the device, 10^8 columns at a time."""
    gen = torch.Generator(device=device).manual_seed(seed)
    words = torch.empty((nbits // 32, n), dtype=torch.int32, device=device)
    for a in range(0, n, 10**8):
        b = min(n, a + 10**8)
        words[:, a:b] = torch.randint(0, 2**32, (nbits // 32, b - a), generator=gen, device=device,
                                      dtype=torch.int64).to(torch.int32)
    return words


def noisy_queries(words: torch.Tensor, nq: int, seed: int) -> tuple[torch.Tensor, np.ndarray]:
    """(nq, words) int32 queries: stored rows with 2 bits flipped, and the rows they came from."""
    gen = torch.Generator(device="cpu").manual_seed(seed)
    src = torch.randint(0, words.shape[1], (nq,), generator=gen)
    q = words[:, src.to(words.device)].t().contiguous()
    for _ in range(2):
        word = torch.randint(0, q.shape[1], (nq,), generator=gen).to(q.device)
        bit = torch.randint(0, 32, (nq,), generator=gen).to(q.device)
        flip = torch.zeros_like(q)
        flip[torch.arange(nq, device=q.device), word] = (1 << bit).to(torch.int32)  # bit 31 wraps: fine for XOR
        q ^= flip
    return q, src.numpy()


def brute_distances(words: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """(n,) int32 distances from one query (words,) to every column of words, by a torch SWAR popcount:
    the oracle, independent of the kernels."""
    x = (words ^ q[:, None]).to(torch.int64) & 0xFFFFFFFF
    x = x - ((x >> 1) & 0x55555555)
    x = (x & 0x33333333) + ((x >> 2) & 0x33333333)
    x = (x + (x >> 4)) & 0x0F0F0F0F
    return (((x * 0x01010101) & 0xFFFFFFFF) >> 24).sum(0).to(torch.int32)


def check_subset(words: torch.Tensor, q: torch.Tensor, nbits: int, rows: int, k: int, device) -> dict:
    """The kernels on the first `rows` rows vs the torch brute force: top-k (k and 10) and radius 2."""
    codes = kernels.Codes(words, min(rows, words.shape[1]))
    launch = kernels.plan_launch(codes.n, q.shape[0], q.shape[1], nbits, device)
    ok = True
    d_k, p_k = kernels.topk(codes, q, k, nbits, launch)
    lims, d_r, p_r = kernels.range_search(codes, q, 2, nbits, launch)
    for i in range(q.shape[0]):
        full = brute_distances(words[:, :codes.n], q[i])
        order = torch.sort(full, stable=True).indices  # (distance, position)
        want = order[:k]
        ok &= torch.equal(p_k[i], want) and torch.equal(d_k[i], full[want])
        within = order[full[order] <= 2]
        ok &= torch.equal(p_r[lims[i]:lims[i + 1]], within) and torch.equal(d_r[lims[i]:lims[i + 1]], full[within])
    return {"rows": codes.n, "queries": q.shape[0], "k": k, "exact": ok}


def gpu_cell(words: torch.Tensor, q1: torch.Tensor, qb: torch.Tensor, nbits: int, k_big: int, device,
             repeats: int) -> tuple[dict, dict]:
    """GPU timings of one database: (figures, results kept for the numba comparison)."""
    codes = kernels.Codes(words, words.shape[1])
    one = kernels.plan_launch(codes.n, 1, q1.shape[1], nbits, device)
    batch = kernels.plan_launch(codes.n, qb.shape[0], qb.shape[1], nbits, device)
    fig = {"launch_single": one.__dict__, "launch_batch": batch.__dict__}
    fig["pass1_s"] = median_s(lambda: kernels.histograms(codes, q1, nbits, one), device, repeats)
    res = {}
    for name, k in (("top10", 10), (f"top{k_big}", k_big)):
        fig[f"{name}_s"] = median_s(lambda: [t.cpu() for t in kernels.topk(codes, q1, k, nbits, one)], device, repeats)
        res[name] = [t.cpu().numpy() for t in kernels.topk(codes, q1, k, nbits, one)]
    fig["radius2_s"] = median_s(lambda: [t.cpu() for t in kernels.range_search(codes, q1, 2, nbits, one)],
                                device, repeats)
    res["radius2"] = [t.cpu().numpy() for t in kernels.range_search(codes, q1, 2, nbits, one)]
    fig["batch_top10_s"] = median_s(lambda: [t.cpu() for t in kernels.topk(codes, qb, 10, nbits, batch)],
                                    device, max(1, repeats // 5))
    res["batch"] = [t.cpu().numpy() for t in kernels.topk(codes, qb[:CPU_BATCH], 10, nbits, batch)]
    code_bytes = codes.n * 4 * words.shape[0]
    fig["code_bytes"] = code_bytes
    fig["pass1_GBps"] = code_bytes / fig["pass1_s"] / 1e9
    fig["top10_GBps"] = 2 * code_bytes / fig["top10_s"] / 1e9  # two passes over the codes
    fig["batch_qps"] = qb.shape[0] / fig["batch_top10_s"]
    fig["batch_pairs_per_s"] = qb.shape[0] * codes.n / fig["batch_top10_s"]
    return fig, res


def cpu_cell(host_codes: np.ndarray, q1: np.ndarray, qb: np.ndarray, nbits: int, k_big: int,
             gpu: dict, repeats: int) -> dict:
    """The numba scan on the same codes and queries, and whether it returned exactly what the GPU did."""
    import numba

    from hashsearch.kernels import scan
    from hashsearch.kernels.popcount import scan_words
    db, w1, wb = scan_words(host_codes), scan_words(q1), scan_words(qb)
    fig = {"threads": numba.get_num_threads()}
    same = True
    cpu = torch.device("cpu")
    for name, k in (("top10", 10), (f"top{k_big}", k_big)):
        fig[f"{name}_s"] = median_s(lambda: scan.topk(w1, db, k, nbits), cpu, repeats)
        d, p = scan.topk(w1, db, k, nbits)
        same &= np.array_equal(d, gpu[name][0]) and np.array_equal(p, gpu[name][1])
    fig["radius2_s"] = median_s(lambda: scan.range_search(w1, db, 2, nbits), cpu, repeats)
    same &= all(np.array_equal(a, b) for a, b in zip(scan.range_search(w1, db, 2, nbits), gpu["radius2"]))
    fig["batch_top10_s"] = median_s(lambda: scan.topk(wb, db, 10, nbits), cpu, 1)
    d, p = scan.topk(wb, db, 10, nbits)
    same &= np.array_equal(d, gpu["batch"][0]) and np.array_equal(p, gpu["batch"][1])
    fig["batch_queries"] = wb.shape[0]
    fig["batch_qps"] = wb.shape[0] / fig["batch_top10_s"]
    fig["same_as_gpu"] = bool(same)
    return fig


def host_codes(words: torch.Tensor) -> np.ndarray:
    """The device's word-major codes as (n, nbytes) uint8 rows on the host, the layout the index holds."""
    return words.t().contiguous().cpu().numpy().view(np.uint8)


def backend_cell(codes: np.ndarray, q: np.ndarray, nbits: int, device: torch.device, repeats: int,
                 stream_rows: int) -> dict:
    """GpuBackend end to end (numpy in, numpy out): resident, with 10% tombstones, with a per-call mask,
    and streamed from the host in tiles."""
    fig = {}
    start = time.perf_counter()
    b = GpuBackend(codes, nbits, device=device.type)
    sync(device)
    fig["upload_s"] = time.perf_counter() - start
    fig["top10_s"] = median_s(lambda: b.search(q, 10), device, repeats)
    want = b.search(q, 10)
    mask = np.random.default_rng(0).random(codes.shape[0]) >= 0.1
    fig["top10_call_mask_s"] = median_s(lambda: b.search(q, 10, mask), device, repeats)
    b.delete(np.nonzero(~mask)[0])
    fig["top10_tombstones_s"] = median_s(lambda: b.search(q, 10), device, repeats)
    same = np.array_equal(b.search(q, 10)[1], GpuBackend(codes, nbits, device=device.type).search(q, 10, mask)[1])
    del b
    streamed = GpuBackend(codes, nbits, device=device.type, max_resident_bytes=0, stream_rows=stream_rows)
    fig["streamed_top10_s"] = median_s(lambda: streamed.search(q, 10), device, max(1, repeats // 5))
    same &= all(np.array_equal(a, c) for a, c in zip(streamed.search(q, 10), want))
    fig["stream_rows"] = stream_rows
    fig["same_results"] = bool(same)
    return fig


def bandwidth(device: torch.device) -> dict:
    """The device's copy bandwidth (bytes read + written per second) and its nominal peak if torch says."""
    out = {"device": str(device), "name": "cpu (Triton interpreter)"}
    if device.type != "cuda":
        return out
    props = torch.cuda.get_device_properties(device)
    out.update(name=props.name, multiprocessors=props.multi_processor_count, memory_GB=props.total_memory / 1e9)
    clock, bus = getattr(props, "memory_clock_rate", None), getattr(props, "memory_bus_width", None)
    if clock and bus:  # kHz and bits; double data rate
        out["nominal_GBps"] = 2 * clock * 1e3 * bus / 8 / 1e9
    src = torch.empty(2 * 10**9 // 4, dtype=torch.int32, device=device)
    dst = torch.empty_like(src)
    out["copy_GBps"] = 2 * src.numel() * 4 / median_s(lambda: dst.copy_(src), device, 10) / 1e9
    return out


def database(args, n: int, nbits: int, device: torch.device, repeats: int, k_big: int, nq_batch: int) -> dict:
    """Every measurement on one generated database."""
    row = {"n": n, "nbits": nbits}
    words = random_words(n, nbits, device, seed=n + nbits)
    qb, src = noisy_queries(words, nq_batch, seed=1)
    q1 = qb[:1].contiguous()
    row["gpu"], results = gpu_cell(words, q1, qb, nbits, k_big, device, repeats)
    row["source_row_found"] = bool(src[0] in results["radius2"][2])
    row["subset_check"] = check_subset(words, qb[:4].contiguous(), nbits, args.check_rows, 100, device)
    if args.cpu:
        codes = host_codes(words)
        del words
        if device.type == "cuda":
            torch.cuda.empty_cache()
        qhost = qb.cpu().numpy().view(np.uint8)
        row["cpu_numba"] = cpu_cell(codes, qhost[:1], qhost[:CPU_BATCH], nbits, k_big, results, max(1, repeats // 5))
        if n <= args.backend_max_n:
            row["backend"] = backend_cell(codes, qhost[:1], nbits, device, repeats, max(1, n // 3))
    return row


def size(n: int) -> str:
    """10^8 for powers of ten, else 4,096."""
    return f"10^{len(str(n)) - 1}" if str(n).strip("0") == "1" else f"{n:,}"


def markdown(report: dict) -> str:
    bw = report["bandwidth"]
    peak = bw.get("copy_GBps")
    lines = ["# Exact Hamming search on one GPU (backend `gpu`) vs the numba scan on the same machine", "",
             f"{report['date']} UTC; GPU {bw['name']}; host {report['host']}; torch {report['torch']}, "
             f"triton {report['triton']}; command `{report['command']}`.",
             f"Copy bandwidth (read + write) {peak:.0f} GB/s" if peak else "No GPU: the kernels ran in Triton's interpreter.",
             "", "Single query times are medians, with the results copied to the host. Passes: 2 over the codes.", "",
             "| n | bits | what | GPU ms | CPU numba ms | GPU speed-up | GPU GB/s (codes) | of copy bw |",
             "|---|---|---|---|---|---|---|---|"]
    for row in report["databases"]:
        g, c = row["gpu"], row.get("cpu_numba", {})
        k_big = next(key for key in g if key.startswith("top") and key not in ("top10_s", "top10_GBps"))[:-2]
        for label, key in (("top-10", "top10"), (k_big.replace("top", "top-"), k_big), ("radius <= 2", "radius2"),
                           ("pass 1 alone (histogram)", "pass1")):
            gpu_ms = 1e3 * g[f"{key}_s"]
            cpu_ms = 1e3 * c[f"{key}_s"] if f"{key}_s" in c else None
            passes = 1 if key == "pass1" else 2
            gbps = passes * g["code_bytes"] / g[f"{key}_s"] / 1e9
            lines.append(f"| {size(row['n'])} | {row['nbits']} | {label} | {gpu_ms:.3g} | "
                         + (f"{cpu_ms:.3g} | {cpu_ms / gpu_ms:.2g}x" if cpu_ms else "- | -")
                         + f" | {gbps:.3g} | " + (f"{gbps / peak:.0%}" if peak else "-") + " |")
        cpu_qps = f"{c['batch_qps']:.3g} q/s ({c['batch_queries']} queries)" if c else "-"
        lines.append(f"| {size(row['n'])} | {row['nbits']} | batch top-10 | {g['batch_qps']:.3g} q/s "
                     f"({g['batch_pairs_per_s'] / 1e9:.3g} G pairs/s) | {cpu_qps} | "
                     + (f"{g['batch_qps'] / c['batch_qps']:.2g}x" if c else "-") + " | - | - |")
    lines += ["", "Exactness:"]
    for row in report["databases"]:
        s, c = row["subset_check"], row.get("cpu_numba")
        lines.append(f"- {size(row['n'])} x {row['nbits']} bits: GPU = torch brute force on the first {s['rows']:,} rows "
                     f"({s['queries']} queries, top-{s['k']} and radius 2): {s['exact']}; "
                     + (f"GPU = numba on the whole database (every measured query): {c['same_as_gpu']}" if c else "")
                     + f"; radius 2 found the query's source row: {row['source_row_found']}")
        if "backend" in row:
            b = row["backend"]
            lines.append(f"  - GpuBackend end to end: upload {b['upload_s']:.2f} s, top-10 {1e3 * b['top10_s']:.2f} ms, "
                         f"with a per-call mask {1e3 * b['top10_call_mask_s']:.2f} ms, with 10% tombstones "
                         f"{1e3 * b['top10_tombstones_s']:.2f} ms, streamed from the host in tiles of "
                         f"{b['stream_rows']:,} rows {1e3 * b['streamed_top10_s']:.1f} ms; same results: {b['same_results']}")
    for skipped in report["skipped"]:
        lines.append(f"- skipped: {skipped}")
    if "learners_markdown" in report:
        lines += ["", report["learners_markdown"].replace("# ", "## ", 1)]
    return "\n".join(lines) + "\n"


def learners(report: dict, device: torch.device, left_s: float) -> None:
    """The learners' training time on this device, by gpu_check.py's functions (about 60 s on an H100)."""
    if left_s < 90:
        report["skipped"].append(f"learners ({left_s:.0f} s of the budget left)")
        return
    import gpu_check
    rows = gpu_check.dcmh_rows(device.type, 0) + gpu_check.image_rows(device.type, 0)
    report["learners"] = rows
    report["learners_markdown"] = gpu_check.markdown(rows)


def compile_only() -> None:
    """Compile both kernels for an H200 (sm_90) without a GPU and print registers and spills."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource
    cuobjdump = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "cuobjdump"
    common = {"words_ptr": "*i32", "stride": "i64", "n": "i64", "allowed_ptr": "*u8", "q_ptr": "*i32", "nq": "i32"}
    tail = {"tiles_per_prog": "i32", "W": "i32", "BLOCK_N": "constexpr", "WP": "constexpr", "BQ": "constexpr"}
    signatures = {
        kernels.histogram_kernel: {**common, "hist_ptr": "*i32", **tail, "NB": "constexpr"},
        kernels.select_kernel: {**common, "thr_ptr": "*i32", "keep_ptr": "*i64", "base_ptr": "*i64",
                                "eq_before_ptr": "*i64", "out_d_ptr": "*i32", "out_p_ptr": "*i64", **tail}}
    for nbits, bq in ((64, 1), (256, 2)):
        wp = nbits // 32
        for fn, sig in signatures.items():
            consts = {"BLOCK_N": max(16, min(1024, 4096 // wp)), "WP": wp, "BQ": bq, "HAS_MASK": True, "HW_POPC": True}
            if "NB" in sig:
                consts["NB"] = kernels.next_pow2(nbits + 2)
            sig = {**sig, "HAS_MASK": "constexpr", "HW_POPC": "constexpr"}
            compiled = triton.compile(ASTSource(fn, sig, constexprs=consts), target=GPUTarget("cuda", 90, 32))
            with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
                f.write(compiled.asm["cubin"])
                f.flush()
                usage = subprocess.run([str(cuobjdump), "--dump-resource-usage", f.name], capture_output=True,
                                       text=True, check=True).stdout
            regs, local = (int(re.search(rf"{field}:(\d+)", usage).group(1)) for field in ("REG", "LOCAL"))
            popc = "popc.b32" in compiled.asm["ptx"]
            print(f"compiled {fn.__name__} for sm_90, {nbits} bits, {bq} queries a program: {regs} registers, "
                  f"{local} bytes of local memory{' (spills)' if local else ''}, hardware popc: {popc}")
            if not popc:
                raise SystemExit("the popcount did not compile to popc")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", ROOT / "benchmarks" / "results")))
    parser.add_argument("--tiny", action="store_true", help="tiny sizes, to check the script on any machine")
    parser.add_argument("--compile-only", action="store_true", help="compile the kernels for sm_90 and stop")
    parser.add_argument("--no-cpu", dest="cpu", action="store_false", help="skip the numba side")
    parser.add_argument("--budget-s", type=float, default=480, help="skip sections that would not fit")
    parser.add_argument("--learners", action="store_true",
                        help="then DCMH, DPSH and SCHN on this GPU (benchmarks/gpu_check.py; needs faiss and the data)")
    args = parser.parse_args()
    if args.compile_only:
        return compile_only()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if args.tiny:
        sizes, repeats, k_big, nq_batch = [(4096, 64), (8192, 64), (2048, 256)], 2, 100, 16
        args.check_rows, args.backend_max_n = 4096, 4096
    else:
        sizes, repeats, k_big, nq_batch = [(10**8, 64), (10**9, 64), (10**8, 256)], 20, 10_000, 1000
        args.check_rows, args.backend_max_n = 10**7, 10**8
    args.out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    report = {"date": f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M}", "torch": torch.__version__,
              "triton": __import__("triton").__version__, "host": f"{platform.processor() or platform.machine()}, "
              f"{os.cpu_count()} cores", "command": "python benchmarks/gpu_search.py" + (" --tiny" if args.tiny else ""),
              "bandwidth": bandwidth(device), "databases": [], "skipped": []}
    # expected seconds per section on an H200 + 16 cores (generous: compiles, numba, copies to the host)
    cost = {(10**8, 64): 60, (10**9, 64): 150, (10**8, 256): 80}
    for n, nbits in sizes:
        left = args.budget_s - (time.perf_counter() - started)
        if cost.get((n, nbits), 0) > left:
            report["skipped"].append(f"{n:.0e} x {nbits} bits ({left:.0f} s of the budget left)")
            continue
        t0 = time.perf_counter()
        report["databases"].append(database(args, n, nbits, device, repeats, k_big, nq_batch))
        report["databases"][-1]["section_s"] = time.perf_counter() - t0
        print(json.dumps(report["databases"][-1]), flush=True)
        (args.out / "gpu_search.json").write_text(json.dumps(report, indent=1), encoding="utf-8")
        (args.out / "gpu_search.md").write_text(markdown(report), encoding="utf-8")
        if device.type == "cuda":
            torch.cuda.empty_cache()
    if args.learners:
        learners(report, device, args.budget_s - (time.perf_counter() - started))
    (args.out / "gpu_search.json").write_text(json.dumps(report, indent=1), encoding="utf-8")
    (args.out / "gpu_search.md").write_text(markdown(report), encoding="utf-8")
    print(markdown(report))


if __name__ == "__main__":
    main()
