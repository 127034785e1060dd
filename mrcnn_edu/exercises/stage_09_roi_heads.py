"""Lesson 09's "your turn": `sample_rois`, the RoI heads' training-time sampling of one image,
checked against the package's steps in the order `RoIHeads.sample` runs them
(mrcnn_edu/model/roi_heads.py).

Shape legend: N proposals, G ground-truth boxes, S sampled RoIs. Boxes are float
(x1, y1, x2, y2) in image pixels; labels 0 is background, 1..K are classes.
The steps: the ground-truth boxes are appended to the proposals; each box is matched to the
ground truth of highest IoU (the first on ties) and is foreground at IoU >= 0.5, background
below (no ignored band); `sample_labels` (lesson 04) keeps at most batch_size_per_image of them
with at most positive_fraction foreground; the sampled boxes (in index order) get the class of
their match, or 0, and regression targets encoded with the box head's weights (10, 10, 5, 5).
The random pick is `sample_labels`' with the given seed, so one answer is right pick for pick;
the model's own `RoIHeads.sample` draws with a torch.Generator instead.
Mutants: the classic slips, each a full wrong function.
"""
import numpy as np

from mrcnn_edu import reference
from mrcnn_edu.reference.boxes import as_boxes
from .core import Case, Exercise, Mutant, compare_arrays, prefix_shrinker
from .solutions import stage_09_roi_heads as solutions

BOX_HEAD_WEIGHTS = (10.0, 10.0, 5.0, 5.0)


# ---------------------------------------------------------------- reference

def check_inputs(proposals, gt_boxes, gt_labels):
    proposals, gt_boxes = as_boxes(proposals, "proposals"), as_boxes(gt_boxes, "gt_boxes")
    gt_labels = np.asarray(gt_labels)
    if gt_labels.shape != (len(gt_boxes),) or gt_labels.dtype.kind not in "iu":
        raise ValueError(f"gt_labels must be integers of shape ({len(gt_boxes)},), got "
                         f"{gt_labels.dtype} {gt_labels.shape}")
    return proposals, gt_boxes.astype(proposals.dtype), gt_labels.astype(np.int64)


def candidate_labels(proposals, gt_boxes, fg_thresh=0.5, bg_low=0.0, strict=False):
    """Boxes (N + G, 4) = proposals then gt, their matched gt (argmax) and 1 / 0 / -1 labels."""
    boxes = np.concatenate([proposals, gt_boxes])  # (N + G, 4)
    iou = reference.box_iou(gt_boxes, boxes)  # (G, N + G)
    if strict or bg_low > 0:  # the mutants' rules, written out
        best = iou.max(axis=0) if len(gt_boxes) else np.zeros(len(boxes))
        matched = iou.argmax(axis=0) if len(gt_boxes) else np.zeros(len(boxes), np.int64)
        fg = np.where(best > fg_thresh if strict else best >= fg_thresh, 1, 0)
        if len(gt_boxes):
            fg = np.where((fg == 0) & (best < bg_low), -1, fg)  # too far from any object: unused
        return boxes, matched.astype(np.int64), fg.astype(np.int64)
    matched, fg = reference.match_anchors(iou, fg_thresh, fg_thresh, allow_low_quality=False)
    return boxes, matched, fg


def sample_rois(proposals, gt_boxes, gt_labels, batch_size_per_image=512, positive_fraction=0.25,
                generator=0):
    """`RoIHeads.sample` with the reference functions: boxes, labels, matched, targets."""
    proposals, gt_boxes, gt_labels = check_inputs(proposals, gt_boxes, gt_labels)
    boxes, matched, fg = candidate_labels(proposals, gt_boxes)  # (N + G, 4), (N + G,), (N + G,)
    fg = reference.sample_labels(fg, batch_size_per_image, positive_fraction, generator)
    keep = np.flatnonzero(fg >= 0)  # (S,) in index order
    boxes, matched, fg = boxes[keep], matched[keep], fg[keep]
    if len(gt_boxes) == 0:  # every RoI is background: labels 0, nothing to regress to
        return boxes, np.zeros_like(fg), matched, np.zeros_like(boxes)
    labels = np.where(fg == 1, gt_labels[matched], 0)  # (S,)
    targets = reference.encode_boxes(boxes, gt_boxes[matched], BOX_HEAD_WEIGHTS)  # (S, 4)
    return boxes, labels, matched, targets


def takes_every_candidate(proposals, gt_boxes, gt_labels, batch_size_per_image=512,
                          positive_fraction=0.25, generator=0):
    """True when the sample is every box (no random choice): then any sampler agrees."""
    _, _, fg = candidate_labels(*check_inputs(proposals, gt_boxes, gt_labels)[:2])
    num_pos = min(int((fg == 1).sum()), int(batch_size_per_image * positive_fraction))
    return (num_pos == (fg == 1).sum()
            and (fg == 0).sum() <= batch_size_per_image - num_pos)


def compare_samples(expected, actual):
    """Boxes and labels exactly; matched index and targets on the foreground rows only (the
    loss never reads them on background rows)."""
    if not isinstance(actual, (tuple, list)) or len(actual) != 4:
        return False, (f"expected a tuple of 4 arrays (boxes, labels, matched, targets), got "
                       f"{type(actual).__name__}")
    for i, name in ((0, "boxes"), (1, "labels")):
        ok, detail = compare_arrays(expected[i], actual[i], where=f"output [{i}] ({name}): ")
        if not ok:
            return False, detail
    fg = np.asarray(expected[1]) > 0  # (S,)
    for i, name in ((2, "matched"), (3, "targets")):
        got = np.asarray(actual[i])
        if got.shape != np.asarray(expected[i]).shape:
            return False, f"output [{i}] ({name}): shape {got.shape}, expected {expected[i].shape}"
        ok, detail = compare_arrays(expected[i][fg], got[fg],
                                    where=f"output [{i}] ({name}), foreground rows: ")
        if not ok:
            return False, detail
    return True, ""


# ---------------------------------------------------------------- cases

def random_image(rng, num_proposals, num_gt, height=480, width=640):
    """Ground truth and RPN-like proposals: jittered copies of the objects plus clutter."""
    xy = rng.uniform(0, [width * 0.7, height * 0.7], (num_gt, 2))
    wh = rng.uniform(24, [width * 0.3, height * 0.3], (num_gt, 2))
    gt = np.concatenate([xy, xy + wh], axis=1)  # (G, 4)
    near = gt[rng.integers(0, num_gt, num_proposals // 2)]
    size = np.concatenate([near[:, 2:] - near[:, :2]] * 2, axis=1)
    near = near + rng.normal(0, 0.15, near.shape) * size
    xy = rng.uniform(0, [width, height], (num_proposals - len(near), 2))
    far = np.concatenate([xy, xy + rng.uniform(8, 200, xy.shape)], axis=1)
    proposals = np.concatenate([near, far])
    proposals[:, 2:] = np.maximum(proposals[:, 2:], proposals[:, :2] + 1.0)  # positive sides
    return proposals, gt, rng.integers(1, 81, num_gt)


def sample_rois_cases():
    b = lambda *rows: np.array(rows, dtype=np.float64).reshape(-1, 4)  # noqa: E731
    rng = np.random.default_rng(9)
    gt2 = b([10, 10, 50, 50], [60, 20, 90, 80])
    hand = b([12, 12, 48, 52], [30, 30, 70, 70], [62, 25, 92, 78], [0, 0, 100, 100],
             [200, 200, 220, 220])
    crowd = b(*[[i, 0, 40 + i, 40] for i in range(10)], [100, 100, 140, 140], [300, 0, 340, 40])
    cases = [
        Case("2 objects, 5 proposals, everything sampled", "hand",
             (hand, gt2, np.array([3, 1]), 512, 0.25, 0)),
        Case("IoU exactly 0.5 is foreground", "edge",
             (b([0, 0, 10, 5], [0, 0, 10, 4.9]), b([0, 0, 10, 10]), np.array([2]), 512, 0.25, 0)),
        Case("a proposal far from every object (IoU < 0.1) is background", "edge",
             (b([300, 300, 340, 330], [12, 10, 50, 48]), gt2, np.array([5, 7]), 512, 0.25, 0)),
        Case("equally close to two objects: the first one wins", "edge",
             (b([2.5, 0, 12.5, 10]), b([0, 0, 10, 10], [5, 0, 15, 10]), np.array([1, 2]),
              512, 0.25, 0)),
        Case("no ground truth (G = 0): all background", "edge",
             (hand, b(), np.zeros(0, np.int64), 512, 0.25, 0)),
        Case("no proposals (N = 0): the ground-truth boxes alone", "edge",
             (b(), gt2, np.array([4, 6]), 512, 0.25, 0)),
        Case("12 foreground, batch 8 at 25%: 2 foreground, 2 background (seed 0)", "edge",
             (crowd, b([0, 0, 40, 40], [4, 0, 44, 40]), np.array([1, 2]), 8, 0.25, 0)),
        Case("more background than the batch: 4 of them (seed 5)", "edge",
             (crowd[::-1], b([100, 100, 140, 140]), np.array([9]), 4, 0.25, 5)),
    ]
    for num_proposals, num_gt, batch, seed in ((2000, 6, 512, 3), (1000, 12, 128, 4)):
        proposals, gt, labels = random_image(rng, num_proposals, num_gt)
        cases.append(Case(f"random: {num_proposals} proposals, {num_gt} objects, batch {batch}",
                          "random", (proposals, gt, labels, batch, 0.25, seed)))
    return cases


# ---------------------------------------------------------------- mutants: classic slips

def sample_variant(proposals, gt_boxes, gt_labels, batch_size_per_image, positive_fraction,
                   generator, *, add_gt=True, bg_low=0.0, strict=False, cap=True,
                   zero_background=True, weights=BOX_HEAD_WEIGHTS):
    """The sampling with one rule changed (see the mutants below)."""
    proposals, gt_boxes, gt_labels = check_inputs(proposals, gt_boxes, gt_labels)
    if add_gt:
        boxes, matched, fg = candidate_labels(proposals, gt_boxes, bg_low=bg_low, strict=strict)
    else:  # matched against the gt, which are not candidates themselves
        boxes = proposals
        matched, fg = reference.match_anchors(reference.box_iou(gt_boxes, proposals), 0.5, 0.5,
                                              allow_low_quality=False)
    fg = reference.sample_labels(fg, batch_size_per_image, positive_fraction if cap else 1.0,
                                 generator)
    keep = np.flatnonzero(fg >= 0)
    boxes, matched, fg = boxes[keep], matched[keep], fg[keep]
    if len(gt_boxes) == 0:
        return boxes, np.zeros_like(fg), matched, np.zeros_like(boxes)
    labels = np.where(fg == 1, gt_labels[matched], 0) if zero_background else gt_labels[matched]
    return boxes, labels, matched, reference.encode_boxes(boxes, gt_boxes[matched], weights)


def mutant(**change):
    def sample(proposals, gt_boxes, gt_labels, batch_size_per_image=512, positive_fraction=0.25,
               generator=0):
        return sample_variant(proposals, gt_boxes, gt_labels, batch_size_per_image,
                              positive_fraction, generator, **change)
    return sample


# ---------------------------------------------------------------- the exercise

SAMPLE_ROIS = Exercise(
    name="sample_rois",
    lesson=9,
    contract='''sample_rois(proposals, gt_boxes, gt_labels, batch_size_per_image=512,
                positive_fraction=0.25, generator=0) -> (boxes, labels, matched, targets)

    The RoIs the box and mask heads train on, for ONE image (RoIHeads.sample).
    proposals (N, 4) and gt_boxes (G, 4) float xyxy; gt_labels (G,) int in 1..K.
    1. boxes = the proposals followed by the gt boxes, (N + G, 4);
    2. match each box to the gt of highest IoU (the first gt on ties): foreground (1) when that
       IoU >= 0.5, background (0) otherwise; with G = 0 everything is background, matched 0;
    3. pick the sample with sample_labels(labels, batch_size_per_image, positive_fraction,
       generator) from mrcnn_edu.reference (lesson 04), labels being the 1/0 of step 2 and
       generator passed unchanged;
    4. keep the picked boxes in index order and return boxes (S, 4), labels (S,) int = the
       matched gt's label for foreground and 0 for background, matched (S,) int (the gt index,
       checked on foreground rows only) and targets (S, 4) = encode_boxes(boxes, gt_boxes[matched],
       (10, 10, 5, 5)) (checked on foreground rows only; zeros when G = 0).''',
    reference=sample_rois,
    cases=sample_rois_cases,
    hints=(
        "np.concatenate the gt boxes after the proposals first. box_iou(gt_boxes, boxes) is "
        "(G, N + G): its max and argmax over axis 0 give each box's best IoU and its match. "
        "sample_labels does the random part; you only gather what it keeps "
        "(np.flatnonzero(picked >= 0)).",
        "fg = (iou.max(0) >= 0.5) as int; picked = sample_labels(fg, batch_size_per_image, "
        "positive_fraction, generator); keep = flatnonzero(picked >= 0); labels = "
        "where(picked[keep] == 1, gt_labels[matched[keep]], 0); targets = encode_boxes("
        "boxes[keep], gt_boxes[matched[keep]], (10, 10, 5, 5)).",
    ),
    solution=solutions.sample_rois,
    mutants=(
        Mutant("no_gt_added", "you did not append the ground-truth boxes to the proposals: "
               "every object needs at least one perfect RoI", mutant(add_gt=False)),
        Mutant("fast_rcnn_background", "your background is IoU in [0.1, 0.5) (Fast R-CNN's "
               "heuristic); Mask R-CNN takes every RoI below 0.5 as background",
               mutant(bg_low=0.1)),
        Mutant("no_positive_cap", "you did not cap the foreground at positive_fraction of the "
               "batch (at most int(batch_size_per_image * positive_fraction) foreground)",
               mutant(cap=False)),
        Mutant("strict_fg", "your foreground needs IoU > 0.5; IoU exactly 0.5 is foreground "
               "(>= 0.5)", mutant(strict=True)),
        Mutant("labels_not_zeroed", "your background RoIs keep the label of their best gt; "
               "background is class 0", mutant(zero_background=False)),
        Mutant("rpn_weights", "you encoded the targets with the RPN's weights (1, 1, 1, 1); "
               "the box head uses (10, 10, 5, 5)", mutant(weights=(1.0, 1.0, 1.0, 1.0))),
    ),
    compare=compare_samples,
    shrink=prefix_shrinker([(0, 0)]),
)

EXERCISES = (SAMPLE_ROIS,)
