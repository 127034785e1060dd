"""Tests for lesson 06: roi_pool (reference and twin)."""
import importlib

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st

from mrcnn_edu import ops, reference as ref
from tests.test_roi_align import IMAGES, TWINS_ONLY, random_rois


def five_by_five():
    return np.arange(25.0).reshape(1, 1, 5, 5)  # value = 5 * row + col


# --- hand examples from lesson 06 -----------------------------------------------------------

def test_hand_example():
    # box [0, 4] -> 5 cells inclusive -> bins of 2.5: [0, 3) and [2, 5) on each axis
    out = ref.roi_pool(five_by_five(), np.array([[0.0, 0, 0, 4, 4]]), 2, 1.0)
    assert out[0, 0].tolist() == [[12.0, 14.0], [22.0, 24.0]]


def test_the_665_pixel_object_at_stride_32():
    # 665 / 32 = 20.78 cells; the kernel rounds it to 21 and counts 22 cells (the "+1"):
    # bins of 22 / 7 = 3.14 cells, so bin p covers [floor(3.14 p), ceil(3.14 (p + 1)))
    feats = np.zeros((1, 1, 1, 40))
    feats[0, 0, 0] = np.arange(40.0)
    out = ref.roi_pool(feats, np.array([[0.0, 0, 0, 665, 0]]), (1, 7), 1 / 32)
    his = [int(np.ceil((p + 1) * 22 / 7)) for p in range(7)]
    assert out[0, 0, 0].tolist() == [float(h - 1) for h in his]  # the max of a ramp is its last cell


def test_rounding_is_half_away_from_zero():
    feats = np.zeros((1, 1, 1, 8))
    feats[0, 0, 0] = np.arange(8.0)
    # 2.5 rounds to 3 (numpy's round-half-even would give 2): one cell, [3, 3]
    out = ref.roi_pool(feats, np.array([[0.0, 2.5, 0, 2.5, 0]]), 1, 1.0)
    assert out[0, 0, 0, 0] == 3.0
    twin = ops.roi_pool(torch.tensor(feats), torch.tensor([[0.0, 2.5, 0, 2.5, 0]]), 1, 1.0)
    assert twin[0, 0, 0, 0] == 3.0


def test_bins_off_the_map_are_zero_and_empty_lists():
    feats = -np.ones((1, 2, 4, 4))  # all negative: a 0 can only come from an empty bin
    out = ref.roi_pool(feats, np.array([[0.0, 2, 2, 9, 9]]), 4, 1.0)
    assert out[0, 0, 0, 0] == -1 and out[0, 0, 3, 3] == 0
    assert ref.roi_pool(feats, np.zeros((0, 5)), (2, 3), 1.0).shape == (0, 2, 2, 3)
    assert ops.roi_pool(torch.tensor(feats), torch.zeros(0, 5), (2, 3), 1.0).shape == (0, 2, 2, 3)
    with pytest.raises(ValueError, match=r"\(K, 5\)"):
        ref.roi_pool(feats, np.zeros((1, 4)), 2, 1.0)


# --- properties ------------------------------------------------------------------------------

@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2**32 - 1), st.floats(0.1, 2.0))
def test_values_come_from_the_map_and_grow_with_it(seed, scale):
    rng = np.random.default_rng(seed)
    feats = rng.normal(size=(2, 2, 7, 9))
    rois = random_rois(rng, 8, 2, extent=9 / scale)
    out = ref.roi_pool(feats, rois, (3, 2), scale)
    allowed = np.append(feats.ravel(), 0.0)
    assert np.isin(out, allowed).all()  # every output is a map value (or 0 for an empty bin)
    bigger = ref.roi_pool(feats + np.abs(rng.normal(size=feats.shape)), rois, (3, 2), scale)
    assert (bigger[out != 0] >= out[out != 0]).all()  # monotone in the features


# --- reference vs twin ------------------------------------------------------------------------

@pytest.mark.parametrize("scale", [1.0, 0.5, 0.125])
def test_twin_matches_reference(scale):
    rng = np.random.default_rng(int(scale * 8))
    feats = rng.normal(size=(2, 3, 13, 11))
    rois = random_rois(rng, 80, 2, extent=13 / scale)
    for size in ((7, 7), (2, 5), 1, (14, 14)):
        expected = ref.roi_pool(feats, rois, size, scale)
        got = ops.roi_pool(torch.tensor(feats), torch.tensor(rois), size, scale)
        np.testing.assert_array_equal(got.numpy(), expected)


def test_twin_float32_and_chunking(monkeypatch):
    twin = importlib.import_module("mrcnn_edu.ops.roi_align")
    rng = np.random.default_rng(2)
    feats = rng.normal(size=(1, 4, 20, 20)).astype(np.float32)
    rois = random_rois(rng, 40, 1, extent=20.0).astype(np.float32)
    expected = ref.roi_pool(feats, rois, 3, 1.0)
    monkeypatch.setattr(twin, "CHUNK_ELEMENTS", 300)  # force many small chunks
    got = ops.roi_pool(torch.tensor(feats), torch.tensor(rois), 3, 1.0)
    assert got.dtype == torch.float32
    np.testing.assert_array_equal(got.numpy(), expected)


@TWINS_ONLY
def test_gradient_goes_to_the_maximum():
    feats = torch.tensor(five_by_five(), requires_grad=True)
    ops.roi_pool(feats, torch.tensor([[0.0, 0, 0, 4, 4]]), 2, 1.0).sum().backward()
    expected = np.zeros((5, 5))
    expected[[2, 2, 4, 4], [2, 4, 2, 4]] = 1  # the cells holding 12, 14, 22, 24
    np.testing.assert_array_equal(feats.grad[0, 0].numpy(), expected)


@TWINS_ONLY
def test_gradcheck():
    rng = np.random.default_rng(4)
    f = torch.tensor(rng.normal(size=(1, 2, 6, 7)), requires_grad=True)
    rois = torch.tensor(random_rois(rng, 6, 1, extent=7.0))
    assert torch.autograd.gradcheck(lambda x: ops.roi_pool(x, rois, 2, 1.0), (f,))


# --- end to end: RoIPool loses more of a real mask than RoIAlign --------------------------------

def test_roi_pool_quantisation_costs_mask_iou_on_real_masks():
    from mrcnn_edu.data import CocoDataset, resolve_data_root
    ds = CocoDataset(resolve_data_root(), "val2017")
    stride, ious = 4, {"align": [], "pool": []}
    for i in range(IMAGES - 1):
        target = ds.load_target(i)
        masks, boxes = target["masks"].numpy().astype(np.float64), target["boxes"].numpy()
        G, H, W = masks.shape
        h, w = H // stride, W // stride
        cells = masks[:, :h * stride, :w * stride].reshape(G, h, stride, w, stride).mean((2, 4))
        rois = np.concatenate([np.arange(G)[:, None], boxes], 1)
        small = {"align": ref.roi_align(cells[:, None], rois, 28, 1 / stride, 2)[:, 0],
                 "pool": ref.roi_pool(cells[:, None], rois, 28, 1 / stride)[:, 0]}
        for name, pooled in small.items():
            back = ref.paste_masks(pooled, boxes, (H, W))
            inter, union = (back & (masks > 0)).sum((1, 2)), (back | (masks > 0)).sum((1, 2))
            ious[name] += list(inter / np.maximum(union, 1))
    assert np.mean(ious["align"]) > np.mean(ious["pool"]) + 0.05


@pytest.mark.parametrize("dtype,reaches", [(np.float32, False), (np.float64, True)])
def test_bin_edges_are_computed_in_the_maps_precision(dtype, reaches):
    """7 bins over 58 cells: the last bin ends at ceil(7 * (58 / 7)), which is 58 in float32 but
    59 in float64 (7 * (58 / 7) = 58.00000000000001). torchvision's kernel works in the map's
    dtype, so only a float64 map's last bin reaches cell 58 (checked against it when written)."""
    feats = np.zeros((1, 1, 1, 60), dtype)
    feats[0, 0, 0, 58] = 5.0
    rois = np.array([[0, 0, 0, 57, 0]], dtype)
    expected = [0.0] * 6 + [5.0 if reaches else 0.0]
    assert ref.roi_pool(feats, rois, (1, 7), 1.0)[0, 0, 0].tolist() == expected
    got = ops.roi_pool(torch.tensor(feats), torch.tensor(rois), (1, 7), 1.0)
    assert got[0, 0, 0].tolist() == expected
