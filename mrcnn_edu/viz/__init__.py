"""Every plotting function the lessons use (from lesson 00 on): f(arrays, ax=None, **style) -> Axes.

Shape legend: N boxes or instances, H x W image size.

    image   (3, H, W) float in [0, 1] (our tensors) or (H, W, 3) / (H, W) numpy, uint8 or float
    boxes   (N, 4) xyxy pixels
    masks   (N, H, W) 0/1 (or probabilities: on where >= MASK_THRESHOLD = 0.5, see `binary_masks`)

Rules: pure functions, no global state; each takes an optional `ax` (a new figure when None) and
returns the Axes it drew on. Inputs may be numpy arrays or torch tensors (on any device).
Colours are fixed so every lesson reads the same way: ground truth green, anchors grey,
proposals blue, kept detections orange; masks take the per-class (or per-instance) PALETTE.

Two rooms: `figures.py` draws data and results (images, boxes, masks, detections, losses,
anchors, PR curves, RoI bins); `diagrams.py` draws the model itself (the pipeline map, the FPN,
the RoI heads). Everything is used as `viz.name`.
"""
# Re-exported: lessons and the package call them as viz.<name>.
from mrcnn_edu.viz.figures import (  # noqa: F401
    GT_COLOR, ANCHOR_COLOR, PROPOSAL_COLOR, DETECTION_COLOR,
    PALETTE, MIN_DISPLAY_SCORE, to_numpy, get_ax, image_hwc, show_image, box_caption, draw_boxes,
    binary_masks, draw_masks, show_sample, show_samples, confident, show_detections, loss_names,
    running_mean, plot_loss_curve, POSITIVE_COLOR, IGNORED_COLOR, draw_anchor_labels,
    draw_pr_curve, draw_feature_pyramid, draw_cell_grid, draw_roi_bins)
from mrcnn_edu.viz.diagrams import (  # noqa: F401
    PIPELINE_STAGES, PIPELINE_LINKS, STAGE_COLORS, HERE_COLOR,
    GREYED_COLOR, GREYED_TEXT, lesson_numbers, pipeline_map, fpn_diagram, heads_diagram)
