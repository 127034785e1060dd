"""Evaluating a model on a COCO split: inference, COCO results JSON, AP two ways (lesson 11).

    metrics = evaluate(model, dataset, "cpu", results_path="results.json")
    metrics["pycocotools"]["segm"]["AP50"], metrics["ours"]["segm"]["AP50"]

The model runs in eval mode on each image; its detections (boxes in original pixels, labels
1..K, scores, uint8 masks) become COCO result records through `engine.cocoapi` (label -> COCO
category id, masks -> RLE), batch by batch so full-size masks never pile up in memory. The
records are scored by pycocotools' COCOeval and by our own `reference.coco_evaluate`, side by
side: the two should agree to about 1e-3.
"""
import json
import sys
from pathlib import Path

import torch
from tqdm import tqdm

from mrcnn_edu.data import CocoDataset
from mrcnn_edu.engine.checkpoint import load_model
from mrcnn_edu.engine.cocoapi import detections_to_coco_results, evaluate_both

IOU_TYPES = ("bbox", "segm")


@torch.no_grad()
def detect(model, images, device):
    """Eval-mode forward of a list of (3, H, W) images; detections moved to the CPU."""
    model.eval()
    detections = model([im.to(device) for im in images])
    return [{k: v.cpu() for k, v in d.items()} for d in detections]


def coco_results(model, dataset, device, iou_types=IOU_TYPES, batch_size=1, progress=False,
                 label_to_cat_id=None):
    """Run the model over `dataset`: a flat list of COCO result records (bbox and RLE mask).

    label_to_cat_id: the model's label -> COCO category id (the dataset's own when None).
    """
    label_to_cat_id = label_to_cat_id or dataset.label_to_cat_id
    results = []
    indices = range(len(dataset))
    batches = [indices[i : i + batch_size] for i in range(0, len(dataset), batch_size)]
    for batch in tqdm(batches, desc=f"evaluate {getattr(dataset, 'split', '')}",
                      disable=not progress, mininterval=1.0, file=sys.stderr):
        images = [dataset.load_image(i) for i in batch]  # pixels only: no targets needed
        detections = detect(model, images, device)
        image_ids = [dataset.image_ids[i] for i in batch]
        results += detections_to_coco_results(detections, image_ids, label_to_cat_id,
                                              iou_types=iou_types)
    return results


def scalar_stats(stats):
    """The named numbers of an evaluator's output (AP, AP50, ..., AR100), without its arrays."""
    return {k: v for k, v in stats.items() if isinstance(v, float)}


def evaluate(model, dataset, device="cpu", results_path=None, iou_types=IOU_TYPES,
             batch_size=1, progress=False, label_to_cat_id=None):
    """COCO AP of `model` on `dataset`, by pycocotools and by us; optionally write results JSON.

    Returns {"pycocotools": {iou_type: {"AP", "AP50", "AP75", "APs", "APm", "APl", "AR1",
    "AR10", "AR100", "ARs", "ARm", "ARl"}}, "ours": {same}, "num_images": N, "num_results": R}.
    The results JSON (if `results_path`) is the usual COCO results list: one record per
    detection with "bbox" and, for segm, "segmentation" (RLE). label_to_cat_id: as in
    `coco_results` (see `match_classes`).
    """
    results = coco_results(model, dataset, device, iou_types, batch_size, progress,
                           label_to_cat_id)
    if results_path is not None:
        Path(results_path).parent.mkdir(parents=True, exist_ok=True)
        Path(results_path).write_text(json.dumps(results))
    both = evaluate_both(kept_categories_gt(dataset), results, iou_types)
    metrics = {source: {t: scalar_stats(stats) for t, stats in by_type.items()}
               for source, by_type in both.items()}
    metrics.update(num_images=len(dataset), num_results=len(results))
    return metrics


def kept_categories_gt(dataset):
    """The dataset's COCO dict restricted to the categories the model learns (all when none dropped).

    A model trained on `categories=("person",)` is scored on person alone; against the full
    dict, the 79 categories it never predicts would each count as AP 0 in the mean.
    """
    gt = dataset.coco.dataset
    kept = set(dataset.label_to_cat_id.values())
    if len(kept) == len(gt["categories"]):
        return gt
    return {**gt, "categories": [c for c in gt["categories"] if c["id"] in kept],
            "annotations": [a for a in gt["annotations"] if a["category_id"] in kept]}


def evaluate_splits(model, config, data_root, device, output_dir, splits=None, progress=False):
    """Evaluate on the val and the train split; write metrics.json and results_<split>.json.

    A split whose annotation file is missing is reported and skipped. Returns
    {split_role: metrics}, split_role being "val" and "train".
    """
    output_dir = Path(output_dir)
    splits = splits or {"val": config.val_split, "train": config.train_split}
    all_metrics = {}
    for role, split in splits.items():
        try:
            dataset = CocoDataset(data_root, split=split, categories=config.categories)
        except FileNotFoundError as err:
            print(f"skipping evaluation on {role} split {split!r}: {err}", file=sys.stderr)
            continue
        all_metrics[role] = evaluate(model, dataset, device,
                                     results_path=output_dir / f"results_{role}.json",
                                     progress=progress)
        all_metrics[role]["split"] = split
    (output_dir / "metrics.json").write_text(json.dumps(all_metrics, indent=2) + "\n")
    return all_metrics


def evaluate_checkpoint(checkpoint, data_root, split=None, device="cpu", results_path=None,
                        progress=True, inference=None):
    """Load a checkpoint and evaluate it on `split` (the checkpoint config's val_split if None).

    inference: inference settings that replace the checkpoint's (`load_model`)."""
    model, config, class_names = load_model(checkpoint, device, inference)
    split = split or config.val_split
    dataset = CocoDataset(data_root, split=split, categories=config.categories)
    label_to_cat_id = match_classes(class_names, dataset, checkpoint)
    return evaluate(model, dataset, device, results_path=results_path, progress=progress,
                    label_to_cat_id=label_to_cat_id)


def match_classes(class_names, dataset, checkpoint="the checkpoint"):
    """{model label: the dataset's COCO category id}, matching the model's classes by name.

    class_names: the checkpoint's, index 0 = background. The model's label k means the class
    class_names[k], whatever label the dataset gives that name; the two must name the same
    classes, else ValueError naming both lists. A checkpoint saved without names (they read
    "1".."K") is matched by position when the counts agree.
    """
    ours, theirs = list(class_names[1:]), list(dataset.class_names[1:])
    if ours == [str(k) for k in range(1, len(ours) + 1)] and len(ours) == len(theirs):
        return dict(dataset.label_to_cat_id)
    missing = [n for n in ours if n not in theirs]
    extra = [n for n in theirs if n not in ours]
    if missing or extra or len(set(ours)) != len(ours):
        source = getattr(dataset, "ann_file", "the dataset")
        raise ValueError(
            f"{checkpoint}: its {len(ours)} classes {_names(ours)} are not the "
            f"{len(theirs)} classes of {source} {_names(theirs)}; not in the dataset: "
            f"{_names(missing)}; not in the checkpoint: {_names(extra)}. Evaluate on data "
            "with the classes the model was trained on")
    cat_id = {name: dataset.label_to_cat_id[label] for label, name in enumerate(theirs, 1)}
    return {label: cat_id[name] for label, name in enumerate(ours, 1)}


def _names(names, limit=10):
    """A list for a message, cut after `limit` names."""
    return str(names[:limit])[:-1] + (f", ... ({len(names)} in all)]" if len(names) > limit
                                      else "]")


def format_metrics(metrics):
    """A small table: one row per (source, iou type), the usual COCO columns."""
    keys = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR100")
    lines = [f"{'':<12}{'':<6}" + "".join(f"{k:>7}" for k in keys)]
    for source in ("pycocotools", "ours"):
        for iou_type, values in metrics.get(source, {}).items():
            lines.append(f"{source:<12}{iou_type:<6}"
                         + "".join(f"{values.get(k, float('nan')):>7.3f}" for k in keys))
    return "\n".join(lines)
