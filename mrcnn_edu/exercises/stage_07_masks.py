"""Lesson 07's "your turn": `mask_target_single` (the M x M target of one RoI), checked against
`mrcnn_edu.reference.mask_targets`, and `mask_loss`, checked against
`mrcnn_edu.reference.mask_loss` (same name and contract).

Shape legend: H x W image, M x M mask grid (28 in Mask R-CNN), K positive RoIs, C classes
(mask channels C + 1, background's unused). Boxes are float (x1, y1, x2, y2) in image pixels.
Mask targets (README, Conventions): RoIAlign of the binary ground-truth mask over the RoI to
M x M with aligned=True and sampling_ratio=-1, then >= 0.5. The mask loss is the mean binary
cross-entropy with logits over the pixels of each RoI's ground-truth class channel only.
Mutants: the classic slips, each a full wrong function.
"""
import numpy as np

from mrcnn_edu import reference
from mrcnn_edu.reference.losses import binary_cross_entropy_with_logits
from .core import Case, Exercise, Mutant, compare_outputs, prefix_shrinker, to_numpy
from .solutions import stage_07_masks as solutions


# ---------------------------------------------------------------- references

def mask_target_single(gt_mask, box, size=28):
    """`reference.mask_targets` of one RoI over one ground-truth mask (H, W): (size, size)."""
    gt_mask = np.asarray(gt_mask)
    box = np.asarray(box, dtype=np.float64)
    if gt_mask.ndim != 2:
        raise ValueError(f"gt_mask must have shape (H, W), got {gt_mask.shape}")
    if box.shape != (4,):
        raise ValueError(f"box must have shape (4,) = (x1, y1, x2, y2), got {box.shape}")
    return reference.mask_targets(gt_mask[None], np.zeros(1, np.int64), box[None], size)[0]


def compare_targets(expected, actual):
    """Like `compare_outputs`, but a bool target reads as 0.0 / 1.0."""
    actual = to_numpy(actual)
    if isinstance(actual, np.ndarray) and actual.dtype == bool:
        actual = actual.astype(np.float64)
    return compare_outputs(expected, actual)


# ---------------------------------------------------------------- cases

def lesson_l_shape():
    """Lesson 07's 10 x 10 image with an L-shaped object."""
    gt = np.zeros((10, 10), np.uint8)
    gt[1:9, 1:4] = 1  # the upright
    gt[6:9, 1:9] = 1  # the foot
    return gt


def disk(height, width, cy, cx, radius):
    yy, xx = np.mgrid[:height, :width] + 0.5  # pixel centres
    return ((yy - cy) ** 2 + (xx - cx) ** 2 <= radius ** 2).astype(np.uint8)  # (H, W)


def mask_target_single_cases():
    b = lambda *v: np.array(v, dtype=np.float64)  # noqa: E731
    square = np.zeros((12, 12), np.uint8)
    square[3:9, 3:9] = 1
    blob = disk(40, 60, 18.0, 25.0, 11.0)
    rng = np.random.default_rng(7)
    cases = [
        Case("lesson 07: L shape, box (0, 0, 8, 8), 4 x 4 (cells at exactly 0.5)", "hand",
             (lesson_l_shape(), b(0, 0, 8, 8), 4)),
        Case("lesson 07: 6 x 6 square, its own box, 28 x 28", "hand", (square, b(3, 3, 9, 9), 28)),
        Case("L shape, box offset from the origin (2, 1, 10, 9)", "edge",
             (lesson_l_shape(), b(2, 1, 10, 9), 4)),
        Case("fractional box over a disk, 14 x 14", "edge", (blob, b(9.3, 8.6, 37.8, 29.1), 14)),
        Case("box leaving the image on the left and top", "edge",
             (blob, b(-6.0, -4.0, 20.0, 22.0), 8)),
        Case("box on background only: all 0", "edge", (blob, b(45.0, 30.0, 58.0, 39.0), 6)),
        Case("box inside the object: all 1", "edge", (blob, b(20.0, 14.0, 28.0, 22.0), 6)),
        Case("big box (bins 8 px): many samples per bin", "edge",
             (disk(120, 160, 60.0, 80.0, 45.0), b(20.0, 10.0, 132.0, 122.0), 14)),
        Case("box thinner than a pixel", "edge", (square, b(5.2, 2.0, 5.6, 10.0), 4)),
    ]
    for k in range(3):
        cy, cx, r = rng.uniform(40, 80), rng.uniform(40, 120), rng.uniform(12, 40)
        mask = disk(120, 160, cy, cx, r) | disk(120, 160, cy + r / 2, cx - r, r / 2)
        jitter = rng.normal(0, 0.12, 4) * 2 * r
        box = b(cx - 1.5 * r, cy - r, cx + r, cy + 1.5 * r) + jitter
        cases.append(Case(f"random: a blob in 120 x 160, jittered box, 28 x 28 ({k})", "random",
                          (mask, box, 28)))
    return cases


def mask_loss_cases():
    rng = np.random.default_rng(7)
    hand_logits = np.array([[[[0.0, 2.0], [-1.0, 3.0]],
                             [[1.0, -2.0], [0.5, 0.0]],
                             [[2.0, -1.0], [0.0, 4.0]]]])  # (1, 3, 2, 2)
    hand_targets = np.array([[[1.0, 0.0], [0.0, 1.0]]])  # (1, 2, 2)
    cases = [
        Case("one RoI of class 2, 2 x 2 mask", "hand",
             (hand_logits, np.array([2]), hand_targets)),
        Case("two RoIs of classes 1 and 2", "hand",
             (np.concatenate([hand_logits, hand_logits[:, ::-1]]), np.array([1, 2]),
              np.concatenate([hand_targets, 1 - hand_targets]))),
        Case("no positive RoIs (K = 0): 0.0", "edge",
             (np.zeros((0, 3, 28, 28)), np.zeros(0, np.int64), np.zeros((0, 28, 28)))),
        Case("large logits (+-100): stable, no inf or NaN", "edge",
             (np.array([[[[100.0, -100.0]], [[-100.0, 100.0]]]]), np.array([1]),
              np.array([[[0.0, 1.0]]]))),
        Case("the last class (label C)", "edge",
             (rng.normal(0, 2, (3, 4, 5, 5)), np.array([3, 3, 1]),
              (rng.random((3, 5, 5)) < 0.5).astype(np.float64))),
    ]
    for K, C1 in ((16, 5), (40, 81)):
        labels = rng.integers(1, C1, K)
        cases.append(Case(f"random: {K} RoIs, {C1 - 1} classes, 28 x 28", "random",
                          (rng.normal(0, 3, (K, C1, 28, 28)), labels,
                           (rng.random((K, 28, 28)) < 0.4).astype(np.float64))))
    return cases


# ---------------------------------------------------------------- mutants: classic slips

def soft_targets(gt_mask, box, size, aligned=True, sampling_ratio=-1):
    rois = np.concatenate([[0.0], np.asarray(box, np.float64)])[None]  # (1, 5)
    return reference.roi_align(np.asarray(gt_mask, np.float64)[None, None], rois, size, 1.0,
                               sampling_ratio=sampling_ratio, aligned=aligned)[0, 0]


def target_strict_threshold(gt_mask, box, size=28):
    return (soft_targets(gt_mask, box, size) > 0.5).astype(np.float64)


def target_aligned_false(gt_mask, box, size=28):
    return (soft_targets(gt_mask, box, size, aligned=False) >= 0.5).astype(np.float64)


def target_not_offset(gt_mask, box, size=28):
    x1, y1, x2, y2 = box
    return mask_target_single(gt_mask, np.array([0.0, 0.0, x2 - x1, y2 - y1]), size)


def target_not_thresholded(gt_mask, box, size=28):
    return soft_targets(gt_mask, box, size)


def target_two_samples(gt_mask, box, size=28):
    return (soft_targets(gt_mask, box, size, sampling_ratio=2) >= 0.5).astype(np.float64)


def loss_softmax(mask_logits, labels, mask_targets):
    """Per-pixel softmax over the C + 1 channels: class `label` on the object, 0 elsewhere."""
    logits, labels = np.asarray(mask_logits, np.float64), np.asarray(labels)
    if len(labels) == 0:
        return 0.0
    top = logits.max(axis=1, keepdims=True)
    log_prob = logits - top - np.log(np.exp(logits - top).sum(axis=1, keepdims=True))  # (K, C1, ..)
    pixel_class = np.where(np.asarray(mask_targets) >= 0.5, labels[:, None, None], 0)  # (K, M, M)
    picked = np.take_along_axis(log_prob, pixel_class[:, None], axis=1)[:, 0]
    return float(-picked.mean())


def loss_all_channels(mask_logits, labels, mask_targets):
    logits = np.asarray(mask_logits, np.float64)
    if len(labels) == 0:
        return 0.0
    return float(binary_cross_entropy_with_logits(logits, np.asarray(mask_targets)[:, None]).mean())


def loss_label_minus_one(mask_logits, labels, mask_targets):
    return reference.mask_loss(mask_logits, np.asarray(labels) - 1, mask_targets)


def loss_pixel_sum(mask_logits, labels, mask_targets):
    logits, labels = np.asarray(mask_logits, np.float64), np.asarray(labels)
    if len(labels) == 0:
        return 0.0
    own = logits[np.arange(len(labels)), labels]  # (K, M, M)
    return float(binary_cross_entropy_with_logits(own, mask_targets).sum(axis=(1, 2)).mean())


# ---------------------------------------------------------------- the exercises

MASK_TARGET_SINGLE = Exercise(
    name="mask_target_single",
    lesson=7,
    contract='''mask_target_single(gt_mask, box, size=28) -> target

    The size x size mask target of ONE RoI.
    gt_mask (H, W) uint8 0/1: the matched object's mask in the image; box (4,) float
    (x1, y1, x2, y2): the RoI in image pixels. Returns target (size, size) float of 0.0 / 1.0:
    RoIAlign of the mask over the box to size x size (spatial_scale 1, aligned=True,
    sampling_ratio=-1, i.e. ceil(bin size) samples per bin side), then >= 0.5.''',
    reference=mask_target_single,
    cases=mask_target_single_cases,
    hints=(
        "This is RoIAlign of the mask, seen as a one-channel feature map of the image (stride "
        "1), over the RoI: you may call mrcnn_edu.reference.roi_align (lesson 06) or your own "
        "roi_align_single. Then threshold: each value is the fraction of the object in that "
        "cell.",
        "soft = roi_align(gt_mask[None, None].astype(float), [[0, x1, y1, x2, y2]], size, 1.0, "
        "sampling_ratio=-1, aligned=True)[0, 0]; target = (soft >= 0.5) as float.",
    ),
    solution=solutions.mask_target_single,
    mutants=(
        Mutant("strict_threshold", "your threshold is > 0.5; a cell half covered by the object "
               "(exactly 0.5) is on: use >= 0.5", target_strict_threshold),
        Mutant("aligned_false", "your RoIAlign has aligned=False (torchvision's legacy "
               "project_masks_on_boxes): the target shifts half a pixel; use aligned=True",
               target_aligned_false),
        Mutant("not_offset", "your samples start at the image's top-left corner: the box's "
               "origin (x1, y1) must be added (sample the mask over the box, not over "
               "[0, w] x [0, h])", target_not_offset),
        Mutant("not_thresholded", "you return the soft fractions; the target is binary: "
               ">= 0.5 gives 1.0, the rest 0.0", target_not_thresholded),
        Mutant("two_samples", "you use sampling_ratio=2 (the pooler's setting); mask targets "
               "take sampling_ratio=-1, ceil(bin size) samples per bin side",
               target_two_samples),
    ),
    compare=compare_targets,
)

MASK_LOSS = Exercise(
    name="mask_loss",
    lesson=7,
    contract='''mask_loss(mask_logits, labels, mask_targets) -> loss

    The Mask R-CNN mask loss: per-class sigmoids, only the ground-truth class's channel counts.
    mask_logits (K, C + 1, M, M) float, one channel per class (channel 0, background, unused);
    labels (K,) int in 1..C, the class of each positive RoI; mask_targets (K, M, M) of 0.0 / 1.0.
    Returns a float: the mean over the K * M * M pixels of the channel labels[k] of
    BCE(x, z) = -z log(sigmoid(x)) - (1 - z) log(1 - sigmoid(x)), computed stably
    (no inf or NaN for |x| of 100). 0.0 when K = 0.''',
    reference=reference.mask_loss,
    cases=mask_loss_cases,
    hints=(
        "Pick one channel per RoI: mask_logits[k, labels[k]] (fancy indexing with "
        "np.arange(K) and labels). Then binary cross-entropy against the target, averaged "
        "over all pixels of all RoIs.",
        "x = mask_logits[np.arange(K), labels]  # (K, M, M); "
        "loss = mean(max(x, 0) - x * z + log1p(exp(-|x|))), which equals "
        "-z log(sigmoid(x)) - (1 - z) log(1 - sigmoid(x)) without overflow.",
    ),
    solution=solutions.mask_loss,
    mutants=(
        Mutant("softmax", "you used a per-pixel softmax over the classes; Mask R-CNN uses an "
               "independent sigmoid per class, on the ground-truth class's channel only",
               loss_softmax),
        Mutant("all_channels", "your loss averages over all C + 1 channels; only the channel of "
               "each RoI's ground-truth class is trained", loss_all_channels),
        Mutant("label_minus_one", "your channel is off by one (labels - 1): channel 0 is "
               "background, so class c is channel c", loss_label_minus_one),
        Mutant("pixel_sum", "you sum over the M x M pixels instead of averaging: the loss is "
               "the mean over RoIs and pixels", loss_pixel_sum),
    ),
    shrink=prefix_shrinker([(0, 0), (1, 0), (2, 0)]),
)

EXERCISES = (MASK_TARGET_SINGLE, MASK_LOSS)
