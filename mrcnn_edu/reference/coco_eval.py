"""COCO box and mask evaluation (lesson 11_inference_and_evaluation): AP and AR as pycocotools computes them.

Shape legend: G ground-truth objects and D detections of one (image, category) pair;
T = 10 IoU thresholds 0.50:0.05:0.95; R = 101 recall thresholds 0:0.01:1; K categories (sorted
ids); A = 4 area ranges (all, small, medium, large); M = 3 max-detection limits (1, 10, 100).
Names: `det_*` for detections, `gt_*` for ground truth. Boxes here are COCO's (x, y, w, h), not
the package's xyxy, because both inputs are COCO JSON; masks are COCO RLE dicts.

The rules, exactly those of pycocotools' COCOeval (each is a step of lesson 11):
1. Per image and category, detections are sorted by score (a stable sort, so ties keep input
   order) and only the first max_dets[-1] are kept. The limit is per image *and category*.
2. IoU of a detection with a crowd region is intersection / detection area (the crowd's own area
   does not count); with any other object it is intersection / union.
3. For one area range, a ground truth is ignored when it is a crowd or its JSON `area` lies
   outside [lo, hi] (both ends included). Ignored ones are moved after the others (stable).
4. Greedy matching, separately at each IoU threshold t: detections in score order each take the
   not-yet-taken ground truth with the highest IoU >= t, preferring a regular one to an ignored
   one; equal IoUs go to the later one. Crowds may be taken any number of times.
   A detection matched to an ignored ground truth is ignored; so is an unmatched detection whose
   own area (w * h for boxes, pixel count for masks) is outside the range.
5. Per category, area range and max-dets limit m: every image's first m detections are pooled and
   sorted by score (stable, images in id order); cumulative true and false positives give
   recall = tp / (non-ignored ground truths) and precision = tp / (tp + fp); precision is made
   non-increasing from the right ("interpolated") and read at the first point where recall >= r,
   for each of the 101 r (0 past the last reached recall).
6. AP averages that over T, R and the categories that have ground truth (-1 marks "undefined" and
   is left out); AR averages the final recall over T and categories.

numpy in, numpy out; the greedy matching is a numba kernel. pycocotools.mask is used only to read
and write the RLE format (decode, area); every IoU and count is computed here. The torch twin is
`mrcnn_edu.ops.coco_eval.coco_evaluate`; `mrcnn_edu.engine.cocoapi` runs pycocotools itself.
"""
import numba
import numpy as np
from pycocotools import mask as mask_utils

# pycocotools builds these with linspace, not arange, so that 0.75 is exactly 0.75
IOU_THRESHOLDS = np.linspace(0.5, 0.95, 10)  # (T,)
RECALL_THRESHOLDS = np.linspace(0.0, 1.0, 101)  # (R,)
AREA_RANGES = {  # label -> (lo, hi) in pixels^2, both ends included; "all" first
    "all": (0.0, 1e5 ** 2),
    "small": (0.0, 32.0 ** 2),
    "medium": (32.0 ** 2, 96.0 ** 2),
    "large": (96.0 ** 2, 1e5 ** 2),
}
STAT_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl",
              "AR{0}", "AR{1}", "AR{2}", "ARs", "ARm", "ARl")  # pycocotools' stats order
IOU_TYPES = ("bbox", "segm")


# ---------------------------------------------------------------- IoU of detections with gts

def box_iou_xywh(det_boxes, gt_boxes, gt_crowd):
    """IoU of every detection box with every ground-truth box, COCO style.

    det_boxes (D, 4), gt_boxes (G, 4) as (x, y, w, h); gt_crowd (G,) bool.
    Returns (D, G) float64: inter / (det_area + gt_area - inter), or inter / det_area for a crowd.
    Disjoint boxes (no positive-width overlap) give 0.
    """
    det = np.asarray(det_boxes, dtype=np.float64).reshape(-1, 4)
    gt = np.asarray(gt_boxes, dtype=np.float64).reshape(-1, 4)
    crowd = np.asarray(gt_crowd, dtype=bool).reshape(-1)
    inter_w = (np.minimum(det[:, None, 0] + det[:, None, 2], gt[None, :, 0] + gt[None, :, 2])
               - np.maximum(det[:, None, 0], gt[None, :, 0]))  # (D, G)
    inter_h = (np.minimum(det[:, None, 1] + det[:, None, 3], gt[None, :, 1] + gt[None, :, 3])
               - np.maximum(det[:, None, 1], gt[None, :, 1]))  # (D, G)
    inter = np.clip(inter_w, 0, None) * np.clip(inter_h, 0, None)  # (D, G)
    det_area = (det[:, 2] * det[:, 3])[:, None]  # (D, 1)
    gt_area = (gt[:, 2] * gt[:, 3])[None, :]  # (1, G)
    union = np.where(crowd[None, :], det_area, det_area + gt_area - inter)  # (D, G)
    overlap = (inter_w > 0) & (inter_h > 0)
    return np.where(overlap, inter / np.where(overlap, union, 1.0), 0.0)  # (D, G)


def mask_iou(det_masks, gt_masks, gt_crowd):
    """IoU of every detection mask with every ground-truth mask, COCO style.

    det_masks (D, H, W), gt_masks (G, H, W) binary; gt_crowd (G,) bool.
    Returns (D, G) float64: |det & gt| / |det | gt|, or |det & gt| / |det| for a crowd;
    0 when the masks share no pixel.
    """
    det = np.asarray(det_masks, dtype=bool)
    gt = np.asarray(gt_masks, dtype=bool)
    if det.ndim != 3 or gt.ndim != 3 or det.shape[1:] != gt.shape[1:]:
        raise ValueError(f"masks must be (D, H, W) and (G, H, W) with one (H, W), got {det.shape} and {gt.shape}")
    crowd = np.asarray(gt_crowd, dtype=bool).reshape(-1)
    det_flat = det.reshape(len(det), -1).astype(np.float64)  # (D, H*W)
    gt_flat = gt.reshape(len(gt), -1).astype(np.float64)  # (G, H*W)
    inter = det_flat @ gt_flat.T  # (D, G) pixel counts, exact in float64
    det_area = det_flat.sum(axis=1)[:, None]  # (D, 1)
    gt_area = gt_flat.sum(axis=1)[None, :]  # (1, G)
    union = np.where(crowd[None, :], det_area, det_area + gt_area - inter)  # (D, G)
    return np.where(inter > 0, inter / np.maximum(union, 1.0), 0.0)  # (D, G)


def annotation_rle(segmentation, height, width):
    """A COCO `segmentation` (polygons, uncompressed RLE or RLE) as one compressed RLE dict."""
    if isinstance(segmentation, list):  # polygons: one object may have several parts
        return mask_utils.merge(mask_utils.frPyObjects(segmentation, height, width))
    if isinstance(segmentation["counts"], list):  # uncompressed RLE, used for crowds
        return mask_utils.frPyObjects(segmentation, height, width)
    return segmentation


def decode_rles(rles, height, width):
    """Compressed RLE dicts -> (N, H, W) bool masks (N = 0 gives an empty (0, H, W))."""
    if len(rles) == 0:
        return np.zeros((0, height, width), dtype=bool)
    for rle in rles:
        if tuple(rle["size"]) != (height, width):
            raise ValueError(f"an RLE has size {tuple(rle['size'])}, expected the image's {(height, width)}")
    return np.moveaxis(mask_utils.decode(list(rles)), 2, 0).astype(bool)  # (N, H, W)


# ---------------------------------------------------------------- reading the two JSON inputs

def check_inputs(gt, detections, iou_type, max_dets):
    """ValueError unless gt is a COCO instances dict and detections a list of COCO results."""
    if iou_type not in IOU_TYPES:
        raise ValueError(f"iou_type must be one of {IOU_TYPES}, got {iou_type!r}")
    if not isinstance(gt, dict) or not {"images", "annotations", "categories"} <= set(gt):
        raise ValueError("gt must be a COCO instances dict with images, annotations and categories")
    if not isinstance(detections, (list, tuple)):
        raise ValueError(f"detections must be a list of COCO result dicts, got {type(detections).__name__}")
    max_dets = tuple(int(m) for m in max_dets)
    if len(max_dets) != 3 or not 0 < max_dets[0] < max_dets[1] < max_dets[2]:
        raise ValueError(f"max_dets must be three increasing positive ints, got {max_dets}")
    field = "bbox" if iou_type == "bbox" else "segmentation"
    image_ids = {img["id"] for img in gt["images"]}
    for i, det in enumerate(detections):
        missing = {"image_id", "category_id", "score", field} - set(det)
        if missing:
            raise ValueError(f"detection {i} lacks {sorted(missing)} (needed for iou_type={iou_type!r})")
        if det["image_id"] not in image_ids:
            raise ValueError(f"detection {i} has image_id {det['image_id']}, which is not in gt['images']")
    return max_dets


def group_by_image_and_category(gt, detections, iou_type, max_det):
    """Everything the matching needs, one dict per (image, category) that has a gt or a detection.

    Returned in evaluation order (image id, then category id), each with
    image_id, category_id, k (index of the category among the sorted ids), height, width,
    gt_regions (G, 4) xywh or G RLEs, gt_area (G,) from the JSON, gt_crowd (G,) bool,
    det_regions (D, 4) or D RLEs, det_area (D,), det_scores (D,): detections sorted by score
    (stable) and cut to `max_det`. Ground truths of unknown images or categories and detections
    of unknown categories are left out, as pycocotools does.
    """
    sizes = {img["id"]: (img["height"], img["width"]) for img in gt["images"]}
    cat_index = {c: k for k, c in enumerate(sorted(c["id"] for c in gt["categories"]))}
    gts, dets = {}, {}
    for ann in gt["annotations"]:
        if ann["image_id"] in sizes and ann["category_id"] in cat_index:
            gts.setdefault((ann["image_id"], ann["category_id"]), []).append(ann)
    for det in detections:
        if det["category_id"] in cat_index:
            dets.setdefault((det["image_id"], det["category_id"]), []).append(det)
    groups = []
    for image_id, cat_id in sorted(set(gts) | set(dets)):
        height, width = sizes[image_id]
        group_gts = gts.get((image_id, cat_id), [])
        group_dets = dets.get((image_id, cat_id), [])
        order = np.argsort([-d["score"] for d in group_dets], kind="mergesort")[:max_det]
        group_dets = [group_dets[i] for i in order]
        group = dict(image_id=image_id, category_id=cat_id, k=cat_index[cat_id], height=height, width=width,
                     gt_area=np.array([g["area"] for g in group_gts], dtype=np.float64),
                     gt_crowd=np.array([bool(g.get("iscrowd", 0)) for g in group_gts], dtype=bool),
                     det_scores=np.array([d["score"] for d in group_dets], dtype=np.float64))
        if iou_type == "bbox":
            group["gt_regions"] = np.array([g["bbox"] for g in group_gts], dtype=np.float64).reshape(-1, 4)
            group["det_regions"] = np.array([d["bbox"] for d in group_dets], dtype=np.float64).reshape(-1, 4)
            group["det_area"] = group["det_regions"][:, 2] * group["det_regions"][:, 3]
        else:
            group["gt_regions"] = [annotation_rle(g["segmentation"], height, width) for g in group_gts]
            group["det_regions"] = [d["segmentation"] for d in group_dets]
            group["det_area"] = np.array([mask_utils.area(r) for r in group["det_regions"]], dtype=np.float64)
        groups.append(group)
    return groups


def decode_group_masks(group):
    """One group's det and gt masks, (D, h, w) and (G, h, w) bool, cropped to the smallest box
    holding every pixel of every one of them: the pixels cut off are 0 in all the masks, so no
    count changes, and the IoU arithmetic runs on an object-sized window instead of the image."""
    height, width = group["height"], group["width"]
    masks = decode_rles(list(group["det_regions"]) + list(group["gt_regions"]), height, width)  # (D+G, H, W)
    occupied = masks.any(axis=0)  # (H, W)
    rows, cols = np.flatnonzero(occupied.any(axis=1)), np.flatnonzero(occupied.any(axis=0))
    if len(rows):
        masks = masks[:, rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]  # (D+G, h, w)
    num_dets = len(group["det_regions"])
    return masks[:num_dets], masks[num_dets:]


def group_iou(group, iou_type):
    """(D, G) IoU of one group's detections (in score order) with its ground truths."""
    if iou_type == "bbox":
        return box_iou_xywh(group["det_regions"], group["gt_regions"], group["gt_crowd"])
    if not group["det_regions"] or not group["gt_regions"]:
        return np.zeros((len(group["det_regions"]), len(group["gt_regions"])))
    det_masks, gt_masks = decode_group_masks(group)  # (D, h, w), (G, h, w)
    return mask_iou(det_masks, gt_masks, group["gt_crowd"])


# ---------------------------------------------------------------- matching in one image

@numba.njit(cache=True)
def greedy_match_kernel(ious, gt_ignore, gt_crowd, iou_thresholds):
    """Greedy matching at each threshold, pycocotools' loop verbatim.

    ious (D, G) with detections in score order and ground truths sorted regular-first;
    gt_ignore, gt_crowd (G,) bool; iou_thresholds (T,).
    Returns det_to_gt (T, D) int64: the matched ground truth's column, or -1.
    """
    num_thresholds, num_dets, num_gts = len(iou_thresholds), ious.shape[0], ious.shape[1]
    det_to_gt = -np.ones((num_thresholds, num_dets), dtype=np.int64)
    for t in range(num_thresholds):
        gt_taken = np.zeros(num_gts, dtype=np.bool_)
        for d in range(num_dets):
            best_iou = min(iou_thresholds[t], 1 - 1e-10)  # a match needs IoU >= threshold
            best = -1
            for g in range(num_gts):
                if gt_taken[g] and not gt_crowd[g]:
                    continue  # taken by a higher-scoring detection; crowds can be shared
                if best > -1 and not gt_ignore[best] and gt_ignore[g]:
                    break  # already have a regular match; the rest are ignored ones
                if ious[d, g] < best_iou:
                    continue
                best_iou = ious[d, g]  # equal IoU moves on to the later ground truth
                best = g
            if best > -1:
                det_to_gt[t, d] = best
                gt_taken[best] = True
    return det_to_gt


def evaluate_image(ious, det_area, gt_area, gt_crowd, area_range):
    """Match one image's detections of one category, for one area range.

    ious (D, G) with detections in score order; det_area (D,); gt_area (G,); gt_crowd (G,) bool;
    area_range (lo, hi). Returns det_matched (T, D) bool, det_ignored (T, D) bool and
    gt_ignored (G,) bool (crowds and ground truths outside the range).
    """
    lo, hi = area_range
    gt_ignored = gt_crowd | (gt_area < lo) | (gt_area > hi)  # (G,)
    order = np.argsort(gt_ignored, kind="stable")  # regular ground truths first
    det_to_gt = greedy_match_kernel(np.ascontiguousarray(ious[:, order], dtype=np.float64),
                                    gt_ignored[order], gt_crowd[order], IOU_THRESHOLDS)  # (T, D)
    det_matched = det_to_gt >= 0  # (T, D)
    det_ignored = np.zeros(det_to_gt.shape, dtype=bool)  # (T, D)
    if len(order):
        det_ignored[det_matched] = gt_ignored[order][det_to_gt[det_matched]]  # matched an ignored gt
    det_outside = (det_area < lo) | (det_area > hi)  # (D,)
    det_ignored |= ~det_matched & det_outside[None, :]  # unmatched and not of this size: no FP
    return det_matched, det_ignored, gt_ignored


# ---------------------------------------------------------------- pooling images: PR curves

def precision_recall(det_scores, det_matched, det_ignored, num_gt):
    """Interpolated precision at the 101 recall thresholds, and final recall, at each IoU threshold.

    det_scores (D,), det_matched and det_ignored (T, D) bool, pooled over images in image order;
    num_gt the number of non-ignored ground truths (> 0).
    Returns precision (T, R) and recall (T,).
    """
    order = np.argsort(-det_scores, kind="mergesort")  # (D,) stable: ties keep image order
    matched, ignored = det_matched[:, order], det_ignored[:, order]  # (T, D)
    tp = np.cumsum(matched & ~ignored, axis=1).astype(np.float64)  # (T, D)
    fp = np.cumsum(~matched & ~ignored, axis=1).astype(np.float64)  # (T, D)
    recall_curve = tp / num_gt  # (T, D)
    precision_curve = tp / (fp + tp + np.spacing(1))  # (T, D)
    # interpolation: precision at recall r is the best precision at any recall >= r
    precision_curve = np.maximum.accumulate(precision_curve[:, ::-1], axis=1)[:, ::-1]  # (T, D)
    num_dets = det_scores.shape[0]
    precision = np.zeros((len(IOU_THRESHOLDS), len(RECALL_THRESHOLDS)))  # (T, R)
    for t in range(len(IOU_THRESHOLDS)):
        first = np.searchsorted(recall_curve[t], RECALL_THRESHOLDS, side="left")  # (R,)
        reached = first < num_dets  # recall thresholds beyond the final recall keep precision 0
        precision[t, reached] = precision_curve[t, first[reached]]
    recall = recall_curve[:, -1] if num_dets else np.zeros(len(IOU_THRESHOLDS))  # (T,)
    return precision, recall


def accumulate(per_image, num_categories, max_dets):
    """precision (T, R, K, A, M) and recall (T, K, A, M), -1 where a category has no ground truth.

    per_image[k][a] lists, in image order, (det_scores (D,), det_matched (T, D), det_ignored (T, D),
    gt_ignored (G,)) from `evaluate_image`.
    """
    num_t, num_r, num_a, num_m = len(IOU_THRESHOLDS), len(RECALL_THRESHOLDS), len(AREA_RANGES), len(max_dets)
    precision = -np.ones((num_t, num_r, num_categories, num_a, num_m))  # (T, R, K, A, M)
    recall = -np.ones((num_t, num_categories, num_a, num_m))  # (T, K, A, M)
    for k in range(num_categories):
        for a in range(num_a):
            images = per_image[k][a]
            num_gt = sum(int((~gt_ignored).sum()) for _, _, _, gt_ignored in images)
            if num_gt == 0:
                continue  # AP is undefined without ground truth: stays -1, left out of the means
            for m, max_det in enumerate(max_dets):
                scores = np.concatenate([s[:max_det] for s, _, _, _ in images])  # (D,)
                matched = np.concatenate([mt[:, :max_det] for _, mt, _, _ in images], axis=1)  # (T, D)
                ignored = np.concatenate([ig[:, :max_det] for _, _, ig, _ in images], axis=1)  # (T, D)
                precision[:, :, k, a, m], recall[:, k, a, m] = precision_recall(scores, matched, ignored, num_gt)
    return precision, recall


def mean_defined(values):
    """Mean of the entries > -1 (the defined ones), or -1 when there are none."""
    defined = values[values > -1]
    return float(defined.mean()) if defined.size else -1.0


def summarize(precision, recall, max_dets=(1, 10, 100)):
    """The 12 headline numbers, in pycocotools' stats order, from precision and recall arrays.

    AP uses the largest max_dets limit; AR{m} uses each limit; suffix s/m/l = small/medium/large.
    """
    all_, small, medium, large = range(len(AREA_RANGES))
    t50, t75 = int(np.flatnonzero(IOU_THRESHOLDS == 0.5)[0]), int(np.flatnonzero(IOU_THRESHOLDS == 0.75)[0])
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


def coco_evaluate(gt, detections, iou_type="bbox", max_dets=(1, 10, 100)):
    """COCO AP and AR of `detections` against `gt`, agreeing with pycocotools' COCOeval.

    gt: a COCO instances dict (images, annotations, categories), as json.load gives it; it is not
    modified. detections: a list of COCO result dicts {image_id, category_id, score, bbox [x, y, w, h]}
    and, for iou_type="segm", segmentation (a compressed RLE dict of the image's size).
    Detections of an image not in gt are a ValueError (pycocotools asserts); of a category not in
    gt they are ignored. A detection's area is w * h for "bbox" and its pixel count for "segm".

    Returns a dict: AP, AP50, AP75, APs, APm, APl, AR1, AR10, AR100, ARs, ARm, ARl (floats, -1
    where undefined; AR names follow max_dets), "precision" (T, R, K, A, M) and "recall"
    (T, K, A, M) arrays as in pycocotools' `eval`, "category_ids" (the K ids, sorted) and
    "per_category" {category id: AP (all areas, max_dets[-1])}.
    """
    max_dets = check_inputs(gt, detections, iou_type, max_dets)
    category_ids = sorted(c["id"] for c in gt["categories"])
    per_image = [[[] for _ in AREA_RANGES] for _ in category_ids]  # [K][A] -> list over images
    for group in group_by_image_and_category(gt, detections, iou_type, max_dets[-1]):
        ious = group_iou(group, iou_type)  # (D, G)
        for a, area_range in enumerate(AREA_RANGES.values()):
            det_matched, det_ignored, gt_ignored = evaluate_image(
                ious, group["det_area"], group["gt_area"], group["gt_crowd"], area_range)
            per_image[group["k"]][a].append((group["det_scores"], det_matched, det_ignored, gt_ignored))
    precision, recall = accumulate(per_image, len(category_ids), max_dets)
    result = summarize(precision, recall, max_dets)
    result.update(precision=precision, recall=recall, category_ids=category_ids,
                  per_category={c: mean_defined(precision[:, :, k, 0, -1]) for k, c in enumerate(category_ids)})
    return result
