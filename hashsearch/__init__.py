"""hashsearch: near-neighbour search through learned binary codes."""
from hashsearch.codes import binarize, encode_sign, pack_bits, to_signs, unpack_bits, validate_codes
from hashsearch.errors import CorruptIndexError, HashsearchError, InvalidInputError, UnknownIdError

__all__ = [
    "binarize", "encode_sign", "pack_bits", "to_signs", "unpack_bits", "validate_codes",
    "CorruptIndexError", "HashsearchError", "InvalidInputError", "UnknownIdError",
]
__version__ = "0.1.0"
