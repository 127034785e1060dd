# %% [markdown]
# # 04 · Non-maximum suppression and anchor matching
#
# Two decisions about many boxes at once.
#
# - **NMS**, at inference (and to thin out RPN proposals): a detector fires on many overlapping
#   boxes around each object; keep the best-scoring one and drop those that overlap it too much.
# - **Matching**, at training: which anchors (or proposals) should learn "object", which
#   "background", and which should be left out of the loss? Then **sampling** picks a balanced
#   minibatch of them.
#
# Code: `mrcnn_edu/reference/nms.py`, `mrcnn_edu/reference/matching.py` and their torch twins
# in `mrcnn_edu/ops/`.

# %%
# You are here: this lesson's stages in the pipeline map of lesson 00.
import matplotlib.pyplot as plt

from mrcnn_edu import viz

viz.pipeline_map(highlight=4, compact=True)
plt.show()

# %%
import inspect

import matplotlib.pyplot as plt
import numpy as np
import torch

from mrcnn_edu import ops, reference as ref, viz
from mrcnn_edu.data import CocoDataset, resolve_data_root
from mrcnn_edu.ops.nms import resolve_block
from mrcnn_edu.reference.nms import greedy_nms_kernel

np.set_printoptions(precision=3, suppress=True)

# %% [markdown]
# ## 1. Greedy NMS
#
# The rule, exactly as torchvision implements it: visit the boxes from the highest score down;
# keep a box unless its IoU with a box **already kept** is **> iou_threshold** (equal is kept).
#
# Hand example: A = (0, 0, 10, 10), B = (3, 0, 13, 10), C = (6, 0, 16, 10), scores 0.9, 0.8, 0.7.
# IoU(A, B) = IoU(B, C) = 70 / 130 ≈ 0.54 and IoU(A, C) = 40 / 160 = 0.25. At threshold 0.5:
# keep A; B overlaps A by 0.54 > 0.5, drop it; C overlaps A (kept) only by 0.25 — it survives,
# because B, which would have suppressed it, was itself dropped.

# %%
abc = np.array([[0.0, 0, 10, 10], [3, 0, 13, 10], [6, 0, 16, 10]])
print(ref.box_iou(abc, abc))
print("kept:", ref.nms(abc, np.array([0.9, 0.8, 0.7]), 0.5))

# %% [markdown]
# At the threshold itself: (0, 0, 4, 1) and (0, 0, 2, 1) have IoU exactly 2 / 4 = 0.5.

# %%
pair = np.array([[0.0, 0, 4, 1], [0, 0, 2, 1]])
print("threshold 0.5 ->", ref.nms(pair, np.array([0.9, 0.8]), 0.5), " (IoU = threshold: kept)")
print("threshold 0.49 ->", ref.nms(pair, np.array([0.9, 0.8]), 0.49), " (IoU > threshold: dropped)")

# %% [markdown]
# The reference sorts the scores (stable: equal scores are visited lower index first) and runs
# this numba kernel, a loop you can read line by line:

# %%
print(inspect.getsource(greedy_nms_kernel))

# %% [markdown]
# ## 2. NMS step by step, on a real image
#
# We fake a detector's output: 12 jittered copies of each ground-truth box of a subset image,
# scored by how well they fit (IoU with their object, plus noise). Greedy NMS has a useful
# property: the decisions about the first k boxes (in score order) depend only on those k boxes,
# so `nms` of the top-k boxes *is* the state of the sweep after k steps. We draw that state:
# kept (orange), suppressed (grey, dashed), not yet visited (blue, faint).

# %%
dataset = CocoDataset(resolve_data_root(), split="train2017")
image, target = dataset[4]
gt = target["boxes"].numpy().astype(np.float64)  # (G, 4)
rng = np.random.default_rng(0)
owner = np.repeat(np.arange(len(gt)), 12)  # (P,) which object each fake detection is around
size = np.concatenate([gt[:, 2:] - gt[:, :2]] * 2, axis=1)[owner]  # (P, 4)
dets = gt[owner] + rng.normal(0, 0.07, (len(owner), 4)) * size  # (P, 4)
dets[:, 2:] = np.maximum(dets[:, 2:], dets[:, :2] + 2)
fit = ref.box_iou(dets, gt)[np.arange(len(owner)), owner]  # (P,) IoU with its own object
scores = np.clip(fit + rng.normal(0, 0.05, len(owner)), 0, 1)
order = np.argsort(-scores, kind="stable")
print(f"{len(dets)} detections around {len(gt)} objects")


# %%
def draw_sweep(ax, k, threshold=0.5):
    """The NMS state after visiting the k best-scoring detections."""
    visited = order[:k]
    kept = visited[ref.nms(dets[visited], scores[visited], threshold)]
    dropped = np.setdiff1d(visited, kept)
    viz.show_image(image, ax=ax, title=f"after {k} steps: {len(kept)} kept, {len(dropped)} dropped")
    viz.draw_boxes(dets[order[k:]], ax=ax, color=viz.PROPOSAL_COLOR, linewidth=0.8, alpha=0.4)
    viz.draw_boxes(dets[dropped], ax=ax, color=viz.ANCHOR_COLOR, linewidth=1.0, linestyle="--")
    viz.draw_boxes(dets[kept], ax=ax, color=viz.DETECTION_COLOR, linewidth=2.0)
    ax.set_xlim(gt[:, 0].min() - 40, gt[:, 2].max() + 40)  # zoom in on the objects
    ax.set_ylim(gt[:, 3].max() + 40, gt[:, 1].min() - 40)
    return ax


fig, axes = plt.subplots(2, 2, figsize=(12, 6))
for ax, k in zip(axes.ravel(), [1, 6, 20, len(dets)]):
    draw_sweep(ax, k)
fig.tight_layout()
plt.show()

# %%
kept = ref.nms(dets, scores, 0.5)
print("kept:", kept, "| their objects:", owner[kept])
for threshold in (0.3, 0.5, 0.7, 0.9):
    print(f"threshold {threshold}: {len(ref.nms(dets, scores, threshold)):2d} kept")

# %% [markdown]
# One detection per object at 0.5 (and at 0.3 here); a higher threshold lets near-duplicates
# through. A lower one risks suppressing true neighbours: objects that really overlap, like a
# rider on a horse or two horses side by side.

# %% [markdown]
# ## 3. The torch twin, and why it is not a loop
#
# The model runs NMS on up to 2,000 proposals per FPN level of every training image (1,000 at
# inference), then per class on the box head's detections, so `mrcnn_edu.ops.nms` must be quick
# without a compiled kernel. It sweeps the sorted boxes in blocks of 256. Inside a block, the
# greedy decisions solve keep[j] = not any(keep[i] and IoU(i, j) > t, i < j): a triangular system
# with one solution, found by iterating from "keep everything" until nothing changes (a few
# matrix-vector products). The block's kept boxes then suppress every later box at once. On a
# GPU the blocks hold up to 4,096 boxes and the fixed point is tested only every 8 steps, since
# there each block and each test waits for the device; the kept boxes are the same.

# %%
print(inspect.getsource(resolve_block))

# %%
big_rng = np.random.default_rng(1)
centres = big_rng.uniform(0, 1000, (3000, 2))
many = np.concatenate([centres, centres + big_rng.uniform(20, 200, (3000, 2))], axis=1)  # (3000, 4)
many_scores = big_rng.random(3000)
want = ref.nms(many, many_scores, 0.7)
got = ops.nms(torch.tensor(many), torch.tensor(many_scores), 0.7)
print(f"{len(want)} of 3000 kept; twin identical: {np.array_equal(got.numpy(), want)}")

# %% [markdown]
# ## 4. Batched NMS: per class
#
# After the box head, each class is suppressed separately: a person riding a horse must not
# remove the horse. `batched_nms(boxes, scores, labels, t)` shifts each label's boxes by
# label × (max - min + 1) so that boxes of different labels cannot overlap, then runs one `nms`
# (torchvision's trick, with min subtracted so it holds for negative coordinates too).

# %%
rider = np.array([[10.0, 0, 50, 60], [12, 10, 48, 80]])  # a person and the horse below, IoU ~0.6
print("IoU:", ref.box_iou(rider[:1], rider[1:]).round(3))
print("nms         ->", ref.nms(rider, np.array([0.9, 0.8]), 0.5))
print("batched_nms ->", ref.batched_nms(rider, np.array([0.9, 0.8]), np.array([1, 19]), 0.5))
labels = big_rng.integers(1, 6, 3000)
same = np.array_equal(ops.batched_nms(torch.tensor(many), torch.tensor(many_scores), torch.tensor(labels), 0.7).numpy(),
                      ref.batched_nms(many, many_scores, labels, 0.7))
print("twin identical on 3000 boxes, 5 labels:", same)

# %% [markdown]
# **Pitfall: ties.** With equal scores the order decides which box survives. We sort stably
# (lower index first); torchvision's sort is not stable, so on tied scores the two can keep
# different — equally valid — boxes.

# %% [markdown]
# ## 5. Anchor matching
#
# The RPN's training targets (Faster R-CNN, §3.1.2): an anchor is **positive** if its IoU with
# some ground-truth box is >= 0.7, **negative** if its IoU with every ground-truth box is < 0.3,
# and **ignored** in between. (The paper says "higher than 0.7"; torchvision's Matcher, and so
# we, count exactly 0.7 as positive.) Because some objects have no anchor at 0.7 (lesson 02),
# each object also makes its best anchor(s) positive: the **low-quality matches**.
#
# `match_anchors(iou)` takes the (G, A) matrix `box_iou(gt_boxes, anchors)` — ground truth along
# the rows, like torchvision's Matcher — and returns two (A,) int64 arrays: the matched gt index
# (meaningful where the label is 1) and the label (1 / 0 / -1).
#
# Hand example, 2 objects × 4 anchors:

# %%
hand_iou = np.array([[0.80, 0.50, 0.10, 0.00],
                     [0.20, 0.65, 0.25, 0.00]])
print("thresholds only:", ref.match_anchors(hand_iou, allow_low_quality=False))
print("+ low quality:  ", ref.match_anchors(hand_iou))

# %% [markdown]
# Anchor 0 (0.8 with gt 0) is positive by threshold. Anchor 1's best is 0.65 with gt 1: ignored
# by the thresholds, but it is gt 1's best anchor, so the low-quality rule makes it positive.
# Anchors 2 and 3 are below 0.3 everywhere: negative. Details that follow torchvision:
# all anchors tied for a gt's best are promoted; a promoted anchor keeps its *own* best gt as
# match (it differs from the gt that promoted it only if it overlaps another gt even more).
# One guard torchvision's Matcher lacks: a gt that touches no anchor at all (best IoU 0)
# promotes nothing here, where in torchvision every anchor ties at that best of 0 and is
# promoted.

# %%
print(inspect.getsource(ref.match_anchors))

# %% [markdown]
# ## 6. On a real image, and sampling
#
# All anchors of the image against its objects. Most anchors are negatives, several hundred are
# ignored, a handful are positive. The loss then sees a **sample**: `sample_labels(labels, 256,
# 0.5)` keeps at most 128 positives, fills up to 256 with negatives, and sets the rest to -1.
# (The box head does the same later with 512 proposals, a quarter positive.)

# %%
height, width = image.shape[1:]
anchors = np.concatenate(ref.generate_anchors((height, width)))  # (A, 4)
iou = ref.box_iou(gt, anchors)  # (G, A)
matched, labels = ref.match_anchors(iou, high=0.7, low=0.3)
strict = ref.match_anchors(iou, allow_low_quality=False)[1]
print(f"{len(anchors)} anchors: {(labels == 1).sum()} positive "
      f"({(strict == 1).sum()} by threshold, {(labels == 1).sum() - (strict == 1).sum()} low-quality), "
      f"{(labels == 0).sum()} negative, {(labels == -1).sum()} ignored")
print("positives per object:", np.bincount(matched[labels == 1], minlength=len(gt)))
sampled = ref.sample_labels(labels, 256, 0.5, generator=0)
print(f"sampled: {(sampled == 1).sum()} positive + {(sampled == 0).sum()} negative")

# %%
fig, (left, right) = plt.subplots(1, 2, figsize=(14, 4.8))
viz.show_image(image, ax=left, title="positive (red) and ignored (olive) anchors, ground truth (green)")
ignored = np.flatnonzero(labels == -1)
shown = np.concatenate([np.flatnonzero(labels == 1), rng.choice(ignored, 40, replace=False)])
viz.draw_anchor_labels(anchors[shown], labels[shown], ax=left)
viz.draw_boxes(gt, ax=left, color=viz.GT_COLOR, linewidth=2)
viz.show_image(image, ax=right, title="the 256 sampled anchors: positive (red), negative (grey)")
picked = np.flatnonzero(sampled >= 0)
viz.draw_anchor_labels(anchors[picked], sampled[picked], ax=right, linewidth=0.7)
viz.draw_boxes(gt, ax=right, color=viz.GT_COLOR, linewidth=2)
for ax in (left, right):
    ax.set_xlim(0, width); ax.set_ylim(height, 0)
fig.tight_layout()
plt.show()

# %% [markdown]
# On this image at its original size, no anchor reaches IoU 0.7 with any horse: every positive
# comes from the low-quality rule. (At the model's input size, 800 pixels on the shorter side,
# lesson 02 found that 38% of the subset's objects reach 0.7.) Without that rule these objects
# would teach the RPN nothing.
#
# The sampled negatives are spread over the whole image, mostly small P2 anchors (they are three
# quarters of all anchors): the RPN learns "background" everywhere, "object" on the few
# positives.

# %% [markdown]
# ## 7. The twins agree
#
# `mrcnn_edu.ops.match_anchors` gives identical indices and labels. `ops.sample_labels` gives the
# same *counts*; it draws with a torch.Generator, so the picked anchors differ from the
# reference's.

# %%
t_matched, t_labels = ops.match_anchors(torch.tensor(iou))
print("match identical:", np.array_equal(t_matched.numpy(), matched), np.array_equal(t_labels.numpy(), labels))
t_sampled = ops.sample_labels(t_labels, 256, 0.5, generator=0)
print("sample counts:", int((t_sampled == 1).sum()), "+", int((t_sampled == 0).sum()))

# %% [markdown]
# ## Your turn: greedy NMS and anchor matching
#
# Write the greedy `nms` of section 1 and the `match_anchors` of section 5 yourself,
# replacing each stub's `raise NotImplementedError`, and run the check after each. The
# NMS cases include an IoU exactly at the threshold, equal scores, scores out of index
# order and a chain A-B-C; the matching cases include IoUs of exactly 0.7 and 0.3, a gt
# with two anchors tied at its best IoU, and a gt that touches no anchor. A failing case
# shows the smallest failing input and names a classic slip when it recognises one.
# `hint("nms")` and `hint("match_anchors")` give hints, more at each call; the last one is the solution.

# %%
def nms(boxes, scores, iou_threshold):
    """Greedy non-maximum suppression. boxes (N, 4) (x1, y1, x2, y2), scores (N,).
    Visit the boxes from the highest score down (equal scores: lower index first); keep a box
    unless its IoU with a box already kept is > iou_threshold (equal to it: kept).
    Returns keep (K,) int64: indices into boxes of the kept boxes, highest score first.
    N may be 0.
    """
    raise NotImplementedError  # replace this line with your code

# %%
from mrcnn_edu.exercises import check, hint

check("nms", nms)

# %%
def match_anchors(iou, high=0.7, low=0.3, allow_low_quality=True):
    """Match every anchor to a ground-truth box and label it (torchvision's Matcher).
    iou (G, A): IoU of each of G gt boxes with each of A anchors. Returns (matched_idx, labels):
    matched_idx (A,) int64: the gt with the highest IoU for each anchor (first on ties);
    only checked where the label is 1. labels (A,) int64: 1 if that highest IoU >= high,
    0 if < low, -1 (ignored) in between. With allow_low_quality, every anchor that reaches
    some gt's highest IoU (ties included) is made positive too, unless that highest IoU is 0.
    G = 0: every label 0, matched_idx 0.
    """
    raise NotImplementedError  # replace this line with your code

# %%
check("match_anchors", match_anchors)


# %% [markdown]
# ## Summary
#
# - NMS: by descending score, drop a box whose IoU with a kept box is > threshold; equal is
#   kept; ties in score visited lower index first. `batched_nms` does it per label.
# - Matching (IoU matrix (G, A)): >= 0.7 positive, < 0.3 negative, between ignored; each object
#   also promotes its best anchor(s). Index and label are returned separately.
# - Sampling: at most `batch_size * positive_fraction` positives, negatives fill the rest,
#   everything else is ignored: (256, 0.5) for the RPN, (512, 0.25) for the heads.
#
# ## Exercises
#
# 1. Show that greedy NMS of the top-k boxes equals the first k decisions of NMS of all boxes.
# 2. Soft-NMS decays the scores of overlapping boxes instead of dropping them. Write it with
#    `box_iou` and compare the kept sets on the fake detections above.
# 3. Count the anchors per object promoted by the low-quality rule over the whole subset. Which
#    objects depend on it?
# 4. What happens to the RPN loss if an image has no objects? What does `match_anchors` return?
