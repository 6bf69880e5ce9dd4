"""The benchmark suite: what it times is correct (every engine equals the brute-force oracle), the
timing summaries and derived ratios are right, and the report writer produces report.md, JSON and
PNGs. Nothing here is timed."""
from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
from click.testing import CliRunner

from hashsearch import datasets, metrics
from hashsearch.bench import accuracy, physical, report, scale
from hashsearch.bench import engines as eng
from hashsearch.bench.config import TINY
from hashsearch.bench.latency import BATCH, SINGLE, Workload, time_grid, using_threads, workloads
from hashsearch.bench.runner import run
from hashsearch.bench.timing import measure, summarize
from hashsearch.cli import main
from hashsearch.codes import hamming_bruteforce
from hashsearch.errors import InvalidInputError
from hashsearch.models.baselines import LSH, SCM


@pytest.fixture(scope="module", params=[16, 64, 128])
def database(request):
    nbits = request.param
    codes = scale.database_codes(3000, nbits, seed=1)
    queries = scale.query_codes(codes, 12, flips=2, seed=1)
    return nbits, codes, queries, hamming_bruteforce(queries, codes)


def oracle_knn(dist: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-k by (distance, id) from the full distance matrix."""
    order = np.lexsort((np.broadcast_to(np.arange(dist.shape[1]), dist.shape), dist), axis=1)[:, :k]
    return np.take_along_axis(dist, order, axis=1), order


@pytest.mark.parametrize("name", eng.KNN_ENGINES)
def test_knn_matches_oracle(database, name):
    nbits, codes, queries, dist = database
    engine = eng.build_engine(name, codes, nbits)
    for k in (1, 10, 100):
        d, i = engine.knn(queries, k)
        od, oi = oracle_knn(dist, k)
        np.testing.assert_array_equal(d, od)
        np.testing.assert_array_equal(i, oi)


@pytest.mark.parametrize("name", eng.ENGINES)
def test_lookup_matches_oracle_inclusive(database, name):
    nbits, codes, queries, dist = database
    engine = eng.build_engine(name, codes, nbits)
    for r in (0, 1, 2, 3, 5):
        lims, d, i = engine.lookup(queries, r)
        for q in range(len(queries)):
            expect = np.flatnonzero(dist[q] <= r)
            expect = expect[np.lexsort((expect, dist[q, expect]))]
            np.testing.assert_array_equal(i[lims[q]:lims[q + 1]], expect, err_msg=f"{name} r={r} q={q}")
            np.testing.assert_array_equal(d[lims[q]:lims[q + 1]], dist[q, expect])


def test_faiss_multihash_knn_refused(database):
    nbits, codes, queries, _ = database
    with pytest.raises(InvalidInputError, match="not exact"):
        eng.build_engine(eng.FAISS_MULTIHASH, codes, nbits).knn(queries, 5)
    with pytest.raises(InvalidInputError, match="unknown engine"):
        eng.build_engine("annoy", codes, nbits)


def test_workload_calls_answer_what_engine_answers(database):
    nbits, codes, queries, dist = database
    engine = eng.build_engine(eng.OURS, codes, nbits)
    calls, per = Workload("knn", 10, SINGLE).calls(engine, queries, batch=5)
    assert per == 1 and len(calls) == len(queries)
    np.testing.assert_array_equal(calls[3]()[1], oracle_knn(dist, 10)[1][3:4])
    calls, per = Workload("lookup", 2, BATCH).calls(engine, queries, batch=5)
    assert per == 5 and len(calls) == 1
    assert calls[0]()[0][-1] == (dist[:5] <= 2).sum()


def test_time_grid_records_every_exact_cell():
    codes = scale.database_codes(500, 32, seed=0)
    queries = scale.query_codes(codes, 8)
    items = workloads((1, 5), (0, 2), (SINGLE, BATCH))
    recs = list(time_grid(codes, queries, 32, items, single_repeats=3, batch=4, batch_repeats=2, max_seconds=0.01))
    # knn: 3 exact engines x 4 cells; lookup: 4 engines x 4 cells
    assert len(recs) == 3 * 4 + 4 * 4
    assert not any(r["engine"] == eng.FAISS_MULTIHASH and r["op"] == "knn" for r in recs)
    batch_lookup = [r for r in recs if r["op"] == "lookup" and r["mode"] == BATCH and r["param"] == 2]
    assert {r["mean_hits"] for r in batch_lookup} == {float((hamming_bruteforce(queries[:4], codes) <= 2).sum()) / 4}
    assert all(r["p50_s"] <= r["p99_s"] and r["qps"] > 0 for r in recs)
    assert {r["threads"] for r in recs if r["mode"] == SINGLE} == {1}


def test_time_grid_skips_bulk_lookups():
    codes = np.tile(scale.database_codes(5, 32, seed=0), (100, 1))  # 5 codes, 100 copies each
    queries = codes[:4].copy()
    skipped = []
    recs = list(time_grid(codes, queries, 32, workloads((1,), (0,), (BATCH,)), single_repeats=2, batch=4,
                          batch_repeats=2, max_seconds=0.01, max_hits=50, skipped=skipped))
    assert {r["op"] for r in recs} == {"knn"} and len(recs) == 3
    assert len(skipped) == 4 and {c["mean_hits"] for c in skipped} == {100.0}


def test_measure_keeps_a_slow_warmup_as_the_only_sample():
    import time

    timing = measure(lambda: time.sleep(0.03), repeats=10, max_seconds=0.01)
    assert timing.repeats == 1 and timing.p50_s >= 0.03


def test_summarize_and_measure():
    t = summarize([0.1] * 99 + [1.1], queries_per_call=10)
    assert t.p50_s == pytest.approx(0.1) and t.p99_s == pytest.approx(0.1 + 0.01 * 1.0, rel=1e-6)
    assert t.qps == pytest.approx(100.0) and t.repeats == 100
    seen = []
    timing = measure([lambda: seen.append("a"), lambda: seen.append("b")], repeats=4, warmup=1)
    assert seen == ["a", "a", "b", "a", "b"] and timing.repeats == 4
    with pytest.raises(ValueError):
        summarize([])


def test_flip_bits_and_replication():
    codes = scale.database_codes(400, 64, seed=3)
    flipped = scale.flip_bits(codes, 3, seed=0)
    assert (hamming_bruteforce(codes[:50], flipped[:50]).diagonal() == 3).all()
    big = scale.replicate_with_noise(codes, 10_000, flip_prob=0.05, seed=0)
    assert big.shape == (10_000, 8) and big.dtype == np.uint8
    np.testing.assert_array_equal(big[:400], codes)
    rate = (np.unpackbits(big[400:] ^ np.tile(codes, (25, 1))[400:])).mean()
    assert 0.04 < rate < 0.06


def test_popcount_kernel_and_fractions():
    words = np.random.default_rng(0).integers(0, 2**63, size=1000, dtype=np.uint64)
    assert physical.popcount_sum(words, 3) == 3 * int(np.bitwise_count(words).sum())
    limits = {"read_bandwidth_1t_Bps": 8e9, "read_bandwidth_all_Bps": 16e9, "popcount64_per_s_1t": 4e9, "cpu_count": 2}
    f = physical.scan_fractions(limits, 1e9, 128, threads=1)
    assert f["fraction_of_bandwidth"] == pytest.approx(2.0) and f["fraction_of_popcount"] == pytest.approx(0.5)
    f = physical.scan_fractions(limits, 1e9, 64, threads=2)
    assert f["fraction_of_bandwidth"] == pytest.approx(0.5) and f["fraction_of_popcount"] == pytest.approx(0.125)


def _rec(engine, op, param, p50, n=1000, nbits=64, mode=SINGLE, **extra):
    return {"engine": engine, "op": op, "param": param, "p50_s": p50, "p99_s": p50, "qps": 1 / p50, "n": n,
            "nbits": nbits, "mode": mode, **extra}


def test_derived_ratios_hand_computed():
    lat = [_rec("ours", "knn", 10, 0.002), _rec("faiss-flat", "knn", 10, 0.006),
           _rec("ours", "knn", 10, 0.5, n=10), _rec("faiss-flat", "knn", 10, 0.1, n=10),
           _rec("ours", "lookup", 2, 0.004), _rec("faiss-flat", "lookup", 2, 0.008),
           _rec("mih", "lookup", 2, 0.001), _rec("mih", "lookup", 2, 0.01, mode=BATCH, mean_hits=7.5),
           _rec("mih", "lookup", 3, 0.001)]
    assert report.flat_ratios(lat) == [{"nbits": 64, "n": 1000, "k": 10, "mode": SINGLE, "threads": None,
                                        "ours_p50_s": 0.002,
                                        "faiss_p50_s": 0.006, "ratio": pytest.approx(3.0)}]
    single = [d for d in report.mih_speedups(lat) if d["mode"] == SINGLE]
    assert len(single) == 1 and single[0]["r"] == 2
    assert single[0]["speedup_vs_scan"] == pytest.approx(4.0) and single[0]["speedup_vs_faiss_flat"] == pytest.approx(8.0)
    assert single[0]["speedup_vs_faiss_multihash"] is None and single[0]["mean_hits"] == 7.5
    assert report.md_table(["a", "b"], [[1.23456, None]]).splitlines()[2] == "| 1.23 | — |"


def test_runner_writes_report_json_and_plots(tmp_path):
    path = run(TINY, tmp_path, sections=("physical", "latency", "storage", "scale"))
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["errors"] == {}
    text = path.read_text()
    assert "Ours vs FAISS flat" in text and "Multi-index hashing vs linear scan" in text and "Bytes per item" in text
    for png in ("latency_vs_n.png", "speedups.png", "memory_vs_n.png"):
        assert (tmp_path / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(results["latency"]) == 3 * 4 + 4 * 4  # tiny grid: 2 k x 2 modes, 2 r x 2 modes
    items = {r["item"] for r in results["storage"]}
    assert {"packed code", "float32 embedding"} | {f"index: {e}" for e in eng.ENGINES} <= items
    assert next(r for r in results["storage"] if r["item"] == "packed code")["memory_bytes_per_item"] == 4
    assert {r["n"] for r in results["scale"]["memory"]} == set(TINY.scale_sizes)


def test_cli_bench_and_bad_section(tmp_path):
    runner = CliRunner()
    res = runner.invoke(main, ["bench", "--quick", "--sections", "physical", "--out", str(tmp_path)])
    assert res.exit_code == 0, res.output
    assert "read_bandwidth_1t_Bps" in (tmp_path / "report.md").read_text()
    res = runner.invoke(main, ["bench", "--sections", "latncy", "--out", str(tmp_path)])
    assert res.exit_code == 1 and "unknown bench section" in res.output
    res = runner.invoke(main, ["bench", "--set", "sizes=1.5", "--out", str(tmp_path)])
    assert res.exit_code == 1 and "bad bench setting 'sizes=1.5'" in res.output


def test_config_overrides():
    cfg = TINY.with_overrides(["sizes=1e4,1e5", "max_seconds=0.5", "deep_nbits=none", "deep_datasets=mnist5k",
                               "accuracy_epochs=3"])
    assert cfg.sizes == (10_000, 100_000) and cfg.max_seconds == 0.5 and cfg.deep_nbits is None
    assert cfg.deep_datasets == ("mnist5k",) and cfg.accuracy_epochs == 3 and cfg.nbits == TINY.nbits
    for bad in ("nbitz=16", "nbits", "storage_n=none", "batch=ten"):
        with pytest.raises(ValueError, match="bad bench setting"):
            TINY.with_overrides([bad])


def test_using_threads_restores_setting():
    import numba

    before = numba.get_num_threads()
    with using_threads(1) as threads:
        assert threads == 1 and numba.get_num_threads() == 1
    assert numba.get_num_threads() == before


def _real(loader):
    try:
        return loader()
    except FileNotFoundError as exc:
        pytest.skip(f"real data not found: {exc}")


def test_accuracy_table_matches_metrics_on_wikipedia():
    """Shallow cross-modal rows on real data: one row per (method, task, bits), mAP as metrics computes it."""
    ds = _real(datasets.load_wikipedia)
    cfg = replace(TINY, accuracy_datasets=("wikipedia",), deep_datasets=())
    acc = accuracy.accuracy_section(cfg)
    rows = {(r["method"], r["task"], r["nbits"]): r for r in acc["rows"]}
    assert set(rows) == {(m, t, 16) for m in ("SCM", "CCA-ITQ") for t in ("I→T", "T→I")}
    split = datasets.standard_split(ds, seed=cfg.seed)
    model = SCM(16, seed=cfg.seed).fit(ds.images[split.train], ds.texts[split.train], ds.labels[split.train])
    expect = metrics.mean_average_precision(model.encode_image(ds.images[split.query]),
                                            model.encode_text(ds.texts[split.database]),
                                            ds.labels[split.query], ds.labels[split.database], 16)
    assert rows[("SCM", "I→T", 16)]["map_all"] == pytest.approx(expect)
    assert any("Deep learners skipped on wikipedia" in n for n in acc["notes"])
    table = report.accuracy_tables(acc)
    assert "| method | I→T 16 | T→I 16 |" in table and "| SCM |" in table


def test_sift_recall_matches_bruteforce():
    """Recall of the true Euclidean neighbours in the Hamming top K equals a brute-force count."""
    ds = _real(datasets.load_sift_small)
    cfg = replace(TINY, accuracy_nbits=(16,), accuracy_topk=(1, 10, 100))
    rows = {r["method"]: r for r in accuracy.neighbour_recall(ds, cfg, true_k=10)}
    assert set(rows) == {"ITQ", "LSH"}
    model = LSH(16, seed=cfg.seed).fit(ds.base)
    _, top = oracle_knn(hamming_bruteforce(model.encode(ds.queries), model.encode(ds.base)), 100)
    for k in cfg.accuracy_topk:
        found = np.mean([len(set(t) & set(i[:k])) / 10 for t, i in zip(ds.groundtruth[:, :10], top)])
        assert rows["LSH"][f"recall@{k}"] == pytest.approx(found)
    assert rows["ITQ"]["recall@1"] <= rows["ITQ"]["recall@10"] <= rows["ITQ"]["recall@100"]
