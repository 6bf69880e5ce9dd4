"""The `hashsearch` command (installed as hashsearch.cli)."""
from __future__ import annotations

import functools
import sys

import click

from hashsearch.errors import HashsearchError


def one_line_errors(fn):
    """Turn expected failures into one clear line on stderr and exit status 1, never a traceback."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except (HashsearchError, ValueError, OSError, KeyError) as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(1)

    return wrapper


@click.group()
@click.version_option(package_name="hashsearch")
def main() -> None:
    """Learned binary codes and exact Hamming search."""


if __name__ == "__main__":
    main()
