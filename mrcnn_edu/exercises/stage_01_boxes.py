"""Lesson 01's "your turn": `box_iou`, checked against `mrcnn_edu.reference.box_iou`.

Shape legend: N, M numbers of boxes. Boxes are float (x1, y1, x2, y2), width = x2 - x1 (no +1);
IoU of disjoint or zero-area boxes is 0, never NaN (README, Conventions).
Cases: the lesson's hand example A = (1, 1, 5, 4), B = (3, 2, 7, 6) with IoU 4 / 24 = 1/6;
touching, disjoint, zero-area, identical, nested and empty sets; seeded random boxes.
Mutants: the classic slips, each a full wrong `box_iou`.
"""
import numpy as np

from mrcnn_edu import reference
from .core import Case, Exercise, Mutant, prefix_shrinker
from .solutions import stage_01_boxes as solutions


def random_boxes(rng, n, size=640.0):
    """n realistic boxes in a size x size image: corners anywhere, sides 4 .. size / 3."""
    xy = rng.uniform(0, size * 0.8, (n, 2))
    wh = rng.uniform(4, size / 3, (n, 2))
    return np.concatenate([xy, xy + wh], axis=1)  # (n, 4)


def box_iou_cases():
    b = lambda *rows: np.array(rows, dtype=np.float64).reshape(-1, 4)  # noqa: E731
    rng = np.random.default_rng(0)
    return [
        Case("lesson 01: A=(1,1,5,4), B=(3,2,7,6), IoU 1/6", "hand", (b([1, 1, 5, 4]), b([3, 2, 7, 6]))),
        Case("overlap: two pairs, both orders", "hand",
             (b([1, 1, 5, 4], [3, 2, 7, 6]), b([3, 2, 7, 6], [0, 0, 4, 4]))),
        Case("identical boxes: IoU 1", "edge", (b([2, 3, 10, 7]), b([2, 3, 10, 7]))),
        Case("nested: a box inside another", "edge", (b([0, 0, 8, 8]), b([2, 2, 4, 6]))),
        Case("touching along an edge: IoU 0", "edge", (b([0, 0, 4, 4]), b([4, 1, 8, 3]))),
        Case("touching at a corner: IoU 0", "edge", (b([0, 0, 4, 4]), b([4, 4, 9, 9]))),
        Case("disjoint along x only", "edge", (b([0, 0, 4, 4]), b([6, 1, 9, 3]))),
        Case("disjoint along x and y", "edge", (b([0, 0, 4, 4]), b([6, 6, 9, 10]))),
        Case("apart in x, overlapping in y (tall boxes)", "edge", (b([0, 0, 2, 10]), b([5, 2, 6, 8]))),
        Case("zero-area box inside a box", "edge", (b([0, 0, 4, 4]), b([1, 1, 1, 3]))),
        Case("two zero-area boxes: IoU 0, not NaN", "edge", (b([5, 5, 5, 5]), b([5, 5, 5, 5], [1, 2, 1, 2]))),
        Case("empty boxes1 (N = 0)", "edge", (b(), b([0, 0, 4, 4], [1, 1, 2, 2]))),
        Case("empty boxes2 (M = 0)", "edge", (b([0, 0, 4, 4]), b())),
        Case("200 x 50 boxes in a 640 x 640 image", "random",
             (random_boxes(rng, 200), random_boxes(rng, 50))),
        Case("1000 x 10 small boxes", "random",
             (random_boxes(rng, 1000, 64.0), random_boxes(rng, 10, 64.0))),
    ]


# ---------------------------------------------------------------- mutants: classic slips

def iou_from(boxes1, boxes2, area, inter_wh, union_of):
    """A box_iou assembled from pieces, so each mutant changes exactly one of them."""
    area1, area2 = area(boxes1), area(boxes2)  # (N,), (M,)
    w, h = inter_wh(boxes1, boxes2)  # (N, M), (N, M)
    inter = w * h
    union = union_of(area1[:, None], area2[None, :], inter)  # (N, M)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def area_xyxy(b):
    return (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])


def overlap_xyxy(b1, b2):
    w = np.minimum(b1[:, None, 2], b2[None, :, 2]) - np.maximum(b1[:, None, 0], b2[None, :, 0])
    h = np.minimum(b1[:, None, 3], b2[None, :, 3]) - np.maximum(b1[:, None, 1], b2[None, :, 1])
    return np.clip(w, 0, None), np.clip(h, 0, None)


def union_ok(a1, a2, inter):
    return a1 + a2 - inter


def plus_one_widths(boxes1, boxes2):
    one = np.array([0, 0, 1, 1])
    return iou_from(boxes1 + one, boxes2 + one, area_xyxy, overlap_xyxy, union_ok)


def no_overlap_clamp(boxes1, boxes2):
    def overlap(b1, b2):
        w = np.minimum(b1[:, None, 2], b2[None, :, 2]) - np.maximum(b1[:, None, 0], b2[None, :, 0])
        h = np.minimum(b1[:, None, 3], b2[None, :, 3]) - np.maximum(b1[:, None, 1], b2[None, :, 1])
        return w, h  # negative extents kept: apart in x and y multiplies to a positive "overlap"
    return iou_from(boxes1, boxes2, area_xyxy, overlap, union_ok)


def union_keeps_intersection(boxes1, boxes2):
    return iou_from(boxes1, boxes2, area_xyxy, overlap_xyxy, lambda a1, a2, inter: a1 + a2)


def nan_for_zero_union(boxes1, boxes2):
    area1, area2 = area_xyxy(boxes1), area_xyxy(boxes2)
    w, h = overlap_xyxy(boxes1, boxes2)
    with np.errstate(invalid="ignore"):
        return w * h / (area1[:, None] + area2[None, :] - w * h)  # 0 / 0 = NaN


def reads_xxyy(boxes1, boxes2):
    """Columns taken as (x1, x2, y1, y2): a mix-up of the corner layout."""
    swap = [0, 2, 1, 3]
    return iou_from(boxes1[:, swap], boxes2[:, swap], area_xyxy, overlap_xyxy, union_ok)


def reads_xywh(boxes1, boxes2):
    """Columns taken as COCO's (x, y, w, h)."""
    def to_xyxy(b):
        return np.concatenate([b[:, :2], b[:, :2] + b[:, 2:]], axis=1)
    return iou_from(to_xyxy(boxes1), to_xyxy(boxes2), area_xyxy, overlap_xyxy, union_ok)


BOX_IOU = Exercise(
    name="box_iou",
    lesson=1,
    contract='''box_iou(boxes1, boxes2) -> iou

    Pairwise intersection over union.
    boxes1 (N, 4) and boxes2 (M, 4): float (x1, y1, x2, y2) with x1 <= x2, y1 <= y2;
    width = x2 - x1 (no +1). Returns iou (N, M) float, iou[i, j] = IoU(boxes1[i], boxes2[j])
    = inter / (area1 + area2 - inter). Disjoint, touching or zero-area pairs give 0, never NaN.
    N or M may be 0.''',
    reference=reference.box_iou,
    cases=box_iou_cases,
    hints=(
        "Work out the overlap of box i and box j first: its top-left corner is the larger of the "
        "two top-left corners, its bottom-right the smaller of the two bottom-right ones. Use "
        "broadcasting, boxes1[:, None, :] against boxes2[None, :, :], to get all (N, M) pairs.",
        "inter = max(0, min(x2, x2') - max(x1, x1')) * max(0, min(y2, y2') - max(y1, y1')); "
        "union = area1 + area2 - inter with area = (x2 - x1) * (y2 - y1); "
        "IoU = inter / union where union > 0, else 0.",
    ),
    solution=solutions.box_iou,
    mutants=(
        Mutant("plus_one_widths", "your widths use x2 - x1 + 1 (the old Caffe convention, "
               "lesson 01); here width = x2 - x1", plus_one_widths),
        Mutant("no_overlap_clamp", "your overlap is not clamped at 0: boxes apart in x and in y "
               "give a positive 'intersection' (use max(0, ...) on the overlap's width and height)",
               no_overlap_clamp),
        Mutant("nan_for_zero_union", "you divide by a union of 0 for two zero-area boxes and get "
               "NaN; their IoU is 0", nan_for_zero_union),
        Mutant("union_keeps_intersection", "your union is area1 + area2 without subtracting the "
               "intersection (counted twice)", union_keeps_intersection),
        Mutant("reads_xxyy", "you read the boxes as (x1, x2, y1, y2); the columns are "
               "(x1, y1, x2, y2): x and y swapped", reads_xxyy),
        Mutant("reads_xywh", "you read the boxes as COCO's (x, y, w, h); they are corners "
               "(x1, y1, x2, y2)", reads_xywh),
    ),
    shrink=prefix_shrinker([(0, 0)], [(1, 0)]),
)

EXERCISES = (BOX_IOU,)
