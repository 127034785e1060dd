"""Tests for lesson 07: smooth_l1_loss, objectness_loss, rpn_box_loss, fast_rcnn_loss, mask_loss."""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings, strategies as st

from mrcnn_edu import ops, reference as ref


# --- hand examples from lesson 07 -----------------------------------------------------------

def test_smooth_l1_hand_example():
    pred, target = np.array([0.0, 0.5, 3.0]), np.array([0.0, 0.0, 1.0])
    # beta = 1: 0, 0.5 * 0.25 = 0.125 (quadratic), 2 - 0.5 = 1.5 (linear)
    assert ref.smooth_l1_loss(pred, target, beta=1.0, reduction="none").tolist() == [0, 0.125, 1.5]
    assert ref.smooth_l1_loss(pred, target, beta=1.0) == 1.625
    assert ref.smooth_l1_loss(pred, target, beta=1.0, reduction="mean") == pytest.approx(1.625 / 3)
    assert ref.smooth_l1_loss(pred, target, beta=0.0) == 2.5  # plain L1


def test_objectness_ignores_unsampled_anchors():
    logits, labels = np.array([0.0, 2.0, -1.0, 50.0]), np.array([1, 0, 0, -1])
    expected = (math.log(2) + math.log1p(math.exp(2)) + math.log1p(math.exp(-1))) / 3
    assert ref.objectness_loss(logits, labels) == pytest.approx(expected)
    assert ref.objectness_loss(logits, np.full(4, -1)) == 0.0


def test_rpn_box_loss_divides_by_sampled_anchors():
    pred, target = np.zeros((4, 4)), np.zeros((4, 4))
    pred[0, 0] = 1.0  # positive: |d| = 1 >= 1/9 -> 1 - 1/18
    pred[1, 0] = 5.0  # a negative anchor: its deltas do not count
    labels = np.array([1, 0, -1, 0])
    assert ref.rpn_box_loss(pred, target, labels) == pytest.approx((1 - 1 / 18) / 3)


def test_fast_rcnn_loss_uses_the_true_class_deltas():
    logits = np.log(np.array([[0.5, 0.25, 0.25], [0.25, 0.5, 0.25]]))  # K = 2, C = 2
    deltas = np.zeros((2, 12))
    deltas[1, 4:8] = [0.05, 0, 0, 0]  # class 1's deltas of RoI 1: quadratic part of smooth L1
    deltas[1, 8:12] = 9.0  # class 2's deltas: ignored, RoI 1 is class 1
    deltas[0] = 7.0  # RoI 0 is background: no box loss
    cls, box = ref.fast_rcnn_loss(logits, deltas, np.array([0, 1]), np.zeros((2, 4)))
    assert cls == pytest.approx(-math.log(0.5))
    assert box == pytest.approx(0.5 * 0.05 ** 2 * 9 / 2)


def test_mask_loss_reads_only_the_label_channel():
    logits = np.zeros((2, 3, 2, 2))
    logits[:, 0] = 100.0  # background channel: never read
    logits[0, 2] = 100.0  # RoI 0 is class 1: channel 2 is ignored
    targets = np.ones((2, 2, 2))
    labels = np.array([1, 2])
    assert ref.mask_loss(logits, labels, targets) == pytest.approx(math.log(2))


def test_empty_inputs_give_zero_with_a_graph():
    assert ref.fast_rcnn_loss(np.zeros((0, 3)), np.zeros((0, 12)), np.zeros(0, int), np.zeros((0, 4))) == (0.0, 0.0)
    assert ref.mask_loss(np.zeros((0, 3, 28, 28)), np.zeros(0, int), np.zeros((0, 28, 28))) == 0.0
    logits = torch.zeros(0, 3, 28, 28, requires_grad=True)
    loss = ops.mask_loss(logits, torch.zeros(0, dtype=torch.long), torch.zeros(0, 28, 28))
    loss.backward()
    assert loss.item() == 0.0 and logits.grad.shape == logits.shape
    cls_logits = torch.zeros(0, 3, requires_grad=True)
    cls, box = ops.fast_rcnn_loss(cls_logits, torch.zeros(0, 12, requires_grad=True),
                                  torch.zeros(0, dtype=torch.long), torch.zeros(0, 4))
    (cls + box).backward()
    assert cls.item() == 0.0 and box.item() == 0.0
    obj = torch.zeros(5, requires_grad=True)
    ops.objectness_loss(obj, torch.full((5,), -1)).backward()
    with pytest.raises(ValueError, match="one shape"):
        ref.smooth_l1_loss(np.zeros(3), np.zeros(4))


# --- properties ------------------------------------------------------------------------------

@settings(max_examples=60, deadline=None)
@given(st.floats(-50, 50), st.floats(1e-3, 2))
def test_smooth_l1_is_continuous_and_between_l1_and_l2(d, beta):
    loss = ref.smooth_l1_loss(np.array([d]), np.array([0.0]), beta)
    assert abs(d) - 0.5 * beta - 1e-12 <= loss <= abs(d) + 1e-12
    at_beta = ref.smooth_l1_loss(np.array([beta]), np.array([0.0]), beta)
    assert at_beta == pytest.approx(0.5 * beta)  # both branches agree at |d| = beta


@settings(max_examples=40, deadline=None)
@given(st.lists(st.floats(-30, 30), min_size=1, max_size=20))
def test_bce_matches_the_naive_formula_where_that_is_stable(xs):
    x = np.array(xs)
    z = (x > 0).astype(float)
    naive = -(z * np.log(1 / (1 + np.exp(-x))) + (1 - z) * np.log(1 - 1 / (1 + np.exp(-x))))
    np.testing.assert_allclose(ref.losses.binary_cross_entropy_with_logits(x, z), naive, rtol=1e-6, atol=1e-12)


# --- reference vs twin ------------------------------------------------------------------------

@pytest.mark.parametrize("seed", [0, 1, 2])
def test_twins_match_reference(seed):
    rng = np.random.default_rng(seed)
    t = lambda a: torch.tensor(a)  # noqa: E731
    pred, target = rng.normal(size=(50, 4)) * 0.3, rng.normal(size=(50, 4)) * 0.3
    for beta in (1 / 9, 1.0, 0.0):
        for reduction in ("sum", "mean"):
            assert ops.smooth_l1_loss(t(pred), t(target), beta, reduction).item() == pytest.approx(
                ref.smooth_l1_loss(pred, target, beta, reduction), rel=1e-12)
    labels = rng.integers(-1, 2, 50)
    logits = rng.normal(size=50) * 3
    assert ops.objectness_loss(t(logits), t(labels)).item() == pytest.approx(
        ref.objectness_loss(logits, labels), rel=1e-12)
    assert ops.rpn_box_loss(t(pred), t(target), t(labels)).item() == pytest.approx(
        ref.rpn_box_loss(pred, target, labels), rel=1e-12)
    K, C = 40, 5
    cls_logits, deltas = rng.normal(size=(K, C + 1)), rng.normal(size=(K, 4 * (C + 1))) * 0.2
    roi_labels, reg = rng.integers(0, C + 1, K), rng.normal(size=(K, 4)) * 0.2
    got = ops.fast_rcnn_loss(t(cls_logits), t(deltas), t(roi_labels), t(reg))
    expected = ref.fast_rcnn_loss(cls_logits, deltas, roi_labels, reg)
    assert [g.item() for g in got] == pytest.approx(list(expected), rel=1e-12)
    mask_logits = rng.normal(size=(K, C + 1, 7, 7)) * 3
    mask_targets = (rng.uniform(size=(K, 7, 7)) > 0.5).astype(float)
    positive = rng.integers(1, C + 1, K)
    assert ops.mask_loss(t(mask_logits), t(positive), t(mask_targets)).item() == pytest.approx(
        ref.mask_loss(mask_logits, positive, mask_targets), rel=1e-12)


def test_sigmoid_mask_loss_gradients_touch_one_channel():
    logits = torch.randn(4, 3, 5, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(0),
                         requires_grad=True)
    labels = torch.tensor([1, 2, 1, 2])
    ops.mask_loss(logits, labels, torch.ones(4, 5, 5, dtype=torch.float64)).backward()
    touched = logits.grad.abs().sum((2, 3)) > 0  # (K, C + 1)
    assert touched.tolist() == F.one_hot(labels, 3).bool().tolist()
