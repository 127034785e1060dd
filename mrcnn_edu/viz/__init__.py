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
    ANCHOR_COLOR, DETECTION_COLOR, GT_COLOR, IGNORED_COLOR, MIN_DISPLAY_SCORE, PALETTE,
    POSITIVE_COLOR, PROPOSAL_COLOR, binary_masks, box_caption, confident, draw_anchor_labels,
    draw_boxes, draw_cell_grid, draw_feature_pyramid, draw_masks, draw_pr_curve, draw_roi_bins,
    get_ax, image_hwc, loss_names, plot_data_ladder, plot_loss_curve, running_mean,
    show_detections, show_image, show_sample, show_samples, to_numpy)
from mrcnn_edu.viz.diagrams import (  # noqa: F401
    GREYED_COLOR, GREYED_TEXT, HERE_COLOR, PIPELINE_LINKS, PIPELINE_STAGES, STAGE_COLORS,
    fpn_diagram, heads_diagram, lesson_numbers, pipeline_map)
