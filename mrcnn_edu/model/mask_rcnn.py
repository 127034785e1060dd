"""MaskRCNN: from a list of images to losses or detections (lesson 10_training_on_shapes).

    images [(3, H_i, W_i) in [0, 1]]
      -> BatchTransform: resize, normalise, pad            (B, 3, H, W)
      -> ResNet backbone                                   C2..C5
      -> FPN                                               P2..P6
      -> RPN                                               proposals [(P, 4)]  (+ 2 losses)
      -> RoI heads                                         detections          (+ 3 losses)
      -> BatchTransform.postprocess                        boxes and masks in original pixels

    model.train():  model(images, targets) -> {loss_objectness, loss_rpn_box,
                                               loss_classifier, loss_box, loss_mask}
    model.eval():   model(images)          -> [{boxes (D, 4) float32, labels (D,) int64,
                                                scores (D,) float32, masks (D, H_i, W_i) uint8}]
                    model(images, targets) -> (detections, losses)  # validation loss

Targets are `CocoDataset` dicts (boxes xyxy pixels, labels 1..K, masks (N, H, W) uint8,
iscrowd); crowd instances are dropped before they can become training targets.
In eval mode the losses sample RoIs with a fixed seed, so a validation loss is repeatable;
the detections never depend on it. Under autocast the convolutions run in half precision but
anchors, boxes, losses and detections stay float32.

Shape legend: B images, D detections, H_i x W_i the size of image i as given.
"""
from __future__ import annotations

import torch
from torch import nn

from mrcnn_edu.model.backbone import ResNet, load_torchvision_weights
from mrcnn_edu.model.fpn import FPN
from mrcnn_edu.model.roi_heads import RoIHeads
from mrcnn_edu.model.rpn import RPN
from mrcnn_edu.model.transforms import BatchTransform

LOSS_KEYS = ("loss_objectness", "loss_rpn_box", "loss_classifier", "loss_box", "loss_mask")


class MaskRCNN(nn.Module):
    """Mask R-CNN with a ResNet-FPN backbone, built from one `mrcnn_edu.config.Config`."""

    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        self.transform = BatchTransform(cfg.min_size, cfg.max_size, cfg.pixel_mean, cfg.pixel_std,
                                        cfg.size_divisible, cfg.train_min_sizes)
        self.backbone = ResNet(cfg.backbone_depth, cfg.norm, cfg.group_norm_groups,
                               cfg.backbone_width)
        self.fpn = FPN(self.backbone.out_channels, cfg.fpn_channels)
        self.rpn = RPN.from_config(cfg, cfg.fpn_channels)
        self.roi_heads = RoIHeads.from_config(cfg, cfg.fpn_channels)
        if cfg.backbone_weights:
            self.load_backbone_weights(cfg.backbone_weights)
        self.backbone.freeze(cfg.freeze_at)

    def load_backbone_weights(self, path: str, verbose: bool = True) -> tuple[list[str], list[str]]:
        """Load a torchvision ResNet checkpoint into the backbone; returns (missing, unexpected).

        Both are lists of key names; they are also printed when `verbose`.
        """
        return load_torchvision_weights(self.backbone, path, verbose)

    def forward(self, images: list[torch.Tensor], targets: list[dict] | None = None):
        if self.training and targets is None:
            raise ValueError("in train mode the model needs targets; call model.eval() to predict")
        original_sizes = [tuple(img.shape[-2:]) for img in images]
        batch, image_sizes, resized_targets = self.transform(images, targets)  # (B, 3, H, W)
        features = self.fpn(self.backbone(batch))  # [P2..P6], (B, F, H / s, W / s)
        # Training samples with the global RNG (seeded by the trainer), validation with a fixed
        # seed so that a validation loss is the same number on every call.
        generator = None if self.training else torch.Generator(batch.device).manual_seed(0)
        proposals, losses = self.rpn(features, image_sizes, batch.shape[-2:], resized_targets,
                                     generator)  # [(P, 4)], {} or the two RPN losses
        if targets is not None:
            losses.update(self.roi_heads.losses(features, proposals, resized_targets, generator))
        if self.training:
            return losses
        detections = self.roi_heads.detect(features, proposals, image_sizes)
        detections = self.transform.postprocess(detections, image_sizes, original_sizes,
                                                self.cfg.mask_threshold,
                                                self.cfg.mask_box_scale)
        return detections if targets is None else (detections, losses)
