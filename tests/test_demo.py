"""`hashsearch demo`, the main job: arguments checked first, results printed with class names, MAPs
that match the metrics module."""
from __future__ import annotations

import re

import numpy as np
import pytest
from click.testing import CliRunner

from hashsearch import demo
from hashsearch.cli import main
from hashsearch.datasets import synthetic_paired
from hashsearch.errors import InvalidInputError


@pytest.mark.parametrize("kwargs, message", [
    ({"nbits": 12}, "--nbits: nbits must be a multiple of 8"),
    ({"epochs": 0}, "--epochs must be a positive integer"),
    ({"k": 0}, "--k must be a positive integer"),
])
def test_arguments_are_checked_before_any_data(monkeypatch, kwargs, message):
    monkeypatch.setattr(demo, "demo_dataset", lambda *a: pytest.fail("data read before the arguments were checked"))
    with pytest.raises(InvalidInputError, match=message):
        demo.run_demo(**kwargs)


def test_demo_prints_class_names_and_the_maps(monkeypatch):
    """A small named synthetic set: both example queries list k hits by class name, and the MAP line
    agrees with the returned values."""
    names = ("cat", "dog", "bird", "fish")

    def small(data, seed):
        ds = synthetic_paired(n=300, n_classes=4, image_dim=16, text_dim=8, max_labels=1, noise=0.5, seed=seed)
        ds.label_names = names
        return ds

    monkeypatch.setattr(demo, "demo_dataset", small)
    lines = []
    result = demo.run_demo(nbits=16, epochs=2, k=3, progress=False, echo=lines.append)
    text = "\n".join(lines)
    assert "SYNTHETIC" in lines[0] and len(lines) == 1 + 1 + 2 * (1 + 3) + 1, text
    for title in ("text -> image", "image -> text"):
        block = lines[lines.index(next(line for line in lines if line.startswith(title))):][:4]
        assert re.search(r"labels: (cat|dog|bird|fish)$", block[0])
        assert all(re.search(r"hamming +\d+  labels: (cat|dog|bird|fish)  (relevant|-)$", line) for line in block[1:])
    maps = re.search(r"text->image (\d\.\d{3})  image->text (\d\.\d{3})", lines[-1])
    assert maps and float(maps[1]) == pytest.approx(result["t2i_map"], abs=5e-4)
    assert float(maps[2]) == pytest.approx(result["i2t_map"], abs=5e-4)
    assert 0.25 < result["t2i_map"] <= 1 and 0.25 < result["i2t_map"] <= 1  # above chance for 4 classes


def test_label_text_names_or_numbers():
    row = np.array([0, 1, 0, 1], np.uint8)
    assert demo.label_text(row, ("a", "b", "c", "d")) == "b, d"
    assert demo.label_text(row, None) == "1, 3"
    assert demo.label_text(np.zeros(4, np.uint8), None) == "none"


def test_cli_demo_refuses_a_bad_width_in_one_line():
    result = CliRunner().invoke(main, ["demo", "--nbits", "12"])
    assert result.exit_code == 1 and result.stderr.strip().count("\n") == 0
    assert "--nbits" in result.stderr and "Traceback" not in result.output
