"""Lesson 08's "your turn": `select_level_proposals`, the RPN's proposal selection on one FPN
level of one image, checked against the package's steps in the order `RPN.select_proposals`
runs them (mrcnn_edu/model/rpn.py).

Shape legend: R anchors of the level, k = min(pre_nms_top_n, R) candidates, P proposals.
Boxes are float (x1, y1, x2, y2) in image pixels; image_size is (H, W).
The steps: the k anchors of highest objectness (best first), decoded with the RPN's weights
(1, 1, 1, 1) (with the decode clamp of lesson 03), clipped to the image, boxes with a side
< min_size dropped, NMS at nms_thresh (IoU > threshold suppresses), the best post_nms_top_n
kept. (The model then pools the levels and keeps the best post_nms_top_n over all of them.)
Mutants: the classic slips, each a full wrong function.
"""
import numpy as np

from mrcnn_edu import reference
from mrcnn_edu.reference.boxes import as_boxes
from .core import Case, Exercise, Mutant, prefix_shrinker
from .solutions import stage_08_rpn as solutions


# ---------------------------------------------------------------- reference

def check_level(objectness, deltas, anchors):
    objectness = np.asarray(objectness)
    anchors, deltas = as_boxes(anchors, "anchors"), as_boxes(deltas, "deltas")
    if objectness.shape != (len(anchors),) or len(deltas) != len(anchors):
        raise ValueError(f"objectness (R,), deltas (R, 4) and anchors (R, 4) must agree, got "
                         f"{objectness.shape}, {deltas.shape} and {anchors.shape}")
    return objectness, deltas, anchors


def select_level_proposals(objectness, deltas, anchors, image_size, pre_nms_top_n=1000,
                           post_nms_top_n=1000, nms_thresh=0.7, min_size=1e-3):
    """One level of `RPN.select_proposals` with the reference functions: (P, 4) best first."""
    objectness, deltas, anchors = check_level(objectness, deltas, anchors)
    top = np.argsort(-objectness, kind="stable")[:pre_nms_top_n]  # (k,) as topk: best first
    boxes = reference.clip_boxes(reference.decode_boxes(anchors[top], deltas[top]), image_size)
    scores = objectness[top]  # (k,)
    keep = reference.remove_small_boxes(boxes, min_size)
    boxes, scores = boxes[keep], scores[keep]
    keep = reference.nms(boxes, scores, nms_thresh)  # (P',) best first
    return boxes[keep[:post_nms_top_n]]  # (P, 4)


# ---------------------------------------------------------------- cases

def level(rows, scores, deltas=None):
    """(objectness, deltas, anchors) from anchor rows, their scores and optional deltas."""
    anchors = np.array(rows, dtype=np.float64).reshape(-1, 4)
    deltas = np.zeros_like(anchors) if deltas is None else np.array(deltas, dtype=np.float64)
    return np.array(scores, dtype=np.float64), deltas, anchors


def random_level(rng, image_size, padded_size, stride, size, pre, post):
    anchors = reference.generate_anchors(padded_size, (stride,), (size,), (0.5, 1.0, 2.0))[0]
    objectness = rng.normal(0, 2, len(anchors))  # (R,) logits; real-valued, so no ties
    deltas = rng.normal(0, 0.25, anchors.shape)  # (R, 4)
    name = f"random: stride {stride}, {len(anchors)} anchors, pre {pre}, post {post}"
    return Case(name, "random", (objectness, deltas, anchors, image_size, pre, post))


def select_level_proposals_cases():
    rng = np.random.default_rng(8)
    hand = level([[10, 10, 50, 50], [12, 12, 52, 52], [60, 60, 90, 90], [80, -20, 120, 30],
                  [0, 70, 20, 90]], [0.9, 0.8, 0.7, 0.6, 0.1],
                 [[0.0, 0.0, 0.0, 0.0], [0.05, 0.0, 0.0, 0.0], [0.0, 0.1, 0.2, 0.0],
                  [0.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]])
    separate = level([[i * 20.0, 0, i * 20.0 + 15, 15] for i in range(6)],
                     [0.3, 0.9, 0.5, 0.8, 0.1, 0.6])
    cases = [
        Case("five anchors in a 100 x 100 image, pre 4, post 3", "hand", hand + ((100, 100), 4, 3)),
        Case("top-k happens before NMS (pre 2 keeps A and B; B falls to A)", "edge",
             level([[0, 0, 40, 40], [2, 2, 42, 42], [60, 0, 100, 40]], [0.9, 0.8, 0.7])
             + ((100, 120), 2, 10)),
        Case("huge predicted growth: the decode clamp at log(1000 / 16)", "edge",
             level([[495, 495, 505, 505], [0, 0, 30, 30]], [2.0, 1.0],
                   [[0.0, 0.0, 6.0, 6.0], [0.0, 0.0, 0.0, 0.0]]) + ((1000, 1000), 10, 10)),
        Case("anchor wholly outside the image: clipped to nothing, dropped", "edge",
             level([[-50, -50, -10, -10], [10, 10, 40, 40], [130, 20, 170, 60]], [3.0, 2.0, 1.0])
             + ((100, 120), 10, 10)),
        Case("anchors partly outside: clipped to (H, W) = (60, 80)", "edge",
             level([[-10, 20, 30, 70], [60, -5, 95, 30]], [1.0, 2.0]) + ((60, 80), 10, 10)),
        Case("IoU exactly 0.7: both kept", "edge",
             level([[0, 0, 10, 10], [0, 0, 10, 7]], [0.9, 0.8]) + ((50, 50), 10, 10)),
        Case("pre_nms_top_n larger than the level", "edge", separate + ((40, 130), 50, 50)),
        Case("post_nms_top_n keeps the best 2", "edge", separate + ((40, 130), 6, 2)),
        Case("min_size 4: a 3-px box dropped, a 5-px one kept", "edge",
             level([[10, 10, 13, 40], [50, 10, 55, 40]], [2.0, 1.0])
             + ((60, 60), 10, 10, 0.7, 4.0)),
        Case("empty level (R = 0)", "edge", level(np.zeros((0, 4)), []) + ((64, 64), 10, 10)),
        random_level(rng, (300, 450), (320, 480), 16, 64, 600, 300),
        random_level(rng, (320, 470), (320, 480), 8, 32, 1000, 1000),
    ]
    return cases


# ---------------------------------------------------------------- mutants: classic slips

def select_variant(objectness, deltas, anchors, image_size, pre_nms_top_n, post_nms_top_n,
                   nms_thresh, min_size, *, ascending=False, nms_first=False, clip=True,
                   weights=(1.0, 1.0, 1.0, 1.0), drop_small=True, clamp=True, post_cap=True):
    """The selection with one step changed (see the mutants below)."""
    objectness, deltas, anchors = check_level(objectness, deltas, anchors)
    order = np.argsort(objectness if ascending else -objectness, kind="stable")
    if not nms_first:
        order = order[:pre_nms_top_n]
    if clamp:
        boxes = reference.decode_boxes(anchors[order], deltas[order], weights)
    else:  # exp(dw) without the clamp at log(1000 / 16)
        a, d = anchors[order], deltas[order]
        w, h = a[:, 2] - a[:, 0], a[:, 3] - a[:, 1]
        cx, cy = a[:, 0] + 0.5 * w + d[:, 0] * w, a[:, 1] + 0.5 * h + d[:, 1] * h
        w, h = w * np.exp(d[:, 2]), h * np.exp(d[:, 3])
        boxes = np.stack([cx - 0.5 * w, cy - 0.5 * h, cx + 0.5 * w, cy + 0.5 * h], axis=1)
    if clip:
        boxes = reference.clip_boxes(boxes, image_size)
    scores = objectness[order]
    if drop_small:
        keep = reference.remove_small_boxes(boxes, min_size)
        boxes, scores = boxes[keep], scores[keep]
    keep = reference.nms(boxes, scores, nms_thresh)
    if nms_first:
        keep = keep[:pre_nms_top_n]
    return boxes[keep[:post_nms_top_n] if post_cap else keep]


def mutant(**change):
    def select(objectness, deltas, anchors, image_size, pre_nms_top_n=1000, post_nms_top_n=1000,
               nms_thresh=0.7, min_size=1e-3):
        return select_variant(objectness, deltas, anchors, image_size, pre_nms_top_n,
                              post_nms_top_n, nms_thresh, min_size, **change)
    return select


# ---------------------------------------------------------------- the exercise

SELECT_LEVEL_PROPOSALS = Exercise(
    name="select_level_proposals",
    lesson=8,
    contract='''select_level_proposals(objectness, deltas, anchors, image_size, pre_nms_top_n=1000,
                           post_nms_top_n=1000, nms_thresh=0.7, min_size=1e-3) -> proposals

    The RPN's proposals from ONE FPN level of ONE image, in the model's order of steps.
    objectness (R,) float logits; deltas (R, 4) predicted (dx, dy, dw, dh); anchors (R, 4) xyxy;
    image_size (H, W). Returns proposals (P, 4) float, highest objectness first:
    1. keep the min(pre_nms_top_n, R) anchors of highest objectness (ties: lower index first);
    2. decode their deltas with weights (1, 1, 1, 1) and the decode clamp (lesson 03);
    3. clip the boxes to the image: x to [0, W], y to [0, H];
    4. drop boxes whose width or height is < min_size;
    5. NMS at nms_thresh (IoU > nms_thresh with a better kept box suppresses);
    6. keep the first post_nms_top_n.''',
    reference=select_level_proposals,
    cases=select_level_proposals_cases,
    hints=(
        "Every step is a package function you met: decode_boxes (lesson 03), clip_boxes and "
        "remove_small_boxes (lesson 01), nms (lesson 04), all in mrcnn_edu.reference. What "
        "matters is their order: top-k first, NMS last, and the scores must follow the boxes "
        "through every selection.",
        "top = argsort(-objectness, kind='stable')[:pre_nms_top_n]; boxes = clip_boxes("
        "decode_boxes(anchors[top], deltas[top]), image_size); scores = objectness[top]; "
        "keep = remove_small_boxes(boxes, min_size); then nms on boxes[keep], scores[keep] and "
        "return the first post_nms_top_n of the kept boxes.",
    ),
    solution=solutions.select_level_proposals,
    mutants=(
        Mutant("nms_before_topk", "you ran NMS before taking the top pre_nms_top_n: the model "
               "takes the top-k by objectness first, then NMS on those only",
               mutant(nms_first=True)),
        Mutant("no_clip", "your proposals are not clipped to the image (x to [0, W], "
               "y to [0, H])", mutant(clip=False)),
        Mutant("box_head_weights", "you decoded with the box head's weights (10, 10, 5, 5); "
               "the RPN's deltas use (1, 1, 1, 1)", mutant(weights=(10.0, 10.0, 5.0, 5.0))),
        Mutant("ascending", "you sorted the objectness ascending: the top-k must be the "
               "highest scores", mutant(ascending=True)),
        Mutant("keep_small", "you kept boxes with a side below min_size (e.g. boxes that "
               "clipping squashed to nothing): drop them before NMS", mutant(drop_small=False)),
        Mutant("no_decode_clamp", "your decode has no clamp: dw and dh are capped at "
               "log(1000 / 16) before exp (lesson 03)", mutant(clamp=False)),
        Mutant("no_post_cap", "you did not cut to post_nms_top_n after NMS",
               mutant(post_cap=False)),
    ),
    shrink=prefix_shrinker([(0, 0), (1, 0), (2, 0)]),
)

EXERCISES = (SELECT_LEVEL_PROPOSALS,)
