"""The GPU benchmark: the twins against the reference on the device, a training step with AMP off
and on, and our r50_fpn against torchvision's Mask R-CNN; written to the section "gpu" of
docs/benchmarks.md.

    python bench/bench_gpu.py                                   # on a CUDA machine: everything
    python bench/bench_gpu.py --iters 50 --skip-torchvision     # more iterations, ours only
    OMP_NUM_THREADS=1 python bench/bench_gpu.py --device cpu --small --no-write   # CPU smoke test

What is measured, in three parts:

1. Twins. Every function exported by `mrcnn_edu.ops` runs on the device in float32 on seeded
   random inputs and is compared with its `mrcnn_edu.reference` namesake, as tests/test_*.py
   compare them. Real-valued outputs report max |twin - ref| / max |ref| per output (the
   reference gets the same float32 numbers as float64, so this is the twin's float32 error;
   the goal is <= 1e-5). Discrete outputs (NMS keep-indices, matching labels, binary masks,
   FPN levels) report "exact" or how many entries differ. RoIAlign's gradient is compared with
   `reference.roi_align_backward`.
2. A training step of our model (forward in train mode, reading the five losses, backward, SGD
   step), through `engine.train.compute_losses` and `apply_gradients`, the trainer's own code,
   with AMP off and on (Config.amp; CUDA only): the losses stay finite, the median time per
   iteration after warm-up (torch.cuda.synchronize at the end of each), and the peak GPU memory
   (torch.cuda.max_memory_allocated, reset per case: weights, gradients, momentum, inputs and
   activations) per image.
3. The `r50_fpn` preset against torchvision's Mask R-CNN R-50-FPN in the same process on the same
   GPU, batch 2 of 800 x 1333 synthetic images (random ellipses with boxes, labels and masks,
   the same tensors for both), float32 (and an AMP row each). Ours has num_classes=90 (K
   foreground classes, K + 1 outputs); torchvision's num_classes=91 counts the background, so
   both predict 91. torchvision is built as `maskrcnn_resnet50_fpn` builds it for training from
   ImageNet weights (FrozenBatchNorm2d, stem and layer1 frozen: our preset's frozen_bn and
   freeze_at=2) but with random weights; `maskrcnn_resnet50_fpn(weights=None,
   weights_backbone=None)` itself switches to trainable BatchNorm2d and trains all five stages,
   so it gets a row of its own and is not the yardstick. Both use SGD (lr 0.02, momentum 0.9,
   weight decay 1e-4) at the learning rate of the first warm-up iterations (`train.lr_at`),
   where both recipes start: from random weights the full 0.02 risks diverging within the timed
   iterations, and NaN proposals would change the work being timed. Reported: both medians,
   the ratio ours / torchvision (target <= 1.3), peak memory per image, and a torch.profiler
   table of our iteration (top ops by GPU time, and by CPU time) to say where the time goes.

Running it on the GPU machine. The repository's working tree is copied there (no installed
package: the script puts the repository root on sys.path); from the repository root,
`python3 bench/bench_gpu.py` takes a few minutes, and each part prints as it finishes. The
numba kernels of the reference compile on the first run (about a minute). torchvision is
imported only inside `load_torchvision`, never by the package; without it (or with
--skip-torchvision) part 3 reports our model alone, with a printed note. A failure inside
torchvision is printed and noted, and our numbers are still reported. The section is written
to that machine's copy of docs/benchmarks.md: bring it back through $OUT
(`python3 bench/bench_gpu.py && cp docs/benchmarks.md $OUT/`).

pycocotools: this script needs none, but the package imports it at import time. `mrcnn_edu.ops`
(and so `mrcnn_edu.model`) imports from `mrcnn_edu.reference`, whose __init__ imports
`reference.coco_eval`, which imports `pycocotools.mask` at its top; `engine.train` imports
`mrcnn_edu.data` (`pycocotools.mask`, `pycocotools.coco`). Where it is not installed (the GPU
machine's image lacks it), `stand_in_for_pycocotools` registers placeholder modules before
mrcnn_edu is imported, so the imports succeed and any call into pycocotools raises; the one
check that needs it, the segm row of coco_evaluate (RLE encoding), is then reported as skipped.
To run that row too, install a pycocotools wheel there before running the script.
"""
import argparse
import dataclasses
import gc
import math
import sys
import traceback
import types
from functools import partial
from pathlib import Path

import numpy as np
import torch

from _report import command_line, machine_line, median_ms, write_section  # bench/ is on sys.path

REL_TOL = 1e-5  # the float32 agreement the twins must reach (relative to the output's scale)
# RoIAlign samples at positions computed in the map's dtype, as the kernels do: in float32 a
# coordinate near 168 cells is only known to 1.5e-5 cells, so the sampled values move by about
# that much times the map's slope. The float32 rows get this goal; the float64 rows on the
# device check the rule itself, to FLOAT64_TOL.
ROI_ALIGN_FLOAT32_TOL = 1e-4
FLOAT64_TOL = 1e-10
SEED = 0
NUM_CLASSES = 90  # foreground classes: our model predicts 91 with background, torchvision's 91
BATCH = 2  # images per iteration
TINY_IMAGE = (256, 320)  # (H, W) of the tiny preset's case, and of every case with --small


def stand_in_for_pycocotools():
    """True when pycocotools imports; otherwise register placeholder modules and return False.

    The placeholders satisfy `from pycocotools import mask` and `from pycocotools.coco import
    COCO` at import time; calling anything in them raises ModuleNotFoundError.
    """
    try:
        import pycocotools.mask  # noqa: F401
        return True
    except ImportError:
        pass

    class Missing(types.ModuleType):
        def __getattr__(self, name):
            if name.startswith("__"):
                raise AttributeError(name)

            def unavailable(*args, **kwargs):
                raise ModuleNotFoundError(f"pycocotools is not installed ({self.__name__}.{name})")
            return unavailable

    parent = sys.modules["pycocotools"] = Missing("pycocotools")
    for name in ("mask", "coco", "cocoeval"):
        sys.modules[f"pycocotools.{name}"] = Missing(f"pycocotools.{name}")
        setattr(parent, name, sys.modules[f"pycocotools.{name}"])
    return False


# mrcnn_edu is imported only now: the placeholders above must be in place first. The repository
# root goes on the path too: the GPU machine gets the working tree, not an installed package.
HAVE_PYCOCOTOOLS = stand_in_for_pycocotools()
sys.path.insert(1, str(Path(__file__).resolve().parents[1]))
from mrcnn_edu import ops, reference as ref  # noqa: E402
from mrcnn_edu.config import preset  # noqa: E402
from mrcnn_edu.engine.train import apply_gradients, compute_losses, lr_at, set_lr  # noqa: E402
from mrcnn_edu.model import MaskRCNN  # noqa: E402


# ---------------------------------------------------------------- inputs

def f64(array):
    """The reference's copy of a float32 input: the same numbers, computed on in float64."""
    return np.asarray(array, dtype=np.float64)


def random_boxes(rng, n, image_size, sides=(4.0, 256.0)):
    """n float32 boxes (n, 4): centres uniform over the (H, W) image, so some overhang it;
    sides log-uniform in `sides`."""
    height, width = image_size
    centres = rng.uniform(0, 1, (n, 2)) * (width, height)
    wh = np.exp(rng.uniform(np.log(sides[0]), np.log(sides[1]), (n, 2)))
    return np.concatenate([centres - wh / 2, centres + wh / 2], 1).astype(np.float32)


def clustered_boxes(rng, n, image_size, clusters=60):
    """n float32 boxes jittered around `clusters` objects, like RPN proposals before NMS."""
    height, width = image_size
    centres = rng.uniform(0.1, 0.9, (clusters, 2)) * (width, height)
    sizes = rng.uniform(32, 200, (clusters, 2))
    which = rng.integers(0, clusters, n)
    c = centres[which] + rng.normal(0, 0.1, (n, 2)) * sizes[which]
    wh = sizes[which] * rng.uniform(0.8, 1.25, (n, 2))
    return np.concatenate([c - wh / 2, c + wh / 2], 1).astype(np.float32)


def random_rois(rng, k, batch, extent):
    """(k, 5) float32 RoIs [b, x1, y1, x2, y2] as in tests/test_roi_align.py: some leave the map,
    some are tiny (< 1 cell), some bigger than the map, a tenth inverted (x2 < x1)."""
    xy = rng.uniform(-0.3 * extent, extent, (k, 2))
    wh = np.exp(rng.uniform(np.log(0.05), np.log(2 * extent), (k, 2)))
    wh[: k // 10] *= -0.1
    index = rng.integers(0, batch, (k, 1))
    return np.concatenate([index, xy, xy + wh], 1).astype(np.float32)


def ellipse_masks(rng, n, image_size, sides=(0.1, 0.5)):
    """n filled ellipses in an (H, W) image: masks (n, H, W) uint8 and their boxes (n, 4)
    float32; each side is a fraction `sides` of the image's. A pixel is in when its centre is."""
    height, width = image_size
    wh = rng.uniform(*sides, (n, 2)) * (width, height)
    x1y1 = rng.uniform(0, 1, (n, 2)) * ((width, height) - wh)
    boxes = np.concatenate([x1y1, x1y1 + wh], 1).astype(np.float32)  # (n, 4)
    ys, xs = np.arange(height) + 0.5, np.arange(width) + 0.5  # pixel centres
    masks = np.zeros((n, height, width), np.uint8)
    for i, (x1, y1, x2, y2) in enumerate(boxes.astype(np.float64)):
        cx, cy, rx, ry = (x1 + x2) / 2, (y1 + y2) / 2, (x2 - x1) / 2, (y2 - y1) / 2
        masks[i] = ((xs[None] - cx) / rx) ** 2 + ((ys[:, None] - cy) / ry) ** 2 <= 1  # (H, W)
    return masks, boxes


# ---------------------------------------------------------------- comparing twin and reference

def parts_of(x):
    """A tensor, number or array, or a list/tuple of them -> a list of flat float64 arrays."""
    if isinstance(x, (list, tuple)):
        return [p for item in x for p in parts_of(item)]
    if torch.is_tensor(x):
        x = x.detach().cpu().numpy()
    return [np.asarray(x, dtype=np.float64).ravel()]


def values_row(op, inputs, got, want, tol=REL_TOL):
    """Real-valued outputs: the largest max |got - want| / max |want| over the outputs' parts
    (each part on its own scale, so a small loss is not hidden behind a big one), against `tol`."""
    worst = 0.0
    for g, w in zip(parts_of(got), parts_of(want), strict=True):
        if g.shape != w.shape:
            return {"op": op, "inputs": inputs, "result": f"shape {g.shape} vs {w.shape}", "ok": False}
        if g.size:
            scale = np.abs(w).max()
            error = np.abs(g - w).max() / (scale if scale > 0 else 1.0)
            worst = error if np.isnan(error) else max(worst, error)
    note = "" if tol == REL_TOL else f" (goal {tol:g})"
    return {"op": op, "inputs": inputs, "result": f"{worst:.1e}{note}", "ok": bool(worst <= tol)}


def exact_row(op, inputs, got, want, note=""):
    """Discrete outputs (indices, labels, binary masks): "exact" or how many entries differ."""
    g, w = np.concatenate(parts_of(got)), np.concatenate(parts_of(want))
    if g.shape != w.shape:
        result = f"mismatch: {g.size} vs {w.size} entries"
    else:
        differ = int((g != w).sum())
        result = "exact" if differ == 0 else f"mismatch: {differ} of {w.size} differ"
    return {"op": op, "inputs": inputs, "result": result + note, "ok": result == "exact"}


# ---------------------------------------------------------------- part 1: the twins

def check_boxes_and_anchors(rng, device, small):
    """Lessons 01-03: box_area, box_iou, clip_boxes, remove_small_boxes, anchors, box coding."""
    t = partial(torch.as_tensor, device=device)  # float32 arrays stay float32
    image = (96, 128) if small else (800, 1344)
    boxes = random_boxes(rng, 300 if small else 3000, image)
    other = random_boxes(rng, 20 if small else 100, image)
    tiny = random_boxes(rng, 300 if small else 3000, image, sides=(0.1, 8.0))
    n = f"{len(boxes)}"
    rows = [values_row("box_area", f"{n} boxes", ops.box_area(t(boxes)), ref.box_area(f64(boxes))),
            values_row("box_iou", f"{n} x {len(other)}", ops.box_iou(t(boxes), t(other)),
                       ref.box_iou(f64(boxes), f64(other))),
            values_row("clip_boxes", f"{n} boxes, image {image}", ops.clip_boxes(t(boxes), image),
                       ref.clip_boxes(f64(boxes), image)),
            exact_row("remove_small_boxes", f"{len(tiny)} boxes of 0.1-8 px, min 2",
                      ops.remove_small_boxes(t(tiny), 2.0), ref.remove_small_boxes(tiny, 2.0))]
    anchors = ops.generate_anchors(image, device=device)  # float32, one tensor per level
    rows.append(values_row("generate_anchors", f"image {image}, P2-P6, 3 ratios "
                           f"({sum(len(a) for a in anchors)})", anchors, ref.generate_anchors(image)))
    pairs = 1000 if small else 50000
    a, g = random_boxes(rng, pairs, image, (10, 300)), random_boxes(rng, pairs, image, (10, 300))
    weights = (10.0, 10.0, 5.0, 5.0)
    rows.append(values_row("encode_boxes", f"{pairs} pairs, weights {weights}",
                           ops.encode_boxes(t(a), t(g), weights), ref.encode_boxes(f64(a), f64(g), weights)))
    k, classes = (200, 6) if small else (2000, 91)
    wild = 6.0 * (rng.random((k, 4 * classes)) < 0.01)  # dw, dh beyond log(1000 / 16): clamped
    deltas = (rng.normal(0, 0.5, (k, 4 * classes)) + wild).astype(np.float32)
    rows.append(values_row("decode_boxes", f"{k} x {classes} classes, 1% past the clamp",
                           ops.decode_boxes(t(a[:k]), t(deltas), weights),
                           ref.decode_boxes(f64(a[:k]), f64(deltas), weights)))
    return rows


def check_nms_and_matching(rng, device, small):
    """Lessons 04-05: nms, batched_nms, match_anchors, sample_labels, assign_fpn_levels.

    NMS and matching get the same float32 numbers on both sides (tests/test_nms.py does so):
    their outputs are decisions, and float64 arithmetic could decide a near-tie the other way.
    """
    t = partial(torch.as_tensor, device=device)
    image = (96, 128) if small else (800, 1344)
    n = 1000 if small else 6000
    boxes = clustered_boxes(rng, n, image)
    scores = rng.random(n).astype(np.float32)
    scores[::7] = scores[0]  # some ties: both visit them lower index first
    labels = rng.integers(0, 10, n)
    rows = [exact_row("nms", f"{n} clustered boxes @ 0.7", ops.nms(t(boxes), t(scores), 0.7),
                      ref.nms(boxes, scores, 0.7)),
            exact_row("batched_nms", f"{n} boxes, 10 labels @ 0.5",
                      ops.batched_nms(t(boxes), t(scores), t(labels), 0.5),
                      ref.batched_nms(boxes, scores, labels, 0.5))]
    anchors = np.concatenate(ref.generate_anchors(image)).astype(np.float32)  # (A, 4)
    gt = random_boxes(rng, 4 if small else 20, image, (16, 400))
    iou = ops.box_iou(t(gt), t(anchors))  # (G, A) computed on the device, as the RPN does
    iou_np = iou.cpu().numpy()
    matched, got_labels = ops.match_anchors(iou)
    want_matched, want_labels = ref.match_anchors(iou_np)
    shape = f"IoU {tuple(iou.shape)}"
    rows += [exact_row("match_anchors", f"labels, {shape}", got_labels, want_labels),
             exact_row("match_anchors", f"matched gt of every anchor, {shape}", matched, want_matched)]
    got = ops.sample_labels(got_labels, 256, 0.5, generator=SEED).cpu().numpy()
    want = ref.sample_labels(want_labels, 256, 0.5, SEED)
    valid = all(((got == v) <= (want_labels == v)).all() for v in (0, 1))  # picks keep their label
    rows.append(exact_row("sample_labels", "256 of the labels above, half positive",
                          [(got == 1).sum(), (got == 0).sum(), valid],
                          [(want == 1).sum(), (want == 0).sum(), True],
                          note=" (counts; the picks differ by design: two RNGs)"))
    xy = rng.uniform(0, 800, (500 if small else 5000, 2))
    wh = np.exp(rng.uniform(0, np.log(1500), xy.shape))
    level_boxes = np.concatenate([xy, xy + wh], 1).astype(np.float32)
    rows.append(exact_row("assign_fpn_levels", f"{len(level_boxes)} boxes of 1-1500 px",
                          ops.assign_fpn_levels(t(level_boxes)), ref.assign_fpn_levels(level_boxes)))
    return rows


def check_roi_ops(rng, device, small):
    """Lesson 06: roi_pool, roi_align forward and gradient (autograd and roi_align_backward),
    multiscale_roi_align; in float32 on the device, and in float64 there to check the rules."""
    rows = []
    feats = rng.normal(size=(2, 8, 24, 32) if small else (2, 64, 100, 168)).astype(np.float32)
    k, scale = (50, 1 / 8) if small else (512, 1 / 8)
    rois = random_rois(rng, k, 2, extent=feats.shape[2] / scale).astype(np.float32)
    image, channels = ((64, 96), 4) if small else ((800, 1344), 32)
    levels = [rng.normal(size=(2, channels, image[0] >> k, image[1] >> k)).astype(np.float32)
              for k in range(2, 6)]  # P2..P5
    boxes = random_boxes(rng, 50 if small else 1000, image, (8, 800))
    level_rois = np.concatenate([rng.integers(0, 2, (len(boxes), 1)), boxes], 1).astype(np.float32)
    grads = {}
    for dtype in (np.float32, np.float64):
        t = partial(torch.as_tensor, device=device, dtype=getattr(torch, np.dtype(dtype).name))
        tol = ROI_ALIGN_FLOAT32_TOL if dtype == np.float32 else FLOAT64_TOL
        kind = np.dtype(dtype).name
        shape = f"{kind}: features {feats.shape}, {k} RoIs, scale 1/8"
        # RoIPool's bin edges follow the map's precision, so the reference gets the map in the
        # same dtype; its outputs are picks of that map, so they must be equal
        rows.append(exact_row("roi_pool", f"{shape}, 7 x 7", ops.roi_pool(t(feats), t(rois), 7, scale),
                              ref.roi_pool(feats.astype(dtype), rois.astype(dtype), 7, scale)))
        for size, ratio, aligned in ((7, 2, True), (14, -1, False)):
            case = f"{shape}, {size} x {size}, sampling {ratio}, aligned={aligned}"
            f = t(feats).requires_grad_(True)
            out = ops.roi_align(f, t(rois), size, scale, ratio, aligned)
            grad = grads.setdefault(case[len(kind):], rng.normal(size=tuple(out.shape)).astype(np.float32))
            out.backward(t(grad))
            rows.append(values_row("roi_align", case, out, ref.roi_align(
                f64(feats), f64(rois), size, scale, ratio, aligned), tol))
            want = ref.roi_align_backward(f64(grad), f64(rois), feats.shape, scale, ratio, aligned)
            rows.append(values_row("roi_align", f"gradient (autograd), {case}", f.grad, want, tol))
            rows.append(values_row("roi_align_backward", case, ops.roi_align_backward(
                t(grad), t(rois), feats.shape, scale, ratio, aligned), want, tol))
        rows.append(values_row("multiscale_roi_align", f"{kind}: P2-P5 of {image} x {channels} "
                               f"channels, {len(level_rois)} RoIs of 8-800 px, 7 x 7",
                               ops.multiscale_roi_align([t(x) for x in levels], t(level_rois), 7),
                               ref.multiscale_roi_align([f64(x) for x in levels], f64(level_rois), 7),
                               tol))
    return rows


def check_masks(rng, device, small):
    """Lesson 07: mask_targets (and the model's batch_mask_targets), paste_masks (binary
    outputs: compared exactly)."""
    t = partial(torch.as_tensor, device=device)
    image = (60, 80) if small else (800, 1333)
    gt, gt_boxes = ellipse_masks(rng, 3 if small else 8, image)
    k = 20 if small else 256
    index = rng.integers(0, len(gt), k)
    wh = np.tile(gt_boxes[index, 2:] - gt_boxes[index, :2], 2)  # (k, 4) w, h, w, h
    rois = (gt_boxes[index] + rng.normal(0, 0.1, (k, 4)) * wh).astype(np.float32)  # near their gt
    rows = [exact_row("mask_targets", f"{len(gt)} masks of {image}, {k} RoIs, 28 x 28",
                      ops.mask_targets(t(gt), t(index), t(rois), 28),
                      ref.mask_targets(gt, index, f64(rois), 28))]
    # the model's batched form: this image and a smaller second one, in one call
    half = tuple(n // 2 for n in image)
    gt2, gt2_boxes = ellipse_masks(rng, 3, half)
    index2 = rng.integers(0, len(gt2), k // 2)
    rois2 = gt2_boxes[index2].astype(np.float32)
    rows.append(exact_row("batch_mask_targets", f"the same and {len(index2)} RoIs on {half}",
                          ops.batch_mask_targets([t(gt), t(gt2)], [t(index), t(index2)],
                                                 [t(rois), t(rois2)], 28),
                          np.concatenate([ref.mask_targets(gt, index, f64(rois), 28),
                                          ref.mask_targets(gt2, index2, f64(rois2), 28)])))
    k = 20 if small else 100
    boxes = random_boxes(rng, k, image, (8, 400))
    probs = rng.uniform(size=(k, 28, 28)).astype(np.float32)
    rows.append(exact_row("paste_masks", f"{k} masks 28 x 28 into {image}",
                          ops.paste_masks(t(probs), t(boxes), image),
                          ref.paste_masks(f64(probs), f64(boxes), image)))
    return rows


def check_losses(rng, device, small):
    """Lesson 07: the five losses (the reference returns Python floats)."""
    t = partial(torch.as_tensor, device=device)
    a, k, classes, m = (50, 40, 5, 7) if small else (512, 512, 90, 28)
    pred = (rng.normal(size=(a, 4)) * 0.3).astype(np.float32)
    target = (rng.normal(size=(a, 4)) * 0.3).astype(np.float32)
    labels = rng.integers(-1, 2, a)
    logits = (rng.normal(size=a) * 3).astype(np.float32)
    rows = [values_row("smooth_l1_loss", f"({a}, 4), beta 1/9, sum and mean",
                       [ops.smooth_l1_loss(t(pred), t(target), 1 / 9, r) for r in ("sum", "mean")],
                       [ref.smooth_l1_loss(f64(pred), f64(target), 1 / 9, r) for r in ("sum", "mean")]),
            values_row("objectness_loss", f"{a} anchors", ops.objectness_loss(t(logits), t(labels)),
                       ref.objectness_loss(f64(logits), labels)),
            values_row("rpn_box_loss", f"{a} anchors", ops.rpn_box_loss(t(pred), t(target), t(labels)),
                       ref.rpn_box_loss(f64(pred), f64(target), labels))]
    cls_logits = rng.normal(size=(k, classes + 1)).astype(np.float32)
    deltas = (rng.normal(size=(k, 4 * (classes + 1))) * 0.2).astype(np.float32)
    roi_labels, reg = rng.integers(0, classes + 1, k), (rng.normal(size=(k, 4)) * 0.2).astype(np.float32)
    rows.append(values_row("fast_rcnn_loss", f"{k} RoIs, {classes} + 1 classes",
                           ops.fast_rcnn_loss(t(cls_logits), t(deltas), t(roi_labels), t(reg)),
                           ref.fast_rcnn_loss(f64(cls_logits), f64(deltas), roi_labels, f64(reg))))
    fg = k // 4
    mask_logits = (rng.normal(size=(fg, classes + 1, m, m)) * 3).astype(np.float32)
    mask_targets = (rng.uniform(size=(fg, m, m)) > 0.5).astype(np.float32)
    positive = rng.integers(1, classes + 1, fg)
    rows.append(values_row("mask_loss", f"{fg} RoIs, {classes} + 1 channels of {m} x {m}",
                           ops.mask_loss(t(mask_logits), t(positive), t(mask_targets)),
                           ref.mask_loss(f64(mask_logits), positive, f64(mask_targets))))
    return rows


def coco_scene(rng, num_images, image_size=(120, 160), with_masks=False):
    """A COCO gt dict and detections: 1-7 ellipses per image (a tenth crowds), 80% of them
    detected with a jittered box (and shifted mask), plus 2 false positives per image."""
    if with_masks:
        from pycocotools import mask as mask_utils

        def encode(mask):
            return mask_utils.encode(np.asfortranarray(mask))
    height, width = image_size
    gt = {"images": [{"id": i + 1, "height": height, "width": width} for i in range(num_images)],
          "annotations": [], "categories": [{"id": c} for c in (1, 2, 3)]}
    detections = []
    for image in gt["images"]:
        masks, boxes = ellipse_masks(rng, int(rng.integers(1, 8)), image_size, (0.05, 0.5))
        for mask, (x1, y1, x2, y2) in zip(masks, boxes.tolist()):
            w, h = x2 - x1, y2 - y1
            ann = {"id": len(gt["annotations"]) + 1, "image_id": image["id"],
                   "category_id": int(rng.integers(1, 4)), "bbox": [x1, y1, w, h],
                   "area": float(mask.sum()), "iscrowd": int(rng.random() < 0.1)}
            if with_masks:
                ann["segmentation"] = encode(mask)
            gt["annotations"].append(ann)
            if rng.random() < 0.8:
                dx, dy = rng.normal(0, 0.1, 2) * (w, h)
                det = {"image_id": image["id"], "category_id": ann["category_id"],
                       "score": float(rng.random()),
                       "bbox": [x1 + dx, y1 + dy, w * rng.uniform(0.8, 1.2), h * rng.uniform(0.8, 1.2)]}
                if with_masks:
                    det["segmentation"] = encode(np.roll(mask, (round(dy), round(dx)), axis=(0, 1)))
                detections.append(det)
        fp_masks, fp_boxes = ellipse_masks(rng, 2, image_size, (0.05, 0.3))
        for mask, (x1, y1, x2, y2) in zip(fp_masks, fp_boxes.tolist()):
            det = {"image_id": image["id"], "category_id": int(rng.integers(1, 4)),
                   "score": float(rng.random()), "bbox": [x1, y1, x2 - x1, y2 - y1]}
            if with_masks:
                det["segmentation"] = encode(mask)
            detections.append(det)
    return gt, detections


def check_coco_eval(rng, device, small):
    """Lesson 11: coco_evaluate, the twin's IoUs, matching and accumulation on the device."""
    rows = []
    num_images = 3 if small else 50
    for iou_type in ("bbox", "segm"):
        inputs = f"{num_images} images, 3 categories, {iou_type}"
        if iou_type == "segm" and not HAVE_PYCOCOTOOLS:
            rows.append({"op": "coco_evaluate", "inputs": inputs, "result": "skipped: no pycocotools "
                         "to encode the RLEs", "ok": True})
            continue
        gt, detections = coco_scene(rng, num_images, with_masks=iou_type == "segm")
        got = ops.coco_evaluate(gt, detections, iou_type, device=device)
        want = ref.coco_evaluate(gt, detections, iou_type)
        names = [k for k in want if isinstance(want[k], float)]  # AP, AP50, ..., ARl
        rows.append(values_row("coco_evaluate", f"{inputs}: the 12 numbers, precision, recall",
                               [[got[k] for k in names], got["precision"], got["recall"]],
                               [[want[k] for k in names], want["precision"], want["recall"]]))
    return rows


def check_twins(device, small):
    """Part 1: one row per (op, case); a row per op of `mrcnn_edu.ops` that no check covers."""
    rng = np.random.default_rng(SEED)
    rows = []
    for check in (check_boxes_and_anchors, check_nms_and_matching, check_roi_ops, check_masks, check_losses,
                  check_coco_eval):
        rows += check(rng, device, small)
    exported = [name for name, value in vars(ops).items() if isinstance(value, types.FunctionType)]
    checked = {row["op"] for row in rows}
    rows += [{"op": name, "inputs": "", "result": "NOT CHECKED", "ok": False}
             for name in exported if name not in checked]
    return rows


# ---------------------------------------------------------------- parts 2 and 3: training

def synchronize(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def synthetic_batch(rng, batch, image_size, num_classes, device):
    """`batch` images (3, H, W) in [0, 1], dark noise with 2-6 bright ellipses each, and their
    targets (boxes xyxy float32, labels 1..num_classes, masks (N, H, W) uint8, iscrowd)."""
    images, targets = [], []
    for _ in range(batch):
        n = int(rng.integers(2, 7))
        masks, boxes = ellipse_masks(rng, n, image_size)
        image = rng.uniform(0, 0.3, (3, *image_size)).astype(np.float32)
        for mask in masks.astype(bool):
            image[:, mask] = rng.uniform(0.4, 1.0, (3, 1))
        images.append(torch.from_numpy(image).to(device))
        targets.append({"boxes": torch.from_numpy(boxes).to(device),
                        "labels": torch.from_numpy(rng.integers(1, num_classes + 1, n)).to(device),
                        "masks": torch.from_numpy(masks).to(device),
                        "iscrowd": torch.zeros(n, dtype=torch.int64, device=device)})
    return images, targets


def self_time_us(event, on_gpu):
    """An averaged profiler event's own time (children excluded) on the GPU or the CPU, in us."""
    if on_gpu:  # renamed from *_cuda_* to *_device_* in torch 2.4
        return getattr(event, "self_device_time_total", None) or getattr(event, "self_cuda_time_total", 0)
    return event.self_cpu_time_total


def profile_iterations(step, steps, device):
    """Run `steps` more iterations under torch.profiler: {"gpu": rows, "cpu": rows, "busy_ms"}.

    Rows are (name, ms per iteration, share, calls per iteration), top first. GPU rows are the
    torch ops by the time of the kernels they launched themselves (a partition of the GPU time);
    busy_ms is the GPU's total kernel time per iteration, to set against the wall time.
    """
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile
    on_gpu = device.type == "cuda"
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if on_gpu else [])
    with profile(activities=activities) as prof:
        for _ in range(steps):
            step()
    events = prof.key_averages()

    def top(gpu, total, limit):
        ranked = sorted((e for e in events if (not gpu or e.device_type == DeviceType.CPU)
                         and self_time_us(e, gpu) > 0), key=lambda e: -self_time_us(e, gpu))
        return [(e.key, self_time_us(e, gpu) / 1e3 / steps, self_time_us(e, gpu) / max(total, 1e-9),
                 e.count / steps) for e in ranked[:limit]]

    cpu_total = sum(e.self_cpu_time_total for e in events)
    result = {"cpu": top(False, cpu_total, 10 if on_gpu else 15), "busy_ms": None, "gpu": []}
    if on_gpu:
        gpu_total = sum(self_time_us(e, True) for e in events if e.device_type == DeviceType.CUDA)
        result.update(gpu=top(True, gpu_total, 15), busy_ms=gpu_total / 1e3 / steps)
    return result


def time_training(model, config, images, targets, use_amp, iters, warmup, device, profile_steps=0):
    """Median ms of a training iteration, the trainer's way: seed, lr, forward, read the losses,
    backward, SGD step. Also every iteration's losses, and a profile when profile_steps > 0."""
    model.to(device).train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=config.lr, momentum=config.momentum,
                                weight_decay=config.weight_decay)
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    history = []

    def step():
        iteration = len(history)
        torch.manual_seed(iteration)  # the anchor and RoI sampling, seeded as the trainer does
        set_lr(optimizer, lr_at(iteration, config))  # the first warm-up iterations' rate
        losses = compute_losses(model, images, targets, use_amp)
        history.append({k: v.item() for k, v in losses.items()})  # the trainer reads them too
        apply_gradients(optimizer, scaler, sum(losses.values()), params, config.grad_clip)
        synchronize(device)  # the step has finished on the GPU, not just been queued

    ms = median_ms(step, repeat=iters, warmup=warmup)
    profile = profile_iterations(step, profile_steps, device) if profile_steps else None
    return {"ms": ms, "history": history, "profile": profile}


def run_case(name, make_model, config, images, targets, use_amp, args, device, profile_steps=0):
    """Build a model, time it (`time_training`), measure its peak memory: one result row."""
    if device.type == "cuda":
        gc.collect()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)  # the inputs, already there, count from here
    torch.manual_seed(SEED)
    model = make_model()
    result = time_training(model, config, images, targets, use_amp, args.iters, args.warmup, device,
                           profile_steps)
    peak = torch.cuda.max_memory_allocated(device) / 2 ** 20 if device.type == "cuda" else None
    del model
    bad = [(i, k, v) for i, losses in enumerate(result["history"]) for k, v in losses.items()
           if not math.isfinite(v)]
    totals = [sum(losses.values()) for losses in result["history"]]
    print(f"  {name}, AMP {'on' if use_amp else 'off'}: {result['ms']:.1f} ms / iteration", flush=True)
    return {"name": name, "image": tuple(images[0].shape[-2:]), "batch": len(images), "amp": use_amp,
            "ms": result["ms"], "peak_per_image": None if peak is None else peak / len(images),
            "finite": f"yes (all {len(totals)})" if not bad else
                      f"**no**: {bad[0][1]} = {bad[0][2]} at iteration {bad[0][0]}",
            "loss": f"{totals[0]:.3g} -> {totals[-1]:.3g}", "profile": result["profile"]}


def our_config(name, image_size, num_classes):
    """A preset at this image size: min_size / max_size set so the images are not resized."""
    return dataclasses.replace(preset(name), num_classes=num_classes, min_size=min(image_size),
                               max_size=max(image_size))


def load_torchvision():
    """(torchvision module, None), or (None, why not). Imported here only: never by the package."""
    try:
        import torchvision
        import torchvision.models.detection  # noqa: F401  (fails where torchvision is broken)
        return torchvision, None
    except ImportError as error:
        return None, f"cannot import torchvision ({type(error).__name__}: {error})"


def torchvision_models(config, num_classes):
    """{name: builder} for torchvision's Mask R-CNN R-50-FPN with random weights.

    "matched": what maskrcnn_resnet50_fpn builds when given ImageNet backbone weights
    (FrozenBatchNorm2d, stem and layer1 frozen), as our r50_fpn preset is (frozen_bn,
    freeze_at=2). "builder default": maskrcnn_resnet50_fpn(weights=None, weights_backbone=None),
    which trains BatchNorm2d and all five stages.
    """
    from torchvision.models.detection import MaskRCNN as TorchvisionMaskRCNN, maskrcnn_resnet50_fpn
    from torchvision.models.detection.backbone_utils import resnet_fpn_backbone
    from torchvision.ops.misc import FrozenBatchNorm2d
    sizes = {"min_size": config.min_size, "max_size": config.max_size}  # no resize, as for ours

    def matched():
        backbone = resnet_fpn_backbone(backbone_name="resnet50", weights=None,
                                       norm_layer=FrozenBatchNorm2d, trainable_layers=3)
        return TorchvisionMaskRCNN(backbone, num_classes=num_classes, **sizes)

    def builder_default():
        return maskrcnn_resnet50_fpn(weights=None, weights_backbone=None, num_classes=num_classes, **sizes)
    return {"matched": matched, "builder default": builder_default}


def run_training(args, device, use_torchvision):
    """Parts 2 and 3: {"tiny": {amp: row}, "r50": {amp: row}, "torchvision": {(name, amp): row},
    "errors": [message]}.

    Float32 first; within a precision ours, then torchvision, on the same batch.
    """
    rng = np.random.default_rng(SEED)
    amp_modes = (False, True) if device.type == "cuda" else (False,)  # AMP is CUDA only
    tiny_config = our_config("tiny", TINY_IMAGE, NUM_CLASSES)
    r50_config = our_config("r50_fpn", args.image, NUM_CLASSES)
    tiny_data = synthetic_batch(rng, BATCH, TINY_IMAGE, NUM_CLASSES, device)
    data = synthetic_batch(rng, BATCH, args.image, NUM_CLASSES, device)
    results = {"tiny": {}, "r50": {}, "torchvision": {}, "errors": []}
    for amp in amp_modes:
        results["tiny"][amp] = run_case("ours, tiny", lambda: MaskRCNN(tiny_config), tiny_config, *tiny_data,
                                        amp, args, device)
    builders = torchvision_models(r50_config, NUM_CLASSES + 1) if use_torchvision else {}
    for amp in amp_modes:
        profile = 0 if amp else args.profile_steps
        results["r50"][amp] = run_case("ours, r50_fpn", lambda: MaskRCNN(r50_config), r50_config, *data, amp,
                                       args, device, profile)
        for name, build in builders.items():
            if amp and name != "matched":
                continue  # under AMP the yardstick only
            try:
                results["torchvision"][(name, amp)] = run_case(
                    f"torchvision, {name}", build, r50_config, *data, amp, args, device,
                    profile if name == "matched" else 0)
            except Exception as error:  # keep our numbers if torchvision's API has moved
                traceback.print_exc()
                results["errors"].append(f"torchvision, {name}, AMP {'on' if amp else 'off'} failed: "
                                         f"{type(error).__name__}: {error}")
    return results


# ---------------------------------------------------------------- the report

def twins_table(rows, device):
    lines = [f"| op | inputs (float32 on {device.type}) | result | ok |", "|---|---|---|---|"]
    lines += [f"| {r['op']} | {r['inputs']} | {r['result']} | {'yes' if r['ok'] else '**no**'} |"
              for r in rows]
    return "\n".join(lines)


def training_table(rows):
    lines = ["| model | image (H x W) | batch | AMP | ms / iteration | peak MB / image | losses finite "
             "| total loss, first -> last |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        peak = "n/a" if r["peak_per_image"] is None else f"{r['peak_per_image']:.0f}"
        lines.append(f"| {r['name']} | {r['image'][0]} x {r['image'][1]} | {r['batch']} | "
                     f"{'on' if r['amp'] else 'off'} | {r['ms']:.1f} | {peak} | {r['finite']} | "
                     f"{r['loss']} |")
    return "\n".join(lines)


def comparison_lines(results):
    """The ratio ours / torchvision (matched) per precision, and how busy the GPU was for each."""
    lines = []
    for (name, amp), theirs in results["torchvision"].items():
        if name != "matched":
            continue
        ours = results["r50"][amp]
        ratio = ours["ms"] / theirs["ms"]
        lines.append(f"Ratio ours / torchvision (matched), AMP {'on' if amp else 'off'}: **{ratio:.2f}** "
                     f"({ours['ms']:.1f} / {theirs['ms']:.1f} ms; target <= 1.3: "
                     f"{'meets' if ratio <= 1.3 else 'misses'}).  ")
        for who, row in (("ours", ours), ("torchvision", theirs)):
            if row["profile"] and row["profile"]["busy_ms"] is not None:
                busy = row["profile"]["busy_ms"]
                lines.append(f"GPU busy, {who}: {busy:.1f} of {row['ms']:.1f} ms per iteration "
                             f"({100 * busy / row['ms']:.0f}%).  ")
    return lines


def rows_table(what, unit, rows):
    lines = [f"| {what} | {unit} | share | calls / iteration |", "|---|---|---|---|"]
    for name, ms, share, calls in rows:
        name = name if len(name) <= 70 else name[:67] + "..."
        lines.append(f"| `{name.replace('|', '/')}` | {ms:.2f} | {100 * share:.1f}% | {calls:g} |")
    return "\n".join(lines)


def profile_tables(profile, steps):
    """Markdown: our top ops by GPU time (CUDA only) and by own CPU time, per iteration."""
    out = [f"Over {steps} profiled iteration(s), after the timed ones."]
    if profile["gpu"]:
        out[0] += (" GPU time of an op = the kernels it launched itself (the rows partition the "
                   "GPU's busy time); while the GPU is not busy it waits on Python, launches and host "
                   "syncs (`.item()`, `nonzero`, `unique`), which the CPU table shows.")
        out.append(rows_table("op (by the kernels it launched)", "GPU ms / iteration", profile["gpu"]))
    out.append(rows_table("op (own CPU time)", "CPU ms / iteration", profile["cpu"]))
    return "\n\n".join(out)


def report(args, header, twin_rows, results, device, why_not):
    """The markdown section: header, then the three parts."""
    failed = [f"{r['op']} ({r['inputs']}): {r['result']}" for r in twin_rows if not r["ok"]]
    summary = (f"All {len(twin_rows)} twin checks agree." if not failed else
               f"{len(failed)} of {len(twin_rows)} twin checks disagree: " + "; ".join(failed) + ".")
    ours = list(results["tiny"].values()) + list(results["r50"].values())
    compared = []
    for amp, row in results["r50"].items():  # ours, then torchvision, per precision
        compared += [row] + [r for (_, a), r in results["torchvision"].items() if a == amp]
    verdicts = comparison_lines(results) + results["errors"]
    if why_not:
        verdicts.append(f"torchvision comparison skipped: {why_not}.")
    amp_note = ("" if device.type == "cuda" else
                "No AMP rows: AMP is CUDA only (the trainer ignores Config.amp off CUDA).\n")
    height, width = args.image
    return f"""## GPU: the twins on the device, AMP, and r50_fpn against torchvision

{header}  
{summary}

### Twins against the reference, float32 on the device

Result: max |twin - reference| / max |reference| for real values (per output; the reference
computes in float64 on the same float32 inputs; goal <= {REL_TOL:g} unless the row names
another); "exact" or the number of differing entries for indices, labels, levels and binary
masks. The RoI rows run twice, in float32 and in float64 on the device. RoIAlign computes its
sample positions in the map's dtype, as the kernels do: in float32 a position near 168 cells
is known to 1.5e-5 cells only, so those rows have the goal {ROI_ALIGN_FLOAT32_TOL:g}, and the
float64 rows check the rule itself ({FLOAT64_TOL:g}). RoIPool's bin edges also follow the map's
dtype, so its reference gets the map in the same dtype, and its outputs must be equal.

{twins_table(twin_rows, device)}

### A training iteration of our model, AMP off and on

Forward in train mode, the five losses read (`.item()`), backward, SGD step, through
`engine.train.compute_losses` / `apply_gradients`; median of {args.iters} iterations after
{args.warmup} warm-up, each ending with a device synchronize. Peak memory:
torch.cuda.max_memory_allocated over the case (weights, gradients, momentum, inputs,
activations) / batch. Synthetic images: 2-6 random ellipses each, {NUM_CLASSES} + 1 classes.
{amp_note}
{training_table(ours)}

### r50_fpn against torchvision's Mask R-CNN R-50-FPN

Same process and device, the same batch of {BATCH} synthetic {height} x {width} images and targets;
SGD lr 0.02, momentum 0.9, weight decay 1e-4, at the rate of the first warm-up iterations
(`train.lr_at`); random weights. Ours: `preset("r50_fpn")` with num_classes={NUM_CLASSES}.
torchvision "matched": `MaskRCNN(resnet_fpn_backbone(backbone_name="resnet50", weights=None,
norm_layer=FrozenBatchNorm2d, trainable_layers=3), num_classes={NUM_CLASSES + 1})`, which is what
`maskrcnn_resnet50_fpn` builds around ImageNet weights (frozen BN, stem and layer1 frozen, as our
frozen_bn / freeze_at=2). "builder default": `maskrcnn_resnet50_fpn(weights=None,
weights_backbone=None, num_classes={NUM_CLASSES + 1})`, which switches to trainable BatchNorm2d in
all five stages: more work, so not the yardstick.

{training_table(compared)}

{chr(10).join(verdicts)}

### Where our iteration's time goes (torch.profiler, r50_fpn, float32)

{profile_tables(results["r50"][False]["profile"], args.profile_steps)}
"""


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cuda", help="cuda (default) or cpu")
    parser.add_argument("--iters", type=int, help="timed iterations per case (20; 3 with --small)")
    parser.add_argument("--small", action="store_true",
                        help="smoke test: 256 x 320 images, small op inputs, few iterations")
    parser.add_argument("--no-write", action="store_true", help="print only; leave docs/benchmarks.md alone")
    parser.add_argument("--skip-torchvision", action="store_true", help="part 3 without torchvision")
    args = parser.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        sys.exit("no CUDA device here; for a smoke test: --device cpu --small --no-write")
    args.iters = args.iters or (3 if args.small else 20)
    args.warmup, args.profile_steps = (1, 1) if args.small else (5, 3)
    args.image = TINY_IMAGE if args.small else (800, 1333)
    torchvision, why_not = (None, "--skip-torchvision") if args.skip_torchvision else load_torchvision()
    if torchvision is None:
        print(f"note: torchvision comparison skipped: {why_not}", flush=True)
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else "none (a CPU run)"
    header = (f"Command: `{command_line()}`  \nMachine: {machine_line()}  \nGPU: {gpu}; torch "
              f"{torch.__version__} (CUDA {torch.version.cuda}); torchvision "
              f"{torchvision.__version__ if torchvision else 'not used'}; TF32 in convolutions "
              f"{torch.backends.cudnn.allow_tf32}, in matmuls {torch.backends.cuda.matmul.allow_tf32}; "
              f"pycocotools {'installed' if HAVE_PYCOCOTOOLS else 'missing (placeholders)'}")
    print(header, "\n\npart 1: the twins against the reference", flush=True)
    twin_rows = check_twins(device, args.small)
    print(twins_table(twin_rows, device), "\n\nparts 2 and 3: training iterations", flush=True)
    results = run_training(args, device, torchvision is not None)
    md = report(args, header, twin_rows, results, device, why_not)
    print("\n" + md)
    if not args.no_write:
        write_section("gpu", md)
        print("wrote the section 'gpu' of docs/benchmarks.md")


if __name__ == "__main__":
    main()
