"""Solution to lesson 11's "your turn": COCO's 101-point AP of one category."""
import numpy as np


def average_precision(scores, is_true_positive, num_gt):
    """Sort by score, walk down the list, make precision non-increasing, read it at 101 recalls."""
    order = np.argsort(-scores, kind="stable")  # best first; ties keep their input order
    hits = is_true_positive[order]
    tp = np.cumsum(hits)  # true positives among the first i + 1 detections
    fp = np.cumsum(~hits)
    recall = tp / num_gt
    precision = tp / np.maximum(tp + fp, 1)
    for i in range(len(precision) - 2, -1, -1):  # the best precision at any recall >= this one
        precision[i] = max(precision[i], precision[i + 1])
    total = 0.0
    for r in np.linspace(0.0, 1.0, 101):
        i = np.searchsorted(recall, r, side="left")  # the first detection reaching recall r
        if i < len(recall):
            total += precision[i]  # recall thresholds never reached add 0
    return total / 101
