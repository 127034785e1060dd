"""The numpy/numba reference implementation of every Mask R-CNN stage, one module per lesson.

numpy arrays in, numpy arrays out; numba where the algorithm is a loop; never imports torch.
Each public name here has a torch twin of the same name in `mrcnn_edu.ops`.
"""

from .boxes import box_area, box_iou, clip_boxes, expand_boxes, remove_small_boxes
from .anchors import generate_anchors
from .box_coder import encode_boxes, decode_boxes
from .nms import nms, batched_nms
from .matching import match_anchors, sample_labels
from .fpn_levels import assign_fpn_levels
from .roi_pool import roi_pool
from .roi_align import roi_align, roi_align_backward, multiscale_roi_align
from .masks import mask_targets, paste_masks
from .losses import smooth_l1_loss, objectness_loss, rpn_box_loss, fast_rcnn_loss, mask_loss
from .coco_eval import coco_evaluate
