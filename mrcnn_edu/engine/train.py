"""Training, the whole job: data and model from a Config, the loop, then plots and metrics (lesson 12).

    from mrcnn_edu.config import preset
    from mrcnn_edu.engine.train import train
    summary = train(preset("tiny"), "data/shapes", "runs/tiny", max_iters=200)

The pieces, one module each:

    engine/schedule.py   what iteration i does: learning rate, images, flips and seeds
    engine/loop.py       `fit`: the SGD loop over any model that follows the MaskRCNN contract
    engine/resume.py     starting in a run folder: lock, fresh start or exact resume
    engine/train.py      `train`: builds dataset and model, calls `fit`, then evaluates (this)

A run writes into `output_dir` (rank 0 only):

    config.json       the resolved Config (its output_dir and max_iters are this run's)
    log.jsonl         one line of losses per iteration (see `mrcnn_edu.engine.runlog`)
    checkpoint.pt     model + optimizer + iteration, replaced atomically every checkpoint_every
    loss_curve.png    the losses of log.jsonl
    metrics.json      COCO AP, pycocotools and ours, bbox and segm, on the val and train splits
    predictions.png   a grid of val images with their detections

Every name the lessons, tests and benchmarks import from here before the split (`fit`,
`lr_at`, `NonFiniteLossError`, ...) is still importable from here.
"""
import dataclasses
import sys
from pathlib import Path

import torch

from mrcnn_edu.config import check_trainable
from mrcnn_edu.data import CocoDataset
from mrcnn_edu.engine import distributed, runlog
from mrcnn_edu.engine.loop import (NonFiniteLossError, apply_gradients,  # noqa: F401 (re-exported)
                                   compute_losses, first_non_finite, fit, make_loader,
                                   make_optimizer, non_finite_message, report_progress, set_lr,
                                   to_device, wrap_for_distributed)
from mrcnn_edu.engine.resume import (CHECKPOINT_NAME, LOG_NAME,  # noqa: F401 (re-exported)
                                     checkpoint_state, prepare_output_dir, restore,
                                     warn_config_changes)
from mrcnn_edu.engine.schedule import (IterationBatchSampler,  # noqa: F401 (re-exported)
                                       epoch_permutation, flip_batch, global_batch_indices,
                                       iteration_seed, lr_at)
from mrcnn_edu.model import MaskRCNN
from mrcnn_edu.model.transforms import ResizeToInput


def auto_device(device=None):
    """`device` if given, else "cuda" when a GPU is visible, else "cpu"."""
    if device:
        try:
            device = torch.device(device)
        except RuntimeError as err:
            raise ValueError(f"device {device!r}: {err}") from None
        if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
            raise ValueError(f"device {device}: this machine has {torch.cuda.device_count()} "
                             "CUDA devices")
        return device
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def train(config, data_root, output_dir, resume=False, device=None, max_iters=None,
          progress=True, evaluate_after=True):
    """Build data and model from `config`, train, then (rank 0) plot and evaluate.

    `output_dir` is where the run goes, and `max_iters` (when given) how far it trains: both
    are written into the run's Config, so config.json says what the run did. Returns the
    summary dict of `fit` plus the paths of what was written and, when `evaluate_after`, the
    metrics. Works alone or under torchrun (see engine.distributed).
    """
    changes = {"output_dir": str(output_dir)}
    if max_iters is not None:
        changes["max_iters"] = max_iters
    config = dataclasses.replace(config, **changes)
    if not (resume and (Path(output_dir) / CHECKPOINT_NAME).is_file()):
        check_trainable(config)  # a resumed run's weights come from its checkpoint
    info = distributed.init_distributed(auto_device(device))
    device = distributed.process_device(auto_device(device), info)
    # Resized to the model's input size as it is loaded: full-size masks never reach a batch.
    # With scale jitter, to the largest size the model may draw: it then only shrinks.
    largest = max((config.min_size, *config.train_min_sizes))
    dataset = CocoDataset(data_root, split=config.train_split, categories=config.categories,
                          transforms=ResizeToInput(largest, config.max_size))
    if info.is_main and dataset.dropped:
        print(dataset.dropped_summary(), file=sys.stderr, flush=True)
    # The number of classes is a property of the data, not a knob: take it from the dataset.
    config = dataclasses.replace(config, num_classes=dataset.num_classes)
    torch.manual_seed(config.seed)  # the initial weights
    model = MaskRCNN(config)  # loads config.backbone_weights itself, when set
    class_names = dataset.class_names
    if config.skip_images_without_instances:
        kept = dataset.indices_with_instances()
        if info.is_main:
            print(f"training on the {len(kept)} of {len(dataset)} {config.train_split} images "
                  "that have an instance of the kept categories", flush=True)
        dataset = torch.utils.data.Subset(dataset, kept)
    try:
        summary = fit(model, dataset, config, output_dir, resume=resume, device=device,
                      progress=progress, class_names=class_names, info=info)
        distributed.barrier(info)
    finally:
        distributed.cleanup(info)
    if info.is_main:
        summary.update(finish_run(model, config, data_root, output_dir, device, evaluate_after,
                                  progress))
        print_summary(summary)
    return summary


def finish_run(model, config, data_root, output_dir, device, evaluate_after, progress):
    """Loss curve, metrics on val and train, predictions grid; returns their paths and metrics."""
    from mrcnn_edu.engine.evaluate import evaluate_splits
    from mrcnn_edu.engine.predict import save_predictions_grid

    output_dir = Path(output_dir)
    written = {"config_json": str(output_dir / "config.json")}
    curve = runlog.save_loss_curve(output_dir / LOG_NAME, output_dir / "loss_curve.png")
    if curve is not None:
        written["loss_curve"] = str(curve)
    if evaluate_after:
        metrics = evaluate_splits(model, config, data_root, device, output_dir, progress=progress)
        written["metrics"] = metrics
        written["metrics_json"] = str(output_dir / "metrics.json")
        written["predictions_png"] = str(save_predictions_grid(
            model, config, data_root, device, output_dir / "predictions.png"))
    return written


def print_summary(summary):
    """Say where everything is, and the headline numbers."""
    first = summary["start_iteration"]
    lines = [f"trained iterations {first}..{first + summary['iterations']} in "
             f"{summary['seconds']:.1f} s ({summary['images_per_second']:.2f} images/s)"]
    for key in ("config_json", "log", "checkpoint", "loss_curve", "metrics_json",
                "predictions_png"):
        if key in summary:
            lines.append(f"  {key:<16}{summary[key]}")
    for split, m in summary.get("metrics", {}).items():
        for source in ("pycocotools", "ours"):
            for iou_type, values in m.get(source, {}).items():
                lines.append(f"  {split:<6}{source:<12}{iou_type:<5} AP {values['AP']:.3f}  "
                             f"AP50 {values['AP50']:.3f}")
    print("\n".join(lines), flush=True)
