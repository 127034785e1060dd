"""The checks `Config` runs on itself when it is built (lesson 10_training_on_shapes).

    validate_config(cfg)      # from Config.__post_init__: types, then ranges, then consistency
    coerce_field(value, "tuple[int, ...]", "lr_steps")   # one value checked against a type
    check_trainable(cfg)      # at the start of training: the frozen-BatchNorm trap

Every message names the field as `Config.<name>` and says what is allowed, so a mistake on the
command line (`--set lr=abc`) or in a config.json is reported where it was made, not as a
TypeError deep in the model. Types come from the field annotations (strings, because config.py
uses `from __future__ import annotations`): an int is accepted for a float field, a list is
stored as a tuple and a path as its string.
"""
import dataclasses
import math
import numbers
import os

# The strides of the FPN outputs P2..P6 (model/fpn.py): the RPN's anchors sit on all five, and
# RoI pooling reads P2..P5 at scales 1/4..1/32. Other strides would misplace every anchor.
FPN_STRIDES = (4, 8, 16, 32, 64)
RESNET_DEPTHS = (18, 34, 50)  # model/backbone.py's RESNET_LAYERS
RESNET_WIDTH_MULTIPLES = (1, 2, 4, 8, 16, 32)  # channel counts / backbone_width, GroupNorm divides


def _at_least(low):
    return lambda v: v >= low, f"at least {low}"


def _unit(v):
    return 0 <= v <= 1


UNIT = (_unit, "between 0 and 1")
FRACTION = (lambda v: 0 < v <= 1, "in (0, 1]")
POSITIVE = (lambda v: v > 0, "positive")
ALL_POSITIVE = (lambda v: len(v) > 0 and all(x > 0 for x in v), "non-empty, all positive")

RANGES = {
    "backbone_depth": (lambda v: v in RESNET_DEPTHS, f"one of {RESNET_DEPTHS}"),
    "norm": (lambda v: v in ("frozen_bn", "group_norm"), "'frozen_bn' or 'group_norm'"),
    "group_norm_groups": _at_least(1),
    "backbone_width": _at_least(1),
    "freeze_at": (lambda v: 0 <= v <= 5, "between 0 and 5 (stem, layer1..layer4)"),
    "fpn_channels": _at_least(1),
    "anchor_sizes": ALL_POSITIVE,
    "anchor_strides": (lambda v: v == FPN_STRIDES,
                       f"{FPN_STRIDES}, the strides of the FPN levels P2..P6"),
    "anchor_aspect_ratios": ALL_POSITIVE,
    "rpn_pre_nms_top_n_train": _at_least(1), "rpn_post_nms_top_n_train": _at_least(1),
    "rpn_pre_nms_top_n_test": _at_least(1), "rpn_post_nms_top_n_test": _at_least(1),
    "rpn_nms_thresh": UNIT, "rpn_min_size": _at_least(0),
    "rpn_fg_iou_thresh": UNIT, "rpn_bg_iou_thresh": UNIT,
    "rpn_batch_size_per_image": _at_least(1), "rpn_positive_fraction": FRACTION,
    "roi_fg_iou_thresh": UNIT, "roi_bg_iou_thresh": UNIT,
    "roi_batch_size_per_image": _at_least(1), "roi_positive_fraction": FRACTION,
    "box_reg_weights": ALL_POSITIVE,
    "box_pool_size": _at_least(1), "box_head_dim": _at_least(1),
    "mask_pool_size": _at_least(1), "mask_head_dim": _at_least(1),
    "mask_head_convs": _at_least(1), "mask_size": _at_least(1),
    "mask_box_scale": POSITIVE,
    "head_norm_groups": _at_least(0), "num_classes": _at_least(1),
    "score_thresh": UNIT, "nms_thresh": UNIT, "detections_per_image": _at_least(1),
    "mask_threshold": UNIT,
    "min_size": _at_least(1), "max_size": _at_least(1), "size_divisible": _at_least(1),
    "train_min_sizes": (lambda v: all(x >= 1 for x in v), "empty (no jitter) or sizes >= 1"),
    "pixel_std": ALL_POSITIVE,
    "optimizer": (lambda v: v in ("sgd", "adamw"), "'sgd' or 'adamw'"),
    "lr": POSITIVE, "momentum": (lambda v: 0 <= v < 1, "in [0, 1)"),
    "weight_decay": _at_least(0), "warmup_iters": _at_least(0), "warmup_factor": FRACTION,
    "max_iters": _at_least(1),
    "lr_steps": (lambda v: all(x >= 0 for x in v), "iterations >= 0"),
    "lr_gamma": POSITIVE, "batch_size": _at_least(1),
    "grad_clip": (lambda v: v is None or v > 0, "positive, or null for no clipping"),
    "checkpoint_every": _at_least(1), "log_every": _at_least(1), "seed": _at_least(0),
    "hflip_prob": UNIT, "copy_paste_prob": UNIT, "num_workers": _at_least(0),
    "train_split": (bool, "a non-empty split name"), "val_split": (bool, "a non-empty split name"),
    "categories": (lambda v: v is None or len(v) > 0, "null (all) or at least one name"),
    "output_dir": (bool, "a non-empty path"),
}


def validate_config(cfg):
    """Check and normalise every field of `cfg` in place; ValueError naming the first bad one."""
    for f in dataclasses.fields(cfg):
        value = coerce_field(getattr(cfg, f.name), str(f.type), f.name)
        object.__setattr__(cfg, f.name, value)
    for name, (ok, allowed) in RANGES.items():
        value = getattr(cfg, name)
        if not ok(value):
            raise ValueError(f"Config.{name} must be {allowed}, got {value!r}")
    _check_consistency(cfg)


def coerce_field(value, declared, name):
    """`value` converted to the annotation `declared` ("int", "tuple[float, ...]", "str | None")."""
    if declared.endswith(" | None"):
        return None if value is None else coerce_field(value, declared[: -len(" | None")], name)
    if declared.startswith("tuple["):
        inner = [t.strip() for t in declared[len("tuple["):-1].split(",")]
        if not isinstance(value, (tuple, list)):
            raise ValueError(f"Config.{name} must be a list ({declared}), got {value!r}")
        if inner[-1] != "..." and len(value) != len(inner):
            raise ValueError(f"Config.{name} must have {len(inner)} values, got {value!r}")
        return tuple(coerce_field(v, inner[0], name) for v in value)
    kind, check = _SCALARS[declared]
    if not check(value):
        raise ValueError(f"Config.{name} must be {kind}, got {value!r}")
    return os.fspath(value) if declared == "str" else value  # a Path becomes its string


def _is_number(v):
    return isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v)


_SCALARS = {
    "int": ("an integer", lambda v: isinstance(v, numbers.Integral) and not isinstance(v, bool)),
    "float": ("a number (finite)", _is_number),
    "bool": ("true or false", lambda v: isinstance(v, bool)),
    "str": ("a string", lambda v: isinstance(v, (str, os.PathLike))),
}


def _check_consistency(cfg):
    """Rules between fields."""
    if cfg.max_size < cfg.min_size:
        raise ValueError(f"Config.max_size ({cfg.max_size}) must be >= Config.min_size "
                         f"({cfg.min_size})")
    if cfg.copy_paste_prob > 0 and cfg.batch_size < 2:
        raise ValueError(f"Config.copy_paste_prob ({cfg.copy_paste_prob}) pastes between the "
                         f"images of a batch: it needs Config.batch_size >= 2, got "
                         f"{cfg.batch_size}")
    if len(cfg.anchor_sizes) != len(cfg.anchor_strides):
        raise ValueError(f"Config.anchor_sizes must hold one size per FPN level "
                         f"({len(cfg.anchor_strides)}: P2..P6), got {cfg.anchor_sizes}")
    for stage in ("rpn", "roi"):
        fg, bg = getattr(cfg, f"{stage}_fg_iou_thresh"), getattr(cfg, f"{stage}_bg_iou_thresh")
        if bg > fg:
            raise ValueError(f"Config.{stage}_bg_iou_thresh ({bg}) must be <= "
                             f"Config.{stage}_fg_iou_thresh ({fg})")
    if cfg.mask_size != 2 * cfg.mask_pool_size:
        raise ValueError(f"Config.mask_size must be 2 x Config.mask_pool_size (the mask head's "
                         f"deconv doubles the pooled side): {2 * cfg.mask_pool_size} for "
                         f"mask_pool_size {cfg.mask_pool_size}, got {cfg.mask_size}")
    channels = [cfg.backbone_width * k for k in RESNET_WIDTH_MULTIPLES]
    if cfg.norm == "group_norm" and any(c % min(cfg.group_norm_groups, c) for c in channels):
        raise ValueError(f"Config.group_norm_groups ({cfg.group_norm_groups}) must divide the "
                         f"backbone's channel counts {channels[:4]}: use a power of 2")
    if cfg.backbone_weights and cfg.backbone_width != 64:
        raise ValueError(f"Config.backbone_weights are ImageNet ResNets of width 64; "
                         f"Config.backbone_width {cfg.backbone_width} has no such weights")


def check_trainable(cfg):
    """Refuse the frozen-BatchNorm trap: identity statistics on random weights, partly frozen.

    `frozen_bn` keeps the statistics of pretrained weights; without weights they are the
    identity, so the backbone trains with its normalisation switched off, and `freeze_at > 0`
    freezes a random stem (and layer1). torchvision refuses the same (its PR #5443).
    """
    if cfg.norm == "frozen_bn" and cfg.freeze_at > 0 and not cfg.backbone_weights:
        raise ValueError(
            f"Config.norm='frozen_bn' with Config.freeze_at={cfg.freeze_at} and no "
            "Config.backbone_weights would train a random backbone with BatchNorm switched off "
            "and its first layers frozen. Load pretrained ResNet weights with --backbone-weights "
            "FILE, or train from scratch with --set norm=group_norm --set freeze_at=0")
