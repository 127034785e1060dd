"""Tests for lesson 03: encode_boxes, decode_boxes (reference and twin)."""
import math

import numpy as np
import pytest
import torch
from hypothesis import assume, given, settings, strategies as st
from hypothesis.extra.numpy import arrays

from mrcnn_edu import ops, reference as ref

CLIP = math.log(1000 / 16)


def positive_boxes_st(n):
    """(n, 4) boxes with widths and heights in [0.5, 400], corners in [-500, 500]."""
    corner = arrays(np.float64, (n, 2), elements=st.floats(-500, 500, allow_subnormal=False))
    size = arrays(np.float64, (n, 2), elements=st.floats(0.5, 400, allow_subnormal=False))
    return st.tuples(corner, size).map(lambda cs: np.concatenate([cs[0], cs[0] + cs[1]], axis=1))


def pairs_st(max_n=6):
    return st.integers(0, max_n).flatmap(lambda n: st.tuples(positive_boxes_st(n), positive_boxes_st(n)))


weights_st = st.sampled_from([(1.0, 1.0, 1.0, 1.0), (10.0, 10.0, 5.0, 5.0), (2.0, 3.0, 0.5, 7.0)])


def random_pairs(rng, n):
    xy = rng.uniform(0, 500, (2, n, 2))
    wh = rng.uniform(10, 300, (2, n, 2))  # size ratios below 30: encode -> decode is never clamped
    boxes = np.concatenate([xy, xy + wh], axis=2)  # (2, n, 4)
    return boxes[0], boxes[1]


# --- hand examples from lesson 03 -----------------------------------------------------------

def test_hand_example_from_lesson():
    anchor, target = np.array([[0.0, 0, 10, 10]]), np.array([[5.0, 0, 25, 40]])
    # anchor centre (5, 5), 10 x 10; target centre (15, 20), 20 x 40
    deltas = ref.encode_boxes(anchor, target)
    np.testing.assert_allclose(deltas, [[1.0, 1.5, math.log(2), math.log(4)]], rtol=1e-15)
    weighted = ref.encode_boxes(anchor, target, weights=(10.0, 10.0, 5.0, 5.0))
    np.testing.assert_allclose(weighted, [[10.0, 15.0, 5 * math.log(2), 5 * math.log(4)]], rtol=1e-15)
    np.testing.assert_allclose(ref.decode_boxes(anchor, deltas), target, rtol=1e-15, atol=1e-13)


def test_clamp_hand_example():
    anchor = np.array([[0.0, 0, 10, 10]])
    boxes = ref.decode_boxes(anchor, np.array([[0.0, 0, 10, 10]]))  # exp(10) would be 22026
    widths = boxes[:, 2] - boxes[:, 0]
    np.testing.assert_allclose(widths, [10 * 1000 / 16], rtol=1e-12)  # capped at 62.5 x
    got = ops.decode_boxes(torch.tensor(anchor), torch.tensor([[0.0, 0, 10, 10]], dtype=torch.float64))
    np.testing.assert_allclose(got.numpy(), boxes, rtol=1e-15)


def test_wrong_formula_from_some_write_ups_breaks_on_equal_widths():
    """dw = log((w - w') / w') is log 0 = -inf for an unchanged width; ours gives 0."""
    anchor = np.array([[0.0, 0, 10, 10]])
    assert ref.encode_boxes(anchor, anchor).tolist() == [[0.0, 0.0, 0.0, 0.0]]


def test_decode_per_class_deltas():
    anchors = np.array([[0.0, 0, 10, 10], [5, 5, 25, 15]])
    deltas = np.random.default_rng(0).normal(size=(2, 3 * 4))  # 3 classes
    boxes = ref.decode_boxes(anchors, deltas, weights=(10.0, 10.0, 5.0, 5.0))
    assert boxes.shape == (2, 12)
    for c in range(3):
        one = ref.decode_boxes(anchors, deltas[:, 4 * c:4 * c + 4], weights=(10.0, 10.0, 5.0, 5.0))
        np.testing.assert_array_equal(boxes[:, 4 * c:4 * c + 4], one)
    twin = ops.decode_boxes(torch.tensor(anchors), torch.tensor(deltas), weights=(10.0, 10.0, 5.0, 5.0))
    np.testing.assert_allclose(twin.numpy(), boxes, rtol=1e-14)


def test_empty_and_errors():
    empty = np.zeros((0, 4))
    assert ref.encode_boxes(empty, empty).shape == (0, 4)
    assert ref.decode_boxes(empty, empty).shape == (0, 4)
    e = torch.zeros(0, 4)
    assert ops.encode_boxes(e, e).shape == (0, 4) and ops.decode_boxes(e, e).shape == (0, 4)
    with pytest.raises(ValueError, match="must pair up"):
        ref.encode_boxes(np.ones((2, 4)), np.ones((3, 4)))
    with pytest.raises(ValueError, match=r"deltas must have shape \(N, 4 \* C\)"):
        ref.decode_boxes(np.ones((2, 4)), np.ones((2, 5)))
    with pytest.raises(ValueError, match="weights"):
        ref.encode_boxes(np.ones((2, 4)), np.ones((2, 4)), weights=(1.0, 1.0))


def test_twin_rejects_what_the_reference_rejects():
    with pytest.raises(ValueError, match="anchors and targets must pair up, got 2 and 3 boxes"):
        ops.encode_boxes(torch.ones(2, 4), torch.ones(3, 4))
    with pytest.raises(ValueError, match=r"targets must have shape \(N, 4\), got \(2, 5\)"):
        ops.encode_boxes(torch.ones(2, 4), torch.ones(2, 5))
    with pytest.raises(ValueError, match=r"deltas must have shape \(N, 4 \* C\) with N = 2 "
                                         r"anchors, got \(2, 5\)"):
        ops.decode_boxes(torch.ones(2, 4), torch.ones(2, 5))
    with pytest.raises(ValueError, match=r"weights must be \(wx, wy, ww, wh\)"):
        ops.decode_boxes(torch.ones(2, 4), torch.ones(2, 4), weights=(1.0, 1.0))


# --- properties -----------------------------------------------------------------------------

@settings(max_examples=80, deadline=None)
@given(pairs_st(), weights_st)
def test_round_trip_unless_clamped(pair, weights):
    anchors, targets = pair
    deltas = ref.encode_boxes(anchors, targets, weights)
    assume(np.all(deltas[:, 2] / weights[2] <= CLIP) and np.all(deltas[:, 3] / weights[3] <= CLIP))
    np.testing.assert_allclose(ref.decode_boxes(anchors, deltas, weights), targets, rtol=1e-9, atol=1e-9)


@settings(max_examples=60, deadline=None)
@given(pairs_st(), st.floats(-1000, 1000), st.floats(-1000, 1000))
def test_deltas_translation_invariant(pair, tx, ty):
    anchors, targets = pair
    shift = np.array([tx, ty, tx, ty])
    np.testing.assert_allclose(ref.encode_boxes(anchors + shift, targets + shift),
                               ref.encode_boxes(anchors, targets), rtol=1e-6, atol=1e-6)


@settings(max_examples=60, deadline=None)
@given(pairs_st(), st.floats(0.1, 10))
def test_deltas_scale_invariant(pair, scale):
    anchors, targets = pair
    np.testing.assert_allclose(ref.encode_boxes(anchors * scale, targets * scale),
                               ref.encode_boxes(anchors, targets), rtol=1e-7, atol=1e-7)


@settings(max_examples=60, deadline=None)
@given(pairs_st())
def test_zero_deltas_decode_to_the_anchor_and_sizes_stay_positive(pair):
    anchors, targets = pair
    np.testing.assert_allclose(ref.decode_boxes(anchors, np.zeros_like(anchors)), anchors, rtol=1e-12, atol=1e-12)
    decoded = ref.decode_boxes(anchors, ref.encode_boxes(targets, anchors) * 3)
    assert (decoded[:, 2] > decoded[:, 0]).all() and (decoded[:, 3] > decoded[:, 1]).all()


# --- reference vs twin ----------------------------------------------------------------------

@pytest.mark.parametrize("weights", [(1.0, 1.0, 1.0, 1.0), (10.0, 10.0, 5.0, 5.0)])
@pytest.mark.parametrize("seed", range(3))
def test_twin_matches_reference_float64(seed, weights):
    rng = np.random.default_rng(seed)
    anchors, targets = random_pairs(rng, 200)
    deltas = ref.encode_boxes(anchors, targets, weights)
    twin = ops.encode_boxes(torch.tensor(anchors), torch.tensor(targets), weights)
    np.testing.assert_allclose(twin.numpy(), deltas, rtol=1e-13, atol=1e-13)
    wild = rng.normal(0, 3, size=(200, 4)) * np.array(weights)  # some past the clamp
    np.testing.assert_allclose(ops.decode_boxes(torch.tensor(anchors), torch.tensor(wild), weights).numpy(),
                               ref.decode_boxes(anchors, wild, weights), rtol=1e-13, atol=1e-10)


def test_twin_float32_keeps_dtype_and_is_close():
    anchors, targets = random_pairs(np.random.default_rng(5), 100)
    a32, t32 = torch.tensor(anchors, dtype=torch.float32), torch.tensor(targets, dtype=torch.float32)
    d = ops.encode_boxes(a32, t32)
    assert d.dtype == torch.float32
    np.testing.assert_allclose(ops.decode_boxes(a32, d).numpy(), targets, rtol=1e-4, atol=1e-3)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_twin_on_cuda_float32():
    anchors, targets = random_pairs(np.random.default_rng(6), 100)
    a, t = (torch.tensor(x, dtype=torch.float32, device="cuda") for x in (anchors, targets))
    np.testing.assert_allclose(ops.encode_boxes(a, t).cpu().numpy(), ref.encode_boxes(anchors, targets),
                               rtol=1e-4, atol=1e-4)
