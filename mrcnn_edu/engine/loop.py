"""The training loop `fit`: SGD (or AdamW) steps, exact resume, NaN guard, DDP (lesson 12).

`fit` takes any model that follows the MaskRCNN contract (train mode: images, targets -> dict of
losses), so tests can drive it with a small stand-in; `mrcnn_edu.engine.train.train` builds the
real model and data and calls it. What each iteration does (its learning rate, images, flips and
seeds) comes from `mrcnn_edu.engine.schedule`, so a resumed run repeats the losses exactly.

A run writes into `output_dir` (rank 0 only), which it holds locked for its whole life
(`mrcnn_edu.engine.rundir`):

    config.json       the resolved Config
    log.jsonl         one line of losses per iteration (see `mrcnn_edu.engine.runlog`)
    checkpoint.pt     model + optimizer + iteration, replaced atomically every checkpoint_every
"""
import dataclasses
import math
import sys
import time
from pathlib import Path

import torch
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from mrcnn_edu.data import collate
from mrcnn_edu.engine import distributed, runlog
from mrcnn_edu.engine.checkpoint import remove_partial_saves, save_checkpoint
from mrcnn_edu.engine.resume import (CHECKPOINT_NAME, LOG_NAME, checkpoint_state,
                                     prepare_output_dir, restore, run_folder_lock)
from mrcnn_edu.engine.schedule import (IterationBatchSampler, flip_batch, iteration_seed, lr_at,
                                      paste_batch)



class NonFiniteLossError(RuntimeError):
    """A loss became NaN or inf; the message names the loss, the iteration and the checkpoint."""


@dataclasses.dataclass
class Run:
    """Everything one training run carries from iteration to iteration."""

    model: torch.nn.Module  # the model itself (its state_dict is what is saved)
    train_model: torch.nn.Module  # the model, or its DDP wrapper under torchrun
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    config: object  # mrcnn_edu.config.Config
    info: distributed.DistInfo
    device: torch.device
    output_dir: Path
    class_names: list | None
    start: int  # iterations already done when this process started (0, or the checkpoint's)
    last_saved: int | None  # iteration of the newest checkpoint on disk

    @property
    def checkpoint_path(self):
        return self.output_dir / CHECKPOINT_NAME

    @property
    def log_path(self):
        return self.output_dir / LOG_NAME


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


def to_device(images, targets, device):
    """Move images and every tensor of the targets to `device`."""
    images = [im.to(device, non_blocking=True) for im in images]
    targets = [{k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v
                for k, v in t.items()} for t in targets]
    return images, targets


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
        # fused: one compiled kernel per step instead of a dozen passes over 12M weights;
        # AdamW's own update, measured 3x faster on 2 CPU cores (docs/benchmarks.md).
        return torch.optim.AdamW(groups, lr=config.lr, fused=True)
    raise ValueError(f"unknown optimizer {config.optimizer!r}; expected 'sgd' or 'adamw'")


def train_step(run, iteration, images, targets):
    """One SGD step of 0-based `iteration`; returns its log record (without the time)."""
    config, info = run.config, run.info
    # Seed the global RNG (the model's anchor and RoI sampling) from (seed, iteration):
    # the losses of iteration i then do not depend on where the run was resumed.
    torch.manual_seed(iteration_seed(config.seed, iteration, info.rank))
    images, targets = flip_batch(images, targets, iteration, config, info)
    images, targets = paste_batch(images, targets, iteration, config, info)
    images, targets = to_device(images, targets, run.device)
    lr = lr_at(iteration, config)
    set_lr(run.optimizer, lr)
    losses = compute_losses(run.train_model, images, targets, run.scaler.is_enabled())
    values = distributed.average_across_processes(
        {k: v.item() for k, v in losses.items()}, info, run.device)
    bad = first_non_finite(values)
    if bad is not None:
        raise NonFiniteLossError(non_finite_message(bad, iteration + 1, run.checkpoint_path,
                                                    run.last_saved))
    params = [p for p in run.model.parameters() if p.requires_grad]
    apply_gradients(run.optimizer, run.scaler, sum(losses.values()), params, config.grad_clip)
    return {"iteration": iteration + 1, "lr": lr, "loss": sum(values.values()), **values}


def save_if_due(run, done):
    """Checkpoint after iteration `done` every checkpoint_every iterations and at the end."""
    if done % run.config.checkpoint_every == 0 or done == run.config.max_iters:
        if run.info.is_main:
            save_checkpoint(run.checkpoint_path, checkpoint_state(
                run.model, run.optimizer, run.scaler, done, run.config, run.class_names))
        run.last_saved = done


# ---------------------------------------------------------------- the loop


def fit(model, dataset, config, output_dir, resume=False, device="cpu", progress=True,
        class_names=None, info=None):
    """Train `model` on `dataset` for iterations up to config.max_iters; returns a summary dict.

    Resumes from output_dir/checkpoint.pt when `resume` (starting fresh, with a note, if there is
    none). Raises NonFiniteLossError when a loss becomes NaN or inf; the checkpoint on disk is
    then the last good one. Raises rundir.RunFolderLocked when another run holds output_dir,
    rundir.RunFolderError when it cannot be written, CheckpointError when the checkpoint to
    resume is unreadable or belongs to another model. `info` is this process's DistInfo (one
    process when None).
    """
    info = info or distributed.DistInfo()
    if len(dataset) == 0:
        raise ValueError(f"no images to train on in {dataset!r}")
    device, output_dir = torch.device(device), Path(output_dir)
    with run_folder_lock(output_dir, info, device):
        run = start_run(model, config, output_dir, resume, device, info, class_names)
        seconds = run_iterations(run, dataset, progress)
    iterations = config.max_iters - run.start
    images_per_s = iterations * config.batch_size * info.world_size / max(seconds, 1e-9)
    return {"output_dir": str(output_dir), "checkpoint": str(run.checkpoint_path),
            "log": str(run.log_path), "start_iteration": run.start, "iterations": iterations,
            "seconds": seconds, "images_per_second": images_per_s}


def start_run(model, config, output_dir, resume, device, info, class_names):
    """Model on the device, optimizer, resumed state and a prepared folder: the Run."""
    if info.is_main:
        remove_partial_saves(output_dir / CHECKPOINT_NAME)  # of a run killed while saving
    model.to(device)
    optimizer = make_optimizer(model, config)
    scaler = torch.amp.GradScaler("cuda", enabled=config.amp and device.type == "cuda")
    start = restore(model, optimizer, scaler, output_dir / CHECKPOINT_NAME, resume, config,
                    info, device)
    if info.is_main:
        prepare_output_dir(output_dir, config, start)
    return Run(model, wrap_for_distributed(model, device, info), optimizer, scaler, config, info,
               device, output_dir, class_names, start, start if start > 0 else None)


def run_iterations(run, dataset, progress):
    """Iterations run.start..max_iters-1: step, log, checkpoint; returns the seconds taken."""
    loader = make_loader(dataset, run.config, run.start, run.info, run.device)
    bar = tqdm(total=run.config.max_iters, initial=run.start, mininterval=1.0,
               disable=not (progress and run.info.is_main), dynamic_ncols=True,
               file=sys.stderr, desc="train")
    log_file = open(run.log_path, "a") if run.info.is_main else None
    t0 = time.perf_counter()
    run.model.train()
    try:
        for iteration, (images, targets) in enumerate(loader, start=run.start):
            record = train_step(run, iteration, images, targets)
            record["time"] = round(time.perf_counter() - t0, 3)
            if run.info.is_main:
                runlog.append_record(log_file, record)
                report_progress(bar, record, progress, run.config.log_every)
            save_if_due(run, record["iteration"])
    finally:
        bar.close()
        if log_file is not None:
            log_file.close()
    return time.perf_counter() - t0


def wrap_for_distributed(model, device, info):
    """The model itself for one process; a DistributedDataParallel wrapper under torchrun."""
    if not info.enabled:
        return model
    device_ids = [device.index] if device.type == "cuda" else None
    # An iteration without positive RoIs gives the mask head no gradient: tell DDP to expect it.
    return DistributedDataParallel(model, device_ids=device_ids, find_unused_parameters=True)


def aspect_groups(dataset):
    """One group id per image of `dataset`: 0 landscape or square, 1 portrait, from the sizes
    in the annotation file (no pixels are read); None for a dataset that cannot tell."""
    base, indices = dataset, range(len(dataset))
    if isinstance(dataset, torch.utils.data.Subset):
        base, indices = dataset.dataset, dataset.indices
    if not hasattr(base, "image_info"):
        return None
    return tuple(int(info["height"] > info["width"]) for info in map(base.image_info, indices))


def make_loader(dataset, config, start, info, device):
    """Batches of this rank for iterations start..max_iters-1, loaded by num_workers workers;
    with Config.group_by_aspect_ratio, each batch holds landscape or portrait images only."""
    groups = aspect_groups(dataset) if config.group_by_aspect_ratio else None
    sampler = IterationBatchSampler(len(dataset), config, start, config.max_iters, info, groups)
    return torch.utils.data.DataLoader(dataset, batch_sampler=sampler, collate_fn=collate,
                                       num_workers=config.num_workers,
                                       pin_memory=device.type == "cuda")


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
