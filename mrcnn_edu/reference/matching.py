"""Anchor matching and sampling (lesson 04_nms_and_matching): which anchors learn what.

Shape legend: G ground-truth boxes, A anchors (or proposals); iou is (G, A), gt along rows, like
torchvision's match_quality_matrix (`box_iou(gt_boxes, anchors)`).
Labels: 1 positive (foreground), 0 negative (background), -1 ignored (no loss). The matched gt
index and the label are returned separately, never mixed into one array.

numpy in, numpy out. The torch twin is `mrcnn_edu.ops.matching`.
"""
import numpy as np


def match_anchors(iou, high=0.7, low=0.3, allow_low_quality=True):
    """Match every anchor to a ground-truth box and label it (torchvision's Matcher rules).

    iou (G, A): IoU of each gt with each anchor. Returns (matched_idx, labels), both int64 (A,):
    - matched_idx[a] = argmax over gts of iou[:, a] (the first gt on ties); meaningful only where
      labels[a] == 1;
    - labels[a] = 1 if that max IoU >= high, 0 if < low, -1 (ignored) in between.
    Low-quality matches (allow_low_quality): for each gt, every anchor that reaches that gt's
    highest IoU (ties included) becomes positive, so no gt is left without an anchor. As in
    torchvision and detectron2, such an anchor keeps its own argmax gt as matched index, which
    differs from the gt that promoted it only when it overlaps another gt even more. A gt whose
    highest IoU is 0 (it touches no anchor) promotes nothing.
    With G = 0 every anchor is negative (label 0) with matched index 0.
    """
    iou = np.asarray(iou)
    if iou.ndim != 2:
        raise ValueError(f"iou must have shape (G, A) = (num gt, num anchors), got {iou.shape}")
    if not low <= high:
        raise ValueError(f"need low <= high, got low={low} and high={high}")
    num_gt, num_anchors = iou.shape
    if num_gt == 0:  # nothing to match: all background
        return np.zeros(num_anchors, np.int64), np.zeros(num_anchors, np.int64)
    matched_idx = iou.argmax(axis=0).astype(np.int64)  # (A,)
    best = iou.max(axis=0)  # (A,) best IoU per anchor
    labels = np.full(num_anchors, -1, np.int64)  # (A,) ignored unless decided below
    labels[best < low] = 0
    labels[best >= high] = 1
    if allow_low_quality and num_anchors:
        best_per_gt = iou.max(axis=1, keepdims=True)  # (G, 1)
        is_best = (iou == best_per_gt) & (best_per_gt > 0)  # (G, A)
        labels[is_best.any(axis=0)] = 1
    return matched_idx, labels


def as_generator(generator):
    """np.random.Generator from an int seed, an existing Generator, or None (fresh entropy)."""
    if isinstance(generator, np.random.Generator):
        return generator
    return np.random.default_rng(generator)


def sample_labels(labels, batch_size, positive_fraction, generator=None):
    """Subsample labelled anchors so that a loss sees a balanced, fixed-size set.

    labels (A,) with 1 positive, 0 negative, -1 ignored. Picks, without replacement,
    num_pos = min(#positives, int(batch_size * positive_fraction)) positives and
    num_neg = min(#negatives, batch_size - num_pos) negatives; every other anchor becomes -1.
    The RPN uses (256, 0.5), the box head (512, 0.25). generator: int seed or
    np.random.Generator. Returns a new array (labels' dtype); the input is not changed.
    """
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise ValueError(f"labels must have shape (A,), got {labels.shape}")
    rng = as_generator(generator)
    positives, negatives = np.flatnonzero(labels == 1), np.flatnonzero(labels == 0)
    num_pos = min(len(positives), int(batch_size * positive_fraction))
    num_neg = min(len(negatives), batch_size - num_pos)  # negatives fill what positives leave
    out = np.full_like(labels, -1)
    out[positives[rng.permutation(len(positives))[:num_pos]]] = 1
    out[negatives[rng.permutation(len(negatives))[:num_neg]]] = 0
    return out
