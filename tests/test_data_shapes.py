"""mrcnn_edu.data.shapes: the seeded synthetic COCO-format dataset."""
import hashlib
import json
import tempfile

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pycocotools import mask as mask_utils

from mrcnn_edu.data import CocoDataset, make_shapes_dataset

# pycocotools 2.0.x + numpy 2 warn inside mask.decode; nothing we can change from here
pytestmark = pytest.mark.filterwarnings(
    "ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning")

SPLITS = {"train2017": 12, "val2017": 4}


def digests(root):
    """{relative path: sha256} of every file under root."""
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def shapes_root(tmp_path_factory):
    return make_shapes_dataset(tmp_path_factory.mktemp("shapes"), seed=0, splits=SPLITS)


def test_layout_and_default_splits(tmp_path):
    root = make_shapes_dataset(tmp_path / "s", num_images=8, seed=3)
    assert root == tmp_path / "s"
    assert sorted(p.name for p in (root / "annotations").iterdir()) == [
        "instances_train2017.json", "instances_val2017.json"]
    assert len(list((root / "train2017").glob("*.png"))) == 8
    assert len(list((root / "val2017").glob("*.png"))) == 2  # max(1, 8 // 4)


def test_same_seed_gives_byte_identical_files(shapes_root, tmp_path):
    again = make_shapes_dataset(tmp_path / "again", seed=0, splits=SPLITS)
    assert digests(again) == digests(shapes_root)


def test_other_seed_gives_other_files(shapes_root, tmp_path):
    other = digests(make_shapes_dataset(tmp_path / "other", seed=1, splits=SPLITS))
    ours = digests(shapes_root)
    assert other.keys() == ours.keys()
    assert all(other[k] != ours[k] for k in ours if k.endswith(".json"))
    assert sum(other[k] != ours[k] for k in ours) >= len(ours) - 1


def test_a_split_does_not_depend_on_the_other_splits(shapes_root, tmp_path):
    alone = digests(make_shapes_dataset(tmp_path / "alone", seed=0, splits={"val2017": 4}))
    ours = digests(shapes_root)
    assert all(ours[k] == v for k, v in alone.items())


def test_readable_by_coco_dataset(shapes_root):
    for split, n in SPLITS.items():
        ds = CocoDataset(shapes_root, split)
        assert len(ds) == n and ds.num_classes == 3 and not ds.dropped
        assert ds.class_names == ["__background__", "square", "circle", "triangle"]
        image, target = ds[0]
        assert image.shape == (3, 128, 128) and str(image.dtype) == "torch.float32"
        assert 0 <= float(image.min()) and float(image.max()) <= 1


def test_masks_agree_with_boxes_and_areas(shapes_root):
    ds = CocoDataset(shapes_root, "train2017")
    instances = 0
    for i in range(len(ds)):
        target = ds.load_target(i)
        masks, boxes = target["masks"].numpy(), target["boxes"].numpy()  # (N, H, W), (N, 4)
        for mask, box, area in zip(masks, boxes, target["area"].numpy()):
            ys, xs = np.nonzero(mask)
            assert box.tolist() == [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]
            assert area == mask.sum()
            instances += 1
    assert instances >= len(ds)


def test_polygons_and_rle_both_present(shapes_root):
    anns = json.loads((shapes_root / "annotations/instances_train2017.json").read_text())[
        "annotations"]
    kinds = {(a["category_id"], type(a["segmentation"]).__name__) for a in anns}
    assert (2, "dict") in kinds  # circles: compressed RLE
    assert (1, "list") in kinds and (3, "list") in kinds  # whole squares, triangles: polygons
    assert (2, "list") not in kinds
    assert all(isinstance(a["segmentation"]["counts"], str) for a in anns
               if isinstance(a["segmentation"], dict))


def test_visible_masks_do_not_overlap(shapes_root):
    ds = CocoDataset(shapes_root, "train2017")
    for i in range(len(ds)):
        masks = ds.load_target(i)["masks"].numpy()
        assert masks.sum(0).max(initial=0) <= 1


def test_pixels_show_the_shapes(shapes_root):
    """Shapes are drawn bright on a darker background: mean inside > mean outside."""
    ds = CocoDataset(shapes_root, "train2017")
    for i in range(len(ds)):
        image, target = ds[i]
        inside = target["masks"].numpy().any(0)
        if inside.any():
            gray = image.numpy().mean(0)
            assert gray[inside].mean() > gray[~inside].mean() + 0.2


def test_no_overlap_and_empty_images_options(tmp_path):
    root = make_shapes_dataset(tmp_path / "s", splits={"train": 20}, max_overlap=0.0,
                               empty_prob=0.3, image_size=(64, 96), size_range=(8, 24))
    ds = CocoDataset(root, "train")
    counts = [len(ds.load_target(i)["labels"]) for i in range(len(ds))]
    assert 0 in counts and max(counts) <= 3
    anns = ds.coco.dataset["annotations"]
    # nothing is hidden, so every square and triangle stays a polygon
    assert all(isinstance(a["segmentation"], list) for a in anns if a["category_id"] != 2)
    assert ds.load_image(0).shape == (3, 64, 96)


def test_no_empty_images_when_asked(tmp_path):
    root = make_shapes_dataset(tmp_path / "s", splits={"train": 30}, empty_prob=0.0)
    ds = CocoDataset(root, "train")
    assert all(len(ds.load_target(i)["labels"]) >= 1 for i in range(len(ds)))


def test_polygon_decodes_to_the_painted_mask():
    from mrcnn_edu.data.shapes import shape_mask

    mask, polygon = shape_mask(1, 10, 20, 8, 64, 64, np.random.default_rng(0))
    assert polygon == [10, 20, 18, 20, 18, 28, 10, 28]
    assert mask.sum() == 64 and mask[20:28, 10:18].all()
    rle = mask_utils.merge(mask_utils.frPyObjects([polygon], 64, 64))
    assert (mask_utils.decode(rle).astype(bool) == mask).all()


@pytest.mark.parametrize("kwargs", [dict(size_range=(1, 10)), dict(size_range=(10, 200)),
                                    dict(min_objects=3, max_objects=2), dict(max_overlap=1.0),
                                    dict(empty_prob=1.5)])
def test_bad_arguments(tmp_path, kwargs):
    with pytest.raises(ValueError):
        make_shapes_dataset(tmp_path / "s", num_images=1, **kwargs)


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), height=st.integers(24, 72), width=st.integers(24, 72),
       low=st.integers(2, 12), extra=st.integers(0, 12), max_overlap=st.sampled_from([0, 0.3, 0.9]))
def test_property_stored_annotations_match_the_decoded_masks(seed, height, width, low, extra,
                                                             max_overlap):
    """Any arguments: bbox and area in the JSON are the decoded mask's; no mask is empty; the
    visible masks of one image are disjoint; every image has at least one object."""
    with tempfile.TemporaryDirectory() as tmp:
        root = make_shapes_dataset(tmp, seed=seed, splits={"s": 3}, image_size=(height, width),
                                   size_range=(low, min(low + extra, height, width)),
                                   max_overlap=max_overlap, empty_prob=0.0)
        ds = CocoDataset(root, "s")
        for i in range(len(ds)):
            info = ds.image_info(i)
            anns = [ds.coco.anns[a] for a in ds.coco.getAnnIds(imgIds=[info["id"]])]
            assert anns
            union = np.zeros((height, width), bool)
            for a in anns:
                mask = ds.coco.annToMask(a).astype(bool)
                ys, xs = np.nonzero(mask)
                assert a["bbox"] == [xs.min(), ys.min(), xs.max() + 1 - xs.min(),
                                     ys.max() + 1 - ys.min()]
                assert a["area"] == mask.sum()
                assert not (union & mask).any()
                union |= mask
