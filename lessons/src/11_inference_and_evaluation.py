# %% [markdown]
# # 11 · Inference and evaluation
#
# A trained Mask R-CNN gives, for every RoI, a score per class, a box per class and a 28 × 28 mask
# per class. This lesson turns that into a short list of detections — **post-processing** — and
# then asks how good the list is, the way every paper since 2015 reports it: **COCO AP**.
#
# > "We report the standard COCO metrics including AP (averaged over IoU thresholds), AP50, AP75,
# > and APS, APM, APL (AP at different scales)." — He et al., *Mask R-CNN*, 2017
#
# COCO AP is a precise recipe: IoU thresholds, a greedy matching, a 101-point interpolated
# precision-recall curve, crowd regions, area ranges and a cap on detections. We build it step by
# step, then run our implementation and the official `pycocotools` side by side on the same
# detections of the real val subset.
#
# Code: `mrcnn_edu/reference/coco_eval.py` (numpy + numba), `mrcnn_edu/ops/coco_eval.py` (torch),
# `mrcnn_edu/engine/cocoapi.py` (model outputs → COCO results; pycocotools).

# %%
# You are here: this lesson's stages in the pipeline map of lesson 00.
import matplotlib.pyplot as plt

from mrcnn_edu import viz

viz.pipeline_map(highlight=11, compact=True)
plt.show()

# %%
import inspect
import json

import matplotlib.pyplot as plt
import numpy as np
import torch

from mrcnn_edu import ops, viz
from mrcnn_edu.data import CocoDataset, resolve_data_root
from mrcnn_edu.engine.cocoapi import detections_to_coco_results, pycocotools_evaluate, simulate_detections
from mrcnn_edu.model import RoIHeads
from mrcnn_edu.reference import coco_eval as ref

np.set_printoptions(precision=3, suppress=True)
root = resolve_data_root()
dataset = CocoDataset(root, split="val2017")
gt = json.loads((root / "annotations" / "instances_val2017.json").read_text())  # the COCO dict
print(f"{len(gt['images'])} images, {len(gt['annotations'])} objects "
      f"({sum(a['iscrowd'] for a in gt['annotations'])} crowds), {len(gt['categories'])} categories")

# %% [markdown]
# ## 1. Post-processing: from RoI scores to a list of detections
#
# The box head scores each of its ~1000 RoIs for every class and regresses one box per class, so
# one image yields 1000 × 80 (box, class, score) candidates. The paper's inference step (He et
# al. 2017, section 3.1):
#
# > At test time, the proposal number is 300 for the C4 backbone ... and 1000 for FPN ... We run
# > the box prediction branch on these proposals, followed by non-maximum suppression. The mask
# > branch is then applied to the highest scoring 100 detection boxes. ... The mask branch can
# > predict K masks per RoI, but we only use the k-th mask, where k is the predicted class by the
# > classification branch. The m×m floating-number mask output is then resized to the RoI size,
# > and binarized at a threshold of 0.5.
#
# The paper gives no score threshold and no NMS threshold; those numbers are Detectron's defaults
# (`TEST.SCORE_THRESH = 0.05` and `TEST.DETECTIONS_PER_IM = 100` in its defaults, the last
# "based on the limit established for the COCO dataset"; `TEST.NMS = 0.5` in its FPN Mask R-CNN
# configs, where the default is 0.3) and torchvision's (`box_score_thresh`,
# `box_nms_thresh`, `box_detections_per_img`), and this project's `Config` defaults:
#
# 1. drop candidates with score ≤ 0.05 (Detectron / torchvision);
# 2. non-maximum suppression **per class** at IoU 0.5 (`ops.batched_nms`, lesson 04; the paper
#    says NMS, Detectron / torchvision say per class at 0.5): a person box never suppresses a dog
#    box;
# 3. keep the 100 highest scores (the paper's 100, the COCO challenge's limit per image;
#    COCOeval's own cap, section 4, is per image and category);
# 4. only then the mask head runs, on the kept boxes only; of its K masks per box it uses **only
#    the channel of the predicted class**, and that 28 × 28 mask is **pasted** into the image
#    (`ops.paste_masks`, lesson 07): resized to the box and thresholded at 0.5 (the paper's).
#    With `Config.mask_box_scale` above 1 (the `shapes` preset of lesson 10 uses 1.1), the mask
#    head reads, and the mask is pasted into, the box widened by that factor about its centre,
#    so that a box a pixel too tight cuts its mask less; 1, the default, is the paper's.
#
# In training the mask head ran on the sampled foreground RoIs, in parallel with the box head
# (lesson 09); at inference it runs after NMS, on fewer and better boxes. Step 4 in the model,
# `RoIHeads.detect`:

# %%
detect_lines = inspect.getsource(RoIHeads.detect).splitlines()
mask_step = ("mask_head(", "labels = ", "logits[")  # the lines of the mask step
print("\n".join(line for line in detect_lines if any(key in line for key in mask_step)))

# %% [markdown]
# `logits[rows, labels]` picks, for detection i, the mask channel of its own predicted label; the
# other 80 channels are never looked at.
#
# We have no trained model in this lesson, so we fake the head's output on a real val image:
# 30 noisy candidates around each object, scored for its class, plus 100 low-scoring random boxes.

# %%
index = next(i for i in range(len(dataset)) if 4 <= len(dataset.load_target(i)["boxes"]) <= 6)
image, target = dataset[index]
height, width = image.shape[1:]
g = torch.Generator().manual_seed(0)
centres = target["boxes"].repeat_interleave(30, dim=0)  # (30 G, 4) one copy per candidate
sizes = (centres[:, 2:] - centres[:, :2]).repeat(1, 2)  # (30 G, 4) w, h, w, h
boxes = centres + 0.15 * sizes * torch.randn(centres.shape, generator=g)  # (30 G, 4)
labels = target["labels"].repeat_interleave(30)  # (30 G,)
scores = torch.rand(len(boxes), generator=g) ** 2  # (30 G,) mostly low, a few high
noise_centres = torch.rand(100, 2, generator=g) * torch.tensor([width, height])  # (100, 2)
noise_sizes = 20 + 130 * torch.rand(100, 2, generator=g)  # (100, 2) w, h
noise = torch.cat([noise_centres - noise_sizes / 2, noise_centres + noise_sizes / 2], dim=1)  # (100, 4)
boxes = torch.cat([boxes, noise]).clamp(min=0)
boxes[:, 0::2] = boxes[:, 0::2].clamp(max=width)
boxes[:, 1::2] = boxes[:, 1::2].clamp(max=height)
labels = torch.cat([labels, torch.randint(1, dataset.num_classes + 1, (100,), generator=g)])
scores = torch.cat([scores, 0.08 * torch.rand(100, generator=g)])  # (N,) background: low scores
print("candidates:", len(boxes))

# %%
keep = torch.nonzero(scores > 0.05).flatten()  # 1. score threshold
print("after score > 0.05:", len(keep))
keep = keep[ops.batched_nms(boxes[keep], scores[keep], labels[keep], 0.5)]  # 2. per-class NMS
print("after per-class NMS 0.5:", len(keep))
keep = keep[:100]  # 3. top 100 (batched_nms returns them by decreasing score): here, fewer remain
print("kept:", len(keep))

# %% [markdown]
# Step 4: a stand-in for the mask head's 28 × 28 probabilities of the predicted class (a soft
# ellipse filling the box), pasted into the image at each kept box.

# %%
yy, xx = torch.meshgrid(torch.linspace(-1, 1, 28), torch.linspace(-1, 1, 28), indexing="ij")
ellipse = torch.sigmoid(8 * (1 - (xx ** 2 + yy ** 2)))  # (28, 28) probabilities
mask_probs = ellipse.expand(len(keep), 28, 28)  # (D, 28, 28)
masks = ops.paste_masks(mask_probs, boxes[keep], (height, width))  # (D, H, W) bool
print("pasted masks:", tuple(masks.shape), masks.dtype)

fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
above = scores > 0.05
viz.show_image(image, ax=axes[0], title=f"{int(above.sum())} candidates with score > 0.05")
viz.draw_boxes(boxes[above], ax=axes[0], color=viz.PROPOSAL_COLOR, linewidth=0.5)
shown = scores[keep] > 0.5  # a display threshold only: evaluation sees all kept detections
viz.show_image(image, ax=axes[1], title=f"{len(keep)} kept; the {int(shown.sum())} with score > 0.5 drawn")
viz.draw_masks(masks[shown], ax=axes[1], alpha=0.4)
viz.draw_boxes(boxes[keep][shown], ax=axes[1], color=viz.DETECTION_COLOR, labels=labels[keep][shown],
               scores=scores[keep][shown], class_names=dataset.class_names)
plt.show()

# %% [markdown]
# Evaluation speaks COCO's language: one record per detection, with the COCO image id, the COCO
# category id (our labels 1..K map back through `dataset.label_to_cat_id`), the box as
# `[x, y, w, h]`, the score, and the mask as run-length encoding (RLE).

# %%
detections = [{"boxes": boxes[keep], "labels": labels[keep], "scores": scores[keep], "masks": masks}]
results = detections_to_coco_results(detections, [dataset.image_ids[index]], dataset.label_to_cat_id)
first = results[0]
print({k: (np.round(v, 1).tolist() if k == "bbox" else round(v, 3) if k == "score" else v)
       for k, v in first.items() if k != "segmentation"})
print("segmentation:", {"size": first["segmentation"]["size"], "counts": first["segmentation"]["counts"][:24] + "..."})

# %% [markdown]
# ## 2. When is a detection correct? IoU thresholds and greedy matching
#
# A detection is a **true positive** at IoU threshold $t$ if it overlaps a not-yet-matched ground
# truth of its class with IoU ≥ $t$. Detections are visited from the highest score down, each
# taking the best free ground truth: a second detection of the same object is a **false
# positive** (this is why NMS matters). COCO repeats this at ten thresholds
# $t \in \{0.50, 0.55, \dots, 0.95\}$.
#
# A toy image with two objects and three detections, boxes as COCO `[x, y, w, h]`:

# %%
gt_boxes = np.array([[10, 10, 40, 40], [60, 10, 30, 30]], dtype=float)  # (G, 4)
det_boxes = np.array([[12, 12, 40, 40], [15, 10, 40, 40], [64, 14, 30, 30]], dtype=float)  # (D, 4)
det_scores = np.array([0.9, 0.8, 0.7])
ious = ref.box_iou_xywh(det_boxes, gt_boxes, gt_crowd=np.array([False, False]))  # (D, G)
print("IoU (rows: detections by score, columns: ground truths)\n", ious)

fig, ax = plt.subplots(figsize=(5, 3))
xyxy = lambda b: np.concatenate([b[:, :2], b[:, :2] + b[:, 2:]], axis=1)  # noqa: E731
viz.draw_boxes(xyxy(gt_boxes), ax=ax, color=viz.GT_COLOR)
viz.draw_boxes(xyxy(det_boxes), ax=ax, color=viz.DETECTION_COLOR, scores=det_scores)
ax.set_xlim(0, 100); ax.set_ylim(60, 0); ax.set_aspect("equal")
ax.set_title("ground truth (green), detections (orange)")
plt.show()

# %% [markdown]
# Detection 0 takes object 0 (IoU 0.82). Detection 1 also overlaps object 0 well (0.78), but it is
# taken: false positive. Detection 2 covers object 1 with IoU 0.60: a hit at 0.50 and 0.55 and
# 0.60, a miss from 0.65 up. `evaluate_image` does the matching at all ten thresholds:

# %%
matched, ignored, gt_ignored = ref.evaluate_image(ious, det_boxes[:, 2] * det_boxes[:, 3],
                                                  gt_boxes[:, 2] * gt_boxes[:, 3], np.array([False, False]),
                                                  ref.AREA_RANGES["all"])
for t, row in zip(ref.IOU_THRESHOLDS, matched):
    print(f"t = {t:.2f}:", " ".join("TP" if m else "FP" for m in row))

# %% [markdown]
# The loop itself is short; it is pycocotools' loop, as a numba kernel. Ground truths come sorted
# with the *ignored* ones (crowds, objects outside the area range; section 4) last, so that a
# detection prefers a real object and falls back on an ignored one only when nothing else fits.

# %%
print(inspect.getsource(ref.greedy_match_kernel))

# %% [markdown]
# ## 3. The precision-recall curve and its 101-point interpolation
#
# Pool the detections of all images, sort them by score and walk down the list: after each one,
#
# $$\text{recall} = \frac{TP}{\#\text{objects}}, \qquad \text{precision} = \frac{TP}{TP + FP}.$$
#
# COCO then makes precision non-increasing ("interpolated": the precision at recall $r$ is the best
# precision at any recall ≥ $r$) and reads it at 101 recall values $r = 0, 0.01, \dots, 1$; AP at
# threshold $t$ is their mean. Our toy at $t = 0.5$: TP, FP, TP.

# %%
tp, fp = np.cumsum([1, 0, 1]), np.cumsum([0, 1, 0])
raw_recall, raw_precision = tp / 2, tp / (tp + fp)
print("recall:   ", raw_recall)
print("precision:", raw_precision)
precision, recall = ref.precision_recall(det_scores, matched, ignored, num_gt=2)  # (T, R), (T,)
print("interpolated precision at r = 0, 0.5, 0.51, 1:", precision[0, [0, 50, 51, 100]])
print("AP per threshold:", precision.mean(axis=1).round(3))
print("AP (mean over thresholds):", round(precision.mean(), 3))

# %%
ax = viz.draw_pr_curve(np.r_[0, raw_recall], np.r_[1, raw_precision], label="raw (one point per detection)",
                       color="grey", marker="o")
viz.draw_pr_curve(ref.RECALL_THRESHOLDS, precision[0], ax=ax, label="interpolated, 101 points", color="C1")
ax.set_title("toy image, IoU 0.5: AP50 = (51 × 1 + 50 × 2/3) / 101")
ax.legend(loc="lower left")
plt.show()

# %% [markdown]
# Check by hand: up to recall 0.5 the best precision is 1 (51 points: 0, 0.01, …, 0.50); from
# 0.51 to 1 it is 2/3 (50 points): AP50 = (51 + 33.3) / 101 = 0.835. At $t = 0.75$ only recall 0.5
# is reached: AP75 = 51 / 101 = 0.505. (The "1 − 10⁻¹⁶" you may see: pycocotools divides by
# TP + FP + ε, so a perfect detector scores 0.9999999999999998. We do the same, to agree.)
#
# Now the real val subset. We have no trained COCO model here (lesson 10's learnt shapes), so
# `simulate_detections` makes plausible
# detections from the ground truth: boxes jittered by ~10 % of their size, 10 % of objects missed,
# 10 % mislabelled, 10 % detected twice, about two random false positives per image, scores random
# (rounded to 0.01, so ties happen), masks shifted with the box and grown or shrunk by a pixel.

# %%
sim = simulate_detections(gt, generator=0)
print(len(sim), "simulated detections")
ours_bbox = ref.coco_evaluate(gt, sim, "bbox")
k = ours_bbox["category_ids"].index(1)  # category id 1 is "person", the most frequent
fig, ax = plt.subplots(figsize=(5, 4))
for t in (0, 3, 5):  # IoU 0.50, 0.65, 0.75
    viz.draw_pr_curve(ref.RECALL_THRESHOLDS, ours_bbox["precision"][t, :, k, 0, 2], ax=ax,
                      label=f"IoU {ref.IOU_THRESHOLDS[t]:.2f}: AP {ours_bbox['precision'][t, :, k, 0, 2].mean():.3f}")
ax.set_title("person, boxes, all areas, 100 detections")
ax.legend(loc="lower left")
plt.show()

# %% [markdown]
# The stricter the threshold, the fewer jittered boxes still count as hits: the curve sinks.
# AP averages over the thresholds, then over categories: `precision` has shape
# (T, R, K, A, M) = (thresholds, recall points, categories, area ranges, max-detection limits), as
# in pycocotools, with −1 where a category has no ground truth (left out of every mean).

# %%
print("precision:", ours_bbox["precision"].shape)
print("AP of person:", round(ours_bbox["per_category"][1], 3))
print("categories without ground truth here:", sum(v == -1 for v in ours_bbox["per_category"].values()))
print("AP = mean over defined (T, R, K):", round(ours_bbox["AP"], 4))

# %% [markdown]
# ## 4. Crowds, area ranges and the detection cap
#
# **Crowds.** A region marked `iscrowd` ("a crowd of people") is not one object. A detection
# inside it is neither a hit nor a false positive: it is *ignored*. The IoU with a crowd is
# intersection / detection area (a small box well inside the crowd gets IoU 1), and a crowd may
# absorb any number of detections. Here a crowd region and two detections inside it, next to
# object 0:

# %%
gt_with_crowd = np.array([[10, 10, 40, 40], [55, 5, 40, 50]], dtype=float)  # object 1 is now a crowd
crowd = np.array([False, True])
dets = np.array([[60, 10, 10, 20], [75, 25, 15, 20], [12, 12, 40, 40]], dtype=float)
crowd_ious = ref.box_iou_xywh(dets, gt_with_crowd, crowd)
print("IoU with the crowd = intersection / detection area:", crowd_ious[:, 1])
m, ig, _ = ref.evaluate_image(crowd_ious, dets[:, 2] * dets[:, 3], gt_with_crowd[:, 2] * gt_with_crowd[:, 3],
                              crowd, ref.AREA_RANGES["all"])
print("at t = 0.5, matched:", m[0], " ignored:", ig[0])

# %% [markdown]
# **Area ranges.** APs, APm, APl repeat everything for small (area < 32²), medium (32² to 96²) and
# large (> 96²) objects. An object outside the range is ignored (like a crowd), and so is an
# *unmatched* detection outside it — but a detection that matched an in-range object counts
# whatever its own size. An object's area is the annotation's `area` field (the area of its
# segmentation, not of its box); a detection's is w × h for boxes and its pixel count for masks.
#
# **The cap.** Only the `max_dets` highest-scoring detections of each image *and category* count
# (1, 10, 100: AR1, AR10, AR100; AP uses 100). AR is the recall reached at the end of the list,
# averaged over thresholds and categories.

# %%
for name in ("AP", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl"):
    print(f"{name:>5} {ours_bbox[name]:.3f}")

# %% [markdown]
# ## 5. Ours and pycocotools, side by side
#
# `pycocotools_evaluate` runs the official `COCOeval` (its printing silenced) on the same gt dict
# and the same records. Boxes on all 158 images, and masks too: the mask IoU decodes the RLEs
# and counts shared pixels.

# %%
table = {}
for iou_type in ("bbox", "segm"):
    table[iou_type] = (ref.coco_evaluate(gt, sim, iou_type), pycocotools_evaluate(gt, sim, iou_type))
print(f"{'':>6} {'bbox ours':>10} {'pycoco':>8} {'segm ours':>10} {'pycoco':>8}")
for name in ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl"):
    row = [table[t][s][name] for t in ("bbox", "segm") for s in (0, 1)]
    print(f"{name:>6} {row[0]:>10.4f} {row[1]:>8.4f} {row[2]:>10.4f} {row[3]:>8.4f}")
for iou_type, (ours, theirs) in table.items():
    same = np.allclose(ours["precision"], theirs["precision"], atol=1e-4) and all(
        abs(ours[n] - theirs[n]) < 1e-4 for n in ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR100"))
    print(f"{iou_type}: every number and the whole precision array agree to 1e-4: {same}")

# %% [markdown]
# The torch twin does the IoUs, the matching (one step per detection, all thresholds and area
# ranges at once) and the accumulation with tensors; it agrees with the reference:

# %%
twin_bbox = ops.coco_evaluate(gt, sim, "bbox")
print("twin AP:", round(twin_bbox["AP"], 4),
      " allclose:", torch.allclose(twin_bbox["precision"], torch.from_numpy(ours_bbox["precision"]), atol=1e-6))

# %% [markdown]
# ### Pitfalls
#
# - **The cap is per image and category**, not per image: a model that outputs 100 detections per
#   image is never cut by it, but one that outputs 100 per class would be scored on up to 8000.
# - **A mask result that carries a `bbox`**: pycocotools' `loadRes` then takes the *box* area
#   w × h as the detection's area, which moves detections between the area ranges.
#   `pycocotools_evaluate` drops the `bbox` from segm results (detectron2 does the same); ours
#   uses the mask's pixel count.
# - **Ties in score** are broken by input order (a stable sort), within an image and then across
#   images in id order. Another sort gives slightly different AP — that is why we use mergesort,
#   like pycocotools.
# - **−1 is "undefined", not a score**: a category or area range without ground truth is left out
#   of the means. Averaging the −1s in would be a silent bug.
#
# Lesson 10 already scored a trained model this way; lesson 12 does it on real photos:
# `mrcnn_edu.engine.evaluate.evaluate`
# runs the model in eval mode over a split (post-processing as in section 1), turns its output
# into COCO records with `detections_to_coco_results`, and scores them with this lesson's
# evaluator and with pycocotools, side by side.

# %% [markdown]
# ## Your turn: AP of one category
#
# Write section 3's computation for one category at one IoU threshold, from detections that are
# already matched: each one is a true positive or not. `check` compares your AP with the
# package's on the toy of section 3, on edge cases (no detections, no hits, recall that never
# reaches 1, recall exactly on the 0.01 grid, a dip in precision, tied scores) and on random
# lists of 400 and 2000 detections, and names the most likely slip when a case fails.
# `hint("average_precision")` gives a hint, one more per call.

# %%
def average_precision(scores, is_true_positive, num_gt):
    """COCO's AP of one category at one IoU threshold, from detections already matched.
    scores (D,) float; is_true_positive (D,) bool (the detection matched an object); num_gt > 0
    objects. Returns a float in [0, 1]:
    1. sort the detections by score, highest first (stable: ties keep their input order);
    2. after each detection: recall = TP / num_gt, precision = TP / (TP + FP);
    3. make precision non-increasing: precision[i] = max(precision[i:]);
    4. AP = mean over the 101 recall thresholds r = np.linspace(0, 1, 101) (pycocotools' grid:
       build it this way, not as k / 100: its 0.7 is 0.7000000000000001, so a recall of exactly
       0.7 does not reach it) of the precision at the first detection whose recall >= r (0 where
       recall never reaches r).
    """
    raise NotImplementedError

# %%
from mrcnn_edu.exercises import check, hint

check("average_precision", average_precision)

# %% [markdown]
# ## Summary
#
# - Post-processing: score > 0.05, per-class NMS at 0.5, top 100 (Detectron's and torchvision's
#   numbers; the paper gives the 100), then the mask head on the kept boxes, using only the
#   predicted class's channel, pasted at 0.5; then COCO records.
# - A detection is a TP at threshold $t$ if it greedily (by score) takes a free ground truth of
#   its class with IoU ≥ $t$; crowds and out-of-range objects are ignored, not missed.
# - AP = mean over 10 IoU thresholds × 101 interpolated recall points × categories; AR = mean
#   final recall. Our numpy reference and torch twin reproduce pycocotools (every printed digit
#   here, and the whole precision array to 1e-4).
#
# ## Exercises
#
# 1. In the toy of section 2, give detection 1 a score of 0.95. Predict AP50 before running it.
# 2. Remove the interpolation (use the raw precision at each recall point). Is AP higher or lower?
# 3. Call `simulate_detections` with `jitter=0.05` and `jitter=0.2`: which of AP50 and AP75
#    moves more, and why?
# 4. Evaluate with `max_dets=(1, 5, 10)` and compare AR10 with the default run's AR10.
