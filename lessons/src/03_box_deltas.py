# %% [markdown]
# # 03 · Box deltas: encode and decode
#
# The RPN and the box head never output box corners. They output four numbers that say how to
# move and stretch a reference box (an anchor, or a proposal) onto the object. Faster R-CNN
# (Ren et al., 2015, eq. 2):
#
# $$t_x = (x - x_a) / w_a,\quad t_y = (y - y_a) / h_a,\quad t_w = \log(w / w_a),\quad t_h = \log(h / h_a)$$
#
# where (x, y) is a box centre and (w, h) its size, subscript a for the anchor. We call the
# direction anchor + target → deltas **encode** and anchor + deltas → box **decode**, and follow
# torchvision's BoxCoder exactly: w = x2 - x1, centre = x1 + w / 2, optional weights
# (wx, wy, ww, wh) multiplying the four deltas, and a clamp on dw, dh before `exp`.
#
# Code: `mrcnn_edu/reference/box_coder.py` and its twin `mrcnn_edu/ops/box_coder.py`.

# %%
import inspect
import math

import matplotlib.pyplot as plt
import numpy as np
import torch

from mrcnn_edu import ops, reference as ref, viz
from mrcnn_edu.data import CocoDataset, resolve_data_root

np.set_printoptions(precision=3, suppress=True)

# %% [markdown]
# ## 1. A hand example
#
# Anchor (0, 0, 10, 10): centre (5, 5), 10 × 10. Target (5, 0, 25, 40): centre (15, 20), 20 × 40.
#
# - dx = (15 - 5) / 10 = 1, dy = (20 - 5) / 10 = 1.5
# - dw = log(20 / 10) = log 2 ≈ 0.693, dh = log(40 / 10) = log 4 ≈ 1.386

# %%
anchor = np.array([[0.0, 0, 10, 10]])
target = np.array([[5.0, 0, 25, 40]])
deltas = ref.encode_boxes(anchor, target)
print("deltas:", deltas)
print("decoded:", ref.decode_boxes(anchor, deltas))

# %%
fig, ax = plt.subplots(figsize=(4, 5))
viz.draw_boxes(anchor, ax=ax, color=viz.ANCHOR_COLOR, labels=[0], class_names=["anchor"])
viz.draw_boxes(target, ax=ax, color=viz.GT_COLOR, labels=[0], class_names=["target"])
ax.annotate("", xy=(15, 20), xytext=(5, 5), arrowprops=dict(arrowstyle="->"))
ax.text(10.5, 11, "(dx, dy) = (1, 1.5)\nin anchor widths", fontsize=8)
ax.set_xlim(-2, 28); ax.set_ylim(42, -2); ax.set_aspect("equal"); ax.grid(alpha=0.3)
ax.set_title("dw = log 2, dh = log 4")
plt.show()

# %%
print(inspect.getsource(ref.encode_boxes))

# %%
print(inspect.getsource(ref.decode_boxes))

# %% [markdown]
# ## 2. Why log space for widths?
#
# The offsets are divided by the anchor's size, so a scene scaled up 2× has the same deltas.
# For the size, a ratio is the natural measure — "twice as wide" and "half as wide" should be
# equally far from "same width", in opposite directions. The log does exactly that, and its
# inverse, `exp`, can only give a positive width whatever the network predicts. The linear
# alternative (w - w_a) / w_a is lopsided (-0.5 for half, +1 for double), bounded below by -1,
# and a prediction below -1 decodes to a negative width.

# %%
ratios = np.array([0.25, 0.5, 1.0, 2.0, 4.0])
targets = np.stack([np.zeros(5), np.zeros(5), 10 * ratios, np.full(5, 10.0)], axis=1)  # widths 2.5..40
log_dw = ref.encode_boxes(np.repeat(anchor, 5, axis=0), targets)[:, 2]
for r, d in zip(ratios, log_dw):
    print(f"w / w_a = {r:4.2f}:  log-space dw = {d:+.3f}   linear (w - w_a) / w_a = {r - 1:+.3f}")

# %% [markdown]
# ## 3. The weights (10, 10, 5, 5)
#
# The RPN encodes with weights (1, 1, 1, 1). The box head refines *proposals* that already
# overlap their object (IoU >= 0.5), so its raw deltas are small: around 0.1 for the centre,
# 0.2 for the log-size. Multiplying by (10, 10, 5, 5) brings them to roughly unit scale, which
# suits the smooth-L1 loss and a randomly initialised linear layer. Here are jittered copies of
# the subset's ground-truth boxes, kept when IoU >= 0.5 as the head's positives are:

# %%
dataset = CocoDataset(resolve_data_root(), split="train2017")
gt = np.concatenate([dataset.load_target(i)["boxes"].numpy() for i in range(40)]).astype(np.float64)
rng = np.random.default_rng(0)
gt = np.repeat(gt, 20, axis=0)  # (G * 20, 4)
wh = np.concatenate([gt[:, 2:] - gt[:, :2]] * 2, axis=1)  # (G * 20, 4) box sizes
proposals = gt + rng.normal(0, 0.12, gt.shape) * wh  # each corner moved by ~12% of the size
proposals[:, 2:] = np.maximum(proposals[:, 2:], proposals[:, :2] + 1)  # keep x1 < x2, y1 < y2
iou = np.diag(ref.box_iou(proposals[:2000], gt[:2000]))  # only the pairs themselves
keep = iou >= 0.5
print(f"{keep.sum()} proposal / ground-truth pairs with IoU >= 0.5")
raw = ref.encode_boxes(proposals[:2000][keep], gt[:2000][keep])
weighted = ref.encode_boxes(proposals[:2000][keep], gt[:2000][keep], weights=(10.0, 10.0, 5.0, 5.0))
print("std of raw deltas (dx, dy, dw, dh):     ", raw.std(axis=0))
print("std with weights (10, 10, 5, 5):        ", weighted.std(axis=0))

# %% [markdown]
# `decode_boxes` divides by the same weights, so encode and decode must always be called with
# the same weights: `decode_boxes(anchors, encode_boxes(anchors, targets, w), w)` is `targets`.

# %% [markdown]
# ## 4. The clamp
#
# Early in training the network can predict dw = 20, and exp(20) ≈ 5 × 10⁸: an absurd box whose
# area overflows float32 and turns the loss into NaN. torchvision caps dw / ww and dh / wh at
# log(1000 / 16) ≈ 4.135 before the `exp`, so a decoded box is at most 62.5 times its anchor's
# width or height. Therefore decode undoes encode **except** where the target is more than 62.5
# times bigger than its anchor.

# %%
print("clamp: log(1000 / 16) =", round(math.log(1000 / 16), 3))
wild = np.array([[0.0, 0.0, 20.0, 0.0]])
box = ref.decode_boxes(anchor, wild)
print("dw = 20 decodes to width", (box[0, 2] - box[0, 0]).round(1), "= 62.5 x the anchor's 10")

# %%
rng = np.random.default_rng(1)
xy = rng.uniform(0, 500, (1000, 2))
anchors = np.concatenate([xy, xy + rng.uniform(8, 64, (1000, 2))], axis=1)  # (1000, 4)
xy = rng.uniform(0, 500, (1000, 2))
targets = np.concatenate([xy, xy + rng.uniform(8, 1500, (1000, 2))], axis=1)  # some > 62.5 x
round_trip = ref.decode_boxes(anchors, ref.encode_boxes(anchors, targets))
clamped = ((targets[:, 2] - targets[:, 0]) / (anchors[:, 2] - anchors[:, 0]) > 62.5) | \
          ((targets[:, 3] - targets[:, 1]) / (anchors[:, 3] - anchors[:, 1]) > 62.5)
same = np.isclose(round_trip, targets, rtol=1e-9).all(axis=1)
print(f"round trip exact for {same.sum()} of 1000 pairs; {clamped.sum()} pairs need > 62.5 x;")
print("the inexact ones are exactly the clamped ones:", np.array_equal(~same, clamped))

# %% [markdown]
# ## 5. The torch twin
#
# The model uses `mrcnn_edu.ops.encode_boxes` / `decode_boxes`, the same lines in torch. In
# float64 they agree with the reference to rounding. `decode_boxes` also accepts one box per
# class: deltas of shape (N, 4 · C) give boxes (N, 4 · C), as the box head needs.

# %%
twin_deltas = ops.encode_boxes(torch.tensor(anchors), torch.tensor(targets), (10.0, 10.0, 5.0, 5.0))
want = ref.encode_boxes(anchors, targets, (10.0, 10.0, 5.0, 5.0))
print("encode allclose:", np.allclose(twin_deltas.numpy(), want, rtol=1e-13, atol=1e-13))
twin_boxes = ops.decode_boxes(torch.tensor(anchors), twin_deltas, (10.0, 10.0, 5.0, 5.0))
print("decode allclose:", np.allclose(twin_boxes.numpy(), ref.decode_boxes(anchors, want, (10.0, 10.0, 5.0, 5.0)),
                                      rtol=1e-13))
per_class = ops.decode_boxes(torch.tensor(anchors), torch.zeros(1000, 4 * 3, dtype=torch.float64))
print("per-class decode shape:", tuple(per_class.shape))

# %% [markdown]
# ## 6. Pitfall: dw = log((w - w') / w')
#
# Some write-ups give the width delta as log((w - w') / w'), w' the anchor's width. That mixes
# the linear and the log forms, and it breaks on the most common case of all: a target as wide
# as its anchor gives log 0 = -∞, and any narrower target takes the log of a negative number.

# %%
widths = np.array([5.0, 10.0, 20.0])  # anchor width w' = 10
with np.errstate(divide="ignore", invalid="ignore"):
    wrong = np.log((widths - 10) / 10)
right = np.log(widths / 10)
for w, bad, good in zip(widths, wrong, right):
    print(f"w = {w:4.1f}:  log((w - w') / w') = {bad:+.3f}   log(w / w') = {good:+.3f}")

# %% [markdown]
# Even where it is defined, it is not what decode inverts: decode computes w = w' · exp(dw),
# so feeding it log((w - w') / w') = log 1 = 0 for a target twice as wide returns the anchor's
# width, not the target's.
#
# ## Summary
#
# - encode: dx = wx (gx - ax) / aw, dy likewise, dw = ww log(gw / aw), dh likewise; centres at
#   x1 + w / 2, widths x2 - x1. decode inverts it.
# - Log space makes size changes symmetric and decoded widths positive; dividing by the anchor's
#   size makes deltas scale-invariant.
# - RPN weights (1, 1, 1, 1); box head (10, 10, 5, 5) to bring small refinements to unit scale.
# - decode clamps dw / ww, dh / wh at log(1000 / 16): decode undoes encode except there.
#
# ## Exercises
#
# 1. Prove that the deltas are unchanged when anchor and target are both scaled by s > 0 and
#    both shifted by the same (tx, ty).
# 2. With weights (10, 10, 5, 5), what raw network output is needed to move a proposal by half
#    its width?
# 3. Why does the clamp act only on dw and dh, not on dx and dy?
# 4. Detectron (v1) used w = x2 - x1 + 1 and x2 = cx + w / 2 - 1. Encode the hand example with
#    that convention and compare.
