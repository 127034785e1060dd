"""Reading and checking a COCO instances JSON before anything trusts it (lesson 00).

    coco = load_coco("data/shapes/annotations/instances_train2017.json")   # pycocotools COCO
    validate_coco_dict(dataset_dict, "where it came from")                 # raises or returns

Every field the loader relies on is checked here, once, so that a bad file fails with a
CocoFormatError naming the file, the record (image id, annotation id) and the field, instead of
a TypeError or a NaN loss far away. What is checked:

    images       id an integer; file_name a relative path inside the split folder (no "..",
                 no absolute path); height and width positive integers
    annotations  id unique; image_id and category_id name known records; bbox 4 finite numbers
                 [x, y, w, h] with w > 0 and h > 0; iscrowd 0 or 1; segmentation polygons
                 (even lists of >= 6 numbers) or RLE of the image's size whose run lengths are
                 non-negative and cover H * W pixels exactly (compressed strings are decoded)
    categories   id unique, a name

Compressed RLE ("counts" a string) is COCO's own run-length code: each run length is written
in 5-bit groups, low group first, as characters from "0" (48) up; bit 0x20 of a character says
another group follows, bit 0x10 of the last group is the sign; from the third run on, the value
stored is the difference to the run two before (`rle_string_counts` decodes it).
"""
import contextlib
import io
import json
import math
import numbers
from pathlib import Path, PurePosixPath, PureWindowsPath

from pycocotools.coco import COCO

IMAGE_FIELDS = ("id", "file_name", "height", "width")
ANNOTATION_FIELDS = ("id", "image_id", "category_id", "bbox", "segmentation", "area", "iscrowd")


class CocoFormatError(ValueError):
    """A COCO file or image that does not follow the format; the message names file, id, field."""


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
        _check_image(img, ann_file)
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


def _is_int(value):
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _check_image(img, ann_file):
    """id an integer, height and width positive integers, file_name inside the split folder."""
    _check_fields(img, IMAGE_FIELDS, "image", ann_file)
    if not _is_int(img["id"]):
        raise CocoFormatError(f"{ann_file}: image with file_name {img['file_name']!r:.80}: "
                              f"field 'id' must be an integer, got {img['id']!r:.40}")
    where = f"{ann_file}: image id {img['id']}"
    for field in ("height", "width"):
        if not _is_int(img[field]) or img[field] <= 0:
            raise CocoFormatError(f"{where}: field {field!r} must be a positive integer, "
                                  f"got {img[field]!r:.40}")
    problem = _file_name_problem(img["file_name"])
    if problem:
        raise CocoFormatError(f"{where}: field 'file_name' {problem}")


def _file_name_problem(name):
    """Why `name` cannot be a path inside the split folder, or None when it can."""
    if not isinstance(name, str) or not name:
        return f"must be a non-empty string, got {name!r:.80}"
    # Checked as both path flavours, so a JSON written on Windows fails the same way everywhere.
    for path in (PurePosixPath(name), PureWindowsPath(name)):
        if path.is_absolute() or path.anchor:
            return f"must be relative to the split folder, got the absolute path {name!r:.80}"
        if ".." in path.parts:
            return f"must stay inside the split folder, got {name!r:.80} (contains '..')"
    return None


def _check_annotation(ann, images, cat_ids, ann_file):
    _check_fields(ann, ANNOTATION_FIELDS, "annotation", ann_file)
    where = f"{ann_file}: annotation id {ann['id']}"
    if ann["image_id"] not in images:
        raise CocoFormatError(f"{where}: field 'image_id' = {ann['image_id']!r} "
                              "names no image in 'images'")
    if ann["category_id"] not in cat_ids:
        raise CocoFormatError(f"{where}: field 'category_id' = {ann['category_id']!r} "
                              "names no category in 'categories'")
    _check_bbox(ann["bbox"], where)
    if ann["iscrowd"] not in (0, 1):
        raise CocoFormatError(f"{where}: field 'iscrowd' must be 0 or 1, got {ann['iscrowd']!r}")
    img = images[ann["image_id"]]
    _check_segmentation(ann["segmentation"], img["height"], img["width"], where)


def _check_bbox(bbox, where):
    """4 finite numbers [x, y, w, h] with a positive size (boxes under 1 px are dropped later)."""
    if (not isinstance(bbox, list) or len(bbox) != 4
            or not all(isinstance(v, numbers.Real) and not isinstance(v, bool) for v in bbox)):
        raise CocoFormatError(f"{where}: field 'bbox' must be 4 numbers [x, y, w, h], "
                              f"got {bbox!r:.80}")
    if not all(math.isfinite(v) for v in bbox):
        raise CocoFormatError(f"{where}: field 'bbox' holds a NaN or infinite value: {bbox!r:.80}")
    if bbox[2] <= 0 or bbox[3] <= 0:
        raise CocoFormatError(f"{where}: field 'bbox' must have a positive width and height "
                              f"[x, y, w, h], got {bbox!r:.80}")


def _check_segmentation(segm, height, width, where):
    """Polygons: a list of [x0, y0, x1, y1, ...] with >= 3 points; RLE: {"size", "counts"}."""
    if isinstance(segm, list):
        if not segm:
            raise CocoFormatError(f"{where}: field 'segmentation' is an empty polygon list")
        for poly in segm:
            if (not isinstance(poly, list) or len(poly) < 6 or len(poly) % 2
                    or not all(isinstance(v, numbers.Real) and math.isfinite(v) for v in poly)):
                raise CocoFormatError(f"{where}: field 'segmentation' has a polygon that is "
                                      f"not an even list of >= 6 finite numbers: {poly!r:.80}")
    elif isinstance(segm, dict):
        _check_rle(segm, height, width, where)
    else:
        raise CocoFormatError(f"{where}: field 'segmentation' must be polygons (list) or RLE "
                              f"(dict), got {type(segm).__name__}")


def _check_rle(segm, height, width, where):
    """RLE of the image's size whose runs are non-negative integers summing to H * W."""
    if "counts" not in segm or "size" not in segm:
        raise CocoFormatError(f"{where}: field 'segmentation' is a dict without "
                              "'counts' and 'size' (RLE)")
    if not isinstance(segm["size"], list) or segm["size"] != [height, width]:
        raise CocoFormatError(f"{where}: field 'segmentation' RLE size {segm['size']!r:.40} "
                              f"differs from the image's [height, width] = [{height}, {width}]")
    counts, form = segm["counts"], "uncompressed"
    if isinstance(counts, (str, bytes)):
        form = "compressed"
        try:
            counts = rle_string_counts(counts)
        except ValueError as err:
            raise CocoFormatError(f"{where}: field 'segmentation' RLE 'counts' is not "
                                  f"COCO's compressed RLE: {err}") from None
    elif not isinstance(counts, list):
        raise CocoFormatError(f"{where}: field 'segmentation' RLE 'counts' must be a "
                              f"string or a list, got {type(counts).__name__}")
    if not all(_is_int(c) and c >= 0 for c in counts):
        raise CocoFormatError(f"{where}: field 'segmentation' {form} RLE counts must be "
                              f"non-negative integers, got {counts!r:.80}")
    if sum(counts) != height * width:
        raise CocoFormatError(f"{where}: field 'segmentation' {form} RLE counts sum to "
                              f"{sum(counts)}, expected H * W = {height * width}")


def rle_string_counts(counts):
    """Run lengths of a compressed RLE string (pycocotools' rleFrString, in Python).

    Raises ValueError on a character outside COCO's alphabet or a string that ends mid-number.
    """
    text = counts.decode("ascii", "replace") if isinstance(counts, bytes) else counts
    runs, pos = [], 0
    while pos < len(text):
        value, shift, more = 0, 0, True
        while more:
            if pos >= len(text):
                raise ValueError(f"the string ends in the middle of a run: {text!r:.60}")
            code = ord(text[pos]) - 48
            if not 0 <= code < 64:
                raise ValueError(f"character {text[pos]!r} at position {pos} is not in the "
                                 "RLE alphabet '0'..'o'")
            value |= (code & 0x1F) << shift
            more = bool(code & 0x20)
            pos, shift = pos + 1, shift + 5
            if not more and code & 0x10:
                value |= -1 << shift  # the sign bit of the last group: a negative number
        if len(runs) > 2:
            value += runs[-2]  # stored as the difference to the run two before
        runs.append(value)
    return runs
