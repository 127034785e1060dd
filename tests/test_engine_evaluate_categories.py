"""A model trained on some categories is scored on those alone (mrcnn_edu.engine.evaluate).

Against the full COCO dict, each category the model never predicts would count as AP 0 in the
mean, so an oracle for one category of three would score AP 1/3 instead of 1.
"""
import pytest

from mrcnn_edu.data import CocoDataset, make_shapes_dataset
from mrcnn_edu.engine.evaluate import evaluate, kept_categories_gt

from test_engine_evaluate import Oracle  # pytest puts tests/ on sys.path


@pytest.fixture(scope="module")
def shapes_root(tmp_path_factory):
    return make_shapes_dataset(tmp_path_factory.mktemp("shapes"), splits={"val2017": 4}, seed=1)


def test_oracle_for_one_category_scores_ap_one(shapes_root):
    full = CocoDataset(shapes_root, split="val2017")
    name = full.class_names[1]
    dataset = CocoDataset(shapes_root, split="val2017", categories=[name])
    gt = kept_categories_gt(dataset)
    assert [c["name"] for c in gt["categories"]] == [name]
    assert all(a["category_id"] == dataset.label_to_cat_id[1] for a in gt["annotations"])
    metrics = evaluate(Oracle(dataset), dataset)
    for source in ("pycocotools", "ours"):
        for iou_type in ("bbox", "segm"):
            assert metrics[source][iou_type]["AP"] == pytest.approx(1.0), (source, iou_type)


def test_all_categories_keep_the_dict(shapes_root):
    dataset = CocoDataset(shapes_root, split="val2017")
    assert kept_categories_gt(dataset) is dataset.coco.dataset
