"""Carve a small subset out of an official COCO download (lesson 00).

    make_subset(annotations, out, split="train2017", categories=None, num_images=200,
                min_instances=1, seed=0, images_dir=None) -> Path

1. reads an official instances JSON (e.g. instances_train2017.json);
2. picks images: those with at least `min_instances` non-crowd instances of the chosen
   `categories` (all categories when None), then `num_images` of them drawn with
   np.random.default_rng(seed) -- the same arguments always pick the same images;
3. writes out/annotations/instances_{split}.json: the picked images (in the JSON's order), their
   annotations of the chosen categories (crowd regions included), the chosen categories;
4. fills out/{split}/ with those images: copied from a local COCO image folder (`images_dir`),
   or else downloaded one by one from each image's `coco_url`.

Downloads are resumable and checked: a file is written to NAME.part, resumed with an HTTP Range
request when a .part is left over, renamed only once its size matches Content-Length and it
decodes at the size the JSON states; each finished file's size and sha256 go to
out/manifest_{split}.json, and a re-run skips exactly the files the manifest vouches for (a file
that differs from its record is fetched again). Network errors are retried with exponential
backoff; when the server cannot be reached at all the error names the URL and says to use a
local folder (`--images DIR`) instead. Only the standard library's urllib is used.
"""
import hashlib
import http.client
import json
import numbers
import os
import shutil
import socket
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from .coco import CocoFormatError

CHUNK = 1 << 16  # bytes read per step of a download
RETRY_STATUS = {408, 429, 500, 502, 503, 504}  # HTTP answers worth trying again


class DownloadError(RuntimeError):
    """An image could not be fetched or verified; the message names the URL or file."""


# --- 1-3: choosing the images and writing the JSON -----------------------------------------------
def load_instances(path):
    """The instances JSON as a dict, with the three lists it must have."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"annotation file not found: {path}")
    try:
        with open(path, "rb") as f:
            dataset = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CocoFormatError(f"{path}: not valid JSON: {err}") from err
    for key in ("images", "annotations", "categories"):
        if not isinstance(dataset, dict) or not isinstance(dataset.get(key), list):
            raise CocoFormatError(f"{path}: missing or non-list top-level field {key!r}")
    return dataset


def category_ids(dataset, categories=None):
    """COCO ids of the chosen categories (names or ids), in the JSON's order; all when None."""
    cats = dataset["categories"]
    if categories is None:
        return [c["id"] for c in cats]
    by_name, by_id = {c["name"]: c["id"] for c in cats}, {c["id"] for c in cats}
    wanted = set()
    for c in categories:
        if isinstance(c, str) and c.isdigit():
            c = int(c)  # "18" from the command line is an id
        found = c if isinstance(c, numbers.Integral) and c in by_id else by_name.get(c)
        if found is None:
            raise ValueError(f"unknown category {c!r}; known: {sorted(by_name)}")
        wanted.add(found)
    return [c["id"] for c in cats if c["id"] in wanted]


def select_images(dataset, categories=None, num_images=None, min_instances=1, seed=0):
    """COCO ids of the picked images, in the JSON's image order.

    An image qualifies with >= min_instances non-crowd annotations of the chosen categories;
    num_images of the qualifying ones (all when None or when fewer qualify) are drawn without
    replacement by np.random.default_rng(seed) from the qualifying ids sorted ascending.
    """
    cat_ids = set(category_ids(dataset, categories))
    counts = {}
    for ann in dataset["annotations"]:
        if ann["category_id"] in cat_ids and not ann.get("iscrowd", 0):
            counts[ann["image_id"]] = counts.get(ann["image_id"], 0) + 1
    qualifying = sorted(img["id"] for img in dataset["images"]
                        if counts.get(img["id"], 0) >= min_instances)
    if num_images is not None and num_images < len(qualifying):
        order = np.random.default_rng(seed).permutation(len(qualifying))[:num_images]
        picked = {qualifying[i] for i in order}
    else:
        picked = set(qualifying)
    return [img["id"] for img in dataset["images"] if img["id"] in picked]


def subset_dict(dataset, image_ids, categories=None):
    """The instances dict restricted to image_ids and the chosen categories."""
    keep_images, cat_ids = set(image_ids), set(category_ids(dataset, categories))
    out = {key: dataset[key] for key in ("info", "licenses") if key in dataset}
    out["images"] = [img for img in dataset["images"] if img["id"] in keep_images]
    out["annotations"] = [a for a in dataset["annotations"]
                          if a["image_id"] in keep_images and a["category_id"] in cat_ids]
    out["categories"] = [c for c in dataset["categories"] if c["id"] in cat_ids]
    return out


def check_counts(num_images, min_instances):
    """Refuse counts that would silently mean "everything": num_images < 1, min_instances < 0."""
    if num_images is not None and (not isinstance(num_images, numbers.Integral)
                                   or num_images < 1):
        raise ValueError(f"num_images (--num-images) must be a positive whole number of images, "
                         f"got {num_images!r}")
    if not isinstance(min_instances, numbers.Integral) or min_instances < 0:
        raise ValueError(f"min_instances (--min-instances) must be 0 or more, "
                         f"got {min_instances!r}")


def orphan_annotations(dataset):
    """The annotations whose image_id names no image of dataset["images"]."""
    image_ids = {img.get("id") for img in dataset["images"] if isinstance(img, dict)}
    return [a for a in dataset["annotations"]
            if not isinstance(a, dict) or a.get("image_id") not in image_ids]


def report_orphans(dataset, path):
    """Say how many annotations point at unknown images: they cannot be part of any subset."""
    orphans = orphan_annotations(dataset)
    if orphans:
        ids = sorted({str(a.get("image_id")) for a in orphans if isinstance(a, dict)},
                     key=lambda text: (len(text), text))  # numbers in numeric order
        shown = ", ".join(ids[:10]) + (", ..." if len(ids) > 10 else "")
        print(f"note: {len(orphans)} annotations of {path} name image ids that are not in its "
              f"'images' ({shown}); they are left out of the subset", file=sys.stderr)
    return len(orphans)


# --- 4: fetching the images ----------------------------------------------------------------------
def make_subset(annotations, out, split="train2017", categories=None, num_images=200,
                min_instances=1, seed=0, images_dir=None, retries=3, backoff=1.0, timeout=30.0,
                progress=True):
    """Steps 1-4 of the module docstring; returns `out` as a Path. Re-running resumes."""
    check_counts(num_images, min_instances)
    out = Path(out)
    dataset = load_instances(annotations)
    report_orphans(dataset, annotations)
    image_ids = select_images(dataset, categories, num_images, min_instances, seed)
    if not image_ids:
        raise ValueError(f"no image of {annotations} has >= {min_instances} instances of the "
                         f"chosen categories {categories}")
    subset = subset_dict(dataset, image_ids, categories)
    (out / "annotations").mkdir(parents=True, exist_ok=True)
    ann_file = out / "annotations" / f"instances_{split}.json"
    write_atomic(ann_file, json.dumps(subset).encode("utf-8"))
    fetch_images(subset["images"], out / split, out / f"manifest_{split}.json", images_dir,
                 retries=retries, backoff=backoff, timeout=timeout, progress=progress)
    return out


def fetch_images(images, dest_dir, manifest_path, images_dir=None, retries=3, backoff=1.0,
                 timeout=30.0, progress=True):
    """Put every image of `images` (COCO image dicts) into dest_dir; returns counts by action.

    A file that the manifest vouches for (same size and sha256) is skipped; any other is
    copied from images_dir when given, else downloaded from its coco_url, then verified.
    """
    dest_dir, manifest_path = Path(dest_dir), Path(manifest_path)
    dest_dir.mkdir(parents=True, exist_ok=True)
    manifest = json.loads(manifest_path.read_text()) if manifest_path.is_file() else {}
    counts = {"skipped": 0, "copied": 0, "downloaded": 0, "refetched": 0}
    for img in tqdm(images, desc=f"images -> {dest_dir.name}", unit="img", disable=not progress):
        name = img["file_name"]
        dest = dest_dir / name
        record = manifest.get(name)
        if dest.is_file() and record is not None:
            if file_record(dest) == {k: record[k] for k in ("size", "sha256")}:
                counts["skipped"] += 1
                continue
            tqdm.write(f"{dest}: differs from the size/sha256 in {manifest_path.name}; "
                       "fetching it again")
            counts["refetched"] += 1
        if images_dir is not None:
            copy_image(Path(images_dir) / name, dest, img)
            counts["copied"] += 1
            source = "local"
        else:
            url = img.get("coco_url")
            if not url:
                raise DownloadError(f"image id {img['id']} ({name}) has no 'coco_url' to "
                                    "download from; copy it from a COCO folder with --images DIR")
            download(url, dest, img, retries=retries, backoff=backoff, timeout=timeout)
            counts["downloaded"] += 1
            source = url
        manifest[name] = {**file_record(dest), "source": source}
        write_atomic(manifest_path, json.dumps(manifest, indent=1, sort_keys=True).encode())
    return counts


def copy_image(src, dest, img):
    """Copy one image from a local COCO folder, through dest.part, verifying it decodes."""
    if not src.is_file():
        raise FileNotFoundError(f"image id {img['id']}: {src} not found in the --images folder")
    part = dest.with_name(dest.name + ".part")
    shutil.copyfile(src, part)
    problem = verify_image(part, img)
    if problem:
        part.unlink()
        raise DownloadError(f"{src} (image id {img['id']}): {problem}")
    os.replace(part, dest)


def download(url, dest, img, retries=3, backoff=1.0, timeout=30.0):
    """Download url to dest through dest.part (resumed if present), verified; retried.

    Attempt k (0-based) that fails on the network, a retryable HTTP status, a short body or an
    image that does not decode waits backoff * 2**k seconds and tries again, up to `retries`
    attempts in all. A body that failed verification is discarded; a connection that broke
    mid-way leaves its .part for the next attempt to resume.
    """
    dest = Path(dest)
    part = dest.with_name(dest.name + ".part")
    problem = None
    for attempt in range(max(1, retries)):
        if attempt:
            time.sleep(backoff * 2 ** (attempt - 1))
        try:
            fetch_to_part(url, part, timeout)
        except urllib.error.HTTPError as err:
            problem = f"HTTP {err.code} {err.reason}"
            if err.code == 416:  # nothing left to send: the .part is whole, or it is junk
                if part.is_file() and verify_image(part, img) is None:
                    os.replace(part, dest)
                    return dest
                part.unlink(missing_ok=True)
            elif err.code not in RETRY_STATUS:
                break
            continue
        except (urllib.error.URLError, socket.timeout, ConnectionError) as err:
            reason = getattr(err, "reason", err)
            problem = f"cannot reach the server ({reason})"
            continue
        except ShortBody as err:
            problem = str(err)
            continue  # keep the .part: the next attempt resumes it
        problem = verify_image(part, img)
        if problem is None:
            os.replace(part, dest)
            return dest
        part.unlink()  # a full-length body that is not the image: start over
    if problem and problem.startswith("cannot reach"):
        raise DownloadError(f"cannot download {url}: {problem}, after {max(1, retries)} "
                            "attempts. Offline? Copy the images from a local COCO image folder "
                            "instead: --images DIR (the folder holding "
                            f"{dest.name})")
    raise DownloadError(f"cannot download {url} to {dest}: {problem}")


class ShortBody(OSError):
    """The connection closed before Content-Length bytes arrived."""


def fetch_to_part(url, part, timeout):
    """One HTTP GET into `part`: resumes with Range when part has bytes and the server agrees."""
    have = part.stat().st_size if part.is_file() else 0
    request = urllib.request.Request(url, headers={"User-Agent": "mrcnn_edu-subset"})
    if have:
        request.add_header("Range", f"bytes={have}-")
    with urllib.request.urlopen(request, timeout=timeout) as response:
        resumed = bool(have) and response.status == 206 and _range_start(response) == have
        length = response.headers.get("Content-Length")
        expected = (int(length) + (have if resumed else 0)) if length is not None else None
        with open(part, "ab" if resumed else "wb") as f:
            try:
                while chunk := response.read(CHUNK):
                    f.write(chunk)
            except (http.client.IncompleteRead, ConnectionError, socket.timeout) as err:
                raise ShortBody(f"connection broke after {f.tell()} bytes: {err}") from err
            size = f.tell()
    if expected is not None and size != expected:
        raise ShortBody(f"got {size} bytes, expected {expected} (Content-Length)")


def _range_start(response):
    """The first byte of a 206 answer, from 'Content-Range: bytes START-END/TOTAL'."""
    value = response.headers.get("Content-Range", "")
    try:
        return int(value.split()[1].split("-")[0])
    except (IndexError, ValueError):
        return None


def verify_image(path, img):
    """None when path decodes completely at the JSON's width x height, else what is wrong."""
    try:
        with Image.open(path) as im:
            im.load()
            size = im.size
    except (OSError, SyntaxError, ValueError) as err:
        return f"not a readable image ({err})"
    if size != (img["width"], img["height"]):
        return (f"decodes to {size[1]} x {size[0]} (H x W), the JSON says "
                f"{img['height']} x {img['width']}")
    return None


def file_record(path):
    """{"size", "sha256"} of a file."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return {"size": path.stat().st_size, "sha256": digest.hexdigest()}


def write_atomic(path, data):
    """Write bytes to path through path.tmp and a rename, so a kill never leaves half a file."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)
