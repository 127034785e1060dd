"""Lesson 07: the Mask R-CNN losses -- RPN objectness and boxes, Fast R-CNN class and boxes, masks.

Shape legend: A sampled anchors, K RoIs, C object classes (labels 1..C, 0 is background), M x M
mask grid. `pred_*` are network outputs, `target_*` what they should be. The semantics follow
torchvision's `rpn.py` and `roi_heads.py`:

    smooth_l1(d) = 0.5 d**2 / beta  if |d| < beta  else  |d| - 0.5 beta     (beta = 1/9)
    objectness   = mean BCE-with-logits over anchors with label >= 0 (the sampled ones)
    rpn boxes    = sum of smooth_l1 over positive anchors / number of sampled anchors
    classes      = mean cross-entropy over the K RoIs
    roi boxes    = sum of smooth_l1 over positive RoIs, on their class's 4 deltas, / K
    masks        = mean BCE-with-logits over the M x M pixels of each RoI's ground-truth class
                   channel only (per-class sigmoids: the classes do not compete)

The reference returns Python floats (and arrays for reduction="none"); empty inputs give 0.0.
"""
import numpy as np


def smooth_l1_loss(pred, target, beta=1 / 9, reduction="sum"):
    """Smooth L1 (Huber divided by beta) of pred - target; reduction "sum", "mean" or "none".

    pred, target: arrays of one shape. beta = 0 is plain L1.
    """
    pred, target = np.asarray(pred, np.float64), np.asarray(target, np.float64)
    if pred.shape != target.shape:
        raise ValueError(f"pred and target must have one shape, got {pred.shape} "
                         f"and {target.shape}")
    diff = np.abs(pred - target)
    with np.errstate(divide="ignore", invalid="ignore"):  # beta = 0 takes the other branch
        loss = np.where(diff < beta, 0.5 * diff ** 2 / beta, diff - 0.5 * beta)
    if reduction == "none":
        return loss
    if reduction == "sum":
        return float(loss.sum())
    if reduction == "mean":
        return float(loss.mean()) if loss.size else 0.0
    raise ValueError(f"reduction must be 'sum', 'mean' or 'none', got {reduction!r}")


def binary_cross_entropy_with_logits(logits, targets):
    """Elementwise BCE of sigmoid(logits) against targets in [0, 1], stable for any logit:
    max(x, 0) - x * z + log(1 + exp(-|x|))."""
    x, z = np.asarray(logits, np.float64), np.asarray(targets, np.float64)
    return np.maximum(x, 0) - x * z + np.log1p(np.exp(-np.abs(x)))


def objectness_loss(objectness_logits, labels):
    """RPN objectness: mean BCE-with-logits over anchors labelled 1 (object) or 0 (background).

    objectness_logits (A,); labels (A,) in {-1, 0, 1}, -1 meaning "not sampled". Returns a float.
    """
    logits, labels = np.asarray(objectness_logits), np.asarray(labels)
    if logits.shape != labels.shape or logits.ndim != 1:
        raise ValueError(f"objectness_logits and labels must both be (A,), got {logits.shape} "
                         f"and {labels.shape}")
    sampled = labels >= 0
    if not sampled.any():
        return 0.0
    return float(binary_cross_entropy_with_logits(logits[sampled], labels[sampled]).mean())


def rpn_box_loss(pred_deltas, target_deltas, labels):
    """RPN box loss: smooth L1 (beta 1/9, summed) over positive anchors / number of sampled anchors.

    pred_deltas, target_deltas (A, 4); labels (A,) in {-1, 0, 1}. Returns a float.
    """
    pred, target, labels = np.asarray(pred_deltas), np.asarray(target_deltas), np.asarray(labels)
    if pred.shape != target.shape or pred.shape != (len(labels), 4):
        raise ValueError(f"pred_deltas and target_deltas must be ({len(labels)}, 4), got "
                         f"{pred.shape} and {target.shape}")
    sampled = int((labels >= 0).sum())
    if sampled == 0:
        return 0.0
    positive = labels == 1
    return smooth_l1_loss(pred[positive], target[positive], beta=1 / 9, reduction="sum") / sampled


def cross_entropy(logits, labels):
    """(K,) cross-entropy of softmax(logits) at the labels: logsumexp(row) - row[label]."""
    logits = np.asarray(logits, np.float64)
    top = logits.max(axis=1, keepdims=True)  # (K, 1) subtracted so that exp never overflows
    logsumexp = top[:, 0] + np.log(np.exp(logits - top).sum(axis=1))  # (K,)
    return logsumexp - logits[np.arange(len(logits)), labels]


def fast_rcnn_loss(class_logits, box_regression, labels, regression_targets):
    """Box head losses: (classification, box regression), two floats.

    class_logits (K, C + 1); box_regression (K, 4 * (C + 1)) class-specific deltas; labels (K,)
    in 0..C; regression_targets (K, 4) encoded against each RoI. Classification is the mean
    cross-entropy; box loss sums smooth L1 (beta 1/9) over positive RoIs on their own class's
    deltas and divides by K (all sampled RoIs, as torchvision does).
    """
    logits, deltas = np.asarray(class_logits), np.asarray(box_regression)
    labels, targets = np.asarray(labels).astype(np.int64), np.asarray(regression_targets)
    K = len(labels)
    if logits.ndim != 2 or logits.shape[0] != K:
        raise ValueError(f"class_logits must be ({K}, C + 1), got {logits.shape}")
    if deltas.shape != (K, 4 * logits.shape[1]) or targets.shape != (K, 4):
        raise ValueError(f"box_regression must be ({K}, {4 * logits.shape[1]}) and "
                         f"regression_targets ({K}, 4), got {deltas.shape} and {targets.shape}")
    if K == 0:
        return 0.0, 0.0
    classification = float(cross_entropy(logits, labels).mean())
    positive = np.flatnonzero(labels > 0)  # (P,)
    per_class = deltas.reshape(K, -1, 4)  # (K, C + 1, 4)
    picked = per_class[positive, labels[positive]]  # (P, 4) the deltas of the true class
    box = smooth_l1_loss(picked, targets[positive], beta=1 / 9, reduction="sum") / K
    return classification, box


def mask_loss(mask_logits, labels, mask_targets):
    """Mask loss: mean BCE-with-logits over the M x M pixels of each RoI's label channel.

    mask_logits (K, C + 1, M, M), one channel per class with background's channel unused, as in
    torchvision; labels (K,) in 1..C (positive RoIs only); mask_targets (K, M, M) in {0, 1}.
    Returns a float, 0.0 when K = 0.
    """
    logits, labels = np.asarray(mask_logits), np.asarray(labels).astype(np.int64)
    targets = np.asarray(mask_targets)
    K = len(labels)
    if logits.ndim != 4 or logits.shape[0] != K or targets.shape != (K,) + logits.shape[2:]:
        raise ValueError(f"mask_logits must be ({K}, C + 1, M, M) and mask_targets ({K}, M, M), "
                         f"got {logits.shape} and {targets.shape}")
    if K == 0:
        return 0.0
    own = logits[np.arange(K), labels]  # (K, M, M) only the ground-truth class is trained
    return float(binary_cross_entropy_with_logits(own, targets).mean())
