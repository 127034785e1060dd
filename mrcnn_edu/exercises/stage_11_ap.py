"""Lesson 11's "your turn": `average_precision`, COCO's AP of one category at one IoU threshold
from already matched detections, checked against `mrcnn_edu.reference.coco_eval`'s
`precision_recall` (the step of `coco_evaluate` that turns matches into a precision curve).

Shape legend: D detections of one category (pooled over images), R = 101 recall thresholds
0, 0.01, ..., 1. The rules are pycocotools': sort by score (stable: ties keep their input
order); recall = TP / num_gt and precision = TP / (TP + FP) after each detection; precision
made non-increasing from the right; AP = the mean over the 101 thresholds r of the precision
at the first detection whose recall >= r (0 for an r never reached).
Mutants: the classic slips, each a full wrong function.
"""
import numpy as np

from mrcnn_edu.reference.coco_eval import IOU_THRESHOLDS, RECALL_THRESHOLDS, precision_recall
from .core import Case, Exercise, Mutant, prefix_shrinker
from .solutions import stage_11_ap as solutions


# ---------------------------------------------------------------- reference

def average_precision(scores, is_true_positive, num_gt):
    """101-point AP of one category: `precision_recall` with every threshold's matches equal."""
    scores, hits = np.asarray(scores, dtype=np.float64), np.asarray(is_true_positive)
    if scores.ndim != 1 or hits.shape != scores.shape or hits.dtype != bool:
        raise ValueError(f"scores (D,) float and is_true_positive (D,) bool must agree, got "
                         f"{scores.shape} and {hits.dtype} {hits.shape}")
    if not num_gt > 0:
        raise ValueError(f"num_gt must be > 0 (AP is undefined without objects), got {num_gt}")
    matched = np.repeat(hits[None], len(IOU_THRESHOLDS), axis=0)  # (T, D) the same at every t
    precision, _ = precision_recall(scores, matched, np.zeros_like(matched), num_gt)  # (T, R)
    return float(precision[0].mean())


# ---------------------------------------------------------------- cases

def detections(hits, scores=None):
    """(scores, is_true_positive) from a hit pattern; scores descending unless given."""
    hits = np.array(hits, dtype=bool)
    if scores is None:
        scores = np.linspace(0.95, 0.05, len(hits)) if len(hits) else np.zeros(0)
    return np.array(scores, dtype=np.float64), hits


def random_detections(rng, num_dets, num_gt):
    scores = rng.random(num_dets)  # real-valued: no ties
    hits = rng.random(num_dets) < scores ** 2  # better scores are more often right
    order = np.argsort(-scores)
    hits[order[np.cumsum(hits[order]) > num_gt]] = False  # at most one hit per object
    return Case(f"random: {num_dets} detections, {num_gt} objects", "random",
                (scores, hits, num_gt))


def average_precision_cases():
    rng = np.random.default_rng(11)
    T, F = True, False
    return [
        Case("lesson 11: TP, FP, TP with 2 objects: (51 + 50 x 2/3) / 101", "hand",
             detections([T, F, T]) + (2,)),
        Case("five detections out of score order, 4 objects", "hand",
             detections([F, T, T, F, T], [0.3, 0.9, 0.6, 0.8, 0.2]) + (4,)),
        Case("no detections: AP 0", "edge", detections([]) + (3,)),
        Case("no true positive: AP 0", "edge", detections([F, F, F]) + (2,)),
        Case("every detection right, every object found: AP 1", "edge",
             detections([T, T, T, T]) + (4,)),
        Case("objects never found: recall stops at 0.5", "edge", detections([T, T, F]) + (4,)),
        Case("recall lands exactly on the grid (0.25, 0.5, ...)", "edge",
             detections([T, F, T, T, F, F, T]) + (4,)),
        Case("a dip in precision: the envelope lifts it", "edge",
             detections([T, F, F, T, T, F, T]) + (5,)),
        Case("equal scores: ties keep their input order", "edge",
             detections([F, T, T, F, T], [0.5, 0.5, 0.5, 0.5, 0.9]) + (3,)),
        Case("many more detections than objects", "edge",
             detections([F, T] + [F] * 18 + [T]) + (2,)),
        random_detections(rng, 400, 250),
        random_detections(rng, 2000, 300),
    ]


# ---------------------------------------------------------------- mutants: classic slips

def pr_curve(scores, is_true_positive, num_gt, *, sort=True, denominator=None):
    """(recall, precision) after each detection, best first; denominator replaces num_gt."""
    scores, hits = np.asarray(scores, np.float64), np.asarray(is_true_positive, bool)
    order = np.argsort(-scores, kind="stable") if sort else np.arange(len(scores))
    tp = np.cumsum(hits[order]).astype(np.float64)
    fp = np.cumsum(~hits[order]).astype(np.float64)
    recall = tp / (num_gt if denominator is None else max(denominator, 1))
    return recall, tp / np.maximum(tp + fp, 1)


def envelope(precision):
    return np.maximum.accumulate(precision[::-1])[::-1] if len(precision) else precision


def read_at(recall, precision, thresholds, side="left"):
    """Mean over the thresholds r of precision at the first recall >= r (> r for side right)."""
    if len(recall) == 0:
        return 0.0
    first = np.searchsorted(recall, thresholds, side=side)
    reached = first < len(recall)
    return float(np.where(reached, precision[np.minimum(first, len(recall) - 1)], 0.0).mean())


def ap_no_envelope(scores, is_true_positive, num_gt):
    recall, precision = pr_curve(scores, is_true_positive, num_gt)
    return read_at(recall, precision, RECALL_THRESHOLDS)


def ap_voc11(scores, is_true_positive, num_gt):
    recall, precision = pr_curve(scores, is_true_positive, num_gt)
    return read_at(recall, envelope(precision), np.linspace(0, 1, 11))


def ap_unsorted(scores, is_true_positive, num_gt):
    recall, precision = pr_curve(scores, is_true_positive, num_gt, sort=False)
    return read_at(recall, envelope(precision), RECALL_THRESHOLDS)


def ap_recall_over_detections(scores, is_true_positive, num_gt):
    recall, precision = pr_curve(scores, is_true_positive, num_gt,
                                 denominator=len(np.asarray(scores)))
    return read_at(recall, envelope(precision), RECALL_THRESHOLDS)


def ap_trapezoid(scores, is_true_positive, num_gt):
    recall, precision = pr_curve(scores, is_true_positive, num_gt)
    r, p = np.r_[0.0, recall], np.r_[1.0, precision]  # the curve starts at (0, 1)
    return float(np.sum((r[1:] - r[:-1]) * (p[1:] + p[:-1]) / 2))


def ap_strictly_above(scores, is_true_positive, num_gt):
    recall, precision = pr_curve(scores, is_true_positive, num_gt)
    return read_at(recall, envelope(precision), RECALL_THRESHOLDS, side="right")


def ap_all_points(scores, is_true_positive, num_gt):
    recall, precision = pr_curve(scores, is_true_positive, num_gt)
    r = np.r_[0.0, recall]
    return float(np.sum((r[1:] - r[:-1]) * envelope(precision)))


# ---------------------------------------------------------------- the exercise

AVERAGE_PRECISION = Exercise(
    name="average_precision",
    lesson=11,
    contract='''average_precision(scores, is_true_positive, num_gt) -> ap

    COCO's AP of one category at one IoU threshold, from detections already matched.
    scores (D,) float; is_true_positive (D,) bool (the detection matched an object); num_gt > 0
    objects. Returns a float in [0, 1]:
    1. sort the detections by score, highest first (stable: ties keep their input order);
    2. after each detection: recall = TP / num_gt, precision = TP / (TP + FP);
    3. make precision non-increasing: precision[i] = max(precision[i:]);
    4. AP = mean over the 101 recall thresholds r = np.linspace(0, 1, 101) (pycocotools' grid:
       build it this way, not as k / 100: its 0.7 is 0.7000000000000001, so a recall of exactly
       0.7 does not reach it) of the precision at the first detection whose recall >= r (0 where
       recall never reaches r).''',
    reference=average_precision,
    cases=average_precision_cases,
    hints=(
        "np.cumsum over the sorted hits gives TP after each detection (and over ~hits, FP). "
        "The 'envelope' is a running max taken from the right. np.searchsorted(recall, r) finds "
        "the first detection with recall >= r.",
        "order = argsort(-scores, kind='stable'); tp = cumsum(hits[order]); fp = cumsum(~hits"
        "[order]); recall = tp / num_gt; precision = tp / (tp + fp); precision = maximum."
        "accumulate(precision[::-1])[::-1]; i = searchsorted(recall, linspace(0, 1, 101)); "
        "AP = mean(where(i < D, precision[i], 0)).",
    ),
    solution=solutions.average_precision,
    mutants=(
        Mutant("no_envelope", "your precision is not made non-increasing: COCO reads the best "
               "precision at any recall >= r (a running max from the right)", ap_no_envelope),
        Mutant("voc11", "you used 11 recall points (PASCAL VOC 2007); COCO uses 101: "
               "0, 0.01, ..., 1", ap_voc11),
        Mutant("unsorted", "you did not sort the detections by score (highest first) before "
               "accumulating", ap_unsorted),
        Mutant("recall_over_detections", "your recall divides by the number of detections; "
               "recall = TP / num_gt (the number of objects)", ap_recall_over_detections),
        Mutant("trapezoid", "you took the area under the raw curve with the trapezoid rule; "
               "COCO averages the interpolated precision at 101 recall thresholds",
               ap_trapezoid),
        Mutant("strictly_above", "you read the precision at the first recall > r; COCO reads it "
               "at the first recall >= r (np.searchsorted(..., side='left'))", ap_strictly_above),
        Mutant("all_points", "you computed the exact area under the interpolated curve (VOC "
               "2010's all-point AP); COCO samples it at 101 recall thresholds", ap_all_points),
    ),
    shrink=prefix_shrinker([(0, 0), (1, 0)]),
)

EXERCISES = (AVERAGE_PRECISION,)
