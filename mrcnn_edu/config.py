"""The one configuration dataclass of mrcnn_edu, and its presets (lesson 10_training_on_shapes).

Every knob of the model and of training lives in `Config`, one commented field each, so the
whole recipe reads in one screen. There is no config language: a preset is a function call,
an override is `dataclasses.replace(preset("tiny"), max_iters=500)`, and a saved run stores
`config.to_dict()` as JSON.

    from mrcnn_edu.config import preset
    cfg = preset("tiny")                                   # for a 2-core CPU
    cfg = dataclasses.replace(preset("r50_fpn"), num_classes=80)

Sizes are (height, width) where a pair is meant; boxes are (x1, y1, x2, y2) pixels.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from mrcnn_edu.config_checks import check_trainable, validate_config  # noqa: F401  (re-exported)
from mrcnn_edu.reference.masks import MASK_THRESHOLD


@dataclass
class Config:
    """Model and training settings. Defaults are torchvision's Mask R-CNN R-50-FPN: the paper's
    model, with the proposal counts and inference thresholds of Detectron and torchvision and
    Detectron's 1x schedule where the paper gives none or another (lessons 08, 10 and 11 say
    which is which).

    A Config checks itself when built (`config_checks.validate_config`): a wrong type, a value
    out of range or two fields that disagree raise ValueError naming `Config.<field>`.
    """

    # ---- backbone ----
    backbone_depth: int = 50  # ResNet depth: 18 or 34 (BasicBlock), 50 (Bottleneck)
    norm: str = "frozen_bn"  # "frozen_bn" (fixed ImageNet statistics) or "group_norm" (scratch)
    group_norm_groups: int = 32  # groups for GroupNorm; channels must be divisible by it
    backbone_width: int = 64  # channels of the stem and layer1; each later stage doubles them
    backbone_weights: str | None = None  # path to a torchvision-named ResNet state dict, or None
    freeze_at: int = 2  # no gradient to the stem (>= 1) and layer1 (>= 2); 0 when from scratch

    # ---- FPN ----
    fpn_channels: int = 256  # channels of every FPN output P2..P6

    # ---- anchors ----
    anchor_sizes: tuple[float, ...] = (32, 64, 128, 256, 512)  # sqrt(w * h), one per level
    anchor_strides: tuple[int, ...] = (4, 8, 16, 32, 64)  # pixel stride of P2..P6
    anchor_aspect_ratios: tuple[float, ...] = (0.5, 1.0, 2.0)  # h / w, at every location

    # ---- RPN ----
    rpn_pre_nms_top_n_train: int = 2000  # proposals kept per level before NMS, training
    rpn_post_nms_top_n_train: int = 2000  # proposals kept per image after NMS, training
    rpn_pre_nms_top_n_test: int = 1000  # proposals kept per level before NMS, inference
    rpn_post_nms_top_n_test: int = 1000  # proposals kept per image after NMS, inference
    rpn_nms_thresh: float = 0.7  # IoU above which a lower-scoring proposal is dropped
    rpn_min_size: float = 1e-3  # proposals with a side below this (pixels) are dropped
    rpn_fg_iou_thresh: float = 0.7  # anchor is positive at IoU >= this with some ground truth
    rpn_bg_iou_thresh: float = 0.3  # anchor is negative at IoU < this with every ground truth
    rpn_batch_size_per_image: int = 256  # anchors sampled per image for the RPN losses
    rpn_positive_fraction: float = 0.5  # at most this fraction of those are positives

    # ---- RoI heads ----
    roi_fg_iou_thresh: float = 0.5  # proposal is foreground at IoU >= this
    roi_bg_iou_thresh: float = 0.5  # proposal is background at IoU < this
    roi_batch_size_per_image: int = 512  # RoIs sampled per image for the box and mask losses
    roi_positive_fraction: float = 0.25  # at most this fraction of those are foreground
    box_reg_weights: tuple[float, float, float, float] = (10.0, 10.0, 5.0, 5.0)  # (wx, wy, ww, wh)
    box_pool_size: int = 7  # RoIAlign output side for the box head
    box_head_dim: int = 1024  # width of the two fully connected layers of the box head
    mask_pool_size: int = 14  # RoIAlign output side for the mask head
    mask_head_dim: int = 256  # channels of the four 3x3 convs (and the deconv) of the mask head
    mask_head_convs: int = 4  # number of 3x3 convs in the mask head
    mask_size: int = 28  # side of a predicted mask: must be 2 x mask_pool_size (the deconv)
    # At inference the mask head sees each detection box scaled by this about its centre, and
    # its mask is pasted into that larger box: a mask can then reach past a box that is a
    # pixel too tight. Training is unchanged. 1 is torchvision's (the mask lives in the box).
    mask_box_scale: float = 1.0  # 1: the box itself; 1.1: 5% of its size on every side
    sampling_ratio: int = 2  # RoIAlign samples per bin side; <= 0 means adaptive ceil(bin size)
    head_norm_groups: int = 0  # > 0: GroupNorm of this many groups in the box and mask heads
    num_classes: int = 80  # K foreground classes (+ background 0); train derives it from the data

    # ---- inference ----
    score_thresh: float = 0.05  # detections with a class score below this are dropped
    nms_thresh: float = 0.5  # per-class NMS IoU threshold on detections
    detections_per_image: int = 100  # keep at most this many detections per image
    mask_threshold: float = MASK_THRESHOLD  # a pixel is inside the instance at probability >= this

    # ---- input transform ----
    min_size: int = 800  # resize so the shorter side is this many pixels ...
    max_size: int = 1333  # ... unless the longer side would exceed this
    size_divisible: int = 32  # pad the batch so H and W are multiples of this
    # Scale jitter: in training, each image's shorter side is drawn from these instead of
    # min_size (torchvision's min_size tuple). Evaluation always uses min_size.
    train_min_sizes: tuple[int, ...] = ()  # () = no jitter: training uses min_size too
    pixel_mean: tuple[float, float, float] = (0.485, 0.456, 0.406)  # RGB, images in [0, 1]
    pixel_std: tuple[float, float, float] = (0.229, 0.224, 0.225)  # RGB, images in [0, 1]

    # ---- optimisation ----
    optimizer: str = "sgd"  # "sgd" (the paper: SGD with momentum) or "adamw" (faster from scratch)
    lr: float = 0.02  # learning rate; the paper's SGD 0.02 is for 16 images per step (scale it)
    momentum: float = 0.9  # SGD momentum (AdamW keeps its default betas 0.9, 0.999)
    weight_decay: float = 1e-4  # L2 penalty on weights
    warmup_iters: int = 1000  # linear warm-up length in iterations
    warmup_factor: float = 0.001  # learning rate multiplier at iteration 0 of the warm-up
    max_iters: int = 90000  # total iterations (Detectron's 1x: 90k of 16 images; the paper: 160k)
    lr_steps: tuple[int, ...] = (60000, 80000)  # iterations at which lr is multiplied by lr_gamma
    lr_gamma: float = 0.1  # learning rate decay factor at each step
    batch_size: int = 2  # images per process per iteration
    grad_clip: float | None = None  # max gradient norm, or None for no clipping
    amp: bool = False  # mixed precision (CUDA only)

    # ---- bookkeeping ----
    checkpoint_every: int = 5000  # save a checkpoint every this many iterations
    log_every: int = 20  # print losses every this many iterations
    seed: int = 0  # seed of torch, numpy and the data order
    hflip_prob: float = 0.5  # probability of a horizontal flip of a training image
    group_by_aspect_ratio: bool = True  # batches of landscape or of portrait images: less padding
    # Copy-paste (Ghiasi et al. 2021): a training image may get about half the instances of the
    # next image of its batch pasted on top; needs batch_size >= 2
    copy_paste_prob: float = 0.0  # probability of that paste per image; 0 = off
    num_workers: int = 2  # DataLoader worker processes
    train_split: str = "train2017"  # split trained on: annotations/instances_{split}.json
    val_split: str = "val2017"  # split evaluated on (and the train split too, for overfitting)
    categories: tuple[str, ...] | None = None  # category names to keep; None = all
    skip_images_without_instances: bool = False  # train only on images with a kept instance
    output_dir: str = "runs/default"  # where checkpoints, logs and the config are written

    def __post_init__(self):
        validate_config(self)

    def to_dict(self) -> dict:
        """A JSON-serialisable dict: tuples become lists."""
        return {f.name: _to_json(getattr(self, f.name)) for f in dataclasses.fields(self)}

    @classmethod
    def from_dict(cls, d: dict) -> "Config":
        """Inverse of `to_dict`: lists become tuples again. Unknown keys raise ValueError."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"unknown Config fields: {unknown}")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})


def _to_json(value):
    return list(value) if isinstance(value, tuple) else value


def _tiny() -> Config:
    """ResNet-18 + GroupNorm from scratch, small heads and small images: a 2-core CPU trains it."""
    return Config(
        backbone_depth=18,
        norm="group_norm",
        group_norm_groups=16,  # 64 channels in layer1 -> 4 per group
        freeze_at=0,  # nothing is pretrained, so everything learns
        fpn_channels=64,
        anchor_sizes=(16, 32, 64, 128, 256),  # objects in a 256-px image are small
        rpn_pre_nms_top_n_train=1000,
        rpn_post_nms_top_n_train=500,
        rpn_pre_nms_top_n_test=500,
        rpn_post_nms_top_n_test=250,
        roi_batch_size_per_image=128,
        sampling_ratio=1,  # a quarter of the RoIAlign work of 2 (2 scores less per second)
        box_head_dim=256,
        mask_head_dim=64,
        min_size=256,
        max_size=512,
        lr=0.02,  # GroupNorm and gradient clipping keep batch-2 training stable at this rate
        warmup_iters=50,
        max_iters=1000,
        lr_steps=(800,),
        batch_size=2,
        grad_clip=10.0,
        checkpoint_every=200,
        log_every=10,
        num_workers=0,
        output_dir="runs/tiny",
    )


def _subset() -> Config:
    """The `tiny` model on the real COCO subset for `make train`: from random weights, on a CPU.

    The goal of a 20-minute run from random weights is to fit what it saw, so every choice
    here buys fitting speed; each was measured (docs/benchmarks.md, "Choosing the subset preset"):
    - one category, person (307 instances in 76 of the 160 images; the next most frequent,
      bottle, has 105 in 24): one frequent class, not eighty rare ones;
    - only those 76 images (the other 84 hold no person: nothing to learn but background);
    - AdamW at 5e-4: at 1000 steps, mask AP50 on the train split 0.19 against SGD's 0.06;
    - GroupNorm in the box and mask heads too, as in GroupNorm's from-scratch recipe;
    - no flips: flipping is for generalisation, and doubles what must be memorised;
    - a half-width backbone (`backbone_width` 32): 1.58x less time per step in the same run, and
      the full run fitted better, train mask AP50 0.883 against 0.844 at width 64;
    - FPN and mask head at 32 channels too (`fpn_channels`, `mask_head_dim`): with a 32-channel
      layer1, a 64-channel FPN at stride 4 and the RPN conv on it cost as much as the backbone;
      0.71x the time per step in the same run, train mask AP50 0.852 in a full run (AMD EPYC;
      0.842 on an Intel Xeon with AVX2 kernels, 0.810 with its AVX-512 ones, 0.829 on an AMD
      EPYC with AVX-512: the CPU's float kernels move a from-scratch run this much);
    - a 192-pixel shorter side, 2700 steps instead of 2200, and 500 proposals per FPN level
      before the RPN's NMS instead of tiny's 1000 (0.56 times the pixels and the anchors): a
      step costs 0.62-0.67 of one at 256 pixels (bench/bench_subset_step.py), and whole runs
      took 0.88 of the time of the preset before (means of three runs each); it fits better in
      every draw measured (an AMD EPYC, default AVX-512 / AVX2 kernels / seed 1): train mask
      AP50 0.860 / 0.878 / 0.863 against 0.829 / 0.852 / 0.814 at 256 pixels, mask AP 0.485 /
      0.496 / 0.487 against 0.435 / 0.439 / 0.428. With tiny's 1000 proposals the 192-pixel run
      scored 0.872 / 0.870 at 1.04-1.07x the step time; with 64 RoIs per image instead of 128,
      0.798.
    """
    return dataclasses.replace(
        _tiny(),
        backbone_width=32,  # a quarter of ResNet-18's weights; fits the 76 photos better still
        fpn_channels=32,  # as wide as layer1: the FPN and RPN no longer outweigh the backbone
        mask_head_dim=32,
        categories=("person",),  # one class, the most frequent; None trains all 80
        skip_images_without_instances=True,  # the 76 images with a person
        optimizer="adamw",
        lr=5e-4,  # 1e-3 fitted less at 1000 steps, 3e-3 far less
        head_norm_groups=16,
        hflip_prob=0.0,
        min_size=192,  # tiny's 256 costs 1.5x per step and fitted less in more time
        max_size=384,
        rpn_pre_nms_top_n_train=500,  # per FPN level before NMS: tiny's 1000 x 0.56, rounded
        max_iters=2700,  # ~71 passes over the 76 images
        warmup_iters=100,
        lr_steps=(2200,),  # x 0.1 for the last 500 steps
        checkpoint_every=250,  # an interrupted run loses at most ~1.5 minutes
        log_every=50,
        output_dir="runs/coco_subset",
    )


def _shapes() -> Config:
    """The `tiny` model on synthetic shapes: `python -m mrcnn_edu train --preset shapes`.

    The data is written by the command itself when missing (`data.shapes.ensure_shapes_dataset`:
    256 train and 200 val images of 128 x 128, seed 0), and the model is scored on the 200 val
    images it never saw. Measured (docs/benchmarks.md, "Choosing the shapes preset"), val AP50
    box / mask on 256 train images:
    - backbone width 32, not 64: at 128 px a step's cost is mostly weights, and a quarter of
      them halved the whole command (9.3 -> 5.0 minutes) for 0.973 / 0.972 against 0.977 / 0.978;
    - 128 px, not tiny's 256: the shapes are drawn at 128, so upsampling buys nothing but 4x
      the pixels (`tiny` at 256 px with SGD, 800 images, 1200 steps scored 0.969 / 0.972);
    - AdamW at 1e-3 with GroupNorm in the heads, the `subset` preset's optimiser (it fitted
      more than SGD there);
    - 500 steps reach 0.836 / 0.832, 600 0.933 / 0.935 (lesson 10's recipe), 700 0.973 / 0.972
      (AP 0.847 / 0.867; the preset until the last item below); lr x0.1 for the last fifth;
    - 256 train images: enough that val scores like train (the data ladder, lesson 10), and few
      enough that scoring the train split after training stays short;
    - tiny's RoIAlign `sampling_ratio` 1: 2 raised val AP at 700 steps (mask 0.883, box 0.873,
      AP50 0.978 / 0.978) but made the command 26% longer, and in the same training time (600
      steps) it scored less (AP50 0.962 / 0.961, AP 0.813 / 0.833); wider mask heads (128
      channels) and 192-px inputs scored no better;
    - `mask_box_scale` 1.1 (inference only): the mask head reads and pastes over each detection
      box widened by 10%, so a box a pixel too tight cuts its mask less. On four trained
      models val mask AP rose by 0.009 to 0.020 (the 700-step preset's: 0.867 -> 0.876); 1.05 and
      1.2 did less (the `subset` model's person masks lose with it: `subset` keeps 1).
    - 2000 steps of 64 RoIs per image with copy-paste (`copy_paste_prob` 0.5), not 700 of 128
      without: on a 2-core Intel Xeon (AVX-512), 700 steps took 1.9 minutes for the whole
      command and scored val AP50 0.969 / 0.971, mask AP 0.869; 1750 steps 0.986 / 0.986, mask
      AP 0.935; with copy-paste (small shapes lying on large ones were what it missed most)
      0.987 / 0.987, 0.944; 2000 steps 0.992 / 0.992, 0.946, and 64 RoIs made those steps
      1.24x faster in the runs (1.05-1.09x in a loop of fixed batches) with val AP within 0.001
      (0.992 / 0.992, mask AP 0.947).
    The whole command took 4.2 minutes on that Xeon with nothing else running, writing the data
    first: val box / mask AP50 0.992 / 0.992, mask AP 0.947 (AVX2 kernels on the same machine:
    0.990 / 0.990, 0.934). Slower 2-core machines take longer: an AMD EPYC (AVX2) trained the
    700-step preset 2.4x slower than this Xeon.
    """
    return dataclasses.replace(
        _tiny(),
        backbone_width=32,  # a quarter of ResNet-18's weights: half the minutes of width 64
        min_size=128,  # the shapes are drawn at 128 x 128: no resizing
        max_size=160,
        optimizer="adamw",
        lr=1e-3,
        head_norm_groups=16,  # GroupNorm in the box and mask heads too, as in `subset`
        mask_box_scale=1.1,  # masks read and pasted over each box widened by 10% (inference)
        roi_batch_size_per_image=64,  # half of tiny's: faster steps, the same val AP here
        copy_paste_prob=0.5,  # the batch's other image's shapes pasted on top: more overlaps
        max_iters=2000,  # 4000 images seen: about 16 passes over the 256
        warmup_iters=30,
        lr_steps=(1600,),  # x 0.1 for the last 400 steps
        checkpoint_every=250,
        log_every=50,
        output_dir="runs/shapes",
    )


def _r50_fpn() -> Config:
    """The paper's Mask R-CNN R-50-FPN (torchvision's model) on Detectron's 1x schedule, GPU."""
    return Config(output_dir="runs/r50_fpn")


_PRESETS = {"tiny": _tiny, "subset": _subset, "shapes": _shapes, "r50_fpn": _r50_fpn}


def preset(name: str) -> Config:
    """A fresh Config for a named recipe: "tiny" (2-core CPU), "subset" (`make train`: tiny on
    the COCO subset's person class), "shapes" (tiny on the synthetic shapes, 128 px) or
    "r50_fpn" (the paper, GPU)."""
    if name not in _PRESETS:
        raise ValueError(f"unknown preset {name!r}; expected one of {sorted(_PRESETS)}")
    return _PRESETS[name]()
