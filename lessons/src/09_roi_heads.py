# %% [markdown]
# # 09 · The RoI heads: classes, boxes and masks
#
# The second stage takes the RPN's proposals, cuts a fixed-size feature grid out of the FPN for
# each (RoIAlign, lesson 06), and runs three small heads on it. He et al. 2017, section 3:
#
# > Mask R-CNN adopts the same two-stage procedure, with an identical first stage (which is RPN).
# > In the second stage, in parallel to predicting the class and box offset, Mask R-CNN also
# > outputs a binary mask for each RoI. ... Formally, during training, we define a multi-task
# > loss on each sampled RoI as $L = L_{cls} + L_{box} + L_{mask}$.
#
# In training the heads do not see every proposal: the ground truth is added, each RoI is matched
# at IoU 0.5, and a fixed number are sampled. This lesson follows one image through
# `RoIHeads.losses` step by step, with the untrained `tiny` model.
# Code: `mrcnn_edu/model/roi_heads.py`.

# %%
# You are here: this lesson's stages in the pipeline map of lesson 00.
import matplotlib.pyplot as plt

from mrcnn_edu import viz

viz.pipeline_map(highlight=9, compact=True)
plt.show()

# %%
import dataclasses
import inspect
import math

import matplotlib.pyplot as plt
import numpy as np
import torch

from mrcnn_edu import ops, reference as ref, viz
from mrcnn_edu.config import preset
from mrcnn_edu.data import CocoDataset, resolve_data_root
from mrcnn_edu.model import MaskRCNN, RoIHeads
from mrcnn_edu.model.roi_heads import BoxHead, MaskHead, as_rois

np.set_printoptions(precision=3, suppress=True)
torch.set_printoptions(precision=3, sci_mode=False)
torch.set_num_threads(1)  # the same result on every run of one machine

# %% [markdown]
# ## 1. Proposals from an untrained RPN
#
# The model and RPN as in lesson 08 (seed 0), on another image, with objects of several sizes:
# a couch, two people and two hot dogs. In training mode the RPN returns 500 proposals. As in
# lesson 08, a cell whose numbers come from the network's outputs is marked
# `# NBVAL_IGNORE_OUTPUT` (another CPU may change their last digits), and the cell after it
# checks what the text says about them.

# %%
dataset = CocoDataset(resolve_data_root(), split="train2017")
image, target = dataset[6]
cfg = dataclasses.replace(preset("tiny"), num_classes=dataset.num_classes)
torch.manual_seed(0)
model = MaskRCNN(cfg).train()

batch, image_sizes, targets = model.transform([image], [target])  # (1, 3, H_pad, W_pad)
(h, w), gt = image_sizes[0], targets[0]["boxes"]  # gt (G, 4) in resized pixels
gt_labels = targets[0]["labels"]
names = [dataset.class_names[int(k)] for k in gt_labels]
with torch.no_grad():
    features = model.fpn(model.backbone(batch))  # [P2..P6]
    proposals, _ = model.rpn(features, image_sizes, batch.shape[-2:])  # [(500, 4)]
shown = batch[0, :, :h, :w] * model.transform.pixel_std + model.transform.pixel_mean  # (3, h, w)
print(f"resized {(h, w)}, padded {tuple(batch.shape[-2:])}, {len(proposals[0])} proposals")
print("objects:", names)

# %%
# NBVAL_IGNORE_OUTPUT
best_iou = ops.box_iou(gt, proposals[0]).max(dim=1).values  # (G,)
print("best proposal IoU per object:", best_iou.numpy())

# %%
no_hit = bool((best_iou < 0.5).all())
assert no_hit
print("no object has a proposal at IoU >= 0.5:", no_hit)

# %% [markdown]
# ## 2. Add the ground truth, match at 0.5, sample
#
# The paper (section 3.1): "As in Fast R-CNN, an RoI is considered positive if it has IoU with a
# ground-truth box of at least 0.5 and negative otherwise. ... Each mini-batch has 2 images per
# GPU and each image has N sampled RoIs, with a ratio of 1:3 of positive to negatives. N is 64
# for the C4 backbone and 512 for FPN." Three rules (torchvision's; Detectron's are the same):
#
# - the ground-truth boxes are appended to the proposals, so every object has at least one
#   perfect RoI, from the first iteration on;
# - an RoI is foreground if its IoU with some ground truth is >= 0.5, background if it is in
#   [0, 0.5) (no ignored band, no low-quality matches). That is the rule of Faster R-CNN's
#   end-to-end training code, of Detectron and of torchvision. The paper says "as in Fast
#   R-CNN", but Fast R-CNN itself (Girshick 2015, section 2.3) took background only from
#   [0.1, 0.5) and called the lower bound of 0.1 "a heuristic for hard example mining": an RoI
#   under 0.1 was not used at all;
# - per image, a fixed number of RoIs is sampled with at most a fraction of foreground (Fast
#   R-CNN: 25% of 64 per image). The paper's 512 with 25%; the `tiny` preset uses **128** with
#   25%, so at most 32 foreground.
#
# Hand example of the sampling: 3 foreground, 6 background, 1 ignored; 4 RoIs at 25% foreground
# means 1 foreground and 3 background.

# %%
hand = torch.tensor([1, 1, 1, 0, 0, 0, 0, 0, 0, -1])
picked = ops.sample_labels(hand, batch_size=4, positive_fraction=0.25, generator=0)
print("labels: ", hand.numpy())
print("sampled:", picked.numpy(), f"-> {int((picked == 1).sum())} fg, {int((picked == 0).sum())} bg")

# %% [markdown]
# `RoIHeads.sample` does all three for one image and returns the sampled boxes, their class labels
# (0 for background), the matched ground truth, and the box regression targets:

# %%
print(inspect.getsource(RoIHeads.sample))

# %%
# NBVAL_IGNORE_OUTPUT
boxes, labels, matched, deltas = model.roi_heads.sample(proposals[0], targets[0],
                                                        torch.Generator().manual_seed(0))
print(f"sampled {len(boxes)} RoIs: {int((labels > 0).sum())} foreground, {int((labels == 0).sum())} background")
print("foreground labels:", [dataset.class_names[int(k)] for k in labels[labels > 0]])
print("their regression targets:\n", deltas[labels > 0].numpy())

# %%
claims = {
    "the only foreground RoIs are the ground-truth boxes":
        torch.equal(boxes[labels > 0], gt) and torch.equal(labels[labels > 0], gt_labels),
    "their regression targets are exactly 0": bool((deltas[labels > 0] == 0).all()),
}
for claim, holds in claims.items():
    assert holds, claim
    print(f"{claim}: {holds}")

# %% [markdown]
# With an untrained RPN the only foreground RoIs are the ground-truth boxes themselves, and their
# regression targets are exactly 0: the box head has nothing to correct yet, and would have no
# foreground at all without rule 1.
#
# To see the heads as they work once the RPN has learnt something, we hand them proposals like a
# trained RPN gives: 10 jittered copies of each ground-truth box (as in lesson 07), next to the
# 500 untrained ones. From here on, `rpn_like` are the proposals of this image.

# %%
rng = np.random.default_rng(0)
owner = np.repeat(np.arange(len(gt)), 10)
size = torch.cat([gt[:, 2:] - gt[:, :2]] * 2, dim=1)[owner]  # (10 G, 4)
jittered = gt[owner] + torch.from_numpy(rng.normal(0, 0.15, (len(owner), 4))).float() * size
jittered = ops.clip_boxes(jittered, (h, w))
rpn_like = torch.cat([jittered, proposals[0]])  # (10 G + 500, 4)

generator = torch.Generator().manual_seed(0)
boxes, labels, matched, deltas = model.roi_heads.sample(rpn_like, targets[0], generator)
fg = labels > 0
print(f"sampled {len(boxes)} RoIs: {int(fg.sum())} foreground, {int((~fg).sum())} background")
print("foreground RoIs per object:", {f"{k} {n}": int((fg & (matched == k)).sum())
                                     for k, n in enumerate(names)})
print("regression targets (10, 10, 5, 5) x deltas, first 4 foreground:\n", deltas[fg][:4].numpy())

fig, axes = plt.subplots(1, 2, figsize=(12, 7))
viz.show_image(shown, ax=axes[0], title=f"{int((~fg).sum())} background RoIs")
viz.draw_boxes(boxes[~fg], ax=axes[0], color=viz.ANCHOR_COLOR, linewidth=0.8)
viz.show_image(shown, ax=axes[1], title=f"{int(fg.sum())} foreground RoIs, coloured by object")
for k in range(len(gt)):
    viz.draw_boxes(boxes[fg & (matched == k)], ax=axes[1], color=viz.PALETTE[k], linewidth=1)
viz.draw_boxes(gt, ax=axes[1], color=viz.GT_COLOR, linewidth=2.5)
fig.tight_layout()
plt.show()

# %% [markdown]
# ## 3. RoI features: RoIAlign on the right FPN level
#
# Each RoI becomes a row [batch index, x1, y1, x2, y2] and is pooled on one level P2..P5 by the
# FPN paper's rule, level = floor(4 + log2(sqrt(w h) / 224)) clamped to [2, 5] (lesson 05):
# 7 x 7 for the box head, 14 x 14 for the mask head, `sampling_ratio` = 1 in the tiny preset.

# %%
# NBVAL_IGNORE_OUTPUT
rois = as_rois([boxes])  # (S, 5)
levels = ops.assign_fpn_levels(rois[:, 1:])  # (S,)
print("RoIs per level P2..P5:", torch.bincount(levels, minlength=6)[2:].tolist())
roi_features = model.roi_heads.pool(features, rois, cfg.box_pool_size)  # (S, C, 7, 7)
print("box head input:", tuple(roi_features.shape))

fig, ax = plt.subplots(figsize=(6, 7))
viz.show_image(shown, ax=ax, title="sampled RoIs by level: P2 grey, P3 blue, P4 orange")
for level, color in ((2, viz.ANCHOR_COLOR), (3, viz.PROPOSAL_COLOR), (4, viz.DETECTION_COLOR)):
    viz.draw_boxes(boxes[levels == level], ax=ax, color=color, linewidth=1)
plt.show()

# %%
per_level = torch.bincount(levels, minlength=6)[2:]  # (4,) RoIs on P2..P5
claims = {
    "box head input is (128, 64, 7, 7)": tuple(roi_features.shape) == (128, 64, 7, 7),
    "most RoIs are pooled from P2": per_level[0].item() > len(rois) / 2,
    "no RoI is pooled from P5": per_level[3].item() == 0,
}
for claim, holds in claims.items():
    assert holds, claim
    print(f"{claim}: {holds}")

# %% [markdown]
# The model pools with the torch twin, one `roi_align` call per level. The numpy reference gives
# the same features; we compare in float64 (in float32 the two differ by rounding, ~1e-5 here):

# %%
features64 = [f.double() for f in features[:4]]  # P2..P5
twin64 = ops.multiscale_roi_align(features64, rois.double(), cfg.box_pool_size,
                                  sampling_ratio=cfg.sampling_ratio)
ref_features = ref.multiscale_roi_align([f.numpy() for f in features64], rois.double().numpy(),
                                        cfg.box_pool_size, sampling_ratio=cfg.sampling_ratio)
print("twin == reference (float64):", np.allclose(twin64.numpy(), ref_features))

# %% [markdown]
# The canonical size 224 comes from ImageNet and 800-pixel inputs. Our images are 256 pixels on
# the short side, so a RoI needs sqrt(w h) >= 112 pixels to leave P2, >= 224 for P4, and P5
# (>= 448) is out of reach: most RoIs are pooled from P2, the finest map, which suits small
# objects anyway. The five objects here, and the same objects at the paper's 800 pixels:

# %%
side = ops.box_area(gt).sqrt()  # (G,) sqrt(w h) in resized pixels
at_800 = ops.assign_fpn_levels(gt * (800 / 256))
for name, s, k, k800 in zip(names, side.tolist(), ops.assign_fpn_levels(gt).tolist(), at_800.tolist()):
    print(f"{name:8s} sqrt(wh) {s:5.1f} px -> P{k};  at 800 px {s * 800 / 256:5.1f} px -> P{k800}")

# %% [markdown]
# **The two heads at a glance**, drawn like the Mask R-CNN paper's figure 4 (right, the FPN
# variant) with the sizes `mrcnn_edu.config` sets: the paper's R-50-FPN values, and the tiny
# preset's where they differ. As in torchvision, the box branch predicts 4 (K + 1) deltas and the
# mask branch K + 1 masks; the background's are never trained, and the paper's figure leaves them
# out (4K and K).
#
# The losses are the paper's, $L = L_{cls} + L_{box} + L_{mask}$ on each sampled RoI of class u.
# `mrcnn_edu/reference/losses.py` (and its torch twin) averages them as torchvision does:
#
# - $L_{cls} = -\log p_u$, with $p_u$ the softmax score of class u: **mean over all S sampled
#   RoIs**;
# - $L_{box} = \sum_{i \in \{x, y, w, h\}} \mathrm{smooth}_{L_1}(t^u_i - v_i)$ for u ≥ 1 only, with
#   $t^u$ the predicted deltas of class u and $v$ the target deltas: **summed over the foreground
#   RoIs and divided by S**, the number of *all* sampled RoIs; smooth L1 uses β = 1/9 (Fast
#   R-CNN's has β = 1);
# - $L_{mask} = -\frac{1}{m^2} \sum_{i,j} \left[ y_{ij} \log p^k_{ij} + (1 - y_{ij}) \log(1 - p^k_{ij}) \right]$,
#   the binary cross-entropy of mask k's sigmoid against the m x m target (m = 28, lesson 07),
#   k the RoI's ground-truth class: **mean over the pixels and over the foreground RoIs only**.

# %%
viz.heads_diagram()
plt.show()

# %% [markdown]
# ## 4. The box head
#
# Two fully connected layers of 256 (the paper's "2fc" head has 1024), then K + 1 = 81 class
# logits and 4 (K + 1) class-specific box deltas. The last layers start small (std 0.01 and 0.001),
# so the class scores start uniform and the deltas near 0.

# %%
print(inspect.getsource(BoxHead.forward))
class_logits, box_regression = model.roi_heads.box_head(roi_features)  # (S, K1), (S, 4 K1)
probs = class_logits.softmax(-1)
print(f"class_logits {tuple(class_logits.shape)}, box_regression {tuple(box_regression.shape)}")

# %%
# NBVAL_IGNORE_OUTPUT
print(f"class probabilities: min {probs.min():.4f}, max {probs.max():.4f}, 1 / 81 = {1 / 81:.4f}")

# %%
uniform = 0.5 / 81 < probs.min().item() and probs.max().item() < 2 / 81
assert uniform
print("every class probability between 1/162 and 2/81 (nearly uniform):", uniform)

# %% [markdown]
# ## 5. The mask head
#
# Only foreground RoIs go to the mask head: a background RoI has no mask to learn. 14 x 14 RoIAlign,
# four 3x3 convs (64 channels in the tiny preset, 256 in the paper), a 2x deconv to 28 x 28, and a
# 1x1 conv to one mask per class. The loss reads only the channel of the RoI's class.

# %%
print(inspect.getsource(MaskHead.forward))
fg_rois = as_rois([boxes[fg]])  # (F, 5)
mask_features = model.roi_heads.pool(features, fg_rois, cfg.mask_pool_size)  # (F, C, 14, 14)
mask_logits = model.roi_heads.mask_head(mask_features)  # (F, K1, 28, 28)
print(f"mask head input {tuple(mask_features.shape)} -> mask logits {tuple(mask_logits.shape)}")

# %% [markdown]
# The targets (lesson 07): each foreground RoI's matched ground-truth mask, RoIAlign-ed over the
# RoI to 28 x 28 and thresholded at 0.5. One RoI per object, drawn next to the image:

# %%
gt_masks = ops.mask_targets(targets[0]["masks"], matched[fg], boxes[fg], cfg.mask_size)  # (F, 28, 28)
print("mask targets:", tuple(gt_masks.shape))
first = [int(torch.nonzero(matched[fg] == k)[0]) for k in range(len(gt)) if (matched[fg] == k).any()]
fig, axes = plt.subplots(2, len(first), figsize=(3 * len(first), 6))
for col, i in enumerate(first):
    x1, y1, x2, y2 = boxes[fg][i].tolist()
    viz.show_image(shown, ax=axes[0, col], title=names[int(matched[fg][i])])
    viz.draw_boxes(boxes[fg][i:i + 1], ax=axes[0, col], color=viz.PALETTE[int(matched[fg][i])])
    axes[0, col].set_xlim(x1 - 10, x2 + 10)
    axes[0, col].set_ylim(y2 + 10, y1 - 10)
    axes[1, col].imshow(gt_masks[i].numpy(), cmap="Greys", vmin=0, vmax=1)
    axes[1, col].set_title("28 x 28 target")
    axes[1, col].axis("off")
fig.tight_layout()
plt.show()

# %% [markdown]
# ## 6. The three losses
#
# - $L_{cls}$: cross-entropy over the K + 1 classes, mean over the sampled RoIs;
# - $L_{box}$: smooth L1 (beta 1/9) of the foreground RoIs' deltas *for their own class*, summed
#   and divided by the number of sampled RoIs;
# - $L_{mask}$: mean per-pixel binary cross-entropy of the own-class 28 x 28 mask.
#
# `RoIHeads.losses` samples, pools and runs both heads; the same generator seed gives the same
# sample as above, so our step-by-step numbers must match it exactly:

# %%
print(inspect.getsource(RoIHeads.losses))

# %%
# NBVAL_IGNORE_OUTPUT
losses = model.roi_heads.losses(features, [rpn_like], targets, torch.Generator().manual_seed(0))
print({k: round(v.item(), 3) for k, v in losses.items()})
by_hand = ops.fast_rcnn_loss(class_logits, box_regression, labels, deltas)
by_hand_mask = ops.mask_loss(mask_logits, labels[fg], gt_masks)
print("by hand:", [round(v.item(), 3) for v in (*by_hand, by_hand_mask)])

# %%
same = torch.allclose(torch.stack(list(losses.values())), torch.stack([*by_hand, by_hand_mask]),
                      rtol=1e-6, atol=0)
assert same
print("RoIHeads.losses == the step-by-step losses (to 1e-6):", same)

# %% [markdown]
# What the numbers say at initialisation:
#
# - **classifier ≈ ln(K + 1)**: every class has probability ≈ 1/81, so the cross-entropy is
#   -ln(1/81) = ln 81, for a foreground and a background RoI alike;
# - **box**: the predicted deltas are ~0, so the loss is the smooth L1 of the targets themselves,
#   over the foreground only, divided by all 128;
# - **mask** is *not* ln 2: the mask head ends in a Kaiming-initialised conv (no small std, as in
#   torchvision's `MaskRCNNPredictor`; Detectron2 starts it at std 0.001), so its
#   logits start with a spread of about 1 and the cross-entropy of random ±1 logits is larger.

# %%
# NBVAL_IGNORE_OUTPUT
zero = torch.zeros_like(box_regression)
print(f"classifier {losses['loss_classifier'].item():.3f} vs ln 81 = {math.log(81):.3f}")
print(f"box {losses['loss_box'].item():.4f} vs the same with zero deltas "
      f"{ops.fast_rcnn_loss(class_logits, zero, labels, deltas)[1].item():.4f}")
own = mask_logits[torch.arange(int(fg.sum())), labels[fg]]  # (F, 28, 28)
print(f"mask {losses['loss_mask'].item():.3f}; own-class logits: mean {own.mean():.3f}, "
      f"std {own.std():.3f}; ln 2 = {math.log(2):.3f}")

# %%
zero_box = ops.fast_rcnn_loss(class_logits, zero, labels, deltas)[1].item()
claims = {
    "classifier within 2% of ln 81": abs(losses["loss_classifier"].item() / math.log(81) - 1) < 0.02,
    "box loss within 5% of the zero-delta box loss": abs(losses["loss_box"].item() / zero_box - 1) < 0.05,
    "mask loss above ln 2 + 0.05": losses["loss_mask"].item() > math.log(2) + 0.05,
    "own-class mask logits: std between 0.5 and 2": 0.5 < own.std().item() < 2,
}
for claim, holds in claims.items():
    assert holds, claim
    print(f"{claim}: {holds}")

# %% [markdown]
# The twin's losses against the numpy reference, in float64:

# %%
cl, br = class_logits.detach().double().numpy(), box_regression.detach().double().numpy()
ref_cls, ref_box = ref.fast_rcnn_loss(cl, br, labels.numpy(), deltas.double().numpy())
ref_mask = ref.mask_loss(mask_logits.detach().double().numpy(), labels[fg].numpy(),
                         gt_masks.double().numpy())
print("reference == twin (rtol 1e-5):", np.allclose([ref_cls, ref_box, ref_mask],
                                                  [v.item() for v in (*by_hand, by_hand_mask)], rtol=1e-5))

# %% [markdown]
# And the whole model in one call, with the untrained RPN's own proposals, gives all five
# losses. With no foreground but the ground truth, whose regression targets are 0, its box loss
# is the smooth L1 of the predicted deltas themselves (std 0.001 at the start): almost 0.

# %%
# NBVAL_IGNORE_OUTPUT
torch.manual_seed(0)  # the training-mode sampling uses the global RNG
all_losses = model([image], [target])
print({k: round(v.item(), 3) for k, v in all_losses.items()})

# %%
claims = {
    "five losses": sorted(all_losses) == sorted(["loss_objectness", "loss_rpn_box", "loss_classifier",
                                                 "loss_box", "loss_mask"]),
    "objectness within 5% of ln 2": abs(all_losses["loss_objectness"].item() / math.log(2) - 1) < 0.05,
    "classifier within 2% of ln 81": abs(all_losses["loss_classifier"].item() / math.log(81) - 1) < 0.02,
    "box loss below 0.001": all_losses["loss_box"].item() < 1e-3,
}
for claim, holds in claims.items():
    assert holds, claim
    print(f"{claim}: {holds}")

# %% [markdown]
# ## 7. Pitfall: forgetting the ground truth
#
# Leave rule 1 out and match only the RPN's proposals. With the untrained RPN not one proposal
# reaches IoU 0.5, so there is no foreground RoI: the classifier learns "everything is
# background", and the box and mask heads get no gradient at all. The RPN has to learn first,
# and the heads would wait for it. With the ground truth added, all three heads learn from
# iteration one.

# %%
# NBVAL_IGNORE_OUTPUT
foreground = {}
for name, candidates in (("proposals only", proposals[0]),
                         ("proposals + ground truth", torch.cat([proposals[0], gt]))):
    _, fg_labels = ops.match_anchors(ops.box_iou(gt, candidates), 0.5, 0.5,
                                     allow_low_quality=False)
    foreground[name] = int((fg_labels == 1).sum())
    print(f"{name:26s}: {foreground[name]:2d} foreground of {len(candidates)}")

# %%
claims = {
    "proposals only: no foreground": foreground["proposals only"] == 0,
    "with the ground truth: one foreground per object":
        foreground["proposals + ground truth"] == len(gt),
}
for claim, holds in claims.items():
    assert holds, claim
    print(f"{claim}: {holds}")

# %% [markdown]
# ## Your turn: RoI sampling
#
# Write section 2's three rules for one image with numpy, as `RoIHeads.sample` applies them. The
# random pick is `sample_labels`' (lesson 04, `mrcnn_edu.reference.sample_labels`) with the seed
# you are given, so that `check` can compare your sample with the package's pick for pick. It
# runs a hand example, edge cases (IoU exactly 0.5, no ground truth, no proposals, a proposal
# equally close to two objects, more foreground than the 25% cap allows) and two random images, and
# names the most likely slip when a case fails. `hint("sample_rois")` gives a hint, one more per
# call.

# %%
def sample_rois(proposals, gt_boxes, gt_labels, batch_size_per_image=512,
                positive_fraction=0.25, generator=0):
    """The RoIs the box and mask heads train on, for ONE image (RoIHeads.sample).
    proposals (N, 4) and gt_boxes (G, 4) float xyxy; gt_labels (G,) int in 1..K.
    1. boxes = the proposals followed by the gt boxes, (N + G, 4);
    2. match each box to the gt of highest IoU (the first gt on ties): foreground (1) when that
       IoU >= 0.5, background (0) otherwise; with G = 0 everything is background, matched 0;
    3. pick the sample with sample_labels(labels, batch_size_per_image, positive_fraction,
       generator) from mrcnn_edu.reference (lesson 04), labels being the 1/0 of step 2 and
       generator passed unchanged;
    4. keep the picked boxes in index order and return boxes (S, 4), labels (S,) int = the
       matched gt's label for foreground and 0 for background, matched (S,) int (the gt index,
       checked on foreground rows only) and targets (S, 4) = encode_boxes(boxes, gt_boxes[matched],
       (10, 10, 5, 5)) (checked on foreground rows only; zeros when G = 0).
    """
    raise NotImplementedError

# %%
from mrcnn_edu.exercises import check, hint

check("sample_rois", sample_rois)

# %% [markdown]
# ## Summary
# - Training the heads: proposals + ground truth -> match at IoU 0.5 (background [0, 0.5), no
#   ignored band; Fast R-CNN used [0.1, 0.5)) -> sample 128 RoIs with <= 25% foreground (tiny
#   preset; the paper samples 512).
# - RoIAlign pools each RoI on one FPN level by its size: 7 x 7 for the box head, 14 x 14 for the
#   mask head. At 256-pixel inputs most RoIs use P2 and P5 is never used.
# - Box head: 2 FC layers -> K + 1 logits and 4 (K + 1) deltas. Mask head: 4 convs, deconv ->
#   K + 1 masks of 28 x 28, on foreground RoIs only, loss on the own-class channel only.
# - At initialisation: classifier ≈ ln(K + 1) = ln 81 ≈ 4.39; box loss = smooth L1 of the targets;
#   mask loss ≈ 0.8 (not ln 2: the mask head's last conv is not initialised small).
#
# ## Exercises
# 1. Sample with the paper's 512 RoIs per image (`dataclasses.replace(cfg,
#    roi_batch_size_per_image=512)`). How many foreground RoIs are there now, and what fraction?
# 2. Initialise the mask predictor with std 0.001 and zero bias (like the box head). What is the
#    mask loss at initialisation now, and why?
# 3. Compute the box loss by hand for one foreground RoI: pick its class's 4 deltas from
#    `box_regression` and apply `ops.smooth_l1_loss`. Divide by what?
# 4. Build RoIs with sqrt(w h) from 20 to 500 pixels and plot their level. Where would you put the
#    canonical size for 256-pixel inputs?
