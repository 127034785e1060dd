"""Lesson 06's "your turn": `bilinear_sample` (one sample of a map), then `roi_align_single`
(RoIAlign of one RoI), checked against `mrcnn_edu.reference.roi_align`.

Shape legend: C channels, H x W feature map, h x w output bins, gh x gw samples per bin.
Coordinates of a sample are in cell-centre units: (y, x) = (i, j) reads cell (i, j) exactly. A box
is (x1, y1, x2, y2) in image pixels; spatial_scale = 1 / stride takes it onto the map.
Rules (torchvision's kernel, README Conventions): aligned=True shifts the scaled box by -0.5;
a sample beyond [-1, H] x [-1, W] is 0, one inside that margin is clamped onto the map;
sampling_ratio <= 0 means ceil(bin size) samples per bin side; a bin is the mean of its samples.
The references are thin exact wrappers over the package's kernel (`roi_axis_samples`,
`roi_align`). Mutants: the classic slips, each a full wrong function.
"""
import math

import numpy as np

from mrcnn_edu import reference
from mrcnn_edu.reference.roi_align import roi_axis_samples
from mrcnn_edu.reference.roi_pool import round_half_away
from .core import Case, Exercise, Mutant
from .solutions import stage_06_roi_align as solutions


# ---------------------------------------------------------------- references

def as_map(feature, ndim, name="feature"):
    feature = np.asarray(feature)
    if feature.ndim != ndim:
        shape = "(H, W)" if ndim == 2 else "(C, H, W)"
        raise ValueError(f"{name} must have shape {shape}, got {feature.shape}")
    return feature.astype(np.float64) if feature.dtype.kind != "f" else feature


def bilinear_sample(feature, y, x):
    """One sample of feature (H, W) at (y, x), with the rules of the package's RoIAlign kernel."""
    feature = as_map(feature, 2)
    H, W = feature.shape
    # a RoI axis of one bin, one sample and bin size 0 puts its only sample exactly at `start`
    y_low, y_high, ly, y_in = roi_axis_samples(float(y), 0.0, 1, 1, H)
    x_low, x_high, lx, x_in = roi_axis_samples(float(x), 0.0, 1, 1, W)
    if not (y_in[0] and x_in[0]):
        return 0.0
    hy, hx = 1.0 - ly[0], 1.0 - lx[0]
    return float(hy * hx * feature[y_low[0], x_low[0]] + hy * lx[0] * feature[y_low[0], x_high[0]]
                 + ly[0] * hx * feature[y_high[0], x_low[0]]
                 + ly[0] * lx[0] * feature[y_high[0], x_high[0]])


def roi_align_single(feature, box, output_size, spatial_scale, sampling_ratio=-1, aligned=True):
    """`reference.roi_align` of one box (4,) on one (C, H, W) map: (C, h, w)."""
    feature = as_map(feature, 3)
    box = np.asarray(box, dtype=np.float64)
    if box.shape != (4,):
        raise ValueError(f"box must have shape (4,) = (x1, y1, x2, y2), got {box.shape}")
    rois = np.concatenate([[0.0], box])[None]  # (1, 5) batch index 0
    return reference.roi_align(feature[None], rois, output_size, spatial_scale, sampling_ratio,
                               aligned)[0]


# ---------------------------------------------------------------- cases

def lesson_grid():
    """The 5 x 5 map of lesson 06, section 2."""
    return np.random.default_rng(0).integers(0, 10, (5, 5)).astype(np.float64)


def bilinear_sample_cases():
    grid = lesson_grid()
    wide = np.arange(21, dtype=np.float64).reshape(3, 7) ** 1.5  # (3, 7): not square, not linear
    rng = np.random.default_rng(6)
    cases = [
        Case("lesson 06: 5 x 5 map at (y, x) = (1.3, 2.6)", "hand", (grid, 1.3, 2.6)),
        Case("exactly on a cell centre (2, 3)", "hand", (grid, 2.0, 3.0)),
        Case("3 x 7 map at (1.25, 5.5): rows and columns differ", "edge", (wide, 1.25, 5.5)),
        Case("3 x 7 map at (0.5, 2.75)", "edge", (wide, 0.5, 2.75)),
        Case("between the last centre and the border (y = H - 0.5)", "edge", (wide, 2.5, 3.4)),
        Case("on the far border (x = W): clamped to the last column", "edge", (wide, 1.6, 7.0)),
        Case("just past the far border (x = W + 0.01): 0", "edge", (wide, 1.6, 7.01)),
        Case("negative, inside the margin (y = -0.6): clamped to row 0", "edge", (wide, -0.6, 4.3)),
        Case("on the near margin (x = -1): clamped, not 0", "edge", (wide, 1.2, -1.0)),
        Case("beyond the near margin (y = -1.2): 0", "edge", (wide, -1.2, 2.5)),
        Case("a 1 x 1 map", "edge", (np.array([[3.5]]), 0.7, 0.2)),
    ]
    feature = rng.normal(size=(50, 76))
    for i in range(4):
        y, x = rng.uniform(-2, 52), rng.uniform(-2, 78)
        cases.append(Case(f"random: 50 x 76 map at ({y:.2f}, {x:.2f})", "random",
                          (feature, float(y), float(x))))
    return cases


def roi_align_single_cases():
    grid = lesson_grid()[None]  # (1, 5, 5)
    ramp = (np.arange(6 * 8, dtype=np.float64).reshape(1, 6, 8) ** 1.3
            + np.array([0.0, 40.0])[:, None, None])  # (2, 6, 8): two channels, not linear
    rng = np.random.default_rng(6)
    b = lambda *v: np.array(v, dtype=np.float64)  # noqa: E731
    cases = [
        Case("lesson 06: one sample at (1.3, 2.6) via box [2.6, 1.3, 3.6, 2.3]", "hand",
             (grid, b(2.6, 1.3, 3.6, 2.3), 1, 1.0, 1, True)),
        Case("2 x 2 bins, 2 x 2 samples, on the 5 x 5 map", "hand",
             (grid, b(0.5, 1.0, 4.0, 4.5), 2, 1.0, 2, True)),
        Case("adaptive sampling: bins 2.5 cells wide -> 3 samples", "edge",
             (ramp, b(0.0, 0.0, 7.5, 5.0), (2, 3), 1.0, -1, True)),
        Case("adaptive sampling at stride 4: 2 x 3 output", "edge",
             (ramp, b(2.0, 1.0, 30.0, 21.0), (2, 3), 0.25, -1, True)),
        Case("aligned=False (legacy): no -0.5 shift", "edge",
             (ramp, b(4.0, 3.0, 20.0, 17.0), 2, 0.5, 2, False)),
        Case("aligned=False with a tiny RoI: at least one cell", "edge",
             (ramp, b(6.0, 4.0, 6.4, 4.2), 2, 1.0, 2, False)),
        Case("RoI leaving the map on the left and top", "edge",
             (ramp, b(-3.2, -2.6, 2.4, 3.0), 3, 1.0, 2, True)),
        Case("RoI leaving the map on the right and bottom", "edge",
             (ramp, b(5.3, 3.1, 10.2, 8.4), 3, 1.0, 2, True)),
        Case("RoI wholly outside the map: all 0", "edge",
             (ramp, b(12.0, 9.0, 15.0, 12.0), 2, 1.0, 2, True)),
        Case("tiny RoI (0.3 x 0.2 cells), adaptive: one sample per bin", "edge",
             (ramp, b(3.1, 2.2, 3.4, 2.4), 2, 1.0, -1, True)),
        Case("zero-width RoI: 0 samples, output 0", "edge",
             (ramp, b(3.0, 2.0, 3.0, 5.0), 2, 1.0, -1, True)),
    ]
    feature = rng.normal(size=(4, 40, 50))  # stride 8 map of a 320 x 400 image
    for i, ratio in enumerate((-1, 2, -1)):
        xy = rng.uniform(-20, 360, 2)
        wh = rng.uniform(16, 160, 2)
        box = np.concatenate([xy, xy + wh])
        cases.append(Case(f"random: 4 x 40 x 50 map, stride 8, 7 x 7, sampling_ratio {ratio}",
                          "random", (feature, box, 7, 0.125, ratio, True)))
    return cases


# ---------------------------------------------------------------- mutants: classic slips

def sample_variant(feature, y, x, outside="margin", interpolate="bilinear"):
    """One sample with one rule changed. outside: "margin" (0 beyond [-1, H]), "none" (never 0),
    "map" (0 beyond [0, H - 1]); interpolate: "bilinear", "nearest" or "flipped" weights."""
    H, W = feature.shape
    if outside == "margin" and (y < -1.0 or y > H or x < -1.0 or x > W):
        return 0.0
    if outside == "map" and (y < 0.0 or y > H - 1 or x < 0.0 or x > W - 1):
        return 0.0
    y, x = min(max(y, 0.0), H - 1.0), min(max(x, 0.0), W - 1.0)
    if interpolate == "nearest":
        return float(feature[int(math.floor(y + 0.5)), int(math.floor(x + 0.5))])
    y_low, x_low = int(y), int(x)
    y_high, x_high = min(y_low + 1, H - 1), min(x_low + 1, W - 1)
    ly, lx = y - y_low, x - x_low
    if interpolate == "flipped":  # the far neighbour gets the large weight
        ly, lx = 1.0 - ly, 1.0 - lx
    hy, hx = 1.0 - ly, 1.0 - lx
    return float(hy * hx * feature[y_low, x_low] + hy * lx * feature[y_low, x_high]
                 + ly * hx * feature[y_high, x_low] + ly * lx * feature[y_high, x_high])


def sample_never_zero(feature, y, x):
    return sample_variant(np.asarray(feature, np.float64), y, x, outside="none")


def sample_zero_off_map(feature, y, x):
    return sample_variant(np.asarray(feature, np.float64), y, x, outside="map")


def sample_swapped_xy(feature, y, x):
    return bilinear_sample(feature, x, y)


def sample_nearest(feature, y, x):
    return sample_variant(np.asarray(feature, np.float64), y, x, interpolate="nearest")


def sample_flipped_weights(feature, y, x):
    return sample_variant(np.asarray(feature, np.float64), y, x, interpolate="flipped")


def align_variant(feature, box, output_size, spatial_scale, sampling_ratio, aligned, *,
                  shift=True, outside="margin", grid_rule="ceil", quantise=False):
    """RoIAlign of one box with one rule changed (see the mutants below)."""
    feature = np.asarray(feature, np.float64)
    C, H, W = feature.shape
    h, w = (output_size, output_size) if np.isscalar(output_size) else output_size
    offset = 0.5 if (aligned and shift) else 0.0
    scaled = [v * spatial_scale for v in box]
    if quantise:  # RoIPool's rounding of the scaled box to whole cells
        scaled = [float(round_half_away(v)) for v in scaled]
    x1, y1, x2, y2 = (v - offset for v in scaled)
    roi_w, roi_h = x2 - x1, y2 - y1
    if not aligned:
        roi_w, roi_h = max(roi_w, 1.0), max(roi_h, 1.0)
    bin_w, bin_h = roi_w / w, roi_h / h
    if grid_rule == "one":  # one sample per bin, whatever sampling_ratio says
        gw = gh = 1
    else:
        rule = math.ceil if grid_rule == "ceil" else math.floor
        gw = sampling_ratio if sampling_ratio > 0 else max(int(rule(bin_w)), 0)
        gh = sampling_ratio if sampling_ratio > 0 else max(int(rule(bin_h)), 0)
    out = np.zeros((C, h, w))
    for ph in range(h):
        for pw in range(w):
            for iy in range(gh):
                y = y1 + ph * bin_h + (iy + 0.5) * bin_h / gh
                for ix in range(gw):
                    x = x1 + pw * bin_w + (ix + 0.5) * bin_w / gw
                    for c in range(C):
                        out[c, ph, pw] += sample_variant(feature[c], y, x, outside=outside)
            out[:, ph, pw] /= max(gh * gw, 1)
    return out


def align_no_half_shift(feature, box, output_size, spatial_scale, sampling_ratio=-1, aligned=True):
    return align_variant(feature, box, output_size, spatial_scale, sampling_ratio, aligned,
                         shift=False)


def align_never_zero(feature, box, output_size, spatial_scale, sampling_ratio=-1, aligned=True):
    return align_variant(feature, box, output_size, spatial_scale, sampling_ratio, aligned,
                         outside="none")


def align_one_sample(feature, box, output_size, spatial_scale, sampling_ratio=-1, aligned=True):
    return align_variant(feature, box, output_size, spatial_scale, sampling_ratio, aligned,
                         grid_rule="one")


def align_floor_grid(feature, box, output_size, spatial_scale, sampling_ratio=-1, aligned=True):
    return align_variant(feature, box, output_size, spatial_scale, sampling_ratio, aligned,
                         grid_rule="floor")


def align_quantised(feature, box, output_size, spatial_scale, sampling_ratio=-1, aligned=True):
    return align_variant(feature, box, output_size, spatial_scale, sampling_ratio, aligned,
                         quantise=True)


def align_swapped_xy(feature, box, output_size, spatial_scale, sampling_ratio=-1, aligned=True):
    box = np.asarray(box, np.float64)[[1, 0, 3, 2]]  # read as (y1, x1, y2, x2)
    return roi_align_single(feature, box, output_size, spatial_scale, sampling_ratio, aligned)


# ---------------------------------------------------------------- the exercises

BILINEAR_SAMPLE = Exercise(
    name="bilinear_sample",
    lesson=6,
    contract='''bilinear_sample(feature, y, x) -> value

    One bilinear sample of a feature map, with torchvision's RoIAlign rules.
    feature (H, W) float; y, x floats in cell-centre units: (y, x) = (i, j) reads cell (i, j)
    exactly, and in between the four neighbours are weighted by their distance, e.g. at
    (1.3, 2.6): 0.7 * 0.4 * f[1, 2] + 0.7 * 0.6 * f[1, 3]
              + 0.3 * 0.4 * f[2, 2] + 0.3 * 0.6 * f[2, 3].
    Edges: a sample with y < -1 or y > H or x < -1 or x > W is 0. Otherwise a negative
    coordinate is clamped to 0, and on or past the last centre (y >= H - 1) the last row alone
    is used (same for x). Returns a float.''',
    reference=bilinear_sample,
    cases=bilinear_sample_cases,
    hints=(
        "Take the two rows around y (y_low = int(y) and y_low + 1) and the two columns around x; "
        "the weight of a neighbour is 1 minus the distance to it, per axis. Handle the edges "
        "before interpolating: first the 'outside the margin is 0' test, then the clamps.",
        "if y < -1 or y > H or x < -1 or x > W: return 0. y = max(y, 0); y_low = int(y); "
        "if y_low >= H - 1: y_low = y_high = H - 1 and y = y_low, else y_high = y_low + 1 (same "
        "for x). ly = y - y_low, hy = 1 - ly (same for x). value = hy hx f[y_low, x_low] + "
        "hy lx f[y_low, x_high] + ly hx f[y_high, x_low] + ly lx f[y_high, x_high].",
    ),
    solution=solutions.bilinear_sample,
    mutants=(
        Mutant("never_zero", "your sample is never 0: beyond the one-cell margin (y < -1 or "
               "y > H, same for x) torchvision's RoIAlign counts a sample as 0 instead of "
               "clamping it", sample_never_zero),
        Mutant("zero_off_map", "your sample is 0 as soon as it leaves [0, H - 1] x [0, W - 1]; "
               "torchvision keeps a one-cell margin: only y < -1 or y > H (same for x) gives 0, "
               "inside it the coordinate is clamped", sample_zero_off_map),
        Mutant("swapped_xy", "your x and y are swapped: the map is indexed [y, x] (row, "
               "column), and y goes with H", sample_swapped_xy),
        Mutant("nearest", "you read the nearest cell instead of interpolating between the four "
               "neighbours", sample_nearest),
        Mutant("flipped_weights", "your weights are flipped: the nearer neighbour must get the "
               "larger weight (low cell: 1 - ly, high cell: ly, with ly = y - y_low)",
               sample_flipped_weights),
    ),
)

ROI_ALIGN_SINGLE = Exercise(
    name="roi_align_single",
    lesson=6,
    contract='''roi_align_single(feature, box, output_size, spatial_scale, sampling_ratio=-1,
                     aligned=True) -> pooled

    RoIAlign of ONE box on ONE feature map (torchvision's kernel).
    feature (C, H, W) float; box (4,) = (x1, y1, x2, y2) in image pixels; output_size int or
    (h, w); spatial_scale = 1 / stride. Returns pooled (C, h, w) float.
    offset = 0.5 if aligned else 0; x1' = x1 * spatial_scale - offset (same for y1, x2, y2);
    roi_w = x2' - x1' (with aligned=False: max(roi_w, 1)); bin_w = roi_w / w;
    gw = sampling_ratio if sampling_ratio > 0 else ceil(bin_w) samples per bin side (same for h);
    sample x = x1' + pw * bin_w + (ix + 0.5) * bin_w / gw for ix = 0 .. gw - 1;
    each bin is the mean of its gh * gw samples (bilinear_sample rules; 0 when gh * gw = 0).''',
    reference=roi_align_single,
    cases=roi_align_single_cases,
    hints=(
        "Scale the box onto the map, subtract 0.5 when aligned, cut it into h x w equal bins and "
        "put gh x gw evenly spaced samples in each bin (at the centres of a gh x gw sub-grid). "
        "Your bilinear_sample reads each sample; a bin is their mean.",
        "start_x = x1 * s - 0.5; bin_w = (x2 - x1) * s / w; gw = ceil(bin_w) when "
        "sampling_ratio <= 0; out[c, ph, pw] = mean over iy, ix of bilinear_sample(feature[c], "
        "start_y + ph * bin_h + (iy + 0.5) * bin_h / gh, start_x + pw * bin_w + (ix + 0.5) * "
        "bin_w / gw).",
    ),
    solution=solutions.roi_align_single,
    mutants=(
        Mutant("no_half_shift", "your RoIAlign has aligned=False: with aligned=True the scaled "
               "box is shifted by -0.5 cell, so that its samples line up with cell centres",
               align_no_half_shift),
        Mutant("never_zero", "your samples outside the map are clamped onto it; torchvision "
               "counts a sample beyond [-1, H] x [-1, W] as 0", align_never_zero),
        Mutant("one_sample_per_bin", "you take one sample per bin whatever sampling_ratio says "
               "(sampling_ratio > 0 samples per side, or ceil(bin size) when it is <= 0)",
               align_one_sample),
        Mutant("floor_grid", "your adaptive sampling uses floor (or int) of the bin size; "
               "torchvision takes ceil(bin size) samples per bin side when sampling_ratio <= 0",
               align_floor_grid),
        Mutant("quantised_box", "you rounded the scaled box to whole cells, as RoIPool does; "
               "RoIAlign keeps the coordinates real", align_quantised),
        Mutant("swapped_xy", "your x and y are swapped: the box is (x1, y1, x2, y2) and the map "
               "is indexed [c, y, x]", align_swapped_xy),
    ),
)

EXERCISES = (BILINEAR_SAMPLE, ROI_ALIGN_SINGLE)
