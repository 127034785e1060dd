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
nothing is skipped silently. The JSON is checked by `validate.load_coco`; pixels are decoded by
`images.read_image` (by bit depth: 16-bit files are scaled, not clipped). The one thing we do
drop, boxes under 1 px wide or high once clipped to the image, is recorded in `dataset.dropped`
and told by `dataset.dropped_summary()`, so counts can be reconciled with the JSON.
"""
import numbers
from pathlib import Path

import numpy as np
import torch
from pycocotools import mask as mask_utils

from .images import read_image, read_rgb  # noqa: F401  (read_rgb: importable from here too)
# The JSON checks live in validate.py; these names stay importable from data.coco.
from .validate import (ANNOTATION_FIELDS, IMAGE_FIELDS, CocoFormatError,  # noqa: F401
                       load_coco, validate_coco_dict)

MIN_BOX_SIZE = 1.0  # boxes narrower or lower than this (pixels) are dropped and recorded


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
        """Image i as float32 (3, H, W) in [0, 1]; grayscale, CMYK, palette, 16-bit become RGB."""
        info = self.image_info(i)
        image = read_image(info["path"], info["id"])  # (3, H, W)
        if tuple(image.shape[1:]) != (info["height"], info["width"]):
            raise CocoFormatError(
                f"{info['path']}: image id {info['id']} decodes to {image.shape[1]} x "
                f"{image.shape[2]} (H x W) but {self.ann_file} says {info['height']} x "
                f"{info['width']} (fields 'height', 'width')")
        return image

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

    def dropped_summary(self):
        """One line on the annotations dropped as under 1 px (count, file, ids), or None."""
        if not self.dropped:
            return None
        ids = sorted(self.dropped)
        shown = ", ".join(map(str, ids[:10])) + (", ..." if len(ids) > 10 else "")
        noun = "annotation" if len(ids) == 1 else "annotations"
        return (f"dropped {len(ids)} {noun} of {self.ann_file} whose box is under "
                f"{MIN_BOX_SIZE:g} px wide or high inside its image (ids {shown})")

    def __repr__(self):
        return (f"CocoDataset({str(self.root)!r}, split={self.split!r}): {len(self)} images, "
                f"{sum(map(len, self._ann_ids.values()))} instances, {self.num_classes} classes, "
                f"{len(self.dropped)} dropped")


def collate(batch):
    """[(image, target), ...] -> ([image, ...], [target, ...]); images keep their own sizes."""
    images, targets = zip(*batch) if batch else ((), ())
    return list(images), list(targets)


def _clipped_xyxy(bbox, height, width):
    """COCO (x, y, w, h) -> (x1, y1, x2, y2) clipped to the image (COCO boxes may overhang)."""
    x, y, bw, bh = (float(v) for v in bbox)
    return (min(max(x, 0.0), width), min(max(y, 0.0), height),
            min(max(x + bw, 0.0), width), min(max(y + bh, 0.0), height))
