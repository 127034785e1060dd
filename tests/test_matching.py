"""Tests for lesson 04 (second half): match_anchors, sample_labels (reference and twin)."""
import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st
from hypothesis.extra.numpy import arrays

from mrcnn_edu import ops, reference as ref


def both_match(iou, **kwargs):
    """Run reference and twin, check they agree, return the reference's (matched, labels)."""
    matched, labels = ref.match_anchors(np.asarray(iou, dtype=np.float64), **kwargs)
    t_matched, t_labels = ops.match_anchors(torch.tensor(iou, dtype=torch.float64), **kwargs)
    assert t_matched.dtype == torch.int64 and t_labels.dtype == torch.int64
    assert matched.dtype == np.int64 and labels.dtype == np.int64
    assert t_matched.tolist() == matched.tolist() and t_labels.tolist() == labels.tolist()
    return matched, labels


# --- hand examples from lesson 04 -----------------------------------------------------------

HAND_IOU = [[0.80, 0.50, 0.10, 0.00],   # gt 0
            [0.20, 0.65, 0.25, 0.00]]   # gt 1;  columns are anchors 0..3


def test_hand_example_thresholds_only():
    matched, labels = both_match(HAND_IOU, allow_low_quality=False)
    assert matched.tolist() == [0, 1, 1, 0]
    assert labels.tolist() == [1, -1, 0, 0]  # 0.8 >= 0.7; 0.3 <= 0.65 < 0.7; 0.25 and 0 < 0.3


def test_hand_example_low_quality_gives_gt_1_its_best_anchor():
    matched, labels = both_match(HAND_IOU)
    assert matched.tolist() == [0, 1, 1, 0]
    assert labels.tolist() == [1, 1, 0, 0]


def test_low_quality_ties_all_become_positive():
    _, labels = both_match([[0.4, 0.4, 0.1]])
    assert labels.tolist() == [1, 1, 0]


def test_low_quality_anchor_keeps_its_own_best_gt():
    """gt 0's best anchor is anchor 0, which overlaps gt 1 more: positive, matched to gt 1."""
    matched, labels = both_match([[0.60, 0.1], [0.65, 0.0]])
    assert labels.tolist() == [1, 0] and matched.tolist() == [1, 0]


def test_gt_touching_no_anchor_promotes_nothing():
    _, labels = both_match([[0.0, 0.0, 0.0], [0.1, 0.5, 0.2]])
    assert labels.tolist() == [0, 1, 0]


def test_value_exactly_at_thresholds():
    _, labels = both_match([[0.7, 0.3, 0.2999]], allow_low_quality=False)
    assert labels.tolist() == [1, -1, 0]  # >= high positive, >= low not negative


def test_no_gt_means_all_negative():
    matched, labels = both_match(np.zeros((0, 5)))
    assert matched.tolist() == [0] * 5 and labels.tolist() == [0] * 5


def test_no_anchors():
    matched, labels = both_match(np.zeros((3, 0)))
    assert matched.shape == (0,) and labels.shape == (0,)


def test_match_rejects_bad_input():
    with pytest.raises(ValueError, match=r"iou must have shape \(G, A\)"):
        ref.match_anchors(np.zeros(4))
    with pytest.raises(ValueError, match="low <= high"):
        ref.match_anchors(np.zeros((2, 3)), high=0.3, low=0.7)
    with pytest.raises(ValueError, match=r"iou must have shape \(G, A\) .* got \(4,\)"):
        ops.match_anchors(torch.zeros(4))
    with pytest.raises(ValueError, match="low <= high"):
        ops.match_anchors(torch.zeros(2, 3), high=0.3, low=0.7)


def test_sample_hand_example():
    labels = np.array([1] * 10 + [0] * 100 + [-1] * 5)
    out = ref.sample_labels(labels, 16, 0.5, generator=0)
    assert (out == 1).sum() == 8 and (out == 0).sum() == 8
    few = np.array([1] * 3 + [0] * 100)
    out = ref.sample_labels(few, 16, 0.5, generator=0)
    assert (out == 1).sum() == 3 and (out == 0).sum() == 13  # negatives fill the gap
    assert labels[0] == 1 and (labels == 1).sum() == 10  # input unchanged


def test_sample_is_reproducible_with_a_seed():
    labels = np.array([1] * 50 + [0] * 500)
    assert np.array_equal(ref.sample_labels(labels, 64, 0.25, 3), ref.sample_labels(labels, 64, 0.25, 3))
    t = torch.tensor(labels)
    assert torch.equal(ops.sample_labels(t, 64, 0.25, 3), ops.sample_labels(t, 64, 0.25, 3))
    rng = np.random.default_rng(3)
    assert ref.sample_labels(labels, 64, 0.25, rng).shape == labels.shape
    gen = torch.Generator().manual_seed(3)
    assert ops.sample_labels(t, 64, 0.25, gen).shape == t.shape


def test_sample_empty_and_errors():
    assert ref.sample_labels(np.zeros(0, np.int64), 256, 0.5, 0).shape == (0,)
    assert ops.sample_labels(torch.zeros(0, dtype=torch.int64), 256, 0.5, 0).shape == (0,)
    with pytest.raises(ValueError, match=r"labels must have shape \(A,\)"):
        ref.sample_labels(np.zeros((2, 3)), 256, 0.5)
    with pytest.raises(ValueError, match=r"labels must have shape \(A,\), got \(2, 3\)"):
        ops.sample_labels(torch.zeros(2, 3, dtype=torch.int64), 256, 0.5)


# --- properties -----------------------------------------------------------------------------

iou_st = st.tuples(st.integers(0, 5), st.integers(0, 12)).flatmap(
    lambda ga: arrays(np.float64, ga, elements=st.sampled_from([0.0, 0.1, 0.3, 0.5, 0.7, 0.9, 1.0])
                      | st.floats(0, 1)))


@settings(max_examples=150, deadline=None)
@given(iou_st, st.booleans())
def test_match_rules_and_twin(iou, low_quality):
    matched, labels = both_match(iou, allow_low_quality=low_quality)
    if iou.shape[0] == 0:
        return
    best = iou.max(axis=0)
    assert (labels[best >= 0.7] == 1).all()
    assert np.array_equal(iou[matched, np.arange(iou.shape[1])], best)  # matched gt is a best gt
    if not low_quality:
        assert np.array_equal(labels == 0, best < 0.3)
        assert np.array_equal(labels == -1, (best >= 0.3) & (best < 0.7))
    elif iou.shape[1]:
        for g in range(iou.shape[0]):  # every gt that touches an anchor has a positive best anchor
            if iou[g].max() > 0:
                assert (labels[iou[g] == iou[g].max()] == 1).all()


@settings(max_examples=100, deadline=None)
@given(arrays(np.int64, st.integers(0, 300), elements=st.integers(-1, 1)),
       st.integers(0, 64), st.sampled_from([0.0, 0.25, 0.5, 1.0]), st.integers(0, 2 ** 31))
def test_sample_counts_and_subset(labels, batch_size, fraction, seed):
    counts = {}
    for name, out in [("reference", ref.sample_labels(labels, batch_size, fraction, seed)),
                      ("twin", ops.sample_labels(torch.tensor(labels), batch_size, fraction, seed).numpy())]:
        pos, neg = (out == 1).sum(), (out == 0).sum()
        assert pos == min((labels == 1).sum(), int(batch_size * fraction))
        assert neg == min((labels == 0).sum(), batch_size - pos)
        assert (labels[out == 1] == 1).all() and (labels[out == 0] == 0).all()
        counts[name] = (pos, neg)
    assert counts["reference"] == counts["twin"]


# --- reference vs twin on random inputs -----------------------------------------------------

@pytest.mark.parametrize("seed", range(4))
def test_twin_matches_reference_float64_on_real_ious(seed):
    rng = np.random.default_rng(seed)
    anchors = ref.generate_anchors((256, 256), strides=(16,), sizes=(64,))[0]
    xy = rng.uniform(0, 200, (6, 2))
    gt = np.concatenate([xy, xy + rng.uniform(10, 120, (6, 2))], axis=1)
    iou = ref.box_iou(gt, anchors)  # (G, A)
    both_match(iou)
    both_match(iou, high=0.5, low=0.4, allow_low_quality=False)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_twin_on_cuda():
    iou = np.random.default_rng(9).random((5, 300)).astype(np.float32)
    matched, labels = ops.match_anchors(torch.tensor(iou, device="cuda"))
    want = ref.match_anchors(iou)
    assert matched.cpu().tolist() == want[0].tolist() and labels.cpu().tolist() == want[1].tolist()
    out = ops.sample_labels(labels, 256, 0.5, generator=0)
    assert out.device.type == "cuda"
