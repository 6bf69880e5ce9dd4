"""Free text -> bag-of-words row -> code -> index, by hand-computed vectors and through the command line."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from hashsearch.cli import main
from hashsearch.errors import CorruptIndexError, InvalidInputError
from hashsearch.textquery import Vocabulary, model_vocabulary, text_vector

WORDS = ("sunset", "beach", "clouds", "dog", "360°", "d80")


def test_tokens_lowercase_split_at_non_alphanumerics_and_keep_known_words_whole():
    vocab = Vocabulary(WORDS)
    assert vocab.tokens("Sunset,BEACH & clouds!") == ["sunset", "beach", "clouds"]
    assert vocab.tokens("my d80 at 360° (nikon-d80)") == ["my", "d80", "at", "360°", "nikon", "d80"]
    assert vocab.tokens("  \t\n") == [] and vocab.tokens("") == []
    assert vocab.tokens("über_café") == ["über", "café"]


def test_binary_and_count_vectors_by_hand():
    row, unknown = Vocabulary(WORDS).vectors(["sunset beach sunset zebra dog zebra"])
    assert row.tolist() == [[1, 1, 0, 1, 0, 0]] and row.dtype == np.float32 and unknown == ["zebra"]
    counts, _ = Vocabulary(WORDS, binary=False).vectors(["sunset beach sunset", "", "d80 D80 d80"])
    assert counts.tolist() == [[2, 1, 0, 0, 0, 0], [0] * 6, [0, 0, 0, 0, 0, 3]]


def test_from_training_records_binary_or_counts_and_refuses_non_bag_of_words():
    assert Vocabulary.from_training(WORDS, np.eye(6)).binary is True
    assert Vocabulary.from_training(WORDS, 2 * np.eye(6)).binary is False
    with pytest.raises(InvalidInputError, match="negative or fractional"):
        Vocabulary.from_training(WORDS, np.full((2, 6), 0.5))
    with pytest.raises(InvalidInputError, match="negative or fractional"):
        Vocabulary.from_training(WORDS, -np.eye(6))
    with pytest.raises(InvalidInputError, match="6 words but the texts have 5 columns"):
        Vocabulary.from_training(WORDS, np.eye(5))


def test_bad_vocabularies_are_named():
    with pytest.raises(InvalidInputError, match="repeats 'dog'"):
        Vocabulary(("dog", "cat", "dog"))
    with pytest.raises(InvalidInputError, match="non-empty strings, got ' '"):
        Vocabulary(("dog", " "))
    with pytest.raises(InvalidInputError, match="at least one word"):
        Vocabulary(())


def test_saved_vocabulary_is_checked_against_the_text_width():
    doc = Vocabulary(WORDS).to_json()
    assert Vocabulary.from_json(doc, 6, "m") == Vocabulary(WORDS)
    with pytest.raises(CorruptIndexError, match="m: the saved text vocabulary has 6 words but the text network takes 7"):
        Vocabulary.from_json(doc, 7, "m")
    with pytest.raises(CorruptIndexError, match="'binary' is 'yes'"):
        Vocabulary.from_json({**doc, "binary": "yes"}, 6, "m")
    with pytest.raises(CorruptIndexError, match="unreadable"):
        Vocabulary.from_json({"words": ["a", "a"], "binary": True}, 2, "m")


class _TextModel:
    def __init__(self, vocab):
        self.text_vocabulary_ = vocab

    def encode_text(self, rows):
        return rows


def test_text_vector_refuses_unknown_only_empty_and_vocabulary_less_models():
    model = _TextModel(Vocabulary(WORDS))
    row, unknown = text_vector(model, "Dog on the beach")
    assert row.tolist() == [[0, 1, 0, 1, 0, 0]] and unknown == ["on", "the"]
    with pytest.raises(InvalidInputError, match=r"none of its words \(zebra, xylophone\) are in the model's 6-word"):
        text_vector(model, "zebra xylophone")
    with pytest.raises(InvalidInputError, match="it has no words"):
        text_vector(model, " ,.; ")
    with pytest.raises(InvalidInputError, match="trained without a text vocabulary"):
        model_vocabulary(_TextModel(None))
    with pytest.raises(InvalidInputError, match="has no text side"):
        model_vocabulary(object())


# ---------------------------------------------------------------- end to end, through the command line

THEMES = {"beach": ("sunset", "beach", "sea", "sand"), "pets": ("dog", "cat", "puppy", "fur"),
          "city": ("street", "car", "building", "night"), "food": ("cake", "dinner", "cheese", "bread")}
VOCAB = tuple(w for words in THEMES.values() for w in words) + ("explore", "nikon")


def write_tags(path, n: int = 160, seed: int = 0):
    """A tiny tag data set (.npz with T, L and tag_vocab): each item has one theme, two or three of
    its words and sometimes a theme-free word; returns the themes of the rows."""
    rng = np.random.default_rng(seed)
    themes = rng.integers(0, len(THEMES), n)
    texts = np.zeros((n, len(VOCAB)), dtype=np.uint8)
    for i, t in enumerate(themes):
        texts[i, rng.choice(4, size=rng.integers(2, 4), replace=False) + 4 * t] = 1
        if rng.random() < 0.5:
            texts[i, rng.choice([16, 17])] = 1
    labels = np.eye(len(THEMES), dtype=np.uint8)[themes]
    np.savez(path, T=texts, L=labels, tag_vocab=np.array(VOCAB))
    return themes


def ok(result):
    assert result.exit_code == 0, result.output
    return result


def one_line_error(result, *needles):
    lines = result.output.strip().splitlines()
    assert result.exit_code == 1 and len(lines) == 1 and lines[0].startswith("error: "), result.output
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


@pytest.fixture(scope="module")
def tag_index(tmp_path_factory):
    """train (tag-only DCMH, vocabulary recorded) -> encode texts -> build-index, through the CLI."""
    root = tmp_path_factory.mktemp("tags")
    write_tags(root / "tiny.npz")
    runner = CliRunner()
    trained = ok(runner.invoke(main, ["train", "--data", str(root / "tiny.npz"), "--method", "dcmh", "--nbits", "16",
                                      "--epochs", "8", "--out", str(root / "models")]))
    assert "with its 18-word text vocabulary" in trained.output
    model = root / "models" / "tiny" / "DCMH-16"
    ok(runner.invoke(main, ["encode", str(model), "--data", str(root / "tiny.npz"), "--modality", "text",
                            "--split", "all", "--out", str(root / "codes.parquet")]))
    ok(runner.invoke(main, ["build-index", str(root / "codes.parquet"), "--out", str(root / "index")]))
    return root, model


def test_query_by_text_names_results_with_their_tags_and_labels(tag_index):
    root, model = tag_index
    runner = CliRunner()
    done = ok(runner.invoke(main, ["query", str(root / "index"), "--text", "Sunset on the BEACH", "--model", str(model),
                                   "--topk", "10", "--show", str(root / "grid.png")]))
    answer = json.loads(done.stdout.splitlines()[0])
    assert answer["query"] == "Sunset on the BEACH" and len(answer["results"]) == 10
    assert "note: not in the model's vocabulary, ignored: on, the" in done.output
    hits = answer["results"]
    assert all({"id", "distance", "labels", "tags"} <= set(r) for r in hits)
    assert [r["distance"] for r in hits] == sorted(r["distance"] for r in hits)
    beach = sum(set(r["tags"]) <= set(THEMES["beach"]) | {"explore", "nikon"} for r in hits)
    assert beach >= 9, hits  # the beach items; 1 in 4 by chance
    assert (root / "grid.png").stat().st_size > 10_000
    radius = ok(runner.invoke(main, ["query", str(root / "index"), "--text", "dog", "--model", str(model),
                                     "--radius", "0"]))
    found = json.loads(radius.stdout)["results"]
    assert found and all(r["distance"] == 0 for r in found)
    none = ok(runner.invoke(main, ["query", str(root / "index"), "--text", "dog", "--model", str(model), "--topk", "5",
                                   "--where", "tags is null"]))  # every item has tags: the filter admits none
    assert json.loads(none.stdout)["results"] == []


def test_query_by_text_errors_are_one_line(tag_index, tmp_path):
    root, model = tag_index
    runner = CliRunner()
    index = str(root / "index")
    one_line_error(runner.invoke(main, ["query", index, "--text", "zebra xylophone", "--model", str(model), "--topk", "3"]),
                   "none of its words (zebra, xylophone) are in the model's 18-word vocabulary")
    one_line_error(runner.invoke(main, ["query", index, "--text", "", "--model", str(model), "--topk", "3"]), "no words")
    one_line_error(runner.invoke(main, ["query", index, "--text", "dog", "--topk", "3"]), "--text WORDS with --model")
    one_line_error(runner.invoke(main, ["query", index, str(root / "codes.parquet"), "--text", "dog", "--topk", "3"]),
                   "give QUERIES")
    one_line_error(runner.invoke(main, ["query", index, "--text", "dog", "--image", str(root / "tiny.npz"),
                                        "--model", str(model), "--topk", "3"]), "one of --image FILE and --text")
    one_line_error(runner.invoke(main, ["query", index, str(root / "codes.parquet"), "--topk", "3", "--show", "x.png"]),
                   "give QUERIES")
    one_line_error(runner.invoke(main, ["query", index, "--text", "dog", "--model", str(model), "--topk", "3",
                                        "--out", str(tmp_path / "r.jsonl")]), "--out, --format, --column and --explain")
    # a model without a vocabulary, and one without a text side
    from hashsearch.models.baselines import ITQ
    from hashsearch.models.dcmh import DCMH

    rng = np.random.default_rng(1)
    y, labels = rng.random((40, 6)), rng.integers(0, 2, 40)
    DCMH(16, epochs=1, progress=False).fit(None, y, labels).save(tmp_path / "plain")
    one_line_error(runner.invoke(main, ["query", index, "--text", "dog", "--model", str(tmp_path / "plain"),
                                        "--topk", "3"]), "trained without a text vocabulary")
    ITQ(16).fit(y).save(tmp_path / "itq")
    one_line_error(runner.invoke(main, ["query", index, "--text", "dog", "--model", str(tmp_path / "itq"),
                                        "--topk", "3"]), "has no text side")
    DCMH(8, epochs=1, progress=False).fit(None, y, labels).save(tmp_path / "narrow")
    one_line_error(runner.invoke(main, ["query", index, "--text", "dog", "--model", str(tmp_path / "narrow"),
                                        "--topk", "3"]), "8-bit codes but the index holds 16-bit codes")


@pytest.mark.slow  # a DCMH on frozen MobileNet features of 12 small images: ~20 s on a loaded 2-core machine
def test_image_files_found_by_words_end_to_end(tmp_path):
    from PIL import Image

    from hashsearch.datasets import data_root
    from hashsearch.models.backbones import MOBILENET_FILE
    from hashsearch.imagequery import read_images
    from hashsearch.models.dcmh import DCMH
    from test_imagequery import COLOURS, write_images

    if not (data_root() / MOBILENET_FILE).is_file():
        pytest.skip("the shared MobileNet v1 weights are missing")
    made = write_images(tmp_path / "imgs", per_colour=6, size=24)
    paths = sorted(made)
    words = ("red", "fire", "warm", "blue", "sea", "cold")
    rng = np.random.default_rng(0)
    texts = np.zeros((len(paths), len(words)), np.float32)
    for i, path in enumerate(paths):  # "red" or "blue" and one of its two companions
        first = 0 if made[path] == "red" else 3
        texts[i, [first, first + 1 + rng.integers(0, 2)]] = 1
    labels = np.array([list(COLOURS).index(made[p]) for p in paths])
    DCMH(16, image_net="mobilenet_v1", epochs=8, batch_size=4, text_hidden=64, label_codes=1.0, optimizer="adam",
         lr=(1e-2, 1e-3), progress=False).fit(read_images(paths, (32, 32)), texts, labels,
                                               text_vocabulary=words).save(tmp_path / "model")
    runner = CliRunner()
    codes, index, grid = tmp_path / "codes.parquet", tmp_path / "index", tmp_path / "grid.png"
    ok(runner.invoke(main, ["encode", str(tmp_path / "model"), "--images", str(tmp_path / "imgs"), "--out", str(codes)]))
    ok(runner.invoke(main, ["build-index", str(codes), "--out", str(index)]))
    for query, colour in (("Red fire!", "red"), ("cold blue sea", "blue")):
        done = ok(runner.invoke(main, ["query", str(index), "--text", query, "--model", str(tmp_path / "model"),
                                       "--topk", "3", "--show", str(grid)]))
        hits = json.loads(done.stdout.splitlines()[0])["results"]
        assert len(hits) == 3 and all({"id", "distance", "file"} <= set(r) for r in hits)
        assert [made[Path(r["file"])] for r in hits] == [colour] * 3, hits
    with Image.open(grid) as png:
        assert png.size[0] > 300
