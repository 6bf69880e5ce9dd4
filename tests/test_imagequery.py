"""Image files -> codes -> index -> query by image, through the command line, with a picture grid."""
from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from hashsearch.errors import InvalidInputError
from hashsearch.imagequery import image_paths, pixel_size, read_images

COLOURS = {"red": (220, 30, 30), "blue": (30, 30, 220)}


def write_images(folder, per_colour: int = 4, size: int = 20):
    """Noisy red and blue squares as PNG and JPEG files; returns {path: colour}."""
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    made = {}
    for name, rgb in COLOURS.items():
        for k in range(per_colour):
            pixels = np.clip(np.array(rgb) + rng.normal(0, 20, (size, size, 3)), 0, 255).astype(np.uint8)
            path = folder / f"{name}_{k}.{'png' if k % 2 else 'jpg'}"
            Image.fromarray(pixels).save(path)
            made[path] = name
    return made


def test_image_paths_folder_glob_file_and_none(tmp_path):
    made = write_images(tmp_path / "imgs")
    (tmp_path / "imgs" / "notes.txt").write_text("not an image")
    assert image_paths(tmp_path / "imgs") == sorted(made)
    assert image_paths(str(tmp_path / "imgs" / "*.png")) == sorted(p for p in made if p.suffix == ".png")
    one = sorted(made)[0]
    assert image_paths(one) == [one]
    with pytest.raises(InvalidInputError, match="no image files"):
        image_paths(str(tmp_path / "nothing*.jpg"))


def test_read_images_resizes_and_names_bad_files(tmp_path):
    made = write_images(tmp_path)
    x = read_images(sorted(made)[:2], (8, 12))
    assert x.shape == (2, 3, 8, 12) and x.dtype == np.float32 and 0 <= x.min() and x.max() <= 1
    assert x[:, 2].mean() > x[:, 0].mean()  # blue files sort first
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"not a jpeg")
    with pytest.raises(InvalidInputError, match="broken.jpg: not a readable image"):
        read_images([bad], (8, 8))


def test_pixel_size_rejects_feature_models():
    class FeatureModel:
        input_shape = (1024,)

    with pytest.raises(InvalidInputError, match="not RGB images"):
        pixel_size(FeatureModel())


@pytest.mark.slow  # trains a small pixel DPSH on MobileNet (random init): minutes on a loaded 2-core machine
def test_encode_index_query_by_image_end_to_end(tmp_path):
    from hashsearch.cli import main
    from hashsearch.models.dpsh import DPSH

    made = write_images(tmp_path / "imgs")
    paths = sorted(made)
    x = read_images(paths, (32, 32))
    labels = np.array([list(COLOURS).index(made[p]) for p in paths])
    options = {"pretrained": False, "resolution": 32, "trainable_blocks": 0}
    DPSH(16, epochs=3, batch_size=4, verbose=False, image_net="mobilenet_v1", image_net_options=options,
         seed=0).fit(x, labels).save(tmp_path / "model")
    runner = CliRunner()
    codes, index, grid = tmp_path / "codes.parquet", tmp_path / "index", tmp_path / "grid.png"
    done = runner.invoke(main, ["encode", str(tmp_path / "model"), "--images", str(tmp_path / "imgs"), "--out", str(codes)])
    assert done.exit_code == 0, done.output
    assert runner.invoke(main, ["build-index", str(codes), "--out", str(index)]).exit_code == 0
    query = paths[0]
    done = runner.invoke(main, ["query", str(index), "--image", str(query), "--model", str(tmp_path / "model"),
                                "--topk", "3", "--show", str(grid)])
    assert done.exit_code == 0, done.output
    answer = json.loads(done.stdout.splitlines()[0])
    assert [r["file"] for r in answer["results"]][0] == str(query.resolve())  # the file itself, at distance 0
    assert answer["results"][0]["distance"] == 0 and len(answer["results"]) == 3
    assert all({"id", "distance", "file"} <= set(r) for r in answer["results"])
    with Image.open(grid) as png:
        assert png.size[0] > 300
    bad = runner.invoke(main, ["query", str(index), "--image", str(query)])
    assert bad.exit_code != 0 and "--model" in bad.output
