"""Fake but plausible detections made from the ground truth, for tests and lesson 11.

Shape legend: (H, W) an image's size (height, width). Results are COCO result dicts (bbox
[x, y, w, h], masks as compressed RLE), exactly what `engine.cocoapi.detections_to_coco_results`
makes from a real model, so an evaluator can be exercised, and its AP read, before any model is
trained. Nothing here is used by training or evaluation itself.

    from mrcnn_edu.fake_detections import simulate_detections
    results = simulate_detections(gt, generator=0)   # gt: a COCO dict with annotations
"""
import numpy as np

from mrcnn_edu.engine.cocoapi import encode_mask
from mrcnn_edu.reference.coco_eval import annotation_rle, decode_rles

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
