"""A seeded synthetic dataset of squares, circles and triangles in the COCO layout (lesson 00).

    make_shapes_dataset(root, num_images=64, seed=0, image_size=(128, 128), splits=None, ...)

writes

    root/annotations/instances_{split}.json     COCO instances format, keys sorted
    root/{split}/{image_id:06d}.png             RGB images, H x W = image_size

so `CocoDataset(root, split)` and everything after it read it exactly like real COCO. Categories:
1 "square", 2 "circle", 3 "triangle" (labels 1..3 after CocoDataset's mapping, in that order).

How an image is drawn (all with numpy; one np.random.Generator per split, seeded from
(seed, crc32(split name)), so a split's files do not depend on which other splits are written):

    background  a smooth random colour field (a 5 x 5 grid of dark colours, bilinearly
                upsampled) plus per-pixel noise: a textured background, never a flat one
    objects     min_objects..max_objects shapes (none at all with probability empty_prob);
                size (side or diameter) uniform in size_range pixels, whole inside the image;
                a bright random colour with a little per-pixel noise; drawn one after another,
                later shapes in front
    overlap     a new shape may hide at most max_overlap of the visible pixels of any shape
                already drawn (0: shapes never overlap); a placement that breaks this is
                re-drawn, and after 50 tries the shape is left out

Masks are the *visible* pixels, as in COCO. Storage exercises both of CocoDataset's decode paths:
a square or triangle that nothing hides is a polygon (its corners; the pixels painted are exactly
pycocotools' rasterisation of that polygon), a circle is a compressed RLE, and a shape partly
hidden by a later one is a compressed RLE of its visible part. `bbox` is the tight box of the
mask (x, y, w, h with w = last column + 1 - first column) and `area` its pixel count, both
computed by pycocotools from the stored segmentation, so they agree with the decoded mask exactly.

The same arguments give byte-identical files: only integer and IEEE-exact float arithmetic
(+, -, *, /, sqrt) is used, PNGs are written by PIL with fixed settings and no metadata, JSON
with sorted keys. The first n images of a split do not depend on how many follow, so a train
split of 64 images is the first 64 of one of 1024.

The `shapes` training preset (`python -m mrcnn_edu train --preset shapes`) reads its data from
`ensure_shapes_dataset(root, train_split, val_split)`, which writes PRESET_SPLIT_SIZES images
with seed PRESET_DATA_SEED there when a split is missing and otherwise leaves the folder alone.
"""
import json
import zlib
from pathlib import Path

import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils

CATEGORIES = ({"id": 1, "name": "square", "supercategory": "shape"},
              {"id": 2, "name": "circle", "supercategory": "shape"},
              {"id": 3, "name": "triangle", "supercategory": "shape"})
MAX_TRIES = 50  # placements tried per shape before it is left out
PNG_SETTINGS = {"format": "PNG", "compress_level": 6, "optimize": False}
# The `shapes` preset's data: training images, and validation images the model never sees.
PRESET_SPLIT_SIZES = {"train": 256, "val": 200}
PRESET_DATA_SEED = 0  # the data's seed; the preset's Config.seed seeds the training


def make_shapes_dataset(root, num_images=64, seed=0, image_size=(128, 128), splits=None,
                        min_objects=1, max_objects=3, size_range=(16, 48), max_overlap=0.25,
                        empty_prob=0.05):
    """Write a seeded synthetic COCO-format dataset under `root` and return `root` as a Path.

    splits: {split name: number of images}; default {"train2017": num_images,
        "val2017": max(1, num_images // 4)} (num_images is ignored when splits is given).
    image_size: (H, W) of every image.
    min_objects, max_objects: objects per non-empty image, uniform in [min, max] (inclusive);
        fewer when a shape finds no place (see max_overlap).
    size_range: (smallest, largest) side or diameter in pixels, inclusive.
    max_overlap: in [0, 1); the largest fraction of an earlier shape's visible pixels a later
        shape may cover. 0 keeps every shape whole.
    empty_prob: probability that an image has no objects at all (COCO has such images too).
        With empty_prob=0 and min_objects >= 1 every image has at least one object (the first
        shape always fits, and max_overlap < 1 keeps part of every shape visible).

    Existing files of the same names are overwritten; nothing else under root is touched.
    """
    height, width = (int(v) for v in image_size)
    lo, hi = (int(v) for v in size_range)
    if not 2 <= lo <= hi <= min(height, width):
        raise ValueError(f"size_range must satisfy 2 <= min <= max <= min(H, W) = "
                         f"{min(height, width)}, got {tuple(size_range)}")
    if not 0 <= min_objects <= max_objects:
        raise ValueError(f"need 0 <= min_objects <= max_objects, got {min_objects}, {max_objects}")
    if not 0 <= max_overlap < 1:
        raise ValueError(f"max_overlap must be in [0, 1), got {max_overlap}")
    if not 0 <= empty_prob <= 1:
        raise ValueError(f"empty_prob must be in [0, 1], got {empty_prob}")
    if splits is None:
        splits = {"train2017": num_images, "val2017": max(1, num_images // 4)}
    root = Path(root)
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    for split, n in splits.items():
        rng = np.random.default_rng([int(seed), zlib.crc32(split.encode("utf-8"))])
        (root / split).mkdir(parents=True, exist_ok=True)
        images, annotations = [], []
        for image_id in range(1, int(n) + 1):
            pixels, objects = draw_image(rng, height, width, min_objects, max_objects,
                                         (lo, hi), max_overlap, empty_prob)
            file_name = f"{image_id:06d}.png"
            Image.fromarray(pixels).save(root / split / file_name, **PNG_SETTINGS)
            images.append({"id": image_id, "file_name": file_name, "height": height,
                           "width": width, "license": 0})
            for category_id, segmentation in objects:
                annotations.append(annotation(len(annotations) + 1, image_id, category_id,
                                              segmentation, height, width))
        coco = {"info": {"description": f"mrcnn_edu synthetic shapes, seed {seed}, split {split}",
                         "version": "1"},
                "licenses": [{"id": 0, "name": "generated by mrcnn_edu", "url": ""}],
                "images": images, "annotations": annotations, "categories": list(CATEGORIES)}
        text = json.dumps(coco, sort_keys=True, separators=(",", ":"))
        (root / "annotations" / f"instances_{split}.json").write_text(text, encoding="utf-8")
    return root


def ensure_shapes_dataset(root, train_split="train2017", val_split="val2017",
                          sizes=None, seed=PRESET_DATA_SEED, log=None):
    """The data folder of the `shapes` preset: `root` as a Path, the dataset written there first
    when the annotation file of either split is missing (default sizes PRESET_SPLIT_SIZES,
    {"train": n, "val": n}; 128 x 128 images; the other settings are make_shapes_dataset's).

    A split's JSON is written after its images, so a folder with both JSON files is complete;
    an interrupted one is written again (same files, same bytes). log: called with one line
    before generating (e.g. print), or None.
    """
    root = Path(root)
    sizes = {**PRESET_SPLIT_SIZES, **(sizes or {})}
    splits = {train_split: sizes["train"], val_split: sizes["val"]}
    missing = [s for s in splits if not (root / "annotations" / f"instances_{s}.json").is_file()]
    if missing:
        if log is not None:
            log(f"writing the shapes dataset to {root} (seed {seed}: "
                + ", ".join(f"{n} {s} images" for s, n in splits.items()) + ")")
        make_shapes_dataset(root, seed=seed, splits=splits)
    return root


def annotation(ann_id, image_id, category_id, segmentation, height, width):
    """One COCO annotation; bbox and area measured by pycocotools on the segmentation itself."""
    rle = to_rle(segmentation, height, width)
    return {"id": ann_id, "image_id": image_id, "category_id": category_id,
            "segmentation": segmentation, "iscrowd": 0,
            "bbox": [float(v) for v in mask_utils.toBbox(rle)],
            "area": float(mask_utils.area(rle))}


def to_rle(segmentation, height, width):
    """Polygons (list) or compressed RLE (dict, str counts) -> one pycocotools RLE."""
    if isinstance(segmentation, list):
        return mask_utils.merge(mask_utils.frPyObjects(segmentation, height, width))
    return {"size": segmentation["size"], "counts": segmentation["counts"].encode("ascii")}


def encode_rle(mask):
    """(H, W) bool mask -> compressed RLE with str counts (JSON-ready)."""
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")}


# --- drawing ------------------------------------------------------------------------------------
def draw_image(rng, height, width, min_objects, max_objects, size_range, max_overlap, empty_prob):
    """One image: uint8 (H, W, 3) pixels and [(category_id, segmentation), ...] front to back."""
    pixels = textured_background(rng, height, width)  # (H, W, 3) float
    num = 0 if rng.random() < empty_prob else int(rng.integers(min_objects, max_objects + 1))
    shapes = []  # [category_id, full (H, W) bool mask, visible (H, W) bool mask, polygon or None]
    for _ in range(num):
        category_id = int(rng.integers(1, 4))
        for _ in range(MAX_TRIES):
            side = int(rng.integers(size_range[0], size_range[1] + 1))
            x, y = int(rng.integers(0, width - side + 1)), int(rng.integers(0, height - side + 1))
            mask, polygon = shape_mask(category_id, x, y, side, height, width, rng)
            if all((s[2] & mask).sum() <= max_overlap * s[2].sum() for s in shapes):
                break
        else:
            continue  # no room: leave this shape out
        colour = rng.integers(130, 256, 3).astype(np.float64)  # bright on a dark background
        noise = rng.integers(-12, 13, (height, width, 3))
        pixels[mask] = (colour + noise)[mask]
        for s in shapes:
            s[2] &= ~mask  # what the new shape hides is no longer visible
        shapes.append([category_id, mask, mask.copy(), polygon])
    objects = []
    for category_id, full, visible, polygon in shapes:
        if not visible.any():
            continue  # cannot happen with max_overlap < 1, kept as a guard
        whole = polygon is not None and bool((visible == full).all())
        objects.append((category_id, [polygon] if whole else encode_rle(visible)))
    return np.clip(np.rint(pixels), 0, 255).astype(np.uint8), objects


def textured_background(rng, height, width):
    """(H, W, 3) float: a 5 x 5 grid of dark colours bilinearly upsampled, plus pixel noise."""
    grid = rng.integers(0, 100, (5, 5, 3)).astype(np.float64)  # (5, 5, 3)
    ys = (np.arange(height) + 0.5) * (4 / height)  # pixel centres in grid units, in [0, 4)
    xs = (np.arange(width) + 0.5) * (4 / width)
    y0, x0 = ys.astype(np.int64), xs.astype(np.int64)  # (H,), (W,)
    fy, fx = (ys - y0)[:, None, None], (xs - x0)[None, :, None]  # (H, 1, 1), (1, W, 1)
    top = grid[y0][:, x0] * (1 - fx) + grid[y0][:, x0 + 1] * fx  # (H, W, 3)
    bottom = grid[y0 + 1][:, x0] * (1 - fx) + grid[y0 + 1][:, x0 + 1] * fx
    smooth = top * (1 - fy) + bottom * fy
    return smooth + rng.integers(-15, 16, (height, width, 3))


def shape_mask(category_id, x, y, side, height, width, rng):
    """(H, W) bool mask of one shape in the square (x, y, side), and its polygon (None: circle).

    Squares and triangles are rasterised by pycocotools from their polygon, so the mask equals
    what decoding the stored polygon gives. A circle holds the pixels whose centre
    (j + 0.5, i + 0.5) lies within side / 2 of the square's centre.
    """
    if category_id == 2:
        r = side / 2
        cy, cx = y + r, x + r
        ii, jj = np.arange(height)[:, None] + 0.5, np.arange(width)[None, :] + 0.5
        return (jj - cx) ** 2 + (ii - cy) ** 2 <= r * r, None
    x2, y2 = x + side, y + side
    if category_id == 1:
        polygon = [x, y, x2, y, x2, y2, x, y2]
    else:  # a triangle pointing up, right, down or left
        mid = side / 2
        polygon = [[x, y2, x2, y2, x + mid, y],
                   [x, y, x, y2, x2, y + mid],
                   [x, y, x2, y, x + mid, y2],
                   [x2, y, x2, y2, x, y + mid]][int(rng.integers(0, 4))]
    polygon = [float(v) for v in polygon]
    mask = mask_utils.decode(to_rle([polygon], height, width)).astype(bool)  # (H, W)
    return mask, polygon
