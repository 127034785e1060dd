"""Tests for lesson 05: assign_fpn_levels (reference and twin)."""
import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st

from mrcnn_edu import ops, reference as ref


def square(side):
    return [0.0, 0.0, side, side]


# --- hand examples from lesson 05 -----------------------------------------------------------

def test_hand_example_from_lesson():
    # 224 -> P4 (canonical); halving or doubling the side moves one level; clamped to P2..P5
    boxes = np.array([square(s) for s in (224, 112, 448, 896, 56, 20, 223.9, 111.99)])
    assert ref.assign_fpn_levels(boxes).tolist() == [4, 3, 5, 5, 2, 2, 3, 2]


def test_exact_powers_of_two_stay_on_their_level_thanks_to_the_epsilon():
    boxes = np.array([square(224 * 2.0 ** j) for j in range(-3, 4)])
    levels = ref.assign_fpn_levels(boxes, k_min=1, k_max=7)
    assert levels.tolist() == [1, 2, 3, 4, 5, 6, 7]


def test_area_not_shape_decides():
    # 448 x 112 has the area of 224 x 224: level 4
    assert ref.assign_fpn_levels(np.array([[0.0, 0, 448, 112]])).tolist() == [4]


def test_degenerate_and_empty():
    boxes = np.array([[5.0, 5, 5, 9], [9.0, 9, 1, 1]])  # zero area, inverted corners
    assert ref.assign_fpn_levels(boxes).tolist() == [2, 2]
    assert ref.assign_fpn_levels(np.zeros((0, 4))).shape == (0,)
    assert ops.assign_fpn_levels(torch.zeros(0, 4)).dtype == torch.int64
    with pytest.raises(ValueError, match=r"\(K, 4\)"):
        ref.assign_fpn_levels(np.zeros((3, 5)))
    for assign, boxes in ((ref.assign_fpn_levels, np.zeros((1, 4))),
                          (ops.assign_fpn_levels, torch.zeros(1, 4))):
        with pytest.raises(ValueError, match="k_min must be <= k_max"):
            assign(boxes, k_min=5, k_max=2)


# --- properties ------------------------------------------------------------------------------

@settings(max_examples=60, deadline=None)
@given(st.floats(1, 2000), st.floats(1, 2000), st.floats(1.01, 4))
def test_levels_are_monotone_in_size_and_bounded(w, h, grow):
    small = np.array([[0.0, 0, w, h]])
    big = np.array([[0.0, 0, w * grow, h * grow]])
    a, b = ref.assign_fpn_levels(small)[0], ref.assign_fpn_levels(big)[0]
    assert 2 <= a <= b <= 5


# --- reference vs twin ------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_twin_matches_reference(dtype):
    rng = np.random.default_rng(0)
    xy = rng.uniform(0, 800, (500, 2))
    wh = np.exp(rng.uniform(0, np.log(1500), (500, 2)))
    boxes = np.concatenate([xy, xy + wh], 1).astype(np.float32 if dtype == torch.float32 else np.float64)
    for k_min, k_max in ((2, 5), (3, 6)):
        expected = ref.assign_fpn_levels(boxes, k_min, k_max)
        got = ops.assign_fpn_levels(torch.tensor(boxes), k_min, k_max)
        assert got.tolist() == expected.tolist()


# --- end to end: the subset's boxes land on every level -----------------------------------------

def test_real_boxes_use_every_level():
    from mrcnn_edu.data import CocoDataset, resolve_data_root
    ds = CocoDataset(resolve_data_root(), "val2017")
    boxes = np.concatenate([ds.load_target(i)["boxes"].numpy() for i in range(len(ds))])
    counts = np.bincount(ref.assign_fpn_levels(boxes), minlength=6)[2:]
    assert (counts > 0).all() and counts.sum() == len(boxes)
