"""Region Proposal Network over the FPN levels P2..P6 (lesson 08_rpn).

Ren et al. 2015: "a small network slid over the convolutional feature map ... each sliding
window is mapped to ... a box-regression layer and a box-classification layer". One head
(3x3 conv, then 1x1 convs for A objectness logits and 4A deltas) is shared by every level;
each level has anchors of one size and A aspect ratios.

Training targets: every anchor is matched to the ground truth by IoU (`match_anchors`,
positive >= 0.7, negative < 0.3, plus each ground truth's best anchors), then 256 anchors per
image are sampled with at most half positives (`sample_labels`).
Proposals: per image and level, the top-k anchors by objectness are decoded, clipped to the
image, stripped of tiny boxes, NMS'd at 0.7 within their level, and the best post-NMS top-n
over all levels are kept. Proposals are detached: no gradient flows from the RoI heads into
the RPN's box regression (the "approximate joint training" of Faster R-CNN).

Shape legend: B images, A anchors per cell, L levels, H_l x W_l level size,
R_l = H_l * W_l * A anchors of level l, R = sum of R_l, G ground-truth boxes, P proposals.
Anchor order is location-major (all A anchors of one cell together), as `generate_anchors`
returns them and as the head's outputs are flattened here.
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
    generate_anchors,
    match_anchors,
    nms,
    objectness_loss,
    remove_small_boxes,
    rpn_box_loss,
    sample_labels,
)


def one_nms_for_all_levels(device) -> bool:
    """Whether the proposals of all levels go through one NMS call (on a GPU) or one call per
    level (on a CPU). Both keep the same boxes, except that `batched_nms`'s offsets can move an
    IoU in its last bit, so a pair exactly at the threshold may go either way; only the time
    differs otherwise."""
    return device.type == "cuda"


class RPNHead(nn.Module):
    """3x3 conv + ReLU, then 1x1 convs to A objectness logits and 4A box deltas per cell."""

    def __init__(self, channels: int, num_anchors: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)
        self.objectness = nn.Conv2d(channels, num_anchors, 1)
        self.deltas = nn.Conv2d(channels, 4 * num_anchors, 1)
        for layer in (self.conv, self.objectness, self.deltas):
            nn.init.normal_(layer.weight, std=0.01)
            nn.init.zeros_(layer.bias)

    def forward(self, features: list[torch.Tensor]):
        """features [(B, C, H_l, W_l)] -> objectness [(B, R_l)], deltas [(B, R_l, 4)].

        Flattened location-major, like the anchors: index (y * W_l + x) * A + a.
        """
        objectness, deltas = [], []
        for x in features:
            t = F.relu(self.conv(x), inplace=True)  # (B, C, H_l, W_l) in place: nothing keeps it
            o = self.objectness(t)  # (B, A, H_l, W_l)
            d = self.deltas(t)  # (B, 4A, H_l, W_l)
            b, a, h, w = o.shape
            objectness.append(o.permute(0, 2, 3, 1).reshape(b, h * w * a))  # (B, R_l)
            d = d.view(b, a, 4, h, w).permute(0, 3, 4, 1, 2)  # (B, H_l, W_l, A, 4)
            deltas.append(d.reshape(b, h * w * a, 4))  # (B, R_l, 4)
        return objectness, deltas


class RPN(nn.Module):
    """forward(features, image_sizes, padded_size, targets=None) -> (proposals [(P, 4)], losses).

    features: [P2..P6] from the FPN, (B, C, H_l, W_l); image_sizes: the (h, w) of each image
    inside the padded batch; padded_size: the batch's (H, W), which fixes the anchor grids;
    targets: resized non-crowd targets (only "boxes" is used), or None. The losses
    ({"loss_objectness", "loss_rpn_box"}) are computed only when targets are given.

    Settings are keyword arguments named as the `Config` fields they come from, without the
    `rpn_` prefix (`nms_thresh` is `Config.rpn_nms_thresh`); `RPN.from_config(cfg, in_channels)`
    reads them all from a Config.
    """

    def __init__(self, in_channels: int, *, anchor_strides, anchor_sizes, anchor_aspect_ratios,
                 pre_nms_top_n_train: int, post_nms_top_n_train: int, pre_nms_top_n_test: int,
                 post_nms_top_n_test: int, nms_thresh: float, min_size: float,
                 fg_iou_thresh: float, bg_iou_thresh: float, batch_size_per_image: int,
                 positive_fraction: float):
        super().__init__()
        # Settings only, no defaults: `Config` holds the one default of each (the `rpn_*` fields).
        self.anchor_strides, self.anchor_sizes = tuple(anchor_strides), tuple(anchor_sizes)
        self.anchor_aspect_ratios = tuple(anchor_aspect_ratios)
        self.pre_nms_top_n = {"train": pre_nms_top_n_train, "test": pre_nms_top_n_test}
        self.post_nms_top_n = {"train": post_nms_top_n_train, "test": post_nms_top_n_test}
        self.nms_thresh, self.min_size = nms_thresh, min_size
        self.fg_iou_thresh, self.bg_iou_thresh = fg_iou_thresh, bg_iou_thresh
        self.batch_size_per_image, self.positive_fraction = batch_size_per_image, positive_fraction
        self.head = RPNHead(in_channels, len(self.anchor_aspect_ratios))

    @classmethod
    def from_config(cls, cfg, in_channels: int) -> "RPN":
        """The RPN of a `mrcnn_edu.config.Config`: its anchor_* and rpn_* fields."""
        return cls(in_channels, anchor_strides=cfg.anchor_strides, anchor_sizes=cfg.anchor_sizes,
                   anchor_aspect_ratios=cfg.anchor_aspect_ratios,
                   pre_nms_top_n_train=cfg.rpn_pre_nms_top_n_train,
                   post_nms_top_n_train=cfg.rpn_post_nms_top_n_train,
                   pre_nms_top_n_test=cfg.rpn_pre_nms_top_n_test,
                   post_nms_top_n_test=cfg.rpn_post_nms_top_n_test,
                   nms_thresh=cfg.rpn_nms_thresh, min_size=cfg.rpn_min_size,
                   fg_iou_thresh=cfg.rpn_fg_iou_thresh, bg_iou_thresh=cfg.rpn_bg_iou_thresh,
                   batch_size_per_image=cfg.rpn_batch_size_per_image,
                   positive_fraction=cfg.rpn_positive_fraction)

    def forward(self, features, image_sizes, padded_size, targets=None, generator=None):
        anchors = self.anchors(padded_size, features)  # [(R_l, 4)]
        objectness, deltas = self.head(features)  # [(B, R_l)], [(B, R_l, 4)]
        # Boxes in pixels need float32 even under autocast: float16 is 1 px coarse at 1024.
        objectness = [o.to(anchors[0].dtype) for o in objectness]
        deltas = [d.to(anchors[0].dtype) for d in deltas]
        proposals = [self.select_proposals([o[b] for o in objectness], [d[b] for d in deltas],
                                           anchors, size)
                     for b, size in enumerate(image_sizes)]
        if targets is None:
            return proposals, {}
        objectness, deltas = torch.cat(objectness, 1), torch.cat(deltas, 1)  # (B, R), (B, R, 4)
        return proposals, self.losses(objectness, deltas, torch.cat(anchors), targets, generator)

    def anchors(self, padded_size, features) -> list[torch.Tensor]:
        """[(R_l, 4)] anchors of each level for the padded batch, on the features' device."""
        dtype = torch.promote_types(features[0].dtype, torch.float32)  # float32 under autocast
        anchors = generate_anchors(tuple(padded_size), self.anchor_strides, self.anchor_sizes,
                                   self.anchor_aspect_ratios, dtype=dtype,
                                   device=features[0].device)
        for a, f in zip(anchors, features):  # the grids must agree, or anchors and logits misalign
            if a.shape[0] != f.shape[-2] * f.shape[-1] * len(self.anchor_aspect_ratios):
                raise ValueError(f"{a.shape[0]} anchors for a {tuple(f.shape[-2:])} map: "
                                 f"padded_size {tuple(padded_size)} does not fit the features")
        return anchors

    @torch.no_grad()
    def select_proposals(self, objectness, deltas, anchors, image_size) -> torch.Tensor:
        """One image: objectness [(R_l,)], deltas [(R_l, 4)], anchors [(R_l, 4)] -> (P, 4)."""
        mode = "train" if self.training else "test"
        pre_n, post_n = self.pre_nms_top_n[mode], self.post_nms_top_n[mode]
        tops = [o.topk(min(pre_n, o.shape[0])) for o in objectness]  # [((k_l,), (k_l,))]
        # the levels' top anchors side by side (level by level): decoded, clipped and filtered
        # in one call each, as elementwise steps do not care which level a box came from
        scores = torch.cat([s for s, _ in tops])  # (k,)
        levels = torch.cat([torch.full_like(top, i) for i, (_, top) in enumerate(tops)])  # (k,)
        boxes = decode_boxes(torch.cat([a[top] for a, (_, top) in zip(anchors, tops)]),
                             torch.cat([d[top] for d, (_, top) in zip(deltas, tops)]))  # (k, 4)
        boxes = clip_boxes(boxes, image_size)
        keep = remove_small_boxes(boxes, self.min_size)
        boxes, scores, levels = boxes[keep], scores[keep], levels[keep]
        keep = self.nms_within_levels(boxes, scores, levels, len(tops))  # (P',)
        best = torch.sort(scores[keep], descending=True, stable=True).indices[:post_n]
        return boxes[keep[best]]  # (P, 4) the best over all levels

    def nms_within_levels(self, boxes, scores, levels, num_levels) -> torch.Tensor:
        """Indices of the boxes NMS keeps within each level: a box suppresses only boxes of
        its own level. boxes (P', 4) level by level, scores (P',), levels (P',)."""
        if one_nms_for_all_levels(boxes.device):
            # a GPU waits for the host syncs of every NMS call, while its pairwise work is
            # cheap: one call over all levels, kept apart by `batched_nms`'s label offsets (as
            # torchvision's RPN does)
            return batched_nms(boxes, scores, levels, self.nms_thresh)
        # a CPU pays for the pairwise work: one NMS per level is the sum of the squared level
        # sizes, not the square of their sum
        counts = torch.bincount(levels, minlength=num_levels).tolist()
        keep, start = [], 0
        for b, s in zip(boxes.split(counts), scores.split(counts)):
            keep.append(nms(b, s, self.nms_thresh) + start)
            start += len(b)
        return torch.cat(keep)

    def losses(self, objectness, deltas, anchors, targets, generator=None) -> dict:
        """objectness (B, R), deltas (B, R, 4), anchors (R, 4) -> loss_objectness, loss_rpn_box."""
        labels, target_deltas = [], []
        for target in targets:
            gt = target["boxes"].to(anchors)  # (G, 4)
            iou = box_iou(gt, anchors)  # (G, R)
            matched, match_labels = match_anchors(iou, self.fg_iou_thresh, self.bg_iou_thresh,
                                                  allow_low_quality=True)  # (R,), (R,) 1/0/-1
            labels.append(sample_labels(match_labels, self.batch_size_per_image,
                                        self.positive_fraction, generator))  # (R,)
            if gt.shape[0] == 0:  # all background: there is nothing to regress to
                target_deltas.append(torch.zeros_like(anchors))  # (R, 4)
            else:
                target_deltas.append(encode_boxes(anchors, gt[matched]))  # (R, 4)
        labels, target_deltas = torch.cat(labels), torch.cat(target_deltas)  # (B*R,), (B*R, 4)
        return {
            "loss_objectness": objectness_loss(objectness.reshape(-1), labels),
            "loss_rpn_box": rpn_box_loss(deltas.reshape(-1, 4), target_deltas, labels),
        }
