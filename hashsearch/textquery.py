"""Codes from free text: the bag-of-words vocabulary a model's text side was trained on, the vector a
query text makes over it, and its code through the model's text network. Used by `hashsearch query
--text` (the text counterpart of imagequery.py).

Tokens: the text is lowercased and split at whitespace; a word the vocabulary holds as typed is kept
whole (MIRFLICKR has '360°'), any other is split further at every character that is not a letter or a
digit ("sunset,beach" -> sunset, beach; the tags hold digits: '2007', 'd80').
"""
from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from hashsearch.errors import CorruptIndexError, InvalidInputError

WORD_PIECES = re.compile(r"[^\W_]+")  # runs of letters and digits (Unicode)


@dataclass(frozen=True)
class Vocabulary:
    """The words of a bag-of-words text input, in column order, and whether the vectors were binary
    (word present: 1) or counts (occurrences). Built by `from_training` so both match the texts."""

    words: tuple[str, ...]
    binary: bool = True
    columns: dict[str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        words = tuple(self.words)
        if not words:
            raise InvalidInputError("a vocabulary needs at least one word")
        bad = next((w for w in words if not isinstance(w, str) or not w.strip()), None)
        if bad is not None:
            raise InvalidInputError(f"vocabulary words are non-empty strings, got {bad!r}")
        repeated = [w for w, c in Counter(words).items() if c > 1]
        if repeated:
            raise InvalidInputError(f"the vocabulary repeats {', '.join(map(repr, repeated[:5]))}: each word is one column")
        object.__setattr__(self, "words", words)
        object.__setattr__(self, "columns", {w: k for k, w in enumerate(words)})

    @classmethod
    def from_training(cls, words: Iterable[str], texts: np.ndarray) -> "Vocabulary":
        """The vocabulary of training `texts` (n, len(words)): refuses texts that are not bag-of-words
        (negative or fractional values), and records whether they were binary or counts."""
        vocab = cls(tuple(words))
        y = np.asarray(texts)
        if y.ndim != 2 or y.shape[1] != len(vocab.words):
            raise InvalidInputError(f"the vocabulary has {len(vocab.words)} words but the texts have "
                                    f"{y.shape[1] if y.ndim == 2 else '?'} columns (shape {y.shape})")
        if y.size and (y.min() < 0 or not np.array_equal(y, np.round(y))):
            raise InvalidInputError("a vocabulary fits bag-of-words texts (counts or 0/1), but these texts hold "
                                    "negative or fractional values; train without the vocabulary")
        return cls(vocab.words, binary=bool(y.size == 0 or y.max() <= 1))

    def to_json(self) -> dict[str, Any]:
        return {"words": list(self.words), "binary": self.binary}

    @classmethod
    def from_json(cls, doc: Any, text_dim: int, where: str) -> "Vocabulary":
        """A saved vocabulary, checked against the model's text width; a bad one is a CorruptIndexError."""
        try:
            vocab = cls(tuple(doc["words"]), binary=doc["binary"])
        except (TypeError, KeyError, InvalidInputError) as exc:
            raise CorruptIndexError(f"{where}: the saved text vocabulary is unreadable ({exc})") from None
        if not isinstance(vocab.binary, bool):
            raise CorruptIndexError(f"{where}: the saved text vocabulary's 'binary' is {vocab.binary!r}, not true/false")
        if len(vocab.words) != text_dim:
            raise CorruptIndexError(f"{where}: the saved text vocabulary has {len(vocab.words)} words but the "
                                    f"text network takes {text_dim} columns")
        return vocab

    def tokens(self, text: str) -> list[str]:
        """The tokens of `text` (see the module docstring)."""
        out = []
        for word in text.lower().split():
            out += [word] if word in self.columns else WORD_PIECES.findall(word)
        return out

    def vectors(self, texts: Sequence[str]) -> tuple[np.ndarray, list[str]]:
        """float32 (len(texts), len(words)) bag-of-words rows, binary or counts as in training, and the
        tokens that are not in the vocabulary (each once, in order of appearance)."""
        out = np.zeros((len(texts), len(self.words)), dtype=np.float32)
        unknown: dict[str, None] = {}
        for row, text in enumerate(texts):
            for token in self.tokens(text):
                col = self.columns.get(token)
                if col is None:
                    unknown[token] = None
                elif self.binary:
                    out[row, col] = 1
                else:
                    out[row, col] += 1
        return out, list(unknown)


def model_vocabulary(model: Any) -> Vocabulary:
    """The vocabulary of a saved model's text side, or a clear error when it has none."""
    name = type(model).__name__
    if not hasattr(model, "encode_text"):
        raise InvalidInputError(f"{name} has no text side: --text needs a cross-modal model such as DCMH")
    vocab = getattr(model, "text_vocabulary_", None)
    if vocab is None:
        raise InvalidInputError(f"this {name} was trained without a text vocabulary, so it cannot read words: "
                                "train it on a data set with one (mirflickr, nuswide) or pass text_vocabulary= to fit")
    return vocab


def text_vector(model: Any, text: str) -> tuple[np.ndarray, list[str]]:
    """The (1, vocabulary) bag-of-words row of `text` for `model`, and the query's words outside its
    vocabulary; refuses a query none of whose words it knows."""
    vocab = model_vocabulary(model)
    row, unknown = vocab.vectors([text])
    if not row.any():
        said = f"none of its words ({', '.join(unknown)}) are" if unknown else "it has no words that are"
        raise InvalidInputError(f"cannot encode the text {text!r}: {said} in the model's "
                                f"{len(vocab.words)}-word vocabulary")
    return row, unknown
