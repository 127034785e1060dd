"""Solutions to lesson 07's "your turn": the mask target of one RoI, and the mask loss."""
import numpy as np

from mrcnn_edu import reference


def mask_target_single(gt_mask, box, size=28):
    """(size, size) target of one RoI: RoIAlign of its object's mask over the box, >= 0.5."""
    rois = np.array([[0.0, *box]])  # (1, 5): batch index 0 is the one mask
    soft = reference.roi_align(gt_mask[None, None].astype(np.float64), rois, size, 1.0,
                               sampling_ratio=-1, aligned=True)  # (1, 1, size, size) fraction covered
    return (soft[0, 0] >= 0.5).astype(np.float64)


def mask_loss(mask_logits, labels, mask_targets):
    """Mean binary cross-entropy over the pixels of each RoI's own class channel."""
    K = len(labels)
    if K == 0:
        return 0.0
    x = mask_logits[np.arange(K), labels]  # (K, M, M) the channel of each RoI's class
    z = mask_targets
    # -z log(sigmoid(x)) - (1 - z) log(1 - sigmoid(x)), written so that exp never overflows
    loss = np.maximum(x, 0) - x * z + np.log1p(np.exp(-np.abs(x)))
    return float(loss.mean())
