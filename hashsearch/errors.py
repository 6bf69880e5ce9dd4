"""Exceptions that name the problem, so the CLI can print one clear line."""


class HashsearchError(Exception):
    """Base class of every error hashsearch raises on purpose."""


class InvalidInputError(HashsearchError, ValueError):
    """Input of the wrong dtype, shape, bit width, or with NaN values."""


class CorruptIndexError(HashsearchError):
    """An index on disk is truncated, corrupt or of an unknown format."""


class UnknownIdError(HashsearchError, KeyError):
    """An id that the index does not hold."""

    def __str__(self) -> str:  # KeyError quotes its message; keep it plain
        return str(self.args[0]) if self.args else ""


class NotFittedError(HashsearchError, ValueError, AttributeError):
    """A learner was asked to encode or save before `fit` (as scikit-learn's, a ValueError and AttributeError)."""
