"""Figures of data and results (lessons 00-12): images, boxes, masks, detections, losses, anchors,
precision-recall curves, pyramids and RoI bins. Every function is f(arrays, ax=None, **style) -> Axes.
"""
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.colors import to_rgb
from matplotlib.patches import Rectangle

from mrcnn_edu.reference.masks import MASK_THRESHOLD

GT_COLOR = "#2ca02c"  # green: ground truth
ANCHOR_COLOR = "#7f7f7f"  # grey: anchors
PROPOSAL_COLOR = "#1f77b4"  # blue: RPN proposals
DETECTION_COLOR = "#ff7f0e"  # orange: kept detections
# Fixed mask palette (matplotlib's tab20, reordered so neighbours differ): colour = PALETTE[k % 20]
PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
           "#bcbd22", "#17becf", "#7f7f7f", "#aec7e8", "#ffbb78", "#98df8a", "#ff9896",
           "#c5b0d5", "#c49c94", "#f7b6d2", "#dbdb8d", "#9edae5", "#c7c7c7"]
# Detections scoring at least this are drawn (predict, lessons 10-12). A display choice only:
# Config.score_thresh (0.05) is the model's own cut, which keeps many more for evaluation.
MIN_DISPLAY_SCORE = 0.5


def to_numpy(x):
    """A numpy view of x: torch tensors are detached and moved to the CPU first."""
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def get_ax(ax=None, figsize=(6, 6)):
    """ax, or the Axes of a new figure when ax is None."""
    if ax is None:
        _, ax = plt.subplots(figsize=figsize)
    return ax


def image_hwc(image):
    """Any image layout we use -> (H, W, 3) or (H, W) numpy for imshow."""
    image = to_numpy(image)
    if image.ndim == 3 and image.shape[0] in (1, 3) and image.shape[-1] not in (1, 3, 4):
        image = image.transpose(1, 2, 0)  # (C, H, W) -> (H, W, C)
    if image.ndim == 3 and image.shape[-1] == 1:
        image = image[..., 0]
    if image.dtype.kind == "f":
        image = np.clip(image, 0.0, 1.0)
    return image


def show_image(image, ax=None, title=None):
    """Draw an image with the pixel convention: pixel (i, j) covers [j, j+1) x [i, i+1)."""
    ax = get_ax(ax)
    img = image_hwc(image)
    h, w = img.shape[:2]
    # a grayscale image is shown on its full range (0-1 float, 0-255 uint8), not stretched
    gray = {}
    if img.ndim == 2:
        gray = dict(cmap="gray", vmin=0, vmax=1.0 if img.dtype.kind == "f" else 255)
    # extent puts pixel edges on integers, so xyxy boxes line up with what you see
    ax.imshow(img, extent=(0, w, h, 0), interpolation="nearest", **gray)
    ax.set_axis_off()
    if title is not None:
        ax.set_title(title)
    return ax


def box_caption(label=None, score=None, class_names=None):
    """'dog 0.93', 'dog', '0.93' or '' for one box."""
    parts = []
    if label is not None:
        label = int(label)
        parts.append(class_names[label] if class_names is not None else str(label))
    if score is not None:
        parts.append(f"{float(score):.2f}")
    return " ".join(parts)


def draw_boxes(boxes, ax=None, color=GT_COLOR, labels=None, scores=None, class_names=None,
               linewidth=1.5, fontsize=8, **style):
    """Draw (N, 4) xyxy boxes as rectangles, one patch each, with optional captions.

    labels (N,) and/or scores (N,) give each box a caption above its top-left corner, with
    class_names[label] when class_names is given. `style` goes to Rectangle (linestyle, alpha).
    """
    ax = get_ax(ax)
    boxes = to_numpy(boxes).reshape(-1, 4)  # (N, 4)
    labels = None if labels is None else to_numpy(labels).reshape(-1)
    scores = None if scores is None else to_numpy(scores).reshape(-1)
    for i, (x1, y1, x2, y2) in enumerate(boxes):
        ax.add_patch(Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, edgecolor=color,
                               linewidth=linewidth, **style))
        caption = box_caption(None if labels is None else labels[i],
                              None if scores is None else scores[i], class_names)
        if caption:
            ax.text(x1, y1, caption, fontsize=fontsize, color="white", va="bottom",
                    bbox=dict(facecolor=color, edgecolor="none", pad=1, alpha=0.8))
    return ax


def binary_masks(masks):
    """(N, H, W) masks as bool: float masks are probabilities, on where >= MASK_THRESHOLD (the
    README's rule, as pasting does); integer and bool masks are on where non-zero."""
    masks = to_numpy(masks)
    return masks >= MASK_THRESHOLD if masks.dtype.kind == "f" else masks.astype(bool)


def draw_masks(masks, ax=None, colors=None, alpha=0.5, labels=None):
    """Overlay (N, H, W) masks as one RGBA image; later masks paint over earlier ones.

    Colours: `colors` (one colour, or one per mask) if given, else PALETTE[label % 20] when
    labels are given (one colour per class), else PALETTE[i % 20] (one per instance).
    """
    ax = get_ax(ax)
    masks = to_numpy(masks)
    if masks.ndim == 2:
        masks = masks[None]
    masks = binary_masks(masks)  # (N, H, W) bool
    n, h, w = masks.shape
    overlay = np.zeros((h, w, 4))  # (H, W, RGBA)
    for i in range(n):
        overlay[masks[i], :3] = to_rgb(_mask_color(i, colors, labels))
        overlay[masks[i], 3] = alpha
    ax.imshow(overlay, extent=(0, w, h, 0), interpolation="nearest")
    return ax


def _mask_color(i, colors, labels):
    if colors is not None:
        single = isinstance(colors, str) or not isinstance(colors[0], (str, tuple, list))
        return colors if single else colors[i]  # "red" / (r, g, b) vs a list of colours
    if labels is not None:
        return PALETTE[int(to_numpy(labels).reshape(-1)[i]) % len(PALETTE)]
    return PALETTE[i % len(PALETTE)]


def show_sample(image, target, class_names=None, ax=None, title=None, alpha=0.5):
    """An image with its target: masks coloured by class, boxes in green with class captions.

    Crowd regions (target["iscrowd"] == 1) get dashed boxes and a "(crowd)" caption.
    """
    ax = show_image(image, ax=ax, title=title)
    labels = to_numpy(target["labels"])
    if "masks" in target and len(labels):
        draw_masks(target["masks"], ax=ax, labels=labels, alpha=alpha)
    crowd = to_numpy(target.get("iscrowd", np.zeros(len(labels)))).astype(bool)
    boxes = to_numpy(target["boxes"])
    draw_boxes(boxes[~crowd], ax=ax, labels=labels[~crowd], class_names=class_names)
    if crowd.any():
        names = None if class_names is None else [f"{n} (crowd)" for n in class_names]
        draw_boxes(boxes[crowd], ax=ax, labels=labels[crowd], class_names=names,
                   linestyle="--")
    return ax


def show_samples(dataset, count, figsize=None, title="image {id}"):
    """The first `count` (image, target) pairs of `dataset` side by side, as `show_sample` draws
    them; `title` is formatted with the COCO image id. Returns the figure."""
    fig, axes = plt.subplots(1, count, figsize=figsize or (4.5 * count, 4), squeeze=False)
    for i, ax in enumerate(axes[0]):
        image, target = dataset[i]
        show_sample(image, target, class_names=dataset.class_names, ax=ax,
                    title=title.format(id=dataset.image_ids[i]))
    fig.tight_layout()
    return fig


# --- lessons 10-12: detections and training losses -----------------------------------------
def confident(detections, min_score=MIN_DISPLAY_SCORE):
    """Only the detections scoring at least `min_score` (a dict of tensors or arrays)."""
    keep = detections["scores"] >= min_score
    return {k: v[keep] for k, v in detections.items()}


def show_detections(image, detections, class_names=None, ax=None, min_score=MIN_DISPLAY_SCORE,
                    title=None, *, score_threshold=None):
    """Image, masks by class, orange boxes captioned 'class score', for the detections scoring
    at least `min_score`; returns the Axes. `score_threshold` is the former name of min_score."""
    d = confident(detections, min_score if score_threshold is None else score_threshold)
    ax = show_image(image, ax=ax, title=title)
    if len(d["labels"]):
        draw_masks(d["masks"], ax=ax, labels=d["labels"])
        draw_boxes(d["boxes"], ax=ax, color=DETECTION_COLOR, labels=d["labels"],
                   scores=d["scores"], class_names=class_names)
    return ax


def loss_names(records):
    """The loss keys of log records, in first-seen order ("loss" is the total)."""
    names = []
    for r in records:
        names += [k for k in r if k.startswith("loss") and k not in names]
    return names


def running_mean(values, window):
    """Mean of the last `window` values at each position (fewer at the start)."""
    out, total = [], 0.0
    for i, v in enumerate(values):
        total += v
        if i >= window:
            total -= values[i - window]
        out.append(total / min(i + 1, window))
    return out


def plot_loss_curve(records, ax=None, smooth=10):
    """Each loss of log.jsonl records against iteration: thin raw, thick running mean over
    `smooth` iterations, log scale."""
    ax = get_ax(ax, figsize=(8, 5))
    its = [r["iteration"] for r in records]
    for name in loss_names(records):
        values = [r.get(name, float("nan")) for r in records]
        line, = ax.plot(its, values, lw=0.5, alpha=0.4)
        ax.plot(its, running_mean(values, smooth), lw=2 if name == "loss" else 1.2,
                color=line.get_color(), label=name)
    ax.set_xlabel("iteration")
    ax.set_ylabel("loss")
    ax.set_yscale("log")
    ax.legend(fontsize=8)
    return ax


def plot_data_ladder(series, ax=None, ylabel="AP50", title=None, fmt="{:.2f}"):
    """Scores against the number of training images, on a log axis: the data ladder (lessons
    10 and 12). `series`: [(label, images, scores, style), ...] with images and scores of equal
    length and style a dict of matplotlib line options ({} for the defaults); each score is
    written next to its point with `fmt`."""
    ax = get_ax(ax, figsize=(7, 4.5))
    ticks = set()
    for k, (label, images, scores, style) in enumerate(series):
        line, = ax.plot(images, scores, marker="o", label=label, **style)
        for x, y in zip(images, scores):  # alternate above and below, so close curves stay legible
            ax.annotate(fmt.format(y), (x, y), textcoords="offset points",
                        xytext=(4, 6 if k % 2 == 0 else -13), fontsize=8, color=line.get_color())
        ticks.update(images)
    ax.set_xscale("log")
    ax.set_xticks(sorted(ticks), [f"{x:g}" for x in sorted(ticks)])
    ax.minorticks_off()
    ax.margins(x=0.12)
    ax.set_xlabel("training images (log scale)")
    ax.set_ylabel(ylabel)
    ax.set_ylim(bottom=0)
    if title:
        ax.set_title(title)
    ax.legend(fontsize=8)
    return ax


# --- lesson 04: anchor labels ---------------------------------------------------------------
POSITIVE_COLOR = "#d62728"  # red: positive anchors (label 1)
IGNORED_COLOR = "#bcbd22"  # olive, dashed: ignored anchors (label -1); negatives use ANCHOR_COLOR


def draw_anchor_labels(anchors, labels, ax=None, linewidth=1.0):
    """Draw (A, 4) anchors coloured by their (A,) training labels: 1 positive (red, solid),
    0 negative (grey), -1 ignored (olive, dashed). One patch per anchor, so pass a subset
    (the sampled anchors, say), not all 200,000. Negatives are drawn first, positives last."""
    ax = get_ax(ax)
    anchors, labels = to_numpy(anchors).reshape(-1, 4), to_numpy(labels).reshape(-1)  # (A, 4), (A,)
    draw_boxes(anchors[labels == 0], ax=ax, color=ANCHOR_COLOR, linewidth=linewidth, alpha=0.6)
    draw_boxes(anchors[labels == -1], ax=ax, color=IGNORED_COLOR, linewidth=linewidth, linestyle="--")
    draw_boxes(anchors[labels == 1], ax=ax, color=POSITIVE_COLOR, linewidth=linewidth * 1.5)
    return ax


# --- lesson 11: precision-recall curves -----------------------------------------------------
def draw_pr_curve(recall, precision, ax=None, label=None, **style):
    """Draw one precision-recall curve: recall (P,) on x, precision (P,) on y, both in [0, 1].

    A raw curve (one point per detection, pass marker="o") or COCO's 101-point interpolated one
    (recall = the 101 thresholds). Axes are fixed to [0, 1] x [0, 1.05] so curves compare."""
    ax = get_ax(ax, figsize=(5, 4))
    recall, precision = to_numpy(recall).reshape(-1), to_numpy(precision).reshape(-1)  # (P,), (P,)
    ax.plot(recall, precision, label=label, **style)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.05)
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    return ax


# --- lessons 05-06: feature pyramids, RoI bins and sampling points ------------------------------
def draw_feature_pyramid(shapes, names, ax=None, color=PROPOSAL_COLOR):
    """Draw feature maps as squares of side proportional to their width, left to right.

    shapes: [(C, H, W), ...]; names: ["C2", ...]. Each square is captioned "name  C x H x W"."""
    ax = get_ax(ax, figsize=(8, 3))
    x = 0.0
    for (c, h, w), name in zip(shapes, names):
        ax.add_patch(plt.Rectangle((x, 0), w, h, fill=False, edgecolor=color, linewidth=1.5))
        ax.text(x + w / 2, h + 8, f"{name}\n{c} x {h} x {w}", ha="center", va="bottom", fontsize=8)
        x += w + max(40, 120 - w)  # room for the caption of a small map
    ax.set_xlim(-60, x)
    ax.set_ylim(-10, max(h for _, h, _ in shapes) + 90)
    ax.set_aspect("equal")
    ax.axis("off")
    return ax


def draw_cell_grid(size, ax=None, values=None):
    """Draw an (H, W) feature map's cells as a grid in map coordinates (cell (i, j) covers
    [j, j+1) x [i, i+1)), shading them by `values` (H, W) if given."""
    ax = get_ax(ax, figsize=(5, 5))
    height, width = size
    if values is not None:
        ax.imshow(to_numpy(values), cmap="Greys", extent=(0, width, height, 0), alpha=0.5)
    for i in range(height + 1):
        ax.axhline(i, color="#999999", linewidth=0.5)
    for j in range(width + 1):
        ax.axvline(j, color="#999999", linewidth=0.5)
    ax.set_xlim(-0.5, width + 0.5)
    ax.set_ylim(height + 0.5, -0.5)  # rows grow downwards, as in an image
    ax.set_aspect("equal")
    return ax


def draw_roi_bins(box, output_size, ax=None, color=PROPOSAL_COLOR, linestyle="-", samples=None):
    """Draw a box (x1, y1, x2, y2) in map coordinates cut into (h, w) bins, and optional
    sampling points `samples` (P, 2) as (x, y) dots in the same colour."""
    ax = get_ax(ax, figsize=(5, 5))
    x1, y1, x2, y2 = (float(v) for v in to_numpy(box).reshape(4))
    h, w = output_size
    for i in range(h + 1):
        y = y1 + (y2 - y1) * i / h
        ax.plot([x1, x2], [y, y], color=color, linestyle=linestyle, linewidth=1.2)
    for j in range(w + 1):
        x = x1 + (x2 - x1) * j / w
        ax.plot([x, x], [y1, y2], color=color, linestyle=linestyle, linewidth=1.2)
    if samples is not None:
        points = to_numpy(samples).reshape(-1, 2)  # (P, 2) as (x, y)
        ax.scatter(points[:, 0], points[:, 1], s=12, color=color, zorder=3)
    return ax
