"""Diagrams of the model itself: the map of the whole pipeline (lesson 00, and a "you are here"
strip atop every lesson), the FPN's lateral and top-down wiring (lesson 05) and the box and mask
heads with their losses (lesson 09). Drawn from code, with sizes read from the package's config.
"""
import numbers

import matplotlib.pyplot as plt
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch, Rectangle

from mrcnn_edu.viz.figures import ANCHOR_COLOR, DETECTION_COLOR, GT_COLOR, PROPOSAL_COLOR

# --- lessons 00-12: a map of the pipeline, the FPN (lesson 05), the RoI heads (lesson 09) -----
# One row per stage: (title, detail, lessons, row, column). Row 0 is the inference path, read
# left to right; row 1 is what training adds. The column places a box in the full map; the
# compact strip just puts all stages in table order. `pipeline_map` and its tests share this.
PIPELINE_STAGES = [
    ("image", "resize, normalise,\npad to a multiple of 32", (0, 8), 0, 0.0),
    ("ResNet", "C2-C5\nstrides 4, 8, 16, 32", (5,), 0, 1.0),
    ("FPN", "P2-P6, one width\nstrides 4 ... 64", (5,), 0, 2.0),
    ("RPN", "3x3 conv, then 1x1\nobjectness + 1x1 deltas\nfor every anchor", (2, 3, 8), 0, 3.0),
    ("top-k + NMS", "proposals: best k\nper level, NMS 0.7", (1, 4, 8), 0, 4.0),
    ("RoIAlign", "7x7 (box), 14x14 (mask)\non the RoI's FPN level", (5, 6), 0, 5.0),
    ("box / mask heads", "K + 1 class scores,\nboxes, 28x28 masks", (3, 7, 9), 0, 6.0),
    ("post-process", "per-class NMS,\ntop 100, paste\nmasks at 0.5", (11,), 0, 7.0),
    ("ground truth", "boxes, classes,\nmasks", (0, 1), 1, 0.0),
    ("match + sample", "anchors: IoU 0.7 / 0.3\nRoIs: IoU 0.5", (1, 4), 1, 3.5),
    ("losses", "RPN: objectness, box\nheads: class, box, mask", (7, 8, 9), 1, 5.5),
    ("training", "SGD / AdamW steps:\nshapes, COCO subset", (10, 12), 1, 7.0),
]
# (from, to, caption) between stage titles, besides each row's left-to-right chain
PIPELINE_LINKS = [("RPN", "match + sample", "anchors"), ("top-k + NMS", "match + sample", "proposals"),
                  ("box / mask heads", "losses", "predictions")]
STAGE_COLORS = ("#dbe9f6", "#d9f0d3")  # face of a row-0 / row-1 box: light blue / light green
HERE_COLOR = "#ffbb78"  # face of the highlighted ("you are here") stages: light orange
GREYED_COLOR = "#f2f2f2"  # face of the other stages when one lesson is highlighted
GREYED_TEXT = "#a0a0a0"


def lesson_numbers(lessons):
    """(2, 3, 8) -> '02 · 03 · 08'."""
    return " · ".join(f"{n:02d}" for n in lessons)


def _stage_style(lessons, row, highlight):
    """(face, edge, text colour, edge width) of one stage box."""
    if highlight is None:
        return STAGE_COLORS[row], (PROPOSAL_COLOR, GT_COLOR)[row], "black", 1.2
    if highlight in lessons:
        return HERE_COLOR, DETECTION_COLOR, "black", 2.5
    return GREYED_COLOR, "#c8c8c8", GREYED_TEXT, 1.0


def _arrow(ax, start, end, color="#555555", mutation_scale=12, gid="arrow", **style):
    """An arrow from point start to point end, drawn as a patch (so it is not in ax.texts)."""
    arrow = FancyArrowPatch(start, end, arrowstyle="-|>", mutation_scale=mutation_scale,
                            color=color, linewidth=1.2, shrinkA=0, shrinkB=0, **style)
    arrow.set_gid(gid)
    ax.add_patch(arrow)
    return arrow


def _diagram_ax(ax, figsize, top=0.9):
    """ax, or the Axes of a new figure that it fills up to `top` (room for a title above)."""
    if ax is None:
        ax = plt.figure(figsize=figsize).add_axes((0.01, 0.01, 0.98, top - 0.01))
    return ax


def _check_highlight(highlight):
    lessons = sorted({n for stage in PIPELINE_STAGES for n in stage[2]})
    # bool is an int and 5.0 == 5: both would pass `in lessons`, so ask for a true integer
    is_int = isinstance(highlight, numbers.Integral) and not isinstance(highlight, bool)
    if highlight is not None and not (is_int and highlight in lessons):
        raise ValueError(f"pipeline_map: highlight must be a lesson number in {lessons} or None, "
                         f"got {highlight!r}")


def pipeline_map(ax=None, highlight=None, compact=False):
    """The whole Mask R-CNN pipeline as labelled boxes and arrows, each stage with its lessons.

    Stages come from PIPELINE_STAGES. highlight=n (a lesson number) draws the stages of lesson n
    in orange and greys the others ("you are here"); compact=True draws every stage in one
    small row, titles and lesson numbers only, for the top of a lesson. Each stage box is a
    FancyBboxPatch with gid "stage:<title>"; an arrow from stage a to stage b is a
    FancyArrowPatch with gid "arrow:<a>-><b>".
    """
    _check_highlight(highlight)
    if compact:
        return _pipeline_strip(_diagram_ax(ax, (15, 1.4), top=0.8), highlight)
    ax = _diagram_ax(ax, (16, 5.2))
    width, height, rows_y = 0.88, 0.66, (1.0, 0.0)  # box size in column units; row centres
    centres = {}
    for title, detail, lessons, row, col in PIPELINE_STAGES:
        face, edge, text, lw = _stage_style(lessons, row, highlight)
        x, y = col, rows_y[row]
        centres[title] = (x, y)
        _stage_box(ax, (x - width / 2, y - height / 2), width, height, title, face, edge, lw)
        ax.text(x, y + 0.2, title, ha="center", va="center", fontsize=11, fontweight="bold",
                color=text)
        ax.text(x, y - 0.03, detail, ha="center", va="center", fontsize=8.5, color=text,
                linespacing=1.2)
        ax.text(x, y - 0.26, f"lesson {lesson_numbers(lessons)}", ha="center", va="center",
                fontsize=8, style="italic", color=text if highlight is not None else "#444444")
    for row in (0, 1):  # each row is a chain, in table order
        titles = [s[0] for s in PIPELINE_STAGES if s[3] == row]
        for a, b in zip(titles, titles[1:]):
            (xa, ya), (xb, yb) = centres[a], centres[b]
            _arrow(ax, (xa + width / 2, ya), (xb - width / 2, yb), gid=f"arrow:{a}->{b}")
    for a, b, caption in PIPELINE_LINKS:
        (xa, ya), (xb, yb) = centres[a], centres[b]
        start, end = (xa, ya - height / 2), (xb + 0.4 * (xa - xb), yb + height / 2)
        _arrow(ax, start, end, linestyle="--", gid=f"arrow:{a}->{b}")
        ax.text((start[0] + end[0]) / 2 + 0.03, (ya + yb) / 2, caption, fontsize=8,
                color="#555555", ha="left", va="center", style="italic")
    ax.text(-0.5, rows_y[0] + height / 2 + 0.08, "inference (and training)", fontsize=9,
            color="#555555", ha="left", va="bottom")
    ax.text(-0.5, rows_y[1] + height / 2 + 0.08, "training only", fontsize=9, color="#555555",
            ha="left", va="bottom")
    if highlight is not None:
        ax.set_title(f"lesson {highlight:02d}: you are here", fontsize=11)
    ax.set_xlim(-0.5, 7.5)
    ax.set_ylim(-0.42, 1.5)
    ax.axis("off")
    return ax


def _stage_box(ax, xy, width, height, title, face, edge, linewidth):
    box = FancyBboxPatch(xy, width, height, boxstyle="round,pad=0,rounding_size=0.05",
                         facecolor=face, edgecolor=edge, linewidth=linewidth)
    box.set_gid(f"stage:{title}")
    ax.add_patch(box)
    return box


def _pipeline_strip(ax, highlight):
    """compact=True: every stage in one row, inference path first, then training."""
    width, height, step = 0.92, 0.8, 1.0
    for i, (title, _, lessons, row, _) in enumerate(PIPELINE_STAGES):
        face, edge, text, lw = _stage_style(lessons, row, highlight)
        x = i * step + (0.35 if row == 1 else 0.0)  # a gap before the training stages
        _stage_box(ax, (x - width / 2, -height / 2), width, height, title, face, edge, lw)
        ax.text(x, 0.12, title, ha="center", va="center", fontsize=7.5, color=text,
                fontweight="bold" if highlight in lessons else "normal")
        ax.text(x, -0.2, lesson_numbers(lessons), ha="center", va="center", fontsize=7,
                color=text)
        if i + 1 < len(PIPELINE_STAGES) and PIPELINE_STAGES[i + 1][3] == row:
            _arrow(ax, (x + width / 2, 0), (x + step - width / 2, 0), mutation_scale=8,
                   gid=f"arrow:{title}->{PIPELINE_STAGES[i + 1][0]}")
    if highlight is not None:
        ax.set_title(f"lesson {highlight:02d}: you are here", fontsize=9, loc="left")
    ax.set_xlim(-0.5, len(PIPELINE_STAGES) - 0.1)
    ax.set_ylim(-0.5, 0.5)
    ax.axis("off")
    return ax


def _preset_pair():
    """(the paper's config, the tiny preset's), read from mrcnn_edu.config so labels follow it."""
    from mrcnn_edu.config import preset  # here, not at the top: viz loads before the model code
    return preset("r50_fpn"), preset("tiny")


def _resnet_channels(depth):
    """Channels of C2..C5 for a ResNet depth (the backbone's widths times its block expansion)."""
    from mrcnn_edu.model.backbone import RESNET_LAYERS  # imports torch: only when drawn
    expansion = 4 if RESNET_LAYERS[depth][0] == "bottleneck" else 1
    return [w * expansion for w in (64, 128, 256, 512)]


def fpn_diagram(ax=None):
    """The FPN of mrcnn_edu/model/fpn.py: bottom-up C2..C5, 1x1 laterals, 2x nearest top-down
    upsampling, adds, 3x3 output convs to P2..P5, and P6 = max-pool(P5, kernel 1, stride 2).

    Channels are labelled for the paper's R-50-FPN and the tiny preset (ResNet-18, read from
    mrcnn_edu.config); sizes are fractions of the padded input H x W."""
    ax = _diagram_ax(ax, (12, 8))
    paper, tiny = _preset_pair()
    c_paper, c_tiny = _resnet_channels(paper.backbone_depth), _resnet_channels(tiny.backbone_depth)
    f_paper, f_tiny = paper.fpn_channels, tiny.fpn_channels
    xc, xs, xp, r = 2.6, 6.0, 8.9, 0.22  # x of the C maps, the add nodes, the P maps; node radius
    sides = (1.5, 1.15, 0.85, 0.6, 0.42)  # drawn side of the level 2..6 squares (not to scale)
    ys = (1.6, 3.6, 5.4, 7.0, 8.5)  # y of the level 2..6 centres
    image_y = -0.2
    _map_square(ax, xc, image_y, 1.3, "#ffffff", ANCHOR_COLOR)
    ax.text(xc - 0.9, image_y, "image\nH x W x 3", ha="right", va="center", fontsize=10)
    below = image_y + 0.65
    for k in range(2, 6):
        i, y, side = k - 2, ys[k - 2], sides[k - 2]
        _map_square(ax, xc, y, side, "#e6e6e6", ANCHOR_COLOR)  # bottom-up map Ck
        ax.text(xc - side / 2 - 0.25, y, f"C{k}   stride {2 ** k}, H/{2 ** k} x W/{2 ** k}\n"
                f"{c_paper[i]} ch (tiny: {c_tiny[i]})", ha="right", va="center", fontsize=9.5)
        step = "stem + layer1, /4" if k == 2 else f"layer{k - 1}, /2"
        _arrow(ax, (xc, below), (xc, y - side / 2))
        ax.text(xc + 0.1, (below + y - side / 2) / 2, step, fontsize=8.5, color="#555555",
                ha="left", va="center", style="italic")
        below = y + side / 2
        _arrow(ax, (xc + side / 2, y), (xs - r, y), color=PROPOSAL_COLOR)  # lateral 1x1 conv
        ax.text((xc + side / 2 + xs - r) / 2, y + 0.08, "1x1 conv", ha="center", va="bottom",
                fontsize=9, color=PROPOSAL_COLOR)
        _add_node(ax, xs, y, r, add=k < 5)  # C5's projection starts the top-down path
        _arrow(ax, (xs + r, y), (xp - side / 2, y), color=DETECTION_COLOR)  # 3x3 output conv
        ax.text((xs + r + xp - side / 2) / 2, y + 0.08, "3x3 conv", ha="center", va="bottom",
                fontsize=9, color=DETECTION_COLOR)
        _map_square(ax, xp, y, side, "#dbe9f6", PROPOSAL_COLOR)  # FPN output Pk
        ax.text(xp + side / 2 + 0.25, y, f"P{k}   stride {2 ** k}, H/{2 ** k} x W/{2 ** k}\n"
                f"{f_paper} ch (tiny: {f_tiny})", ha="left", va="center", fontsize=9.5)
        if k < 5:  # top-down: the level above, upsampled 2x by nearest neighbour, is added here
            _arrow(ax, (xs, ys[k - 1] - r), (xs, y + r), color=GT_COLOR)
            ax.text(xs - 0.12, (ys[k - 1] + y) / 2, "2x up\n(nearest)", ha="right", va="center",
                    fontsize=8.5, color=GT_COLOR)
    y6, side6 = ys[4], sides[4]
    _arrow(ax, (xp, ys[3] + sides[3] / 2), (xp, y6 - side6 / 2), color=DETECTION_COLOR)
    ax.text(xp - 0.12, (ys[3] + sides[3] / 2 + y6 - side6 / 2) / 2, "max-pool 1x1,\nstride 2",
            ha="right", va="center", fontsize=8.5, color=DETECTION_COLOR)
    _map_square(ax, xp, y6, side6, "#dbe9f6", PROPOSAL_COLOR)
    ax.text(xp + side6 / 2 + 0.25, y6, f"P6   stride 64, ceil(H/64) x ceil(W/64)\n"
            f"{f_paper} ch (tiny: {f_tiny}); RPN only", ha="left", va="center", fontsize=9.5)
    ax.text(xc, ys[4] + 0.9, "bottom-up (ResNet)", ha="center", fontsize=11, fontweight="bold")
    ax.text(xs, ys[4] + 0.9, "top-down + lateral", ha="center", fontsize=11, fontweight="bold")
    ax.text(xp, ys[4] + 0.9, "pyramid (FPN)", ha="center", fontsize=11, fontweight="bold")
    ax.set_xlim(-1.4, 13.2)
    ax.set_ylim(-1.0, ys[4] + 1.3)
    ax.set_aspect("equal")
    ax.axis("off")
    return ax


def _map_square(ax, x, y, side, face, edge):
    """A feature map drawn as a square of the given side centred at (x, y)."""
    ax.add_patch(Rectangle((x - side / 2, y - side / 2), side, side, facecolor=face,
                           edgecolor=edge, linewidth=1.5))


def _add_node(ax, x, y, r, add=True):
    """A circle with '+' where a lateral and the upsampled level are summed; a dot otherwise."""
    ax.add_patch(plt.Circle((x, y), r if add else r / 3, facecolor="white" if add else "black",
                            edgecolor="black", linewidth=1.2))
    if add:
        ax.text(x, y, "+", ha="center", va="center", fontsize=12)


def _size_label(paper, tiny):
    """'256' when the paper and the tiny preset agree, else '256 (tiny: 64)'."""
    return paper if paper == tiny else f"{paper} (tiny: {tiny})"


def heads_diagram(ax=None):
    """The box and mask heads of mrcnn_edu/model/roi_heads.py, as in the Mask R-CNN paper's
    figure 4 (right, FPN), with the three losses as equations beside the outputs.

    Sizes are read from mrcnn_edu.config: the paper's R-50-FPN values, and the tiny preset's
    where they differ. As in torchvision, the box branch predicts 4 (K + 1) deltas and the mask
    branch K + 1 masks (the background's are never trained); the paper's figure has 4K and K."""
    ax = _diagram_ax(ax, (16, 7.8))
    p, t = _preset_pair()
    box_in = f"{p.box_pool_size}x{p.box_pool_size}x{_size_label(p.fpn_channels, t.fpn_channels)}"
    mask_in = f"{p.mask_pool_size}x{p.mask_pool_size}x{_size_label(p.fpn_channels, t.fpn_channels)}"
    dim = _size_label(p.mask_head_dim, t.mask_head_dim)
    m = p.mask_size
    yb, ym = 5.0, 1.2  # centre lines of the box head and the mask head
    # box head: RoI features -> fc -> fc -> class scores and box deltas
    _map_square(ax, 1.0, yb, 1.0, "#e6e6e6", ANCHOR_COLOR)
    ax.text(1.0, yb - 0.75, f"RoI {box_in}", ha="center", va="top", fontsize=9.5)
    for x, name in ((3.3, "fc6"), (5.0, "fc7")):
        ax.add_patch(Rectangle((x - 0.15, yb - 1.0), 0.3, 2.0, facecolor="#dbe9f6",
                               edgecolor=PROPOSAL_COLOR, linewidth=1.5))
        ax.text(x, yb - 1.15, f"{name}\n{_size_label(p.box_head_dim, t.box_head_dim)}",
                ha="center", va="top", fontsize=9.5)
    _arrow(ax, (1.5, yb), (3.15, yb))
    _arrow(ax, (3.45, yb), (4.85, yb))
    ax.text(2.3, yb + 0.1, "flatten", ha="center", va="bottom", fontsize=8.5, style="italic")
    outputs = ((yb + 0.8, "class", "K + 1 scores", r"$L_{cls} = -\log\, p_u$",
                r"$p_u$: softmax score of the RoI's class $u$ (0 = background)" "\n"
                f"mean over the S sampled RoIs ({p.roi_batch_size_per_image} per image; "
                f"tiny: {t.roi_batch_size_per_image})"),
               (yb - 0.8, "box", "4 (K + 1) deltas\n(paper: 4K)",
                r"$L_{box} = \sum_{i \in \{x, y, w, h\}} \mathrm{smooth}_{L_1}(t^u_i - v_i)$"
                r"$\quad (u \geq 1)$",
                r"$t^u$: predicted deltas for class $u$, $v$: target deltas" "\n"
                r"summed over foreground RoIs, divided by S; $\beta = 1/9$"))
    for y, name, size, equation, note in outputs:
        ax.add_patch(Rectangle((6.65, y - 0.35), 0.3, 0.7, facecolor="#ffe0c2",
                               edgecolor=DETECTION_COLOR, linewidth=1.5))
        _arrow(ax, (5.15, yb + (y - yb) * 0.2), (6.65, y))
        ax.text(7.1, y, f"{name}: {size}", ha="left", va="center", fontsize=9.5)
        ax.text(11.8, y + 0.12, equation, ha="left", va="bottom", fontsize=13)
        ax.text(11.8, y - 0.05, note, ha="left", va="top", fontsize=8.5, color="#555555")
    # mask head: RoI features -> convs -> deconv -> 1x1 conv -> per-class masks
    blocks = ((1.0, 1.4, f"RoI {mask_in}"), (4.1, 1.4, f"{p.mask_pool_size}x{p.mask_pool_size}x{dim}"),
              (7.3, 2.0, f"{m}x{m}x{dim}"), (10.4, 2.0, f"{m}x{m}x(K + 1)\n(paper: {m}x{m}xK)"))
    steps = (f"{p.mask_head_convs} x (3x3 conv)", "2x2 deconv,\nstride 2", "1x1 conv")
    for i, (x, side, label) in enumerate(blocks):
        face, edge = (("#ffe0c2", DETECTION_COLOR) if i == len(blocks) - 1
                      else ("#e6e6e6" if i == 0 else "#dbe9f6", ANCHOR_COLOR if i == 0 else PROPOSAL_COLOR))
        _map_square(ax, x, ym, side, face, edge)
        ax.text(x, ym - side / 2 - 0.15, label, ha="center", va="top", fontsize=9.5)
        if i:
            x0, side0 = blocks[i - 1][:2]
            _arrow(ax, (x0 + side0 / 2, ym), (x - side / 2, ym))
            ax.text((x0 + side0 / 2 + x - side / 2) / 2, ym + 0.1, steps[i - 1], ha="center",
                    va="bottom", fontsize=8.5)
    ax.text(10.4, ym + 1.15, "mask", ha="center", va="bottom", fontsize=9.5)
    ax.text(11.8, ym + 0.12, r"$L_{mask} = -\frac{1}{m^2} \sum_{i,j} \left[ y_{ij} \log p^k_{ij}"
            r" + (1 - y_{ij}) \log (1 - p^k_{ij}) \right]$", ha="left", va="bottom",
            fontsize=13)
    ax.text(11.8, ym - 0.05, f"$p^k$: sigmoid of mask k, k = the RoI's ground-truth class,\n"
            f"$y$: the {m} x {m} target (lesson 07); mean over the\n"
            f"m x m pixels of mask k and over the foreground RoIs only", ha="left", va="top",
            fontsize=8.5, color="#555555")
    ax.text(0.2, yb + 1.5, "box head", fontsize=11, fontweight="bold")
    ax.text(0.2, ym + 1.5, "mask head", fontsize=11, fontweight="bold")
    ax.text(9.3, yb + 2.1, r"$L = L_{cls} + L_{box} + L_{mask}$", ha="center", fontsize=14)
    ax.set_xlim(-0.3, 17.2)
    ax.set_ylim(-0.9, yb + 2.7)
    ax.set_aspect("equal")
    ax.axis("off")
    return ax
