"""Drawing a trained model's detections on images (lesson 12).

    python -m mrcnn_edu predict runs/tiny/checkpoint.pt photo.jpg -o out/
    predict("runs/tiny/checkpoint.pt", ["photo.jpg"], "out/")   # -> [Path("out/photo.png")]

Each output PNG shows the image, the masks of the detections scoring at least
`score_threshold` (coloured by class), and their boxes in the detection colour (orange) with a
"class score" caption. Drawing uses `mrcnn_edu.viz`, like the lessons.
"""
import sys
from pathlib import Path

import torch
# A bare Figure draws to files without pyplot, so importing this module never changes the
# backend of a notebook or GUI session that imports it.
from matplotlib.figure import Figure

from mrcnn_edu import viz
from mrcnn_edu.data import CocoDataset
from mrcnn_edu.data.coco import read_rgb
from mrcnn_edu.engine.checkpoint import load_model
from mrcnn_edu.engine.evaluate import detect


def load_image(path):
    """An image file as float32 (3, H, W) in [0, 1], RGB."""
    pixels = read_rgb(path)  # (H, W, 3) uint8
    return torch.from_numpy(pixels).permute(2, 0, 1).float().div_(255)


def confident(detections, score_threshold):
    """Only the detections scoring at least `score_threshold`."""
    keep = detections["scores"] >= score_threshold
    return {k: v[keep] for k, v in detections.items()}


def show_detections(image, detections, class_names=None, ax=None, score_threshold=0.5,
                    title=None):
    """Image, masks by class, orange boxes captioned 'class score'; returns the Axes."""
    d = confident(detections, score_threshold)
    ax = viz.show_image(image, ax=ax, title=title)
    if len(d["labels"]):
        viz.draw_masks(d["masks"], ax=ax, labels=d["labels"])
        viz.draw_boxes(d["boxes"], ax=ax, color=viz.DETECTION_COLOR, labels=d["labels"],
                       scores=d["scores"], class_names=class_names)
    return ax


def save_figure(fig, path):
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100, bbox_inches="tight")
    return path


def predict(checkpoint, images, out_dir, device="cpu", score_threshold=0.5):
    """Detect on each image file and write out_dir/<stem>.png; returns the PNG paths."""
    model, _, class_names = load_model(checkpoint, device)
    written = []
    for path in map(Path, images):
        image = load_image(path)
        detections = detect(model, [image], device)[0]
        n = int((detections["scores"] >= score_threshold).sum())
        fig = Figure(figsize=(8, 8 * image.shape[1] / image.shape[2]))
        ax = fig.add_subplot()
        show_detections(image, detections, class_names, ax=ax, score_threshold=score_threshold,
                        title=f"{path.name}: {n} detections with score >= {score_threshold}")
        written.append(save_figure(fig, Path(out_dir) / f"{path.stem}.png"))
        print(f"{path} -> {written[-1]} ({n} detections)", file=sys.stderr)
    return written


def save_predictions_grid(model, config, data_root, device, path, num_images=6, columns=3,
                          score_threshold=0.5):
    """A grid of the first `num_images` val images (train if val is missing) with detections."""
    try:
        dataset = CocoDataset(data_root, split=config.val_split, categories=config.categories)
    except FileNotFoundError:
        dataset = CocoDataset(data_root, split=config.train_split, categories=config.categories)
    n = min(num_images, len(dataset))
    rows = -(-n // columns)
    fig = Figure(figsize=(4 * columns, 4 * rows))
    axes = fig.subplots(rows, columns, squeeze=False)
    for i, ax in enumerate(axes.flat):
        if i >= n:
            ax.set_axis_off()
            continue
        image = dataset.load_image(i)
        detections = detect(model, [image], device)[0]
        show_detections(image, detections, dataset.class_names, ax=ax,
                        score_threshold=score_threshold,
                        title=f"{dataset.split} image {dataset.image_ids[i]}")
    fig.suptitle(f"predictions (score >= {score_threshold})")
    return save_figure(fig, path)
