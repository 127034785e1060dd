"""Tests for mrcnn_edu.reference.coco_eval and its torch twin mrcnn_edu.ops.coco_eval (lesson 11).

Hand examples (exact AP values), hypothesis properties on small random scenes (ours == pycocotools,
ours == twin), and the real val2017 subset with simulated detections, bbox and segm.
"""
import json

import numba
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mrcnn_edu.engine.cocoapi import encode_mask, pycocotools_evaluate, simulate_detections
from mrcnn_edu.ops import coco_eval as twin
from mrcnn_edu.reference import coco_eval as ref

# pycocotools' decode trips numpy 2's __array__(copy=...) deprecation; not ours to fix
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")

STATS = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """The twin's many small tensor ops only contend when torch spreads them over shared cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def scene(gt_boxes, dets, crowd=(), areas=None, size=(100, 100), cats=(1, 2)):
    """A one-image COCO gt dict: gt_boxes [(x, y, w, h, category)]; dets [(x, y, w, h, category, score)]."""
    height, width = size
    anns = []
    for i, (x, y, w, h, c) in enumerate(gt_boxes):
        anns.append({"id": i + 1, "image_id": 1, "category_id": c, "bbox": [x, y, w, h],
                     "area": float(w * h) if areas is None else areas[i], "iscrowd": int(i in crowd),
                     "segmentation": [[x, y, x + w, y, x + w, y + h, x, y + h]]})
    gt = {"images": [{"id": 1, "height": height, "width": width}], "annotations": anns,
          "categories": [{"id": c, "name": str(c)} for c in cats]}
    results = [{"image_id": 1, "category_id": c, "bbox": [x, y, w, h], "score": s} for x, y, w, h, c, s in dets]
    return gt, results


def assert_same_stats(a, b, tol):
    for key in STATS:
        assert abs(a[key] - b[key]) <= tol, (key, a[key], b[key])
    precision_a, precision_b = np.asarray(a["precision"]), np.asarray(b["precision"])
    assert np.allclose(precision_a, precision_b, atol=tol, rtol=0)
    assert np.allclose(np.asarray(a["recall"]), np.asarray(b["recall"]), atol=tol, rtol=0)


# ---------------------------------------------------------------- hand examples

def test_box_iou_xywh_hand_values():
    det = np.array([[0, 0, 10, 5], [20, 20, 5, 5], [5, 5, 10, 10]], dtype=float)
    gt = np.array([[0, 0, 10, 10], [0, 0, 10, 10]], dtype=float)
    iou = ref.box_iou_xywh(det, gt, np.array([False, True]))
    # det 0 covers half of gt 0 (IoU 50/100); against the crowd copy: inter / det area = 50/50
    # det 2 overlaps by 5x5 = 25: 25 / (100 + 100 - 25), and 25/100 with the crowd
    assert np.allclose(iou, [[0.5, 1.0], [0.0, 0.0], [25 / 175, 0.25]])
    assert np.allclose(twin.box_iou_xywh(torch.tensor(det), torch.tensor(gt), torch.tensor([False, True])).numpy(), iou)


def test_mask_iou_hand_values():
    gt = np.zeros((2, 4, 4), dtype=bool)
    gt[0, :2, :2] = True  # 4 pixels
    gt[1] = True  # 16 pixels, a crowd
    det = np.zeros((1, 4, 4), dtype=bool)
    det[0, :2, :] = True  # 8 pixels, 4 shared with gt 0
    iou = ref.mask_iou(det, gt, np.array([False, True]))
    assert np.allclose(iou, [[4 / 8, 8 / 8]])
    assert np.allclose(twin.mask_iou(torch.tensor(det), torch.tensor(gt), torch.tensor([False, True])).numpy(), iou)


def test_one_detection_at_iou_one_half():
    # IoU exactly 0.5 counts as a match at threshold 0.5 and at no other threshold
    gt, dets = scene([(0, 0, 10, 10, 1)], [(0, 0, 10, 5, 1, 0.9)])
    out = ref.coco_evaluate(gt, dets)
    assert out["AP50"] == pytest.approx(1.0) and out["AP75"] == 0.0  # precision tp / (tp + fp + eps)
    assert out["AP"] == pytest.approx(0.1) and out["AR100"] == pytest.approx(0.1)
    assert out["APs"] == pytest.approx(0.1) and out["APm"] == -1 and out["APl"] == -1  # area 100 is small
    assert out["per_category"] == pytest.approx({1: 0.1, 2: -1.0})  # category 2 has no gt
    assert_same_stats(out, pycocotools_evaluate(gt, dets, "bbox"), 1e-12)


def test_false_positive_first_halves_precision():
    # a higher-scoring miss then a hit: precision 1/2 at every recall up to 1
    gt, dets = scene([(0, 0, 10, 10, 1)], [(50, 50, 10, 10, 1, 0.9), (0, 0, 10, 10, 1, 0.8)])
    out = ref.coco_evaluate(gt, dets)
    assert out["AP"] == pytest.approx(0.5) and out["AR100"] == 1.0 and out["AR1"] == 0.0


def test_crowd_absorbs_detections_without_false_positives():
    gt_boxes = [(0, 0, 10, 10, 1), (50, 50, 40, 40, 1)]
    dets = [(55, 55, 10, 10, 1, 0.95), (60, 60, 10, 10, 1, 0.9), (0, 0, 10, 10, 1, 0.8)]
    gt, results = scene(gt_boxes, dets, crowd=(1,))
    out = ref.coco_evaluate(gt, results)
    # both detections inside the crowd are matched to it (inter / det area = 1) and ignored
    assert out["AP"] == pytest.approx(1.0) and out["AR100"] == 1.0
    assert_same_stats(out, pycocotools_evaluate(gt, results, "bbox"), 1e-12)
    # without the crowd flag the box is a missed object and the two dets are false positives
    gt, results = scene(gt_boxes, dets)
    out = ref.coco_evaluate(gt, results)
    assert out["AP"] == pytest.approx((1 / 3) * 51 / 101)  # precision 1/3 up to recall 0.5
    assert_same_stats(out, pycocotools_evaluate(gt, results, "bbox"), 1e-12)


def test_area_range_uses_the_json_area():
    # the box is 10x10 but the annotation says 2000 px^2: the object is "medium"
    gt, dets = scene([(0, 0, 10, 10, 1)], [(0, 0, 10, 10, 1, 0.9)], areas=[2000.0])
    out = ref.coco_evaluate(gt, dets)
    assert out["APm"] == pytest.approx(1.0) and out["APs"] == -1
    assert_same_stats(out, pycocotools_evaluate(gt, dets, "bbox"), 1e-12)


def test_max_dets_is_per_image_and_category():
    gt, dets = scene([(0, 0, 10, 10, 1), (30, 30, 10, 10, 1)],
                     [(0, 0, 10, 10, 1, 0.9), (30, 30, 10, 10, 1, 0.8)])
    out = ref.coco_evaluate(gt, dets)
    assert out["AR1"] == 0.5 and out["AR10"] == 1.0 and out["AP"] == pytest.approx(1.0)
    # with max_dets (1, 2, 3) the last limit keeps both; AR names follow the limits
    assert ref.coco_evaluate(gt, dets, max_dets=(1, 2, 3))["AR2"] == 1.0


def test_equal_iou_goes_to_the_later_ground_truth():
    ious = np.array([[0.6, 0.6]])
    matched, ignored, gt_ignored = ref.evaluate_image(ious, np.array([100.0]), np.array([100.0, 5000.0]),
                                                      np.array([False, False]), ref.AREA_RANGES["small"])
    # gt 1 is outside "small" so it is ignored: the regular gt 0 wins despite the tie
    assert matched[0, 0] and not ignored[0, 0] and gt_ignored.tolist() == [False, True]
    det_to_gt = ref.greedy_match_kernel(ious, np.zeros(2, bool), np.zeros(2, bool), ref.IOU_THRESHOLDS)
    assert det_to_gt[0, 0] == 1  # both regular: the later one takes the detection


def test_empty_detections_and_bad_inputs():
    gt, _ = scene([(0, 0, 10, 10, 1)], [])
    out = ref.coco_evaluate(gt, [])
    assert out["AP"] == 0.0 and out["APl"] == -1
    assert_same_stats(out, pycocotools_evaluate(gt, [], "bbox"), 0)
    assert_same_stats(twin.coco_evaluate(gt, []), out, 0)
    with pytest.raises(ValueError, match="not in gt"):
        ref.coco_evaluate(gt, [{"image_id": 7, "category_id": 1, "bbox": [0, 0, 1, 1], "score": 1.0}])
    with pytest.raises(ValueError, match="iou_type"):
        ref.coco_evaluate(gt, [], iou_type="keypoints")
    with pytest.raises(ValueError, match="segmentation"):
        ref.coco_evaluate(gt, [{"image_id": 1, "category_id": 1, "bbox": [0, 0, 1, 1], "score": 1.0}], "segm")


def test_unknown_categories_are_ignored_and_gt_is_not_modified():
    gt, dets = scene([(0, 0, 10, 10, 1)], [(0, 0, 10, 10, 1, 0.9), (0, 0, 10, 10, 99, 0.95)])
    before = json.dumps(gt)
    out = ref.coco_evaluate(gt, dets)  # category 99 is not in gt: left out, as pycocotools does
    assert out["AP"] == pytest.approx(1.0) and json.dumps(gt) == before
    assert_same_stats(out, pycocotools_evaluate(gt, dets, "bbox"), 1e-12)


def test_twin_matching_agrees_on_a_hand_case():
    ious = np.array([[0.9, 0.7, 0.0], [0.8, 0.8, 0.6], [0.55, 0.0, 0.96]])
    det_area, gt_area, crowd = np.array([50.0, 2000.0, 9000.0]), np.array([100.0, 100.0, 20000.0]), np.array([False, False, True])
    for area_range in ref.AREA_RANGES.values():
        expected = ref.evaluate_image(ious, det_area, gt_area, crowd, area_range)
        got = twin.evaluate_image(torch.tensor(ious), torch.tensor(det_area), torch.tensor(gt_area),
                                  torch.tensor(crowd), area_range)
        for e, g in zip(expected, got):
            assert np.array_equal(e, g.numpy())


# ---------------------------------------------------------------- properties on random scenes

@st.composite
def random_scene(draw):
    """1-2 images, 1-2 categories, a few integer boxes, some crowds, tied scores, a few masks' worth."""
    num_images = draw(st.integers(1, 2))
    box = st.tuples(st.integers(0, 40), st.integers(0, 40), st.integers(1, 40), st.integers(1, 40))
    anns, results = [], []
    for image_id in range(1, num_images + 1):
        for x, y, w, h in draw(st.lists(box, max_size=4)):
            anns.append({"id": len(anns) + 1, "image_id": image_id, "category_id": draw(st.sampled_from([1, 2])),
                         "bbox": [x, y, w, h], "area": float(w * h), "iscrowd": int(draw(st.integers(0, 5)) == 0)})
        for x, y, w, h in draw(st.lists(box, max_size=5)):
            results.append({"image_id": image_id, "category_id": draw(st.sampled_from([1, 2])),
                            "bbox": [x, y, w, h], "score": draw(st.sampled_from([0.3, 0.5, 0.9]))})
    gt = {"images": [{"id": i, "height": 100, "width": 100} for i in range(1, num_images + 1)],
          "annotations": anns, "categories": [{"id": 1}, {"id": 2}]}
    return gt, results


@settings(max_examples=40, deadline=None)
@given(random_scene())
def test_random_scenes_agree_with_pycocotools_and_twin(data):
    gt, results = data
    ours = ref.coco_evaluate(gt, results)
    assert_same_stats(ours, pycocotools_evaluate(gt, results, "bbox"), 1e-12)
    assert_same_stats(twin.coco_evaluate(gt, results), ours, 1e-12)
    for key in STATS:
        assert ours[key] == -1 or 0 <= ours[key] <= 1


@settings(max_examples=20, deadline=None)
@given(random_scene())
def test_ground_truth_as_detections_scores_one(data):
    gt, _ = data
    results = [{"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"], "score": 1.0}
               for a in gt["annotations"] if not a["iscrowd"]]
    out = ref.coco_evaluate(gt, results)
    assert out["AP"] == -1 or out["AP"] == pytest.approx(1.0)
    assert out["AR100"] in (1.0, -1.0)


def test_masks_of_a_random_scene_agree_with_pycocotools_and_twin():
    rng = np.random.default_rng(0)
    gt = {"images": [{"id": 1, "height": 30, "width": 40}, {"id": 2, "height": 20, "width": 20}],
          "annotations": [], "categories": [{"id": 1}, {"id": 3}]}
    results = []
    for img in gt["images"]:
        for _ in range(6):
            mask = rng.random((img["height"], img["width"])) < 0.3
            crowd = int(rng.random() < 0.2)
            anns = gt["annotations"]
            anns.append({"id": len(anns) + 1, "image_id": img["id"], "category_id": int(rng.choice([1, 3])),
                         "segmentation": encode_mask(mask), "area": float(mask.sum()), "iscrowd": crowd,
                         "bbox": [0, 0, 1, 1]})
            noisy = mask ^ (rng.random(mask.shape) < 0.1)
            results.append({"image_id": img["id"], "category_id": anns[-1]["category_id"],
                            "segmentation": encode_mask(noisy), "score": float(rng.choice([0.2, 0.6]))})
    ours = ref.coco_evaluate(gt, results, "segm")
    assert_same_stats(ours, pycocotools_evaluate(gt, results, "segm"), 1e-12)
    assert_same_stats(twin.coco_evaluate(gt, results, "segm"), ours, 1e-12)


# ---------------------------------------------------------------- the real val2017 subset

# Under NUMBA_DISABLE_JIT=1 these two add nothing: the matching kernel's every path already ran
# as Python above (against pycocotools), and pycocotools and the twin, most of their time, do
# not change with it.
real_subset_with_jit = pytest.mark.skipif(
    numba.config.DISABLE_JIT, reason="the kernel's paths run as Python in the tests above")


@real_subset_with_jit
def test_val_subset_bbox_agrees_with_pycocotools_and_twin(val_gt):
    results = simulate_detections(val_gt, generator=0, with_masks=False)
    ours = ref.coco_evaluate(val_gt, results, "bbox")
    assert 0.1 < ours["AP"] < 0.9  # a non-trivial case: neither perfect nor hopeless
    assert_same_stats(ours, pycocotools_evaluate(val_gt, results, "bbox"), 1e-4)
    assert_same_stats(twin.coco_evaluate(val_gt, results, "bbox"), ours, 1e-6)


@real_subset_with_jit
def test_val_subset_segm_agrees_with_pycocotools_and_twin(val_gt):
    image_ids = sorted(img["id"] for img in val_gt["images"])[::4]  # every 4th image keeps it fast
    results = simulate_detections(val_gt, generator=1, image_ids=image_ids)
    ours = ref.coco_evaluate(val_gt, results, "segm")
    assert 0.02 < ours["AP"] < 0.9
    assert_same_stats(ours, pycocotools_evaluate(val_gt, results, "segm"), 1e-4)
    assert_same_stats(twin.coco_evaluate(val_gt, results, "segm"), ours, 1e-6)
