"""Lesson 05's "your turn": `assign_fpn_levels`, the FPN level of each RoI (FPN paper, eq. 1).

Shape legend: K RoIs, boxes (K, 4) float (x1, y1, x2, y2).
    k = floor(k0 + log2(sqrt(w h) / 224) + 1e-6), clamped to [k_min, k_max]    (k0 = 4)
torchvision's LevelMapper; the 1e-6 keeps a box of exactly 224 * 2**j on level 4 + j.
"""
import numpy as np

from mrcnn_edu import reference
from .core import Case, Exercise, Mutant, prefix_shrinker
from .solutions import stage_05_fpn_levels as solutions


def b(*rows):
    return np.array(rows, dtype=np.float64).reshape(-1, 4)


def squares(*sides):
    return b(*[[0, 0, side, side] for side in sides])


def boundary_boxes():
    """Boxes 112 and 448 pixels wide up to float32 rounding (lesson 05's sliding box): x2 - x1 is
    a hair under 112 (448), so only the 1e-6 keeps them on P3 (P5). float32 values, held exactly
    in float64 so that any float64 implementation computes the same widths."""
    starts = np.float32([0.1, 0.2, 0.6, 0.3, 0.4])
    sides = np.float32([112, 112, 112, 448, 448])
    boxes = np.stack([starts, starts, starts + sides, starts + sides], axis=1)  # float32 sums
    return boxes.astype(np.float64)


def fpn_cases():
    rng = np.random.default_rng(7)
    xy = rng.uniform(0, 600, (500, 2))
    wh = np.exp(rng.uniform(np.log(8), np.log(1000), (500, 2)))  # log-uniform sides, 8 .. 1000 px
    return [
        Case("lesson 05: 100 x 50, 448 x 112, 224 x 224", "hand",
             (b([0, 0, 100, 50], [0, 0, 448, 112], [0, 0, 224, 224]),)),
        Case("squares 56, 112, 224, 448: levels 2, 3, 4, 5", "hand", (squares(56, 112, 224, 448),)),
        Case("squares 150, 300, 600 and a 300 x 75 box", "edge",
             (b([0, 0, 150, 150], [0, 0, 300, 300], [0, 0, 600, 600], [0, 0, 300, 75]),)),
        Case("tiny RoIs (1, 8, 20 px) clamp to k_min", "edge", (squares(1, 8, 20),)),
        Case("huge RoIs (1000, 2000 x 800) clamp to k_max", "edge",
             (b([0, 0, 1000, 1000], [0, 0, 2000, 800]),)),
        Case("x2 - x1 a hair under 112 and 448: the 1e-6", "edge",
             (np.concatenate([boundary_boxes(), squares(224)]),)),
        Case("a zero-area box goes to k_min", "edge", (b([5, 5, 5, 30], [0, 0, 224, 224]),)),
        Case("k_min 3, k_max 6, canonical 256 at level 5", "edge",
             (squares(20, 100, 256, 512, 2000),),
             {"k_min": 3, "k_max": 6, "canonical_size": 256, "canonical_level": 5}),
        Case("no RoIs (K = 0)", "edge", (np.zeros((0, 4)),)),
        Case("500 RoIs with sides 8 .. 1000 px", "random", (np.concatenate([xy, xy + wh], axis=1),)),
    ]


def levels_with(boxes, k_min=2, k_max=5, canonical_size=224, canonical_level=4, *, rounding=np.floor,
                size=None, clamp=True, of_area=False, eps=1e-6):
    """An FPN level mapper with one knob per slip; the defaults give the right answer."""
    w = np.clip(boxes[:, 2] - boxes[:, 0], 0, None)
    h = np.clip(boxes[:, 3] - boxes[:, 1], 0, None)
    size = canonical_size if size is None else size
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.log2(w * h / size ** 2) if of_area else np.log2(np.sqrt(w * h) / size)
        levels = rounding(canonical_level + ratio + eps)
        if clamp:
            levels = np.clip(levels, k_min, k_max)
        levels = np.nan_to_num(levels, neginf=-(2 ** 31), posinf=2 ** 31)
    return levels.astype(np.int64)


def fpn_knob(**kw):
    return lambda boxes, k_min=2, k_max=5, canonical_size=224, canonical_level=4: levels_with(
        boxes, k_min, k_max, canonical_size, canonical_level, **kw)


ASSIGN_FPN_LEVELS = Exercise(
    name="assign_fpn_levels",
    lesson=5,
    contract='''assign_fpn_levels(boxes, k_min=2, k_max=5, canonical_size=224, canonical_level=4) -> levels

    The FPN level that pools each RoI (FPN paper, eq. 1; torchvision's LevelMapper).
    boxes (K, 4) float (x1, y1, x2, y2). With w = x2 - x1 and h = y2 - y1 (negative counts as 0):
    k = floor(canonical_level + log2(sqrt(w * h) / canonical_size) + 1e-6), clamped to
    [k_min, k_max]; a zero-area box goes to k_min.
    Returns levels (K,) int64.''',
    reference=reference.assign_fpn_levels,
    cases=fpn_cases,
    hints=(
        "The level grows by one each time the box's size doubles: measure the size as sqrt(w h), "
        "the side of the square of the same area, in units of 224 px on a log2 scale; 224 px is "
        "level 4. Round down, then keep the result within [k_min, k_max].",
        "scale = sqrt(w * h); k = floor(canonical_level + log2(scale / canonical_size) + 1e-6); "
        "np.clip(k, k_min, k_max).astype(np.int64). The 1e-6 stops x2 - x1 = 111.9999985 "
        "from dropping a level.",
    ),
    solution=solutions.assign_fpn_levels,
    mutants=(
        Mutant("round_not_floor", "your level uses round, not floor (matterport's "
               "implementation rounds)", fpn_knob(rounding=np.round)),
        Mutant("canonical_244", "your canonical size is 244, not 224 (the ImageNet crop)",
               fpn_knob(size=244)),
        Mutant("no_clamp", "your levels are not clamped to [k_min, k_max]: tiny and huge RoIs "
               "need a level that exists", fpn_knob(clamp=False)),
        Mutant("log_of_area", "you take log2 of the area ratio w h / 224**2; the formula uses "
               "the side, sqrt(w h) / 224", fpn_knob(of_area=True)),
        Mutant("no_epsilon", "your level is missing the + 1e-6: a box a hair under 112 or 448 "
               "px (float rounding) drops a level", fpn_knob(eps=0.0)),
    ),
    shrink=prefix_shrinker([(0, 0)]),
)

EXERCISES = (ASSIGN_FPN_LEVELS,)
