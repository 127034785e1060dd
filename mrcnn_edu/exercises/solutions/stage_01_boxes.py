"""Solution of lesson 01's "your turn": pairwise IoU of two sets of xyxy boxes."""
import numpy as np


def box_iou(boxes1, boxes2):
    """IoU of every box in boxes1 (N, 4) with every box in boxes2 (M, 4): (N, M) in [0, 1]."""
    area1 = (boxes1[:, 2] - boxes1[:, 0]) * (boxes1[:, 3] - boxes1[:, 1])  # (N,)
    area2 = (boxes2[:, 2] - boxes2[:, 0]) * (boxes2[:, 3] - boxes2[:, 1])  # (M,)
    # the overlap of box i and box j: the larger top-left corner, the smaller bottom-right one
    x1 = np.maximum(boxes1[:, None, 0], boxes2[None, :, 0])  # (N, M)
    y1 = np.maximum(boxes1[:, None, 1], boxes2[None, :, 1])
    x2 = np.minimum(boxes1[:, None, 2], boxes2[None, :, 2])
    y2 = np.minimum(boxes1[:, None, 3], boxes2[None, :, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)  # (N, M) 0 when apart
    union = area1[:, None] + area2[None, :] - inter  # (N, M)
    # two zero-area boxes have union 0: their IoU is 0, not 0 / 0
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)  # (N, M)
