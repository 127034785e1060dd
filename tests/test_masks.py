"""Tests for lesson 07: mask_targets, paste_masks (reference and twin)."""
import importlib

import numba
import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st

from mrcnn_edu import ops, reference as ref


# --- hand examples from lesson 07 -----------------------------------------------------------

def test_mask_targets_hand_example():
    gt = np.zeros((2, 10, 10), np.uint8)
    gt[0, 2:8, 2:8] = 1  # a 6 x 6 square
    gt[1, :, :5] = 1  # the left half
    rois = np.array([[2.0, 2, 8, 8], [2.0, 2, 8, 8], [0, 0, 10, 10]])
    targets = ref.mask_targets(gt, np.array([0, 1, 1]), rois, size=4)
    assert targets.dtype == np.float64 and set(np.unique(targets)) <= {0.0, 1.0}
    assert (targets[0] == 1).all()  # the RoI is the square: all on
    assert targets[1].tolist() == [[1, 1, 0, 0]] * 4  # x < 5 is the left half of [2, 8]
    assert targets[2].tolist() == [[1, 1, 0, 0]] * 4


def test_paste_hand_example():
    # box [2.0, 3.0, 6.0, 8.0] in a 10 x 10 image: pixel centres x + 0.5 in [2, 6) and y + 0.5 in [3, 8)
    on = ref.paste_masks(np.ones((1, 3, 3)), np.array([[2.0, 3, 6, 8]]), (10, 10))[0]
    expected = np.zeros((10, 10), bool)
    expected[3:8, 2:6] = True
    np.testing.assert_array_equal(on, expected)
    # the left mask column on, the rest off: u = (x + 0.5 - 2) / 4 * 3 - 0.5 is 0.0625 for x = 2
    # (value 0.94), 0.8125 for x = 3 (0.19): only column x = 2 reaches 0.5
    left = np.zeros((1, 3, 3))
    left[0, :, 0] = 1
    on = ref.paste_masks(left, np.array([[2.0, 3, 6, 8]]), (10, 10))[0]
    assert np.flatnonzero(on.any(0)).tolist() == [2]


def test_rectangle_round_trip_is_exact():
    gt = np.zeros((1, 40, 50), np.uint8)
    gt[0, 7:31, 11:42] = 1
    box = np.array([[11.0, 7, 42, 31]])
    small = ref.mask_targets(gt, np.array([0]), box, 28)
    np.testing.assert_array_equal(ref.paste_masks(small, box, (40, 50)), gt.astype(bool))


def test_empty_and_validation():
    assert ref.mask_targets(np.zeros((0, 5, 5)), np.zeros(0, int), np.zeros((0, 4)), 7).shape == (0, 7, 7)
    got = ops.mask_targets(torch.zeros(0, 5, 5), torch.zeros(0, dtype=torch.long), torch.zeros(0, 4), 7)
    assert got.shape == (0, 7, 7) and got.dtype == torch.float32
    assert ref.paste_masks(np.zeros((0, 28, 28)), np.zeros((0, 4)), (6, 8)).shape == (0, 6, 8)
    got = ops.paste_masks(torch.zeros(0, 28, 28), torch.zeros(0, 4), (6, 8))
    assert got.shape == (0, 6, 8) and got.dtype == torch.bool
    with pytest.raises(ValueError, match=r"\(K, 4\)"):
        ref.mask_targets(np.zeros((1, 5, 5)), np.zeros(1, int), np.zeros((1, 5)))
    with pytest.raises(ValueError, match=r"\(1, 4\)"):
        ref.paste_masks(np.zeros((1, 28, 28)), np.zeros((2, 4)), (6, 8))


# --- properties ------------------------------------------------------------------------------

@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2**32 - 1), st.floats(0.05, 0.95))
def test_paste_is_inside_the_box_and_monotone_in_threshold(seed, threshold):
    rng = np.random.default_rng(seed)
    masks = rng.uniform(size=(3, 5, 5))
    xy = rng.uniform(-5, 20, (3, 2))
    boxes = np.concatenate([xy, xy + rng.uniform(0, 15, (3, 2))], 1)
    on = ref.paste_masks(masks, boxes, (20, 24), threshold)
    ys, xs = np.mgrid[:20, :24] + 0.5
    for k, (x1, y1, x2, y2) in enumerate(boxes):
        assert not (on[k] & ~((xs >= x1) & (xs < x2) & (ys >= y1) & (ys < y2))).any()
    assert (ref.paste_masks(masks, boxes, (20, 24), threshold + 0.04) <= on).all()


@settings(max_examples=30, deadline=None)
@given(st.integers(14, 30), st.integers(14, 30), st.integers(0, 10), st.integers(0, 10))
def test_whole_box_target_is_all_ones(w, h, x1, y1):
    # holds for boxes of at least M pixels; smaller ones are upsampled and lose their corners
    gt = np.zeros((1, 45, 45), np.uint8)
    gt[0, y1:y1 + h, x1:x1 + w] = 1
    box = np.array([[x1, y1, x1 + w, y1 + h]], np.float64)
    assert (ref.mask_targets(gt, np.array([0]), box, 14) == 1).all()


# --- reference vs twin ------------------------------------------------------------------------

def random_case(rng, k=30, size=(60, 70)):
    xy = rng.uniform(-10, 60, (k, 2))
    boxes = np.concatenate([xy, xy + np.exp(rng.uniform(-1, 4.5, (k, 2)))], 1)
    return boxes, rng.uniform(size=(k, 28, 28))


@pytest.mark.parametrize("seed", [0, 1])
def test_twins_match_reference(seed):
    rng = np.random.default_rng(seed)
    boxes, probs = random_case(rng)
    gt = (rng.uniform(size=(4, 60, 70)) > 0.4).astype(np.uint8)
    index = rng.integers(0, 4, len(boxes))
    expected = ref.mask_targets(gt, index, boxes, 28)
    got = ops.mask_targets(torch.tensor(gt), torch.tensor(index), torch.tensor(boxes), 28)
    np.testing.assert_array_equal(got.numpy(), expected)
    for threshold in (0.5, 0.2):
        expected = ref.paste_masks(probs, boxes, (60, 70), threshold)
        got = ops.paste_masks(torch.tensor(probs), torch.tensor(boxes), (60, 70), threshold)
        np.testing.assert_array_equal(got.numpy(), expected)


def test_paste_twin_in_chunks(monkeypatch):
    twin = importlib.import_module("mrcnn_edu.ops.masks")
    rng = np.random.default_rng(2)
    boxes, probs = random_case(rng, k=17)
    expected = ref.paste_masks(probs, boxes, (60, 70))
    monkeypatch.setattr(twin, "CHUNK_PIXELS", 60 * 70 * 3)  # three RoIs at a time
    got = ops.paste_masks(torch.tensor(probs), torch.tensor(boxes), (60, 70))
    np.testing.assert_array_equal(got.numpy(), expected)


# --- end to end: the real subset's masks survive 28 x 28 --------------------------------------

@pytest.mark.skipif(numba.config.DISABLE_JIT, reason="twins only: no numba kernel to run as Python")
def test_real_masks_round_trip_through_targets_and_paste():
    from mrcnn_edu.data import CocoDataset, resolve_data_root
    ds = CocoDataset(resolve_data_root(), "train2017")
    ious = []
    for i in range(3):
        target = ds.load_target(i)
        masks, boxes = target["masks"], target["boxes"]
        small = ops.mask_targets(masks, torch.arange(len(masks)), boxes, 28)
        back = ops.paste_masks(small, boxes, masks.shape[1:])
        gt = masks.bool()
        ious += ((back & gt).sum((1, 2)) / (back | gt).sum((1, 2)).clamp(min=1)).tolist()
    assert np.mean(ious) > 0.85


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("padded", [False, True])
def test_batch_mask_targets_are_each_images_targets(monkeypatch, dtype, padded):
    """Three images of different sizes (one without RoIs) in one call: bit for bit the targets
    `mask_targets` gives image by image, in the images' order, also with the GPU's padded
    sample groups."""
    twin = importlib.import_module("mrcnn_edu.ops.roi_align")  # the module, not the function
    monkeypatch.setattr(twin, "pad_groups", lambda device: padded)
    rng = np.random.default_rng(21)
    masks, matched, rois = [], [], []
    for (h, w), k in [((90, 130), 7), ((140, 70), 0), ((60, 60), 5)]:
        masks.append(torch.tensor(rng.random((3, h, w)) < 0.4, dtype=torch.uint8))
        xy = rng.uniform(0, min(h, w) / 2, (k, 2))
        boxes = np.concatenate([xy, xy + rng.uniform(2, min(h, w) / 2, (k, 2))], 1)
        rois.append(torch.tensor(boxes, dtype=dtype))
        matched.append(torch.tensor(rng.integers(0, 3, k)))
    got = ops.batch_mask_targets(masks, matched, rois, 14)
    want = torch.cat([ops.mask_targets(g, m, r, 14) for g, m, r in zip(masks, matched, rois)])
    assert got.shape == (12, 14, 14) and got.dtype == dtype
    assert torch.equal(got, want)
    assert 0 < got.mean() < 1  # targets of both kinds: the comparison is not of zeros
    empty = ops.batch_mask_targets(masks[1:2], matched[1:2], rois[1:2], 14)
    assert empty.shape == (0, 14, 14)


def test_twin_targets_of_degenerate_and_outside_rois_match_reference():
    """RoIs with no samples (zero width or height), RoIs off the mask and RoIs larger than it:
    the separable twin gives the reference's targets (all 0 where nothing is sampled)."""
    rng = np.random.default_rng(3)
    gt = (rng.uniform(size=(2, 40, 50)) > 0.3).astype(np.uint8)
    boxes = np.array([[10.0, 10, 10, 30],     # zero width: no samples
                      [5.0, 7, 25, 7],        # zero height
                      [60.0, 50, 90, 80],     # entirely beyond the mask
                      [-30.0, -20, 90, 70],   # larger than the mask on every side
                      [0.3, 0.7, 2.2, 1.9],   # smaller than a pixel's neighbourhood
                      [12.25, 3.5, 47.75, 38.5]])
    index = np.array([0, 1, 0, 1, 0, 1])
    expected = ref.mask_targets(gt, index, boxes, 14)
    got = ops.mask_targets(torch.tensor(gt), torch.tensor(index), torch.tensor(boxes), 14)
    np.testing.assert_array_equal(got.numpy(), expected)
    assert not expected[:3].any() and expected[3].any()
