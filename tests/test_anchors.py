"""Tests for lesson 02: generate_anchors (reference and twin)."""
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st

from mrcnn_edu import ops, reference as ref


# --- hand examples from lesson 02 -----------------------------------------------------------

def test_count_for_1024_over_p2_p6():
    levels = ref.generate_anchors((1024, 1024))
    assert [len(a) for a in levels] == [196608, 49152, 12288, 3072, 768]
    assert sum(len(a) for a in levels) == 261888


def test_hand_example_square_anchors_on_a_2x2_grid():
    (anchors,) = ref.generate_anchors((8, 8), strides=(4,), sizes=(32,), aspect_ratios=(1.0,))
    # centres at (j * 4, i * 4), row by row; each box 32 x 32
    assert anchors.tolist() == [[-16, -16, 16, 16], [-12, -16, 20, 16],
                                [-16, -12, 16, 20], [-12, -12, 20, 20]]


def test_hand_example_ratios_of_one_cell():
    (anchors,) = ref.generate_anchors((1, 1), strides=(16,), sizes=(32,), aspect_ratios=(0.5, 1.0, 2.0))
    half = 16 * math.sqrt(2)  # ratio 0.5: w = 32 * sqrt(2), h = 32 / sqrt(2)
    np.testing.assert_allclose(anchors, [[-half, -half / 2, half, half / 2],
                                         [-16, -16, 16, 16],
                                         [-half / 2, -half, half / 2, half]], rtol=1e-15)


def test_location_major_order_and_non_divisible_size():
    h, w, stride, ratios = 50, 70, 16, (0.5, 1.0, 2.0)
    (anchors,) = ref.generate_anchors((h, w), strides=(stride,), sizes=(64,), aspect_ratios=ratios)
    rows, cols = math.ceil(h / stride), math.ceil(w / stride)  # 4 x 5 cells
    grid = anchors.reshape(rows, cols, len(ratios), 4)  # (h, w, A, 4): location-major
    centres = (grid[..., :2] + grid[..., 2:]) / 2  # (h, w, A, 2)
    ys, xs = np.meshgrid(np.arange(rows) * stride, np.arange(cols) * stride, indexing="ij")
    np.testing.assert_allclose(centres[..., 0], np.repeat(xs[..., None], 3, axis=2), atol=1e-12)
    np.testing.assert_allclose(centres[..., 1], np.repeat(ys[..., None], 3, axis=2), atol=1e-12)


def test_rejects_bad_config():
    with pytest.raises(ValueError, match="one size per stride"):
        ref.generate_anchors((64, 64), strides=(4, 8), sizes=(32,))
    with pytest.raises(ValueError, match=r"image_size must be \(H, W\)"):
        ref.generate_anchors((64,))
    with pytest.raises(ValueError, match="one size per stride"):
        ops.generate_anchors((64, 64), strides=(4, 8), sizes=(32,))


def test_empty_image_gives_empty_levels():
    for levels in (ref.generate_anchors((0, 0)), ops.generate_anchors((0, 0))):
        assert all(tuple(a.shape) == (0, 4) for a in levels)


# --- properties -----------------------------------------------------------------------------

@settings(max_examples=40, deadline=None)
@given(st.integers(1, 200), st.integers(1, 200), st.sampled_from([4, 8, 16, 32]),
       st.integers(8, 300), st.lists(st.floats(0.2, 5.0), min_size=1, max_size=4))
def test_area_ratio_and_count(h, w, stride, size, ratios):
    (anchors,) = ref.generate_anchors((h, w), strides=(stride,), sizes=(size,), aspect_ratios=ratios)
    assert anchors.shape == (math.ceil(h / stride) * math.ceil(w / stride) * len(ratios), 4)
    widths, heights = anchors[:, 2] - anchors[:, 0], anchors[:, 3] - anchors[:, 1]
    np.testing.assert_allclose(widths * heights, size ** 2, rtol=1e-12)  # area = size^2
    np.testing.assert_allclose(heights / widths, np.tile(ratios, len(anchors) // len(ratios)),
                               rtol=1e-12)  # aspect ratio = h / w


@settings(max_examples=20, deadline=None)
@given(st.integers(1, 300), st.integers(1, 300))
def test_bigger_image_extends_the_grid(h, w):
    """Anchors of an image are those of a bigger image restricted to its cells (no re-centring)."""
    (small,) = ref.generate_anchors((h, w), strides=(32,), sizes=(64,), aspect_ratios=(1.0,))
    (big,) = ref.generate_anchors((h + 32, w + 32), strides=(32,), sizes=(64,), aspect_ratios=(1.0,))
    rows, cols = math.ceil(h / 32), math.ceil(w / 32)
    big = big.reshape(rows + 1, cols + 1, 4)[:rows, :cols].reshape(-1, 4)
    np.testing.assert_array_equal(small, big)


# --- reference vs twin ----------------------------------------------------------------------

@pytest.mark.parametrize("image_size", [(1024, 1024), (800, 1333), (37, 91)])
def test_twin_matches_reference_float64(image_size):
    want = ref.generate_anchors(image_size, aspect_ratios=(0.5, 1.0, 2.0, 3.0))
    got = ops.generate_anchors(image_size, aspect_ratios=(0.5, 1.0, 2.0, 3.0), dtype=torch.float64)
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert g.dtype == torch.float64
        np.testing.assert_allclose(g.numpy(), w, rtol=1e-15, atol=1e-12)


def test_twin_float32_default_and_device():
    levels = ops.generate_anchors((64, 64), device="cpu")
    assert all(a.dtype == torch.float32 and a.device.type == "cpu" for a in levels)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_twin_on_cuda():
    got = ops.generate_anchors((128, 96), device="cuda")
    want = ref.generate_anchors((128, 96))
    for g, w in zip(got, want):
        np.testing.assert_allclose(g.cpu().numpy(), w, atol=1e-4)
