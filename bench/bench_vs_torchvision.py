"""Our R-50-FPN Mask R-CNN beside torchvision's, in one process: train step, eval forward, memory.

    PYTHONPATH=. /path/to/torchvision-venv/bin/python bench/bench_vs_torchvision.py \
        [--size 800] [--steps 5] [--threads N] [--device cpu|cuda] [--channels-last] [--no-write]

torchvision is never a dependency of mrcnn_edu: run this with another Python that has torch,
torchvision and mrcnn_edu's runtime dependencies (numpy, numba, pycocotools, pillow). Where
torchvision cannot be imported the script says so and exits 0 (a skip). It writes the section
`vs_torchvision` of docs/benchmarks.md (not with --no-write).

The setup, the same for both models (issue 12):
- one real image of the COCO subset (`--data`, else $MRCNN_EDU_DATA, else the project's default
  locations: `mrcnn_edu.data.resolve_data_root`) with its real targets: boxes, masks, and labels
  1..K contiguous over the JSON's categories (CocoDataset's mapping of COCO ids; crowd instances
  dropped); both models resize it to a shorter side of --size px (longer side at most
  size * 1333 / 800) and pad to a multiple of 32;
- random initialisation (no downloaded weights), frozen BatchNorm, stem and layer1 frozen, the same
  head size (K + 1 class outputs), the paper's RPN and RoI sampling settings (torchvision's
  defaults, which are also ours);
- torchvision's model is assembled from the pieces `maskrcnn_resnet50_fpn` uses (resnet50,
  `resnet_fpn_backbone` with 3 trainable layers, `MaskRCNN`), because that builder, given no
  weights, switches to trainable BatchNorm and trains every layer;
- plain SGD (momentum 0.9, weight decay 1e-4) over the trainable parameters, --lr for both, with
  the gradient norm clipped to --clip: random weights under frozen BatchNorm (identity
  statistics) give first losses in the thousands, and one unclipped step turns torchvision's
  model to NaN. Every step's losses are checked finite, and the gradients after the last timed
  step are checked: each trainable tensor has one, finite (all-zero ones are named).

Timing: a train step is forward + losses + backward + optimizer step; an eval forward is
`model.eval()` under no_grad, including post-processing (masks pasted into the image). One
warm-up of each, then --steps of each, interleaved (ours, theirs, ours, ...) so that load on a
shared machine hits both alike; medians are reported with the 1-minute load average before and
after each block. Stage times come from wrappers around each model's submodules (transform,
backbone + FPN, RPN, RoI heads, then backward and the optimizer step), medians over the timed
train steps. Peak memory: on the CPU, the peak growth of the process's anonymous RSS over one
extra train step, sampled every ms by a thread after freed heap is handed back (malloc_trim); on
CUDA, torch.cuda.max_memory_allocated growth. Finally one more train step of ours runs under
torch.profiler: the top 12 ops by self time.

--channels-last converts our model and its input batch to torch.channels_last (torchvision's
model stays as it is); harmless if our model already does so.
"""
import argparse
import ctypes
import dataclasses
import importlib.util
import math
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as the training CLI and bench_ops.py


def skip(reason):
    print(f"bench_vs_torchvision: skipped: {reason}.\n"
          "Run it with a Python that has torchvision, e.g.\n"
          "    PYTHONPATH=. /path/to/venv-with-torchvision/bin/python bench/bench_vs_torchvision.py")
    sys.exit(0)


if importlib.util.find_spec("torchvision") is None:  # before importing torch: a quick skip
    skip(f"torchvision is not installed in this Python ({sys.executable})")
try:
    import torch
    import torchvision
    from torchvision.models.detection import MaskRCNN as TorchvisionMaskRCNN
    from torchvision.models.detection.backbone_utils import resnet_fpn_backbone
    from torchvision.ops.misc import FrozenBatchNorm2d
except Exception as error:  # noqa: BLE001  (a broken install is a skip too, with its reason)
    skip(f"torchvision is installed but does not import ({type(error).__name__}: {error})")

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # mrcnn_edu without installing it
from _report import (command_line, machine_line, peak_rss_growth_mb,  # noqa: E402
                     write_section)  # bench/ is on sys.path
from mrcnn_edu.config import preset  # noqa: E402
from mrcnn_edu.data import CocoDataset, resolve_data_root  # noqa: E402
from mrcnn_edu.model import MaskRCNN  # noqa: E402

STAGES = ("transform", "backbone + FPN", "RPN", "RoI heads (box + mask)", "backward", "optimizer step")
NAMES = ("ours", "torchvision")


# ---------------------------------------------------------------- the two models


def build_ours(num_classes, size, max_size, channels_last):
    """preset("r50_fpn"): frozen BN, freeze_at=2, K foreground classes (+ background)."""
    cfg = dataclasses.replace(preset("r50_fpn"), num_classes=num_classes, min_size=size,
                              max_size=max_size, backbone_weights=None)
    assert cfg.norm == "frozen_bn" and cfg.freeze_at == 2, cfg
    torch.manual_seed(0)
    model = MaskRCNN(cfg)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        transform = model.transform.forward

        def channels_last_transform(*args, **kwargs):
            batch, sizes, targets = transform(*args, **kwargs)
            return batch.contiguous(memory_format=torch.channels_last), sizes, targets

        model.transform.forward = channels_last_transform
    return model


def build_torchvision(num_classes, size, max_size):
    """What maskrcnn_resnet50_fpn builds for a pretrained backbone, with random weights:
    ResNet-50 with FrozenBatchNorm2d, layer2..layer4 trainable, FPN, MaskRCNN(K + 1 classes)."""
    torch.manual_seed(0)
    backbone = resnet_fpn_backbone(backbone_name="resnet50", weights=None,
                                   norm_layer=FrozenBatchNorm2d, trainable_layers=3)
    return TorchvisionMaskRCNN(backbone, num_classes=num_classes + 1, min_size=size, max_size=max_size)


def stage_modules(name, model):
    """{stage: (object, method name)} to wrap with a stopwatch."""
    if name == "ours":
        return {"transform": [(model.transform, "forward")],
                "backbone + FPN": [(model.backbone, "forward"), (model.fpn, "forward")],
                "RPN": [(model.rpn, "forward")],
                "RoI heads (box + mask)": [(model.roi_heads, "losses")]}
    return {"transform": [(model.transform, "forward")], "backbone + FPN": [(model.backbone, "forward")],
            "RPN": [(model.rpn, "forward")], "RoI heads (box + mask)": [(model.roi_heads, "forward")]}


class Stopwatch:
    """Seconds per stage of the current step, accumulated by wrapped methods."""

    def __init__(self, sync):
        self.sync, self.seconds = sync, {}

    def wrap(self, stage, obj, method):
        inner = getattr(obj, method)

        def timed(*args, **kwargs):
            self.sync()
            start = time.perf_counter()
            out = inner(*args, **kwargs)
            self.sync()
            self.seconds[stage] = self.seconds.get(stage, 0.0) + time.perf_counter() - start
            return out

        setattr(obj, method, timed)  # an instance attribute: nn.Module.__call__ finds it

    def timed(self, stage, fn):
        self.sync()
        start = time.perf_counter()
        out = fn()
        self.sync()
        self.seconds[stage] = self.seconds.get(stage, 0.0) + time.perf_counter() - start
        return out


def parameter_counts(model):
    params = list(model.parameters())
    return sum(p.numel() for p in params), sum(p.numel() for p in params if p.requires_grad)


def parameter_groups(model, name):
    """Parameter counts of the parts both models have, to explain a difference in the total."""
    if name == "ours":
        parts = {"backbone": model.backbone, "FPN": model.fpn, "RPN": model.rpn,
                 "RoI heads": model.roi_heads}
    else:
        parts = {"backbone": model.backbone.body, "FPN": model.backbone.fpn, "RPN": model.rpn,
                 "RoI heads": model.roi_heads}
    return {k: sum(p.numel() for p in m.parameters()) for k, m in parts.items()}


# ---------------------------------------------------------------- one step


class Runner:
    """One model with its optimizer and stopwatch; train_step and eval_forward return seconds."""

    def __init__(self, name, model, images, targets, lr, clip, device, channels_last=False):
        self.name, self.model, self.clip = name, model.to(device), clip
        if channels_last:  # .to(device) keeps the format; say it again for a device copy
            self.model = self.model.to(memory_format=torch.channels_last)
        self.images = [im.to(device) for im in images]
        self.targets = [{k: v.to(device) for k, v in t.items()} for t in targets]
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.SGD(self.params, lr=lr, momentum=0.9, weight_decay=1e-4)
        self.sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
        self.watch = Stopwatch(self.sync)
        for stage, methods in stage_modules(name, self.model).items():
            for obj, method in methods:
                self.watch.wrap(stage, obj, method)
        self.stage_times, self.last_losses = [], None

    def clip_and_step(self):
        if self.clip:
            torch.nn.utils.clip_grad_norm_(self.params, self.clip)
        self.optimizer.step()

    def train_step(self, seed):
        self.model.train()
        torch.manual_seed(seed)  # the RPN and RoI samplers draw from the global RNG
        self.watch.seconds = {}
        self.sync()
        start = time.perf_counter()
        self.optimizer.zero_grad(set_to_none=True)
        losses = self.model(self.images, [dict(t) for t in self.targets])
        total = sum(losses.values())
        self.watch.timed("backward", total.backward)
        self.watch.timed("optimizer step", self.clip_and_step)
        self.sync()
        seconds = time.perf_counter() - start
        self.last_losses = {k: v.detach().item() for k, v in losses.items()}
        bad = [k for k, v in self.last_losses.items() if not math.isfinite(v)]
        if bad:
            raise RuntimeError(f"{self.name}: non-finite {bad} at step {seed}: {self.last_losses}")
        self.stage_times.append(dict(self.watch.seconds))
        return seconds

    @torch.no_grad()
    def eval_forward(self):
        self.model.eval()
        self.sync()
        start = time.perf_counter()
        detections = self.model(self.images)
        self.sync()
        self.detections = len(detections[0]["boxes"])
        return time.perf_counter() - start

    def check_training(self):
        """Losses finite and every trainable tensor got a finite gradient; a line saying so."""
        named = [(n, p.grad) for n, p in self.model.named_parameters() if p.requires_grad]
        missing = [n for n, g in named if g is None]
        non_finite = [n for n, g in named if g is not None and not bool(torch.isfinite(g).all())]
        zero = [n for n, g in named if g is not None and not bool(g.abs().sum() > 0)]
        if missing or non_finite:
            raise RuntimeError(f"{self.name} does not train: no gradient for {missing}, "
                               f"non-finite gradient for {non_finite}")
        return (f"{self.name}: losses finite (total {sum(self.last_losses.values()):.3f}: "
                + ", ".join(f"{k} {v:.3f}" for k, v in self.last_losses.items())
                + f"); {len(named) - len(zero)} of {len(named)} trainable tensors got a nonzero finite "
                f"gradient" + (f" (all-zero: {', '.join(zero)})" if zero else ""))


# ---------------------------------------------------------------- memory and profile


def release_free_heap():
    """Hand freed heap back to the OS so that RSS growth measures the step, not old garbage."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def peak_memory_mb(runner, device):
    """Peak growth (MB) of anonymous RSS (CPU) or of allocated CUDA memory over one train step."""
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        runner.train_step(seed=10_000)
        return (torch.cuda.max_memory_allocated() - base) / 2**20
    release_free_heap()
    return peak_rss_growth_mb(lambda: runner.train_step(seed=10_000))

def profile_table(runner, device):
    activities = [torch.profiler.ProfilerActivity.CPU]
    if device.type == "cuda":
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    with torch.profiler.profile(activities=activities) as prof:
        runner.train_step(seed=20_000)
    sort = "self_cpu_time_total" if device.type == "cpu" else "self_device_time_total"
    return prof.key_averages().table(sort_by=sort, row_limit=12, max_name_column_width=48)


# ---------------------------------------------------------------- the run


def load_example(data, split, index):
    """(image (3, H, W), target) of one image with instances; crowd instances dropped."""
    dataset = CocoDataset(resolve_data_root(data), split)
    with_instances = dataset.indices_with_instances()
    i = with_instances[index % len(with_instances)]
    image, target = dataset[i]
    keep = target["iscrowd"] == 0
    target = {"boxes": target["boxes"][keep], "labels": target["labels"][keep],
              "masks": target["masks"][keep]}
    return dataset, image, target, int(dataset.image_ids[i])


def interleaved(runners, fn, steps):
    """{name: [seconds]}: one untimed call each, then `steps` rounds of one call each in turn;
    and the (before, after) 1-minute load averages of the timed rounds."""
    for r in runners:
        fn(r, -1)
    load_before, times = os.getloadavg()[0], {r.name: [] for r in runners}
    for step in range(steps):
        for r in runners:
            times[r.name].append(fn(r, step))
    return times, (load_before, os.getloadavg()[0])


def median_stages(runner, steps):
    """Median seconds per stage over the timed train steps (after the warm-up, before the
    memory and profiler steps)."""
    kept = runner.stage_times[1:1 + steps]
    return {s: statistics.median(t.get(s, 0.0) for t in kept) for s in STAGES}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", help="COCO-layout folder (default: resolve_data_root())")
    parser.add_argument("--split", default="train2017", help="split the image comes from")
    parser.add_argument("--image-index", type=int, default=0,
                        help="which image with instances (0 = the first in the JSON)")
    parser.add_argument("--size", type=int, default=800, help="shorter side after resizing, px")
    parser.add_argument("--steps", type=int, default=5, help="timed steps per model (median)")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--lr", type=float, default=0.01, help="SGD learning rate, both models")
    parser.add_argument("--clip", type=float, default=10.0,
                        help="gradient-norm clipping, both models (0: none); random weights "
                             "without BN statistics give huge first losses")
    parser.add_argument("--channels-last", action="store_true",
                        help="our model and its input batch in torch.channels_last")
    parser.add_argument("--no-write", action="store_true", help="print only; leave docs/benchmarks.md")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda, but torch.cuda.is_available() is False")
    max_size = round(args.size * 1333 / 800)

    dataset, image, target, image_id = load_example(args.data, args.split, args.image_index)
    k = dataset.num_classes
    ours = build_ours(k, args.size, max_size, args.channels_last)
    theirs = build_torchvision(k, args.size, max_size)
    counts = {"ours": parameter_counts(ours), "torchvision": parameter_counts(theirs)}
    groups = {"ours": parameter_groups(ours, "ours"), "torchvision": parameter_groups(theirs, "torchvision")}
    runners = [Runner("ours", ours, [image], [target], args.lr, args.clip, device, args.channels_last),
               Runner("torchvision", theirs, [image], [target], args.lr, args.clip, device)]
    print(f"image {image_id} of {args.split}: {tuple(image.shape[-2:])} px, {len(target['boxes'])} "
          f"instances, resized to a shorter side of {args.size}; {args.threads} threads; {device}")

    # warm-up step (also the training check), then the timed, interleaved steps
    train, train_load = interleaved(runners, lambda r, step: r.train_step(step), args.steps)
    checks = [r.check_training() for r in runners]  # gradients of the last timed step
    print("\n".join(checks))
    evals, eval_load = interleaved(runners, lambda r, step: r.eval_forward(), args.steps)
    memory_load = os.getloadavg()[0]
    memory = {r.name: peak_memory_mb(r, device) for r in runners}
    memory_load = (memory_load, os.getloadavg()[0])
    table = profile_table(runners[0], device)
    results = {
        "train": {n: statistics.median(train[n]) for n in NAMES},
        "eval": {n: statistics.median(evals[n]) for n in NAMES},
        "stages": {r.name: median_stages(r, args.steps) for r in runners},
        "detections": {r.name: r.detections for r in runners},
        "loads": {"train": train_load, "eval": eval_load, "memory": memory_load},
    }
    markdown = to_markdown(args, image_id, image, target, k, counts, groups, results, memory,
                           checks, table, device)
    if not args.no_write:
        # a CUDA run gets its own section: it must not replace the CPU comparison
        write_section("vs_torchvision" if device.type == "cpu" else f"vs_torchvision_{device.type}", markdown)
    print(markdown)


def to_markdown(args, image_id, image, target, k, counts, groups, results, memory, checks, table,
                device):
    train, evals, loads = results["train"], results["eval"], results["loads"]
    load = lambda key: f"{loads[key][0]:.1f} → {loads[key][1]:.1f}"  # noqa: E731
    mem_what = "CUDA max_memory_allocated" if device.type == "cuda" else "anonymous RSS"
    # a GPU step takes tens of milliseconds: seconds with two decimals would hide the ratio
    unit, per_s = ("ms", 1000.0) if device.type == "cuda" else ("s", 1.0)
    train = {n: v * per_s for n, v in train.items()}
    evals = {n: v * per_s for n, v in evals.items()}
    lines = [
        f"## Our R-50-FPN vs torchvision's Mask R-CNN (one process{', ' + device.type if device.type != 'cpu' else ''})", "",
        f"Command: `PYTHONPATH=. {command_line()}` (Python of a venv with torchvision)  ",
        f"Machine: {machine_line()}; torchvision {torchvision.__version__}; device {device}"
        f"{'; ours in channels_last' if args.channels_last else ''}; "
        f"OMP_WAIT_POLICY={os.environ['OMP_WAIT_POLICY']}  ",
        f"Input: COCO image {image_id} ({args.split}, {image.shape[-1]} x {image.shape[-2]} px, "
        f"{len(target['boxes'])} instances), resized to a shorter side of {args.size} px (longer "
        f"side <= {round(args.size * 1333 / 800)}), batch 1; {k} classes + background; random init, "
        f"frozen BN, stem and layer1 frozen; SGD lr {args.lr}, momentum 0.9, weight decay 1e-4, "
        f"gradient norm clipped to {args.clip:g} (both).  ",
        f"Medians of {args.steps} steps after one warm-up, the two models interleaved; load is the "
        "1-minute load average before → after the block.", "",
        "| | ours (mrcnn_edu) | torchvision | ours / torchvision | load |",
        "|---|---|---|---|---|",
        f"| train step (forward + losses + backward + clip + SGD), {unit} | {train['ours']:.2f} | "
        f"{train['torchvision']:.2f} | {train['ours'] / train['torchvision']:.2f} | {load('train')} |",
        f"| eval forward (incl. post-processing), {unit} | {evals['ours']:.2f} | {evals['torchvision']:.2f} | "
        f"{evals['ours'] / evals['torchvision']:.2f} | {load('eval')} |",
        f"| peak memory growth over a train step ({mem_what}), MB | {memory['ours']:.0f} | "
        f"{memory['torchvision']:.0f} | {memory['ours'] / memory['torchvision'] if memory['torchvision'] > 0 else float('nan'):.2f} | "
        f"{load('memory')} |",
        f"| parameters, total / trainable | {counts['ours'][0]:,} / {counts['ours'][1]:,} | "
        f"{counts['torchvision'][0]:,} / {counts['torchvision'][1]:,} | | |",
        f"| detections in the eval forward (random init: few pass score 0.05) | "
        f"{results['detections']['ours']} | {results['detections']['torchvision']} | | |",
        "", "Parameters by part (ours / torchvision): " + "; ".join(
            f"{part} {groups['ours'][part]:,} / {groups['torchvision'][part]:,}" for part in groups["ours"])
        + ".", "",
        f"Where a train step goes, median {'milliseconds' if unit == 'ms' else 'seconds'} over the timed steps (wrappers around each "
        "model's submodules; \"RPN\" and \"RoI heads\" include their losses):", "",
        "| stage | ours | torchvision | ours / torchvision |", "|---|---|---|---|"]
    for stage in STAGES:
        a, b = (results["stages"][n][stage] * per_s for n in NAMES)
        lines.append(f"| {stage} | {a:.2f} | {b:.2f} | {a / b:.2f} |" if b else f"| {stage} | {a:.2f} | {b:.2f} | |")
    lines += ["", "Both models train (every step's losses are checked finite; the losses and gradients of "
              "the last timed step):  ", "  \n".join(checks), "",
              "Our train step under torch.profiler (one extra step), top 12 ops by self time:", "",
              "```", table.strip(), "```"]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
