"""Tests for mrcnn_edu.engine.evaluate and predict: an oracle that returns the ground truth scores
AP 1 by pycocotools and by us; a model that finds nothing scores 0; the results JSON is COCO's;
the drawings are written.
"""
import json

import pytest
import torch
from torch import nn

from mrcnn_edu.data import CocoDataset, make_shapes_dataset
from mrcnn_edu.engine.evaluate import evaluate, format_metrics
from mrcnn_edu.engine.predict import show_detections


class Oracle(nn.Module):
    """Eval-mode stand-in that returns each image's ground truth, in dataset order, as detections."""

    def __init__(self, dataset, empty=False):
        super().__init__()
        self.targets = [dataset.load_target(i) for i in range(len(dataset))]
        self.empty = empty
        self.calls = 0

    def forward(self, images, targets=None):
        out = []
        for _ in images:
            t = self.targets[self.calls]
            self.calls += 1
            keep = torch.zeros(len(t["labels"]), dtype=torch.bool) if self.empty else t["iscrowd"] == 0
            out.append({"boxes": t["boxes"][keep], "labels": t["labels"][keep],
                        "scores": torch.linspace(1.0, 0.5, len(t["labels"]))[keep],
                        "masks": t["masks"][keep]})
        return out


@pytest.fixture(scope="module")
def shapes_root(tmp_path_factory):
    return make_shapes_dataset(tmp_path_factory.mktemp("shapes"), splits={"val2017": 3}, seed=1)


def test_oracle_scores_ap_one_both_ways(shapes_root, tmp_path):
    dataset = CocoDataset(shapes_root, split="val2017")
    metrics = evaluate(Oracle(dataset), dataset, results_path=tmp_path / "r.json")
    for source in ("pycocotools", "ours"):
        for iou_type in ("bbox", "segm"):
            assert metrics[source][iou_type]["AP"] == pytest.approx(1.0), (source, iou_type)
    results = json.loads((tmp_path / "r.json").read_text())
    assert len(results) == metrics["num_results"] == sum(
        len(dataset.load_target(i)["labels"]) for i in range(len(dataset)))
    assert set(results[0]) >= {"image_id", "category_id", "bbox", "score", "segmentation"}
    assert "pycocotools" in format_metrics(metrics)


def test_no_detections_score_zero(shapes_root):
    dataset = CocoDataset(shapes_root, split="val2017")
    metrics = evaluate(Oracle(dataset, empty=True), dataset)
    assert metrics["num_results"] == 0
    assert metrics["pycocotools"]["bbox"]["AP50"] == metrics["ours"]["bbox"]["AP50"] == 0.0


def test_show_detections_hides_low_scores(shapes_root):
    dataset = CocoDataset(shapes_root, split="val2017")
    image, target = dataset[0]
    n = len(target["labels"])
    detections = {"boxes": target["boxes"], "labels": target["labels"],
                  "scores": torch.full((n,), 0.3), "masks": target["masks"]}
    ax = show_detections(image, detections, dataset.class_names, score_threshold=0.5)
    assert len(ax.patches) == 0
    ax = show_detections(image, detections, dataset.class_names, score_threshold=0.2)
    assert len(ax.patches) == n
    assert {t.get_text().split()[0] for t in ax.texts} <= set(dataset.class_names[1:])
