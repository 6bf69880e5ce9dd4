"""A bounded local load run of `hashsearch serve` on 127.0.0.1: QPS and p50/p99 latency of one-query
top-k requests at concurrency 1, 4 and 16 over a MIH index of n (10^7 by default) 64-bit codes.

The server is a real uvicorn process (`hashsearch serve`); the clients are threads of this process,
each with its own HTTP connection, on the same machine (so they share its cores with the server).
Each level stops after --requests requests or --seconds seconds, whichever comes first.

    python benchmarks/bench_server.py --n 1e7 --out benchmarks/results/server_run.md

With --lock FILE, the index is written and the server started and warmed first (at the niceness the
script was started with), and only the timed levels hold FILE's flock, at niceness 0:

    nice -n 10 python benchmarks/bench_server.py --n 1e7 --lock /work/bench.lock
"""
from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import numpy as np

from hashsearch.storage import write_index


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(url: str, proc: subprocess.Popen, timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if httpx.get(f"{url}/healthz", timeout=5).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"server did not start: {proc.stderr.read() if proc.stderr else ''}")
        time.sleep(0.5)


def level(url: str, bodies: list[dict], concurrency: int, max_requests: int, max_seconds: float) -> dict:
    """Send requests from `concurrency` threads until the count or time bound; latency percentiles."""
    latencies: list[float] = []
    lock = threading.Lock()
    sent = iter(range(max_requests))
    stop = time.monotonic() + max_seconds
    errors = []

    def worker() -> None:
        with httpx.Client(base_url=url, timeout=60) as client:
            while time.monotonic() < stop:
                with lock:
                    i = next(sent, None)
                if i is None:
                    return
                t0 = time.perf_counter()
                reply = client.post("/search", json=bodies[i % len(bodies)])
                dt = time.perf_counter() - t0
                if reply.status_code != 200:
                    errors.append(reply.text)
                with lock:
                    latencies.append(dt)

    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    if errors:
        raise RuntimeError(f"{len(errors)} failed requests, first: {errors[0]}")
    ms = np.array(latencies) * 1000
    return {"concurrency": concurrency, "requests": len(latencies), "seconds": wall, "qps": len(latencies) / wall,
            "p50_ms": float(np.percentile(ms, 50)), "p99_ms": float(np.percentile(ms, 99))}


@contextlib.contextmanager
def holding(lock_path: str | None, pids: list[int]):
    """Hold the flock of `lock_path` (if any), with these processes' threads at niceness 0 meanwhile."""
    if lock_path is None:
        yield
        return
    pids = [int(t.name) for pid in pids for t in Path(f"/proc/{pid}/task").iterdir()]  # every thread
    with open(lock_path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        old = [os.getpriority(os.PRIO_PROCESS, pid) for pid in pids]
        for pid in pids:
            with contextlib.suppress(PermissionError):
                os.setpriority(os.PRIO_PROCESS, pid, 0)
        try:
            yield
        finally:
            for pid, nice in zip(pids, old):
                with contextlib.suppress(PermissionError, ProcessLookupError):
                    os.setpriority(os.PRIO_PROCESS, pid, nice)
            fcntl.flock(f, fcntl.LOCK_UN)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=float, default=1e7)
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--flips", type=int, default=4, help="bits flipped in a stored code to make each query")
    p.add_argument("--concurrency", default="1,4,16")
    p.add_argument("--requests", type=int, default=2000, help="at most this many requests per level")
    p.add_argument("--seconds", type=float, default=30, help="at most this long per level")
    p.add_argument("--out", default="benchmarks/results/server_run.md")
    p.add_argument("--lock", default=None, help="flock this file around the timed levels only")
    a = p.parse_args()
    n = int(a.n)
    rng = np.random.default_rng(0)
    work = Path(tempfile.mkdtemp(prefix="hashsearch-bench-server-"))
    codes = np.frombuffer(rng.bytes(n * 8), np.uint8).reshape(n, 8)
    write_index(work / "idx", codes, None, 64, backend="mih")
    picks = codes[rng.integers(0, n, 500)].copy()
    bits = np.unpackbits(picks, axis=1)
    for row in bits:
        row[rng.choice(64, a.flips, replace=False)] ^= 1
    queries = np.packbits(bits, axis=1)
    del codes
    bodies = [{"codes": [q.tobytes().hex()], "k": a.k} for q in queries]
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen([sys.executable, "-m", "hashsearch.cli", "serve", str(work / "idx"), "--port", str(port)],
                            stderr=subprocess.PIPE, text=True)
    try:
        t0 = time.perf_counter()
        wait_ready(url, proc)
        httpx.post(f"{url}/search", json=bodies[0], timeout=600)  # builds the MIH tables
        ready_s = time.perf_counter() - t0
        with holding(a.lock, [os.getpid(), proc.pid]):
            print(f"ready in {ready_s:.1f} s; timing", flush=True)
            levels = [level(url, bodies, int(c), a.requests, a.seconds) for c in a.concurrency.split(",")]
    finally:
        proc.terminate()
        proc.wait(timeout=120)
        import shutil

        shutil.rmtree(work, ignore_errors=True)
    r = {"n": n, "nbits": 64, "backend": "mih", "k": a.k, "flips": a.flips, "ready_s": ready_s,
         "cores": os.cpu_count(), "machine": platform.processor() or platform.machine(), "levels": levels}
    lines = [f"`hashsearch serve` on 127.0.0.1, {n:,} uniform random 64-bit codes, MIH backend, one query per "
             f"request, top-{a.k}, queries = stored codes with {a.flips} bits flipped; clients are threads on the "
             f"same {r['cores']}-core machine (shared with other users). Open + MIH build: {ready_s:.1f} s.", "",
             "| concurrency | requests | QPS | p50 ms | p99 ms |", "|---|---|---|---|---|"]
    lines += [f"| {x['concurrency']} | {x['requests']} | {x['qps']:.0f} | {x['p50_ms']:.2f} | {x['p99_ms']:.2f} |"
              for x in levels]
    Path(a.out).with_suffix(".json").write_text(json.dumps(r, indent=2))
    Path(a.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
