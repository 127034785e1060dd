"""mrcnn_edu.data.coco: CocoDataset on the real subset and on crafted COCO folders."""
import json

import numpy as np
import pytest
import torch
from PIL import Image
from pycocotools import mask as mask_utils

from mrcnn_edu.data import CocoDataset, CocoFormatError, collate, resolve_data_root

# pycocotools 2.0.x + numpy 2 warn inside mask.decode; nothing we can change from here
pytestmark = pytest.mark.filterwarnings(
    "ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning")

H, W = 20, 30
CATEGORIES = [{"id": 5, "name": "cat"}, {"id": 2, "name": "dog"}, {"id": 9, "name": "bird"}]


# --- crafted folders ---------------------------------------------------------------------------
def write_folder(root, images=None, annotations=(), categories=CATEGORIES, split="train",
                 write_images=True):
    """root/annotations/instances_{split}.json + root/{split}/*.png; returns root.

    images: [{"id", "file_name", "height", "width"}, ...]; default one 20 x 30 image, id 1."""
    images = images if images is not None else [image_entry(1)]
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    (root / split).mkdir(parents=True, exist_ok=True)
    if write_images:
        for img in images:
            pixels = np.full((img["height"], img["width"], 3), 100, np.uint8)
            Image.fromarray(pixels).save(root / split / img["file_name"])
    data = {"images": images, "annotations": list(annotations), "categories": categories}
    (root / "annotations" / f"instances_{split}.json").write_text(json.dumps(data))
    return root


def image_entry(image_id, height=H, width=W):
    return {"id": image_id, "file_name": f"{image_id:04d}.png", "height": height, "width": width}


def ann(ann_id, bbox=(2, 3, 10, 8), image_id=1, category_id=5, segmentation=None, iscrowd=0):
    """An annotation; the default segmentation is the box as a polygon."""
    x, y, w, h = bbox
    if segmentation is None:
        segmentation = [[x, y, x + w, y, x + w, y + h, x, y + h]]
    return {"id": ann_id, "image_id": image_id, "category_id": category_id, "bbox": list(bbox),
            "segmentation": segmentation, "area": float(w * h), "iscrowd": iscrowd}


def rect_mask(x, y, w, h):
    mask = np.zeros((H, W), np.uint8)
    mask[y:y + h, x:x + w] = 1
    return mask


# --- the real subset ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def subset_root():
    try:
        return resolve_data_root()
    except FileNotFoundError:
        pytest.skip("no COCO subset (set MRCNN_EDU_DATA or see data/README.md)")


@pytest.mark.parametrize("split", ["train2017", "val2017"])
def test_real_subset_loads_every_image_with_masks(subset_root, split):
    """The full load: every image decodes at its JSON size, with one mask per kept instance."""
    ds = CocoDataset(subset_root, split)
    raw = json.loads(ds.ann_file.read_text())
    assert len(ds) == len(raw["images"])
    assert ds.num_classes == len(raw["categories"])
    instances = crowd = 0
    for i in range(len(ds)):
        image, target = ds[i]
        info = ds.image_info(i)
        n = len(target["labels"])
        assert image.shape == (3, info["height"], info["width"]) and image.dtype == torch.float32
        assert target["boxes"].shape == (n, 4) and target["masks"].shape == (n, *image.shape[1:])
        assert target["masks"].dtype == torch.uint8
        assert bool((target["masks"].flatten(1).sum(1) > 0).all())  # no empty mask
        assert bool((target["labels"] >= 1).all() and (target["labels"] <= ds.num_classes).all())
        instances += n
        crowd += int(target["iscrowd"].sum())
    # every instance in the JSON is loaded, except the documented drops (degenerate boxes)
    assert instances == len(raw["annotations"]) - len(ds.dropped)
    assert crowd == sum(a["iscrowd"] for a in raw["annotations"] if a["id"] not in ds.dropped)
    assert all("degenerate box" in reason for reason in ds.dropped.values())


def test_real_subset_size(subset_root):
    """318 images in all, as the subset's README states."""
    sizes = [len(CocoDataset(subset_root, s)) for s in ("train2017", "val2017")]
    if subset_root.name == "coco_subset" and subset_root.parent.name == "shared":
        assert sizes == [160, 158]
    assert sum(sizes) > 0


# --- bad input: each error names the file and the offending id / field -------------------------
def test_missing_json(tmp_path):
    with pytest.raises(FileNotFoundError, match="instances_val2017.json"):
        CocoDataset(tmp_path, "val2017")


def test_malformed_json(tmp_path):
    write_folder(tmp_path)
    path = tmp_path / "annotations" / "instances_train.json"
    path.write_text('{"images": [')
    with pytest.raises(CocoFormatError, match=r"instances_train\.json.*not valid JSON"):
        CocoDataset(tmp_path, "train")


def test_missing_top_level_field(tmp_path):
    write_folder(tmp_path)
    path = tmp_path / "annotations" / "instances_train.json"
    data = json.loads(path.read_text())
    del data["categories"]
    path.write_text(json.dumps(data))
    with pytest.raises(CocoFormatError, match=r"instances_train\.json.*'categories'"):
        CocoDataset(tmp_path, "train")


def test_missing_image_file(tmp_path):
    write_folder(tmp_path, images=[image_entry(1), image_entry(7)], write_images=False)
    Image.fromarray(np.zeros((H, W, 3), np.uint8)).save(tmp_path / "train" / "0001.png")
    with pytest.raises(FileNotFoundError, match=r"0007\.png.*image id 7.*instances_train\.json"):
        CocoDataset(tmp_path, "train")


def test_annotation_with_unknown_image(tmp_path):
    write_folder(tmp_path, annotations=[ann(1), ann(42, image_id=99)])
    with pytest.raises(CocoFormatError,
                       match=r"instances_train\.json.*annotation id 42.*'image_id' = 99"):
        CocoDataset(tmp_path, "train")


def test_annotation_with_unknown_category(tmp_path):
    write_folder(tmp_path, annotations=[ann(3, category_id=77)])
    with pytest.raises(CocoFormatError,
                       match=r"instances_train\.json.*annotation id 3.*'category_id' = 77"):
        CocoDataset(tmp_path, "train")


def test_annotation_missing_field(tmp_path):
    bad = ann(4)
    del bad["bbox"]
    write_folder(tmp_path, annotations=[bad])
    with pytest.raises(CocoFormatError, match=r"instances_train\.json.*annotation id 4.*'bbox'"):
        CocoDataset(tmp_path, "train")


def test_rle_of_the_wrong_size(tmp_path):
    rle = {"size": [H + 1, W], "counts": [(H + 1) * W]}
    write_folder(tmp_path, annotations=[ann(6, segmentation=rle, iscrowd=1)])
    with pytest.raises(CocoFormatError, match=r"annotation id 6.*'segmentation'.*size"):
        CocoDataset(tmp_path, "train")


def test_truncated_image(tmp_path):
    write_folder(tmp_path, write_images=False)
    rng = np.random.default_rng(0)
    path = tmp_path / "train" / "0001.png"
    Image.fromarray(rng.integers(0, 256, (H, W, 3), dtype=np.uint8)).save(path)
    path.write_bytes(path.read_bytes()[:200])
    ds = CocoDataset(tmp_path, "train")  # the file exists: construction does not decode it
    with pytest.raises(CocoFormatError, match=r"0001\.png.*image id 1"):
        ds[0]


def test_image_size_differs_from_json(tmp_path):
    write_folder(tmp_path, write_images=False)
    Image.fromarray(np.zeros((H, W + 1, 3), np.uint8)).save(tmp_path / "train" / "0001.png")
    with pytest.raises(CocoFormatError, match=r"0001\.png.*image id 1.*'height', 'width'"):
        CocoDataset(tmp_path, "train")[0]


def test_unknown_category_filter(tmp_path):
    write_folder(tmp_path)
    with pytest.raises(ValueError, match="unknown category 'horse'"):
        CocoDataset(tmp_path, "train", categories=["horse"])


# --- image modes -------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["L", "CMYK", "P", "RGBA", "I;16"])
def test_image_modes_become_rgb(tmp_path, mode):
    write_folder(tmp_path, write_images=False)
    rgb = Image.fromarray(np.full((H, W, 3), (200, 100, 50), np.uint8))
    if mode == "L":
        img = rgb.convert("L")
    elif mode == "CMYK":
        img = rgb.convert("CMYK")
    elif mode == "P":
        img = rgb.convert("P", palette=Image.Palette.ADAPTIVE, colors=4)
    elif mode == "RGBA":
        img = rgb.convert("RGBA")
    else:
        img = Image.fromarray(np.full((H, W), 300, np.uint16))
    ext = "jpg" if mode == "CMYK" else "png"  # CMYK lives in JPEG files
    img.save(tmp_path / "train" / f"img.{ext}")
    data = json.loads((tmp_path / "annotations/instances_train.json").read_text())
    data["images"][0]["file_name"] = f"img.{ext}"
    (tmp_path / "annotations/instances_train.json").write_text(json.dumps(data))
    image = CocoDataset(tmp_path, "train")[0][0]
    assert image.shape == (3, H, W) and image.dtype == torch.float32
    assert 0 <= float(image.min()) and float(image.max()) <= 1
    if mode in ("P", "RGBA", "CMYK"):
        pixel = (image[:, 5, 5] * 255).round().tolist()
        tol = 4 if mode == "CMYK" else 0
        assert all(abs(a - b) <= tol for a, b in zip(pixel, (200, 100, 50))), pixel
    if mode == "L":
        assert torch.equal(image[0], image[1]) and torch.equal(image[1], image[2])


# --- targets -----------------------------------------------------------------------------------
def test_image_without_annotations_gives_empty_targets(tmp_path):
    write_folder(tmp_path, images=[image_entry(1), image_entry(2)], annotations=[ann(1)])
    image, target = CocoDataset(tmp_path, "train")[1]
    assert image.shape == (3, H, W)
    assert target["boxes"].shape == (0, 4) and target["boxes"].dtype == torch.float32
    assert target["masks"].shape == (0, H, W) and target["masks"].dtype == torch.uint8
    assert target["labels"].shape == (0,) and target["labels"].dtype == torch.int64
    assert target["iscrowd"].shape == (0,) and target["area"].shape == (0,)
    assert int(target["image_id"]) == 2


def test_polygon_and_both_rle_forms_decode(tmp_path):
    poly_mask, unc_mask, comp_mask = rect_mask(2, 3, 10, 8), rect_mask(15, 1, 6, 12), \
        rect_mask(20, 10, 9, 9)
    counts, flat, run, value = [], unc_mask.flatten(order="F"), 0, 0
    for v in flat:  # uncompressed RLE by hand: alternating runs of 0s and 1s, column-major
        if v != value:
            counts.append(run)
            run, value = 0, v
        run += 1
    counts.append(run)
    unc = {"size": [H, W], "counts": counts}
    comp = mask_utils.encode(np.asfortranarray(comp_mask))
    comp["counts"] = comp["counts"].decode("ascii")
    write_folder(tmp_path, annotations=[
        ann(1, bbox=(2, 3, 10, 8)),
        ann(2, bbox=(15, 1, 6, 12), segmentation=unc, category_id=2),
        ann(3, bbox=(20, 10, 9, 9), segmentation=comp, category_id=9)])
    target = CocoDataset(tmp_path, "train")[0][1]
    masks = target["masks"].numpy()
    assert masks.shape == (3, H, W)
    assert (masks[0] == poly_mask).all()
    assert (masks[1] == unc_mask).all()
    assert (masks[2] == comp_mask).all()
    assert target["boxes"].tolist() == [[2, 3, 12, 11], [15, 1, 21, 13], [20, 10, 29, 19]]
    assert target["labels"].tolist() == [1, 2, 3]  # cat, dog, bird in the JSON's order


def test_boxes_are_clipped_to_the_image(tmp_path):
    write_folder(tmp_path, annotations=[ann(1, bbox=(-2.5, 4, 10, 30))])
    target = CocoDataset(tmp_path, "train")[0][1]
    assert target["boxes"].tolist() == [[0, 4, 7.5, H]]


def test_degenerate_boxes_are_dropped_and_recorded(tmp_path):
    write_folder(tmp_path, annotations=[
        ann(1), ann(2, bbox=(5, 5, 0.5, 6)), ann(3, bbox=(5, 5, 6, 0.4)), ann(4, bbox=(W, 2, 5, 5)),
        ann(5, bbox=(1, 1, 1, 1))])
    ds = CocoDataset(tmp_path, "train")
    assert sorted(ds.dropped) == [2, 3, 4]
    assert "degenerate box 0.50 x 6.00 px (image id 1)" == ds.dropped[2]
    assert ds.load_target(0)["boxes"].tolist() == [[2, 3, 12, 11], [1, 1, 2, 2]]
    assert "3 dropped" in repr(ds)


def test_crowd_is_kept_and_flagged(tmp_path):
    crowd = mask_utils.encode(np.asfortranarray(rect_mask(0, 0, 5, 5)))
    crowd = {"size": [H, W], "counts": crowd["counts"].decode("ascii")}
    write_folder(tmp_path, annotations=[ann(1), ann(2, bbox=(0, 0, 5, 5), segmentation=crowd,
                                                      iscrowd=1)])
    target = CocoDataset(tmp_path, "train")[0][1]
    assert target["iscrowd"].tolist() == [0, 1]
    assert target["masks"][1].sum() == 25


def test_category_filter_gives_contiguous_labels(tmp_path):
    write_folder(tmp_path, images=[image_entry(1), image_entry(2)], annotations=[
        ann(1, category_id=5), ann(2, category_id=2), ann(3, category_id=9),
        ann(4, image_id=2, category_id=2)])
    ds = CocoDataset(tmp_path, "train", categories=["bird", 5])  # names and ids both work
    assert ds.num_classes == 2
    assert ds.class_names == ["__background__", "cat", "bird"]  # JSON order, not argument order
    assert ds.label_to_cat_id == {1: 5, 2: 9} and ds.cat_id_to_label == {5: 1, 9: 2}
    assert ds.load_target(0)["labels"].tolist() == [1, 2]
    assert len(ds) == 2 and ds.load_target(1)["labels"].tolist() == []  # image kept, empty
    assert not ds.dropped  # left-out categories are not drops


def test_indices_with_instances_skips_empty_crowd_only_and_left_out(tmp_path):
    crowd = mask_utils.encode(np.asfortranarray(rect_mask(0, 0, 5, 5)))
    crowd = {"size": [H, W], "counts": crowd["counts"].decode("ascii")}
    write_folder(tmp_path, images=[image_entry(i) for i in (1, 2, 3, 4)], annotations=[
        ann(1, image_id=1, category_id=5),  # a cat: kept
        ann(2, image_id=2, bbox=(0, 0, 5, 5), segmentation=crowd, iscrowd=1),  # crowd only
        ann(3, image_id=3, category_id=2)])  # a dog, left out below; image 4 has nothing
    assert CocoDataset(tmp_path, "train").indices_with_instances() == [0, 2]
    assert CocoDataset(tmp_path, "train", categories=["cat"]).indices_with_instances() == [0]


def test_transforms_and_collate(tmp_path):
    write_folder(tmp_path, images=[image_entry(1), image_entry(2, 10, 12)], annotations=[ann(1)])

    def flip(image, target):
        return image.flip(-1), dict(target, flipped=True)

    ds = CocoDataset(tmp_path, "train", transforms=flip)
    images, targets = collate([ds[0], ds[1]])
    assert [im.shape for im in images] == [(3, H, W), (3, 10, 12)]
    assert all(t["flipped"] for t in targets)
    assert collate([]) == ([], [])
