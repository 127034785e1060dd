"""Tests for lesson 01: box_area, box_iou, clip_boxes, remove_small_boxes, expand_boxes
(reference and twin)."""
import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st
from hypothesis.extra.numpy import arrays

from mrcnn_edu import ops, reference as ref


def as_valid(raw):
    """Sort each box's corners so that x1 <= x2 and y1 <= y2. raw (N, 4) -> (N, 4)."""
    x1, x2 = np.minimum(raw[:, 0], raw[:, 2]), np.maximum(raw[:, 0], raw[:, 2])
    y1, y2 = np.minimum(raw[:, 1], raw[:, 3]), np.maximum(raw[:, 1], raw[:, 3])
    return np.stack([x1, y1, x2, y2], axis=1)


def boxes_st(max_n=8, integer=False):
    """Hypothesis strategy for valid (N, 4) float64 boxes; integer-valued ones make sums exact."""
    elements = (st.integers(-50, 50).map(float) if integer
                else st.floats(-1e3, 1e3, allow_nan=False, allow_subnormal=False))
    return st.integers(0, max_n).flatmap(
        lambda n: arrays(np.float64, (n, 4), elements=elements)).map(as_valid)


def random_boxes(rng, n, scale=100.0):
    xy = rng.uniform(0, scale, (n, 2))
    wh = rng.uniform(0, scale / 2, (n, 2))
    return np.concatenate([xy, xy + wh], axis=1)  # (n, 4)


# --- hand examples from lesson 01 -----------------------------------------------------------

def test_hand_example_from_lesson():
    a, b = np.array([[1.0, 1, 5, 4]]), np.array([[3.0, 2, 7, 6]])
    assert ref.box_area(a).tolist() == [12.0]
    assert ref.box_area(b).tolist() == [16.0]
    # overlap [3, 5] x [2, 4] = 4; union 12 + 16 - 4 = 24
    assert ref.box_iou(a, b)[0, 0] == pytest.approx(4 / 24, abs=1e-15)


def test_disjoint_touching_and_degenerate_give_zero_not_nan():
    boxes = np.array([[0.0, 0, 1, 1], [1, 0, 2, 1], [5, 5, 5, 5], [5, 5, 5, 5]])
    iou = ref.box_iou(boxes, boxes)
    assert not np.isnan(iou).any()
    assert iou[0, 1] == 0 and iou[2, 3] == 0 and iou[2, 2] == 0 and iou[0, 0] == 1
    twin = ops.box_iou(torch.tensor(boxes), torch.tensor(boxes))
    assert torch.equal(twin, torch.tensor(iou))


def test_zero_area_boxes_have_finite_gradients():
    boxes = torch.tensor([[5.0, 5, 5, 5], [0, 0, 1, 1]], dtype=torch.float64, requires_grad=True)
    ops.box_iou(boxes, boxes).sum().backward()
    assert torch.isfinite(boxes.grad).all()


def test_clip_boxes_hand_example():
    boxes = np.array([[-5.0, -5, 20, 30], [12, 3, 40, 8]])
    clipped = ref.clip_boxes(boxes, (25, 15))  # H = 25, W = 15
    assert clipped.tolist() == [[0, 0, 15, 25], [12, 3, 15, 8]]
    assert boxes[0, 0] == -5  # input untouched
    assert ops.clip_boxes(torch.tensor(boxes), (25, 15)).tolist() == clipped.tolist()


def test_remove_small_boxes_hand_example():
    boxes = np.array([[0.0, 0, 2, 2], [0, 0, 1, 5], [0, 0, 5, 1.5], [0, 0, 3, 3]])
    keep = ref.remove_small_boxes(boxes, 2)  # width >= 2 and height >= 2
    assert keep.dtype == np.int64 and keep.tolist() == [0, 3]
    twin = ops.remove_small_boxes(torch.tensor(boxes), 2)
    assert twin.dtype == torch.int64 and twin.tolist() == [0, 3]


# --- shapes, empties, errors ----------------------------------------------------------------

def test_expand_boxes_hand_example():
    boxes = np.array([[0.0, 0, 10, 20], [4, 4, 4, 4]])
    np.testing.assert_array_equal(ref.expand_boxes(boxes, 1.5),
                                  [[-2.5, -5, 12.5, 25], [4, 4, 4, 4]])  # same centres
    np.testing.assert_array_equal(ref.expand_boxes(boxes, 0.5), [[2.5, 5, 7.5, 15], [4, 4, 4, 4]])


def test_expand_boxes_by_one_is_an_exact_copy():
    # centre +- half width rounds 0.1 + 0.7 in the last bit: scale 1 must not
    boxes = np.array([[0.1, 0.2, 0.7, 0.9]], np.float32)
    for got in (ref.expand_boxes(boxes, 1.0), ops.expand_boxes(torch.from_numpy(boxes), 1.0)):
        np.testing.assert_array_equal(np.asarray(got), boxes)
    assert ref.expand_boxes(boxes, 1.0) is not boxes


def test_empty_inputs():
    empty, three = np.zeros((0, 4)), random_boxes(np.random.default_rng(0), 3)
    assert ref.box_area(empty).shape == (0,)
    assert ref.box_iou(empty, three).shape == (0, 3)
    assert ref.box_iou(three, empty).shape == (3, 0)
    assert ref.clip_boxes(empty, (10, 10)).shape == (0, 4)
    assert ref.remove_small_boxes(empty, 1).dtype == np.int64
    e, t = torch.zeros(0, 4), torch.tensor(three, dtype=torch.float32)
    assert ops.box_area(e).shape == (0,)
    assert ops.box_iou(e, t).shape == (0, 3) and ops.box_iou(t, e).shape == (3, 0)
    assert ops.clip_boxes(e, (10, 10)).shape == (0, 4)
    assert ops.remove_small_boxes(e, 1).shape == (0,)
    assert ref.expand_boxes(empty, 2.0).shape == (0, 4) and ops.expand_boxes(e, 2.0).shape == (0, 4)


@pytest.mark.parametrize("call, message", [
    (lambda: ref.box_area(np.zeros((3, 5))), r"boxes must have shape \(N, 4\), got \(3, 5\)"),
    (lambda: ref.box_iou(np.zeros(4), np.zeros((2, 4))),
     r"boxes1 must have shape \(N, 4\), got \(4,\)"),
    (lambda: ref.clip_boxes(np.zeros((2, 4)), (10,)), r"image_size must be \(H, W\), got \(10,\)"),
    (lambda: ref.remove_small_boxes(np.zeros((2, 2, 4)), 1),
     r"boxes must have shape \(N, 4\), got \(2, 2, 4\)"),
])
def test_reference_rejects_bad_shapes(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_error_message_says_what_was_expected():
    with pytest.raises(ValueError, match=r"boxes must have shape \(N, 4\), got \(3, 5\)"):
        ref.box_area(np.zeros((3, 5)))


# --- properties -----------------------------------------------------------------------------

@settings(max_examples=60, deadline=None)
@given(boxes_st(), boxes_st())
def test_iou_symmetric_and_bounded(b1, b2):
    iou = ref.box_iou(b1, b2)
    assert iou.shape == (len(b1), len(b2))
    assert np.array_equal(iou, ref.box_iou(b2, b1).T)
    assert not np.isnan(iou).any()
    assert (iou >= 0).all() and (iou <= 1 + 1e-12).all()


@settings(max_examples=60, deadline=None)
@given(boxes_st(integer=True), boxes_st(integer=True), st.integers(-100, 100), st.integers(-100, 100))
def test_iou_translation_invariant(b1, b2, tx, ty):
    shift = np.array([tx, ty, tx, ty], dtype=np.float64)
    assert np.array_equal(ref.box_iou(b1 + shift, b2 + shift), ref.box_iou(b1, b2))


@settings(max_examples=60, deadline=None)
@given(boxes_st())
def test_self_iou_is_one_for_positive_area(b):
    diag = np.diag(ref.box_iou(b, b))
    positive = ref.box_area(b) > 0
    assert np.allclose(diag[positive], 1.0, rtol=0, atol=1e-12)
    assert (diag[~positive] == 0).all()


@settings(max_examples=60, deadline=None)
@given(boxes_st(), st.integers(1, 500), st.integers(1, 500))
def test_clipped_boxes_inside_image_and_valid(b, height, width):
    c = ref.clip_boxes(b, (height, width))
    assert (c[:, 0::2] >= 0).all() and (c[:, 0::2] <= width).all()
    assert (c[:, 1::2] >= 0).all() and (c[:, 1::2] <= height).all()
    assert (c[:, 2] >= c[:, 0]).all() and (c[:, 3] >= c[:, 1]).all()


@settings(max_examples=60, deadline=None)
@given(boxes_st(), st.floats(0, 500))
def test_remove_small_boxes_keeps_exactly_the_big_ones(b, min_size):
    keep = ref.remove_small_boxes(b, min_size)
    w, h = b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]
    assert set(keep.tolist()) == set(np.flatnonzero((w >= min_size) & (h >= min_size)).tolist())


# --- reference vs twin ----------------------------------------------------------------------

@pytest.mark.parametrize("seed", range(5))
def test_twin_matches_reference_float64(seed):
    rng = np.random.default_rng(seed)
    b1, b2 = random_boxes(rng, 40), random_boxes(rng, 25)
    t1, t2 = torch.tensor(b1), torch.tensor(b2)
    np.testing.assert_allclose(ops.box_area(t1).numpy(), ref.box_area(b1), rtol=1e-12, atol=0)
    np.testing.assert_allclose(ops.box_iou(t1, t2).numpy(), ref.box_iou(b1, b2), rtol=1e-12, atol=1e-15)
    np.testing.assert_array_equal(ops.clip_boxes(t1, (60, 80)).numpy(), ref.clip_boxes(b1, (60, 80)))
    np.testing.assert_array_equal(ops.remove_small_boxes(t1, 20).numpy(), ref.remove_small_boxes(b1, 20))
    for scale in (0.5, 1.1, 2.0):
        np.testing.assert_allclose(ops.expand_boxes(t1, scale).numpy(),
                                   ref.expand_boxes(b1, scale), rtol=1e-12, atol=1e-12)


def test_twin_keeps_dtype_float32():
    b = torch.tensor(random_boxes(np.random.default_rng(1), 6), dtype=torch.float32)
    assert ops.box_iou(b, b).dtype == torch.float32
    assert ops.clip_boxes(b, (50, 50)).dtype == torch.float32


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_twin_on_cuda_float32_matches_reference():
    b = random_boxes(np.random.default_rng(2), 50)
    got = ops.box_iou(torch.tensor(b, dtype=torch.float32, device="cuda"),
                      torch.tensor(b, dtype=torch.float32, device="cuda"))
    np.testing.assert_allclose(got.cpu().numpy(), ref.box_iou(b, b), atol=1e-5)
