"""Mask R-CNN as nn.Modules built on `mrcnn_edu.ops` (lessons 05 and 08-10).

    from mrcnn_edu.config import preset
    from mrcnn_edu.model import MaskRCNN
    model = MaskRCNN(preset("tiny"))

Modules in reading order: backbone (ResNet), fpn (FPN), rpn (RPN), roi_heads (RoIHeads),
transforms (BatchTransform, RandomHorizontalFlip), mask_rcnn (MaskRCNN).
"""
from .backbone import FrozenBatchNorm2d, ResNet, load_torchvision_weights
from .fpn import FPN
from .mask_rcnn import LOSS_KEYS, MaskRCNN
from .roi_heads import RoIHeads
from .rpn import RPN
from .transforms import BatchTransform, RandomHorizontalFlip

__all__ = [
    "FrozenBatchNorm2d", "ResNet", "load_torchvision_weights", "FPN", "LOSS_KEYS", "MaskRCNN",
    "RoIHeads", "RPN", "BatchTransform", "RandomHorizontalFlip",
]
