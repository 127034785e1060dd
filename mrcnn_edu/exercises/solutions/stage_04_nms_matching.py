"""Solutions of lesson 04's "your turn": greedy NMS and anchor matching."""
import numpy as np


def nms(boxes, scores, iou_threshold):
    """Indices (int64) of the boxes kept by greedy NMS, highest score first."""
    order = np.argsort(-scores, kind="stable")  # best first; equal scores: lower index first
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])  # (N,)
    keep = []
    while len(order) > 0:
        best, rest = order[0], order[1:]
        keep.append(best)
        # IoU of the kept box with every box still in the running
        x1 = np.maximum(boxes[best, 0], boxes[rest, 0])  # (R,) overlap with each remaining box
        y1 = np.maximum(boxes[best, 1], boxes[rest, 1])
        x2 = np.minimum(boxes[best, 2], boxes[rest, 2])
        y2 = np.minimum(boxes[best, 3], boxes[rest, 3])
        inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)  # (R,)
        union = areas[best] + areas[rest] - inter
        iou = np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)
        order = rest[iou <= iou_threshold]  # equal to the threshold: kept
    return np.array(keep, dtype=np.int64)


def match_anchors(iou, high=0.7, low=0.3, allow_low_quality=True):
    """(matched_idx, labels), both int64 (A,), from iou (G, A): 1 positive, 0 negative, -1 ignored."""
    num_gt, num_anchors = iou.shape
    if num_gt == 0:
        return np.zeros(num_anchors, np.int64), np.zeros(num_anchors, np.int64)
    matched_idx = iou.argmax(axis=0)  # (A,) the best gt of each anchor
    best = iou.max(axis=0)  # (A,)
    labels = np.full(num_anchors, -1, dtype=np.int64)
    labels[best < low] = 0
    labels[best >= high] = 1
    if allow_low_quality and num_anchors > 0:  # max over an empty row has no value
        best_per_gt = iou.max(axis=1, keepdims=True)  # (G, 1)
        # every anchor that reaches a gt's best IoU (ties too), unless that best is 0
        promoted = ((iou == best_per_gt) & (best_per_gt > 0)).any(axis=0)  # (A,)
        labels[promoted] = 1
    return matched_idx.astype(np.int64), labels
