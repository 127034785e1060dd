"""The checkers of lessons 06-09 and 11 can be trusted: each passes the reference, the torch twin
(where one exists) and the written solution, and fails every mutant with that mutant's diagnosis."""
import ast
import dataclasses
import inspect
from pathlib import Path

import numba
import pytest
import torch

from mrcnn_edu import ops
from mrcnn_edu.config import Config
from mrcnn_edu.exercises import check
from mrcnn_edu.exercises import (stage_06_roi_align, stage_07_masks, stage_08_rpn,
                                 stage_09_roi_heads, stage_11_ap)
from mrcnn_edu.model.roi_heads import RoIHeads
from mrcnn_edu.model.rpn import RPN
from mrcnn_edu.ops.coco_eval import precision_recall

LESSONS = Path(__file__).resolve().parents[1] / "lessons" / "src"
STAGES = (stage_06_roi_align, stage_07_masks, stage_08_rpn, stage_09_roi_heads, stage_11_ap)
EXERCISES = [ex for stage in STAGES for ex in stage.EXERCISES]
MUTANTS = [(ex, m) for ex in EXERCISES for m in ex.mutants]


@pytest.fixture(autouse=True, scope="module")
def one_numba_thread():
    """The checks call the reference kernels hundreds of times on one small RoI each: starting
    the parallel kernels' threads would cost more than the work."""
    threads = numba.get_num_threads()
    numba.set_num_threads(1)
    yield
    numba.set_num_threads(threads)


# ---------------------------------------------------------------- torch twins of the contracts

def roi_align_single_twin(feature, box, output_size, spatial_scale, sampling_ratio=-1,
                          aligned=True):
    rois = torch.cat([box.new_zeros(1), box])[None]  # (1, 5)
    return ops.roi_align(feature[None], rois, output_size, spatial_scale, sampling_ratio,
                         aligned)[0]


def mask_target_single_twin(gt_mask, box, size=28):
    return ops.mask_targets(gt_mask[None], torch.zeros(1, dtype=torch.int64), box[None], size)[0]


def select_level_proposals_twin(objectness, deltas, anchors, image_size, pre_nms_top_n=1000,
                                post_nms_top_n=1000, nms_thresh=0.7, min_size=1e-3):
    """The model's own `RPN.select_proposals`, run on a single level."""
    rpn = RPN(1, anchor_strides=(16,), anchor_sizes=(64,), anchor_aspect_ratios=(1.0,),
              pre_nms_top_n_train=pre_nms_top_n, post_nms_top_n_train=post_nms_top_n,
              pre_nms_top_n_test=pre_nms_top_n, post_nms_top_n_test=post_nms_top_n,
              nms_thresh=nms_thresh, min_size=min_size, fg_iou_thresh=0.7, bg_iou_thresh=0.3,
              batch_size_per_image=256, positive_fraction=0.5).eval()
    return rpn.select_proposals([objectness], [deltas], [anchors], image_size)


def sample_rois_twin(proposals, gt_boxes, gt_labels, batch_size_per_image=512,
                     positive_fraction=0.25, generator=0):
    """The model's own `RoIHeads.sample` (its random picks use a torch.Generator)."""
    cfg = Config(num_classes=3, roi_batch_size_per_image=batch_size_per_image,
                 roi_positive_fraction=positive_fraction)
    heads = RoIHeads.from_config(cfg, in_channels=4)
    return heads.sample(proposals, {"boxes": gt_boxes, "labels": gt_labels}, generator)


def average_precision_twin(scores, is_true_positive, num_gt):
    precision, _ = precision_recall(scores, is_true_positive, torch.zeros_like(is_true_positive),
                                    num_gt)  # (R,)
    return precision.mean()


TWINS = {
    "roi_align_single": roi_align_single_twin,
    "mask_target_single": mask_target_single_twin,
    "mask_loss": ops.mask_loss,
    "select_level_proposals": select_level_proposals_twin,
    "average_precision": average_precision_twin,
}


# ---------------------------------------------------------------- the checks

@pytest.mark.parametrize("ex", EXERCISES, ids=lambda ex: ex.name)
def test_reference_passes(ex):
    result = check(ex, ex.reference, verbose=False)
    assert result and result.attempted
    assert {kind for _, kind, _, _ in result.cases} == {"hand", "edge", "random"}


@pytest.mark.parametrize("ex", EXERCISES, ids=lambda ex: ex.name)
def test_solution_passes(ex):
    assert check(ex, ex.solution, verbose=False)


@pytest.mark.parametrize("name", sorted(TWINS))
def test_torch_twin_passes(name):
    ex = next(ex for ex in EXERCISES if ex.name == name)
    assert check(ex, TWINS[name], verbose=False)


def test_roi_sampling_twin_is_the_models_sampler():
    """`RoIHeads.sample` draws with a torch.Generator, so only cases where every candidate is
    taken are comparable pick for pick: there the model's sampler passes the checker."""
    ex = stage_09_roi_heads.SAMPLE_ROIS
    whole = [c for c in ex.cases() if stage_09_roi_heads.takes_every_candidate(*c.args)]
    assert len(whole) >= 3
    assert check(dataclasses.replace(ex, cases=lambda: whole), sample_rois_twin, verbose=False)


@pytest.mark.parametrize("ex", EXERCISES, ids=lambda ex: ex.name)
def test_at_least_three_mutants(ex):
    assert len(ex.mutants) >= 3
    assert len({m.name for m in ex.mutants}) == len(ex.mutants)


@pytest.mark.parametrize("ex, mutant", MUTANTS, ids=lambda v: getattr(v, "name", ""))
def test_mutant_fails_with_its_diagnosis(ex, mutant):
    result = check(ex, mutant.fn, verbose=False)
    assert result.attempted and not result
    assert result.error is None  # a mutant is a wrong answer, not a crash
    assert result.mutant == mutant.name, result.diagnosis


def test_stub_is_not_attempted(capsys):
    def bilinear_sample(feature, y, x):
        raise NotImplementedError
    result = check("bilinear_sample", bilinear_sample)
    assert not result and not result.attempted
    assert "not attempted" in capsys.readouterr().out


def test_report_names_the_mistake(capsys):
    check("average_precision", stage_11_ap.ap_no_envelope)
    out = capsys.readouterr().out
    assert "FAIL" in out and "Most likely:" in out and "non-increasing" in out


@pytest.mark.parametrize("ex", EXERCISES, ids=lambda ex: ex.name)
def test_lesson_has_the_stub_and_its_check(ex):
    """The lesson's "your turn" stub states the exercise's contract, raises NotImplementedError
    (so the committed notebook prints "not attempted"), and is followed by its check call."""
    path, = LESSONS.glob(f"{ex.lesson:02d}_*.py")
    source = path.read_text()
    stub = next(node for node in ast.walk(ast.parse(source))
                if isinstance(node, ast.FunctionDef) and node.name == ex.name)
    assert ast.get_docstring(stub) == inspect.cleandoc(ex.contract.split("\n\n", 1)[1])
    namespace = {}
    exec(compile(ast.Module([stub], type_ignores=[]), str(path), "exec"), namespace)
    result = check(ex, namespace[ex.name], verbose=False)
    assert not result.attempted and not result
    assert f'check("{ex.name}", {ex.name})' in source[source.index(f"def {ex.name}("):]
