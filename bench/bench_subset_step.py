"""What a training step of `subset` costs at its input size and proposal count, against the preset
before (256 px, 1000 proposals per level): models stepping in turn on the same images.

    python bench/bench_subset_step.py [--steps 60] [--checkpoint RUN/checkpoint.pt] [--data DIR]
                                      [--no-write]

Every variant is `preset("subset")` with the fields of VARIANTS changed. For each source of
weights (random, then each --checkpoint: a trained model's RPN finds the people, so its RoI and
mask heads get the foreground of a late step), every variant's model starts from those weights,
gets the same person images of the subset (loaded once, at its own input size, 2 per batch) and
steps (forward, backward, AdamW) in turn with the others, in an order shuffled each round: the
first model of a round runs slower (three copies of one variant in a fixed order measured 1.00 /
0.83 / 0.79 of the first's time; rotating the order, 1.00 / 0.98 / 0.98), and a fixed sequence
also favours some models by what runs before them (rotated, whichever 192-px variant came right
after the 256-px one measured slower than the other: by 13% in one order, 4-6% in the other).
Means skip the first 2 steps (oneDNN creates its kernels there). Writes the section
`subset_step` of docs/benchmarks.md.
"""
import argparse
import dataclasses
import os
import random
import statistics

import torch

from _report import command_line, machine_line, write_section  # bench/ is on sys.path
from bench_step_levers import step_seconds, subset_batches

from mrcnn_edu.config import preset
from mrcnn_edu.data import resolve_data_root
from mrcnn_edu.engine.checkpoint import load_run_checkpoint
from mrcnn_edu.engine.loop import make_optimizer
from mrcnn_edu.model import MaskRCNN

SKIP = 2
BEFORE = "256px"  # the variant the ratios are taken against: the preset before this one

# name -> (what it is, fields changed from preset("subset"))
VARIANTS = {
    "preset": (f"the preset: {preset('subset').min_size} px, "
               f"{preset('subset').rpn_pre_nms_top_n_train} proposals per level before NMS", {}),
    "1000_proposals": ("192 px, 1000 proposals per level (tiny's)",
                       dict(rpn_pre_nms_top_n_train=1000)),
    BEFORE: ("256 px, 1000 proposals per level, 2200 steps: the preset before",
             dict(min_size=256, max_size=512, rpn_pre_nms_top_n_train=1000, max_iters=2200,
                  lr_steps=(1800,))),
}


def mean_step_seconds(data_root, steps, weights):
    """{variant: mean s per step}, the variants' models stepping in turn, order shuffled."""
    order = random.Random(0)
    runs = []
    for name, (_, changes) in VARIANTS.items():
        config = dataclasses.replace(preset("subset"), **changes)
        config, batches = subset_batches(data_root, steps, config)
        torch.manual_seed(0)
        model = MaskRCNN(config)
        if weights is not None:  # the same trained weights for every variant: no shape differs
            model.load_state_dict(weights)
        runs.append((name, model.train(), make_optimizer(model, config), batches, []))
    for i in range(steps):
        for _, model, optimizer, batches, times in order.sample(runs, len(runs)):
            times.append(step_seconds(model, optimizer, batches[i]))
    return {name: statistics.mean(times[SKIP:]) for name, *_, times in runs}


def to_markdown(results, loads):
    sources = list(results)
    before_steps = dataclasses.replace(preset("subset"), **VARIANTS[BEFORE][1]).max_iters
    lines = ["## A training step of `subset`: input size and proposals (CPU)", "",
             f"Command: `{command_line()}`  ", f"Machine: {machine_line()}  ",
             f"Load average (1 min) at start / end: {loads[0]:.1f} / {loads[1]:.1f} (the "
             "benchmark's own threads; nothing else ran).", "",
             "Mean s per step (ratio to the preset before); the last column scales the ratio by "
             "the variant's steps: its training time against the preset before's.", "",
             "| variant | what | steps | " + " | ".join(f"{s} weights" for s in sources)
             + " | training time |", "|---|---|---|" + "---|" * len(sources) + "---|"]
    for name, (what, changes) in VARIANTS.items():
        steps = dataclasses.replace(preset("subset"), **changes).max_iters
        ratios = [r[name] / r[BEFORE] for r in results.values()]
        cells = [f"{r[name]:.3f} ({ratio:.2f})" for r, ratio in zip(results.values(), ratios)]
        scaled = [ratio * steps / before_steps for ratio in ratios]
        lines.append(f"| `{name}` | {what} | {steps} | " + " | ".join(cells)
                     + f" | {min(scaled):.2f}-{max(scaled):.2f}x |")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=60, help="steps per model (first 2 skipped)")
    parser.add_argument("--checkpoint", action="append", default=[],
                        help="a trained run's checkpoint.pt (repeatable); random weights always")
    parser.add_argument("--data", help="COCO subset folder (default: resolve_data_root())")
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args(argv)
    data_root = resolve_data_root(args.data)
    load_start = os.getloadavg()[0]
    results = {"random": mean_step_seconds(data_root, args.steps, None)}
    print("random:", {k: round(v, 3) for k, v in results["random"].items()}, flush=True)
    for i, path in enumerate(args.checkpoint):
        label = "trained" if len(args.checkpoint) == 1 else f"trained ({i + 1})"
        results[label] = mean_step_seconds(data_root, args.steps,
                                           load_run_checkpoint(path)["model"])
        print(f"{label}:", {k: round(v, 3) for k, v in results[label].items()}, flush=True)
    markdown = to_markdown(results, (load_start, os.getloadavg()[0]))
    print(markdown)
    if not args.no_write:
        write_section("subset_step", markdown)


if __name__ == "__main__":
    main()
