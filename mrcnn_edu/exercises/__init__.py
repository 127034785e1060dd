"""Checked "your turn" exercises: the learner writes a stage, `check` runs it against the reference.

    from mrcnn_edu.exercises import check, hint, solution
    check("box_iou", my_box_iou)      # one line per case; truthy only when all pass
    hint("box_iou")                   # a nudge; call again for the formula, then the solution
    with use(nms=my_nms): train(...)  # the real model trains with your function (use.py)

One module per stage lesson (stage_NN_*.py) defines its `Exercise`s, their cases and their
mutants (realistic wrong answers that `check` uses to name a mistake); the written solutions
live in `solutions/`, not in the lesson pages. `EXERCISES` maps each exercise's name to it.
"""
from . import (stage_01_boxes, stage_02_anchors, stage_03_box_deltas, stage_04_nms_matching,
               stage_05_fpn_levels)
from . import stage_06_roi_align, stage_07_masks, stage_08_rpn, stage_09_roi_heads, stage_11_ap
from .core import Case, CheckResult, Exercise, Mutant, check, hint, solution
from .use import use

STAGES = (stage_01_boxes, stage_02_anchors, stage_03_box_deltas, stage_04_nms_matching,
          stage_05_fpn_levels, stage_06_roi_align, stage_07_masks, stage_08_rpn,
          stage_09_roi_heads, stage_11_ap)
EXERCISES = {ex.name: ex for stage in STAGES for ex in stage.EXERCISES}

__all__ = ["Case", "CheckResult", "EXERCISES", "Exercise", "Mutant", "check", "hint", "solution",
           "use"]
