"""RoI heads: box classification, box refinement and masks on the proposals (lesson 09_roi_heads).

He et al. 2017: "In the second stage, in parallel to predicting the class and box offset,
Mask R-CNN also outputs a binary mask for each RoI."

Training (`losses`): the ground-truth boxes join the proposals (so every object has at least
one perfect RoI from the first iteration on); each RoI is matched to the ground truth at IoU
0.5 (foreground >= 0.5, background below); 512 RoIs per image are sampled with at most 25%
foreground. The box head sees all sampled RoIs (RoIAlign 7x7 on the FPN level that suits
their size, two FC layers, K + 1 class logits and class-specific deltas with weights
(10, 10, 5, 5)); the mask head sees only the foreground ones (RoIAlign 14x14, four 3x3 convs,
a 2x deconv, a 1x1 conv to K + 1 masks of 28 x 28; only the ground-truth class's mask is
penalised).

Inference (`detect`): every proposal gets K class scores and K decoded boxes; (box, class)
pairs scoring > 0.05 survive, per-class NMS at 0.5, the best 100 per image are kept, and the
mask head runs on those final boxes.

`mask_box_scale` (Config; 1 in torchvision and in the paper) widens the mask head's view at
inference: with s > 1 it sees each detection box scaled by s about its centre, and the mask is
pasted into that scaled box, so it can cover the pixels a box a little too tight leaves out
(a mask never reaches past the box it is pasted into), at the price of a coarser grid (28
cells over s x the box). Training is unchanged: its RoIs are mostly proposals, less exact than
the final boxes and often larger than their object, so the head has already learned to find an
object that does not fill its box.

Shape legend: K1 = num_classes + 1 (background 0 and K classes), N proposals of one image,
S sampled RoIs (all images), F foreground RoIs, D detections, C channels, M mask side (28).
RoIs for RoIAlign are (x, 5) rows [batch_index, x1, y1, x2, y2] in resized-image pixels.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from mrcnn_edu.ops import (
    batched_nms,
    box_iou,
    clip_boxes,
    decode_boxes,
    encode_boxes,
    expand_boxes,
    fast_rcnn_loss,
    batch_mask_targets,
    mask_loss,
    match_anchors,
    multiscale_roi_align,
    remove_small_boxes,
    sample_labels,
)


def _norm(groups: int, channels: int) -> nn.Module:
    """GroupNorm with `groups` groups, or nothing (an Identity, no weights) when groups is 0."""
    return nn.GroupNorm(groups, channels) if groups else nn.Identity()


class BoxHead(nn.Module):
    """Two FC layers (the paper's "2fc" head), then K1 class logits and 4 * K1 box deltas.

    `norm_groups` > 0 puts a GroupNorm of that many groups after each FC layer (before its
    ReLU): the from-scratch recipe of Wu & He's GroupNorm paper, off (0) in the paper's model.
    """

    def __init__(self, in_channels: int, pool_size: int, dim: int, num_classes: int,
                 norm_groups: int = 0):
        super().__init__()
        self.fc6 = nn.Linear(in_channels * pool_size * pool_size, dim)
        self.fc7 = nn.Linear(dim, dim)
        self.cls_score = nn.Linear(dim, num_classes + 1)
        self.bbox_pred = nn.Linear(dim, 4 * (num_classes + 1))
        self.norm6, self.norm7 = (_norm(norm_groups, dim) for _ in range(2))
        # Small initial outputs: uniform class scores and near-zero deltas at the start.
        nn.init.normal_(self.cls_score.weight, std=0.01)
        nn.init.normal_(self.bbox_pred.weight, std=0.001)
        for layer in (self.cls_score, self.bbox_pred):
            nn.init.zeros_(layer.bias)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # ReLU in place: no backward pass keeps a layer's output, only its input
        x = F.relu(self.norm6(self.fc6(x.flatten(1))), inplace=True)  # (S, dim)
        x = F.relu(self.norm7(self.fc7(x)), inplace=True)  # (S, dim)
        return self.cls_score(x), self.bbox_pred(x)  # (S, K1), (S, 4 * K1)


class MaskHead(nn.Module):
    """`num_convs` 3x3 convs + ReLU, a 2x2 stride-2 deconv + ReLU, a 1x1 conv to K1 mask logits.

    `norm_groups` > 0 puts a GroupNorm after each 3x3 conv (before its ReLU), as in BoxHead.
    """

    def __init__(self, in_channels: int, dim: int, num_convs: int, num_classes: int,
                 norm_groups: int = 0):
        super().__init__()
        widths = [in_channels] + [dim] * num_convs
        self.convs = nn.ModuleList(nn.Conv2d(a, b, 3, padding=1)
                                   for a, b in zip(widths, widths[1:]))
        self.norms = nn.ModuleList(_norm(norm_groups, dim) for _ in range(num_convs))
        self.deconv = nn.ConvTranspose2d(dim, dim, 2, stride=2)
        self.predictor = nn.Conv2d(dim, num_classes + 1, 1)
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for conv, norm in zip(self.convs, self.norms):
            x = F.relu(norm(conv(x)), inplace=True)  # (F, dim, 14, 14) in place, as in BoxHead
        x = F.relu(self.deconv(x), inplace=True)  # (F, dim, 28, 28)
        return self.predictor(x)  # (F, K1, 28, 28)


def as_rois(boxes_per_image: list[torch.Tensor]) -> torch.Tensor:
    """[(N_b, 4)] -> (sum N_b, 5) rows [b, x1, y1, x2, y2] for RoIAlign."""
    return torch.cat([torch.cat([torch.full_like(b[:, :1], i), b], dim=1)
                      for i, b in enumerate(boxes_per_image)])


class RoIHeads(nn.Module):
    """Box and mask heads on P2..P5: `losses(...)` for training, `detect(...)` for inference.

    Settings are keyword arguments named as the `Config` fields they come from; the sampling
    ones drop the `roi_` prefix (`fg_iou_thresh` is `Config.roi_fg_iou_thresh`).
    `RoIHeads.from_config(cfg, in_channels)` reads them all from a Config.
    """

    def __init__(self, in_channels: int, num_classes: int, *, box_pool_size: int,
                 box_head_dim: int, mask_pool_size: int, mask_head_dim: int,
                 mask_head_convs: int, mask_size: int, mask_box_scale: float,
                 head_norm_groups: int, sampling_ratio: int, fg_iou_thresh: float,
                 bg_iou_thresh: float, batch_size_per_image: int, positive_fraction: float,
                 box_reg_weights, score_thresh: float, nms_thresh: float,
                 detections_per_image: int):
        super().__init__()
        # Settings only, no defaults: `Config` holds the one default of each.
        self.box_pool_size, self.mask_pool_size = box_pool_size, mask_pool_size
        self.mask_size, self.sampling_ratio = mask_size, sampling_ratio
        self.mask_box_scale = mask_box_scale
        self.fg_iou_thresh, self.bg_iou_thresh = fg_iou_thresh, bg_iou_thresh
        self.batch_size_per_image, self.positive_fraction = batch_size_per_image, positive_fraction
        self.box_reg_weights = tuple(box_reg_weights)
        self.score_thresh, self.nms_thresh = score_thresh, nms_thresh
        self.detections_per_image = detections_per_image
        self.box_head = BoxHead(in_channels, box_pool_size, box_head_dim, num_classes,
                                head_norm_groups)
        self.mask_head = MaskHead(in_channels, mask_head_dim, mask_head_convs, num_classes,
                                  head_norm_groups)

    @classmethod
    def from_config(cls, cfg, in_channels: int) -> "RoIHeads":
        """The RoI heads of a `mrcnn_edu.config.Config`: its box_*, mask_*, roi_* and
        detection fields."""
        return cls(in_channels, cfg.num_classes, box_pool_size=cfg.box_pool_size,
                   box_head_dim=cfg.box_head_dim, mask_pool_size=cfg.mask_pool_size,
                   mask_head_dim=cfg.mask_head_dim, mask_head_convs=cfg.mask_head_convs,
                   mask_size=cfg.mask_size, mask_box_scale=cfg.mask_box_scale,
                   head_norm_groups=cfg.head_norm_groups,
                   sampling_ratio=cfg.sampling_ratio, fg_iou_thresh=cfg.roi_fg_iou_thresh,
                   bg_iou_thresh=cfg.roi_bg_iou_thresh,
                   batch_size_per_image=cfg.roi_batch_size_per_image,
                   positive_fraction=cfg.roi_positive_fraction,
                   box_reg_weights=cfg.box_reg_weights, score_thresh=cfg.score_thresh,
                   nms_thresh=cfg.nms_thresh, detections_per_image=cfg.detections_per_image)

    def pool(self, features, rois, size) -> torch.Tensor:
        """RoIAlign of each RoI on its level P2..P5: rois (x, 5) -> (x, C, size, size)."""
        return multiscale_roi_align(features[:4], rois, size, sampling_ratio=self.sampling_ratio)

    # ---- training ----
    def sample(self, proposals, target, generator=None):
        """One image: match proposals + gt to the gt and sample RoIs.

        Returns boxes (S_b, 4), class labels (S_b,) in 0..K, matched gt index (S_b,) (meaningful
        where label > 0) and box regression targets (S_b, 4).
        """
        gt = target["boxes"].to(proposals)  # (G, 4) in the proposals' float32 (or float64)
        boxes = torch.cat([proposals, gt])  # (N + G, 4)
        iou = box_iou(gt, boxes)  # (G, N + G)
        matched, match_labels = match_anchors(iou, self.fg_iou_thresh, self.bg_iou_thresh,
                                              allow_low_quality=False)  # (N + G,) x2, 1/0/-1
        match_labels = sample_labels(match_labels, self.batch_size_per_image,
                                     self.positive_fraction, generator)  # (N + G,) -1: unsampled
        keep = torch.nonzero(match_labels >= 0).flatten()  # (S_b,)
        boxes, matched, match_labels = boxes[keep], matched[keep], match_labels[keep]
        if gt.shape[0] == 0:  # every RoI is background: labels 0, nothing to regress to
            return boxes, torch.zeros_like(match_labels), matched, torch.zeros_like(boxes)
        gt_labels = target["labels"].to(match_labels.device)  # (G,) classes 1..K
        labels = torch.where(match_labels == 1, gt_labels[matched], 0)  # (S_b,) 0 = background
        deltas = encode_boxes(boxes, gt[matched], self.box_reg_weights)  # (S_b, 4)
        return boxes, labels, matched, deltas

    def losses(self, features, proposals, targets, generator=None) -> dict:
        """loss_classifier and loss_box over the sampled RoIs, loss_mask over their foreground."""
        samples = [self.sample(p, t, generator) for p, t in zip(proposals, targets)]
        boxes, labels, matched, deltas = (list(x) for x in zip(*samples))
        roi_features = self.pool(features, as_rois(boxes), self.box_pool_size)  # (S, C, 7, 7)
        class_logits, box_regression = self.box_head(roi_features)  # (S, K1), (S, 4 * K1)
        dtype = proposals[0].dtype  # the losses in float32 even under autocast
        class_logits, box_regression = class_logits.to(dtype), box_regression.to(dtype)
        loss_classifier, loss_box = fast_rcnn_loss(class_logits, box_regression,
                                                   torch.cat(labels), torch.cat(deltas))
        loss_mask = self.mask_loss(features, boxes, labels, matched, targets)
        return {"loss_classifier": loss_classifier, "loss_box": loss_box, "loss_mask": loss_mask}

    def mask_loss(self, features, boxes, labels, matched, targets) -> torch.Tensor:
        """Mask BCE on the foreground RoIs only: background RoIs have no mask to learn."""
        fg = [lab > 0 for lab in labels]
        rois = as_rois([b[f] for b, f in zip(boxes, fg)])  # (F, 5)
        logits = self.mask_head(self.pool(features, rois, self.mask_pool_size))  # (F, K1, M, M)
        gt_masks = batch_mask_targets([t["masks"] for t in targets],
                                      [m[f] for m, f in zip(matched, fg)],
                                      [b[f] for b, f in zip(boxes, fg)], self.mask_size)  # (F, M, M)
        fg_labels = torch.cat([lab[f] for lab, f in zip(labels, fg)])  # (F,)
        return mask_loss(logits.to(gt_masks.dtype), fg_labels, gt_masks)

    # ---- inference ----
    @torch.no_grad()
    def detect(self, features, proposals, image_sizes) -> list[dict]:
        """Per image {boxes (D, 4) in resized pixels, labels (D,), scores (D,), masks (D, M, M)}.

        masks are probabilities of the detected class over each box scaled by `mask_box_scale`;
        `BatchTransform.postprocess` pastes them there.
        """
        rois = as_rois(proposals)  # (N_all, 5)
        roi_features = self.pool(features, rois, self.box_pool_size)  # (N_all, C, 7, 7)
        class_logits, box_regression = self.box_head(roi_features)  # (N_all, K1), (N_all, 4 * K1)
        dtype = proposals[0].dtype  # decode in float32 even under autocast
        class_logits, box_regression = class_logits.to(dtype), box_regression.to(dtype)
        counts = [len(p) for p in proposals]
        scores = class_logits.softmax(-1).split(counts)  # [(N, K1)]
        detections = [self.select(*args) for args in
                      zip(proposals, scores, box_regression.split(counts), image_sizes)]

        rois = as_rois([expand_boxes(d["boxes"], self.mask_box_scale)
                        for d in detections])  # (D_all, 5)
        mask_features = self.pool(features, rois, self.mask_pool_size)  # (D_all, C, 14, 14)
        logits = self.mask_head(mask_features)  # (D_all, K1, M, M)
        labels = torch.cat([d["labels"] for d in detections])  # (D_all,)
        rows = torch.arange(len(labels), device=labels.device)
        probs = logits[rows, labels].float().sigmoid()  # (D_all, M, M)
        for d, p in zip(detections, probs.split([len(d["labels"]) for d in detections])):
            d["masks"] = p  # (D, M, M) the mask of the detected class only
        return detections

    def select(self, proposals, scores, box_regression, image_size) -> dict:
        """One image: proposals (N, 4), scores (N, K1), deltas (N, 4 * K1) -> final detections."""
        n, k1 = scores.shape
        boxes = decode_boxes(proposals, box_regression, self.box_reg_weights)  # (N, 4 * K1)
        boxes = clip_boxes(boxes.view(n, k1, 4)[:, 1:].reshape(-1, 4), image_size)  # (N * K, 4)
        labels = torch.arange(1, k1, device=scores.device).repeat(n)  # (N * K,) class of each row
        scores = scores[:, 1:].reshape(-1)  # (N * K,) background dropped
        keep = torch.nonzero(scores > self.score_thresh).flatten()
        boxes, scores, labels = boxes[keep], scores[keep], labels[keep]
        keep = remove_small_boxes(boxes, 1e-2)  # boxes clipping squashed to nothing
        boxes, scores, labels = boxes[keep], scores[keep], labels[keep]
        keep = batched_nms(boxes, scores, labels, self.nms_thresh)  # per class, best first
        keep = keep[: self.detections_per_image]
        return {"boxes": boxes[keep], "labels": labels[keep], "scores": scores[keep]}
