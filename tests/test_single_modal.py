"""Shared parts of the single-modal deep hashers: training-batch augmentation."""
from __future__ import annotations

import torch

from hashsearch.models.single_modal import augment_batch


def candidates(image: torch.Tensor, pad: int) -> list[torch.Tensor]:
    """Every mirror (or not) and shift by up to `pad` of one (c, h, w) image, zero padded: loops."""
    c, h, w = image.shape
    out = []
    for view in (image, image.flip(-1)):
        padded = torch.zeros(c, h + 2 * pad, w + 2 * pad)
        padded[:, pad:pad + h, pad:pad + w] = view
        out += [padded[:, dy:dy + h, dx:dx + w] for dy in range(2 * pad + 1) for dx in range(2 * pad + 1)]
    return out


def test_each_augmented_item_is_a_mirrored_shift_of_its_input_and_all_kinds_occur():
    x = torch.rand(64, 3, 32, 32) + 0.1  # no zeros, so padding is told apart from content
    out = augment_batch(x, torch.Generator().manual_seed(0))
    assert out.shape == x.shape
    found = set()
    for item, image in zip(out, x):
        views = candidates(image, 4)
        match = [i for i, v in enumerate(views) if torch.equal(v, item)]
        assert match, "an output is no mirrored shift of its input"
        found.add(match[0])
    assert any(i >= 81 for i in found) and any(i < 81 for i in found)  # mirrored and not
    assert len(found) > 20  # many shifts


def test_small_maps_shift_by_one_cell_and_seeded_calls_repeat():
    x = torch.rand(16, 512, 6, 6) + 0.1
    a = augment_batch(x, torch.Generator().manual_seed(1))
    b = augment_batch(x, torch.Generator().manual_seed(1))
    assert torch.equal(a, b)
    for item, image in zip(a, x):
        assert any(torch.equal(v, item) for v in candidates(image, 1))
