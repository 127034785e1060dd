"""The checkers of lessons 01-05's exercises can be trusted (issue 11): each passes the reference,
the torch twin and the written solution, and fails every mutant, naming that mutant's mistake."""
import numpy as np
import pytest
import torch

from mrcnn_edu import ops
from mrcnn_edu.exercises import (EXERCISES, check, stage_01_boxes, stage_02_anchors,
                                 stage_03_box_deltas, stage_04_nms_matching, stage_05_fpn_levels)

STAGE_EXERCISES = [ex for stage in (stage_01_boxes, stage_02_anchors, stage_03_box_deltas,
                                    stage_04_nms_matching, stage_05_fpn_levels) for ex in stage.EXERCISES]
NAMES = [ex.name for ex in STAGE_EXERCISES]
MUTANTS = [(ex, m) for ex in STAGE_EXERCISES for m in ex.mutants]


def level_anchors_twin(image_size, stride, size, aspect_ratios=(0.5, 1.0, 2.0)):
    """The torch twin of one level: ops.generate_anchors restricted to it."""
    return ops.generate_anchors(image_size, (stride,), (size,), aspect_ratios, dtype=torch.float64)[0]


TWINS = {"level_anchors": level_anchors_twin}


def test_the_lessons_exercises_are_registered():
    assert NAMES == ["box_iou", "level_anchors", "encode_boxes", "decode_boxes", "nms",
                     "match_anchors", "assign_fpn_levels"]
    assert all(EXERCISES[name] is ex for name, ex in zip(NAMES, STAGE_EXERCISES))


@pytest.mark.parametrize("ex", STAGE_EXERCISES, ids=NAMES)
def test_reference_twin_and_solution_pass(ex):
    twin = TWINS.get(ex.name) or getattr(ops, ex.name)
    for fn in (ex.reference, twin, ex.solution):
        result = check(ex, fn, verbose=False)
        assert result and result.attempted and result.diagnosis is None, (ex.name, fn)
        assert len(result.cases) == len(ex.cases())


@pytest.mark.parametrize("ex", STAGE_EXERCISES, ids=NAMES)
def test_cases_cover_hand_edge_and_random_and_each_exercise_has_three_mutants(ex):
    kinds = {case.kind for case in ex.cases()}
    assert kinds == {"hand", "edge", "random"}
    assert len(ex.mutants) >= 3
    assert len({m.name for m in ex.mutants}) == len(ex.mutants)
    assert len(ex.hints) == 2 and ex.contract.startswith(ex.name + "(")


@pytest.mark.parametrize("ex, mutant", MUTANTS, ids=[f"{ex.name}-{m.name}" for ex, m in MUTANTS])
def test_every_mutant_fails_and_is_named(ex, mutant):
    result = check(ex, mutant.fn, verbose=False)
    assert result.attempted and not result
    assert result.mutant == mutant.name and result.diagnosis == mutant.diagnosis


def test_mutant_report_prints_the_diagnosis(capsys):
    ex = stage_01_boxes.BOX_IOU
    check(ex, stage_01_boxes.plus_one_widths)
    out = capsys.readouterr().out
    assert "Most likely: your widths use x2 - x1 + 1 (the old Caffe convention, lesson 01)" in out
    assert "expected: [[0.1667]]" in out and "got:      [[0.25]]" in out  # the hand example, 1/6


def test_hand_examples_hold_the_lessons_numbers():
    """The hand cases are the lessons' numbers, checked here by hand, not by the reference."""
    cases = {ex.name: ex.cases()[0] for ex in STAGE_EXERCISES}
    np.testing.assert_allclose(stage_01_boxes.BOX_IOU.reference(*cases["box_iou"].args), [[4 / 24]])
    enc = stage_03_box_deltas.ENCODE_BOXES.reference(*cases["encode_boxes"].args)
    np.testing.assert_allclose(enc, [[1.0, 1.5, np.log(2), np.log(4)]])
    dec = stage_03_box_deltas.DECODE_BOXES.reference(*cases["decode_boxes"].args)
    np.testing.assert_allclose(dec, [[5.0, 0, 25, 40]])
    assert stage_04_nms_matching.NMS.reference(*cases["nms"].args).tolist() == [0, 2]
    fpn = stage_05_fpn_levels.ASSIGN_FPN_LEVELS
    assert fpn.reference(*fpn.cases()[1].args).tolist() == [2, 3, 4, 5]
    s = np.sqrt(2)
    one_cell = stage_02_anchors.LEVEL_ANCHORS.reference(*cases["level_anchors"].args)  # ratios 0.5, 1, 2
    np.testing.assert_allclose(one_cell, [[-16 * s, -8 * s, 16 * s, 8 * s], [-16, -16, 16, 16],
                                          [-8 * s, -16 * s, 8 * s, 16 * s]])


def test_edge_cases_that_pin_a_convention_are_exact():
    """The cases the mutants hinge on hold what their names say."""
    nms_cases = {c.name: c for c in stage_04_nms_matching.NMS.cases()}
    boxes, scores, thr = nms_cases["IoU exactly at the threshold 0.5 is kept"].args
    assert ops.box_iou(torch.tensor(boxes), torch.tensor(boxes))[0, 1].item() == thr
    fpn = {c.name: c for c in stage_05_fpn_levels.ASSIGN_FPN_LEVELS.cases()}
    boxes = fpn["x2 - x1 a hair under 112 and 448: the 1e-6"].args[0][:5]
    widths = boxes[:, 2] - boxes[:, 0]
    sides = np.array([112, 112, 112, 448, 448])
    assert np.all((widths < sides) & (widths > sides - 1e-4))  # a hair under: float32 rounding
    dec = {c.name: c for c in stage_03_box_deltas.DECODE_BOXES.cases()}
    assert dec["lesson 03's wild delta dw = 20: needs the clamp"].args[1][0, 2] > stage_03_box_deltas.CLIP
