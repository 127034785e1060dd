"""Tests for lesson 04 (first half): nms, batched_nms (reference and twin)."""
import importlib

import numba
import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st
from hypothesis.extra.numpy import arrays

from mrcnn_edu import ops, reference as ref

nms_module = importlib.import_module("mrcnn_edu.ops.nms")  # `ops.nms` is the function


def slow_nms(boxes, scores, threshold):
    """The rule written as plainly as possible: the test oracle."""
    order = sorted(range(len(boxes)), key=lambda i: (-scores[i], i))
    iou = ref.box_iou(boxes, boxes)
    kept = []
    for i in order:
        if all(iou[i, k] <= threshold for k in kept):
            kept.append(i)
    return kept


def twin_nms(boxes, scores, threshold, dtype=torch.float64):
    return ops.nms(torch.tensor(boxes, dtype=dtype), torch.tensor(scores, dtype=dtype), threshold).numpy()


def random_boxes(rng, n, scale=1024.0):
    centres = rng.uniform(0, scale, (n, 2))
    wh = rng.uniform(16, 256, (n, 2))
    return np.concatenate([centres - wh / 2, centres + wh / 2], axis=1)  # (n, 4)


def clustered_boxes(rng, n, clusters=20):
    centres, sizes = rng.uniform(100, 900, (clusters, 2)), rng.uniform(30, 200, (clusters, 2))
    which = rng.integers(0, clusters, n)
    c = centres[which] + rng.normal(0, 0.1, (n, 2)) * sizes[which]
    wh = sizes[which] * rng.uniform(0.8, 1.25, (n, 2))
    return np.concatenate([c - wh / 2, c + wh / 2], axis=1)  # (n, 4)


# --- hand examples from lesson 04 -----------------------------------------------------------

AT_HALF = np.array([[0.0, 0, 4, 1], [0, 0, 2, 1], [10, 10, 12, 12]])  # IoU(0, 1) = 2 / 4 = 0.5 exactly


@pytest.mark.parametrize("impl", ["reference", "twin"])
def test_iou_exactly_at_threshold_is_kept(impl):
    scores = np.array([0.9, 0.8, 0.7])
    run = ref.nms if impl == "reference" else twin_nms
    assert list(run(AT_HALF, scores, 0.5)) == [0, 1, 2]


@pytest.mark.parametrize("impl", ["reference", "twin"])
@pytest.mark.parametrize("threshold", [0.4999999, np.nextafter(0.5, 0)])
def test_iou_just_above_threshold_is_dropped(impl, threshold):
    scores = np.array([0.9, 0.8, 0.7])
    run = ref.nms if impl == "reference" else twin_nms
    assert list(run(AT_HALF, scores, threshold)) == [0, 2]


def test_float32_threshold_edge_agrees():
    boxes, scores = AT_HALF.astype(np.float32), np.array([0.9, 0.8, 0.7], np.float32)
    for t in (0.5, 0.49999997):
        assert list(ref.nms(boxes, scores, t)) == list(twin_nms(boxes, scores, t, torch.float32))


def test_hand_example_chain():
    """A suppresses B, B would suppress C, but B is gone, so C survives."""
    boxes = np.array([[0.0, 0, 10, 10], [3, 0, 13, 10], [6, 0, 16, 10]])  # IoU(A,B) = IoU(B,C) = 7/13
    scores = np.array([0.9, 0.8, 0.7])  # IoU(A, C) = 4 / 16 = 0.25
    assert ref.nms(boxes, scores, 0.5).tolist() == [0, 2]
    assert twin_nms(boxes, scores, 0.5).tolist() == [0, 2]


def test_result_is_by_descending_score_and_int64():
    boxes = np.array([[0.0, 0, 1, 1], [5, 5, 6, 6], [9, 9, 10, 10]])
    scores = np.array([0.1, 0.9, 0.5])
    assert ref.nms(boxes, scores, 0.5).dtype == np.int64
    assert ref.nms(boxes, scores, 0.5).tolist() == [1, 2, 0]
    assert ops.nms(torch.tensor(boxes), torch.tensor(scores), 0.5).dtype == torch.int64


def test_ties_visit_lower_index_first():
    boxes = np.array([[0.0, 0, 10, 10], [0, 0, 10, 10], [0, 0, 10, 10]])
    scores = np.array([0.5, 0.5, 0.5])
    assert ref.nms(boxes, scores, 0.5).tolist() == [0]
    assert twin_nms(boxes, scores, 0.5).tolist() == [0]


def test_batched_nms_hand_example():
    boxes = np.array([[0.0, 0, 10, 10], [1, 1, 10, 10], [1, 1, 10, 10]])
    scores = np.array([0.9, 0.8, 0.7])
    labels = np.array([1, 1, 2])  # box 2 is another class: not suppressed by box 0
    assert ref.batched_nms(boxes, scores, labels, 0.5).tolist() == [0, 2]
    assert ops.batched_nms(torch.tensor(boxes), torch.tensor(scores), torch.tensor(labels), 0.5).tolist() == [0, 2]


def test_batched_nms_negative_coordinates():
    """torchvision's label * (max + 1) offset lets classes overlap when coordinates go below -1."""
    boxes = np.array([[-50.0, -50, -40, -40], [-50, -50, -40, -40]])
    scores, labels = np.array([0.9, 0.8]), np.array([0, 1])
    assert ref.batched_nms(boxes, scores, labels, 0.5).tolist() == [0, 1]
    assert ops.batched_nms(torch.tensor(boxes), torch.tensor(scores), torch.tensor(labels), 0.5).tolist() == [0, 1]


def test_twin_accepts_boxes_that_require_grad():
    boxes = torch.tensor(AT_HALF, requires_grad=True)
    scores = torch.tensor([0.9, 0.8, 0.7], requires_grad=True)
    assert ops.nms(boxes, scores, 0.5).tolist() == [0, 1, 2]
    assert ops.batched_nms(boxes, scores, torch.tensor([0, 0, 1]), 0.49).tolist() == [0, 2]


def test_empty_inputs():
    assert ref.nms(np.zeros((0, 4)), np.zeros(0), 0.5).shape == (0,)
    assert ref.nms(np.zeros((0, 4)), np.zeros(0), 0.5).dtype == np.int64
    assert ref.batched_nms(np.zeros((0, 4)), np.zeros(0), np.zeros(0, np.int64), 0.5).shape == (0,)
    e = torch.zeros(0, 4)
    assert ops.nms(e, torch.zeros(0), 0.5).shape == (0,)
    assert ops.batched_nms(e, torch.zeros(0), torch.zeros(0, dtype=torch.int64), 0.5).dtype == torch.int64


def test_reference_rejects_bad_shapes():
    with pytest.raises(ValueError, match=r"scores must have shape \(N,\) = \(3,\)"):
        ref.nms(np.zeros((3, 4)), np.zeros(2), 0.5)
    with pytest.raises(ValueError, match=r"labels must have shape"):
        ref.batched_nms(np.zeros((3, 4)), np.zeros(3), np.zeros(4), 0.5)


def test_twin_rejects_what_the_reference_rejects():
    with pytest.raises(ValueError, match=r"scores must have shape \(N,\) = \(3,\) to match boxes, "
                                         r"got \(2,\)"):
        ops.nms(torch.zeros(3, 4), torch.zeros(2), 0.5)
    with pytest.raises(ValueError, match=r"boxes must have shape \(N, 4\), got \(3, 5\)"):
        ops.nms(torch.zeros(3, 5), torch.zeros(3), 0.5)
    with pytest.raises(ValueError, match=r"labels must have shape \(N,\) = \(3,\)"):
        ops.batched_nms(torch.zeros(3, 4), torch.zeros(3), torch.zeros(4), 0.5)


# --- properties -----------------------------------------------------------------------------

def nms_case(max_n=12):
    """Integer-grid boxes (so IoUs hit thresholds exactly) with few distinct scores (ties)."""
    corner = st.integers(0, 20)
    def build(n):
        return st.tuples(arrays(np.int64, (n, 2), elements=corner),
                         arrays(np.int64, (n, 2), elements=st.integers(0, 10)),
                         arrays(np.int64, (n,), elements=st.integers(0, 4)),
                         arrays(np.int64, (n,), elements=st.integers(0, 2)))
    def to_arrays(parts):
        xy, wh, scores, labels = parts
        return np.concatenate([xy, xy + wh], axis=1).astype(np.float64), scores / 4.0, labels
    return st.integers(0, max_n).flatmap(build).map(to_arrays)


thresholds = st.sampled_from([0.0, 0.25, 0.5, 0.7, 1.0]) | st.floats(0, 1)


@settings(max_examples=150, deadline=None)
@given(nms_case(), thresholds)
def test_nms_matches_oracle_and_twin(case, threshold):
    boxes, scores, _ = case
    want = slow_nms(boxes, scores, threshold)
    assert ref.nms(boxes, scores, threshold).tolist() == want
    assert twin_nms(boxes, scores, threshold).tolist() == want


@settings(max_examples=100, deadline=None)
@given(nms_case(), thresholds)
def test_kept_boxes_overlap_at_most_threshold_and_dropped_ones_more(case, threshold):
    boxes, scores, _ = case
    keep = ref.nms(boxes, scores, threshold)
    iou = ref.box_iou(boxes, boxes)
    kept_iou = iou[np.ix_(keep, keep)] - np.eye(len(keep)) * iou[keep, keep]
    assert (kept_iou <= threshold).all()
    dropped = np.setdiff1d(np.arange(len(boxes)), keep)
    if len(keep):
        assert all((iou[d, keep] > threshold).any() for d in dropped)
    assert (np.diff(scores[keep]) <= 0).all()


@settings(max_examples=100, deadline=None)
@given(nms_case(), thresholds, st.integers(-30, 30), st.integers(-30, 30))
def test_nms_translation_invariant(case, threshold, tx, ty):
    boxes, scores, _ = case
    shifted = boxes + np.array([tx, ty, tx, ty], dtype=np.float64)
    assert ref.nms(shifted, scores, threshold).tolist() == ref.nms(boxes, scores, threshold).tolist()


@settings(max_examples=100, deadline=None)
@given(nms_case(), thresholds)
def test_batched_nms_is_nms_within_each_label(case, threshold):
    boxes, scores, labels = case
    got = ref.batched_nms(boxes, scores, labels, threshold)
    per_label = []
    for label in np.unique(labels):
        idx = np.flatnonzero(labels == label)
        per_label += idx[ref.nms(boxes[idx], scores[idx], threshold)].tolist()
    assert sorted(got.tolist()) == sorted(per_label)
    twin = ops.batched_nms(torch.tensor(boxes), torch.tensor(scores), torch.tensor(labels), threshold)
    assert twin.tolist() == got.tolist()


# --- reference vs twin on bigger random inputs (several blocks of the twin) ------------------

# 1500 boxes are six blocks of the twin. Under NUMBA_DISABLE_JIT=1 (`make test`'s first step)
# the O(N^2) kernel runs as plain Python: 300 boxes (two blocks, 25x fewer pairs) take its
# every path too.
BIG_N = 300 if numba.config.DISABLE_JIT else 1500


@pytest.mark.parametrize("kind", ["random", "clustered"])
@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("threshold", [0.3, 0.5, 0.7])
def test_twin_matches_reference_float64(kind, seed, threshold):
    rng = np.random.default_rng(seed)
    make = random_boxes if kind == "random" else clustered_boxes
    boxes, scores = make(rng, BIG_N), rng.random(BIG_N)
    scores[::7] = scores[0]  # some ties
    assert twin_nms(boxes, scores, threshold).tolist() == ref.nms(boxes, scores, threshold).tolist()
    labels = rng.integers(0, 5, BIG_N)
    twin = ops.batched_nms(torch.tensor(boxes), torch.tensor(scores), torch.tensor(labels), threshold)
    assert twin.tolist() == ref.batched_nms(boxes, scores, labels, threshold).tolist()


def test_twin_matches_reference_float32():
    rng = np.random.default_rng(7)
    boxes, scores = clustered_boxes(rng, 2000).astype(np.float32), rng.random(2000).astype(np.float32)
    assert twin_nms(boxes, scores, 0.7, torch.float32).tolist() == ref.nms(boxes, scores, 0.7).tolist()


@pytest.mark.parametrize("sweep", [(4096, 8), (300, 3), (1, 1)])
def test_any_block_size_and_check_interval_gives_the_same_result(monkeypatch, sweep):
    """The GPU's sweep (one big block, the fixed point tested every 8 steps), and odd sizes,
    run here on the CPU: the kept boxes must not depend on them."""
    rng = np.random.default_rng(9)
    boxes, scores = clustered_boxes(rng, 2000).astype(np.float32), rng.random(2000).astype(np.float32)
    monkeypatch.setattr(nms_module, "sweep_settings", lambda device: sweep)
    for threshold in (0.3, 0.7):
        got = ops.nms(torch.tensor(boxes), torch.tensor(scores), threshold)
        assert got.tolist() == ref.nms(boxes, scores, threshold).tolist()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_twin_on_cuda_float32():
    rng = np.random.default_rng(8)
    boxes, scores = clustered_boxes(rng, 2000).astype(np.float32), rng.random(2000).astype(np.float32)
    got = ops.nms(torch.tensor(boxes, device="cuda"), torch.tensor(scores, device="cuda"), 0.7)
    assert got.cpu().tolist() == ref.nms(boxes, scores, 0.7).tolist()
