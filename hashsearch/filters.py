"""Filters for search: which rows of a segment may be returned, as a bool mask (packed into the bitmap
that the backends' kernels test, `hashsearch.bitmaps`).

A filter is an id allow-list (array-like of int ids) or a `pyarrow.compute.Expression` over the
metadata columns. `parse_where` turns the CLI's `--where` text (`label == 3 and year >= 2010`) into
such an expression with a small grammar of its own (never `eval`):

    expr       := and_expr ("or" and_expr)*
    and_expr   := not_expr ("and" not_expr)*
    not_expr   := "not" not_expr | "(" expr ")" | comparison
    comparison := column op literal | column ["not"] "in" "(" literal ("," literal)* ")"
                | column "is" ["not"] "null"
    op         := "==" | "=" | "!=" | "<" | "<=" | ">" | ">="
    column     := identifier | `any text in backquotes`
    literal    := integer | float | 'text' | "text" | true | false
"""
from __future__ import annotations

import re
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from hashsearch.errors import InvalidInputError

__all__ = ["filter_mask", "parse_where"]


def filter_mask(filter: Any, ids: np.ndarray, metadata: pa.Table | None) -> np.ndarray:
    """(len(ids),) bool mask of the rows that `filter` admits: an allow-list of ids, or an expression
    evaluated on `metadata` (one row per id; null counts as False)."""
    ids = np.asarray(ids)
    if isinstance(filter, pc.Expression):
        return _expression_mask(filter, metadata, ids.shape[0])
    if isinstance(filter, (str, bytes, dict)) or filter is None:
        raise InvalidInputError(f"filter must be an array of ids or a pyarrow.compute.Expression "
                                f"(e.g. parse_where('label == 3')), got {type(filter).__name__}")
    allow = np.asarray(filter)
    if allow.ndim != 1 or not (np.issubdtype(allow.dtype, np.integer) or allow.size == 0):
        raise InvalidInputError(f"an id filter must be a 1-D array of integer ids, got dtype {allow.dtype} "
                                f"and shape {allow.shape}")
    return np.isin(ids, allow)


def _expression_mask(expr: pc.Expression, metadata: pa.Table | None, n: int) -> np.ndarray:
    import pyarrow.dataset as ds

    if metadata is None:
        raise InvalidInputError(f"filter {expr} needs metadata columns, but this index has no metadata")
    if metadata.num_rows != n:
        raise InvalidInputError(f"metadata has {metadata.num_rows} rows for {n} ids")
    try:
        out = ds.dataset(metadata).to_table(columns={"keep": expr}).column("keep")
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError) as exc:
        message = str(exc).splitlines()[0]
        match = re.search(r"No match for FieldRef\.Name\((.*?)\)", message)
        if match:
            message = (f"unknown column {match.group(1)!r}; the metadata has columns: "
                       f"{', '.join(metadata.column_names)}")
        raise InvalidInputError(f"cannot apply filter {expr}: {message}") from None
    if not pa.types.is_boolean(out.type):
        raise InvalidInputError(f"filter {expr} gives {out.type} values, not true/false")
    return np.asarray(out.fill_null(False).to_numpy(zero_copy_only=False), dtype=bool)


_TOKEN = re.compile(r"""\s*(?:
    (?P<number>[-+]?(?:\d+\.\d*|\.\d+|\d+)(?:[eE][-+]?\d+)?)
  | (?P<string>'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*")
  | (?P<quoted>`[^`]+`)
  | (?P<op>==|!=|<=|>=|=|<|>|\(|\)|,)
  | (?P<word>[A-Za-z_][A-Za-z0-9_.]*)
)""", re.VERBOSE)
_KEYWORDS = {"and", "or", "not", "in", "is", "null", "true", "false"}
_COMPARE = {"==": pc.equal, "=": pc.equal, "!=": pc.not_equal, "<": pc.less, "<=": pc.less_equal,
            ">": pc.greater, ">=": pc.greater_equal}


def _tokens(text: str) -> list[tuple[str, str]]:
    out, pos = [], 0
    text = text.rstrip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m or m.end() == pos:
            raise InvalidInputError(f"--where: cannot read {text[pos:].strip()[:20]!r} at character {pos + 1} of {text!r}")
        kind = m.lastgroup
        value = m.group(kind)
        if kind == "word" and value.lower() in _KEYWORDS:
            kind, value = "keyword", value.lower()
        out.append((kind, value))
        pos = m.end()
    return out


class _Parser:
    """Recursive descent over the tokens of one `--where` text (grammar in the module docstring)."""

    def __init__(self, text: str):
        self.text, self.toks, self.i = text, _tokens(text), 0

    def fail(self, expected: str) -> None:
        got = repr(self.toks[self.i][1]) if self.i < len(self.toks) else "the end"
        raise InvalidInputError(f"--where: expected {expected} but found {got} in {self.text!r}")

    def peek(self, value: str) -> bool:
        return self.i < len(self.toks) and self.toks[self.i][1] == value and self.toks[self.i][0] in ("keyword", "op")

    def take(self, value: str) -> None:
        if not self.peek(value):
            self.fail(repr(value))
        self.i += 1

    def parse(self) -> pc.Expression:
        if not self.toks:
            raise InvalidInputError("--where: empty filter")
        expr = self.or_expr()
        if self.i != len(self.toks):
            self.fail("'and', 'or' or the end")
        return expr

    def or_expr(self) -> pc.Expression:
        expr = self.and_expr()
        while self.peek("or"):
            self.i += 1
            expr = expr | self.and_expr()
        return expr

    def and_expr(self) -> pc.Expression:
        expr = self.not_expr()
        while self.peek("and"):
            self.i += 1
            expr = expr & self.not_expr()
        return expr

    def not_expr(self) -> pc.Expression:
        if self.peek("not"):
            self.i += 1
            return ~self.not_expr()
        if self.peek("("):
            self.i += 1
            expr = self.or_expr()
            self.take(")")
            return expr
        return self.comparison()

    def column(self) -> pc.Expression:
        if self.i >= len(self.toks) or self.toks[self.i][0] not in ("word", "quoted"):
            self.fail("a column name")
        kind, name = self.toks[self.i]
        self.i += 1
        return pc.field(name[1:-1] if kind == "quoted" else name)

    def literal(self) -> Any:
        if self.i >= len(self.toks):
            self.fail("a value")
        kind, value = self.toks[self.i]
        self.i += 1
        if kind == "number":
            return float(value) if any(c in value for c in ".eE") else int(value)
        if kind == "string":
            return re.sub(r"\\(.)", r"\1", value[1:-1])
        if kind == "keyword" and value in ("true", "false"):
            return value == "true"
        self.i -= 1
        self.fail("a value (number, 'text', true or false)")

    def comparison(self) -> pc.Expression:
        field = self.column()
        if self.peek("is"):
            self.i += 1
            negate = self.peek("not")
            self.i += negate
            self.take("null")
            return ~field.is_null() if negate else field.is_null()
        negate = self.peek("not")
        self.i += negate
        if self.peek("in"):
            self.i += 1
            self.take("(")
            values = [self.literal()]
            while self.peek(","):
                self.i += 1
                values.append(self.literal())
            self.take(")")
            expr = field.isin(values)
            return (field.is_valid() & ~expr) if negate else expr  # null is in no list, nor out of one
        if negate:
            self.fail("'in' after 'not'")
        if self.i >= len(self.toks) or self.toks[self.i][1] not in _COMPARE or self.toks[self.i][0] != "op":
            self.fail("a comparison (==, !=, <, <=, >, >=, in, is null)")
        op = _COMPARE[self.toks[self.i][1]]
        self.i += 1
        return op(field, pc.scalar(self.literal()))


def parse_where(text: str) -> pc.Expression:
    """The `--where` text as a pyarrow expression, e.g. `label == 3 and year >= 2010`,
    `tag in ('cat', 'dog')`, `not (score < 0.5) or note is null` (grammar in the module docstring)."""
    if not isinstance(text, str):
        raise InvalidInputError(f"--where must be text, got {type(text).__name__}")
    return _Parser(text).parse()
