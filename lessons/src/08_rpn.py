# %% [markdown]
# # 08 · The Region Proposal Network
#
# The first stage of Mask R-CNN looks at every anchor and asks two questions: is there an object
# here, and how should this box move to fit it? Ren et al. 2015 (Faster R-CNN, section 3.1):
#
# > A Region Proposal Network (RPN) takes an image (of any size) as input and outputs a set of
# > rectangular object proposals, each with an objectness score. ... we slide a small network
# > over the convolutional feature map output by the last shared convolutional layer.
#
# and its loss (section 3.1.2), over the anchors i of a minibatch:
#
# $$L(\{p_i\}, \{t_i\}) = \frac{1}{N_{cls}} \sum_i L_{cls}(p_i, p_i^*)
#   + \lambda \frac{1}{N_{reg}} \sum_i p_i^* L_{reg}(t_i, t_i^*)$$
#
# $p_i$ is the predicted objectness, $p_i^*$ the anchor's label (1 object, 0 background), $t_i$
# and $t_i^*$ the predicted and target box deltas (lesson 03); only positive anchors regress.
#
# Lessons 02-04 built the parts (anchors, deltas, NMS, matching). Here they run together, inside
# the real model, on a real image: anchors -> labels -> losses -> proposals.
# Code: `mrcnn_edu/model/rpn.py`.

# %%
# You are here: this lesson's stages in the pipeline map of lesson 00.
import matplotlib.pyplot as plt

from mrcnn_edu import viz

viz.pipeline_map(highlight=8, compact=True)
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
from mrcnn_edu.model import MaskRCNN
from mrcnn_edu.model.rpn import RPN, RPNHead

np.set_printoptions(precision=3, suppress=True)
torch.set_printoptions(precision=3, sci_mode=False)
torch.set_num_threads(1)  # the same result on every run of one machine

# %% [markdown]
# ## 1. The model, untrained, and one real image
#
# We build the `tiny` preset (ResNet-18 + GroupNorm, 64-channel FPN, 256-pixel images) with the
# dataset's 80 classes and seed 0, so every number below is the same on every run of one machine.
# Numbers computed from the network's outputs (logits, losses, which proposals win) can differ in
# their last digits on another CPU, whose math libraries pick other kernels; such a cell is
# marked `# NBVAL_IGNORE_OUTPUT` and the cell after it checks the claim the text makes about
# it, with a tolerance that holds everywhere. The image is
# the five horses of lessons 04 and 07. The model's first step, `BatchTransform`, resizes it so the
# shorter side is 256 pixels, normalises it and pads it to a multiple of 32; the targets are
# resized with it. The RPN works in these resized pixels.

# %%
dataset = CocoDataset(resolve_data_root(), split="train2017")
image, target = dataset[4]
cfg = dataclasses.replace(preset("tiny"), num_classes=dataset.num_classes)
torch.manual_seed(0)
model = MaskRCNN(cfg).train()

batch, image_sizes, targets = model.transform([image], [target])  # (1, 3, H_pad, W_pad)
(h, w), gt = image_sizes[0], targets[0]["boxes"]  # gt (G, 4) in resized pixels
print(f"original {tuple(image.shape[-2:])} -> resized {(h, w)} -> padded {tuple(batch.shape[-2:])}")
print(f"{len(gt)} ground-truth boxes (resized):\n{gt.numpy().round(1)}")

with torch.no_grad():
    features = model.fpn(model.backbone(batch))  # [P2..P6], (1, 64, H / s, W / s)
for name, f in zip(["P2", "P3", "P4", "P5", "P6"], features):
    print(f"{name}: {tuple(f.shape)}")
# the resized image, un-normalised, for drawing
shown = batch[0, :, :h, :w] * model.transform.pixel_std + model.transform.pixel_mean  # (3, h, w)

# %% [markdown]
# ## 2. The head: a small network slid over every level
#
# One 3x3 conv and two 1x1 convs, shared by all five levels: for each cell, A = 3 objectness
# logits (one per aspect ratio) and 4A box deltas. The outputs are flattened **location-major**
# (all A anchors of a cell together), the order `generate_anchors` uses.

# %%
print(inspect.getsource(RPNHead.forward))
with torch.no_grad():
    objectness, deltas = model.rpn.head(features)  # [(1, R_l)], [(1, R_l, 4)]
for name, o, d in zip(["P2", "P3", "P4", "P5", "P6"], objectness, deltas):
    print(f"{name}: objectness {tuple(o.shape)}  deltas {tuple(d.shape)}")

# %% [markdown]
# ## 3. Anchors
#
# Each level has one anchor size (the tiny preset: 16, 32, 64, 128, 256 pixels, smaller than the
# FPN paper's 32..512 because its images are 256 pixels, not 800) and three aspect ratios h / w = 0.5,
# 1, 2, at cells `stride` pixels apart. Below, for each level, the centres of its cells (dots) and
# the three anchors of the cell nearest to the biggest horse's centre (grey), over the ground
# truth (green).

# %%
anchors = model.rpn.anchors(batch.shape[-2:], features)  # [(R_l, 4)] for the padded batch
print("anchors per level:", [len(a) for a in anchors], " total:", sum(len(a) for a in anchors))
print("first cell of P2 (centre (0, 0)):\n", anchors[0][:3].numpy())

cx, cy = ((gt[0, :2] + gt[0, 2:]) / 2).tolist()
fig, axes = plt.subplots(1, 5, figsize=(20, 3.4))
for level, (ax, a, stride, size) in enumerate(zip(axes, anchors, cfg.anchor_strides,
                                                  cfg.anchor_sizes)):
    cells_w = features[level].shape[-1]
    i, j = round(cy / stride), round(cx / stride)
    cell = (i * cells_w + j) * 3
    viz.show_image(shown, ax=ax, title=f"P{level + 2}: stride {stride}, size {size}")
    viz.draw_boxes(gt, ax=ax, color=viz.GT_COLOR, linewidth=1)
    centres = ((a[:, :2] + a[:, 2:]) / 2)[::3]  # (H_l * W_l, 2) one per cell
    ax.scatter(centres[:, 0], centres[:, 1], s=1 if stride == 4 else 4, color=viz.ANCHOR_COLOR)
    viz.draw_boxes(a[cell:cell + 3], ax=ax, color=viz.ANCHOR_COLOR, linewidth=1.5)
    ax.set_xlim(-130, w + 130)
    ax.set_ylim(h + 130, -130)
fig.tight_layout()
plt.show()

# %% [markdown]
# The anchors cover the **padded** batch (the image is 383 wide, the batch 384) and reach
# beyond the image: a cell at the border still has its full-size anchors. The model builds them
# with the torch twin; the numpy reference gives the same boxes:

# %%
ref_anchors = ref.generate_anchors(tuple(batch.shape[-2:]), cfg.anchor_strides, cfg.anchor_sizes,
                                   cfg.anchor_aspect_ratios)
print("twin == reference:", all(np.allclose(a.numpy(), r) for a, r in zip(anchors, ref_anchors)))

# %% [markdown]
# ## 4. Labels: which anchors are objects?
#
# Faster R-CNN (section 3.1.2): an anchor is positive if its IoU with some ground-truth box is
# above 0.7 (torchvision and this package: >= 0.7), or if it is a ground truth's best anchor; negative if its IoU with every ground truth is
# < 0.3; anchors in between are ignored. Hand example, one ground truth (0, 0, 10, 10) and five
# anchors whose IoUs are 1.0, 0.7, 0.5, 0.2 and 0; then a second ground truth whose best anchor
# only reaches IoU 0.4, which the low-quality rule makes positive anyway:

# %%
hand_gt = torch.tensor([[0.0, 0, 10, 10]])
hand_anchors = torch.tensor([[0.0, 0, 10, 10], [0, 0, 10, 7], [0, 0, 10, 5], [0, 0, 10, 2],
                             [50, 50, 60, 60]])
hand_iou = ops.box_iou(hand_gt, hand_anchors)
print("IoU:   ", hand_iou[0].numpy())
print("labels:", ops.match_anchors(hand_iou, 0.7, 0.3)[1].numpy())
two_gt = torch.tensor([[0.0, 0, 10, 10], [50, 50, 60, 75]])  # the second: 10 x 25, anchor 10 x 10
two_iou = ops.box_iou(two_gt, hand_anchors)
print("IoU with gt 1:", two_iou[1].numpy())
print("labels:", ops.match_anchors(two_iou, 0.7, 0.3)[1].numpy(), " (the last one by the low-quality rule)")

# %% [markdown]
# On the real image, all anchors of all levels at once:

# %%
all_anchors = torch.cat(anchors)  # (R, 4)
iou = ops.box_iou(gt, all_anchors)  # (G, R)
matched, labels = ops.match_anchors(iou, cfg.rpn_fg_iou_thresh, cfg.rpn_bg_iou_thresh,
                                   allow_low_quality=True)
best = iou.max(dim=0).values  # (R,) each anchor's best IoU
print(f"positive {int((labels == 1).sum())}  (IoU >= 0.7: {int((best >= 0.7).sum())}), "
      f"ignored {int((labels == -1).sum())}, negative {int((labels == 0).sum())} of {len(labels)}")
print("each ground truth's best anchor IoU:", iou.max(dim=1).values.numpy())
ref_matched, ref_labels = ref.match_anchors(iou.double().numpy(), 0.7, 0.3, allow_low_quality=True)
print("twin == reference:", np.array_equal(ref_labels, labels.numpy()),
      np.array_equal(ref_matched[ref_labels == 1], matched[labels == 1].numpy()))

# %% [markdown]
# Only one anchor passes 0.7. The horses are 10-60 pixels in the resized image and the anchors
# come in steps of 2x in size and 2x in aspect: most objects fall between anchor shapes. The
# low-quality rule is what gives every horse at least one positive anchor; without it four of the
# five horses would teach the RPN nothing.
#
# **Sampling.** 7 positives against 24,313 negatives: a loss over all of them would learn "say
# background". Each image contributes 256 anchors with at most half positives (`sample_labels`);
# here there are not enough positives, so negatives fill the rest. The 249 sampled negatives are
# a uniform random draw from all 24,313; the picture shows 60 of them, drawn at random again
# with the same function (a seeded draw from the sampled negatives only), so that they show
# where negatives come from: everywhere, mostly the small P2 anchors, which are three quarters
# of all anchors.

# %%
sampled = ops.sample_labels(labels, cfg.rpn_batch_size_per_image, cfg.rpn_positive_fraction,
                            generator=0)  # (R,) 1 / 0 for the sampled, -1 for the rest
print(f"sampled: {int((sampled == 1).sum())} positive, {int((sampled == 0).sum())} negative")

some_negatives = ops.sample_labels(torch.where(sampled == 0, 0, -1), 60, 0.0, generator=1)  # (R,)
shown_idx = torch.cat([torch.nonzero(labels == 1).flatten(),  # every positive
                       torch.nonzero(labels == -1).flatten(),  # every ignored
                       torch.nonzero(some_negatives == 0).flatten()])  # 60 of the sampled negatives
print("levels of the 60 drawn negatives, P2..P6:",
      torch.bincount(torch.cat([torch.full((len(a),), k) for k, a in enumerate(anchors)])
                     [some_negatives == 0], minlength=5).tolist())
fig, axes = plt.subplots(1, 2, figsize=(14, 5))
viz.show_image(shown, ax=axes[0], title="positive (red), ignored (olive), 60 sampled negatives (grey)")
viz.draw_anchor_labels(all_anchors[shown_idx], labels[shown_idx], ax=axes[0])
viz.draw_boxes(gt, ax=axes[0], color=viz.GT_COLOR)
axes[0].set_xlim(-40, w + 40)
axes[0].set_ylim(h + 40, -40)
viz.show_image(shown, ax=axes[1], title="zoom: positives and the ground truth")
viz.draw_anchor_labels(all_anchors[labels == 1], labels[labels == 1], ax=axes[1])
viz.draw_boxes(gt, ax=axes[1], color=viz.GT_COLOR)
axes[1].set_xlim(100, 340)
axes[1].set_ylim(250, 150)
fig.tight_layout()
plt.show()

# %% [markdown]
# ## 5. The loss at initialisation
#
# As in torchvision: $L_{cls}$ is the mean binary cross-entropy over the 256 sampled anchors, and
# $L_{reg}$ is smooth L1 (beta = 1/9) summed over the positives and divided by the same 256. So
# $N_{cls} = N_{reg} = 256$ and $\lambda = 1$. The paper used $N_{cls} = 256$ too, but normalised
# the box term by the number of anchor locations ($N_{reg}$ ~ 2,400) and set $\lambda = 10$:
# 10 / 2,400 ≈ 1 / 240, nearly the same balance. `RPN.losses` is the whole recipe:

# %%
print(inspect.getsource(RPN.losses))

# %% [markdown]
# The head's last convs are initialised with std 0.01 and zero bias, so at the start every
# objectness logit is close to 0 and every probability close to 0.5:

# %%
# NBVAL_IGNORE_OUTPUT
logits = torch.cat(objectness, 1)[0]  # (R,)
print(f"logits: mean {logits.mean():.3f}, std {logits.std():.3f}, "
      f"max |logit| {logits.abs().max():.3f}")
fig, ax = plt.subplots(figsize=(5, 2.5))
ax.hist(logits.numpy(), bins=60, color=viz.PROPOSAL_COLOR)
ax.set_xlabel("objectness logit at initialisation")
plt.show()

# %%
close_to_zero = logits.abs().max().item() < 0.2  # sigmoid(0.2) = 0.55
assert close_to_zero
print("every objectness logit within 0.2 of 0 (probability within 0.05 of 0.5):", close_to_zero)

# %% [markdown]
# With p = sigmoid(0) = 0.5 the cross-entropy is -ln 0.5 = ln 2 for a positive *and* for a negative
# anchor, so an untrained RPN's objectness loss is ln 2 ≈ 0.693, whatever the labels. And with
# deltas near 0, the box loss is the smooth L1 of the target deltas themselves, over 7 of 256.
# The model's own call (a generator seeded 0 makes the same sample as above):

# %%
# NBVAL_IGNORE_OUTPUT
with torch.no_grad():
    proposals, losses = model.rpn(features, image_sizes, batch.shape[-2:], targets,
                                  generator=torch.Generator().manual_seed(0))
print({k: round(v.item(), 3) for k, v in losses.items()}, f" ln 2 = {math.log(2):.3f}")

target_deltas = ops.encode_boxes(all_anchors, gt[matched])  # (R, 4) meaningful where positive
zero_deltas = torch.zeros_like(target_deltas)
zero_box = ops.rpn_box_loss(zero_deltas, target_deltas, sampled).item()
print(f"box loss if the head predicted exactly 0: {zero_box:.3f}")
ref_obj = ref.objectness_loss(logits.double().numpy(), sampled.numpy())
twin_obj = ops.objectness_loss(logits, sampled).item()
print(f"objectness, reference {ref_obj:.3f} twin {twin_obj:.3f}")

# %%
claims = {
    "objectness loss within 5% of ln 2": abs(losses["loss_objectness"].item() / math.log(2) - 1) < 0.05,
    "box loss within 25% of the zero-delta box loss":
        abs(losses["loss_rpn_box"].item() - zero_box) < 0.25 * zero_box,
    "reference objectness loss == twin to 1e-6": abs(ref_obj - twin_obj) < 1e-6,
}
for claim, holds in claims.items():
    assert holds, claim
    print(f"{claim}: {holds}")

# %% [markdown]
# ## 6. Proposals: before and after NMS
#
# For each level: take the `pre_nms_top_n` anchors with the highest objectness, decode their
# deltas, clip to the image (not the padding), drop boxes with a side under `rpn_min_size`, run NMS
# at 0.7 within the level; then keep the best `post_nms_top_n` of all levels together.
#
# Where the numbers come from. NMS at 0.7 is Faster R-CNN's (section 3.3). The counts
# 2000 / 2000 in training and 1000 / 1000 at inference (per level before NMS / per image after)
# are torchvision's defaults and this project's `Config` defaults; Detectron's R-50-FPN configs
# use the same numbers. The papers only give the number of RoIs the detector sees: Faster R-CNN
# trains it on 2000 RPN proposals and tests on 300; the FPN paper (section 5.2) uses "2000 RoIs
# per image for training and 1000 for testing"; Mask R-CNN (section 3.1, Inference) tests on 300
# proposals with the C4 backbone and 1000 with FPN, "as in" those two papers. All of them are
# for 800-pixel images; the tiny preset's 256-pixel images have a tenth of the anchors, and it
# keeps 1000 / 500 in training and 500 / 250 at inference. The whole function, which decodes,
# clips and filters the top anchors of all levels in one call each (these steps treat every box
# alone), and then applies NMS within each level:

# %%
print(inspect.getsource(RPN.select_proposals))
print(inspect.getsource(RPN.nms_within_levels))

# %% [markdown]
# The same steps with the `ops` calls, level by level, to count what each one removes:

# %%
# NBVAL_IGNORE_OUTPUT
kept_boxes, kept_scores, kept_levels, before = [], [], [], []
for level, (o, d, a) in enumerate(zip(objectness, deltas, anchors)):
    top_scores, top = o[0].topk(min(cfg.rpn_pre_nms_top_n_train, len(a)))
    boxes = ops.clip_boxes(ops.decode_boxes(a[top], d[0][top]), (h, w))
    keep = ops.remove_small_boxes(boxes, cfg.rpn_min_size)
    boxes, top_scores = boxes[keep], top_scores[keep]
    nms_keep = ops.nms(boxes, top_scores, cfg.rpn_nms_thresh)
    print(f"P{level + 2}: {len(a):6d} anchors -> top {len(top):4d} -> {len(boxes):4d} after "
          f"clip and min size -> {len(nms_keep):4d} after NMS")
    before.append((boxes, top_scores))
    kept_boxes.append(boxes[nms_keep])
    kept_scores.append(top_scores[nms_keep])
    kept_levels.append(torch.full((len(nms_keep),), level + 2))
kept_boxes, kept_scores, kept_levels = (torch.cat(x) for x in (kept_boxes, kept_scores, kept_levels))
best_n = kept_scores.argsort(descending=True)[: cfg.rpn_post_nms_top_n_train]
final = kept_boxes[best_n]
print(f"all levels: {len(kept_boxes)} after NMS -> best {len(final)} are the proposals")
per_level = torch.bincount(kept_levels[best_n], minlength=7)[2:]  # (5,) proposals from P2..P6
print("proposals per level P2..P6:", per_level.tolist())
print("logit std per level P2..P6:", [round(o.std().item(), 3) for o in objectness])

# %%
spread = [o.std().item() for o in objectness]  # logit std per level
claims = {
    "step by step == model.rpn": torch.equal(final, proposals[0]),
    "at least 95% of the proposals come from P2": per_level[0].item() >= 0.95 * len(final),
    "P2's logits spread at least 1.5 x wider than any other level's":
        all(spread[0] > 1.5 * s for s in spread[1:]),
    "NMS at 0.7 keeps over half of P2's top 1000": len(before[0][0]) == 1000 and
        int((kept_levels == 2).sum()) > 500,
}
for claim, holds in claims.items():
    assert holds, claim
    print(f"{claim}: {holds}")

# %% [markdown]
# Untrained, the objectness scores say nothing about objects, yet they are not uniform across
# levels: the best 500 over all levels are almost all from P2, the level with the most anchors,
# and its logits spread about twice as wide as those of any other level. P2 anchors 4 pixels
# apart overlap by IoU < 0.7 (0.48 for the tall 11 x 23 anchor shifted sideways), so NMS at 0.7
# keeps most of P2's top 1000 (the checks above).
#
# The 100 best-scoring boxes before NMS (left) and after (right) are small tall P2 anchors
# (deltas near 0) on high-contrast spots; the two pictures look alike.

# %%
pre_boxes, pre_scores = (torch.cat(x) for x in zip(*before))
pre_best = pre_boxes[pre_scores.argsort(descending=True)[:100]]
fig, axes = plt.subplots(1, 2, figsize=(14, 5))
for ax, boxes, title in ((axes[0], pre_best, "before NMS: best 100"),
                         (axes[1], final[:100], "after NMS: best 100 proposals")):
    viz.show_image(shown, ax=ax, title=title)
    viz.draw_boxes(boxes, ax=ax, color=viz.PROPOSAL_COLOR, linewidth=0.8)
    viz.draw_boxes(gt, ax=ax, color=viz.GT_COLOR)
fig.tight_layout()
plt.show()

# %% [markdown]
# How good are they as proposals? The recall: the fraction of ground-truth boxes that have a
# proposal with IoU >= 0.5. And in eval mode the model keeps fewer:

# %%
# NBVAL_IGNORE_OUTPUT
def recall(proposals, gt, threshold=0.5):
    return (ops.box_iou(gt, proposals).max(dim=1).values >= threshold).float().mean().item()


print(f"train mode: {len(proposals[0])} proposals, recall at 0.5: {recall(proposals[0], gt):.2f}")
model.eval()
with torch.no_grad():
    eval_proposals, _ = model.rpn(features, image_sizes, batch.shape[-2:])
model.train()
print(f"eval mode: {len(eval_proposals[0])} proposals, recall at 0.5: {recall(eval_proposals[0], gt):.2f}")

# %%
claims = {
    "500 proposals in train mode, 250 in eval mode": (len(proposals[0]), len(eval_proposals[0])) == (500, 250),
    "no horse has a proposal at IoU >= 0.5": recall(proposals[0], gt) == recall(eval_proposals[0], gt) == 0,
}
for claim, holds in claims.items():
    assert holds, claim
    print(f"{claim}: {holds}")

# %% [markdown]
# Not one horse has a proposal at IoU >= 0.5: an untrained RPN proposes nothing useful. The
# RoI heads can train from the first iteration anyway, because the ground-truth boxes join the
# proposals there (lesson 09).
#
# The proposals leave the RPN **detached** (`select_proposals` runs under `torch.no_grad`): the
# RoI heads' losses do not flow back into the RPN's box regression. Faster R-CNN calls this
# "approximate joint training"; the RPN learns from its own two losses only.
#
# ## 7. Pitfall: the head's outputs and the anchors must be in the same order
#
# The head produces maps (B, A, H, W); the anchors come as a flat list with the A anchors of a
# cell together. `RPNHead` permutes to (B, H, W, A) before flattening. A plain `reshape(B, -1)`
# has the same shape and raises no error, but pairs each logit with the wrong anchor. Put one
# high logit on P6 at cell (row 1, column 2), ratio index 2 (a tall anchor), and see which anchor
# each flattening gives it to:

# %%
p6 = torch.zeros(1, 3, 4, 6)  # (B, A, H, W) P6 of the padded 256 x 384 batch
p6[0, 2, 1, 2] = 5.0
right = p6.permute(0, 2, 3, 1).reshape(1, -1)[0].argmax().item()
wrong = p6.reshape(1, -1)[0].argmax().item()
for name, index in (("permute, then flatten", right), ("flatten only", wrong)):
    box = anchors[4][index]
    centre = ((box[:2] + box[2:]) / 2).tolist()
    print(f"{name:22s}: anchor {index:2d}, centre {centre}, h / w = "
          f"{((box[3] - box[1]) / (box[2] - box[0])).item():.1f}")

# %% [markdown]
# The right one is centred at (2 x 64, 1 x 64) = (128, 64), as it should be; the wrong one is a
# different cell. Such a model still trains (every logit gets *some* anchor) but learns nonsense.
# The sizes do not catch it; a test that plants a logit and finds its anchor, like this one, does.

# %% [markdown]
# ## Your turn: the proposals of one level
#
# Write the RPN's proposal selection for one FPN level of one image: the steps of section 6, in the
# order `RPN.select_proposals` runs them. The package's `decode_boxes`, `clip_boxes`,
# `remove_small_boxes` and `nms` (`mrcnn_edu.reference`) are yours to use: the exercise is the
# order of the steps and keeping the scores with their boxes. `check` runs it on a hand example,
# on edge cases (top-k before NMS, the decode clamp, anchors leaving the image, IoU exactly 0.7,
# an empty level) and on random levels of 1800 and 7200 anchors, and names the most likely slip
# when a case fails. `hint("select_level_proposals")` gives a hint, one more per call.

# %%
def select_level_proposals(objectness, deltas, anchors, image_size, pre_nms_top_n=1000,
                           post_nms_top_n=1000, nms_thresh=0.7, min_size=1e-3):
    """The RPN's proposals from ONE FPN level of ONE image, in the model's order of steps.
    objectness (R,) float logits; deltas (R, 4) predicted (dx, dy, dw, dh); anchors (R, 4) xyxy;
    image_size (H, W). Returns proposals (P, 4) float, highest objectness first:
    1. keep the min(pre_nms_top_n, R) anchors of highest objectness (ties: lower index first);
    2. decode their deltas with weights (1, 1, 1, 1) and the decode clamp (lesson 03);
    3. clip the boxes to the image: x to [0, W], y to [0, H];
    4. drop boxes whose width or height is < min_size;
    5. NMS at nms_thresh (IoU > nms_thresh with a better kept box suppresses);
    6. keep the first post_nms_top_n.
    """
    raise NotImplementedError

# %%
from mrcnn_edu.exercises import check, hint

check("select_level_proposals", select_level_proposals)

# %% [markdown]
# ## Summary
# - The RPN head (3x3 conv, 1x1 convs) runs on P2..P6 and gives A objectness logits and 4A
#   deltas per cell, flattened location-major like the anchors: 24,552 anchors for 256 x 384.
# - Anchors are labelled by IoU with the ground truth: >= 0.7 positive, < 0.3 negative, between
#   ignored, plus each ground truth's best anchors; 256 per image are sampled, at most half positive.
# - Loss = mean BCE over the sampled anchors + smooth L1 over the positives / 256. Untrained, the
#   objectness loss is ln 2 ≈ 0.693 because every logit is near 0.
# - Proposals: top-k per level, decode, clip, drop tiny boxes, NMS at 0.7 per level, best N overall
#   (1000 -> 500 training, 500 -> 250 inference for the tiny preset; 2000 -> 2000 and
#   1000 -> 1000 are torchvision's and Detectron's defaults for 800-pixel images); they are
#   detached.
#
# ## Exercises
# 1. Set `allow_low_quality=False` in `match_anchors` for this image. How many positives are
#    left, and which horses have none?
# 2. Run the image at `min_size=512` (`dataclasses.replace(cfg, min_size=512)`). How do the
#    best IoU per horse and the number of positives change? Why?
# 3. Count the proposals per level in eval mode, and the logits' standard deviation per level.
#    Which level wins the "best N over all levels" contest, and what would a trained RPN change?
# 4. Replace the RPN's per-level NMS by one NMS over all levels (`ops.nms` on the concatenated
#    boxes). Do the proposals change? Which is cheaper, and why (see the comment in
#    `select_proposals`)?
