"""The COCO API side of evaluation (lessons 10-11): model outputs -> COCO results, and pycocotools' numbers.

Shape legend: N detections of one image; (H, W) the original image size (height, width);
K categories. Model outputs use the package conventions (boxes xyxy in original-image pixels,
labels 1..K, 0 is background); COCO results use COCO's (bbox [x, y, w, h], category ids from the
JSON, masks as compressed RLE with `counts` a str so that json.dump works).

- `detections_to_coco_results`: per-image model outputs -> one flat list of COCO result dicts.
- `pycocotools_evaluate`: the official COCOeval on a gt dict and such a list (prints silenced).
- `evaluate_both`: pycocotools and `mrcnn_edu.reference.coco_evaluate` on the same inputs.

`simulate_detections` (fake detections made from the ground truth, for tests and lesson 11) lives
in `mrcnn_edu.fake_detections`; it stays importable from here, loaded on first use.

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

from mrcnn_edu.reference.coco_eval import STAT_NAMES, coco_evaluate
from mrcnn_edu.reference.masks import MASK_THRESHOLD

# Names that moved to mrcnn_edu.fake_detections; `from mrcnn_edu.engine.cocoapi import
# simulate_detections` keeps working (lesson 11) without the engine importing the fakes.
MOVED_TO_FAKE_DETECTIONS = ("simulate_detections", "jitter_box", "shift_mask", "erode_or_dilate")


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
    image size (float masks are probabilities, on where >= MASK_THRESHOLD), as tensors or arrays.
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
            masks = masks >= MASK_THRESHOLD  # (N, H, W), the README's rule
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


def __getattr__(name):
    """The old home of the fake detections: load them from mrcnn_edu.fake_detections on use."""
    if name in MOVED_TO_FAKE_DETECTIONS:
        from mrcnn_edu import fake_detections
        return getattr(fake_detections, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
