"""Solution to lesson 09's "your turn": RoI sampling for one image (`RoIHeads.sample`)."""
import numpy as np

from mrcnn_edu import reference


def sample_rois(proposals, gt_boxes, gt_labels, batch_size_per_image=512, positive_fraction=0.25,
                generator=0):
    """Add the gt to the proposals, match at 0.5, sample, and label the sampled RoIs."""
    boxes = np.concatenate([proposals, gt_boxes])  # (N + G, 4): every object gets a perfect RoI
    if len(gt_boxes) == 0:
        fg = np.zeros(len(boxes), np.int64)  # nothing to match: all background
        matched = np.zeros(len(boxes), np.int64)
    else:
        iou = reference.box_iou(gt_boxes, boxes)  # (G, N + G)
        matched = iou.argmax(axis=0)  # best gt of each box (the first one on ties)
        fg = (iou.max(axis=0) >= 0.5).astype(np.int64)  # 1 foreground, 0 background
    picked = reference.sample_labels(fg, batch_size_per_image, positive_fraction, generator)
    keep = np.flatnonzero(picked >= 0)  # the sampled boxes, in index order
    boxes, matched, fg = boxes[keep], matched[keep], picked[keep]
    if len(gt_boxes) == 0:
        return boxes, np.zeros(len(keep), np.int64), matched, np.zeros_like(boxes)
    labels = np.where(fg == 1, gt_labels[matched], 0)  # background is class 0
    targets = reference.encode_boxes(boxes, gt_boxes[matched], (10.0, 10.0, 5.0, 5.0))
    return boxes, labels, matched, targets
