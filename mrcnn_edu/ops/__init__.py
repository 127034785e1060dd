"""The PyTorch twins of `mrcnn_edu.reference`: same names, same signatures, same contracts.

torch tensors in, torch tensors out, on any device, float32 or float64; vectorised, because
this is what the model in `mrcnn_edu.model` trains with.
"""

from .boxes import box_area, box_iou, clip_boxes, expand_boxes, remove_small_boxes
from .anchors import generate_anchors
from .box_coder import encode_boxes, decode_boxes
from .nms import nms, batched_nms
from .matching import match_anchors, sample_labels
from .fpn_levels import assign_fpn_levels
from .roi_pool import roi_pool
from .roi_align import roi_align, roi_align_backward, multiscale_roi_align
from .masks import mask_targets, batch_mask_targets, paste_masks
from .losses import smooth_l1_loss, objectness_loss, rpn_box_loss, fast_rcnn_loss, mask_loss
from .coco_eval import coco_evaluate
