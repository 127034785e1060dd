"""CocoDataset: COCO instance annotations as (image, target) pairs for Mask R-CNN (lesson 00).

Shape legend: N instances in one image, H x W image size, K classes (labels 1..K, 0 = background).

    image               float32 (3, H, W) in [0, 1], RGB
    target["boxes"]     float32 (N, 4)    (x1, y1, x2, y2) pixels, width = x2 - x1
    target["labels"]    int64   (N,)      1..K, contiguous over the kept categories
    target["masks"]     uint8   (N, H, W) 0/1
    target["iscrowd"]   int64   (N,)      1 = crowd region (kept, flagged; evaluation ignores it)
    target["area"]      float32 (N,)      the annotation's `area` (the mask's pixel count, as
                                          measured by COCO; not recomputed)
    target["image_id"]  int64   ()        the COCO image id

COCO stores boxes as (x, y, w, h); we convert once, here, and use xyxy everywhere else.
Bad input raises CocoFormatError (or FileNotFoundError) naming the file and the id and field;
nothing is skipped silently. The one thing we do drop, boxes under 1 px wide or high, is
recorded in `dataset.dropped` so counts can be reconciled with the JSON.
"""
import contextlib
import io
import json
import numbers
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

MIN_BOX_SIZE = 1.0  # boxes narrower or lower than this (pixels) are dropped and recorded
IMAGE_FIELDS = ("id", "file_name", "height", "width")
ANNOTATION_FIELDS = ("id", "image_id", "category_id", "bbox", "segmentation", "area", "iscrowd")


class CocoFormatError(ValueError):
    """A COCO file or image that does not follow the format; the message names file, id, field."""


class CocoDataset(torch.utils.data.Dataset):
    """Images and instance targets of `root/annotations/instances_{split}.json` + `root/{split}/`.

    transforms: optional callable (image, target) -> (image, target), applied last.
    categories: optional list of category names or COCO ids to keep; labels are then 1..K over
        the kept categories in the JSON's category order. Images whose annotations are all of
        other categories stay in the dataset with empty targets.

    Attributes: num_classes (K), class_names (index 0 = "__background__"), label_to_cat_id,
    cat_id_to_label, image_ids (the COCO ids, in the JSON's image order), coco (the pycocotools
    COCO object, for evaluation), dropped ({annotation id: reason} for degenerate boxes).
    """

    def __init__(self, root, split="train2017", transforms=None, categories=None):
        self.root = Path(root)
        self.split = split
        self.transforms = transforms
        self.ann_file = self.root / "annotations" / f"instances_{split}.json"
        self.image_dir = self.root / split
        self.coco = load_coco(self.ann_file)
        self._set_categories(categories)
        self.image_ids = [int(img["id"]) for img in self.coco.dataset["images"]]
        self._check_image_files()
        self._ann_ids, self.dropped = self._select_annotations()

    # --- construction -------------------------------------------------------------------------
    def _set_categories(self, categories):
        cats = self.coco.dataset["categories"]  # JSON order defines the label order
        if categories is not None:
            by_name = {c["name"]: c for c in cats}
            by_id = {c["id"]: c for c in cats}
            wanted = set()
            for c in categories:
                found = by_id.get(c) if isinstance(c, numbers.Integral) else by_name.get(c)
                if found is None:
                    raise ValueError(f"{self.ann_file}: unknown category {c!r}; "
                                     f"known: {sorted(by_name)}")
                wanted.add(found["id"])
            cats = [c for c in cats if c["id"] in wanted]
        self.label_to_cat_id = {i + 1: int(c["id"]) for i, c in enumerate(cats)}
        self.cat_id_to_label = {cat_id: label for label, cat_id in self.label_to_cat_id.items()}
        self.class_names = ["__background__"] + [c["name"] for c in cats]
        self.num_classes = len(cats)

    def _check_image_files(self):
        for img in self.coco.dataset["images"]:
            path = self.image_dir / img["file_name"]
            if not path.is_file():
                raise FileNotFoundError(f"image file not found: {path} (image id {img['id']}, "
                                        f"listed in {self.ann_file})")

    def _select_annotations(self):
        """Per image, the annotation ids we keep; and {ann id: reason} for the dropped ones."""
        kept, dropped = {}, {}
        for image_id in self.image_ids:
            info = self.coco.imgs[image_id]
            ids = []
            for ann_id in self.coco.getAnnIds(imgIds=[image_id]):
                ann = self.coco.anns[ann_id]
                if ann["category_id"] not in self.cat_id_to_label:
                    continue  # a category the user chose to leave out, not a drop
                x1, y1, x2, y2 = _clipped_xyxy(ann["bbox"], info["height"], info["width"])
                if x2 - x1 < MIN_BOX_SIZE or y2 - y1 < MIN_BOX_SIZE:
                    dropped[ann_id] = (f"degenerate box {x2 - x1:.2f} x {y2 - y1:.2f} px "
                                       f"(image id {image_id})")
                    continue
                ids.append(ann_id)
            kept[image_id] = ids
        return kept, dropped

    # --- access -------------------------------------------------------------------------------
    def __len__(self):
        return len(self.image_ids)

    def __getitem__(self, i):
        image = self.load_image(i)
        target = self.load_target(i)
        if self.transforms is not None:
            image, target = self.transforms(image, target)
        return image, target

    def indices_with_instances(self):
        """Indices of the images with at least one kept, non-crowd instance (no pixels read).

        The others have nothing to learn but "background everywhere"; torchvision's reference
        training leaves them out too (Config.skip_images_without_instances).
        """
        return [i for i, image_id in enumerate(self.image_ids)
                if any(not self.coco.anns[a]["iscrowd"] for a in self._ann_ids[image_id])]

    def image_info(self, i):
        """{"id", "file_name", "path", "height", "width"} of image i (no pixels are read)."""
        info = self.coco.imgs[self.image_ids[i]]
        return {"id": int(info["id"]), "file_name": info["file_name"],
                "path": self.image_dir / info["file_name"],
                "height": int(info["height"]), "width": int(info["width"])}

    def load_image(self, i):
        """Image i as float32 (3, H, W) in [0, 1]; grayscale, CMYK and palette become RGB."""
        info = self.image_info(i)
        pixels = read_rgb(info["path"], info["id"])  # (H, W, 3) uint8
        if pixels.shape[:2] != (info["height"], info["width"]):
            raise CocoFormatError(
                f"{info['path']}: image id {info['id']} decodes to {pixels.shape[0]} x "
                f"{pixels.shape[1]} (H x W) but {self.ann_file} says {info['height']} x "
                f"{info['width']} (fields 'height', 'width')")
        # numpy, not torch: single-threaded and ~100x faster here when the cores are busy
        # (torch's thread pool spins); bit-identical to torch's .float().div_(255)
        chw = np.divide(pixels.transpose(2, 0, 1), np.float32(255), dtype=np.float32, order="C")
        return torch.from_numpy(chw)  # (3, H, W)

    def load_target(self, i):
        """The target dict of image i (see the module docstring), without reading the pixels."""
        info = self.image_info(i)
        anns = [self.coco.anns[a] for a in self._ann_ids[info["id"]]]
        h, w = info["height"], info["width"]
        boxes = np.array([_clipped_xyxy(a["bbox"], h, w) for a in anns],
                         dtype=np.float32).reshape(-1, 4)  # (N, 4)
        return {
            "boxes": torch.from_numpy(boxes),
            "labels": torch.tensor([self.cat_id_to_label[a["category_id"]] for a in anns],
                                   dtype=torch.int64),  # (N,)
            "masks": torch.from_numpy(self._decode_masks(anns, h, w)),  # (N, H, W)
            "iscrowd": torch.tensor([int(a["iscrowd"]) for a in anns], dtype=torch.int64),
            "area": torch.tensor([float(a["area"]) for a in anns], dtype=torch.float32),
            "image_id": torch.tensor(info["id"], dtype=torch.int64),
        }

    def _decode_masks(self, anns, h, w):
        if not anns:
            return np.zeros((0, h, w), dtype=np.uint8)
        rles = [self.coco.annToRLE(a) for a in anns]  # polygons and both RLE forms -> RLE
        masks = mask_utils.decode(rles)  # (H, W, N), Fortran order
        return np.ascontiguousarray(masks.transpose(2, 0, 1))  # (N, H, W)

    def __repr__(self):
        return (f"CocoDataset({str(self.root)!r}, split={self.split!r}): {len(self)} images, "
                f"{sum(map(len, self._ann_ids.values()))} instances, {self.num_classes} classes, "
                f"{len(self.dropped)} dropped")


def collate(batch):
    """[(image, target), ...] -> ([image, ...], [target, ...]); images keep their own sizes."""
    images, targets = zip(*batch) if batch else ((), ())
    return list(images), list(targets)


def read_rgb(path, image_id=None):
    """Decode an image file to uint8 (H, W, 3) RGB; a truncated or unreadable file is an error."""
    where = f" (image id {image_id})" if image_id is not None else ""
    try:
        with Image.open(path) as img:
            img.load()  # PIL decodes lazily: force it here so truncation surfaces here
            # P with transparency goes through RGBA so the palette's alpha is handled by PIL
            if img.mode == "P" and "transparency" in img.info:
                img = img.convert("RGBA")
            return np.array(img.convert("RGB"))  # a writable copy, so torch may share it
    except FileNotFoundError:
        raise FileNotFoundError(f"image file not found: {path}{where}") from None
    except (OSError, SyntaxError, ValueError) as err:  # PIL's errors for truncated/corrupt data
        raise CocoFormatError(f"{path}: cannot decode image{where}: {err}") from err


def _clipped_xyxy(bbox, height, width):
    """COCO (x, y, w, h) -> (x1, y1, x2, y2) clipped to the image (COCO boxes may overhang)."""
    x, y, bw, bh = (float(v) for v in bbox)
    return (min(max(x, 0.0), width), min(max(y, 0.0), height),
            min(max(x + bw, 0.0), width), min(max(y + bh, 0.0), height))


# --- reading and checking the JSON ------------------------------------------------------------
def load_coco(ann_file):
    """Read and validate a COCO instances JSON; return a pycocotools COCO object.

    We read the JSON ourselves (pycocotools' loader prints timings and fails with bare
    KeyErrors) and check every field we rely on before building the index.
    """
    ann_file = Path(ann_file)
    if not ann_file.is_file():
        raise FileNotFoundError(f"annotation file not found: {ann_file}\n"
                                "(expected DIR/annotations/instances_{split}.json)")
    try:
        with open(ann_file, "rb") as f:
            dataset = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CocoFormatError(f"{ann_file}: not valid JSON: {err}") from err
    validate_coco_dict(dataset, ann_file)
    coco = COCO()
    coco.dataset = dataset
    with contextlib.redirect_stdout(io.StringIO()):  # createIndex prints progress
        coco.createIndex()
    return coco


def validate_coco_dict(dataset, ann_file="<dict>"):
    """Raise CocoFormatError at the first field that breaks the instances format."""
    if not isinstance(dataset, dict):
        raise CocoFormatError(f"{ann_file}: top level must be a JSON object, "
                              f"got {type(dataset).__name__}")
    for key in ("images", "annotations", "categories"):
        if not isinstance(dataset.get(key), list):
            raise CocoFormatError(f"{ann_file}: missing or non-list top-level field {key!r}")
    cat_ids = _check_unique(dataset["categories"], ("id", "name"), "category", ann_file)
    images = {}
    for img in dataset["images"]:
        _check_fields(img, IMAGE_FIELDS, "image", ann_file)
        if img["id"] in images:
            raise CocoFormatError(f"{ann_file}: image id {img['id']} appears twice in 'images'")
        images[img["id"]] = img
    ann_ids = set()
    for ann in dataset["annotations"]:
        _check_annotation(ann, images, cat_ids, ann_file)
        if ann["id"] in ann_ids:
            raise CocoFormatError(f"{ann_file}: annotation id {ann['id']} appears twice")
        ann_ids.add(ann["id"])


def _check_unique(records, fields, kind, ann_file):
    ids = set()
    for rec in records:
        _check_fields(rec, fields, kind, ann_file)
        if rec["id"] in ids:
            raise CocoFormatError(f"{ann_file}: {kind} id {rec['id']} appears twice")
        ids.add(rec["id"])
    return ids


def _check_fields(rec, fields, kind, ann_file):
    if not isinstance(rec, dict):
        raise CocoFormatError(f"{ann_file}: a {kind} entry is not an object: {rec!r:.80}")
    for field in fields:
        if field not in rec:
            who = f"{kind} id {rec['id']}" if "id" in rec else f"a {kind} without 'id'"
            raise CocoFormatError(f"{ann_file}: {who}: missing field {field!r}")


def _check_annotation(ann, images, cat_ids, ann_file):
    _check_fields(ann, ANNOTATION_FIELDS, "annotation", ann_file)
    where = f"{ann_file}: annotation id {ann['id']}"
    if ann["image_id"] not in images:
        raise CocoFormatError(f"{where}: field 'image_id' = {ann['image_id']!r} "
                              "names no image in 'images'")
    if ann["category_id"] not in cat_ids:
        raise CocoFormatError(f"{where}: field 'category_id' = {ann['category_id']!r} "
                              "names no category in 'categories'")
    bbox = ann["bbox"]
    if (not isinstance(bbox, list) or len(bbox) != 4
            or not all(isinstance(v, numbers.Real) for v in bbox)):
        raise CocoFormatError(f"{where}: field 'bbox' must be 4 numbers [x, y, w, h], "
                              f"got {bbox!r:.80}")
    if ann["iscrowd"] not in (0, 1):
        raise CocoFormatError(f"{where}: field 'iscrowd' must be 0 or 1, got {ann['iscrowd']!r}")
    img = images[ann["image_id"]]
    _check_segmentation(ann["segmentation"], img["height"], img["width"], where)


def _check_segmentation(segm, height, width, where):
    """Polygons: a list of [x0, y0, x1, y1, ...] with >= 3 points; RLE: {"size", "counts"}."""
    if isinstance(segm, list):
        if not segm:
            raise CocoFormatError(f"{where}: field 'segmentation' is an empty polygon list")
        for poly in segm:
            if (not isinstance(poly, list) or len(poly) < 6 or len(poly) % 2
                    or not all(isinstance(v, numbers.Real) for v in poly)):
                raise CocoFormatError(f"{where}: field 'segmentation' has a polygon that is "
                                      f"not an even list of >= 6 numbers: {poly!r:.80}")
    elif isinstance(segm, dict):
        if "counts" not in segm or "size" not in segm:
            raise CocoFormatError(f"{where}: field 'segmentation' is a dict without "
                                  "'counts' and 'size' (RLE)")
        if list(segm["size"]) != [height, width]:
            raise CocoFormatError(f"{where}: field 'segmentation' RLE size {segm['size']} "
                                  f"differs from the image's [height, width] = [{height}, {width}]")
        counts = segm["counts"]
        if isinstance(counts, list):
            if sum(counts) != height * width:
                raise CocoFormatError(f"{where}: field 'segmentation' uncompressed RLE counts "
                                      f"sum to {sum(counts)}, expected H * W = {height * width}")
        elif not isinstance(counts, (str, bytes)):
            raise CocoFormatError(f"{where}: field 'segmentation' RLE 'counts' must be a "
                                  f"string or a list, got {type(counts).__name__}")
    else:
        raise CocoFormatError(f"{where}: field 'segmentation' must be polygons (list) or RLE "
                              f"(dict), got {type(segm).__name__}")
