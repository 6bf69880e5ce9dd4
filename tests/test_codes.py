import numpy as np
import pytest
from hypothesis import given, strategies as st
from hypothesis.extra.numpy import arrays

from hashsearch.codes import (
    binarize, check_nbits, encode_sign, hamming_bruteforce, pack_bits, to_signs, unpack_bits, validate_codes,
)
from hashsearch.errors import InvalidInputError


def test_sign_of_zero_is_plus_one_and_msb_first():
    x = np.array([[0.0, -1, 2, -3, 0, 0, -0.5, 7]])
    assert binarize(x).tolist() == [[True, False, True, False, True, True, False, True]]
    assert encode_sign(x).tolist() == [[0b10101101]]


@given(st.integers(1, 16).map(lambda b: 8 * b), st.integers(0, 20), st.randoms())
def test_pack_unpack_round_trip(nbits, n, rnd):
    bits = np.array([[rnd.randint(0, 1) for _ in range(nbits)] for _ in range(n)], dtype=np.uint8).reshape(n, nbits)
    codes = pack_bits(bits)
    assert codes.shape == (n, nbits // 8) and codes.dtype == np.uint8
    assert np.array_equal(unpack_bits(codes, nbits), bits)
    assert np.array_equal(to_signs(codes), bits * 2.0 - 1)


@given(arrays(np.float32, (5, 16), elements=st.floats(-4, 4, width=32)))
def test_hamming_of_sign_codes_matches_sign_disagreements(x):
    codes = encode_sign(x)
    signs = np.where(x >= 0, 1, -1)
    expected = (signs[:, None, :] != signs[None, :, :]).sum(axis=2)
    assert np.array_equal(hamming_bruteforce(codes, codes), expected)


@pytest.mark.parametrize("nbits", [0, 4, 12, 1032, 2048, -8, 8.0, True])
def test_bad_bit_widths_are_refused(nbits):
    with pytest.raises(InvalidInputError, match="nbits"):
        check_nbits(nbits)


def test_nan_input_is_named():
    x = np.zeros((3, 8))
    x[2, 5] = np.nan
    with pytest.raises(InvalidInputError, match="NaN.*row 2"):
        encode_sign(x)


@pytest.mark.parametrize(
    "codes, nbits, message",
    [
        (np.zeros((2, 8), dtype=np.int64), None, "dtype uint8"),
        (np.zeros(8, dtype=np.uint8), None, "2-D"),
        (np.zeros((4, 16), dtype=np.uint8)[:, ::2], None, "C-contiguous"),
        (np.zeros((2, 8), dtype=np.uint8), 32, "64-bit codes .* nbits is 32"),
        ([[1, 2]], None, "numpy array"),
    ],
)
def test_validate_codes_names_the_problem(codes, nbits, message):
    with pytest.raises(InvalidInputError, match=message):
        validate_codes(codes, nbits)


def test_non_binary_bits_and_non_numeric_outputs_are_refused():
    with pytest.raises(InvalidInputError, match="only 0 and 1"):
        pack_bits(np.full((1, 8), 2))
    with pytest.raises(InvalidInputError, match="real-valued"):
        binarize(np.array([["a"] * 8]))
