"""Lesson 04's "your turn": greedy `nms` and `match_anchors`.

Shape legend: N boxes with N scores; G ground-truth boxes, A anchors, iou (G, A).
NMS (torchvision's rule): visit by descending score, equal scores lower index first; drop a box
whose IoU with a kept box is > iou_threshold (equal is kept); return kept indices best first.
Matching (torchvision's Matcher): max IoU >= high positive (1), < low negative (0), between
ignored (-1); low-quality matches make every anchor that reaches a gt's best IoU (ties included,
a best of 0 excepted) positive. The matched index is defined only where the label is 1.
"""
import numpy as np

from mrcnn_edu import reference
from .core import Case, Exercise, Mutant, compare_arrays, prefix_shrinker
from .solutions import stage_04_nms_matching as solutions
from .stage_01_boxes import random_boxes


def b(*rows):
    return np.array(rows, dtype=np.float64).reshape(-1, 4)


def s(*values):
    return np.array(values, dtype=np.float64)


# ---------------------------------------------------------------- NMS

def clustered(rng, n, clusters=12):
    """n boxes jittered around a few objects, as a detector's raw output looks."""
    objects = random_boxes(rng, clusters)
    pick = rng.integers(0, clusters, n)
    wh = objects[pick, 2:] - objects[pick, :2]
    jitter = rng.normal(0, 0.08, (n, 4)) * np.concatenate([wh, wh], axis=1)
    boxes = objects[pick] + jitter
    return np.concatenate([np.minimum(boxes[:, :2], boxes[:, 2:]), np.maximum(boxes[:, :2], boxes[:, 2:])], 1)


def nms_cases():
    rng = np.random.default_rng(5)
    many = clustered(rng, 300)
    ties = np.round(rng.uniform(0, 1, 300), 1)  # scores with many ties
    return [
        Case("lesson 04: A, B, C shifted by 3, threshold 0.5", "hand",
             (b([0, 0, 10, 10], [3, 0, 13, 10], [6, 0, 16, 10]), s(0.9, 0.8, 0.7), 0.5)),
        Case("IoU exactly at the threshold 0.5 is kept", "edge",
             (b([0, 0, 4, 1], [0, 0, 2, 1]), s(0.9, 0.8), 0.5)),
        Case("scores not in index order", "edge",
             (b([0, 0, 10, 10], [1, 0, 11, 10], [30, 30, 40, 40]), s(0.5, 0.9, 0.7), 0.5)),
        Case("equal scores: the lower index is visited first", "edge",
             (b([0, 0, 10, 10], [1, 1, 11, 11]), s(0.8, 0.8), 0.5)),
        Case("a chain A-B-C: only kept boxes suppress", "edge",
             (b([0, 0, 10, 10], [5, 0, 15, 10], [10, 0, 20, 10]), s(0.9, 0.8, 0.7), 0.3)),
        Case("disjoint boxes all kept, best first", "edge",
             (b([0, 0, 1, 1], [5, 5, 6, 6], [9, 0, 10, 1]), s(0.2, 0.9, 0.5), 0.5)),
        Case("one box", "edge", (b([2, 2, 5, 5]), s(0.3), 0.5)),
        Case("no boxes (N = 0)", "edge", (b(), s(), 0.5)),
        Case("300 clustered detections, threshold 0.5", "random", (many, rng.uniform(0, 1, 300), 0.5)),
        Case("300 clustered boxes, scores with ties, threshold 0.7", "random", (many, ties, 0.7)),
    ]


def iou_row(boxes, i, js):
    """IoU of box i with boxes js (no NaN)."""
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    w = np.clip(np.minimum(boxes[i, 2], boxes[js, 2]) - np.maximum(boxes[i, 0], boxes[js, 0]), 0, None)
    h = np.clip(np.minimum(boxes[i, 3], boxes[js, 3]) - np.maximum(boxes[i, 1], boxes[js, 1]), 0, None)
    union = area[i] + area[js] - w * h
    return np.where(union > 0, w * h / np.where(union > 0, union, 1), 0.0)


def nms_with(boxes, scores, iou_threshold, *, order="stable", drop_equal=False, by_all=False,
             sort_output=False):
    """A greedy NMS with one knob per slip; the defaults give the right answer."""
    if order == "stable":
        visit = np.argsort(-scores, kind="stable")
    elif order == "ties_reversed":
        visit = np.argsort(scores, kind="stable")[::-1]  # descending, equal scores higher index first
    else:  # index order, scores ignored
        visit = np.arange(len(scores))
    suppressed = np.zeros(len(scores), bool)
    keep = []
    for a, i in enumerate(visit):
        if suppressed[i]:
            if not by_all:
                continue
        else:
            keep.append(i)
        later = visit[a + 1:]
        iou = iou_row(boxes, i, later)
        hit = iou >= iou_threshold if drop_equal else iou > iou_threshold
        suppressed[later[hit]] = True
    keep = np.array(keep, dtype=np.int64)
    return np.sort(keep) if sort_output else keep


def nms_knob(**kw):
    return lambda boxes, scores, iou_threshold: nms_with(boxes, scores, iou_threshold, **kw)


NMS = Exercise(
    name="nms",
    lesson=4,
    contract='''nms(boxes, scores, iou_threshold) -> keep

    Greedy non-maximum suppression. boxes (N, 4) (x1, y1, x2, y2), scores (N,).
    Visit the boxes from the highest score down (equal scores: lower index first); keep a box
    unless its IoU with a box already kept is > iou_threshold (equal to it: kept).
    Returns keep (K,) int64: indices into boxes of the kept boxes, highest score first.
    N may be 0.''',
    reference=reference.nms,
    cases=nms_cases,
    hints=(
        "Sort the indices by descending score with a stable sort (np.argsort(-scores, "
        "kind='stable')). Then loop: take the first remaining index, keep it, and remove from the "
        "remaining ones every box that overlaps it too much. Only kept boxes remove others.",
        "order = argsort(-scores, stable); while order: i = order[0]; keep i; "
        "iou = IoU(box i, boxes order[1:]); order = order[1:][iou <= iou_threshold]. "
        "Return np.array(keep, dtype=np.int64).",
    ),
    solution=solutions.nms,
    mutants=(
        Mutant("drops_at_threshold", "your NMS drops boxes at IoU equal to the threshold; only "
               "IoU > threshold suppresses", nms_knob(drop_equal=True)),
        Mutant("not_sorted", "your NMS visits boxes in index order: sort by descending score "
               "first", nms_knob(order="index")),
        Mutant("ties_higher_index_first", "your NMS visits equal scores higher index first; use "
               "a stable sort of -scores so the lower index comes first", nms_knob(order="ties_reversed")),
        Mutant("suppressed_boxes_suppress", "in your NMS boxes that were already suppressed still "
               "suppress others; only kept boxes do", nms_knob(by_all=True)),
        Mutant("kept_in_index_order", "you return the kept indices sorted by index; they must "
               "come highest score first", nms_knob(sort_output=True)),
    ),
    shrink=prefix_shrinker([(0, 0), (1, 0)]),
)


# ---------------------------------------------------------------- matching

def match_cases():
    rng = np.random.default_rng(6)
    gt = random_boxes(rng, 6)
    anchors = np.concatenate([random_boxes(rng, 1500), gt + rng.normal(0, 6, gt.shape)])
    iou = reference.box_iou(gt, anchors)
    m = lambda *rows: np.array(rows, dtype=np.float64)  # noqa: E731
    return [
        Case("lesson 04: 2 gts x 4 anchors", "hand",
             (m([0.80, 0.50, 0.10, 0.00], [0.20, 0.65, 0.25, 0.00]),)),
        Case("lesson 04's matrix without low-quality matches", "hand",
             (m([0.80, 0.50, 0.10, 0.00], [0.20, 0.65, 0.25, 0.00]),), {"allow_low_quality": False}),
        Case("IoU exactly 0.7 is positive, exactly 0.3 ignored", "edge",
             (m([0.7, 0.3, 0.5, 0.2, 0.9], [0.1, 0.1, 0.1, 0.1, 0.1]),)),
        Case("a gt whose best anchor is only 0.4 (low-quality match)", "edge",
             (m([0.4, 0.2, 0.1], [0.0, 0.1, 0.8]),)),
        Case("a gt with two anchors tied at its best IoU", "edge",
             (m([0.5, 0.1, 0.5, 0.2], [0.1, 0.9, 0.0, 0.0]),)),
        Case("a gt that touches no anchor (best IoU 0)", "edge",
             (m([0.0, 0.0, 0.0], [0.1, 0.75, 0.2]),)),
        Case("no ground truth (G = 0): all negative", "edge", (np.zeros((0, 4)),)),
        Case("no anchors (A = 0)", "edge", (np.zeros((2, 0)),)),
        Case("thresholds 0.5 / 0.5 of the box head, no low-quality", "edge",
             (m([0.5, 0.49, 0.8], [0.1, 0.6, 0.5]), 0.5, 0.5, False)),
        Case("6 gts x 1506 anchors", "random", (iou,)),
        Case("6 gts x 1506 anchors, 0.5 / 0.4", "random", (iou, 0.5, 0.4)),
    ]


def compare_matches(expected, actual):
    """Labels must be equal; the matched index only where the expected label is 1 (positives):
    the contract leaves it undefined elsewhere."""
    if not isinstance(actual, (tuple, list)) or len(actual) != 2:
        return False, f"expected a pair (matched_idx, labels), got {type(actual).__name__}"
    want_idx, want_labels = expected
    got_idx, got_labels = actual
    ok, detail = compare_arrays(want_labels, got_labels, where="labels: ")
    if not ok:
        return False, detail
    got_idx = np.asarray(got_idx)
    if got_idx.shape != want_idx.shape:
        return False, f"matched_idx: shape {got_idx.shape}, expected {want_idx.shape}"
    positive = np.asarray(want_labels) == 1
    return compare_arrays(want_idx[positive], got_idx[positive], where="matched_idx at positives: ")


def match_with(iou, high=0.7, low=0.3, allow_low_quality=True, *, swap_inclusive=False,
               swap_ignored=False, one_per_gt=False, promote_zero=False, low_quality=True):
    """An anchor matcher with one knob per slip; the defaults give the right answer."""
    num_gt, num_anchors = iou.shape
    if num_gt == 0:
        return np.zeros(num_anchors, np.int64), np.zeros(num_anchors, np.int64)
    matched, best = iou.argmax(0).astype(np.int64), iou.max(0)
    negative, ignored = (-1, 0) if swap_ignored else (0, -1)
    labels = np.full(num_anchors, ignored, np.int64)
    if swap_inclusive:
        labels[best <= low] = negative
        labels[best > high] = 1
    else:
        labels[best < low] = negative
        labels[best >= high] = 1
    if allow_low_quality and low_quality and num_anchors:
        best_per_gt = iou.max(1, keepdims=True)
        if one_per_gt:
            promoted = iou.argmax(1)[best_per_gt[:, 0] > 0]
        else:
            hit = iou == best_per_gt if promote_zero else (iou == best_per_gt) & (best_per_gt > 0)
            promoted = hit.any(0)
        labels[promoted] = 1
    return matched, labels


def match_knob(**kw):
    return lambda iou, high=0.7, low=0.3, allow_low_quality=True: match_with(
        iou, high, low, allow_low_quality, **kw)


MATCH_ANCHORS = Exercise(
    name="match_anchors",
    lesson=4,
    contract='''match_anchors(iou, high=0.7, low=0.3, allow_low_quality=True) -> (matched_idx, labels)

    Match every anchor to a ground-truth box and label it (torchvision's Matcher).
    iou (G, A): IoU of each of G gt boxes with each of A anchors. Returns (matched_idx, labels):
    matched_idx (A,) int64: the gt with the highest IoU for each anchor (first on ties);
    only checked where the label is 1. labels (A,) int64: 1 if that highest IoU >= high,
    0 if < low, -1 (ignored) in between. With allow_low_quality, every anchor that reaches
    some gt's highest IoU (ties included) is made positive too, unless that highest IoU is 0.
    G = 0: every label 0, matched_idx 0.''',
    reference=reference.match_anchors,
    cases=match_cases,
    hints=(
        "Work column by column: for each anchor, its best gt (argmax over axis 0) and that best "
        "IoU decide the label. Then, for low-quality matches, look row by row: each gt's best IoU "
        "(max over axis 1), and every anchor equal to it.",
        "best = iou.max(0); labels = -1 everywhere, 0 where best < low, 1 where best >= high; "
        "low quality: best_gt = iou.max(1, keepdims=True); "
        "labels[((iou == best_gt) & (best_gt > 0)).any(0)] = 1; matched_idx = iou.argmax(0).",
    ),
    solution=solutions.match_anchors,
    mutants=(
        Mutant("no_low_quality", "your matcher has no low-quality matches: each gt's best "
               "anchors (ties included) must become positive too", match_knob(low_quality=False)),
        Mutant("thresholds_swapped_inclusive", "your thresholds are the wrong way inclusive: "
               "positive is IoU >= high (0.7 counts), negative is IoU < low (0.3 is ignored)",
               match_knob(swap_inclusive=True)),
        Mutant("ignored_and_negative_swapped", "your labels swap 0 and -1: negatives are 0, "
               "ignored anchors are -1", match_knob(swap_ignored=True)),
        Mutant("one_anchor_per_gt", "your low-quality matches give only one anchor per gt "
               "(argmax); every anchor tied at the gt's best IoU is positive", match_knob(one_per_gt=True)),
        Mutant("promotes_zero_iou", "your low-quality matches promote anchors for a gt that "
               "touches no anchor (best IoU 0)", match_knob(promote_zero=True)),
    ),
    compare=compare_matches,
    shrink=prefix_shrinker([(0, 1)]),
)

EXERCISES = (NMS, MATCH_ANCHORS)
