"""Tests for mrcnn_edu.engine.cocoapi: model outputs -> COCO results, pycocotools' numbers, both side by side."""
import copy
import json

import numpy as np
import pytest
import torch
from pycocotools import mask as mask_utils

from mrcnn_edu.engine.cocoapi import detections_to_coco_results, evaluate_both, pycocotools_evaluate
from mrcnn_edu.fake_detections import simulate_detections

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")

STATS = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")


def small_gt():
    return {"images": [{"id": 5, "height": 8, "width": 10}],
            "annotations": [{"id": 1, "image_id": 5, "category_id": 18, "bbox": [1, 2, 4, 3], "area": 12.0,
                             "iscrowd": 0, "segmentation": [[1, 2, 5, 2, 5, 5, 1, 5]]}],
            "categories": [{"id": 18, "name": "dog"}, {"id": 44, "name": "bottle"}]}


def test_detections_to_coco_results_hand_example():
    masks = torch.zeros(2, 8, 10, dtype=torch.uint8)
    masks[0, 2:5, 1:5] = 1
    detections = [{"boxes": torch.tensor([[1.0, 2.0, 5.0, 5.0], [0.5, 0.5, 2.0, 3.0]]),
                   "labels": torch.tensor([1, 2]), "scores": torch.tensor([0.9, 0.25]), "masks": masks}]
    results = detections_to_coco_results(detections, [5], {1: 18, 2: 44})
    assert [r["category_id"] for r in results] == [18, 44]
    assert results[0]["bbox"] == [1.0, 2.0, 4.0, 3.0] and results[1]["bbox"] == [0.5, 0.5, 1.5, 2.5]
    assert results[0]["image_id"] == 5 and results[1]["score"] == pytest.approx(0.25)
    assert isinstance(results[0]["segmentation"]["counts"], str)
    assert np.array_equal(mask_utils.decode(results[0]["segmentation"]), masks[0].numpy())
    json.dumps(results)  # plain Python numbers and strings only
    assert "segmentation" not in detections_to_coco_results(detections, [5], {1: 18, 2: 44}, ("bbox",))[0]


def test_detections_to_coco_results_numpy_float_masks_and_sequence_mapping():
    probabilities = np.zeros((1, 1, 8, 10), dtype=np.float32)  # (N, 1, H, W) probabilities
    probabilities[0, 0, 2:5, 1:5] = 0.7
    probabilities[0, 0, 0, 0] = 0.5  # exactly the threshold: on (>= 0.5, the README's rule)
    probabilities[0, 0, 7, 9] = 0.4999  # just below: background
    detections = [{"boxes": np.array([[1.0, 2.0, 5.0, 5.0]]), "labels": np.array([1]),
                   "scores": np.array([0.9]), "masks": probabilities}]
    (result,) = detections_to_coco_results(detections, [5], [None, 18])
    assert mask_utils.area(result["segmentation"]) == 12 + 1
    assert detections_to_coco_results([{"boxes": np.zeros((0, 4)), "labels": np.zeros(0, int),
                                        "scores": np.zeros(0)}], [5], [None, 18]) == []


def test_perfect_results_score_one_and_inputs_stay_unchanged():
    gt = small_gt()
    mask = np.zeros((1, 8, 10), dtype=bool)
    mask[0, 2:5, 1:5] = True
    results = detections_to_coco_results([{"boxes": [[1.0, 2.0, 5.0, 5.0]], "labels": [1], "scores": [0.8],
                                           "masks": mask}], [5], {1: 18})
    gt_before, results_before = copy.deepcopy(gt), copy.deepcopy(results)
    both = evaluate_both(gt, results)
    assert gt == gt_before and results == results_before
    for source in ("pycocotools", "ours"):
        for iou_type in ("bbox", "segm"):
            assert both[source][iou_type]["AP"] == pytest.approx(1.0)
            assert both[source][iou_type]["APm"] == -1  # the only object is small


def test_empty_results_do_not_crash():
    both = evaluate_both(small_gt(), [])
    for source in ("pycocotools", "ours"):
        for iou_type in ("bbox", "segm"):
            stats = both[source][iou_type]
            assert stats["AP"] == 0.0 and stats["AR100"] == 0.0 and stats["APl"] == -1
            assert set(STATS) <= set(stats)


def test_segm_uses_the_mask_area_not_the_box():
    # a false positive whose box is 10x10 (small) but whose mask has 2000 px (medium): for segm it
    # is a medium false positive, halving APm (pycocotools would ignore it if it kept the bbox)
    gt = {"images": [{"id": 1, "height": 100, "width": 120}],
          "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [0, 0, 50, 40], "area": 2000.0,
                           "iscrowd": 0, "segmentation": [[0, 0, 50, 0, 50, 40, 0, 40]]}],
          "categories": [{"id": 1}]}
    masks = np.zeros((2, 100, 120), dtype=bool)
    masks[0, :40, :50] = True
    masks[1, 50:90, 60:110] = True
    results = detections_to_coco_results([{"boxes": [[0.0, 0.0, 50.0, 40.0], [60.0, 50.0, 70.0, 60.0]],
                                           "labels": [1, 1], "scores": [0.5, 0.9], "masks": masks}], [1], {1: 1})
    both = evaluate_both(gt, results, ("bbox", "segm"))
    for source in ("ours", "pycocotools"):
        assert both[source]["segm"]["APm"] == pytest.approx(0.5)
        assert both[source]["bbox"]["APm"] == pytest.approx(1.0)  # as a box it is small: ignored


def test_simulate_detections_is_deterministic_and_has_ties(val_gt):
    first = simulate_detections(val_gt, generator=3, with_masks=False)
    assert first == simulate_detections(val_gt, generator=3, with_masks=False)
    scores = [r["score"] for r in first]
    assert len(set(scores)) < len(scores) / 5  # rounded to 2 decimals: many ties
    assert {r["image_id"] for r in first} <= {img["id"] for img in val_gt["images"]}


def test_evaluate_both_agree_on_the_val_subset(val_gt):
    image_ids = sorted(img["id"] for img in val_gt["images"])[:20]
    results = simulate_detections(val_gt, generator=2, image_ids=image_ids)
    both = evaluate_both(val_gt, json.loads(json.dumps(results)))  # survives a JSON round trip
    for iou_type in ("bbox", "segm"):
        for key in STATS:
            assert both["ours"][iou_type][key] == pytest.approx(both["pycocotools"][iou_type][key], abs=1e-4)


def test_pycocotools_evaluate_rejects_unknown_iou_type():
    with pytest.raises(ValueError, match="iou_type"):
        pycocotools_evaluate(small_gt(), [], "keypoints")
    box_only = [{"image_id": 5, "category_id": 18, "bbox": [1, 2, 4, 3], "score": 0.9}]
    with pytest.raises(ValueError, match="segmentation"):
        pycocotools_evaluate(small_gt(), box_only, "segm")
