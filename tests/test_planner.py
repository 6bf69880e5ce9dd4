"""The cost model behind backend "auto": its statistics count what they claim on hand-built codes, and
its prices move the way the kernels' work does. Nothing is calibrated here."""
import numpy as np

from hashsearch.planner import CodeStats, CostModel, Costs, candidate_substrings, substring_bounds


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
    assert model.mih_query_range(m, 4) > model.mih_query_range(m, 0)
    assert model.mih_query_topk(m, 100) >= model.mih_query_topk(m, 1)
    # uniform random codes: top-k by MIH must grow its radius far, a scan is cheaper
    assert model.choose(100, 1, [m], k=10).plan == "scan"


def test_topk_extra_grows_with_k_and_n_and_words_cost_more():
    c = Costs()
    assert 0 <= c.topk_extra(1, 10**6) < c.topk_extra(10, 10**6) < c.topk_extra(1000, 10**6)
    assert c.topk_extra(100, 10**7) > c.topk_extra(100, 10**5)
    assert c.words_factor(256) > c.words_factor(128) > c.words_factor(64) and c.words_factor(512) > c.words_factor(256)
    assert c.threads(1) == 1 and c.threads(2) == 1 + c.parallel_eff


def test_substrings_cover_the_bits_and_stay_within_a_word():
    lo, ln = substring_bounds(200, 4)
    assert lo.tolist() == [0, 50, 100, 150] and ln.sum() == 200
    assert all(-(-200 // m) <= 64 for m in candidate_substrings(200, 10**6))
