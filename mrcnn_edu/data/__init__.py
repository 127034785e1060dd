"""COCO data: loading, synthetic shapes and subsets (lesson 00).

    resolve_data_root(data=None) -> Path     where the data lives (paths.py)
    CocoDataset(root, split="train2017")     (image, target) pairs from a COCO folder (coco.py)
    collate(batch) -> (images, targets)      for DataLoader: lists, images keep their sizes
    make_shapes_dataset(root, ...) -> Path   a seeded synthetic COCO folder (shapes.py)
    load_coco(ann_file) -> COCO              the JSON, checked field by field (validate.py)
    read_image(path) -> (3, H, W) float      any image file, by its bit depth (images.py)
"""
from .coco import CocoDataset, CocoFormatError, collate
from .paths import resolve_data_root
from .shapes import make_shapes_dataset
