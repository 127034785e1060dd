"""Tests for lesson 06: roi_align, roi_align_backward, multiscale_roi_align (reference and twin)."""
import importlib

import numba
import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st

from mrcnn_edu import ops, reference as ref

RATIOS = [-1, 0, 1, 2, 3]
# Under NUMBA_DISABLE_JIT=1 (`make test`'s first step) the kernels run as plain Python: tests that
# call only the torch twins are skipped there, and the real-mask tests take fewer images.
TWINS_ONLY = pytest.mark.skipif(numba.config.DISABLE_JIT, reason="twins only: no numba kernel")
IMAGES = 2 if numba.config.DISABLE_JIT else 4


def random_rois(rng, k, batch, extent=120.0):
    """(k, 5) RoIs: some leave the map, some are tiny (< 1 cell), some bigger than the map, some inverted."""
    xy = rng.uniform(-0.3 * extent, extent, (k, 2))
    wh = np.exp(rng.uniform(np.log(0.05), np.log(2 * extent), (k, 2)))
    wh[: k // 10] *= -0.1  # a few inverted boxes (x2 < x1)
    index = rng.integers(0, batch, (k, 1)).astype(np.float64)
    return np.concatenate([index, xy, xy + wh], 1)


def five_by_five():
    return np.arange(25.0).reshape(1, 1, 5, 5)  # value = 5 * row + col


# --- hand examples from lesson 06 -----------------------------------------------------------

def test_hand_example_aligned():
    # box [0, 5] shifted by -0.5: bins [-0.5, 2) and [2, 4.5]; 2 x 2 samples per bin.
    # bin (0, 0) samples rows/cols 0.125 -> 0 (clamped) ... mean row 0.75, mean col 0.75
    out = ref.roi_align(five_by_five(), np.array([[0.0, 0, 0, 5, 5]]), 2, 1.0, 2, True)
    assert out[0, 0].tolist() == [[4.5, 7.0], [17.0, 19.5]]


def test_hand_example_one_sample_is_plain_bilinear_interpolation():
    # one sample per bin at the bin centre; aligned=False: the map value at (y, x) = 5y + x
    out = ref.roi_align(five_by_five(), np.array([[0.0, 1, 1, 3, 3]]), 2, 1.0, 1, False)
    assert out[0, 0].tolist() == [[1.5 * 5 + 1.5, 1.5 * 5 + 2.5], [2.5 * 5 + 1.5, 2.5 * 5 + 2.5]]


def test_aligned_false_forces_at_least_one_cell():
    tiny = np.array([[0.0, 2, 2, 2.1, 2.1]])
    out = ref.roi_align(five_by_five(), tiny, 1, 1.0, 1, False)
    assert out[0, 0, 0, 0] == pytest.approx(2.5 * 5 + 2.5)  # the box grew to [2, 3]
    out = ref.roi_align(five_by_five(), tiny, 1, 1.0, 1, True)
    assert out[0, 0, 0, 0] == pytest.approx(1.55 * 5 + 1.55)  # centre 2.05 - 0.5


def test_samples_beyond_the_margin_count_as_zero():
    ones = np.ones((1, 1, 4, 4))
    # one sample per bin: bin centres at x = -1.5 (outside [-1, W]) and x = -0.5 (inside)
    out = ref.roi_align(ones, np.array([[0.0, -2, 0, 0, 1]]), (1, 2), 1.0, 1, False)
    assert out[0, 0, 0].tolist() == [0.0, 1.0]
    out = ref.roi_align(ones, np.array([[0.0, 10, 10, 20, 20]]), 3, 1.0, -1, True)
    assert (out == 0).all()


def test_adaptive_sampling_counts_per_roi():
    # sampling_ratio <= 0: ceil(roi_h / h) samples per bin side, so a 2.5-cell bin uses 3 samples
    feats = np.zeros((1, 1, 1, 40))
    feats[0, 0, 0, :] = np.arange(40.0)
    out = ref.roi_align(feats, np.array([[0.0, 0.5, 0, 5.5, 1]]), (1, 2), 1.0, 0, True)
    # bins [0, 2.5), [2.5, 5) in x: samples at 5/12, 15/12, 25/12 and 2.5 + the same
    assert out[0, 0, 0].tolist() == pytest.approx([1.25, 3.75])


def test_empty_rois_and_validation():
    feats = np.zeros((2, 3, 5, 5), np.float32)
    assert ref.roi_align(feats, np.zeros((0, 5)), (2, 3), 1.0).shape == (0, 3, 2, 3)
    assert ref.roi_align(feats, np.zeros((0, 5)), 2, 1.0).dtype == np.float32
    twin = ops.roi_align(torch.zeros(2, 3, 5, 5), torch.zeros(0, 5), (2, 3), 1.0)
    assert twin.shape == (0, 3, 2, 3) and twin.dtype == torch.float32
    with pytest.raises(ValueError, match=r"\(K, 5\)"):
        ref.roi_align(feats, np.zeros((3, 4)), 2, 1.0)
    with pytest.raises(ValueError, match="batch"):
        ref.roi_align(feats, np.array([[2.0, 0, 0, 1, 1]]), 2, 1.0)
    with pytest.raises(ValueError, match=r"\(K, 5\)"):
        ops.roi_align(torch.zeros(1, 1, 4, 4), torch.zeros(3, 4), 2, 1.0)
    for bad in (2.0, -1.0):  # the twin checks the batch index like the reference
        with pytest.raises(ValueError, match=r"batch indices in \[0, 2\)"):
            ops.roi_align(torch.zeros(2, 3, 5, 5), torch.tensor([[bad, 0, 0, 1, 1]]), 2, 1.0)


# --- properties ------------------------------------------------------------------------------

@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2**32 - 1), st.sampled_from(RATIOS), st.booleans())
def test_linear_in_features_and_bounded(seed, ratio, aligned):
    rng = np.random.default_rng(seed)
    a, b = rng.normal(size=(2, 2, 2, 6, 7))
    rois = random_rois(rng, 6, 2, extent=8.0)
    out = lambda f: ref.roi_align(f, rois, (2, 3), 1.0, ratio, aligned)  # noqa: E731
    assert np.allclose(out(2 * a - b), 2 * out(a) - out(b), atol=1e-12)
    assert np.abs(out(a)).max() <= np.abs(a).max() + 1e-12  # a mean of convex combinations (or 0)


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2**32 - 1), st.sampled_from(RATIOS), st.booleans())
def test_backward_is_the_adjoint_of_forward(seed, ratio, aligned):
    # <roi_align(f), g> = <f, roi_align_backward(g)> for every f and g: the dot-product test
    rng = np.random.default_rng(seed)
    feats = rng.normal(size=(2, 3, 6, 5))
    rois = random_rois(rng, 5, 2, extent=7.0)
    grad = rng.normal(size=(5, 3, 2, 2))
    lhs = (ref.roi_align(feats, rois, 2, 1.0, ratio, aligned) * grad).sum()
    rhs = (feats * ref.roi_align_backward(grad, rois, feats.shape, 1.0, ratio, aligned)).sum()
    assert lhs == pytest.approx(rhs, abs=1e-10)


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 4), st.integers(1, 4), st.floats(0, 1))
def test_whole_cell_shift_of_map_and_box_changes_nothing(dy, dx, frac):
    rng = np.random.default_rng(dy * 7 + dx)
    feats = rng.normal(size=(1, 2, 16, 16))
    moved = np.roll(feats, (dy, dx), axis=(2, 3))
    box = np.array([[0.0, 3 + frac, 2, 9, 8.5 + frac]])
    shifted = box + np.array([0, dx, dy, dx, dy])
    assert np.allclose(ref.roi_align(feats, box, 3, 1.0, 2), ref.roi_align(moved, shifted, 3, 1.0, 2))


# --- reference vs twin ------------------------------------------------------------------------

@pytest.mark.parametrize("aligned", [True, False])
@pytest.mark.parametrize("ratio", RATIOS)
def test_twin_matches_reference(ratio, aligned):
    rng = np.random.default_rng(ratio + 2 + 10 * aligned)
    feats = rng.normal(size=(2, 3, 13, 11))
    rois = random_rois(rng, 60, 2, extent=13 * 8.0)
    for size in ((7, 7), (2, 5), 1):
        expected = ref.roi_align(feats, rois, size, 0.125, ratio, aligned)
        got = ops.roi_align(torch.tensor(feats), torch.tensor(rois), size, 0.125, ratio, aligned)
        assert got.dtype == torch.float64
        np.testing.assert_allclose(got.numpy(), expected, rtol=0, atol=1e-12)


def test_twin_float32_and_chunking(monkeypatch):
    twin = importlib.import_module("mrcnn_edu.ops.roi_align")  # the module, not the function
    rng = np.random.default_rng(1)
    feats = rng.normal(size=(1, 4, 20, 20)).astype(np.float32)
    rois = random_rois(rng, 40, 1, extent=20.0).astype(np.float32)
    expected = ref.roi_align(feats, rois, 3, 1.0, -1)
    monkeypatch.setattr(twin, "CHUNK_ELEMENTS", 500)  # force many small chunks
    got = ops.roi_align(torch.tensor(feats), torch.tensor(rois), 3, 1.0, -1)
    assert got.dtype == torch.float32
    np.testing.assert_allclose(got.numpy(), expected, atol=2e-5)


@pytest.mark.parametrize("half", [torch.float16, torch.bfloat16])
def test_half_precision_maps_sample_at_float32_positions(half):
    # RoIs far from the origin: in float16 a coordinate near 1500 px moves in 1 px steps, so
    # positions rounded to the map's dtype would sample the wrong cells.
    rng = np.random.default_rng(5)
    feats = rng.normal(size=(1, 2, 64, 64)).astype(np.float32)
    rois = np.array([[0, 1500.3, 1400.7, 1800.1, 1750.9], [0, 1025.6, 900.2, 1300.4, 1201.8]],
                    np.float32)
    f = torch.tensor(feats).to(half).requires_grad_()
    got = ops.roi_align(f, torch.tensor(rois), 7, 1 / 32, 2)
    assert got.dtype == half
    expected = ref.roi_align(f.detach().float().numpy(), rois, 7, 1 / 32, 2)  # exact positions
    np.testing.assert_allclose(got.float().detach().numpy(), expected,
                               atol=1e-2 if half == torch.float16 else 5e-2)
    got.float().sum().backward()
    assert f.grad.dtype == half and torch.isfinite(f.grad.float()).all()


@pytest.mark.parametrize("ratio", [-1, 2])
def test_twin_gradient_matches_reference_backward(ratio):
    rng = np.random.default_rng(3)
    feats = rng.normal(size=(2, 3, 9, 8))
    rois = random_rois(rng, 25, 2, extent=9 * 4.0)
    grad = rng.normal(size=(25, 3, 3, 2))
    f = torch.tensor(feats, requires_grad=True)
    ops.roi_align(f, torch.tensor(rois), (3, 2), 0.25, ratio).backward(torch.tensor(grad))
    expected = ref.roi_align_backward(grad, rois, feats.shape, 0.25, ratio)
    np.testing.assert_allclose(f.grad.numpy(), expected, atol=1e-12)


@pytest.mark.parametrize("ratio,aligned", [(-1, True), (2, True), (0, False), (3, False)])
def test_backward_twin_matches_reference_and_autograd(ratio, aligned):
    rng = np.random.default_rng(7)
    feats = rng.normal(size=(2, 3, 9, 8))
    rois = random_rois(rng, 30, 2, extent=9 * 4.0)
    grad = rng.normal(size=(30, 3, 4, 3))
    expected = ref.roi_align_backward(grad, rois, feats.shape, 0.25, ratio, aligned)
    got = ops.roi_align_backward(torch.tensor(grad), torch.tensor(rois), feats.shape, 0.25,
                                 ratio, aligned)
    np.testing.assert_allclose(got.numpy(), expected, atol=1e-12)
    f = torch.tensor(feats, requires_grad=True)
    ops.roi_align(f, torch.tensor(rois), (4, 3), 0.25, ratio, aligned).backward(torch.tensor(grad))
    np.testing.assert_allclose(f.grad.numpy(), expected, atol=1e-12)


@TWINS_ONLY
@pytest.mark.parametrize("ratio", [-1, 2])
def test_sample_bags_are_roi_align(ratio):
    """Summing each bag's weighted rows by hand gives roi_align's output, bin by bin; a bag's
    weights sum to the share of its samples that fell on the map (1 inside it)."""
    rng = np.random.default_rng(8)
    feats = torch.tensor(rng.normal(size=(2, 3, 10, 12)))
    rois = torch.tensor(random_rois(rng, 20, 2, extent=40.0))
    expected = ops.roi_align(feats, rois, (2, 3), 0.25, ratio)  # (K, C, 2, 3)
    rows = feats.permute(0, 2, 3, 1).reshape(-1, 3)  # (N * H * W, C)
    twin = importlib.import_module("mrcnn_edu.ops.roi_align")  # the module, not the function
    seen = torch.zeros(len(rois), dtype=torch.bool)
    for members, index, weight in twin.sample_bags(rois, (2, 3), (10, 12), 0.25, ratio):
        by_hand = (rows[index] * weight[..., None]).sum(3)  # (G, 2, 3, C)
        torch.testing.assert_close(by_hand.permute(0, 3, 1, 2), expected[members])
        assert (weight.sum(3) <= 1 + 1e-12).all() and (weight >= 0).all()
        seen[members] = True
    inside = (rois[:, 1:] >= 0).all(1) & (rois[:, 3] <= 48) & (rois[:, 4] <= 40)
    assert (expected[~seen] == 0).all()  # RoIs in no bag have no samples
    assert seen[inside & (rois[:, 3] > rois[:, 1]) & (rois[:, 4] > rois[:, 2])].all()


@TWINS_ONLY
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("aligned", [True, False])
def test_padded_groups_give_the_same_bins_and_gradients(monkeypatch, dtype, aligned):
    """The GPU's padded groups for adaptive sampling, run here on the CPU: fewer groups, bit
    for bit the unpadded outputs, and the same gradients up to the order in which the RoIs'
    shares of one cell are added."""
    twin = importlib.import_module("mrcnn_edu.ops.roi_align")  # the module, not the function
    rng = np.random.default_rng(11)
    feats = rng.normal(size=(2, 3, 40, 48))
    rois = random_rois(rng, 60, 2, extent=190.0)
    rois[:5, 3:] = rois[:5, 1:3]  # empty RoIs: no samples at all
    grad = torch.tensor(rng.normal(size=(60, 3, 7, 5)), dtype=dtype)
    results = {}
    for padded in (False, True):
        monkeypatch.setattr(twin, "pad_groups", lambda device, p=padded: p)
        f = torch.tensor(feats, dtype=dtype, requires_grad=True)
        out = ops.roi_align(f, torch.tensor(rois, dtype=dtype), (7, 5), 0.25, -1, aligned)
        out.backward(grad)
        groups = twin.sample_bags(torch.tensor(rois, dtype=dtype), (7, 5), (40, 48), 0.25, -1, aligned)
        results[padded] = out.detach(), f.grad, len(groups)
    assert torch.equal(results[True][0], results[False][0])
    torch.testing.assert_close(results[True][1], results[False][1], rtol=0,
                               atol=1e-12 if dtype == torch.float64 else 1e-5)
    assert results[True][2] < results[False][2]
    np.testing.assert_allclose(results[True][0].double().numpy(),
                               ref.roi_align(feats, rois, (7, 5), 0.25, -1, aligned),
                               rtol=0, atol=1e-12 if dtype == torch.float64 else 1e-4)


@TWINS_ONLY
@pytest.mark.parametrize("aligned", [True, False])
def test_gradcheck(aligned):
    rng = np.random.default_rng(4)
    f = torch.tensor(rng.normal(size=(1, 2, 6, 7)), requires_grad=True)
    rois = torch.tensor(random_rois(rng, 6, 1, extent=7.0))
    assert torch.autograd.gradcheck(lambda x: ops.roi_align(x, rois, 2, 1.0, -1, aligned), (f,))


def test_multiscale_pools_each_roi_from_its_level():
    rng = np.random.default_rng(5)
    feats = [rng.normal(size=(2, 3, 64 // 2 ** i, 48 // 2 ** i)) for i in range(4)]  # P2..P5 of 256x192
    rois = random_rois(rng, 40, 2, extent=256.0)
    out = ref.multiscale_roi_align(feats, rois, 3)
    levels = ref.assign_fpn_levels(rois[:, 1:])
    for k in range(len(rois)):
        one = ref.roi_align(feats[levels[k] - 2], rois[k:k + 1], 3, 2.0 ** -levels[k], 2, True)
        np.testing.assert_array_equal(out[k], one[0])
    got = ops.multiscale_roi_align([torch.tensor(f) for f in feats], torch.tensor(rois), 3)
    np.testing.assert_allclose(got.numpy(), out, atol=1e-12)
    empty = ops.multiscale_roi_align([torch.tensor(f) for f in feats], torch.zeros(0, 5), (2, 3))
    assert empty.shape == (0, 3, 2, 3)
    with pytest.raises(ValueError, match="4 maps"):
        ref.multiscale_roi_align(feats[:3], rois, 3)


@TWINS_ONLY
@pytest.mark.parametrize("ratio", [-1, 2])
@pytest.mark.parametrize("padded", [False, True])
def test_multiscale_twin_is_roi_align_on_each_level(monkeypatch, ratio, padded):
    """The twin builds every RoI's bags at once, each at its own level's scale and map size:
    bit for bit what `roi_align` gives on that RoI's level, gradients included, in the RoIs'
    order, also with adaptive sampling (groups that mix levels) and the GPU's padded groups."""
    twin = importlib.import_module("mrcnn_edu.ops.roi_align")  # the module, not the function
    monkeypatch.setattr(twin, "pad_groups", lambda device: padded)
    rng = np.random.default_rng(12)
    feats = [torch.tensor(rng.normal(size=(2, 3, 64 // 2 ** i, 48 // 2 ** i)), requires_grad=True)
             for i in range(4)]
    rois = torch.tensor(random_rois(rng, 80, 2, extent=900.0))
    got = ops.multiscale_roi_align(feats, rois, (3, 2), sampling_ratio=ratio)
    grad = torch.tensor(rng.normal(size=got.shape))
    got.backward(grad)
    levels = ops.assign_fpn_levels(rois[:, 1:]) - 2
    assert set(levels.tolist()) == {0, 1, 2, 3}  # every level pools some RoI
    for i, f in enumerate(feats):
        picked = torch.nonzero(levels == i).flatten()
        g = f.detach().requires_grad_()
        one = ops.roi_align(g, rois[picked], (3, 2), 2.0 ** -(i + 2), ratio)
        one.backward(grad[picked])
        assert torch.equal(got[picked], one)
        torch.testing.assert_close(f.grad, g.grad, rtol=0, atol=1e-12)
    expected = ref.multiscale_roi_align([f.detach().numpy() for f in feats], rois.numpy(), (3, 2),
                                        sampling_ratio=ratio)
    np.testing.assert_allclose(got.detach().numpy(), expected, atol=1e-12)
    half = ops.multiscale_roi_align([f.detach().half() for f in feats], rois.float(), (3, 2),
                                    sampling_ratio=ratio)
    assert half.dtype == torch.float16
    torch.testing.assert_close(half.double(), got.detach(), rtol=1e-2, atol=1e-2)


# --- end to end: ground-truth masks survive a trip through 28 x 28 ------------------------------

def test_real_masks_roundtrip_through_roi_align():
    from mrcnn_edu.data import CocoDataset, resolve_data_root
    ds = CocoDataset(resolve_data_root(), "val2017")
    ious = []
    for i in range(IMAGES):
        target = ds.load_target(i)
        masks, boxes = target["masks"].numpy(), target["boxes"].numpy().astype(np.float64)
        small = ref.mask_targets(masks, np.arange(len(masks)), boxes, 28)
        back = ref.paste_masks(small, boxes, masks.shape[1:])
        inter = (back & (masks > 0)).sum((1, 2))
        union = (back | (masks > 0)).sum((1, 2))
        ious += list(inter / np.maximum(union, 1))
    assert np.mean(ious) > 0.8


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_twin_on_cuda_float32():
    rng = np.random.default_rng(6)
    feats = rng.normal(size=(2, 4, 16, 12)).astype(np.float32)
    rois = random_rois(rng, 50, 2, extent=16 * 4.0).astype(np.float32)
    expected = ref.roi_align(feats, rois, 7, 0.25, -1)
    f = torch.tensor(feats, device="cuda", requires_grad=True)
    got = ops.roi_align(f, torch.tensor(rois, device="cuda"), 7, 0.25, -1)
    np.testing.assert_allclose(got.detach().cpu().numpy(), expected, atol=1e-4)
    got.sum().backward()
    grad = ref.roi_align_backward(np.ones(expected.shape, np.float32), rois, feats.shape, 0.25, -1)
    np.testing.assert_allclose(f.grad.cpu().numpy(), grad, atol=1e-4)
    pooled = ops.roi_pool(f.detach(), torch.tensor(rois, device="cuda"), 7, 0.25)
    np.testing.assert_array_equal(pooled.cpu().numpy(), ref.roi_pool(feats, rois, 7, 0.25))
