"""What makes a training step of the `subset` preset cheaper on the CPU (issue 12's levers).

    python bench/bench_step_levers.py [--steps 12] [--data DIR] [--no-write]

Three measurements, each a comparison inside one run so that the machine's speed and load hit
both sides alike (machines of one class differ by up to ~1.7x):
1. the optimizer step alone over the tiny model's 12.5M weights: AdamW as a loop over tensors,
   `foreach`, `fused`; SGD likewise (random gradients, median of 10 steps);
2. channels_last against the plain layout: two copies of the `subset` model, one converted to
   torch.channels_last (weights and input batch), stepping alternately on the same preloaded
   batches of the subset's person images (forward, backward, fused AdamW);
3. the OpenMP wait policy: the same steps in child processes with OMP_WAIT_POLICY=PASSIVE,
   ACTIVE and unset (libgomp's default, a spin of limited length; the policy is read once, when
   torch loads), one after the other, first on the idle machine, then with a second 2-thread
   job beside them (`_report.BusyJob`), as a busy laptop would have.
Medians skip the first 2 steps. Writes the section `step_levers` of docs/benchmarks.md.
"""
import argparse
import dataclasses
import json
import os
import statistics
import subprocess
import sys
import time

import torch

from _report import BusyJob, command_line, machine_line, write_section  # bench/ on sys.path

from mrcnn_edu.config import preset
from mrcnn_edu.data import CocoDataset, resolve_data_root
from mrcnn_edu.engine.loop import make_optimizer
from mrcnn_edu.model import MaskRCNN
from mrcnn_edu.model.transforms import ResizeToInput

SKIP = 2  # first steps of a model: oneDNN creates its kernels there


def optimizer_ms():
    """{(name, variant): ms per step} over the tiny model's trainable weights."""
    model = MaskRCNN(dataclasses.replace(preset("tiny"), num_classes=1))
    params = [p for p in model.parameters() if p.requires_grad]
    for p in params:
        p.grad = torch.randn_like(p)
    out = {}
    for name, make in (("AdamW", torch.optim.AdamW), ("SGD", torch.optim.SGD)):
        for variant, kwargs in (("loop", {"foreach": False}), ("foreach", {"foreach": True}),
                                ("fused", {"fused": True})):
            opt = make(params, lr=1e-3, **kwargs)
            opt.step()
            times = []
            for _ in range(10):
                start = time.perf_counter()
                opt.step()
                times.append((time.perf_counter() - start) * 1e3)
            out[name, variant] = statistics.median(times)
    return out


def subset_batches(data_root, count, cfg=None):
    """`count` batches of 2 person images of the subset at the input size of `cfg` (default
    preset("subset")), loaded once (no loading in the timing); returns (cfg with num_classes,
    batches)."""
    cfg = cfg or preset("subset")
    ds = CocoDataset(data_root, cfg.train_split, categories=cfg.categories,
                     transforms=ResizeToInput(cfg.min_size, cfg.max_size))
    keep = ds.indices_with_instances()
    batches = [[ds[keep[(2 * i + j) % len(keep)]] for j in range(2)] for i in range(count)]
    return dataclasses.replace(cfg, num_classes=ds.num_classes), batches


def step_seconds(model, optimizer, batch):
    images, targets = zip(*batch)
    start = time.perf_counter()
    losses = model(list(images), list(targets))
    optimizer.zero_grad(set_to_none=True)
    sum(losses.values()).backward()
    optimizer.step()
    return time.perf_counter() - start


def layouts(data_root, steps):
    """Median s per step of the plain and the channels_last model, stepping alternately."""
    config, batches = subset_batches(data_root, steps)
    runs = {}
    for layout in ("plain", "channels_last"):
        torch.manual_seed(0)
        model = MaskRCNN(config).train()
        if layout == "channels_last":  # weights, and the batch as the backbone receives it
            model.to(memory_format=torch.channels_last)
            model.backbone.register_forward_pre_hook(
                lambda _, args: (args[0].contiguous(memory_format=torch.channels_last),))
        runs[layout] = (model, make_optimizer(model, config), [])
    for i in range(steps):
        for model, optimizer, times in runs.values():
            times.append(step_seconds(model, optimizer, batches[i]))
    return {layout: statistics.median(times[SKIP:]) for layout, (_, _, times) in runs.items()}


POLICIES = ("PASSIVE", "ACTIVE", "default")  # "default": OMP_WAIT_POLICY unset


def wait_policies(data_root, steps, rounds=2):
    """{(policy, "idle" | "busy"): median s per step}, each in a fresh child process; the
    policies take turns `rounds` times (the machine's speed drifts over minutes), and each
    reports the median of its rounds' medians."""
    out = {}
    for load in ("idle", "busy"):
        for policy in POLICIES * rounds:
            env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
            if policy != "default":
                env["OMP_WAIT_POLICY"] = policy
            command = [sys.executable, __file__, "--child", "--steps", str(steps), "--data",
                       str(data_root)]
            if load == "busy":
                with BusyJob():
                    run = subprocess.run(command, env=env, capture_output=True, text=True,
                                         check=True)
            else:
                run = subprocess.run(command, env=env, capture_output=True, text=True, check=True)
            out.setdefault((policy, load), []).append(json.loads(run.stdout.split()[-1]))
    return {key: statistics.median(times) for key, times in out.items()}


def child(data_root, steps):
    config, batches = subset_batches(data_root, steps)
    torch.manual_seed(0)
    model = MaskRCNN(config).train()
    optimizer = make_optimizer(model, config)
    times = [step_seconds(model, optimizer, batch) for batch in batches]
    print(json.dumps(statistics.median(times[SKIP:])))


def to_markdown(opt, layout, policy, loads):
    lines = ["## Levers for a training step of `subset` (CPU)", "",
             f"Command: `{command_line()}`  ", f"Machine: {machine_line()}  ",
             f"Load average (1 min) at start / end: {loads[0]:.1f} / {loads[1]:.1f}; nothing "
             "else ran but the busy rows' job (the load is the benchmark's own threads).", "",
             "**Optimizer step** over the tiny model's 12.5M trainable weights, median ms:", "",
             "| optimizer | loop | foreach | fused |", "|---|---|---|---|"]
    for name in ("AdamW", "SGD"):
        lines.append(f"| {name} | " + " | ".join(f"{opt[name, v]:.1f}"
                                                for v in ("loop", "foreach", "fused")) + " |")
    lines += ["", "**Memory layout**, two models stepping alternately on the same batches "
              "(median s per step):", "", "| plain | channels_last | ratio |", "|---|---|---|",
              f"| {layout['plain']:.3f} | {layout['channels_last']:.3f} | "
              f"{layout['channels_last'] / layout['plain']:.2f} |", "",
              "**OpenMP wait policy**, child processes taking turns, two each (median s per "
              "step; busy: a second 2-thread job beside them):", "",
              "| machine | PASSIVE | ACTIVE | default | ACTIVE / PASSIVE |",
              "|---|---|---|---|---|"]
    for load in ("idle", "busy"):
        lines.append(f"| {load} | " + " | ".join(f"{policy[p, load]:.3f}" for p in POLICIES)
                     + f" | {policy['ACTIVE', load] / policy['PASSIVE', load]:.2f} |")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=12, help="steps per model (first 2 skipped)")
    parser.add_argument("--data", help="COCO subset folder (default: resolve_data_root())")
    parser.add_argument("--no-write", action="store_true", help="print only")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    data_root = resolve_data_root(args.data)
    if args.child:
        child(data_root, args.steps)
        return
    load_start = os.getloadavg()[0]
    opt = optimizer_ms()
    print("optimizer ms:", {f"{k[0]} {k[1]}": round(v, 1) for k, v in opt.items()}, flush=True)
    layout = layouts(data_root, args.steps)
    print("layout s/step:", {k: round(v, 3) for k, v in layout.items()}, flush=True)
    policy = wait_policies(data_root, args.steps)
    print("wait policy s/step:", {" ".join(k): round(v, 3) for k, v in policy.items()},
          flush=True)
    markdown = to_markdown(opt, layout, policy, (load_start, os.getloadavg()[0]))
    print(markdown)
    if not args.no_write:
        write_section("step_levers", markdown)


if __name__ == "__main__":
    main()
