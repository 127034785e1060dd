"""Drawing a trained model's detections on images (lesson 12).

    python -m mrcnn_edu predict runs/tiny/checkpoint.pt photo.jpg -o out/
    predict("runs/tiny/checkpoint.pt", ["photo.jpg"], "out/")   # -> [Path("out/photo.png")]

Each output PNG shows the image, the masks of the detections scoring at least `min_score`
(viz.MIN_DISPLAY_SCORE, 0.5, by default; coloured by class), and their boxes in the detection
colour (orange) with a "class score" caption. Drawing is `mrcnn_edu.viz.show_detections`, as in
the lessons (it stays importable from here).

Output names: image `x.jpg` is drawn to `out/x.png`. Names never collide: when an earlier image
of the same call took `x.png` (say a/x.jpg and b/x.jpg), the next is `x_1.png`, then `x_2.png`.
"""
import sys
from pathlib import Path

# A bare Figure, not pyplot's: PNGs are drawn without opening windows or leaving figures
# registered in pyplot.
from matplotlib.figure import Figure

from mrcnn_edu.data import CocoDataset
from mrcnn_edu.data.images import read_image
from mrcnn_edu.engine.checkpoint import load_model
from mrcnn_edu.engine.evaluate import detect
from mrcnn_edu.engine.rundir import make_writable_dir
from mrcnn_edu.viz import MIN_DISPLAY_SCORE, confident, show_detections  # noqa: F401 (re-exported)


def load_image(path):
    """An image file as float32 (3, H, W) in [0, 1], RGB (by bit depth, as the dataset loads it)."""
    return read_image(path)  # (3, H, W)


def save_figure(fig, path):
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100, bbox_inches="tight")
    return path


def output_paths(images, out_dir):
    """out_dir/<stem>.png for each image path, made unique: x.png, then x_1.png, x_2.png ..."""
    taken, paths = set(), []
    for image in map(Path, images):
        stem, k = image.stem, 0
        while (name := f"{stem}_{k}.png" if k else f"{stem}.png") in taken:
            k += 1
        taken.add(name)
        paths.append(Path(out_dir) / name)
    return paths


def predict(checkpoint, images, out_dir, device="cpu", min_score=MIN_DISPLAY_SCORE, *,
            score_threshold=None):
    """Detect on each image file and write a PNG per image into out_dir (named by
    `output_paths`); returns the PNG paths. `score_threshold` is the former name of min_score."""
    min_score = min_score if score_threshold is None else score_threshold
    make_writable_dir(out_dir, "output folder")  # before the slow part, and named when it fails
    model, _, class_names = load_model(checkpoint, device)
    written = []
    for path, out in zip(map(Path, images), output_paths(images, out_dir)):
        image = load_image(path)
        detections = detect(model, [image], device)[0]
        n = int((detections["scores"] >= min_score).sum())
        fig = Figure(figsize=(8, 8 * image.shape[1] / image.shape[2]))
        show_detections(image, detections, class_names, ax=fig.add_subplot(), min_score=min_score,
                        title=f"{path.name}: {n} detections with score >= {min_score}")
        written.append(save_figure(fig, out))
        print(f"{path} -> {written[-1]} ({n} detections)", file=sys.stderr)
    return written


def save_predictions_grid(model, config, data_root, device, path, num_images=6, columns=3,
                          min_score=MIN_DISPLAY_SCORE, *, score_threshold=None):
    """A grid of the first `num_images` val images (train if val is missing) with detections
    scoring at least `min_score` (`score_threshold` is its former name)."""
    min_score = min_score if score_threshold is None else score_threshold
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
        show_detections(image, detections, dataset.class_names, ax=ax, min_score=min_score,
                        title=f"{dataset.split} image {dataset.image_ids[i]}")
    fig.suptitle(f"predictions (score >= {min_score})")
    return save_figure(fig, path)
