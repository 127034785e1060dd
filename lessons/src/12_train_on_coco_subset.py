# %% [markdown]
# # 12 · Training on real photos: the COCO subset
#
# Lesson 10 trained the tiny model on synthetic shapes. Real photographs are harder in every way:
# people are small, partly hidden, in crowds, in every pose and light. This lesson runs the whole
# loop -- data, training, evaluation, pictures -- on a handful of real COCO images, with the
# recipe of `make train` (the `subset` preset), and then reads the folder such a run writes, file by
# file. A full `make train` writes the same files for 2200 steps on the 76 training images that
# show people; its measured numbers are in `docs/benchmarks.md`.
#
# No pretrained weights anywhere: the backbone starts from random numbers, as in every lesson.
# Code: `mrcnn_edu/engine/train.py`, `mrcnn_edu/engine/evaluate.py`, `mrcnn_edu/config.py`.

# %%
import contextlib
import dataclasses
import io
import json
import tempfile
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch

from mrcnn_edu import viz
from mrcnn_edu.config import preset
from mrcnn_edu.data import CocoDataset, resolve_data_root
from mrcnn_edu.data.subset import make_subset
from mrcnn_edu.engine import runlog
from mrcnn_edu.engine.train import train

# One thread: the order of floating-point sums depends on the thread count, and many SGD steps
# amplify last-bit differences; with one thread every machine prints the same numbers.
torch.set_num_threads(1)
workdir = tempfile.TemporaryDirectory()  # the mini subset and the run live here
work = Path(workdir.name)
root = resolve_data_root()  # the COCO subset: 160 train and 158 val images, all 80 categories

# %% [markdown]
# ## 1. A mini subset of real photos
#
# `make train` learns one category, **person**: the most frequent one in the subset (307
# instances, not counting crowd regions, in 76 of the 160 training images; the next, bottle, has
# 105 in 24). From scratch and in 20 CPU minutes, one frequent class is what a small model has a
# chance to learn.
#
# For a run of about a minute we carve an even smaller subset with the same tool users have for
# official COCO (`python -m mrcnn_edu.data subset`, lesson 00): 4 training images with at least
# two people, and 2 validation images, copied in the standard COCO layout.

# %%
mini = work / "mini"
for split, count in (("train2017", 4), ("val2017", 2)):
    make_subset(root / "annotations" / f"instances_{split}.json", mini, split=split,
                categories=["person"], num_images=count, min_instances=2, seed=0,
                images_dir=root / split, progress=False)
train_set = CocoDataset(mini, split="train2017", categories=["person"])
val_set = CocoDataset(mini, split="val2017", categories=["person"])
for name, ds in (("train", train_set), ("val", val_set)):
    people = [len(ds.load_target(i)["labels"]) for i in range(len(ds))]
    sizes = [tuple(ds.load_image(i).shape[1:]) for i in range(len(ds))]
    print(f"{name}: {len(ds)} images, people per image {people}, sizes (h, w) {sizes}")
print("classes:", train_set.class_names)

viz.show_samples(train_set, 4, figsize=(18, 4), title="train image {id}")
plt.show()

# %% [markdown]
# Look at the sizes of the people: some fill half the picture, others are a few pixels tall in
# the background. The model sees each image with its shorter side resized to 256 pixels (the
# `tiny` preset), so a person of 20 x 40 pixels in the photo becomes about 8 x 16.
#
# ## 2. The recipe: the `subset` preset
#
# `preset("subset")` is the `tiny` model (ResNet-18 with GroupNorm, FPN of 64 channels, small
# heads, 256-pixel images) tuned for one thing: fitting, from random weights and in 20 CPU
# minutes, the photos it trains on. Each change below was measured against the alternatives
# (`bench/bench_subset_recipes.py`, table in `docs/benchmarks.md`):
#
# - `categories`: person only; `skip_images_without_instances`: train on the 76 images that show
#   people (the other 84 would only teach "background");
# - `optimizer` AdamW at `lr` 5e-4 instead of SGD: AdamW scales every weight's step by that
#   weight's own gradient history, which from random weights fits several times faster here;
# - `head_norm_groups`: GroupNorm in the box and mask heads as well as in the backbone;
# - `hflip_prob` 0: flips help a model generalise, but double what it must memorise;
# - `max_iters` 2200 (about 58 passes over the 76 images), x0.1 at step 1800.
#
# Here we shorten the schedule to 80 steps (20 passes over the 4 images):

# %%
subset = preset("subset")
tiny = preset("tiny")
print("subset vs tiny:")
for field in dataclasses.fields(subset):
    if getattr(subset, field.name) != getattr(tiny, field.name):
        print(f"  {field.name:30s} {getattr(tiny, field.name)!s:>8} -> {getattr(subset, field.name)}")
cfg = dataclasses.replace(subset, max_iters=80, warmup_iters=10, lr_steps=(60,),
                          checkpoint_every=80)
print("this lesson: max_iters", cfg.max_iters, "warmup_iters", cfg.warmup_iters,
      "lr_steps", cfg.lr_steps)

# %% [markdown]
# ## 3. The whole job in one call
#
# `train(config, data_root, output_dir)` is what `python -m mrcnn_edu train` (and so `make
# train`) calls: it trains, then draws the loss curve, evaluates on the val **and** the train
# split with pycocotools and with our evaluator, and draws a grid of val predictions. It prints a
# summary with timings and paths; we keep it out of this notebook (timings differ from run to
# run) and list the files instead.

# %%
run_dir = work / "run"
with contextlib.redirect_stdout(io.StringIO()) as printed:
    summary = train(cfg, mini, run_dir, progress=False)
print(f"{summary['iterations']} iterations, {summary['iterations'] * cfg.batch_size} images seen")
for path in sorted(run_dir.iterdir()):
    print(f"  {path.name}")

# %% [markdown]
# The summary `make train` prints ends with the lines below (the timing line and the paths are
# left out here); every number in it is also in `metrics.json`:

# %%
for line in printed.getvalue().splitlines():
    if " AP " in line:
        print(line.strip())

# %% [markdown]
# ## 4. Reading a run folder
#
# A full `make train` writes exactly these files into `runs/coco_subset/`. One by one:
#
# **`config.json`** -- the resolved config: the preset, every `--set`, and `num_classes` from
# the data. It is the recipe of the run; `Config.from_dict` rebuilds it, and the checkpoint
# carries a copy, so `evaluate` and `predict` need nothing else.

# %%
saved = json.loads((run_dir / "config.json").read_text())
print({k: saved[k] for k in ("num_classes", "categories", "min_size", "max_iters", "lr",
                             "lr_steps", "batch_size", "backbone_weights")})

# %% [markdown]
# **`log.jsonl`** -- one JSON line per iteration: the learning rate, the five losses and their
# sum, and the seconds since the start (the only thing that differs between two runs of the same
# command). `runlog.read_log` reads it; a resumed run continues the same file.

# %%
records = runlog.read_log(run_dir / "log.jsonl")
names = runlog.loss_names(records)
print(f"{len(records)} records; keys: {sorted(records[0])}")
windows = ((1, 10), (31, 40), (71, 80))
print(f"{'iterations':16s}" + "".join(f"{f'{a}-{b}':>10s}" for a, b in windows))
for name in names:
    means = [np.mean([r[name] for r in records[a - 1:b]]) for a, b in windows]
    print(f"{name:16s}" + "".join(f"{m:10.2f}" for m in means))

# %% [markdown]
# **`loss_curve.png`** -- the same losses drawn (thin: every iteration, thick: a running mean).
# In a full run look for: every loss falling, no spike that does not come back down, and a small
# drop at the learning-rate step.

# %%
fig, ax = plt.subplots(figsize=(9, 5))
ax.imshow(plt.imread(run_dir / "loss_curve.png"))
ax.set_axis_off()
plt.show()

# %% [markdown]
# **`metrics.json`** -- COCO AP of the final model on the val split and on the train split, for
# boxes (`bbox`) and masks (`segm`), computed twice: by `pycocotools` and by our evaluator
# (lesson 11), which agree. The **train** rows answer "can the model fit what it saw?", the
# **val** rows "does it generalise?". `results_val.json` and `results_train.json` hold the
# detections that were scored, in the COCO results format.

# %%
metrics = json.loads((run_dir / "metrics.json").read_text())
keys = ("AP", "AP50", "AP75", "AR100")
print(f"{'split':6s}{'evaluator':13s}{'type':6s}" + "".join(f"{k:>7s}" for k in keys))
for split in ("train", "val"):
    m = metrics[split]
    for source in ("pycocotools", "ours"):
        for iou_type in ("bbox", "segm"):
            row = "".join(f"{m[source][iou_type][k]:7.2f}" for k in keys)
            print(f"{split:6s}{source:13s}{iou_type:6s}{row}")
print("images:", {s: metrics[s]["num_images"] for s in ("train", "val")})

# %% [markdown]
# **`predictions.png`** -- the first val images with the detections scoring at least 0.5: masks,
# orange boxes, "class score" captions. `python -m mrcnn_edu predict CHECKPOINT IMAGE ... -o DIR`
# draws the same for any photo.

# %%
fig, ax = plt.subplots(figsize=(12, 5))
ax.imshow(plt.imread(run_dir / "predictions.png"))
ax.set_axis_off()
plt.show()

# %% [markdown]
# **`checkpoint.pt`** -- model, optimizer, iteration, config and class names, replaced atomically
# every `checkpoint_every` steps (250 in `make train`). A killed run continues with the same
# command plus `--resume` (`make train ARGS=--resume`) and repeats the losses the uninterrupted
# run would have had. Without `--resume`, a folder that already has a checkpoint is refused, so a
# finished run is never overwritten by accident: pass `RUN=runs/another` for a second one.

# %%
state = torch.load(run_dir / "checkpoint.pt", map_location="cpu", weights_only=False)
print(sorted(state), "iteration", state["iteration"], "classes", state["class_names"])

# %% [markdown]
# ## 5. How to read the numbers of a full run
#
# Eighty steps on four images is a demonstration of the loop, not a model: the train numbers
# show how far 20 passes fitted its four pictures, and the val numbers, on two images with six
# people, are mostly chance. The full `make train`
# (2200 steps on 76 photos, under 20 minutes on 2 cores) is the same loop, longer.
# `docs/benchmarks.md` has its measured numbers; when you read its `metrics.json`:
#
# - **train vs val**: the train rows say how well the model fits what it saw, the val rows how
#   much 76 photos teach. The full run fits its training photos well (train AP50 far above
#   0.5), while val AP stays near zero: the network has memorised these people, not learned what
#   a person looks like. That gap is overfitting in its purest form; more data, augmentation, a
#   pretrained backbone and a longer schedule on a GPU are what close it.
# - **AP50 vs AP**: AP averages IoU thresholds 0.5 to 0.95. A small model at 256 pixels finds
#   people (AP50) long before its masks are tight (AP75).
# - **APs / APm / APl**: most people in COCO are small; at 256 pixels a small person is a few
#   pixels tall. The full run memorises even those (train APs well above zero), but on val,
#   where it must recognise people it never saw, APs stays near zero.
# - **Published numbers are not comparable**: the paper's R-50-FPN (mask AP 33.6 on COCO
#   minival, its Table 2a) trained on ~115k images of 80 categories for 90k steps of 16 images,
#   starting from ImageNet weights, at 800 pixels. `docs/benchmarks.md` lists such references
#   next to what we measured, clearly marked as not measured here.

# %%
workdir.cleanup()

# %% [markdown]
# ## Summary
# - `make train` = `python -m mrcnn_edu train --preset subset`: the tiny model from scratch on
#   the COCO subset's person class, evaluated on val and train.
# - A run folder holds `config.json` (the recipe), `log.jsonl` (losses per step),
#   `checkpoint.pt`, `loss_curve.png`, `metrics.json` (AP on val and train, pycocotools and ours,
#   boxes and masks), `results_*.json` and `predictions.png`.
# - Read train AP next to val AP: the first says the model can learn, the second how much the
#   data teaches. From scratch on 76 photos, expect a large gap.
#
# ## Exercises
# 1. Train this lesson's mini run on 8 images instead of 4 with the same 80 steps. What happens
#    to the train AP, and to the val AP?
# 2. Add a second category (`categories=["person", "car"]`). How do the classifier loss at
#    step 1 and the final train AP change?
# 3. Kill a `make train` run after its first checkpoint and continue it with
#    `make train ARGS=--resume`. Compare the resumed `log.jsonl` with an uninterrupted run's.
# 4. Start the backbone from ImageNet weights instead of random numbers: torchvision's
#    `resnet18` file with `--backbone-weights FILE --set norm=frozen_bn --set freeze_at=2` (see
#    the README). Compare the train and val AP of a short run with and without.
