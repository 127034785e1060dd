"""Issue 13, data side: bad COCO input is a CocoFormatError naming the file and the record;
16-bit images keep their levels; the subset tool refuses nonsense and reports orphans; training
resizes masks with the image before the batch is built.
"""
import dataclasses
import json
import math

import numpy as np
import pytest
import torch
from PIL import Image

from mrcnn_edu.config import preset
from mrcnn_edu.data import CocoDataset, CocoFormatError
from mrcnn_edu.data.coco import validate_coco_dict
from mrcnn_edu.data.subset import make_subset
from mrcnn_edu.data.__main__ import main as data_main
from tests.test_data_coco import H, W, ann, image_entry, write_folder

pytestmark = pytest.mark.filterwarnings(
    "ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning")

ANN_FILE = "instances_train.json"


def load(tmp_path, **kwargs):
    return CocoDataset(write_folder(tmp_path, **kwargs), "train")


# --- 3: 16-bit images -------------------------------------------------------------------------
@pytest.mark.parametrize("dtype, mode", [(np.uint16, "I;16"), (np.int32, "I")])
def test_16_bit_png_keeps_its_level_in_dataset_and_predict(tmp_path, dtype, mode):
    from mrcnn_edu.data.coco import read_image
    from mrcnn_edu.engine.predict import load_image
    write_folder(tmp_path, write_images=False)
    levels = np.array([[0, 1000, 30000, 65535]], dtype).repeat(H, 0).repeat(W // 4 + 1, 1)[:, :W]
    img = Image.fromarray(levels.astype(dtype))
    assert img.mode == mode
    # Pillow writes mode I only as TIFF; the name stays .png (PIL reads the format from the bytes)
    img.save(tmp_path / "train" / "0001.png", format="PNG" if mode == "I;16" else "TIFF")
    expected = torch.from_numpy(levels.astype(np.float32) / 65535)  # (H, W)
    for image in (CocoDataset(tmp_path, "train")[0][0], load_image(tmp_path / "train/0001.png"),
                  read_image(tmp_path / "train/0001.png")):
        assert image.shape == (3, H, W) and image.dtype == torch.float32
        for c in range(3):  # gray: the same level in R, G and B, to 1/255
            assert torch.allclose(image[c], expected, atol=1 / 255), image[c, 0, :8]


def test_8_bit_images_are_unchanged_by_the_16_bit_path(tmp_path):
    from mrcnn_edu.data.coco import read_image
    pixels = np.random.default_rng(0).integers(0, 256, (H, W, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(tmp_path / "rgb.png")
    got = read_image(tmp_path / "rgb.png")
    assert torch.equal(got, torch.from_numpy(pixels).permute(2, 0, 1).float() / 255)


# --- 4: non-finite and non-positive boxes -------------------------------------------------------
@pytest.mark.parametrize("bbox", [(2, 3, math.nan, 8), (math.inf, 3, 10, 8), (2, -math.inf, 10, 8),
                                  (2, 3, 0, 8), (2, 3, 10, -1)])
def test_bad_bbox_is_an_error_naming_file_and_annotation(tmp_path, bbox):
    with pytest.raises(CocoFormatError, match=rf"{ANN_FILE}: annotation id 7: field 'bbox'"):
        load(tmp_path, annotations=[ann(1), ann(7, bbox=bbox)])


def test_dropped_boxes_are_summarised_with_the_file(tmp_path):
    ds = load(tmp_path, annotations=[ann(1), ann(2, bbox=(5, 5, 0.5, 6)),
                                     ann(4, bbox=(W, 2, 5, 5))])
    summary = ds.dropped_summary()
    assert "2 annotations" in summary and ANN_FILE in summary and "ids 2, 4" in summary
    assert CocoDataset(write_folder(tmp_path / "clean", annotations=[ann(1)]),
                       "train").dropped_summary() is None


def test_train_reports_the_dropped_boxes(tmp_path, capsys):
    from mrcnn_edu.engine.train import train
    root = write_folder(tmp_path / "d", split="train2017",
                        annotations=[ann(1), ann(2, bbox=(5, 5, 0.5, 6))])
    cfg = dataclasses.replace(preset("tiny"), max_iters=1, batch_size=1, warmup_iters=1,
                              lr_steps=(10,), min_size=32, max_size=64, hflip_prob=0.0)
    train(cfg, root, tmp_path / "run", device="cpu", progress=False, evaluate_after=False)
    err = capsys.readouterr().err
    assert "1 annotation" in err and "instances_train2017.json" in err and "ids 2" in err


# --- 9: bad image records -----------------------------------------------------------------------
@pytest.mark.parametrize("field, value", [("height", "20"), ("width", None), ("height", 0),
                                          ("width", 2.5)])
def test_bad_image_size_names_file_and_field(tmp_path, field, value):
    image = {**image_entry(1), field: value}
    with pytest.raises(CocoFormatError, match=rf"{ANN_FILE}: image id 1: field '{field}'"):
        load(tmp_path, images=[image], write_images=False)


@pytest.mark.parametrize("image_id", ["1", 1.5, None, True])
def test_non_integer_image_id_names_the_file(tmp_path, image_id):
    image = {**image_entry(1), "id": image_id}
    with pytest.raises(CocoFormatError, match=rf"{ANN_FILE}: image .*field 'id'"):
        load(tmp_path, images=[image], annotations=[ann(1, image_id=image_id)], write_images=False)


@pytest.mark.parametrize("name", ["../0001.png", "a/../../0001.png", "/etc/passwd", "",
                                  "C:\\x.png", 5])
def test_file_name_outside_the_split_folder_is_refused(tmp_path, name):
    (tmp_path / "0001.png").write_bytes(b"")  # a file the escape would reach
    image = {**image_entry(1), "file_name": name}
    with pytest.raises(CocoFormatError, match=rf"{ANN_FILE}: image id 1: field 'file_name'"):
        load(tmp_path, images=[image], write_images=False)


def test_file_name_in_a_subfolder_is_fine(tmp_path):
    write_folder(tmp_path, write_images=False)
    (tmp_path / "train" / "sub").mkdir()
    Image.new("RGB", (W, H)).save(tmp_path / "train" / "sub" / "a.png")
    data = json.loads((tmp_path / "annotations" / ANN_FILE).read_text())
    data["images"][0]["file_name"] = "sub/a.png"
    (tmp_path / "annotations" / ANN_FILE).write_text(json.dumps(data))
    assert CocoDataset(tmp_path, "train")[0][0].shape == (3, H, W)


# --- 10: RLE counts -----------------------------------------------------------------------------
def test_rle_string_counts_match_pycocotools():
    from pycocotools import mask as mask_utils

    from mrcnn_edu.data.validate import rle_string_counts
    mask = np.zeros((H, W), np.uint8, order="F")
    mask[3:9, 4:17] = 1
    mask[12:15, 1:29] = 1
    rle = mask_utils.encode(mask)
    counts = rle_string_counts(rle["counts"].decode())
    assert sum(counts) == H * W and all(c >= 0 for c in counts)
    column_major = mask.flatten(order="F").astype(int)
    runs = np.diff(np.flatnonzero(np.diff(np.r_[-1, column_major, -1])))
    assert column_major[0] == 0 and counts == runs.tolist()  # 0s, 1s, 0s, ... column by column


@pytest.mark.parametrize("counts", ["garbage!!", "zz~~", "0", "PPYo1", [10, -4, H * W - 6],
                                    [H * W - 2.5, 2.5], ["a"]])
def test_garbage_rle_counts_are_caught_by_validation(tmp_path, counts):
    segm = {"size": [H, W], "counts": counts}
    where = rf"{ANN_FILE}: annotation id 3: field 'segmentation'"
    with pytest.raises(CocoFormatError, match=where):
        load(tmp_path, annotations=[ann(3, segmentation=segm, iscrowd=1)])


def test_good_compressed_rle_passes_validation():
    from pycocotools import mask as mask_utils
    mask = np.zeros((H, W), np.uint8, order="F")
    mask[2:5, 3:9] = 1
    counts = mask_utils.encode(mask)["counts"].decode()
    validate_coco_dict({"images": [image_entry(1)], "categories": [{"id": 5, "name": "cat"}],
                        "annotations": [ann(1, segmentation={"size": [H, W], "counts": counts})]})


# --- 11: the subset tool ------------------------------------------------------------------------
def official(tmp_path):
    images = [image_entry(i) for i in (1, 2, 3)]
    anns = [ann(10 + i, image_id=i) for i in (1, 2, 3)] + [ann(98, image_id=41),
                                                           ann(99, image_id=42)]
    path = tmp_path / "official.json"
    path.write_text(json.dumps({"images": images, "annotations": anns,
                                "categories": [{"id": 5, "name": "cat"}]}))
    src = tmp_path / "src"
    src.mkdir()
    for img in images:
        Image.new("RGB", (W, H)).save(src / img["file_name"])
    return path, src


@pytest.mark.parametrize("n", [-3, 0])
def test_subset_refuses_a_non_positive_image_count(tmp_path, capsys, n):
    path, src = official(tmp_path)
    assert data_main(["subset", "--annotations", str(path), "--out", str(tmp_path / "out"),
                      "--images", str(src), "--num-images", str(n)]) == 1
    assert "--num-images" in capsys.readouterr().err
    assert not (tmp_path / "out" / "train2017").exists()
    with pytest.raises(ValueError, match="num_images"):
        make_subset(path, tmp_path / "out", num_images=n, images_dir=src, progress=False)


def test_subset_reports_annotations_of_unknown_images(tmp_path, capsys):
    path, src = official(tmp_path)
    make_subset(path, tmp_path / "out", num_images=2, images_dir=src, progress=False)
    err = capsys.readouterr().err
    assert "2 annotations" in err and "official.json" in err and "41, 42" in err


# --- 14: masks are resized with the image before the batch ------------------------------------
def test_training_masks_reach_the_model_at_its_input_size(tmp_path, monkeypatch):
    from mrcnn_edu.model.transforms import BatchTransform
    from mrcnn_edu.engine.train import train
    h, w = 300, 400  # tiny at min_size 64 -> 64 x 85
    root = write_folder(tmp_path / "d", split="train2017", images=[image_entry(1, h, w)],
                        annotations=[ann(1, bbox=(20, 30, 100, 80))])
    seen = []
    original = BatchTransform.forward

    def spy(self, images, targets=None):
        if targets is not None:
            seen.extend((tuple(im.shape[-2:]), tuple(t["masks"].shape[-2:]))
                        for im, t in zip(images, targets))
        return original(self, images, targets)

    monkeypatch.setattr(BatchTransform, "forward", spy)
    cfg = dataclasses.replace(preset("tiny"), max_iters=1, batch_size=1, warmup_iters=1,
                              lr_steps=(10,), min_size=64, max_size=128, hflip_prob=0.0)
    train(cfg, root, tmp_path / "run", device="cpu", progress=False, evaluate_after=False)
    assert seen == [((64, 85), (64, 85))]


def test_resizing_in_the_dataset_gives_the_targets_of_the_model_resize():
    from mrcnn_edu.model.transforms import BatchTransform, ResizeToInput
    g = torch.Generator().manual_seed(0)
    image = torch.rand(3, 301, 403, generator=g)
    masks = (torch.rand(2, 301, 403, generator=g) > 0.5).to(torch.uint8)
    target = {"boxes": torch.tensor([[10.0, 20, 200, 150], [0, 0, 403, 301]]),
              "labels": torch.tensor([1, 2]), "masks": masks,
              "iscrowd": torch.tensor([0, 0]), "area": torch.tensor([1.0, 2.0])}
    bt = BatchTransform(96, 160, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    batch_ref, sizes_ref, t_ref = bt([image], [target])
    small_image, small_target = ResizeToInput(96, 160)(image, target)
    assert small_image.shape == (3, 96, 129) and small_target["area"] is target["area"]
    batch, sizes, t = bt([small_image], [small_target])
    assert sizes == sizes_ref
    assert torch.equal(t[0]["masks"], t_ref[0]["masks"])
    assert torch.allclose(t[0]["boxes"], t_ref[0]["boxes"])
    assert torch.allclose(batch, batch_ref, atol=1e-5)
