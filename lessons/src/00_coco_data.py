# %% [markdown]
# # 00 · COCO data and masks
#
# Mask R-CNN learns from images where every object has a class, a box and a pixel mask. The
# paper trains and evaluates on COCO's 80 object categories: *"As in previous work, we train
# using the union of 80k train images and a 35k subset of val images (trainval35k), and report
# ablations on the remaining 5k val images (minival)"* (He et al. 2017, section 4; the 2017
# release of COCO calls the same split train2017 / val2017). Before any model, this lesson
# opens the data:
#
# 1. the COCO **instances** JSON format, one record at a time;
# 2. how a mask is stored — **polygon**, **RLE** — and decoded to a bitmask with pycocotools;
# 3. **crowd** regions, and why `area` is not the mask's pixel count;
# 4. a real image with its boxes and masks, as `CocoDataset` hands it to the model;
# 5. what the real subset contains: categories and object sizes;
# 6. the **synthetic shapes** dataset the tests and lesson 10 train on.
#
# Code: `mrcnn_edu/data/coco.py` (`CocoDataset`), `mrcnn_edu/data/shapes.py`
# (`make_shapes_dataset`), `mrcnn_edu/data/subset.py` (carving your own subset), `mrcnn_edu/viz/`.

# %% [markdown]
# ## The map of the course
#
# Mask R-CNN is a chain of stages, and each lesson builds one of them. `viz.pipeline_map()` draws
# the whole chain with the lessons that build each stage: the top row runs at inference (and in
# training), the bottom row is what training adds. This lesson is the first box, the image and its
# ground truth; every later lesson opens with a small copy of this map, its own stages in orange.
# In training the heads do not see every proposal: match + sample keeps 512 RoIs per image (at
# most a quarter of them positive), and only those go through RoIAlign and the heads (lesson 09).

# %%
import matplotlib.pyplot as plt

from mrcnn_edu import viz

viz.pipeline_map()
plt.show()

# %%
import collections
import inspect
import json
import tempfile

import matplotlib.pyplot as plt
import numpy as np
from pycocotools import mask as mask_utils

from mrcnn_edu import viz
from mrcnn_edu.data import CocoDataset, make_shapes_dataset, resolve_data_root

np.set_printoptions(linewidth=110)
root = resolve_data_root()  # --data / MRCNN_EDU_DATA / data/coco_subset / ../shared/coco_subset
train = CocoDataset(root, split="train2017")
val = CocoDataset(root, split="val2017")
print(f"train2017: {len(train)} images, val2017: {len(val)} images, {train.num_classes} classes")

# %% [markdown]
# ## 1. The instances format
#
# A COCO split is one JSON file, `annotations/instances_{split}.json`, plus a folder of images.
# The JSON holds three lists that point at each other by id:
#
# - `images`: one record per image: `id`, `file_name`, `height`, `width` (and licence, URLs);
# - `categories`: `id`, `name`, `supercategory` — 80 of them, with ids between 1 and 90
#   (there are gaps: id 12 is missing, for instance);
# - `annotations`: one record per object: `image_id`, `category_id`, `bbox`, `segmentation`,
#   `area`, `iscrowd`, and its own `id`.

# %%
raw = train.coco.dataset  # the JSON as read
print("top-level keys:", sorted(raw))
print("image:   ", {k: raw["images"][0][k] for k in ("id", "file_name", "height", "width")})
print("category:", raw["categories"][0], "...", raw["categories"][-1])
cat_ids = [c["id"] for c in raw["categories"]]
print(f"category ids: {len(cat_ids)} of them, {min(cat_ids)}..{max(cat_ids)}, "
      f"missing: {sorted(set(range(1, 91)) - set(cat_ids))}")

# %% [markdown]
# One annotation. `bbox` is **(x, y, w, h)** — top-left corner, width, height, in pixels — and
# `segmentation` is a list of polygons, each a flat list `[x0, y0, x1, y1, ...]`.

# %%
ann = min((a for a in raw["annotations"] if not a["iscrowd"]),
          key=lambda a: len(a["segmentation"][0]))  # the one with the shortest polygon
show = dict(ann, bbox=[round(v, 1) for v in ann["bbox"]], area=round(ann["area"], 1),
            segmentation=[[round(v, 1) for v in poly] for poly in ann["segmentation"]])
for key in ("id", "image_id", "category_id", "bbox", "area", "iscrowd", "segmentation"):
    print(f"{key:13s}{json.dumps(show[key])}")
print("category name:", train.coco.cats[ann["category_id"]]["name"])

# %% [markdown]
# `CocoDataset` converts the box once, on loading, to our convention **(x1, y1, x2, y2)**
# with `x2 = x + w` (width = x2 - x1, no +1), and maps the 80 COCO ids to contiguous labels 1..80
# (0 is background):

# %%
i = train.image_ids.index(ann["image_id"])
target = train.load_target(i)
k = [a for a in train.coco.getAnnIds(imgIds=[ann["image_id"]])
     if a not in train.dropped].index(ann["id"])
print("COCO bbox (x, y, w, h):   ", [round(v, 1) for v in ann["bbox"]])
print("ours (x1, y1, x2, y2):    ", [round(float(v), 1) for v in target["boxes"][k]])
print(f"COCO category id {ann['category_id']} -> label {int(target['labels'][k])} "
      f"('{train.class_names[int(target['labels'][k])]}')")

# %% [markdown]
# ## 2. Polygon -> RLE -> bitmask
#
# A polygon is compact but the model needs a bitmask. pycocotools goes through
# **run-length encoding** (RLE): the mask is read **column by column** (Fortran order) and
# stored as the lengths of alternating runs of 0s and 1s, starting with 0s. A hand example: a
# triangle on a 6 x 8 grid (H x W). Polygon coordinates are in pixel-edge units: x = 1 is the
# left edge of column 1.

# %%
H, W = 6, 8
triangle = [1.0, 5.0, 7.0, 5.0, 4.0, 1.0]  # (1, 5), (7, 5), (4, 1)
rles = mask_utils.frPyObjects([triangle], H, W)  # one RLE per polygon
rle = mask_utils.merge(rles)  # union of the polygons of one object
bitmask = mask_utils.decode(rle)  # (H, W) uint8, Fortran order
print("compressed RLE:", rle)
print("bitmask (H x W):")
print(bitmask)
print("pixels on:", int(mask_utils.area(rle)),
      "  bbox (x, y, w, h):", mask_utils.toBbox(rle).tolist())

# %% [markdown]
# The `counts` string above is the **compressed** form: the run lengths, differenced and packed
# into ASCII characters. The **uncompressed** form is the plain list of runs; COCO uses it for
# crowd regions. Writing it out by hand from the bitmask, column by column:

# %%
def runs_column_major(mask):
    """Uncompressed RLE counts of a 0/1 mask: runs of 0s and 1s in Fortran order, 0s first."""
    flat = mask.flatten(order="F")
    change = np.flatnonzero(np.diff(flat)) + 1  # where a new run starts
    edges = np.concatenate([[0], change, [flat.size]])
    counts = np.diff(edges).tolist()
    return counts if flat[0] == 0 else [0] + counts


counts = runs_column_major(bitmask)
print("uncompressed counts:", counts, " sum =", sum(counts), "= H * W =", H * W)
uncompressed = {"size": [H, W], "counts": counts}
again = mask_utils.decode(mask_utils.frPyObjects(uncompressed, H, W))
print("decodes to the same bitmask:", bool((again == bitmask).all()))

# %% [markdown]
# **Pitfall: RLE is column-major.** Read the runs row by row (C order) and you get the
# transpose of what you meant — it does not fail, it is just wrong. numpy's default is C order,
# which is why `mask_utils.encode` wants `np.asfortranarray(mask)`:

# %%
wrong = np.concatenate([np.full(n, v % 2, np.uint8) for v, n in enumerate(counts)])
print("runs read in C order give the right mask:", bool((wrong.reshape(H, W) == bitmask).all()))
print("runs read in F order give the right mask:",
      bool((wrong.reshape(H, W, order="F") == bitmask).all()))

# %% [markdown]
# ## 3. Crowd regions, and `area`
#
# When many objects of a class overlap too much to outline one by one (a crowd of people, a
# shelf of books), COCO draws one region around them all and sets **`iscrowd = 1`**; its mask
# is an uncompressed RLE. Crowd regions are not training targets, and in evaluation a
# detection that lands on one is neither a true nor a false positive — it is ignored.
# `CocoDataset` keeps them and flags them in `target["iscrowd"]`; the model leaves them out of
# its losses.

# %%
crowd = [a for a in raw["annotations"] if a["iscrowd"]]
print(f"train2017: {len(crowd)} crowd regions among {len(raw['annotations'])} annotations")
c = crowd[0]
print({k: c[k] for k in ("id", "image_id", "category_id", "iscrowd")},
      "segmentation:", {"size": c["segmentation"]["size"],
                        "counts": c["segmentation"]["counts"][:8] + ["..."]})

# %% [markdown]
# `area` is **not** recomputed from the mask: for polygons COCO stores the polygon's geometric
# area, while the decoded mask counts whole pixels. They differ by a fraction of the boundary,
# so the difference matters most for small objects. (COCO's small / medium / large split uses
# `area`, so we keep it as is.)

# %%
rows = []
for a in raw["annotations"]:
    pixels = float(mask_utils.area(train.coco.annToRLE(a)))
    rows.append((a["area"], pixels))
area, pixels = np.array(rows).T
rel = np.abs(area - pixels) / pixels
print(f"|area - mask pixels| / mask pixels over {len(rel)} annotations: "
      f"median {np.median(rel):.2%}, 99th percentile {np.percentile(rel, 99):.1%}, "
      f"max {rel.max():.1%}")
small = area < 32 ** 2
print(f"median relative difference: small objects {np.median(rel[small]):.2%}, "
      f"the others {np.median(rel[~small]):.2%}")

# %% [markdown]
# ## 4. A real image, as the model sees it
#
# `dataset[i]` gives `(image, target)`: the image as float `(3, H, W)` in [0, 1] and a dict of
# tensors, N instances each: `boxes (N, 4)`, `labels (N,)`, `masks (N, H, W)`, `iscrowd (N,)`,
# `area (N,)`, `image_id`. `viz.show_sample` draws masks coloured by class, boxes in green, and
# crowd regions dashed.

# %%
i = train.image_ids.index(204805)  # an image with a crowd region
image, target = train[i]
print("image:", tuple(image.shape), image.dtype)
for key, value in target.items():
    print(f"  {key:9s} {str(tuple(value.shape)):16s} {value.dtype}")
crowd_labels = target["labels"][target["iscrowd"] == 1]
print("crowd regions:", [train.class_names[int(label)] for label in crowd_labels])
fig, ax = plt.subplots(figsize=(9, 7))
viz.show_sample(image, target, class_names=train.class_names, ax=ax,
                title=f"train2017 image {train.image_ids[i]}: {len(target['labels'])} instances")
plt.show()

# %% [markdown]
# How the target is built — the box conversion and the mask decoding:

# %%
print(inspect.getsource(CocoDataset.load_target))
print(inspect.getsource(CocoDataset._decode_masks))

# %% [markdown]
# ## 5. What the subset contains
#
# COCO calls an object **small** when `area < 32²`, **medium** when `32² <= area < 96²` and
# **large** above; AP is reported for each. (The evaluator's ranges are closed, [0, 32²] and
# [32², 96²], so an area of exactly 32² counts in both; polygon areas are almost never whole
# numbers.) Counts per category over both splits (crowd regions left out):

# %%
def object_table(datasets):
    """{category name: [small, medium, large]} over the non-crowd annotations."""
    table = collections.defaultdict(lambda: [0, 0, 0])
    for ds in datasets:
        for a in ds.coco.dataset["annotations"]:
            if not a["iscrowd"]:
                size = 0 if a["area"] < 32 ** 2 else 1 if a["area"] < 96 ** 2 else 2
                table[ds.coco.cats[a["category_id"]]["name"]][size] += 1
    return table


table = object_table([train, val])
ranked = sorted(table.items(), key=lambda kv: (-sum(kv[1]), kv[0]))
print(f"{'category':15s} {'small':>6s} {'medium':>6s} {'large':>6s} {'all':>6s}")
for name, (s, m, l) in ranked[:12]:
    print(f"{name:15s} {s:6d} {m:6d} {l:6d} {s + m + l:6d}")
totals = np.array([counts for _, counts in ranked]).sum(0)
print(f"{'all 80':15s} {totals[0]:6d} {totals[1]:6d} {totals[2]:6d} {totals.sum():6d}")
print(f"share: small {totals[0] / totals.sum():.0%}, medium {totals[1] / totals.sum():.0%}, "
      f"large {totals[2] / totals.sum():.0%};  categories with < 10 instances: "
      f"{sum(sum(c) < 10 for _, c in ranked)}")

# %%
fig, ax = plt.subplots(figsize=(11, 4))
top = ranked[:20]
names = [name for name, _ in top]
bottom = np.zeros(len(top))
for s, (label, color) in enumerate(zip(("small", "medium", "large"), viz.PALETTE)):
    values = np.array([counts[s] for _, counts in top])
    ax.bar(names, values, bottom=bottom, label=label, color=color)
    bottom += values
ax.set_ylabel("instances (train + val)")
ax.set_title("the 20 most frequent categories of the subset, by COCO size")
ax.tick_params(axis="x", rotation=60)
ax.legend()
fig.tight_layout()
plt.show()

# %% [markdown]
# The classic long tail: *person* dominates, most categories have a few dozen instances, and
# almost half the objects are small — the hardest case for a detector, and the reason Mask
# R-CNN looks at several feature-map resolutions (lesson 05).
#
# ## 6. The synthetic shapes dataset
#
# Real photos make slow tests. `make_shapes_dataset` draws squares, circles and triangles of
# random size and colour, possibly overlapping, on a textured background, and writes them in
# exactly the COCO layout — so `CocoDataset` and everything after it cannot tell the
# difference. The same seed gives byte-identical files. Squares and triangles are stored as
# polygons, circles as compressed RLE, and a shape that another one partly hides as the RLE of
# its visible part, so both decoding paths are exercised.

# %%
with tempfile.TemporaryDirectory() as tmp:
    shapes_root = make_shapes_dataset(tmp, num_images=16, seed=0)
    shapes = CocoDataset(shapes_root, split="train2017")
    samples = [shapes[i] for i in range(8)]
    kinds = collections.Counter(
        (shapes.coco.cats[a["category_id"]]["name"], type(a["segmentation"]).__name__)
        for a in shapes.coco.dataset["annotations"])
print(f"{len(shapes)} training images, classes {shapes.class_names[1:]}")
for (name, kind), n in sorted(kinds.items()):
    print(f"  {name:8s} stored as {'polygon' if kind == 'list' else 'RLE':7s}: {n}")
fig, axes = plt.subplots(2, 4, figsize=(12, 6))
for i, (ax, (image, target)) in enumerate(zip(axes.flat, samples)):
    viz.show_sample(image, target, class_names=shapes.class_names, ax=ax,
                    title=f"image {shapes.image_ids[i]}, N = {len(target['labels'])}")
fig.tight_layout()
plt.show()

# %% [markdown]
# ## Summary
#
# - A COCO split is `annotations/instances_{split}.json` + an image folder; `images`,
#   `categories` and `annotations` refer to each other by id.
# - Boxes are stored as (x, y, w, h); we convert once to (x1, y1, x2, y2), width = x2 - x1.
#   Category ids have gaps; labels are contiguous 1..K with 0 for background.
# - Masks are polygons or RLE (compressed string or uncompressed list, both **column-major**);
#   pycocotools turns either into a bitmask.
# - Crowd regions (`iscrowd = 1`) are kept and flagged, never trained on, ignored by evaluation.
# - `area` is COCO's, not the pixel count; it decides small / medium / large (32², 96²).
# - The subset has a long tail of categories and many small objects.
# - `make_shapes_dataset` writes a seeded synthetic dataset in the same format for tests and
#   fast training.
#
# ## Exercises
#
# 1. Decode the crowd region of section 3 and draw it alone with `viz.draw_masks`. How many
#    pixels does it cover, and how does that compare with its `area`?
# 2. Encode the triangle's bitmask back with `mask_utils.encode(np.asfortranarray(bitmask))`
#    and check that you get the same `counts` string. What happens without `asfortranarray`?
# 3. Which image of the subset has the most instances? Draw it with `viz.show_sample`.
# 4. Build `CocoDataset(root, categories=["dog", "cat"])`: what are `num_classes`,
#    `class_names` and the labels now? How many images have no instances left?
# 5. Call `make_shapes_dataset` with `max_overlap=0.0` and with `max_overlap=0.9`; count how
#    many annotations are stored as RLE in each, and explain the difference.
# 6. Carve your own subset: `python -m mrcnn_edu.data subset --help`.
