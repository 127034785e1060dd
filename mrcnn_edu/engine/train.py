"""The training loop: SGD (or AdamW) with warm-up and steps, exact resume, NaN guard, DDP (lesson 12).

    from mrcnn_edu.config import preset
    from mrcnn_edu.engine.train import train
    summary = train(preset("tiny"), "data/shapes", "runs/tiny", max_iters=200)

`train` builds the dataset and the model from the config and calls `fit`, the loop itself;
`fit` takes any model that follows the MaskRCNN contract (train mode: images, targets -> dict of
losses), so tests can drive it with a small stand-in.

A run writes into `output_dir` (rank 0 only):

    config.json       the resolved Config (after --set overrides and num_classes from the data)
    log.jsonl         one line of losses per iteration (see `mrcnn_edu.engine.runlog`)
    checkpoint.pt     model + optimizer + iteration, replaced atomically every checkpoint_every
    loss_curve.png    the losses of log.jsonl
    metrics.json      COCO AP, pycocotools and ours, bbox and segm, on the val and train splits
    predictions.png   a grid of val images with their detections

Reproducibility. Every random choice of iteration i is derived from (seed, i, rank) alone:
which images form the batch (a per-epoch permutation seeded by (seed, epoch)), which are flipped,
and the model's own sampling of anchors and RoIs (the global torch RNG, re-seeded at the start of
the iteration). Nothing depends on what ran before, so a run resumed from the checkpoint of
iteration k repeats the losses of an uninterrupted run exactly (on the CPU).

Learning rate at 0-based iteration i (the step that produces log record i + 1):

    lr(i) = lr * gamma ** (number of lr_steps <= i) * warm(i)
    warm(i) = warmup_factor * (1 - i / warmup_iters) + i / warmup_iters   for i < warmup_iters, else 1
"""
import dataclasses
import functools
import hashlib
import json
import math
import sys
import time
from pathlib import Path

import torch
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from mrcnn_edu.data import CocoDataset, collate
from mrcnn_edu.engine import distributed, runlog
from mrcnn_edu.engine.checkpoint import (capture_rng_state, load_checkpoint,
                                         save_checkpoint)
from mrcnn_edu.model import MaskRCNN
from mrcnn_edu.model.transforms import RandomHorizontalFlip

CHECKPOINT_NAME = "checkpoint.pt"
LOG_NAME = "log.jsonl"


class NonFiniteLossError(RuntimeError):
    """A loss became NaN or inf; the message names the loss, the iteration and the checkpoint."""


# ---------------------------------------------------------------- schedule and randomness


def lr_at(iteration, config):
    """Learning rate of 0-based `iteration`: linear warm-up, then x lr_gamma at each lr_step."""
    factor = config.lr_gamma ** sum(iteration >= step for step in config.lr_steps)
    if iteration < config.warmup_iters:
        alpha = iteration / config.warmup_iters
        factor *= config.warmup_factor * (1 - alpha) + alpha
    return config.lr * factor


def iteration_seed(seed, iteration, rank=0, purpose="model"):
    """A 56-bit seed that depends only on its arguments (a hash, so nearby inputs decorrelate)."""
    digest = hashlib.sha256(f"{seed}:{iteration}:{rank}:{purpose}".encode()).digest()
    return int.from_bytes(digest[:7], "little")


@functools.lru_cache(maxsize=4)
def epoch_permutation(epoch, num_images, seed):
    """The order in which epoch `epoch` visits the dataset: a permutation seeded by (seed, epoch)."""
    g = torch.Generator().manual_seed(iteration_seed(seed, epoch, purpose="epoch"))
    return tuple(torch.randperm(num_images, generator=g).tolist())


def global_batch_indices(iteration, num_images, images_per_step, seed):
    """Dataset indices of 0-based `iteration`'s batch over all processes.

    The data order is the concatenation of the epoch permutations; iteration i takes positions
    [i * images_per_step, (i + 1) * images_per_step) of it, so a batch may straddle two epochs.
    """
    indices = []
    for position in range(iteration * images_per_step, (iteration + 1) * images_per_step):
        epoch, offset = divmod(position, num_images)
        indices.append(epoch_permutation(epoch, num_images, seed)[offset])
    return indices


class IterationBatchSampler(torch.utils.data.Sampler):
    """Yields this rank's list of dataset indices for iterations start..stop-1 (see above)."""

    def __init__(self, num_images, config, start, stop, info):
        self.num_images, self.config = num_images, config
        self.start, self.stop, self.info = start, stop, info

    def __iter__(self):
        per_step = self.config.batch_size * self.info.world_size
        for iteration in range(self.start, self.stop):
            batch = global_batch_indices(iteration, self.num_images, per_step, self.config.seed)
            yield distributed.shard(batch, self.info)

    def __len__(self):
        return self.stop - self.start


def flip_batch(images, targets, iteration, config, info):
    """Random horizontal flips, drawn from a generator seeded by (seed, iteration, rank).

    Done here in the main process rather than in the dataset so that DataLoader workers need no
    random state and the choice is reproducible whatever num_workers is.
    """
    if config.hflip_prob <= 0:
        return images, targets
    g = torch.Generator().manual_seed(iteration_seed(config.seed, iteration, info.rank, "flip"))
    flip = RandomHorizontalFlip(config.hflip_prob, generator=g)
    pairs = [flip(image, target) for image, target in zip(images, targets)]
    return [p[0] for p in pairs], [p[1] for p in pairs]


def to_device(images, targets, device):
    """Move images and every tensor of the targets to `device`."""
    images = [im.to(device, non_blocking=True) for im in images]
    targets = [{k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v
                for k, v in t.items()} for t in targets]
    return images, targets


# ---------------------------------------------------------------- one iteration


def first_non_finite(losses):
    """(name, value) of the first loss that is NaN or inf, or None when all are finite."""
    for name, value in losses.items():
        if not math.isfinite(value):
            return name, value
    return None


def compute_losses(model, images, targets, use_amp):
    """Forward pass in train mode: dict of scalar loss tensors (float32 even under AMP)."""
    with torch.autocast("cuda", enabled=use_amp):
        return model(images, targets)


def apply_gradients(optimizer, scaler, total, params, grad_clip):
    """Backward pass, optional gradient-norm clipping, and the SGD step."""
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(total).backward()
    if grad_clip:
        scaler.unscale_(optimizer)  # clip the true gradients, not the loss-scaled ones
        torch.nn.utils.clip_grad_norm_(params, grad_clip)
    scaler.step(optimizer)
    scaler.update()


def set_lr(optimizer, lr):
    for group in optimizer.param_groups:
        group["lr"] = lr


def make_optimizer(model, config):
    """SGD with momentum (the paper) or AdamW, by `config.optimizer`.

    Weight decay applies to the weights of convs and linears, not to norms and biases. AdamW
    scales each weight's step by its own gradient history, which from random weights and a
    few hundred images measured far faster than SGD (docs/benchmarks.md); SGD stays the
    default because it is the recipe every published Mask R-CNN number uses.
    """
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (decay if p.ndim > 1 else no_decay).append(p)
    groups = [{"params": decay, "weight_decay": config.weight_decay},
              {"params": no_decay, "weight_decay": 0.0}]
    if config.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=config.lr, momentum=config.momentum)
    if config.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=config.lr)
    raise ValueError(f"unknown optimizer {config.optimizer!r}; expected 'sgd' or 'adamw'")


# ---------------------------------------------------------------- the loop


def fit(model, dataset, config, output_dir, resume=False, device="cpu", progress=True,
        class_names=None, info=None):
    """Train `model` on `dataset` for iterations up to config.max_iters; returns a summary dict.

    Resumes from output_dir/checkpoint.pt when `resume` (starting fresh, with a note, if there is
    none). Raises NonFiniteLossError when a loss becomes NaN or inf; the checkpoint on disk is
    then the last good one. `info` is this process's DistInfo (one process when None).
    """
    info = info or distributed.DistInfo()
    if len(dataset) == 0:
        raise ValueError(f"no images to train on in {dataset!r}")
    device = torch.device(device)
    output_dir = Path(output_dir)
    checkpoint_path = output_dir / CHECKPOINT_NAME
    log_path = output_dir / LOG_NAME
    model.to(device)
    optimizer = make_optimizer(model, config)
    use_amp = config.amp and device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)

    start = restore(model, optimizer, scaler, checkpoint_path, resume, config, info, device)
    last_saved = start if start > 0 else None
    if info.is_main:
        prepare_output_dir(output_dir, config, start)
    train_model = wrap_for_distributed(model, device, info)
    params = [p for p in model.parameters() if p.requires_grad]
    loader = make_loader(dataset, config, start, info, device)
    bar = tqdm(total=config.max_iters, initial=start, disable=not (progress and info.is_main),
               mininterval=1.0, dynamic_ncols=True, file=sys.stderr, desc="train")
    log_file = open(log_path, "a") if info.is_main else None
    t0 = time.perf_counter()
    model.train()
    try:
        for iteration, (images, targets) in enumerate(loader, start=start):
            # Seed the global RNG (the model's anchor and RoI sampling) from (seed, iteration):
            # the losses of iteration i then do not depend on where the run was resumed.
            torch.manual_seed(iteration_seed(config.seed, iteration, info.rank))
            images, targets = flip_batch(images, targets, iteration, config, info)
            images, targets = to_device(images, targets, device)
            lr = lr_at(iteration, config)
            set_lr(optimizer, lr)

            losses = compute_losses(train_model, images, targets, use_amp)
            values = distributed.average_across_processes(
                {k: v.item() for k, v in losses.items()}, info, device)
            bad = first_non_finite(values)
            if bad is not None:
                raise NonFiniteLossError(non_finite_message(bad, iteration + 1, checkpoint_path,
                                                            last_saved))
            apply_gradients(optimizer, scaler, sum(losses.values()), params, config.grad_clip)

            done = iteration + 1
            record = {"iteration": done, "lr": lr, "loss": sum(values.values()), **values,
                      "time": round(time.perf_counter() - t0, 3)}
            if info.is_main:
                runlog.append_record(log_file, record)
                report_progress(bar, record, progress, config.log_every)
            if done % config.checkpoint_every == 0 or done == config.max_iters:
                if info.is_main:
                    save_checkpoint(checkpoint_path, checkpoint_state(
                        model, optimizer, scaler, done, config, class_names))
                last_saved = done
    finally:
        bar.close()
        if log_file is not None:
            log_file.close()
    seconds = time.perf_counter() - t0
    iterations = config.max_iters - start
    images_per_s = iterations * config.batch_size * info.world_size / max(seconds, 1e-9)
    return {"output_dir": str(output_dir), "checkpoint": str(checkpoint_path),
            "log": str(log_path), "start_iteration": start, "iterations": iterations,
            "seconds": seconds, "images_per_second": images_per_s}


def restore(model, optimizer, scaler, checkpoint_path, resume, config, info, device):
    """Load the checkpoint when resuming and return its iteration; 0 for a fresh run.

    A fresh run refuses to overwrite an existing checkpoint; resuming without one starts fresh.
    """
    if resume and checkpoint_path.is_file():
        state = load_checkpoint(checkpoint_path, map_location=device)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])  # momentum buffers
        if state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
        warn_config_changes(state["config"], config, info)
        return state["iteration"]
    if resume:
        if info.is_main:
            print(f"no checkpoint at {checkpoint_path}; starting from iteration 0",
                  file=sys.stderr)
    elif checkpoint_path.is_file():
        raise FileExistsError(f"{checkpoint_path} exists: pass resume=True (--resume) to continue "
                              "that run, or choose another output directory")
    return 0


def prepare_output_dir(output_dir, config, start):
    """Write config.json; cut log.jsonl back to the checkpoint (or remove it for a fresh run)."""
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / "config.json").write_text(json.dumps(config.to_dict(), indent=2) + "\n")
    log_path = output_dir / LOG_NAME
    if start > 0:
        runlog.truncate_log(log_path, start)  # drop iterations the killed run did after saving
    elif log_path.exists():
        log_path.unlink()


def wrap_for_distributed(model, device, info):
    """The model itself for one process; a DistributedDataParallel wrapper under torchrun."""
    if not info.enabled:
        return model
    device_ids = [device.index] if device.type == "cuda" else None
    # An iteration without positive RoIs gives the mask head no gradient: tell DDP to expect it.
    return DistributedDataParallel(model, device_ids=device_ids, find_unused_parameters=True)


def make_loader(dataset, config, start, info, device):
    """Batches of this rank for iterations start..max_iters-1, loaded by num_workers workers."""
    sampler = IterationBatchSampler(len(dataset), config, start, config.max_iters, info)
    return torch.utils.data.DataLoader(dataset, batch_sampler=sampler, collate_fn=collate,
                                       num_workers=config.num_workers,
                                       pin_memory=device.type == "cuda")


def checkpoint_state(model, optimizer, scaler, iteration, config, class_names):
    """The dict that `save_checkpoint` writes (see mrcnn_edu.engine.checkpoint)."""
    return {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
            "scaler": scaler.state_dict(), "iteration": iteration, "config": config.to_dict(),
            "class_names": list(class_names) if class_names is not None else None,
            "rng": capture_rng_state()}


def non_finite_message(bad, iteration, checkpoint_path, last_saved):
    name, value = bad
    where = (f"Last good checkpoint: {checkpoint_path} (iteration {last_saved})"
             if last_saved is not None else "No checkpoint was written yet.")
    return f"{name} became {value} at iteration {iteration}; stopped. {where}"


def report_progress(bar, record, progress, log_every):
    """Losses on the tqdm bar (which shows the ETA), or a printed line when the bar is off."""
    short = {k.removeprefix("loss_"): f"{v:.3f}" for k, v in record.items()
             if k.startswith("loss")}
    bar.update(1)
    if progress:
        bar.set_postfix(short, refresh=False)
    elif record["iteration"] % log_every == 0:
        print(f"iteration {record['iteration']}  lr {record['lr']:.5f}  "
              + "  ".join(f"{k} {v}" for k, v in short.items()), flush=True)


def warn_config_changes(saved, config, info):
    """Tell the user when a resumed run's config differs from its checkpoint's (fine for max_iters)."""
    current = config.to_dict()
    changed = sorted(k for k in current if saved.get(k) != current[k])
    if changed and info.is_main:
        print(f"note: resuming with changed config fields {changed}; the loss sequence will "
              "differ from the original run's where they matter", file=sys.stderr)


# ---------------------------------------------------------------- the whole job


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

    Returns the summary dict of `fit` plus the paths of what was written and, when
    `evaluate_after`, the metrics. Works alone or under torchrun (see engine.distributed).
    """
    if max_iters is not None:
        config = dataclasses.replace(config, max_iters=max_iters)
    info = distributed.init_distributed(auto_device(device))
    device = distributed.process_device(auto_device(device), info)
    dataset = CocoDataset(data_root, split=config.train_split, categories=config.categories)
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
    lines = [f"trained iterations {summary['start_iteration']}..{summary['start_iteration'] + summary['iterations']}"
             f" in {summary['seconds']:.1f} s ({summary['images_per_second']:.2f} images/s)"]
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

