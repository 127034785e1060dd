"""The COCO API side of evaluation (lessons 10-11): model outputs -> COCO results, and pycocotools' numbers.

Shape legend: N detections of one image; (H, W) the original image size (height, width);
K categories. Model outputs use the package conventions (boxes xyxy in original-image pixels,
labels 1..K, 0 is background); COCO results use COCO's (bbox [x, y, w, h], category ids from the
JSON, masks as compressed RLE with `counts` a str so that json.dump works).

- `detections_to_coco_results`: per-image model outputs -> one flat list of COCO result dicts.
- `pycocotools_evaluate`: the official COCOeval on a gt dict and such a list (prints silenced).
- `evaluate_both`: pycocotools and `mrcnn_edu.reference.coco_evaluate` on the same inputs.
- `simulate_detections`: plausible fake detections made from the ground truth (jittered, missed,
  duplicated, mislabelled, plus false positives), for tests and lesson 11.

For "segm", results are handed to pycocotools without their `bbox`: with a bbox present its
loadRes takes a mask detection's area to be w * h instead of the mask's pixel count (detectron2
drops the bbox for the same reason). `mrcnn_edu.reference.coco_evaluate` uses the pixel count.
"""
import contextlib
import copy
import io

import numpy as np
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from mrcnn_edu.reference.coco_eval import STAT_NAMES, annotation_rle, coco_evaluate, decode_rles


def to_numpy(x):
    """A torch tensor (any device) or array-like as a numpy array."""
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def encode_mask(mask):
    """(H, W) binary mask -> compressed RLE dict with `counts` as str (JSON-serialisable)."""
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)[:, :, None]))[0]
    rle["counts"] = rle["counts"].decode("ascii")
    return rle


def detections_to_coco_results(detections, image_ids, label_to_cat_id, iou_types=("bbox", "segm")):
    """Model outputs, one dict per image, -> a list of COCO result dicts.

    detections[i] is for image image_ids[i]: boxes (N, 4) xyxy float in original-image pixels,
    labels (N,) int 1..K, scores (N,), and optionally masks (N, H, W) bool/uint8 at the original
    image size (float masks are probabilities and are thresholded at > 0.5), as tensors or arrays.
    label_to_cat_id maps a label to its COCO category id (a dict, or a sequence indexed by label).
    Each result has image_id, category_id, bbox [x, y, w, h], score and, when "segm" is in
    iou_types and masks are given, segmentation (RLE). All numbers are Python ints and floats.
    """
    if len(detections) != len(image_ids):
        raise ValueError(f"got {len(detections)} detection dicts for {len(image_ids)} image ids")
    results = []
    for det, image_id in zip(detections, image_ids):
        boxes = to_numpy(det["boxes"]).astype(np.float64).reshape(-1, 4)  # (N, 4) xyxy
        labels, scores = to_numpy(det["labels"]).reshape(-1), to_numpy(det["scores"]).reshape(-1)  # (N,)
        masks = to_numpy(det["masks"]) if "segm" in iou_types and det.get("masks") is not None else None
        if masks is not None and np.issubdtype(masks.dtype, np.floating):
            masks = masks > 0.5  # (N, H, W)
        if masks is not None:
            masks = masks.reshape(len(boxes), *masks.shape[-2:])  # (N, 1, H, W) also accepted
        for n in range(len(boxes)):
            x1, y1, x2, y2 = boxes[n]
            result = {"image_id": int(image_id), "category_id": int(label_to_cat_id[int(labels[n])]),
                      "bbox": [float(x1), float(y1), float(x2 - x1), float(y2 - y1)],
                      "score": float(scores[n])}
            if masks is not None:
                result["segmentation"] = encode_mask(masks[n])
            results.append(result)
    return results


def empty_detections_coco(gt):
    """A COCO object with gt's images and categories and no detections (loadRes refuses an empty list)."""
    dt = COCO()
    dt.dataset = {"images": list(gt["images"]), "categories": copy.deepcopy(gt["categories"]), "annotations": []}
    dt.createIndex()
    return dt


def pycocotools_evaluate(gt, results, iou_type):
    """pycocotools' COCOeval on a gt dict and a list of COCO results; neither input is modified.

    Returns the same keys as `mrcnn_edu.reference.coco_evaluate`: the 12 stats (AP ... ARl, as
    Python floats), "precision" (T, R, K, A, M) and "recall" (T, K, A, M). An empty results list
    gives AP 0 (or -1 where a range has no ground truth), as an evaluation with no detections should.
    """
    if iou_type not in ("bbox", "segm"):
        raise ValueError(f"iou_type must be 'bbox' or 'segm', got {iou_type!r}")
    if iou_type == "segm" and not all("segmentation" in r for r in results):
        raise ValueError("iou_type='segm' needs a 'segmentation' (RLE) in every result")
    results = [dict(r) for r in results]  # loadRes writes id, area, iscrowd into each
    if iou_type == "segm":
        for r in results:
            r.pop("bbox", None)  # so that loadRes takes the mask's area, not w * h
    with contextlib.redirect_stdout(io.StringIO()):  # COCO and COCOeval print progress
        coco_gt = COCO()
        coco_gt.dataset = copy.deepcopy(gt)  # COCOeval rewrites gt segmentations in place
        coco_gt.createIndex()
        coco_dt = coco_gt.loadRes(results) if results else empty_detections_coco(gt)
        evaluator = COCOeval(coco_gt, coco_dt, iouType=iou_type)
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    names = [name.format(*evaluator.params.maxDets) for name in STAT_NAMES]
    stats = {name: float(value) for name, value in zip(names, evaluator.stats)}
    stats.update(precision=evaluator.eval["precision"], recall=evaluator.eval["recall"])
    return stats


def evaluate_both(gt, results, iou_types=("bbox", "segm")):
    """{"pycocotools": {iou_type: stats}, "ours": {iou_type: stats}} on the same gt and results."""
    both = {"pycocotools": {}, "ours": {}}
    for iou_type in iou_types:
        both["pycocotools"][iou_type] = pycocotools_evaluate(gt, results, iou_type)
        both["ours"][iou_type] = coco_evaluate(gt, results, iou_type)
    return both


# ---------------------------------------------------------------- fake detections for tests and lessons

def jitter_box(box, rng, scale):
    """[x, y, w, h] with its centre moved and its sides rescaled by ~scale of its size."""
    x, y, w, h = box
    cx, cy = x + w / 2 + rng.normal(0, scale) * w, y + h / 2 + rng.normal(0, scale) * h
    w, h = w * np.exp(rng.normal(0, scale)), h * np.exp(rng.normal(0, scale))
    return [float(cx - w / 2), float(cy - h / 2), float(w), float(h)]


def shift_mask(mask, dy, dx):
    """(H, W) mask moved by (dy, dx) whole pixels; what leaves the image is lost."""
    out = np.zeros_like(mask)
    height, width = mask.shape
    src = mask[max(0, -dy):height - max(0, dy), max(0, -dx):width - max(0, dx)]
    out[max(0, dy):max(0, dy) + src.shape[0], max(0, dx):max(0, dx) + src.shape[1]] = src
    return out


def erode_or_dilate(mask, rng):
    """(H, W) mask grown or shrunk by one pixel (4-neighbourhood), or unchanged, at random."""
    choice = rng.integers(3)
    if choice == 0:
        return mask
    shifted = [shift_mask(mask, dy, dx) for dy, dx in ((1, 0), (-1, 0), (0, 1), (0, -1))]
    if choice == 1:
        return mask | shifted[0] | shifted[1] | shifted[2] | shifted[3]
    return mask & shifted[0] & shifted[1] & shifted[2] & shifted[3]


def simulate_detections(gt, generator=0, with_masks=True, image_ids=None, jitter=0.1,
                        miss_rate=0.1, wrong_class_rate=0.1, duplicate_rate=0.1,
                        false_positives_per_image=2.0, score_decimals=2):
    """Fake but plausible COCO results made from the ground truth of `gt`.

    Each gt object (crowds included) is missed with probability miss_rate, else detected with a
    box jittered by ~jitter of its size, a random score, and the wrong category with probability
    wrong_class_rate; some get a second, lower-scoring duplicate. Each image also gets
    Poisson(false_positives_per_image) random boxes. Scores are rounded to score_decimals so that
    ties occur (evaluators must break them the same way). With with_masks, each result also has a
    segmentation: the gt mask shifted like the box and grown or shrunk by a pixel (a filled
    rectangle for false positives). image_ids limits the images used. Deterministic for a seed.
    """
    rng = np.random.default_rng(generator)
    images = sorted(gt["images"], key=lambda img: img["id"])
    if image_ids is not None:
        wanted = set(image_ids)
        images = [img for img in images if img["id"] in wanted]
    cat_ids = sorted(c["id"] for c in gt["categories"])
    anns_by_image = {}
    for ann in gt["annotations"]:
        anns_by_image.setdefault(ann["image_id"], []).append(ann)
    results = []
    for img in images:
        height, width = img["height"], img["width"]
        for ann in anns_by_image.get(img["id"], []):
            if rng.random() < miss_rate:
                continue
            copies = 2 if rng.random() < duplicate_rate else 1
            for _ in range(copies):
                box = jitter_box(ann["bbox"], rng, jitter)
                cat = int(rng.choice(cat_ids)) if rng.random() < wrong_class_rate else ann["category_id"]
                result = {"image_id": img["id"], "category_id": cat, "bbox": box,
                          "score": round(float(rng.uniform(0.05, 1.0)), score_decimals)}
                if with_masks:
                    mask = decode_rles([annotation_rle(ann["segmentation"], height, width)], height, width)[0]
                    dx = int(round(box[0] + box[2] / 2 - ann["bbox"][0] - ann["bbox"][2] / 2))
                    dy = int(round(box[1] + box[3] / 2 - ann["bbox"][1] - ann["bbox"][3] / 2))
                    result["segmentation"] = encode_mask(erode_or_dilate(shift_mask(mask, dy, dx), rng))
                results.append(result)
        for _ in range(rng.poisson(false_positives_per_image)):
            w, h = rng.uniform(4, width / 2), rng.uniform(4, height / 2)
            x, y = rng.uniform(0, width - w), rng.uniform(0, height - h)
            result = {"image_id": img["id"], "category_id": int(rng.choice(cat_ids)),
                      "bbox": [float(x), float(y), float(w), float(h)],
                      "score": round(float(rng.uniform(0.05, 1.0)), score_decimals)}
            if with_masks:
                mask = np.zeros((height, width), dtype=bool)
                mask[int(y):int(np.ceil(y + h)), int(x):int(np.ceil(x + w))] = True
                result["segmentation"] = encode_mask(mask)
            results.append(result)
    return results
