"""Solution to lesson 08's "your turn": the RPN's proposals of one level of one image."""
import numpy as np

from mrcnn_edu import reference


def select_level_proposals(objectness, deltas, anchors, image_size, pre_nms_top_n=1000,
                           post_nms_top_n=1000, nms_thresh=0.7, min_size=1e-3):
    """Top-k by objectness, decode, clip, drop tiny boxes, NMS, keep the best post_nms_top_n."""
    top = np.argsort(-objectness, kind="stable")[:pre_nms_top_n]  # best first
    boxes = reference.decode_boxes(anchors[top], deltas[top])  # RPN weights (1, 1, 1, 1)
    boxes = reference.clip_boxes(boxes, image_size)
    scores = objectness[top]
    keep = reference.remove_small_boxes(boxes, min_size)
    boxes, scores = boxes[keep], scores[keep]
    keep = reference.nms(boxes, scores, nms_thresh)  # indices, highest score first
    return boxes[keep[:post_nms_top_n]]
