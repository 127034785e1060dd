"""`exercises.use`: the real model trains with a learner's functions swapped in (issue 11).

Three iterations of lesson 10's run (shapes dataset, `tiny` preset at 64 pixels, one thread,
fixed seed): with the written numpy solutions of lessons 01-05 in place of the torch twins the
losses are those of the package's own functions; with a mutant they are not.
"""
import contextlib
import dataclasses
import functools
import io

import numpy as np
import pytest
import torch

from mrcnn_edu import ops
from mrcnn_edu.config import preset
from mrcnn_edu.data import make_shapes_dataset
from mrcnn_edu.engine import runlog
from mrcnn_edu.engine.train import train
from mrcnn_edu.exercises import use
from mrcnn_edu.exercises.solutions import (stage_01_boxes, stage_03_box_deltas, stage_04_nms_matching,
                                           stage_05_fpn_levels)
from mrcnn_edu.exercises.stage_01_boxes import plus_one_widths
from mrcnn_edu.model import LOSS_KEYS, rpn, roi_heads

SOLUTIONS = {
    "box_iou": stage_01_boxes.box_iou,
    "encode_boxes": stage_03_box_deltas.encode_boxes,
    "decode_boxes": stage_03_box_deltas.decode_boxes,
    "nms": stage_04_nms_matching.nms,
    "match_anchors": stage_04_nms_matching.match_anchors,
    "assign_fpn_levels": stage_05_fpn_levels.assign_fpn_levels,
}


@pytest.fixture(scope="module")
def shapes_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("shapes")
    return make_shapes_dataset(root, splits={"train2017": 4}, seed=0, image_size=(64, 64),
                               size_range=(12, 28), empty_prob=0.0)


@pytest.fixture(scope="module")
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def short_run(root, out):
    """Losses of 3 iterations of the tiny model on 64-pixel shapes: (iterations, 5) float64."""
    cfg = dataclasses.replace(preset("tiny"), min_size=64, max_size=64, max_iters=3,
                              warmup_iters=1, lr_steps=(2,), checkpoint_every=3, seed=0,
                              hflip_prob=0.0)
    with contextlib.redirect_stdout(io.StringIO()):
        train(cfg, root, out, device="cpu", evaluate_after=False, progress=False)
    records = runlog.read_log(out / "log.jsonl")
    return np.array([[r[k] for k in LOSS_KEYS] for r in records])


def assert_same_run(losses, package_losses):
    """The same losses up to float rounding. Iteration 0 runs the same weights on the same
    batch, so only the order of float sums differs (measured: at most 2e-7 relative). The later
    iterations follow AdamW updates, which divide each gradient by its own running size: a
    rounding-level difference in a near-zero gradient becomes a step-sized one in that weight,
    so the next losses move by more, and by how much depends on the CPU's kernels (1.8e-4 at
    iteration 2 on one AVX-512 machine for the batched-vs-looped RoIAlign). A wrong stage moves
    iteration 0 itself by 1e-4 to 0.3 (the mutant below)."""
    assert losses.shape == package_losses.shape == (3, 5)
    np.testing.assert_allclose(losses[0], package_losses[0], rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(losses, package_losses, rtol=2e-3, atol=1e-6)


def counted(calls, name, fn):
    def wrapper(*args, **kwargs):
        calls[name] = calls.get(name, 0) + 1
        return fn(*args, **kwargs)
    return wrapper


@pytest.fixture(scope="module")
def package_losses(shapes_root, tmp_path_factory, one_thread):
    return short_run(shapes_root, tmp_path_factory.mktemp("package"))


def test_solutions_swapped_in_train_to_the_same_losses(shapes_root, tmp_path, package_losses):
    calls = {}
    swaps = {name: counted(calls, name, fn) for name, fn in SOLUTIONS.items()}
    with use(**swaps):
        losses = short_run(shapes_root, tmp_path)
    # every swapped function was really called by the model (else equality would prove nothing)
    assert set(calls) == set(SOLUTIONS), calls
    assert_same_run(losses, package_losses)


def test_a_mutant_swapped_in_changes_the_losses(shapes_root, tmp_path, package_losses):
    with use(box_iou=plus_one_widths):
        losses = short_run(shapes_root, tmp_path)
    with pytest.raises(AssertionError):
        assert_same_run(losses, package_losses)
    # it moves the first iteration itself, before any update could amplify a rounding
    assert not np.allclose(losses[0], package_losses[0], rtol=1e-4, atol=1e-6)


def test_stages_the_model_calls_in_batched_form_still_run_when_swapped(shapes_root, tmp_path,
                                                                      package_losses):
    """The model pools all FPN levels in one call and builds all images' mask targets in one
    call: a swapped roi_align or mask_targets runs through a loop over it, with the same losses,
    and both names are put back afterwards."""
    calls = {}
    # the package's own twins, counted; functools.wraps keeps their module, so `use` passes
    # them tensors (with gradients) as it does any torch twin
    swaps = {name: functools.wraps(getattr(ops, name))(counted(calls, name, getattr(ops, name)))
             for name in ("roi_align", "mask_targets")}
    with use(**swaps):
        losses = short_run(shapes_root, tmp_path)
    assert calls["roi_align"] >= 6 and calls["mask_targets"] >= 3, calls  # per level, per image
    assert_same_run(losses, package_losses)
    assert roi_heads.multiscale_roi_align is ops.multiscale_roi_align
    assert roi_heads.batch_mask_targets is ops.batch_mask_targets


def test_use_restores_every_name_even_after_an_error():
    originals = (ops.nms, rpn.nms, roi_heads.box_iou, ops.box_iou)
    with pytest.raises(RuntimeError, match="inside"):
        with use(nms=SOLUTIONS["nms"], box_iou=SOLUTIONS["box_iou"]):
            assert ops.nms is not originals[0] and rpn.nms is ops.nms
            assert roi_heads.box_iou is ops.box_iou is not originals[3]
            raise RuntimeError("inside")
    assert (ops.nms, rpn.nms, roi_heads.box_iou, ops.box_iou) == originals


def test_batched_nms_uses_the_swapped_nms():
    calls = {}
    boxes = torch.tensor([[0.0, 0, 10, 10], [1, 1, 11, 11], [1, 1, 11, 11]])
    scores, labels = torch.tensor([0.9, 0.8, 0.7]), torch.tensor([1, 1, 2])
    with use(nms=counted(calls, "nms", SOLUTIONS["nms"])):
        keep = ops.batched_nms(boxes, scores, labels, 0.5)
    assert calls == {"nms": 1}
    assert keep.dtype == torch.int64 and keep.tolist() == [0, 2]


def test_numpy_function_gets_and_returns_tensors_of_the_callers_kind():
    a = torch.tensor([[0.0, 0, 4, 4]], dtype=torch.float32)
    b = torch.tensor([[2.0, 0, 6, 4]], dtype=torch.float32)
    with use(box_iou=SOLUTIONS["box_iou"]):
        iou = ops.box_iou(a, b)
    assert isinstance(iou, torch.Tensor) and iou.dtype == torch.float32
    assert iou.item() == pytest.approx(1 / 3)


def test_torch_function_is_passed_tensors_as_they_are():
    seen, twin = [], ops.box_iou  # the twin itself: inside the block, ops.box_iou is torch_iou

    def torch_iou(boxes1, boxes2):
        seen.append(type(boxes1))
        return twin(boxes1, boxes2).clamp(min=0)  # .clamp: fails on numpy, runs on torch
    a = torch.tensor([[0.0, 0, 4, 4]])
    with use(box_iou=torch_iou):
        assert ops.box_iou(a, a).item() == 1.0
        assert ops.box_iou(a, a).item() == 1.0
    assert seen[-1] is torch.Tensor


def test_numpy_function_refuses_a_tensor_that_needs_a_gradient():
    a = torch.tensor([[0.0, 0, 4, 4]], requires_grad=True)
    with use(box_iou=SOLUTIONS["box_iou"]):
        with pytest.raises(RuntimeError, match="gradient"):
            ops.box_iou(a, a)


def test_unknown_names_and_non_functions_are_refused():
    with pytest.raises(ValueError, match="no mrcnn_edu.ops function called boxiou.*box_iou"):
        with use(boxiou=SOLUTIONS["box_iou"]):
            pass
    with pytest.raises(TypeError, match="expected a function"):
        with use(nms=0.5):
            pass
