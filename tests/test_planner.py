"""The cost model behind backend "auto": its statistics count what they claim on hand-built codes, and
its prices move the way the kernels' work does. Nothing is calibrated here."""
import math

import numpy as np
import pytest

from hashsearch.planner import (LARGE_ROWS, PROBE_SIZES, CodeStats, CostModel, Costs, _nonneg_lstsq, _split_prices,
                                candidate_substrings, substring_bounds, topk_work)


def test_code_stats_count_rows_within_each_distance():
    """Half the rows equal a code, half are its complement: a sample query sees n/2 - 1 rows at 0
    (not itself) and n/2 at 64; with 2 tables of 32 bits, radius 0 verifies the equal rows in both."""
    base = np.random.default_rng(0).integers(0, 256, 8, dtype=np.uint8)
    codes = np.vstack([np.tile(base, (500, 1)), np.tile(~base, (500, 1))])
    stats = CodeStats(codes, 64, [2])
    assert stats.scale == 1000 / 999
    within = stats.within / stats.scale
    assert set(within[:, 0]) == {499.0} and set(within[:, 63]) == {499.0} and set(within[:, 64]) == {999.0}
    verified = stats.verify_rows(2, 0) / stats.scale  # radius 0 with m = 2: table 1 alone (radii -1, 0)
    assert set(verified) == {499.0}
    assert set(stats.verify_rows(2, 1) / stats.scale) == {2 * 499.0}


def test_prices_follow_the_work():
    codes = np.random.default_rng(1).integers(0, 256, (5000, 8), dtype=np.uint8)
    model = CostModel(Costs(), CodeStats(codes, 64, candidate_substrings(64, 5000)))
    assert model.scan(100, 1) > model.scan(10, 1) > model.scan(1, 1)
    assert model.scan(1, 1, k=1000) > model.scan(1, 1, k=10)
    m = candidate_substrings(64, 5000)[0]
    assert model.mih_query(m, radius=4) > model.mih_query(m, radius=0)
    assert model.mih_query(m, k=100) >= model.mih_query(m, k=1)
    # uniform random codes: top-k by MIH must grow its radius far, a scan is cheaper
    assert model.choose(100, 1, [m], k=10).plan == "scan"


def test_topk_extra_grows_with_k_and_work_and_words_cost_more():
    c = Costs()
    assert 0 <= c.topk_extra(1, 0, 1) < c.topk_extra(10, 0, 10) < c.topk_extra(1000, 0, 1000)
    assert c.topk_extra(10, 1e5, 50) > c.topk_extra(10, 1e3, 50)
    assert c.words_factor(256) > c.words_factor(128) > c.words_factor(64) and c.words_factor(512) > c.words_factor(256)
    assert c.threads(1) == 1 and c.threads(2) == 1 + c.parallel_eff


def test_row_cost_ramps_from_cached_to_streamed_rows():
    c = Costs(word_cost=(1.0, 1.0, 2.0, 4.0), large_cost=(1.0, 2.0, 3.0, 3.0))
    assert c.words_factor(64, 1000) == c.words_factor(64) == 1.0
    assert c.words_factor(64, LARGE_ROWS) == c.words_factor(64, 10**9) == 2.0
    assert 1.0 < c.words_factor(64, 1 << 19) < 2.0 and c.words_factor(128, LARGE_ROWS) == 6.0


def test_probe_price_is_log_linear_in_n_and_extrapolates():
    c = Costs(probe_ns=(100.0, 300.0))
    lo, hi = (1 << s for s in PROBE_SIZES)
    assert c.probe(lo) == 100.0 and c.probe(hi) == 300.0
    assert c.probe(int((lo * hi) ** 0.5)) == pytest.approx(200.0)
    assert c.probe(hi * (hi // lo)) == pytest.approx(500.0) and c.probe(2) == 100.0  # held below the first size


def test_topk_work_counts_the_rows_a_scan_keeps():
    """Uniform 64-bit codes: rows kept ~ k (1 + ln(n / k)) (each row is kept when it beats the k-th
    seen so far); the blocks read twice grow with k; a part of n / 2 rows does more than half the work."""
    codes = np.random.default_rng(2).integers(0, 256, (1 << 16, 8), dtype=np.uint8)
    within = CodeStats(codes, 64, [2]).within
    n = codes.shape[0]
    opened, kept = zip(*(topk_work(within, n, n, k) for k in (1, 10, 100, 1000)))
    assert list(opened) == sorted(opened) and list(kept) == sorted(kept)
    assert 0.3 < kept[2] / (100 * (1 + math.log(n / 100))) < 1.5 and opened[3] <= n
    half_open, half_kept = topk_work(within, n, n // 2, 1000)
    assert 2 * half_kept > kept[3] and topk_work(within, n, 50, 100) == (50.0, 50.0)


def test_single_query_split_in_parts_pays_each_parts_top_k():
    """Two threads split one query's scan in two parts that each keep their own top-k: for a large k
    the model charges both (and the merge), not one."""
    codes = np.random.default_rng(3).integers(0, 256, (1 << 17, 8), dtype=np.uint8)
    model = CostModel(Costs(parallel_eff=1.0), CodeStats(codes, 64, [2]))
    n = codes.shape[0]
    one, two = model.scan(1, 1, k=1000), model.scan(1, 2, k=1000)
    assert two > (one - model.topk_extra(1000, n) * 1e-9) / 2 + model.topk_extra(1000, n // 2) * 1e-9  # (ns)


def test_nonneg_fit_keeps_constants_nonnegative_and_recovers_exact_ones():
    a = np.array([[1.0, 2, 0], [1, 0, 3], [1, 5, 1], [1, 1, 1]])
    assert np.allclose(_nonneg_lstsq(a, a @ np.array([2.0, 1.0, 0.5])), [2.0, 1.0, 0.5])
    assert _nonneg_lstsq(a, a @ np.array([2.0, -1.0, 0.5])).min() >= 0


def test_mih_price_is_its_features_priced():
    """What calibration fits against (the counted work) and what the model charges agree: one pass of a
    radius search is 1 pass, m tables, its probes, verified rows and hits; top-k sums its passes."""
    codes = np.random.default_rng(4).integers(0, 256, (1 << 15, 8), dtype=np.uint8)
    model = CostModel(Costs(), CodeStats(codes, 64, [4]))
    feats, scanned = model.mih_features(4, radius=1)
    assert scanned == 0 and feats[0] == 1 and feats[1] == 4 and feats[2] == 2  # radii (-1, -1, 0, 0)
    assert model.mih_features(4, radius=64)[1] > 0  # probing 2**16 buckets: scanned instead
    topk, _ = model.mih_features(4, k=10)
    assert topk[0] > 1 and topk[1] == 4 * topk[0]
    c = Costs(pass_ns=1, table_ns=0, probe_ns=(0, 0), direct_probe_ns=0, verify_row=0, mih_hit=0)
    assert CostModel(c, model.s).mih_query(4, k=10) == pytest.approx(topk[0] + model.mih_features(4, k=10)[1])


def test_substrings_cover_the_bits_and_stay_within_a_word():
    lo, ln = substring_bounds(200, 4)
    assert lo.tolist() == [0, 50, 100, 150] and ln.sum() == 200
    assert all(-(-200 // m) <= 64 for m in candidate_substrings(200, 10**6))


def test_split_call_is_priced_between_its_typical_and_fastest_states():
    c = Costs(parallel_eff=0.0, pool_us=1000.0, parallel_eff_fast=1.0, pool_fast_us=0.0)
    assert c.split(5e6, 1) == 5e6
    typical, fast = 5e6 + 1e6, 2.5e6
    assert c.split(5e6, 2) == pytest.approx(math.sqrt(typical * fast))
    assert c.threads(2) == 1 and c.threads(2, fast=True) == 2


def test_direct_addressed_probes_are_priced_apart():
    """64-bit codes: 4 tables of 16 bits read bucket bounds from an array; 2 tables of 32 bits search."""
    codes = np.random.default_rng(5).integers(0, 256, (1 << 12, 8), dtype=np.uint8)
    model = CostModel(Costs(probe_ns=(100.0, 200.0), direct_probe_ns=7.0), CodeStats(codes, 64, [2, 4]))
    assert model.probe(4) == 7.0 and model.probe(2) == 100.0


def test_split_prices_fit_efficiency_and_pool_from_two_sizes():
    """Fake searches: W / threads + 1 ms of pool at 2 threads. The fit recovers a perfect second thread
    and the 1 ms pool, in both states."""
    import time

    import numba

    def fake(w_s):
        def fn():
            t = numba.get_num_threads()
            time.sleep(w_s / t + (1e-3 if t > 1 else 0.0))
        return fn

    if numba.config.NUMBA_NUM_THREADS < 2:
        pytest.skip("needs 2 threads")
    eff, pool, eff_fast, pool_fast = _split_prices([fake(0.004), fake(0.02)], repeats=3, gap_s=0.0)
    assert eff == pytest.approx(1.0, abs=0.15) and eff_fast == pytest.approx(1.0, abs=0.15)
    assert pool == pytest.approx(1000, abs=600) and pool_fast == pytest.approx(1000, abs=600)
