"""Filters: id allow-lists and metadata expressions become the exact row mask; `--where` text parses to
the expression a user means, and bad input gets one clear line."""
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from hypothesis import given, settings, strategies as st

from hashsearch.errors import InvalidInputError
from hashsearch.filters import filter_mask, parse_where
from conftest import examples

META = pa.table({"label": [3, 1, 3, None, 7], "year": [2009, 2010, 2015, 2020, 2011],
                 "tag": ["cat", "dog", "cat", "bird", None], "score": [0.1, 0.9, 0.5, 0.7, 0.2],
                 "odd name": [True, False, True, False, True]})
IDS = np.array([10, 11, 12, 13, 14], np.int64)


def rows(where: str) -> list[int]:
    return np.flatnonzero(filter_mask(parse_where(where), IDS, META)).tolist()


@pytest.mark.parametrize("where,expect", [
    ("label == 3", [0, 2]),
    ("label = 3 and year >= 2010", [2]),
    ("label == 3 or year > 2015", [0, 2, 3]),
    ("not (label == 3)", [1, 4]),  # null label: unknown, never returned
    ("tag in ('cat', \"bird\")", [0, 2, 3]),
    ("tag not in ('cat')", [1, 3]),
    ("tag is null", [4]),
    ("label is not null and score < 0.6", [0, 2, 4]),
    ("`odd name` == true", [0, 2, 4]),
    ("score >= 5e-1", [1, 2, 3]),
    ("year != 2010 and (tag == 'cat' or label == 7)", [0, 2, 4]),
    ("LABEL == 3", None),  # column names are case-sensitive: an unknown column
])
def test_where_text_selects_the_rows_meant(where, expect):
    if expect is None:
        with pytest.raises(InvalidInputError, match="unknown column 'LABEL'; the metadata has columns: label, year"):
            rows(where)
    else:
        assert rows(where) == expect


def test_where_matches_the_pyarrow_expression_built_by_hand():
    assert parse_where("label == 3 and year >= 2010").equals((pc.field("label") == 3) & (pc.field("year") >= 2010))
    assert parse_where("a < -2.5 or not b == 'x'").equals((pc.field("a") < -2.5) | ~(pc.field("b") == "x"))


@pytest.mark.parametrize("where,match", [
    ("", "empty filter"),
    ("label ==", "expected a value .* found the end"),
    ("label 3", "expected a comparison"),
    ("label == 3 label", "expected 'and', 'or' or the end"),
    ("(label == 3", "expected '\\)'"),
    ("label == 3; drop", "cannot read ';"),
    ("__import__('os')", "expected a comparison"),
    ("label not == 3", "expected 'in' after 'not'"),
])
def test_bad_where_text_is_refused_with_one_line(where, match):
    with pytest.raises(InvalidInputError, match=match):
        parse_where(where)


def test_id_allow_list_and_errors():
    assert filter_mask([12, 10, 99], IDS, None).tolist() == [True, False, True, False, False]
    assert not filter_mask(np.array([], np.int64), IDS, None).any()
    with pytest.raises(InvalidInputError, match="1-D array of integer ids"):
        filter_mask([1.5], IDS, None)
    with pytest.raises(InvalidInputError, match="array of ids or a pyarrow.compute.Expression"):
        filter_mask("label == 3", IDS, META)
    with pytest.raises(InvalidInputError, match="this index has no metadata"):
        filter_mask(pc.field("label") == 3, IDS, None)
    with pytest.raises(InvalidInputError, match="gives string values, not true/false"):
        filter_mask(pc.field("tag"), IDS, META)
    with pytest.raises(InvalidInputError, match="cannot apply filter"):
        filter_mask(pc.field("tag") > 3, IDS, META)


@settings(max_examples=examples(40), deadline=None)
@given(st.lists(st.integers(0, 9), min_size=1, max_size=50), st.integers(0, 9), st.sampled_from(["==", "!=", "<", "<=", ">", ">="]))
def test_comparison_matches_numpy(values, x, op):
    meta = pa.table({"v": values})
    got = filter_mask(parse_where(f"v {op} {x}"), np.arange(len(values)), meta)
    v = np.array(values)
    expect = {"==": v == x, "!=": v != x, "<": v < x, "<=": v <= x, ">": v > x, ">=": v >= x}[op]
    assert (got == expect).all()
