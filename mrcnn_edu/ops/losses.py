"""Lesson 07: torch twin of `mrcnn_edu.reference.losses` (RPN, box head and mask losses).

Shape legend: A sampled anchors, K RoIs, C object classes, M x M mask grid.
Every loss returns a 0-dim tensor that keeps the autograd graph; with nothing to average it is
a zero built from the inputs (`x.sum() * 0`), so `backward()` still works on an empty batch.

Reference -> twin:
    smooth_l1_loss, objectness_loss, rpn_box_loss, fast_rcnn_loss, mask_loss -> the same names
    binary_cross_entropy_with_logits, cross_entropy -> torch.nn.functional's functions of
                                                       those names
"""
import torch
import torch.nn.functional as F


def smooth_l1_loss(pred, target, beta=1 / 9, reduction="sum"):
    """Torch twin of `mrcnn_edu.reference.losses.smooth_l1_loss`: same contract, tensors out."""
    if pred.shape != target.shape:
        raise ValueError(f"pred and target must have one shape, got {tuple(pred.shape)} "
                         f"and {tuple(target.shape)}")
    diff = torch.abs(pred - target)
    if beta > 0:
        loss = torch.where(diff < beta, 0.5 * diff ** 2 / beta, diff - 0.5 * beta)
    else:
        loss = diff  # beta = 0: plain L1, and no 0 / 0 in the unused branch
    if reduction == "none":
        return loss
    if reduction == "sum":
        return loss.sum()
    if reduction == "mean":
        return loss.mean() if loss.numel() else loss.sum() * 0
    raise ValueError(f"reduction must be 'sum', 'mean' or 'none', got {reduction!r}")


def objectness_loss(objectness_logits, labels):
    """Torch twin of `mrcnn_edu.reference.losses.objectness_loss`: same contract."""
    if objectness_logits.shape != labels.shape or labels.ndim != 1:
        raise ValueError(f"objectness_logits and labels must both be (A,), got "
                         f"{tuple(objectness_logits.shape)} and {tuple(labels.shape)}")
    sampled = labels >= 0
    if not bool(sampled.any()):
        return objectness_logits.sum() * 0
    return F.binary_cross_entropy_with_logits(objectness_logits[sampled],
                                              labels[sampled].to(objectness_logits.dtype))


def rpn_box_loss(pred_deltas, target_deltas, labels):
    """Torch twin of `mrcnn_edu.reference.losses.rpn_box_loss`: same contract."""
    if pred_deltas.shape != target_deltas.shape or pred_deltas.shape != (len(labels), 4):
        raise ValueError(f"pred_deltas and target_deltas must be ({len(labels)}, 4), got "
                         f"{tuple(pred_deltas.shape)} and {tuple(target_deltas.shape)}")
    sampled = int((labels >= 0).sum())
    positive = labels == 1
    loss = smooth_l1_loss(pred_deltas[positive], target_deltas[positive], 1 / 9, "sum")
    return loss / max(sampled, 1)


def fast_rcnn_loss(class_logits, box_regression, labels, regression_targets):
    """Torch twin of `mrcnn_edu.reference.losses.fast_rcnn_loss`: same contract, 0-dim tensors."""
    K = len(labels)
    if class_logits.ndim != 2 or class_logits.shape[0] != K:
        raise ValueError(f"class_logits must be ({K}, C + 1), got {tuple(class_logits.shape)}")
    if (box_regression.shape != (K, 4 * class_logits.shape[1])
            or regression_targets.shape != (K, 4)):
        raise ValueError(f"box_regression must be ({K}, {4 * class_logits.shape[1]}) and "
                         f"regression_targets ({K}, 4), got {tuple(box_regression.shape)} "
                         f"and {tuple(regression_targets.shape)}")
    if K == 0:
        return class_logits.sum() * 0, box_regression.sum() * 0
    labels = labels.long()
    classification = F.cross_entropy(class_logits, labels)
    positive = torch.nonzero(labels > 0).squeeze(1)  # (P,)
    per_class = box_regression.reshape(K, -1, 4)  # (K, C + 1, 4)
    picked = per_class[positive, labels[positive]]  # (P, 4)
    box = smooth_l1_loss(picked, regression_targets[positive], 1 / 9, "sum") / K
    return classification, box


def mask_loss(mask_logits, labels, mask_targets):
    """Torch twin of `mrcnn_edu.reference.losses.mask_loss`: same contract."""
    K = len(labels)
    if (mask_logits.ndim != 4 or mask_logits.shape[0] != K
            or mask_targets.shape != (K,) + tuple(mask_logits.shape[2:])):
        raise ValueError(f"mask_logits must be ({K}, C + 1, M, M) and mask_targets ({K}, M, M), "
                         f"got {tuple(mask_logits.shape)} and {tuple(mask_targets.shape)}")
    if K == 0:
        return mask_logits.sum() * 0
    own = mask_logits[torch.arange(K, device=labels.device), labels.long()]  # (K, M, M)
    return F.binary_cross_entropy_with_logits(own, mask_targets.to(own.dtype))
