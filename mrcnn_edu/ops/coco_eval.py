"""Lesson 11: torch twin of `mrcnn_edu.reference.coco_eval` (COCO AP and AR, as pycocotools computes them).

Shape legend: G ground truths and D detections of one (image, category); T IoU thresholds, R recall
thresholds, K categories, A area ranges, M max-detection limits (see the reference's docstring for
the rules, which are the same here).

What is torch here: the IoU matrices (boxes and masks as tensors), the greedy matching (one step
per detection, vectorised over area ranges, IoU thresholds and ground truths: the matching is
sequential in the detections by nature) and the accumulation into precision and recall.
Reading the two JSON inputs and decoding RLEs is plain Python shared with the reference
(`check_inputs`, `group_by_image_and_category`, `decode_group_masks`).

Reference -> twin:
    box_iou_xywh, mask_iou, evaluate_image, precision_recall, mean_defined, summarize,
    coco_evaluate                -> the same names (coco_evaluate adds `device`)
    group_iou                    -> group_iou (plus `device`)
    accumulate                   -> accumulate (plus `device`)
    greedy_match_kernel          -> the vectorised matching loop in `evaluate_image`
    annotation_rle, decode_rles, check_inputs, group_by_image_and_category,
    decode_group_masks           -> the reference's own, imported or called through it
"""
import numpy as np
import torch

from mrcnn_edu.reference.coco_eval import (AREA_RANGES, IOU_THRESHOLDS, RECALL_THRESHOLDS, STAT_NAMES,
                                           check_inputs, decode_group_masks, group_by_image_and_category)


def box_iou_xywh(det_boxes, gt_boxes, gt_crowd):
    """Torch twin of `mrcnn_edu.reference.coco_eval.box_iou_xywh`: same contract.

    det_boxes (D, 4), gt_boxes (G, 4) xywh and gt_crowd (G,) bool tensors on one device.
    Returns (D, G) float64.
    """
    det, gt = det_boxes.to(torch.float64).reshape(-1, 4), gt_boxes.to(torch.float64).reshape(-1, 4)
    inter_w = (torch.minimum(det[:, None, 0] + det[:, None, 2], gt[None, :, 0] + gt[None, :, 2])
               - torch.maximum(det[:, None, 0], gt[None, :, 0]))  # (D, G)
    inter_h = (torch.minimum(det[:, None, 1] + det[:, None, 3], gt[None, :, 1] + gt[None, :, 3])
               - torch.maximum(det[:, None, 1], gt[None, :, 1]))  # (D, G)
    inter = inter_w.clamp(min=0) * inter_h.clamp(min=0)  # (D, G)
    det_area = (det[:, 2] * det[:, 3])[:, None]  # (D, 1)
    gt_area = (gt[:, 2] * gt[:, 3])[None, :]  # (1, G)
    union = torch.where(gt_crowd[None, :], det_area, det_area + gt_area - inter)  # (D, G)
    overlap = (inter_w > 0) & (inter_h > 0)
    return torch.where(overlap, inter / torch.where(overlap, union, torch.ones_like(union)), 0.0)  # (D, G)


def mask_iou(det_masks, gt_masks, gt_crowd):
    """Torch twin of `mrcnn_edu.reference.coco_eval.mask_iou`: same contract.

    det_masks (D, H, W), gt_masks (G, H, W) bool/uint8 and gt_crowd (G,) bool tensors on one device.
    Returns (D, G) float64.
    """
    if det_masks.ndim != 3 or gt_masks.ndim != 3 or det_masks.shape[1:] != gt_masks.shape[1:]:
        raise ValueError(f"masks must be (D, H, W) and (G, H, W) with one (H, W), got "
                         f"{tuple(det_masks.shape)} and {tuple(gt_masks.shape)}")
    det_flat = det_masks.flatten(1).to(torch.float64)  # (D, H*W)
    gt_flat = gt_masks.flatten(1).to(torch.float64)  # (G, H*W)
    inter = det_flat @ gt_flat.T  # (D, G) pixel counts, exact in float64
    det_area = det_flat.sum(dim=1)[:, None]  # (D, 1)
    gt_area = gt_flat.sum(dim=1)[None, :]  # (1, G)
    union = torch.where(gt_crowd[None, :], det_area, det_area + gt_area - inter)  # (D, G)
    return torch.where(inter > 0, inter / union.clamp(min=1.0), 0.0)  # (D, G)


def group_iou(group, iou_type, device):
    """(D, G) float64 IoU of one group's detections with its ground truths, on `device`."""
    crowd = torch.as_tensor(group["gt_crowd"], device=device)  # (G,)
    if iou_type == "bbox":
        return box_iou_xywh(torch.as_tensor(group["det_regions"], device=device),
                            torch.as_tensor(group["gt_regions"], device=device), crowd)
    det_masks, gt_masks = decode_group_masks(group)  # (D, h, w), (G, h, w) numpy, cropped
    det_masks, gt_masks = (torch.from_numpy(np.ascontiguousarray(m)).to(device) for m in (det_masks, gt_masks))
    return mask_iou(det_masks, gt_masks, crowd)


def evaluate_image(ious, det_area, gt_area, gt_crowd, area_range):
    """Torch twin of `mrcnn_edu.reference.coco_eval.evaluate_image`: same contract, and batched.

    area_range may be (2,) = (lo, hi) or (A, 2); with (A, 2) every output gains a leading A axis:
    det_matched (A, T, D), det_ignored (A, T, D), gt_ignored (A, G).
    Instead of sorting ground truths regular-first, each detection takes the best free regular
    one with IoU >= t and only when there is none the best free ignored one; ties go to the later
    one. That is what pycocotools' loop over the sorted ground truths does.
    """
    device = ious.device
    ranges = torch.as_tensor(area_range, dtype=torch.float64, device=device)
    batched = ranges.ndim == 2
    ranges = ranges.reshape(-1, 2)  # (A, 2)
    lo, hi = ranges[:, 0:1], ranges[:, 1:2]  # (A, 1)
    gt_ignored = gt_crowd[None, :] | (gt_area[None, :] < lo) | (gt_area[None, :] > hi)  # (A, G)
    num_dets, num_gts = ious.shape
    thresholds = torch.as_tensor(IOU_THRESHOLDS, device=device).clamp(max=1 - 1e-10)  # (T,)
    shape = (len(ranges), len(thresholds))
    det_matched = torch.zeros(*shape, num_dets, dtype=torch.bool, device=device)  # (A, T, D)
    det_ignored = torch.zeros(*shape, num_dets, dtype=torch.bool, device=device)  # (A, T, D)
    if num_gts:
        gt_taken = torch.zeros(*shape, num_gts, dtype=torch.bool, device=device)  # (A, T, G)
        ignored = gt_ignored[:, None, :].expand(*shape, num_gts)  # (A, T, G)
        columns = torch.arange(num_gts, device=device)  # (G,)
        for d in range(num_dets):  # in score order: a higher score chooses first
            iou = ious[d]  # (G,)
            eligible = (~gt_taken | gt_crowd) & (iou >= thresholds[:, None])  # (A, T, G)
            regular = eligible & ~ignored
            candidates = torch.where(regular.any(-1, keepdim=True), regular, eligible & ignored)  # (A, T, G)
            scores = torch.where(candidates, iou, -1.0)  # (A, T, G)
            best = num_gts - 1 - scores.flip(-1).argmax(-1)  # (A, T) the last of equal maxima
            found = candidates.any(-1)  # (A, T)
            gt_taken |= found[..., None] & (columns == best[..., None])
            det_matched[..., d] = found
            det_ignored[..., d] = found & ignored.gather(-1, best[..., None])[..., 0]
    det_outside = (det_area[None, :] < lo) | (det_area[None, :] > hi)  # (A, D)
    det_ignored |= ~det_matched & det_outside[:, None, :]  # unmatched and not of this size: no FP
    if not batched:
        return det_matched[0], det_ignored[0], gt_ignored[0]
    return det_matched, det_ignored, gt_ignored


def precision_recall(det_scores, det_matched, det_ignored, num_gt):
    """Torch twin of `mrcnn_edu.reference.coco_eval.precision_recall`: same contract, and batched.

    det_matched, det_ignored (..., D) bool with any leading axes (e.g. (A, T, D)); num_gt a
    number or a (...) tensor, > 0. Returns precision (..., R) and recall (...), float64.
    """
    device = det_matched.device
    order = torch.sort(-det_scores, stable=True).indices  # (D,) ties keep image order
    matched, ignored = det_matched[..., order], det_ignored[..., order]  # (..., D)
    tp = torch.cumsum(matched & ~ignored, dim=-1).to(torch.float64)  # (..., D)
    fp = torch.cumsum(~matched & ~ignored, dim=-1).to(torch.float64)  # (..., D)
    num_gt = torch.as_tensor(num_gt, dtype=torch.float64, device=device)
    recall_curve = tp / num_gt[..., None]  # (..., D)
    precision_curve = tp / (fp + tp + torch.finfo(torch.float64).eps)  # (..., D)
    # interpolation: precision at recall r is the best precision at any recall >= r
    precision_curve = precision_curve.flip(-1).cummax(-1).values.flip(-1)  # (..., D)
    num_dets = det_scores.shape[0]
    thresholds = torch.as_tensor(RECALL_THRESHOLDS, device=device)
    thresholds = thresholds.expand(*recall_curve.shape[:-1], len(thresholds)).contiguous()  # (..., R)
    if num_dets == 0:
        return torch.zeros(thresholds.shape, dtype=torch.float64, device=device), tp.new_zeros(tp.shape[:-1])
    first = torch.searchsorted(recall_curve.contiguous(), thresholds, side="left")  # (..., R)
    reached = first < num_dets  # recall thresholds beyond the final recall keep precision 0
    precision = torch.where(reached, precision_curve.gather(-1, first.clamp(max=num_dets - 1)), 0.0)
    return precision, recall_curve[..., -1]


def accumulate(per_image, num_categories, max_dets, device=None):
    """Torch twin of `mrcnn_edu.reference.coco_eval.accumulate`, except that per_image[k] lists
    (det_scores (D,), det_matched (A, T, D), det_ignored (A, T, D), gt_ignored (A, G)) with the
    A area ranges together. Returns precision (T, R, K, A, M) and recall (T, K, A, M).

    All M limits are done at once: a detection past its image's first m is marked ignored for
    limit m, so that it moves neither tp nor fp; the curve then only repeats points (the same
    precision and recall), which reads the same as leaving the detection out.
    """
    num_t, num_r, num_a, num_m = len(IOU_THRESHOLDS), len(RECALL_THRESHOLDS), len(AREA_RANGES), len(max_dets)
    precision = -torch.ones(num_t, num_r, num_categories, num_a, num_m, dtype=torch.float64, device=device)
    recall = -torch.ones(num_t, num_categories, num_a, num_m, dtype=torch.float64, device=device)
    limits = torch.as_tensor(max_dets, device=device)  # (M,)
    for k in range(num_categories):
        images = per_image[k]
        if not images:
            continue
        num_gt = sum((~gt_ignored).sum(-1) for _, _, _, gt_ignored in images)  # (A,)
        scores = torch.cat([s for s, _, _, _ in images])  # (D,)
        rank = torch.cat([torch.arange(len(s), device=device) for s, _, _, _ in images])  # (D,) within its image
        matched = torch.cat([mt for _, mt, _, _ in images], dim=-1)  # (A, T, D)
        ignored = torch.cat([ig for _, _, ig, _ in images], dim=-1)  # (A, T, D)
        beyond = (rank[None, :] >= limits[:, None])[:, None, None, :]  # (M, 1, 1, D)
        prec, rec = precision_recall(scores, matched.expand(num_m, -1, -1, -1), ignored | beyond,
                                     num_gt.clamp(min=1)[None, :, None])  # (M, A, T, R), (M, A, T)
        has_gt = (num_gt > 0)[:, None]  # (A, 1) AP is undefined without ground truth: stays -1
        precision[:, :, k] = torch.where(has_gt, prec.permute(2, 3, 1, 0), -1.0)  # (T, R, A, M)
        recall[:, k] = torch.where(has_gt, rec.permute(2, 1, 0), -1.0)  # (T, A, M)
    return precision, recall


def mean_defined(values):
    """Mean of the entries > -1, or -1 when there are none (a Python float)."""
    defined = values[values > -1]
    return float(defined.mean()) if defined.numel() else -1.0


def summarize(precision, recall, max_dets=(1, 10, 100)):
    """Torch twin of `mrcnn_edu.reference.coco_eval.summarize`: same contract."""
    all_, small, medium, large = range(len(AREA_RANGES))
    t50, t75 = list(IOU_THRESHOLDS).index(0.5), list(IOU_THRESHOLDS).index(0.75)
    values = [
        mean_defined(precision[:, :, :, all_, -1]),
        mean_defined(precision[t50, :, :, all_, -1]),
        mean_defined(precision[t75, :, :, all_, -1]),
        mean_defined(precision[:, :, :, small, -1]),
        mean_defined(precision[:, :, :, medium, -1]),
        mean_defined(precision[:, :, :, large, -1]),
        mean_defined(recall[:, :, all_, 0]),
        mean_defined(recall[:, :, all_, 1]),
        mean_defined(recall[:, :, all_, 2]),
        mean_defined(recall[:, :, small, -1]),
        mean_defined(recall[:, :, medium, -1]),
        mean_defined(recall[:, :, large, -1]),
    ]
    names = [name.format(*max_dets) for name in STAT_NAMES]
    return dict(zip(names, values))


def coco_evaluate(gt, detections, iou_type="bbox", max_dets=(1, 10, 100), device=None):
    """Torch twin of `mrcnn_edu.reference.coco_eval.coco_evaluate`: same contract.

    Adds `device` (where the IoUs, matching and accumulation run; default CPU); "precision" and
    "recall" come back as float64 tensors on it; the 12 numbers are Python floats.
    """
    max_dets = check_inputs(gt, detections, iou_type, max_dets)
    device = torch.device("cpu") if device is None else torch.device(device)
    category_ids = sorted(c["id"] for c in gt["categories"])
    area_ranges = torch.tensor(list(AREA_RANGES.values()), dtype=torch.float64, device=device)  # (A, 2)
    per_image = [[] for _ in category_ids]  # [K] -> list over images
    for group in group_by_image_and_category(gt, detections, iou_type, max_dets[-1]):
        ious = group_iou(group, iou_type, device)  # (D, G)
        det_area, gt_area, gt_crowd, det_scores = (torch.as_tensor(group[key], device=device) for key in
                                                   ("det_area", "gt_area", "gt_crowd", "det_scores"))
        det_matched, det_ignored, gt_ignored = evaluate_image(
            ious, det_area, gt_area, gt_crowd, area_ranges)  # (A, T, D), (A, T, D), (A, G)
        per_image[group["k"]].append((det_scores, det_matched, det_ignored, gt_ignored))
    precision, recall = accumulate(per_image, len(category_ids), max_dets, device)
    result = summarize(precision, recall, max_dets)
    result.update(precision=precision, recall=recall, category_ids=category_ids,
                  per_category={c: mean_defined(precision[:, :, k, 0, -1]) for k, c in enumerate(category_ids)})
    return result
