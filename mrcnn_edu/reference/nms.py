"""Non-maximum suppression (lesson 04_nms_and_matching): greedy NMS and its per-class version.

Shape legend: N boxes, each with a score (and, for `batched_nms`, a class label).
Rule (torchvision's, exactly): visit boxes from the highest score down; keep a box unless its IoU
with a box already kept is > iou_threshold (IoU equal to the threshold is kept).
Ties in score are visited lower index first (a stable sort); torchvision's sort is not stable, so
with tied scores the two may keep different, equally valid, boxes.

numpy in, numpy out; the greedy sweep is a numba kernel. The torch twin is `mrcnn_edu.ops.nms`
(its docstring maps each function here to its twin).
"""
import numba
import numpy as np

from .boxes import as_boxes


def check_scores(scores, num_boxes, name="scores"):
    """`scores` as a numpy array of shape (num_boxes,), or ValueError naming `name`."""
    scores = np.asarray(scores)
    if scores.shape != (num_boxes,):
        raise ValueError(f"{name} must have shape (N,) = ({num_boxes},) to match boxes, got {scores.shape}")
    return scores


@numba.njit(cache=True)
def greedy_nms_kernel(boxes, order, iou_threshold):
    """Keep-flags in visiting order: boxes (N, 4), order (N,) indices by descending score.

    For each box not yet suppressed: keep it, then suppress every later box j with
    inter / (area_i + area_j - inter) > iou_threshold (a zero union counts as IoU 0).
    """
    n = order.shape[0]
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    suppressed = np.zeros(n, dtype=np.bool_)
    keep = np.zeros(n, dtype=np.bool_)
    for a in range(n):
        if suppressed[a]:
            continue
        keep[a] = True
        i = order[a]
        for b in range(a + 1, n):
            if suppressed[b]:
                continue
            j = order[b]
            inter_w = min(boxes[i, 2], boxes[j, 2]) - max(boxes[i, 0], boxes[j, 0])
            inter_h = min(boxes[i, 3], boxes[j, 3]) - max(boxes[i, 1], boxes[j, 1])
            if inter_w <= 0 or inter_h <= 0:
                continue  # disjoint: IoU 0 is never > a threshold >= 0
            inter = inter_w * inter_h
            union = areas[i] + areas[j] - inter
            if union > 0 and inter / union > iou_threshold:
                suppressed[b] = True
    return keep


def nms(boxes, scores, iou_threshold):
    """Greedy non-maximum suppression.

    boxes (N, 4) xyxy, scores (N,), iou_threshold in [0, 1].
    Returns int64 indices into boxes of the kept boxes, highest score first. A box is dropped
    when its IoU with an already kept (higher-scoring) box is > iou_threshold; ties in score are
    visited lower index first. Empty input gives an empty (0,) int64 array.
    """
    boxes = as_boxes(boxes)
    scores = check_scores(scores, len(boxes))
    order = np.argsort(-scores, kind="stable").astype(np.int64)  # (N,) descending, ties by index
    # the threshold in the boxes' dtype, as torch compares a float32 tensor with a Python float
    threshold = boxes.dtype.type(iou_threshold)
    keep = greedy_nms_kernel(boxes, order, threshold)  # (N,) in visiting order
    return order[keep]


def offset_by_label(boxes, labels):
    """Shift each label's boxes into its own region so that boxes of different labels never overlap.

    Offset = label * (max - min + 1) on every coordinate. torchvision adds label * (max + 1), which
    is the same when coordinates are >= 0; subtracting min keeps it correct for negative ones too.
    """
    span = boxes.max() - boxes.min() + 1
    return boxes + (labels.astype(boxes.dtype) * span)[:, None]  # (N, 4)


def batched_nms(boxes, scores, labels, iou_threshold):
    """NMS applied independently within each label: boxes of different labels never suppress
    each other. boxes (N, 4), scores (N,), labels (N,) integers. Same return as `nms`.

    Done as one `nms` on boxes shifted by `offset_by_label`; on non-integer coordinates the shift
    can change an IoU in its last bit, so a pair exactly at the threshold may go either way."""
    boxes = as_boxes(boxes)
    scores = check_scores(scores, len(boxes))
    labels = check_scores(labels, len(boxes), name="labels")
    if len(boxes) == 0:
        return np.zeros(0, dtype=np.int64)
    return nms(offset_by_label(boxes, labels), scores, iou_threshold)
